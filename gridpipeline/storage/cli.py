"""``dispatch_app``: one dispatch plan for a user's own case, from files, and the backtest.

    plan      --batteries FILE --forecast FILE --prices FILE --out DIR [--network FILE] [--start ISO]
    backtest  [--start 2018-01-01 --end 2019-01-01 ...]  (registered in cli.py; benchmarks/dispatch_backtest.py)

Batteries (CSV or Parquet), one row per unit: ``battery_id``, ``capacity_mwh``, ``p_max_mw``,
``soc_percent`` (measured now), and optionally ``eta_charge``, ``eta_discharge`` (1.0),
``soc_min_percent`` (0), ``soc_max_percent`` (100), ``backup_reserve_percent`` (0),
``degradation_eur_per_mwh`` (0), ``vpp``, ``feeder`` and ``bus`` (a bus of --network: then the plan
is checked by the AC gate on that network's nominal state).

Forecast (CSV or Parquet): ``valid_time`` (UTC) and ``demand_p10``, ``demand_p50``, ``demand_p90``
(MW at the substation), optionally ``pv_p10/p50/p90`` and ``wind_p10/p50/p90`` (MW) with
``pv_capacity_mw``/``wind_capacity_mw`` for curtailment of the network's curtailable generators.

Prices: a SMARD CSV (``Date;Time of day;<zone>[€/MWh]``) or a CSV with ``utc_start,price_eur_mwh``.

Writes ``batteries.parquet`` (power and SOC per unit and step), ``substation.parquet`` (net load
before/after, prices known/forecast), ``curtailment.parquet`` (with reasons), ``decision.json``
(objective and breakdown, binding constraints with duals, the alternatives, the gate's verdict).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import typer

dispatch_app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


def _read(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)


def read_prices(path: Path) -> pd.Series:
    """Prices from a SMARD CSV or a ``utc_start,price`` CSV, hourly on UTC."""
    from gridpipeline.sources.prices import read_smard

    head = path.read_text(encoding="utf-8-sig", errors="replace").splitlines()[0]
    if ";" in head:
        return read_smard(path)
    df = pd.read_csv(path)
    idx = pd.DatetimeIndex(pd.to_datetime(df.iloc[:, 0], utc=True))
    return pd.Series(pd.to_numeric(df.iloc[:, 1], errors="coerce").to_numpy(), index=idx, name="price")


def _fail(msg: str) -> None:
    typer.secho(msg, fg="red", err=True)
    raise typer.Exit(2)


def fleet_from_file(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fleet table as ``planner.fleet_table`` gives it, BMS-like readings) from a user's battery file."""
    need = {"battery_id", "capacity_mwh", "p_max_mw", "soc_percent"}
    if missing := need - set(df.columns):
        _fail(f"--batteries: missing column(s) {sorted(missing)}; needed: {sorted(need)}")
    g = lambda c, d: pd.to_numeric(df[c], errors="coerce").fillna(d).to_numpy(float) if c in df else np.full(len(df), d)  # noqa: E731
    fleet = pd.DataFrame({
        "battery_id": df.battery_id.astype(str).to_numpy(), "storage_index": np.arange(len(df)),
        "bus": df["bus"].to_numpy() if "bus" in df else np.arange(len(df)),
        "capacity_mwh": g("capacity_mwh", 0.0), "p_max_mw": g("p_max_mw", 0.0), "eta_c": g("eta_charge", 1.0),
        "eta_d": g("eta_discharge", 1.0), "soc_min": g("soc_min_percent", 0.0) / 100,
        "soc_max": g("soc_max_percent", 100.0) / 100, "reserve": g("backup_reserve_percent", 0.0) / 100,
        "degradation": g("degradation_eur_per_mwh", 0.0), "owner": "",
        "vpp": df["vpp"].fillna("").astype(str).to_numpy() if "vpp" in df else ""})
    fleet["feeder"] = df["feeder"].astype(str).to_numpy() if "feeder" in df else fleet.bus.astype(str)
    soc = g("soc_percent", np.nan)
    ok = np.isfinite(soc) & (soc >= 0) & (soc <= 100) & (fleet.capacity_mwh > 0)
    bms = pd.DataFrame({"battery_id": fleet.battery_id, "available": ok,
                        "reason": np.where(ok, "", "out of range: SOC or capacity"),
                        "energy_mwh": soc / 100 * fleet.capacity_mwh, "capacity_mwh": fleet.capacity_mwh})
    return fleet, bms


