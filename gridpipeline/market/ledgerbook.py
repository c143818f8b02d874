"""What each 5-minute step of a period cost, from the pipeline's own records, and what the plan expected.

Readers over the live store (:func:`read_steps`) give one row per 5-minute step with what was measured
and what was committed; :func:`price_steps` prices it with :func:`costs.step_costs` twice: as it
happened and as the plan in force expected it. Sources, per step:

* **price**: the day-ahead price the step's plan used for its first step (``ops.dispatch_substation``,
  step 0 of the newest plan issued for the step; always a published price at step 0);
* **import**: the estimated power at the grid connection (``grid.state_injection``, the ``ext_grid``
  rows, positive = import), the mean of the step's converged snapshots;
* **losses**: the state estimate's network losses (``grid.state_summary.losses_mw``), mean of the step;
* **degradation**: the batteries' measured power from the BMS reads (``ops.storage_state``), each at its
  degradation cost (the fleet table);
* **curtailment**: the committed first step of the plan (inverter caps; what a capped unit would have
  made is not measured, so actual = committed);
* **demand response**: the delivered reduction of each event over its window, at its compensation
  (``load.dr_events``; an event not yet measured counts at its expected reduction, flagged);
* **lost load**: the committed first step of the shed schedule (``load.shed_steps``) at ``voll``;
* **imbalance**: the fleet's measured power against its market position (``market.positions``, hourly)
  when there is one: ``|fleet - position| x spread`` (the two-price rule's cost over settling the
  deviation at the day-ahead price, which the energy component already counts through the import).

The expected cost of a step is the plan's own figure for its first step: import ``net_load_after_mw``
(which has no losses: the estimated losses are added to both sides, so they never make a departure),
the planned battery power, the same curtailment, DR and shed.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from gridpipeline.market.costs import COMPONENTS, step_costs

STEP = pd.Timedelta(minutes=5)
STEP_COLUMNS = ("price", "import_mw", "losses_mw", "battery_deg_eur_h", "curtailed_mw", "dr_mw", "dr_price",
                "shed_mw", "position_mw", "plan_import_mw", "plan_battery_deg_eur_h")


def _q(con, sql: str, params: list) -> pd.DataFrame:
    import duckdb

    try:
        return con.execute(sql, params).df()
    except duckdb.CatalogException:  # a table the store does not have yet: nothing recorded
        return pd.DataFrame()


def _bucket(col: str) -> str:
    return f"time_bucket(INTERVAL 5 MINUTE, {col})"


def _measured_import(con, p: list) -> pd.DataFrame:
    """step_ts, import_mw: the estimated power at the grid connection per 5-minute step in ``p`` = [start,
    end), the mean over the step's converged snapshots."""
    return _q(con, f"SELECT {_bucket('snapshot_ts')} AS step_ts, sum(p_mw) / count(DISTINCT snapshot_ts) AS import_mw "
                   "FROM grid.state_injection WHERE element_type = 'ext_grid' AND snapshot_ts >= ? AND snapshot_ts < ? "
                   "AND snapshot_ts IN (SELECT snapshot_ts FROM grid.state_summary WHERE converged) GROUP BY 1", p)


