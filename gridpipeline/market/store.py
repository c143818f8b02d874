"""The market domain's tables in the live store: the published tariff per zone over a plan's horizon,
and the nodal prices of its first hour per bus (the whole horizon per bus would be 65,000 rows every
5 minutes on the sample grid; the ledger record keeps the summary and the binding limits)."""

from __future__ import annotations

import numpy as np
import pandas as pd

MARKET_DDL = """
CREATE SCHEMA IF NOT EXISTS market;
CREATE TABLE IF NOT EXISTS market.price_signals (
    decision_id VARCHAR, plan_id VARCHAR, planned_at TIMESTAMP, step_ts TIMESTAMP, step INTEGER, zone VARCHAR,
    zone_price DOUBLE, tariff DOUBLE
);
CREATE TABLE IF NOT EXISTS market.grid_costs (
    step_ts TIMESTAMP, plan_id VARCHAR, price DOUBLE, import_mw DOUBLE, energy DOUBLE, losses DOUBLE,
    degradation DOUBLE, curtailment DOUBLE, demand_response DOUBLE, lost_load DOUBLE, imbalance DOUBLE,
    total DOUBLE, expected_total DOUBLE, departure_component VARCHAR, missing VARCHAR, computed_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS market.nodal_prices (
    decision_id VARCHAR, plan_id VARCHAR, planned_at TIMESTAMP, step_ts TIMESTAMP, step INTEGER, bus BIGINT,
    dlmp DOUBLE, energy DOUBLE, losses DOUBLE, congestion DOUBLE, voltage DOUBLE
);
"""
NODAL_STEPS = 12


def signal_frames(decision_id: str, plan_id: str, planned_at, times, feeder, sig) -> dict[str, pd.DataFrame]:
    times = pd.DatetimeIndex(times)
    naive = times.tz_convert("UTC").tz_localize(None) if times.tz is not None else times
    T, Z = sig.tariff.shape
    ps = pd.DataFrame({"decision_id": decision_id, "plan_id": plan_id, "planned_at": planned_at,
                       "step_ts": np.repeat(naive.to_numpy(), Z), "step": np.repeat(np.arange(T), Z),
                       "zone": np.tile(sig.zones.astype(str), T), "zone_price": sig.zone_price.ravel(),
                       "tariff": sig.tariff.ravel()})
    d = sig.dlmp
    h = min(NODAL_STEPS, T)
    N = feeder.n
    nodal = pd.DataFrame({"decision_id": decision_id, "plan_id": plan_id, "planned_at": planned_at,
                          "step_ts": np.repeat(naive.to_numpy()[:h], N), "step": np.repeat(np.arange(h), N),
                          "bus": np.tile(feeder.bus_ids.astype(np.int64), h), "dlmp": d.price[:h].ravel(),
                          "energy": d.energy[:h].ravel(), "losses": d.losses[:h].ravel(),
                          "congestion": d.congestion[:h].ravel(), "voltage": d.voltage[:h].ravel()})
    return {"price_signals": ps, "nodal_prices": nodal}


def write_signals(con, frames: dict[str, pd.DataFrame]) -> None:
    """Append one plan's frames in one transaction."""
    from gridpipeline.store.writers import replace_rows

    con.execute(MARKET_DDL)
    replace_rows(con, [], [(f"market.{name}", df) for name, df in frames.items()])


def cost_rows(actual: pd.DataFrame, expected: pd.DataFrame, steps: pd.DataFrame, departures: list[dict],
              computed_at) -> pd.DataFrame:
    """``market.grid_costs`` rows: one per step, the components as happened, the plan's total and the
    component of a departure (None when the step kept to the plan)."""
    from gridpipeline.market.costs import COMPONENTS

    dep = {d["step"]: d["component"] for d in departures}
    df = actual[list(COMPONENTS) + ["total", "missing"]].copy()
    df.insert(0, "import_mw", steps.import_mw.to_numpy())
    df.insert(0, "price", steps.price.to_numpy())
    df.insert(0, "plan_id", steps.plan_id.to_numpy() if "plan_id" in steps else None)
    df.insert(0, "step_ts", pd.DatetimeIndex(steps.index).to_numpy())
    df["expected_total"] = expected.total.to_numpy()
    df["departure_component"] = [dep.get(i) for i in range(len(df))]
    df["computed_at"] = computed_at
    cols = ["step_ts", "plan_id", "price", "import_mw", *COMPONENTS, "total", "expected_total",
            "departure_component", "missing", "computed_at"]
    return df[cols].reset_index(drop=True)


def write_costs(con, start, end, rows: pd.DataFrame) -> None:
    """Replace the period's rows (a re-run of a day replaces exactly that day)."""
    from gridpipeline.store.writers import replace_rows

    con.execute(MARKET_DDL)
    replace_rows(con, [("DELETE FROM market.grid_costs WHERE step_ts >= ? AND step_ts < ?", [start, end])],
                 [("market.grid_costs", rows)] if len(rows) else [])
