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
    zone_price DOUBLE, tariff DOUBLE, load_shape DOUBLE
);
-- the responsive load per step relative to the plan's start, the weights of the tariff's mean
ALTER TABLE market.price_signals ADD COLUMN IF NOT EXISTS load_shape DOUBLE;
CREATE TABLE IF NOT EXISTS market.bids (
    delivery_day DATE, decision_id VARCHAR, submitted_at TIMESTAMP, hour TIMESTAMP, cluster VARCHAR, side VARCHAR,
    mw DOUBLE, price DOUBLE, value_eur_mwh DOUBLE, status VARCHAR, reason VARCHAR
);
CREATE TABLE IF NOT EXISTS market.awards (
    delivery_day DATE, decision_id VARCHAR, bid_decision VARCHAR, decided_at TIMESTAMP, hour TIMESTAMP,
    cluster VARCHAR, side VARCHAR, mw DOUBLE, price DOUBLE, clearing_price DOUBLE, awarded_mw DOUBLE,
    position_mw DOUBLE
);
CREATE TABLE IF NOT EXISTS market.positions (
    delivery_day DATE, decision_id VARCHAR, decided_at TIMESTAMP, hour TIMESTAMP, position_mw DOUBLE,
    clearing_price DOUBLE, spread_eur_mwh DOUBLE
);
ALTER TABLE market.bids ADD COLUMN IF NOT EXISTS block VARCHAR;
ALTER TABLE market.awards ADD COLUMN IF NOT EXISTS block VARCHAR;
ALTER TABLE market.positions ADD COLUMN IF NOT EXISTS dr_mw DOUBLE;
CREATE TABLE IF NOT EXISTS market.settlements (
    delivery_day DATE, decision_id VARCHAR, settled_at TIMESTAMP, hour TIMESTAMP, position_mwh DOUBLE,
    actual_mwh DOUBLE, price DOUBLE, imbalance_mwh DOUBLE, imbalance_price DOUBLE, energy_cents BIGINT,
    imbalance_cents BIGINT, total_cents BIGINT
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
                       "tariff": sig.tariff.ravel(),
                       "load_shape": np.repeat(np.ones(T) if getattr(sig, "response_shape", None) is None
                                               else np.asarray(sig.response_shape, float)[:T], Z)})
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


def write_market(con, day, table: str, rows: pd.DataFrame) -> None:
    """Replace one delivery day's rows of ``market.<table>`` (bids, awards, positions, settlements)."""
    from gridpipeline.store.writers import replace_rows

    con.execute(MARKET_DDL)
    replace_rows(con, [(f"DELETE FROM market.{table} WHERE delivery_day = ?", [day])],
                 [(f"market.{table}", rows)] if len(rows) else [])


def market_days(con, table: str) -> set:
    """The delivery days ``market.<table>`` has rows for."""
    import duckdb

    try:
        return {r[0] for r in con.execute(f"SELECT DISTINCT delivery_day FROM market.{table}").fetchall()}
    except duckdb.CatalogException:
        return set()


def read_position(con, start, end) -> pd.DataFrame:
    """The fleet's market position per hour in ``[start, end)``: hour, position_mw, spread_eur_mwh."""
    import duckdb

    try:
        return con.execute("SELECT hour, position_mw, spread_eur_mwh FROM market.positions WHERE hour >= ? AND "
                           "hour < ? ORDER BY hour", [start, end]).df()
    except duckdb.CatalogException:
        return pd.DataFrame(columns=["hour", "position_mw", "spread_eur_mwh"])


def read_sold_blocks(con, since) -> pd.DataFrame:
    """The demand-response blocks awarded on the day-ahead market (``market.awards`` rows with a block)
    that end after ``since``: block, ven, start, end, mw (sold, per hour), price (offered), clearing
    (the mean clearing price over its hours) and decision_id (the award); empty without any."""
    import duckdb

    cols = ["block", "ven", "start", "end", "mw", "price", "clearing", "decision_id"]
    try:
        df = con.execute('SELECT block, any_value(cluster) AS ven, min(hour) AS start, max(hour) + INTERVAL 1 HOUR AS '
                         '"end", max(awarded_mw) AS mw, max(price) AS price, avg(clearing_price) AS clearing, '
                         'any_value(decision_id) AS decision_id FROM market.awards WHERE block IS NOT NULL AND '
                         'awarded_mw > 0 GROUP BY block HAVING max(hour) + INTERVAL 1 HOUR > ? ORDER BY start',
                         [since]).df()
    except (duckdb.CatalogException, duckdb.BinderException):  # no awards yet, or a store from before blocks
        return pd.DataFrame(columns=cols)
    return df[cols]


