"""The day's cost per step from the stores: a hand-built live store and analytic store, read back through
the real SQL, priced by hand."""

from __future__ import annotations

from datetime import datetime

import duckdb
import numpy as np
import pandas as pd
import pytest

from gridpipeline.market.costs import cost_departures
from gridpipeline.market.ledgerbook import price_steps, read_import_errors, read_steps
from gridpipeline.market.store import cost_rows, write_costs

T0 = datetime(2026, 12, 1, 10, 0)
DT = 5 / 60


@pytest.fixture()
def stores(tmp_path):
    live = duckdb.connect(str(tmp_path / "live.duckdb"))
    main = duckdb.connect(str(tmp_path / "main.duckdb"))
    for c in (live, main):
        for schema in ("grid", "ops", "load", "market"):
            c.execute(f"CREATE SCHEMA {schema}")
    ts = [T0 + pd.Timedelta(seconds=30 * k) for k in range(20)]  # two steps of 30-s snapshots
    live.execute("CREATE TABLE grid.state_summary (snapshot_ts TIMESTAMP, converged BOOLEAN, losses_mw DOUBLE)")
    live.executemany("INSERT INTO grid.state_summary VALUES (?, ?, ?)",
                     [(t, k != 3, 0.1 if k < 10 else 0.3) for k, t in enumerate(ts)])
    live.execute("CREATE TABLE grid.state_injection (snapshot_ts TIMESTAMP, element_type VARCHAR, element_id BIGINT, "
                 "p_mw DOUBLE, q_mvar DOUBLE, energized BOOLEAN)")
    # import 10 MW in the first step (the unconverged snapshot's 99 MW left out), 6 MW in the second
    live.executemany("INSERT INTO grid.state_injection VALUES (?, 'ext_grid', 0, ?, 0, true)",
                     [(t, 99.0 if k == 3 else 10.0 if k < 10 else 6.0) for k, t in enumerate(ts)])
    live.executemany("INSERT INTO grid.state_injection VALUES (?, 'load', 1, 5, 0, true)", [(t,) for t in ts])
    live.execute("CREATE TABLE ops.dispatch_substation (plan_id VARCHAR, planned_at TIMESTAMP, step_ts TIMESTAMP, "
                 "step INTEGER, net_load_after_mw DOUBLE, curtailed_mw DOUBLE, price_eur_mwh DOUBLE)")
    s1 = T0 + pd.Timedelta(minutes=5)
    live.executemany("INSERT INTO ops.dispatch_substation VALUES (?, ?, ?, ?, ?, ?, ?)", [
        ("p0", T0, T0, 0, 9.9, 0.0, 50.0), ("p0", T0, s1, 1, 9.0, 0.0, 60.0),
        ("p1", s1, s1, 0, 5.7, 1.2, 80.0),   # the second step's own plan overrides p0's step 1
    ])
    live.execute("CREATE TABLE ops.dispatch_plan (plan_id VARCHAR, planned_at TIMESTAMP, step_ts TIMESTAMP, "
                 "step INTEGER, battery_id VARCHAR, p_mw DOUBLE)")
    live.executemany("INSERT INTO ops.dispatch_plan VALUES (?, ?, ?, 0, ?, ?)",
                     [("p0", T0, T0, "b1", 1.0), ("p0", T0, T0, "b2", -0.5), ("p1", s1, s1, "b1", 2.0)])
    live.execute("CREATE TABLE ops.storage_state (read_at TIMESTAMP, battery_id VARCHAR, available BOOLEAN, "
                 "p_measured_mw DOUBLE)")
    live.executemany("INSERT INTO ops.storage_state VALUES (?, ?, true, ?)",
                     [(T0, "b1", 1.0), (T0, "b2", -0.5), (s1, "b1", 1.0)])  # b1 did half its plan in step 2
    live.execute("CREATE TABLE load.shed_steps (decision_id VARCHAR, planned_at TIMESTAMP, step_ts TIMESTAMP, "
                 "step INTEGER, shed_mw DOUBLE)")
    live.execute("INSERT INTO load.shed_steps VALUES ('s', ?, ?, 0, 0.4)", [s1, s1])
    main.execute("CREATE TABLE load.dr_events (start TIMESTAMP, \"end\" TIMESTAMP, status VARCHAR, delivered_mw DOUBLE, "
                 "expected_mw DOUBLE, compensation_eur_mwh DOUBLE)")
    main.executemany("INSERT INTO load.dr_events VALUES (?, ?, ?, ?, ?, ?)", [
        (T0, T0 + pd.Timedelta(minutes=10), "measured", 0.2, 0.3, 150.0),
        (T0, T0 + pd.Timedelta(minutes=10), "refused", None, 0.5, 150.0),   # pays nothing
    ])
    yield live, main
    live.close()
    main.close()


