"""The load domain's tables in the analytic store (schema ``load``)."""

from __future__ import annotations

import contextlib
from datetime import datetime

from gridpipeline.load.priorities import Priorities


def ensure_load_schema(con) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS load")
    con.execute("""CREATE TABLE IF NOT EXISTS load.block_priorities (
        block_id BIGINT, tier INTEGER, tier_name VARCHAR, loads INTEGER, load_mw DOUBLE, customers BIGINT,
        classes VARCHAR, protected BOOLEAN, protected_by VARCHAR, interruptible_mw DOUBLE, switchable BOOLEAN,
        feeder BIGINT, parent BIGINT, feeding_switch BIGINT, policy_sha256 VARCHAR, computed_at TIMESTAMP)""")
    con.execute("""CREATE TABLE IF NOT EXISTS load.block_loads (
        load_id BIGINT, block_id BIGINT, class VARCHAR, customers BIGINT, protected_by VARCHAR,
        from_registry BOOLEAN, computed_at TIMESTAMP)""")


def write_priorities(con, pr: Priorities, at: datetime) -> None:
    """Replace the current priorities (one transaction): they describe the network and policy now."""
    t = pr.table.reset_index()
    t = t.assign(policy_sha256=pr.policy_sha256, computed_at=at)
    loads = pr.loads.assign(computed_at=at)
    con.execute("BEGIN")
    try:
        con.execute("DELETE FROM load.block_priorities")
        con.execute("DELETE FROM load.block_loads")
        con.register("t_prio", t)
        con.execute("INSERT INTO load.block_priorities BY NAME SELECT * FROM t_prio")
        con.register("t_loads", loads)
        con.execute("INSERT INTO load.block_loads BY NAME SELECT * FROM t_loads")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    finally:
        for name in ("t_prio", "t_loads"):
            with contextlib.suppress(Exception):  # not registered when the transaction failed early
                con.unregister(name)
