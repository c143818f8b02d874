"""The dispatcher's peak scenarios for the tariff: read from its own live store (plans and measured
import), once a day, and laid on the plan's steps (market.tariff.error_scenarios)."""

from __future__ import annotations

from types import SimpleNamespace

import duckdb
import numpy as np
import pandas as pd

from gridpipeline.orchestration.dispatcher import Dispatcher

DAY0 = pd.Timestamp("2026-11-20")  # winter: Berlin = UTC + 1


def _store(path, days: int) -> None:
    """A live store with ``days`` days of 5-minute steps: each planned at 5 MW a day ahead, measured at
    5 MW, except 1 MW more at 17:00 local (16:00 UTC)."""
    con = duckdb.connect(str(path))
    for s in ("grid", "ops"):
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
    steps = pd.date_range(DAY0, periods=days * 288, freq="5min")
    con.execute("CREATE TABLE ops.dispatch_substation (plan_id VARCHAR, planned_at TIMESTAMP, step_ts TIMESTAMP, "
                "step INTEGER, net_load_after_mw DOUBLE, curtailed_mw DOUBLE, price_eur_mwh DOUBLE)")
    plans = pd.DataFrame({"plan_id": "p", "planned_at": steps - pd.Timedelta(days=1), "step_ts": steps, "step": 287,
                          "net_load_after_mw": 5.0, "curtailed_mw": 0.0, "price_eur_mwh": 50.0})
    # a later plan for the same steps (6 MW) is not what the errors are measured against
    late = plans.assign(planned_at=steps, step=0, net_load_after_mw=6.0)
    con.execute("INSERT INTO ops.dispatch_substation SELECT * FROM plans UNION ALL SELECT * FROM late")
    con.execute("CREATE TABLE grid.state_summary (snapshot_ts TIMESTAMP, converged BOOLEAN, losses_mw DOUBLE)")
    con.execute("INSERT INTO grid.state_summary SELECT step_ts, true, 0.0 FROM plans")
    inj = pd.DataFrame({"snapshot_ts": steps, "element_type": "ext_grid", "element_id": 0,
                        "p_mw": 5.0 + (steps.hour == 16), "q_mvar": 0.0, "energized": True})
    con.execute("CREATE TABLE grid.state_injection AS SELECT * FROM inj")
    con.close()


def test_scenarios_from_the_live_store_by_local_time(tmp_path):
    path = tmp_path / "live.duckdb"
    _store(path, 8)
    d = SimpleNamespace(s=SimpleNamespace(live_db_path=path))
    now = (DAY0 + pd.Timedelta(days=8, hours=6)).to_pydatetime()
    times = pd.date_range(now, periods=288, freq="5min", tz="UTC")
    s = Dispatcher._import_scenarios(d, now, times)
    # eight local days end before the plan's: the first (23 h from 01:00 local) counts, the ninth has begun
    assert s.shape == (8, 288)
    hot = (times.tz_convert("Europe/Berlin").hour == 17)
    np.testing.assert_allclose(s[:, hot], 1.0)
    np.testing.assert_allclose(s[:, ~hot], 0.0)
    # read once a day: a store gone later the same day changes nothing
    path.unlink()
    assert Dispatcher._import_scenarios(d, now, times).shape == (8, 288)


def test_under_a_week_of_errors_leaves_the_margin(tmp_path):
    path = tmp_path / "live.duckdb"
    _store(path, 5)
    d = SimpleNamespace(s=SimpleNamespace(live_db_path=path))
    now = (DAY0 + pd.Timedelta(days=5, hours=6)).to_pydatetime()
    assert Dispatcher._import_scenarios(d, now, pd.date_range(now, periods=12, freq="5min", tz="UTC")) is None
    missing = SimpleNamespace(s=SimpleNamespace(live_db_path=tmp_path / "none.duckdb"))
    assert Dispatcher._import_scenarios(missing, now, pd.date_range(now, periods=12, freq="5min", tz="UTC")) is None