def test_steps_read_and_priced_by_hand(stores):
    live, main = stores
    deg = pd.Series({"b1": 20.0, "b2": 75.0})
    steps = read_steps(live, main, T0, T0 + pd.Timedelta(hours=1), deg)
    assert list(steps.index) == [pd.Timestamp(T0), pd.Timestamp(T0) + pd.Timedelta(minutes=5)]
    assert steps.import_mw.tolist() == pytest.approx([10.0, 6.0])
    assert steps.losses_mw.tolist() == pytest.approx([0.1, 0.3])
    assert steps.price.tolist() == [50.0, 80.0] and steps.plan_id.tolist() == ["p0", "p1"]
    assert steps.battery_deg_eur_h.tolist() == pytest.approx([1.0 * 20 + 0.5 * 75, 1.0 * 20])
    assert steps.plan_battery_deg_eur_h.tolist() == pytest.approx([57.5, 40.0])
    assert steps.dr_mw.tolist() == [0.2, 0.2] and steps.shed_mw.fillna(0).tolist() == [0.0, 0.4]
    actual, expected = price_steps(steps, curtail_value=30.0, voll=5000.0)
    # step 2 by hand: import 6 MW at 80, of which 0.3 MW losses; degradation 20 EUR/h; curtailment 1.2 MW at
    # 30; DR 0.2 MW at 150; shed 0.4 MW at 5000
    a = actual.iloc[1]
    assert a.energy == pytest.approx((6.0 - 0.3) * 80 * DT)
    assert a.losses == pytest.approx(0.3 * 80 * DT)
    assert a.degradation == pytest.approx(20 * DT)
    assert a.curtailment == pytest.approx(1.2 * 30 * DT)
    assert a.demand_response == pytest.approx(0.2 * 150 * DT)
    assert a.lost_load == pytest.approx(0.4 * 5000 * DT)
    assert a.imbalance == 0.0
    e = expected.iloc[1]  # the plan: 5.7 MW before losses, b1 at 2 MW
    assert e.energy + e.losses == pytest.approx((5.7 + 0.3) * 80 * DT)
    assert e.degradation == pytest.approx(40 * DT)
    assert actual.total.iloc[1] - expected.total.iloc[1] == pytest.approx(-20 * DT)
    deps = cost_departures(actual, expected, share=0.001, floor_eur=0.5)
    assert [d["step"] for d in deps] == [1] and deps[0]["component"] == "degradation"
    assert "" == actual.missing.iloc[0]


def test_rows_replace_exactly_their_day(stores, tmp_path):
    live, main = stores
    steps = read_steps(live, main, T0, T0 + pd.Timedelta(hours=1), pd.Series({"b1": 20.0}))
    actual, expected = price_steps(steps, 30.0, 5000.0)
    rows = cost_rows(actual, expected, steps, [], T0)
    day = pd.Timestamp(T0).normalize().to_pydatetime()
    write_costs(main, day, day + pd.Timedelta(days=1), rows)
    write_costs(main, day, day + pd.Timedelta(days=1), rows)  # a re-run
    other = rows.assign(step_ts=rows.step_ts - pd.Timedelta(days=1))
    write_costs(main, day - pd.Timedelta(days=1), day, other)
    n = main.execute("SELECT count(*), count(DISTINCT step_ts) FROM market.grid_costs").fetchone()
    assert n == (4, 4)
    assert np.isclose(main.execute("SELECT sum(total) FROM market.grid_costs WHERE step_ts >= ?", [day]).fetchone()[0],
                      actual.total.sum())