def read_steps(con, main, start: datetime, end: datetime, degradation: pd.Series) -> pd.DataFrame:
    """One row per 5-minute step in ``[start, end)`` that has a plan or a state estimate, indexed by
    ``step_ts`` (naive UTC), with :data:`STEP_COLUMNS` (NaN where nothing was recorded). ``con`` is the
    live store (grid.*, ops.*, load.shed_steps, market.positions), ``main`` the analytic store
    (load.dr_events; None: no DR). ``degradation`` is EUR/MWh by battery id."""
    p = [start, end]
    plan = _q(con, "SELECT step_ts, arg_max(price_eur_mwh, planned_at) AS price, arg_max(net_load_after_mw, "
                   "planned_at) AS plan_import_mw, arg_max(curtailed_mw, planned_at) AS curtailed_mw, "
                   "arg_max(plan_id, planned_at) AS plan_id FROM ops.dispatch_substation WHERE step = 0 "
                   "AND step_ts >= ? AND step_ts < ? GROUP BY step_ts", p)
    plan_b = _q(con, "SELECT d.step_ts, d.battery_id, d.p_mw FROM ops.dispatch_plan d WHERE d.step = 0 "
                     "AND d.step_ts >= ? AND d.step_ts < ?", p)
    state = _q(con, f"SELECT {_bucket('snapshot_ts')} AS step_ts, avg(losses_mw) AS losses_mw FROM grid.state_summary "
                    "WHERE converged AND snapshot_ts >= ? AND snapshot_ts < ? GROUP BY 1", p)
    imp = _measured_import(con, p)
    bms = _q(con, f"SELECT {_bucket('read_at')} AS step_ts, battery_id, avg(p_measured_mw) AS p_mw FROM ops.storage_state "
                  "WHERE available AND p_measured_mw IS NOT NULL AND read_at >= ? AND read_at < ? GROUP BY 1, 2", p)
    shed = _q(con, "SELECT step_ts, arg_max(shed_mw, planned_at) AS shed_mw FROM load.shed_steps WHERE step = 0 "
                   "AND step_ts >= ? AND step_ts < ? GROUP BY step_ts", p)
    # refused, unanswered and unmeasurable events pay nothing (load/dr.py's statuses)
    dr = pd.DataFrame() if main is None else _q(main, "SELECT start, \"end\", CASE WHEN status = 'measured' THEN delivered_mw ELSE expected_mw END AS mw, "
                 "status <> 'measured' AS unmeasured, compensation_eur_mwh AS price FROM load.dr_events "
                 "WHERE status IN ('scheduled', 'active', 'measured') AND \"end\" > ? AND start < ?", p)
    pos = _q(con, "SELECT hour, arg_max(position_mw, decided_at) AS position_mw, arg_max(spread_eur_mwh, decided_at) "
                  "AS spread FROM market.positions WHERE hour >= ? AND hour < ? GROUP BY hour",
             [pd.Timestamp(start).floor("h").to_pydatetime(), end])
    return assemble_steps(plan, plan_b, state, imp, bms, shed, dr, pos, degradation)


def read_import_errors(con, start: datetime, end: datetime) -> pd.Series:
    """MW by 5-minute step in ``[start, end)`` (naive UTC): the import measured at the grid connection
    (as :func:`read_steps`) less the import the step's earliest plan expected (``ops.dispatch_substation``'s
    ``net_load_after_mw`` from the first plan that covered it, up to a day ahead): what the tariff's
    peak scenarios are drawn from (:func:`market.tariff.error_scenarios`). Empty when nothing is recorded."""
    p = [start, end]
    plan = _q(con, "SELECT step_ts, arg_min(net_load_after_mw, planned_at) AS plan_mw FROM ops.dispatch_substation "
                   "WHERE step_ts >= ? AND step_ts < ? GROUP BY step_ts", p)
    imp = _measured_import(con, p)
    if not len(plan) or not len(imp):
        return pd.Series(dtype=float, name="import_error_mw")
    a = imp.assign(step_ts=pd.to_datetime(imp.step_ts)).set_index("step_ts").import_mw
    b = plan.assign(step_ts=pd.to_datetime(plan.step_ts)).set_index("step_ts").plan_mw
    return (a - b.reindex(a.index)).dropna().sort_index().rename("import_error_mw")