def read_sold_dr_events(con, hours: pd.DatetimeIndex) -> pd.DataFrame:
    """The calls delivering sold DR blocks (event ids with ``load.dr.SOLD_PREFIX``) overlapping
    ``hours``, from ``load.dr_events`` (the main store's, written by the ``dr_events`` asset): start,
    end, status, expected_mw, delivered_mw; empty without the table."""
    import duckdb

    from gridpipeline.load.dr import SOLD_PREFIX

    cols = ["start", "end", "status", "expected_mw", "delivered_mw"]
    start, end = hours[0].to_pydatetime(), (hours[-1] + pd.Timedelta(hours=1)).to_pydatetime()
    try:
        return con.execute('SELECT start, "end", status, expected_mw, delivered_mw FROM load.dr_events WHERE '
                           'starts_with(event_id, ?) AND "end" > ? AND start < ?', [SOLD_PREFIX, start, end]).df()
    except duckdb.CatalogException:
        return pd.DataFrame(columns=cols)


def sold_dr_by_hour(events: pd.DataFrame, hours: pd.DatetimeIndex) -> pd.DataFrame:
    """Per hour, what the calls delivering sold DR blocks did (:func:`read_sold_dr_events`), each weighted
    by its overlap with the hour: ``dr_delivered_mw`` (measured; 0 for a call refused, unanswered, not
    sent or ended unmeasurable) and ``dr_unmeasured_mw`` (the expected MW of a call scheduled or still
    active, whose measurement is still to come)."""
    out = pd.DataFrame({"dr_delivered_mw": 0.0, "dr_unmeasured_mw": 0.0}, index=hours)
    for e in events.itertuples():
        s, t = pd.Timestamp(e.start), pd.Timestamp(e.end)
        share = np.array([max(0.0, (min(t, h + pd.Timedelta(hours=1)) - max(s, h)).total_seconds() / 3600)
                          for h in hours])
        if e.status == "measured" and pd.notna(e.delivered_mw):
            out["dr_delivered_mw"] += share * float(e.delivered_mw)
        elif e.status in ("scheduled", "active"):
            out["dr_unmeasured_mw"] += share * float(e.expected_mw)
    return out


def read_day_for_settlement(con, hours: pd.DatetimeIndex) -> pd.DataFrame:
    """Per delivery hour: ``position_mw`` and ``clearing_price`` (market.positions, the newest award),
    ``metered_mw`` (the fleet's measured power, mean of the hour's BMS reads, each read summed over the
    available units) and ``planned_mw`` (the plans' committed first steps, mean of the hour), + discharge;
    ``dr_mw``, the part of the position sold as demand response (what its calls delivered is in the
    main store: :func:`read_sold_dr_events`, :func:`sold_dr_by_hour`)."""
    import duckdb

    start, end = hours[0].to_pydatetime(), (hours[-1] + pd.Timedelta(hours=1)).to_pydatetime()
    out = pd.DataFrame(index=hours)

    def q(sql):
        try:
            return con.execute(sql, [start, end]).df()
        except duckdb.CatalogException:
            return pd.DataFrame()

    try:  # a store from before DR blocks has no dr_mw until its first award since
        has_dr = bool(con.execute("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'market' "
                                  "AND table_name = 'positions' AND column_name = 'dr_mw'").fetchone()[0])
    except duckdb.Error:
        has_dr = False
    dr_mw = "coalesce(dr_mw, 0)" if has_dr else "0.0"
    pos = q("SELECT hour, arg_max(position_mw, decided_at) AS position_mw, arg_max(clearing_price, decided_at) "
            f"AS clearing_price, arg_max(decision_id, decided_at) AS award, arg_max({dr_mw}, decided_at) "
            "AS dr_mw FROM market.positions WHERE hour >= ? AND hour < ? GROUP BY hour")
    met = q("SELECT date_trunc('hour', read_at) AS hour, avg(mw) AS metered_mw, count(*) AS reads FROM (SELECT read_at, "
            "sum(p_measured_mw) AS mw FROM ops.storage_state WHERE available AND p_measured_mw IS NOT NULL AND "
            "read_at >= ? AND read_at < ? GROUP BY read_at) GROUP BY 1")
    plan = q("SELECT date_trunc('hour', step_ts) AS hour, avg(mw) AS planned_mw FROM (SELECT step_ts, "
             "sum(p_mw) AS mw FROM ops.dispatch_plan WHERE step = 0 AND step_ts >= ? AND step_ts < ? GROUP BY step_ts) "
             "GROUP BY 1")
    for df, cols in ((pos, ["position_mw", "clearing_price", "award", "dr_mw"]), (met, ["metered_mw", "reads"]),
                     (plan, ["planned_mw"])):
        for c in cols:
            out[c] = (df.assign(hour=pd.to_datetime(df.hour)).set_index("hour")[c].reindex(hours)
                      if len(df) and c in df else np.nan)
    return out