def test_nothing_recorded_yet_prices_nothing(tmp_path):
    con = duckdb.connect(str(tmp_path / "empty.duckdb"))
    steps = read_steps(con, None, T0, T0 + pd.Timedelta(days=1), pd.Series(dtype=float))
    actual, expected = price_steps(steps, 30.0, 5000.0)
    assert len(actual) == 0 and len(expected) == 0


def test_the_asset_prices_the_day_warns_on_a_departure_and_without_data(tmp_path, monkeypatch):
    from dagster import materialize
    from dagster_duckdb import DuckDBResource

    from gridpipeline.market.assets import grid_costs
    from gridpipeline.settings import get_settings, reset_settings
    from gridpipeline.sources.network import load_network_model
    from gridpipeline.sources.resources import NetworkModelResource, SettingsResource
    from gridpipeline.storage.planner import fleet_table

    monkeypatch.setenv("GRIDPIPELINE_HOME", str(tmp_path))
    reset_settings()
    s = get_settings()
    s.ensure_dirs()
    res = {"duckdb": DuckDBResource(database=str(s.db_path)), "settings": SettingsResource.from_settings(s),
           "network": NetworkModelResource(path=str(s.network))}
    # a day with nothing recorded: the check warns, it never passes
    out = materialize([grid_costs], partition_key="2026-11-30", resources=res)
    (check,) = out.get_asset_check_evaluations()
    assert out.success and not check.passed and "no step" in check.description
    battery = str(fleet_table(load_network_model(s.network).net).battery_id.iloc[0])
    with duckdb.connect(str(s.live_db_path)) as live:
        for schema in ("grid", "ops"):
            live.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        live.execute("CREATE TABLE grid.state_summary (snapshot_ts TIMESTAMP, converged BOOLEAN, losses_mw DOUBLE)")
        live.execute("CREATE TABLE grid.state_injection (snapshot_ts TIMESTAMP, element_type VARCHAR, "
                     "element_id BIGINT, p_mw DOUBLE, q_mvar DOUBLE, energized BOOLEAN)")
        live.execute("CREATE TABLE ops.dispatch_substation (plan_id VARCHAR, planned_at TIMESTAMP, step_ts TIMESTAMP, "
                     "step INTEGER, net_load_after_mw DOUBLE, curtailed_mw DOUBLE, price_eur_mwh DOUBLE)")
        live.execute("CREATE TABLE ops.dispatch_plan (plan_id VARCHAR, planned_at TIMESTAMP, step_ts TIMESTAMP, "
                     "step INTEGER, battery_id VARCHAR, p_mw DOUBLE)")
        live.execute("CREATE TABLE ops.storage_state (read_at TIMESTAMP, battery_id VARCHAR, available BOOLEAN, "
                     "p_measured_mw DOUBLE)")
        for k in range(6):
            t = T0 + pd.Timedelta(minutes=5 * k)
            live.execute("INSERT INTO grid.state_summary VALUES (?, true, 0.1)", [t])
            # step 4 imports 3 MW more than its plan: an energy departure
            live.execute("INSERT INTO grid.state_injection VALUES (?, 'ext_grid', 0, ?, 0, true)",
                         [t, 8.0 + (3.0 if k == 4 else 0.0)])
            live.execute("INSERT INTO ops.dispatch_substation VALUES (?, ?, ?, 0, 7.9, 0, 70)", [f"p{k}", t, t])
            live.execute("INSERT INTO ops.dispatch_plan VALUES (?, ?, ?, 0, ?, 0.5)", [f"p{k}", t, t, battery])
            live.execute("INSERT INTO ops.storage_state VALUES (?, ?, true, 0.5)", [t, battery])
    for _ in range(2):
        out = materialize([grid_costs], partition_key="2026-12-01", resources=res)
        assert out.success
    meta = out.get_asset_materialization_events()[0].materialization.metadata
    assert meta["steps_priced"].value == 6 and meta["departures"].value == 1
    assert meta["cost_eur"].value == pytest.approx(meta["expected_eur"].value + 3.0 * 70 * DT, abs=0.02)
    assert "data:image/png" in meta["chart"].value
    (check,) = out.get_asset_check_evaluations()
    assert not check.passed and "energy" in check.description
    with duckdb.connect(str(s.db_path), read_only=True) as con:
        n, runs = con.execute("SELECT count(*), count(DISTINCT computed_at) FROM market.grid_costs").fetchone()
    assert (n, runs) == (6, 1)
    # the day's financial report: the fleet's 0.5 MW discharge is added back without optimisation
    from gridpipeline.market.assets import financial_report

    out = materialize([financial_report], partition_key="2026-12-01", resources=res)
    meta = out.get_asset_materialization_events()[0].materialization.metadata
    assert meta["counterfactual_total"].value == pytest.approx(
        meta["cost_total"].value + 0.5 * 70 * DT * 6 - meta["cost_degradation"].value, abs=0.05)
    assert "data:image/png" in meta["chart_day"].value and "data:image/png" in meta["chart_month"].value
    (check,) = out.get_asset_check_evaluations()
    assert check.passed == (meta["savings"].value >= 0)
    # the month's report: the day's figures summed, a row in market.financial_monthly, the filing copy
    from gridpipeline.market.assets import financial_report_monthly

    day = {k: meta[k].value for k in ("cost_total", "savings", "market_revenue")}
    out = materialize([financial_report_monthly], partition_key="2026-12-01", resources=res)
    mm = out.get_asset_materialization_events()[0].materialization.metadata
    assert mm["days"].value == 1 and all(mm[k].value == pytest.approx(v, abs=0.01) for k, v in day.items())
    assert "data:image/png" in mm["chart_month"].value
    assert (s.home / "reports" / "2026-12" / "report.html").exists()
    with duckdb.connect(str(s.db_path), read_only=True) as con:
        assert con.execute("SELECT count(*), max(savings) FROM market.financial_monthly").fetchone() == (
            1, pytest.approx(day["savings"], abs=0.01))
    (check,) = out.get_asset_check_evaluations()
    assert check.passed == (day["savings"] >= 0)
    out = materialize([financial_report_monthly], partition_key="2026-11-01", resources=res)
    (check,) = out.get_asset_check_evaluations()
    assert out.success and not check.passed and "no day" in check.description