@dispatch_app.command("plan")
def plan_cmd(
    batteries: Path = typer.Option(..., "--batteries", exists=True, help="battery file (CSV or Parquet)"),
    forecast: Path = typer.Option(..., "--forecast", exists=True, help="forecast file (CSV or Parquet)"),
    prices: Path = typer.Option(..., "--prices", exists=True, help="SMARD CSV or utc_start,price CSV"),
    out: Path = typer.Option(..., "--out", help="output directory"),
    network: Optional[str] = typer.Option(None, "--network", help="network file (pandapower JSON, ...) for the gate"),
    start: Optional[str] = typer.Option(None, "--start", help="first step (UTC); default: the forecast's first"),
    steps: int = typer.Option(288, help="5-minute steps to plan"),
):
    """Plan one horizon for a user's own fleet and write Parquet and JSON."""
    from gridpipeline.sources.prices import price_curve
    from gridpipeline.storage.planner import PlanInputs, generator_table, plan_tables, solve_plan, units_now

    fleet, bms = fleet_from_file(_read(batteries))
    fc = _read(forecast)
    if "valid_time" not in fc or "demand_p50" not in fc:
        _fail("--forecast: needs valid_time and demand_p50 (and demand_p10/p90)")
    fc["valid_time"] = pd.to_datetime(fc.valid_time, utc=True)
    t0 = pd.Timestamp(start, tz="UTC") if start else fc.valid_time.min().floor("5min")
    times = pd.date_range(t0, periods=steps, freq="5min")
    f = fc.set_index("valid_time").sort_index()
    f = f[~f.index.duplicated()].reindex(times.union(f.index)).interpolate("time").ffill().bfill().reindex(times)
    flags = []
    d = pd.DataFrame({q: f.get(f"demand_{q}", f.demand_p50).to_numpy(float) for q in ("p10", "p50", "p90")})
    net, gens = None, pd.DataFrame(columns=["sgen_id", "sgen_index", "bus", "kind", "rating_mw"])
    if network:
        from gridpipeline.grid.network import load_network

        net = load_network(network)
        gens = generator_table(net)
    renew = {}
    for kind in ("pv", "wind"):
        if f"{kind}_p50" in f:
            cap = float(f.get(f"{kind}_capacity_mw", pd.Series(gens.rating_mw[gens.kind == kind].sum(), index=f.index)).max())
            renew[kind] = pd.DataFrame({q: f.get(f"{kind}_{q}", f[f"{kind}_p50"]).to_numpy(float)
                                        for q in ("p10", "p50", "p90")}).assign(capacity_mw=cap)
    if not renew:
        gens = gens.iloc[0:0]
    known = read_prices(prices)
    from gridpipeline.forecast.prices import PriceForecaster

    curve = price_curve(known, times[0], times[-1] + pd.Timedelta("5min"), pd.Timedelta("5min"), PriceForecaster())
    curve = curve.reindex(times).ffill().bfill().reset_index(drop=True)
    units = units_now(fleet, bms)
    p = PlanInputs(times=times, units=units, generators=gens, demand=d, renewables=renew, prices=curve, flags=flags)
    res = solve_plan(p)
    verdict = None
    if net is not None and "bus" in fleet and len(fleet):
        import pandapower as pp

        from gridpipeline.storage.gate import gate

        n = net
        idx = [pp.create_storage(n, bus=int(b), p_mw=0.0, max_e_mwh=float(c), name=str(i))
               for b, c, i in zip(fleet.bus, fleet.capacity_mwh, fleet.battery_id)]
        verdict = gate(n, pd.Series(res.power[0], index=idx))
    out.mkdir(parents=True, exist_ok=True)
    tabs = plan_tables(p, res.power, res.energy, res.curtail, res.x)
    tabs["batteries"].to_parquet(out / "batteries.parquet", index=False)
    tabs["substation"].to_parquet(out / "substation.parquet", index=False)
    curt = res.curtailment(times)
    curt.to_parquet(out / "curtailment.parquet", index=False)
    decision = {"steps": steps, "start": str(times[0]), "objective": res.costs, "assumptions": res.info,
                "binding_constraints": res.result.binding[:50], "violations": res.result.violations[:50],
                "units_left_out": units.loc[~units.available, ["battery_id", "reason"]].to_dict("records"),
                "gate": verdict.record() if verdict is not None else "no --network: not gated",
                "flags": flags, "price_labels": curve.source.value_counts().to_dict()}
    (out / "decision.json").write_text(json.dumps(decision, indent=2, default=str))
    typer.echo(json.dumps({"out": str(out), "batteries": len(fleet), "steps": steps,
                           "cost_plan_eur": res.costs["plan_eur"], "cost_do_nothing_eur": res.costs["do_nothing_eur"],
                           "cost_rule_based_eur": res.costs["rule_based_eur"], "violations": len(res.result.violations),
                           "gate": verdict.reason if verdict is not None else None}, default=str))


__all__ = ["dispatch_app", "fleet_from_file"]

