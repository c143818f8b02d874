"""``grid_app``: power flow, state estimation and N-1 from the command line.

    powerflow  --network FILE --out DIR             buses/branches/appliances.parquet + summary.json
    estimate   --network FILE --measurements FILE --out DIR
                                                    + measurements/dropped/suspects.parquet
    n1         --network FILE --out DIR             contingencies.parquet + summary.json

FILE for --network: pandapower JSON, MATPOWER .m/.mat, a SimBench code or a pandapower case name.
Measurements: CSV or Parquet with element_type (or element), element_id, terminal (optional),
kind, value, sigma, quality (optional).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import typer

grid_app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


def _load(network: str):
    from gridpipeline.grid.network import NetworkFormatError, load_network

    try:
        return load_network(network)
    except NetworkFormatError as exc:
        typer.secho(f"network error: {exc}", fg="red", err=True)
        raise typer.Exit(2)


def _write(df: pd.DataFrame, path: Path) -> None:
    df = df.copy()
    if df.index.name is not None or not isinstance(df.index, pd.RangeIndex):
        df = df.reset_index()
    for c in df.columns:
        if df[c].dtype == object:
            sample = df[c].dropna()
            if len(sample) and not all(isinstance(v, str) for v in sample):
                df[c] = df[c].map(lambda v: None if v is None else json.dumps(v, default=str)
                                  if isinstance(v, (list, tuple, dict)) else str(v))
    df.to_parquet(path, index=False)


def _summary(out: Path, payload: dict) -> None:
    (out / "summary.json").write_text(json.dumps(payload, indent=2, default=str))
    typer.echo(json.dumps(payload, default=str))


@grid_app.command("powerflow")
def powerflow_cmd(
    network: str = typer.Option(..., "--network", help="network file or code"),
    out: Path = typer.Option(..., "--out", help="output directory"),
    engine: str = typer.Option("auto", help="auto, pgm or pandapower"),
    loading_threshold: float = typer.Option(80.0, help="bottleneck loading threshold in %"),
):
    """AC power flow; writes bus/branch/appliance results, bottlenecks and a JSON summary."""
    from gridpipeline.grid.powerflow import bottlenecks, run_powerflow

    net = _load(network)
    out.mkdir(parents=True, exist_ok=True)
    res = run_powerflow(net, engine=engine)
    _write(res.buses, out / "buses.parquet")
    _write(res.branches, out / "branches.parquet")
    _write(res.appliances, out / "appliances.parquet")
    bn = bottlenecks(res, net, loading_threshold=loading_threshold) if res.converged else pd.DataFrame()
    _write(bn, out / "bottlenecks.parquet")
    _summary(out, {**res.summary(), "network": network, "n_bottlenecks": len(bn)})
    if not res.converged:
        raise typer.Exit(1)


@grid_app.command("estimate")
def estimate_cmd(
    network: str = typer.Option(..., "--network", help="network file or code"),
    measurements: Path = typer.Option(..., "--measurements", help="CSV or Parquet measurements"),
    out: Path = typer.Option(..., "--out", help="output directory"),
    bad_data: bool = typer.Option(True, "--bad-data/--no-bad-data", help="chi2 + largest normalised residual"),
    threshold: float = typer.Option(3.0, help="r_N threshold"),
    algorithm: str = typer.Option("iterative_linear", help="iterative_linear or newton_raphson"),
):
    """State estimation (with bad-data removal); writes estimate tables and a JSON summary."""
    from gridpipeline.grid.bad_data import detect_bad_data
    from gridpipeline.grid.estimation import estimate_state

    net = _load(network)
    if not measurements.exists():
        typer.secho(f"measurements file not found: {measurements}", fg="red", err=True)
        raise typer.Exit(2)
    meas = pd.read_parquet(measurements) if measurements.suffix.lower() in (".parquet", ".pq") else pd.read_csv(measurements)
    if "element_type" not in meas.columns and "element" in meas.columns:
        meas = meas.rename(columns={"element": "element_type"})
    missing = {"element_type", "element_id", "kind", "value", "sigma"} - set(meas.columns)
    if missing:
        typer.secho(f"measurements lack columns {sorted(missing)}", fg="red", err=True)
        raise typer.Exit(2)
    if "terminal" in meas.columns:
        meas["terminal"] = meas["terminal"].where(meas["terminal"].notna(), None)
    out.mkdir(parents=True, exist_ok=True)
    extra = {}
    if bad_data:
        bd = detect_bad_data(net, meas, threshold=threshold, algorithm=algorithm)
        est = bd.estimate
        _write(bd.suspects, out / "suspects.parquet")
        extra = {"bad_data_removed": len(bd.removed), "chi2_initial": bd.chi2_initial, "chi2_final": bd.chi2_final,
                 "bad_data_iterations": bd.iterations}
    else:
        est = estimate_state(net, meas, algorithm=algorithm)
    _write(est.buses, out / "buses.parquet")
    _write(est.branches, out / "branches.parquet")
    _write(est.measurements, out / "measurements.parquet")
    _write(est.dropped, out / "dropped.parquet")
    _summary(out, {**est.summary(), **extra, "network": network})
    if not est.converged:
        raise typer.Exit(1)


@grid_app.command("n1")
def n1_cmd(
    network: str = typer.Option(..., "--network", help="network file or code"),
    out: Path = typer.Option(..., "--out", help="output directory"),
    elements: str = typer.Option("line,trafo,sgen", help="comma-separated element types"),
    restore: bool = typer.Option(False, "--restore/--no-restore", help="try tie switches for lost load"),
):
    """N-1 contingency analysis (PGM batch); writes contingencies.parquet and a JSON summary."""
    from gridpipeline.grid.contingency import run_n1

    net = _load(network)
    out.mkdir(parents=True, exist_ok=True)
    try:
        df = run_n1(net, elements=tuple(e.strip() for e in elements.split(",") if e.strip()), restore_via_ties=restore)
    except ValueError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2)
    _write(df, out / "contingencies.parquet")
    _summary(out, {"network": network, "n_contingencies": len(df), "elapsed_s": round(df.attrs.get("elapsed_s", 0), 4),
                   "n_not_converged": int((~df.converged).sum()) if len(df) else 0,
                   "n_with_overload": int((df.n_overloads > 0).sum()) if len(df) else 0,
                   "n_with_lost_load": int((df.load_lost_mw > 0).sum()) if len(df) else 0,
                   "worst": df.contingency.iloc[0] if len(df) else None})


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - console entry
    grid_app(argv)