def test_settlement_of_a_day_reconciles_with_the_ledger_and_the_award(tmp_path, monkeypatch):
    """A delivery day with an award (1 MW sold at 02:00, 0.5 MW bought at 03:00 Berlin) and metered fleet
    power (0.8 MW at 02:00: short 0.2 MWh; nothing read at 03:00, the plan's -0.5 stands in): the lines
    by hand, the record in the ledger, the blocking check passing; without an award it warns."""
    from dagster import materialize
    from dagster_duckdb import DuckDBResource

    from gridpipeline.ledger.store import Ledger
    from gridpipeline.market.assets import market_settlement
    from gridpipeline.market.bids import day_hours
    from gridpipeline.market.store import MARKET_DDL
    from gridpipeline.settings import get_settings, reset_settings
    from gridpipeline.sources.resources import SettingsResource

    monkeypatch.setenv("GRIDPIPELINE_HOME", str(tmp_path))
    reset_settings()
    s = get_settings()
    s.ensure_dirs()
    res = {"duckdb": DuckDBResource(database=str(s.db_path)), "settings": SettingsResource.from_settings(s)}
    out = materialize([market_settlement], partition_key="2026-11-30", resources=res)
    (check,) = out.get_asset_check_evaluations()
    assert out.success and not check.passed and "no award" in check.description
    hours = day_hours(pd.Timestamp("2026-12-01"))
    led = Ledger(s.ledger)
    pos = np.zeros(len(hours))
    pos[2], pos[3] = 1.0, -0.5
    price = np.full(len(hours), 80.0)
    award = led.append("market_award", {"delivery_day": "2026-12-01", "decision": {
        "revenue_cents": round(100 * (1.0 * 80 - 0.5 * 80))}}, mode="automatic", actor="market")
    with duckdb.connect(str(s.live_db_path)) as live:
        live.execute(MARKET_DDL)
        live.execute("CREATE SCHEMA IF NOT EXISTS ops")
        live.register("_p", pd.DataFrame({"delivery_day": pd.Timestamp("2026-12-01").date(), "decision_id": award.id,
                                          "decided_at": T0, "hour": hours, "position_mw": pos, "clearing_price": price,
                                          "spread_eur_mwh": 16.0}))
        live.execute("INSERT INTO market.positions BY NAME SELECT * FROM _p")
        live.execute("CREATE TABLE ops.storage_state (read_at TIMESTAMP, battery_id VARCHAR, available BOOLEAN, "
                     "p_measured_mw DOUBLE)")
        live.execute("CREATE TABLE ops.dispatch_plan (plan_id VARCHAR, planned_at TIMESTAMP, step_ts TIMESTAMP, "
                     "step INTEGER, battery_id VARCHAR, p_mw DOUBLE)")
        for k in range(12):  # 02:00 Berlin: two units, 0.5 + 0.3 MW
            t = hours[2] + pd.Timedelta(minutes=5 * k)
            live.execute("INSERT INTO ops.storage_state VALUES (?, 'a', true, 0.5), (?, 'b', true, 0.3)", [t, t])
            t3 = hours[3] + pd.Timedelta(minutes=5 * k)
            live.execute("INSERT INTO ops.dispatch_plan VALUES ('p', ?, ?, 0, 'a', -0.5)", [t3, t3])
    out = materialize([market_settlement], partition_key="2026-12-01", resources=res)
    assert out.success
    (check,) = out.get_asset_check_evaluations()
    assert check.passed, check.description
    meta = out.get_asset_materialization_events()[0].materialization.metadata
    # energy: 80 - 40 = 40 EUR; imbalance: short 0.2 MWh at 80 + 16 = 96 -> -19.20 EUR
    assert meta["energy_eur"].value == pytest.approx(40.0)
    assert meta["imbalance_eur"].value == pytest.approx(-19.2)
    assert meta["hours_flagged"].value == 1  # 03:00 from the plan; the other hours have no position
    (rec,) = led.records(kind="settlement")
    assert rec["body"]["decision"]["total_cents"] == 4000 - 1920 and rec["ref"] == award.id
    with duckdb.connect(str(s.live_db_path), read_only=True) as live:
        assert live.execute("SELECT sum(total_cents) FROM market.settlements").fetchone()[0] == 2080
    assert led.verify().ok


