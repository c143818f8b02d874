"""The load domain's tables in the analytic store (schema ``load``)."""

from __future__ import annotations

from datetime import datetime

from gridpipeline.load.priorities import Priorities
from gridpipeline.store.writers import replace_rows


def ensure_load_schema(con) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS load")
    con.execute("""CREATE TABLE IF NOT EXISTS load.block_priorities (
        block_id BIGINT, tier INTEGER, tier_name VARCHAR, loads INTEGER, load_mw DOUBLE, customers BIGINT,
        classes VARCHAR, protected BOOLEAN, protected_by VARCHAR, interruptible_mw DOUBLE, switchable BOOLEAN,
        feeder BIGINT, parent BIGINT, feeding_switch BIGINT, policy_sha256 VARCHAR, computed_at TIMESTAMP)""")
    con.execute("""CREATE TABLE IF NOT EXISTS load.block_loads (
        load_id BIGINT, block_id BIGINT, class VARCHAR, customers BIGINT, protected_by VARCHAR,
        from_registry BOOLEAN, computed_at TIMESTAMP)""")
    con.execute("""CREATE TABLE IF NOT EXISTS load.shed_schedule (
        decision_id VARCHAR, planned_at TIMESTAMP, step_ts TIMESTAMP, step INTEGER, block_id BIGINT, tier INTEGER,
        net_mw DOUBLE, load_mw DOUBLE, mode VARCHAR, chain VARCHAR)""")
    con.execute("""CREATE TABLE IF NOT EXISTS load.shed_steps (
        decision_id VARCHAR, planned_at TIMESTAMP, step_ts TIMESTAMP, step INTEGER, deficit_mw DOUBLE,
        shed_mw DOUBLE, greedy_shed_mw DOUBLE, unserved_mw DOUBLE, blocks_out INTEGER, chain VARCHAR)""")


def load_power(con, loads: list[int], since) -> "pd.DataFrame":
    """Active power of ``loads`` from the cleaned telemetry (canonical MW; good readings only, so
    spikes, stuck values and wrongly scaled exports never reach a baseline): load_id, ts, mw."""
    return con.execute(
        "SELECT s.element_id AS load_id, c.ts, c.value AS mw FROM clean.clean_telemetry c "
        "JOIN telemetry.sensors s USING (sensor_id) WHERE s.kind = 'p_inj' AND s.element_type = 'load' "
        "AND c.quality = 'good' AND c.value IS NOT NULL AND list_contains(?, s.element_id) AND c.ts >= ?",
        [list(loads), since]).df()


def write_dr_events(con, frame) -> None:
    """The events table (``load.dr_events``): the rows of the events in ``frame`` replace theirs."""
    con.execute("""CREATE TABLE IF NOT EXISTS load.dr_events (
        event_id VARCHAR, decision_id VARCHAR, called_at TIMESTAMP, ven_id VARCHAR, contract VARCHAR,
        load_id BIGINT, start TIMESTAMP, "end" TIMESTAMP, mw DOUBLE, expected_mw DOUBLE,
        compensation_eur_mwh DOUBLE, opt VARCHAR, answered_at TIMESTAMP, flag VARCHAR, status VARCHAR,
        baseline VARCHAR, baseline_mw DOUBLE, measured_mw DOUBLE, delivered_mw DOUBLE, delivered_share DOUBLE,
        delivered_mwh DOUBLE, payment_eur DOUBLE, computed_at TIMESTAMP, interrupted_min DOUBLE)""")
    con.execute("ALTER TABLE load.dr_events ADD COLUMN IF NOT EXISTS interrupted_min DOUBLE")  # stores before it
    ids = [str(e) for e in frame.event_id] if len(frame) else []
    replace_rows(con, [("DELETE FROM load.dr_events WHERE list_contains(?, event_id)", [ids])] if ids else [],
                 [("load.dr_events", frame)] if len(frame) else [])


def write_priorities(con, pr: Priorities, at: datetime) -> None:
    """Replace the current priorities (one transaction): they describe the network and policy now."""
    t = pr.table.reset_index()
    t = t.assign(policy_sha256=pr.policy_sha256, computed_at=at)
    loads = pr.loads.assign(computed_at=at)
    replace_rows(con, [("DELETE FROM load.block_priorities", []), ("DELETE FROM load.block_loads", [])],
                 [("load.block_priorities", t), ("load.block_loads", loads)])


def write_shed(con, decision_id: str, planned_at: datetime, dec, chain: str = "live",
               replace_where: tuple[str, list] | None = None) -> None:
    """One shed decision's rows (``load.shed_schedule``: per block and step; ``load.shed_steps``: per
    step) in one transaction; ``replace_where`` (SQL on ``planned_at``, params) drops a replayed
    partition's earlier rows first."""
    import numpy as np
    import pandas as pd

    ensure_load_schema(con)
    f = dec.frame.assign(decision_id=decision_id, planned_at=planned_at, mode=dec.mode, chain=chain)
    p, r = dec.problem, dec.result
    steps = pd.DataFrame({"decision_id": decision_id, "planned_at": planned_at,
                          "step_ts": pd.DatetimeIndex(dec.times).tz_localize(None) if dec.times.tz is not None
                          else dec.times, "step": np.arange(p.shape[1]), "deficit_mw": p.deficit_mw,
                          "shed_mw": r.shed_mw, "greedy_shed_mw": (p.net_mw * dec.greedy).sum(axis=0),
                          "unserved_mw": r.unserved_deficit_mw, "blocks_out": (r.shed > 0.5).sum(axis=0),
                          "chain": chain})
    if len(f) and getattr(f.step_ts.dtype, "tz", None) is not None:
        f["step_ts"] = f.step_ts.dt.tz_localize(None)
    deletes = [] if replace_where is None else [
        (f"DELETE FROM load.{t} WHERE chain = ? AND planned_at {replace_where[0]}", [chain, *replace_where[1]])
        for t in ("shed_schedule", "shed_steps")]
    replace_rows(con, deletes, [
        ("load.shed_schedule", f[["decision_id", "planned_at", "step_ts", "step", "block_id", "tier", "net_mw",
                                  "load_mw", "mode", "chain"]]),
        ("load.shed_steps", steps)])


RELIABILITY_COLUMNS = ["report_day", "period", "period_start", "without_med", "scope", "key", "customers_served",
                       "customers_interrupted", "customer_minutes", "momentary_customers", "saifi", "saidi",
                       "caidi", "maifi", "ens_mwh", "computed_at"]


def write_reliability(con, report_day, rows) -> None:
    """Replace one day's reliability report (``load.reliability``) in one transaction."""
    con.execute("CREATE SCHEMA IF NOT EXISTS load")
    con.execute("""CREATE TABLE IF NOT EXISTS load.reliability (
        report_day DATE, period VARCHAR, period_start DATE, without_med BOOLEAN, scope VARCHAR, key VARCHAR,
        customers_served BIGINT, customers_interrupted BIGINT, customer_minutes DOUBLE, momentary_customers BIGINT,
        saifi DOUBLE, saidi DOUBLE, caidi DOUBLE, maifi DOUBLE, ens_mwh DOUBLE, computed_at TIMESTAMP)""")
    replace_rows(con, [("DELETE FROM load.reliability WHERE report_day = ?", [report_day])],
                 [("load.reliability", rows[RELIABILITY_COLUMNS])])