FINANCIAL_COLUMNS = ("cost_energy", "cost_losses", "cost_degradation", "cost_curtailment", "cost_demand_response",
                     "cost_lost_load", "cost_imbalance", "cost_total", "counterfactual_total", "savings",
                     "market_revenue", "dr_payments", "shed_cost", "steps_priced", "counterfactual_over_limit_steps")


def write_financial(con, day, figures: dict, computed_at) -> pd.DataFrame:
    """Replace the day's row of ``market.financial_daily``; returns the month to date's rows."""
    from gridpipeline.store.writers import replace_rows

    cols = ", ".join(f"{c} DOUBLE" for c in FINANCIAL_COLUMNS)
    con.execute(f"CREATE SCHEMA IF NOT EXISTS market; CREATE TABLE IF NOT EXISTS market.financial_daily "
                f"(day DATE, {cols}, computed_at TIMESTAMP)")
    row = pd.DataFrame([{"day": day, **{c: float(figures[c]) for c in FINANCIAL_COLUMNS}, "computed_at": computed_at}])
    replace_rows(con, [("DELETE FROM market.financial_daily WHERE day = ?", [day])], [("market.financial_daily", row)])
    first = pd.Timestamp(day).replace(day=1).date()
    return con.execute("SELECT * FROM market.financial_daily WHERE day >= ? AND day <= ? ORDER BY day",
                       [first, day]).df()


def read_financial_month(con, first, last) -> pd.DataFrame:
    """``market.financial_daily`` rows of the days ``first .. last`` (dates), by day; empty without the table."""
    import duckdb

    try:
        return con.execute("SELECT * FROM market.financial_daily WHERE day >= ? AND day <= ? ORDER BY day",
                           [first, last]).df()
    except duckdb.CatalogException:
        return pd.DataFrame(columns=["day", *FINANCIAL_COLUMNS, "computed_at"])


def write_financial_month(con, month: str, figures: dict, computed_at) -> None:
    """Replace the month's row of ``market.financial_monthly`` (``month`` 'YYYY-MM')."""
    from gridpipeline.store.writers import replace_rows

    cols = ", ".join(f"{c} DOUBLE" for c in FINANCIAL_COLUMNS)
    con.execute(f"CREATE SCHEMA IF NOT EXISTS market; CREATE TABLE IF NOT EXISTS market.financial_monthly "
                f"(month VARCHAR, days INTEGER, {cols}, computed_at TIMESTAMP)")
    row = pd.DataFrame([{"month": month, "days": int(figures["days"]),
                         **{c: float(figures[c]) for c in FINANCIAL_COLUMNS}, "computed_at": computed_at}])
    replace_rows(con, [("DELETE FROM market.financial_monthly WHERE month = ?", [month])],
                 [("market.financial_monthly", row)])