def test_the_counterfactual_adds_back_what_flexibility_did(stores):
    """Step 2 of the hand-made stores without optimisation: the import had b1 not discharged 1 MW (+1),
    nothing curtailed (-1.2), no DR (+0.2) and no shed (+0.4): 6 + 1 - 1.2 + 0.2 + 0.4 = 6.4 MW at 80,
    with no degradation, curtailment, DR or lost-load cost."""
    from gridpipeline.market.finance import counterfactual, day_figures

    live, main = stores
    steps = read_steps(live, main, T0, T0 + pd.Timedelta(hours=1), pd.Series({"b1": 20.0, "b2": 75.0}))
    cf, over = counterfactual(steps, voll=5000.0, import_max_mw=6.2)
    assert cf.total.iloc[1] == pytest.approx(6.4 * 80 * DT)
    assert over == 2  # 10.7 and 6.4 MW over a 6.2 MW connection: without flexibility not feasible there
    actual, _ = price_steps(steps, 30.0, 5000.0)
    fig = day_figures(actual, cf, None, over)
    assert fig["savings"] == pytest.approx(fig["counterfactual_total"] - fig["cost_total"])
    assert fig["shed_cost"] == pytest.approx(0.4 * 5000 * DT, abs=0.01)
    assert fig["dr_payments"] == pytest.approx(0.2 * 150 * DT * 2, abs=0.01)