def assemble_steps(plan, plan_b, state, imp, bms, shed, dr, pos, degradation: pd.Series) -> pd.DataFrame:
    """The readers' frames on one 5-minute index (see :func:`read_steps`); pure, for the tests."""
    def idx(df):
        return pd.DatetimeIndex(pd.to_datetime(df.step_ts)) if len(df) else pd.DatetimeIndex([])

    steps = idx(plan).union(idx(state)).union(idx(imp)).unique().sort_values()
    out = pd.DataFrame(index=pd.DatetimeIndex(steps, name="step_ts"), columns=list(STEP_COLUMNS), dtype=float)
    deg = pd.Series(degradation, dtype=float)

    def put(df, col, src=None):
        if len(df):
            s = df.assign(step_ts=pd.to_datetime(df.step_ts)).set_index("step_ts")[src or col]
            out[col] = s.reindex(out.index).astype(float)

    for c in ("price", "plan_import_mw", "curtailed_mw"):
        put(plan, c)
    put(state, "losses_mw")
    put(imp, "import_mw")
    put(shed, "shed_mw")
    if len(pos):
        ph = pos.assign(hour=pd.to_datetime(pos.hour)).set_index("hour")
        out["position_mw"] = ph.position_mw.reindex(out.index.floor("h")).to_numpy(float)
        out["spread"] = ph.spread.reindex(out.index.floor("h")).to_numpy(float)
    else:
        out["spread"] = np.nan
    for frame, col, fcol in ((bms, "battery_deg_eur_h", "fleet_mw"), (plan_b, "plan_battery_deg_eur_h", "plan_fleet_mw")):
        out[fcol] = np.nan
        if len(frame):
            f = frame.assign(step_ts=pd.to_datetime(frame.step_ts))
            eur_h = f.p_mw.abs() * f.battery_id.astype(str).map(deg).fillna(0.0)
            out[col] = eur_h.groupby(f.step_ts).sum().reindex(out.index)
            out[fcol] = f.p_mw.groupby(f.step_ts).sum().reindex(out.index)
    dr_mw = np.zeros(len(out))
    dr_eur = np.zeros(len(out))
    unmeasured = np.zeros(len(out), bool)
    for e in dr.itertuples() if len(dr) else ():
        on = (out.index >= pd.Timestamp(e.start)) & (out.index < pd.Timestamp(e.end))
        mw = float(e.mw) if pd.notna(e.mw) else 0.0
        dr_mw[on] += mw
        dr_eur[on] += mw * (float(e.price) if pd.notna(e.price) else 0.0)
        unmeasured[on] |= bool(e.unmeasured)
    out["dr_mw"] = dr_mw
    out["dr_price"] = np.divide(dr_eur, dr_mw, out=np.zeros(len(out)), where=dr_mw > 0)
    out["dr_unmeasured"] = unmeasured
    out["plan_id"] = (plan.assign(step_ts=pd.to_datetime(plan.step_ts)).set_index("step_ts").plan_id
                      .reindex(out.index).astype(object) if len(plan) and "plan_id" in plan else None)
    return out


def price_steps(steps: pd.DataFrame, curtail_value: float, voll: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(actual, expected): :func:`costs.step_costs` frames on ``steps``' index. A step without a measured
    import is priced at the plan's (``missing`` names it); one without a price is not priced at all
    (NaN). Curtailment, DR and shed are the committed values on both sides."""
    s = steps
    dt_h = STEP / pd.Timedelta(hours=1)
    imp = s.import_mw.where(s.import_mw.notna(), s.plan_import_mw + s.losses_mw.fillna(0.0))
    common = {"curtailed_mw": s.curtailed_mw.fillna(0.0), "curtail_value": curtail_value,
              "dr_mw": s.dr_mw.fillna(0.0), "dr_price": s.dr_price.fillna(0.0), "shed_mw": s.shed_mw.fillna(0.0),
              "voll": voll, "dt_h": dt_h}
    losses = s.losses_mw.fillna(0.0)
    actual = step_costs(s.price, imp, losses_mw=losses, battery_mw=s.battery_deg_eur_h.fillna(0.0).to_numpy()[:, None],
                        degradation=1.0, **common)
    plan_imp = s.plan_import_mw + losses
    expected = step_costs(s.price, plan_imp.fillna(imp), losses_mw=losses,
                          battery_mw=s.plan_battery_deg_eur_h.fillna(0.0).to_numpy()[:, None], degradation=1.0, **common)
    held = s.position_mw.notna() & s.spread.notna()
    for df, fleet in ((actual, s.fleet_mw), (expected, s.plan_fleet_mw)):
        dev = (fleet.fillna(0.0) - s.position_mw).abs()
        df["imbalance"] = np.where(held, dev * s.spread * dt_h, 0.0)
        df["total"] = df[list(COMPONENTS)].sum(axis=1)
    for df in (actual, expected):
        df.index = s.index
        df.loc[s.price.isna(), [*COMPONENTS, "total"]] = np.nan
    notes = []
    for i in range(len(s)):
        n = []
        if pd.isna(s.import_mw.iloc[i]):
            n.append("import from the plan (no converged estimate)")
        if pd.isna(s.losses_mw.iloc[i]):
            n.append("no losses (no estimate)")
        if pd.isna(s.price.iloc[i]):
            n.append("no plan: not priced")
        if pd.isna(s.battery_deg_eur_h.iloc[i]) and pd.notna(s.plan_battery_deg_eur_h.iloc[i]):
            n.append("no BMS read")
        if bool(s.dr_unmeasured.iloc[i]):
            n.append("DR at the expected reduction (not yet measured)")
        notes.append("; ".join(n))
    actual["missing"] = notes
    return actual, expected