def test_the_month_report_writes_html_and_csv(tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from gridpipeline.cli import app
    from gridpipeline.settings import get_settings, reset_settings

    monkeypatch.setenv("GRIDPIPELINE_HOME", str(tmp_path / "home"))
    reset_settings()
    s = get_settings()
    s.ensure_dirs()
    with duckdb.connect(str(s.live_db_path)) as live:
        for schema in ("grid", "ops"):
            live.execute(f"CREATE SCHEMA {schema}")
        live.execute("CREATE TABLE grid.state_summary (snapshot_ts TIMESTAMP, converged BOOLEAN, losses_mw DOUBLE)")
        live.execute("CREATE TABLE grid.state_injection (snapshot_ts TIMESTAMP, element_type VARCHAR, "
                     "element_id BIGINT, p_mw DOUBLE, q_mvar DOUBLE, energized BOOLEAN)")
        live.execute("CREATE TABLE ops.dispatch_substation (plan_id VARCHAR, planned_at TIMESTAMP, step_ts TIMESTAMP, "
                     "step INTEGER, net_load_after_mw DOUBLE, curtailed_mw DOUBLE, price_eur_mwh DOUBLE)")
        for day in (1, 2):
            for k in range(24):
                t = datetime(2026, 11, day, 10, 0) + pd.Timedelta(minutes=5 * k)
                live.execute("INSERT INTO grid.state_summary VALUES (?, true, 0.1)", [t])
                live.execute("INSERT INTO grid.state_injection VALUES (?, 'ext_grid', 0, 8, 0, true)", [t])
                live.execute("INSERT INTO ops.dispatch_substation VALUES ('p', ?, ?, 0, 7.9, 0.5, 60)", [t, t])
    duckdb.connect(str(s.db_path)).close()
    out = tmp_path / "report"
    r = CliRunner().invoke(app, ["report", "--month", "2026-11", "--out", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["days"] == 2
    daily = pd.read_csv(out / "daily.csv")
    assert len(daily) == 2 and (daily.steps_priced == 24).all()
    # 0.5 MW curtailed: without it the import is 0.5 MW lower, so the counterfactual is cheaper by its energy
    assert daily.counterfactual_total.iloc[0] == pytest.approx(daily.cost_total.iloc[0] - 0.5 * 60 * DT * 24
                                                               - 0.5 * 30 * DT * 24, abs=0.05)
    html = (out / "report.html").read_text()
    assert "Financial report, 2026-11" in html and "data:image/png;base64" in html
    assert len(pd.read_csv(out / "steps.csv")) == 48
    bad = CliRunner().invoke(app, ["report", "--month", "nov", "--out", str(out)])
    assert bad.exit_code == 2


def test_import_errors_against_the_earliest_plan(stores):
    """The first step: 10 MW measured against p0's 9.9; the second: 6 MW against 9.0, the figure of p0
    (planned a step earlier), not of p1 (its own step's plan): the tariff's peak scenarios are errors of
    the forecast it was chosen on, made ahead."""
    live, _ = stores
    e = read_import_errors(live, T0, T0 + pd.Timedelta(hours=1))
    assert list(e.index) == [pd.Timestamp(T0), pd.Timestamp(T0) + pd.Timedelta(minutes=5)]
    assert e.tolist() == pytest.approx([0.1, -3.0])
    assert read_import_errors(live, T0 - pd.Timedelta(hours=2), T0).empty
    assert read_import_errors(duckdb.connect(), T0, T0 + pd.Timedelta(hours=1)).empty  # no tables yet
