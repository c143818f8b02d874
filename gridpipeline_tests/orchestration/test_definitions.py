"""The code location loads, and its shape does not change by accident (a snapshot of the names)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gridpipeline.common import landing as lz
from gridpipeline.orchestration.sensors import LATE_DEFER, defer_late, group_ranges, plan_runs, ready_windows
from gridpipeline.settings import PROJECT_ROOT
from gridpipeline.telemetry.assets import dbt_window_vars


def test_dagster_definitions_validate(tmp_path):
    env = {**os.environ, "GRIDPIPELINE_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path)}
    exe = Path(sys.executable).parent / "dagster"
    out = subprocess.run([str(exe), "definitions", "validate", "-w", str(PROJECT_ROOT / "workspace.yaml")],
                         env=env, capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]


def test_definitions_snapshot():
    from gridpipeline.definitions import defs

    repo = defs.get_repository_def()
    assets = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert {"sensor_registry", "raw_telemetry", "clean_telemetry", "dedup_audit", "sensor_health",
            "unit_conversions", "kind_limits", "grid_model", "grid_state", "topology_events", "grid_bottlenecks",
            "n1_contingency", "weather_features", "demand_model", "demand_forecast", "forecast_accuracy",
            "consumption_anomalies", "renewable_models", "renewable_forecast", "storage_state", "dispatch_plan",
            "curtailment_plan", "vpp_envelope", "pending_decisions", "load_priorities"} <= assets
    checks = {k.name for k in repo.asset_graph.asset_check_keys}
    assert {"raw_telemetry_reconciles", "raw_telemetry_quarantine_rate", "sensor_coverage", "estimate_converged",
            "voltage_within_limits", "loading_within_limits", "residuals_consistent", "forecast_error_within_limits",
            "no_consumption_anomalies", "plan_feasible_without_slack", "soc_within_limits", "gate_passed",
            "ledger_chain_intact", "every_load_in_the_registry"} <= checks
    assert any(n.startswith("not_null") or "unique" in n for n in checks), "dbt tests must appear as asset checks"
    assert {j.name for j in repo.get_all_jobs()} >= {"telemetry_job", "bootstrap_job", "grid_state_job", "forecast_job",
                                                      "forecast_models_job", "approve_decision"}
    schedules = {s.name: s for s in repo.schedule_defs}
    assert schedules["forecast_schedule"].default_status.value == "RUNNING"
    sensors = {s.name: s for s in repo.sensor_defs}
    assert {"landing_zone_sensor", "gridpipeline_automation", "grid_state_sensor", "run_reaper_sensor"} <= set(sensors)
    # the live loop is the worker of orchestration/live_loop.py; the run-per-snapshot sensor is the off option
    assert sensors.pop("grid_state_sensor").default_status.value == "STOPPED"
    assert all(s.default_status.value == "RUNNING" for s in sensors.values()), "automation must be on by default"
    # Every asset that writes DuckDB takes the duckdb pool.
    for key in ("sensor_registry", "raw_telemetry", "clean_telemetry", "sensor_health", "unit_conversions",
                "grid_model", "grid_state", "n1_contingency", "weather_features", "demand_model", "demand_forecast",
                "forecast_accuracy", "consumption_anomalies", "renewable_forecast", "dispatch_plan", "load_priorities"):
        node = repo.asset_graph.get(next(k for k in repo.asset_graph.get_all_asset_keys() if k.to_user_string() == key))
        assert node.pools == {"duckdb"}, key
    # ... but only for its writes: training and prediction are compute ops with no pool, then a write op with it
    for key, split in {"demand_model": {"train_demand_model": None, "register_demand_model": "duckdb"},
                       "demand_forecast": {"predict_demand": None, "store_demand_forecast": "duckdb"}}.items():
        assert {n.name: n.definition.pool for n in defs.resolve_assets_def(key).node_def.nodes} == split, key


def test_dagster_yaml_limits_the_duckdb_pool(tmp_path):
    import yaml

    cfg = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    assert cfg["concurrency"]["pools"]["default_limit"] == 1
    assert cfg["sensors"]["use_threads"] is True


def test_dbt_vars_carry_the_window(gp_home):
    from gridpipeline.settings import get_settings

    v = dbt_window_vars(datetime(2026, 11, 20, 10, 0), datetime(2026, 11, 20, 10, 5), get_settings())
    assert v["window_start"] == "2026-11-20 10:00:00" and v["window_end"] == "2026-11-20 10:05:00"
    assert v["late_after_s"] == 60


def test_landing_sensor_requests_closed_changed_windows_only(tmp_path):
    landing, rejected = tmp_path / "landing", tmp_path / "rejected"
    for w in (datetime(2026, 11, 20, 10, 0), datetime(2026, 11, 20, 10, 5), datetime(2026, 11, 20, 10, 10)):
        d = lz.window_dir(landing, w)
        d.mkdir(parents=True)
        (d / lz.file_name("RTU_A", w, "csv")).write_text("sensor_id,ts,value\n")
    now = datetime(2026, 11, 20, 10, 15, 10)      # 10:10 window closed 10 s ago: inside the grace
    ready = ready_windows(landing, rejected, now, {}, grace_s=20)
    assert sorted(ready) == ["2026-11-20-10:00", "2026-11-20-10:05"]
    assert ready_windows(landing, rejected, now, ready, grace_s=20) == {}
    # A late file changes the fingerprint: that window (only) is requested again.
    w = datetime(2026, 11, 20, 10, 0)
    late = lz.window_dir(landing, w) / lz.file_name("RTU_B", w, "csv")
    late.write_text("sensor_id,ts,value\n")
    os.utime(late, (now.timestamp() + 5, now.timestamp() + 5))
    again = ready_windows(landing, rejected, now, ready, grace_s=20)
    assert list(again) == ["2026-11-20-10:00"]
    # The run moves a bad file into rejected/ (keeping its arrival time, with a note): no new request.
    lz.move_to_rejected(lz.parse(late), landing, rejected, "unreadable")
    assert ready_windows(landing, rejected, now, {**ready, **again}, grace_s=20) == {}
    assert group_ranges(["2026-11-20-10:00", "2026-11-20-10:05", "2026-11-20-10:15"]) == [
        ("2026-11-20-10:00", "2026-11-20-10:05"), ("2026-11-20-10:15", "2026-11-20-10:15")]


def test_grid_partitions_include_the_open_window():
    """The 30-second loop writes into the window that is still open; telemetry waits for it to close."""

    from gridpipeline.base.partitions import five_minute_partitions, live_five_minute_partitions

    now = datetime.now(UTC).replace(tzinfo=None)
    key = f"{lz.floor_window(now):%Y-%m-%d-%H:%M}"
    assert live_five_minute_partitions.has_partition_key(key)
    assert not five_minute_partitions.has_partition_key(key)


def test_a_live_window_is_recleaned_with_its_successor_as_a_backfill_would():
    """Window 10:05 ran live without its lookahead (10:10 had not arrived); when 10:10 is ready, the
    run covers 10:05..10:10 so 10:05 is cleaned with the context a backfill gives it."""
    cursor = {"2026-11-20-10:00": "a", "2026-11-20-10:05": "b"}
    assert plan_runs({"2026-11-20-10:10": "c"}, cursor) == [("2026-11-20-10:05", "2026-11-20-10:10")]
    # the first window of a store has no predecessor to re-clean
    assert plan_runs({"2026-11-20-10:00": "a"}, {}) == [("2026-11-20-10:00", "2026-11-20-10:00")]
    # a late file in an old window: that window and its predecessor again
    assert plan_runs({"2026-11-20-10:05": "b2"}, cursor) == [("2026-11-20-10:00", "2026-11-20-10:05")]
    # catch-up: contiguous range runs, each extended back by one already-cleaned window
    many = {f"2026-11-20-11:{m:02d}": "x" for m in range(0, 30, 5)}
    assert plan_runs(many, {"2026-11-20-10:55": "y"}) == [("2026-11-20-10:55", "2026-11-20-11:25")]
    # a late window and the new one an hour or less later: one range run over both
    assert plan_runs({"2026-11-20-10:00": "a2", "2026-11-20-10:10": "c"}, cursor) == [
        ("2026-11-20-10:00", "2026-11-20-10:10")]
    # further apart: a run each
    assert plan_runs({"2026-11-20-09:00": "z2", "2026-11-20-10:10": "c"}, {**cursor, "2026-11-20-09:00": "z"}) == [
        ("2026-11-20-09:00", "2026-11-20-09:00"), ("2026-11-20-10:05", "2026-11-20-10:10")]


def test_late_files_wait_for_the_next_window_run():
    """A window that changed after its run (a late file) waits for the next new window, and then goes in
    the same run; without a new window, it runs once it has waited LATE_DEFER."""
    cursor = {"2026-11-20-10:00": "a", "2026-11-20-10:05": "b"}
    t = datetime(2026, 11, 20, 10, 12)
    run, deferred = defer_late({"2026-11-20-10:00": "a2"}, cursor, {}, t)
    assert run == {} and deferred == {"2026-11-20-10:00": t.isoformat()}
    # a minute later, another late file in 10:05: both wait, each since it was first seen
    t2 = t + timedelta(minutes=1)
    run, deferred = defer_late({"2026-11-20-10:00": "a3", "2026-11-20-10:05": "b2"}, cursor, deferred, t2)
    assert run == {} and deferred == {"2026-11-20-10:00": t.isoformat(), "2026-11-20-10:05": t2.isoformat()}
    # the next window closes: everything goes now, in one run with it
    ready = {"2026-11-20-10:00": "a3", "2026-11-20-10:05": "b2", "2026-11-20-10:10": "c"}
    run, left = defer_late(ready, cursor, deferred, t2 + timedelta(minutes=2))
    assert run == ready and left == {}
    assert plan_runs(run, cursor) == [("2026-11-20-10:00", "2026-11-20-10:10")]
    # no new window (the feed stopped): the late ones go once the first has waited LATE_DEFER
    run, left = defer_late({"2026-11-20-10:00": "a3", "2026-11-20-10:05": "b2"}, cursor, deferred,
                           t + LATE_DEFER - timedelta(seconds=1))
    assert run == {}
    run, left = defer_late({"2026-11-20-10:00": "a3", "2026-11-20-10:05": "b2"}, cursor, deferred, t + LATE_DEFER)
    assert run == {"2026-11-20-10:00": "a3", "2026-11-20-10:05": "b2"} and left == {}


def test_live_loop_takes_snapshots_in_order_with_a_deadline_for_silent_rtus(tmp_path):
    """A snapshot is ready when every source delivered, or the grace after its interval closed; the
    loop never skips ahead of an incomplete one."""
    from gridpipeline.orchestration.live_loop import ready_snapshots

    landing = tmp_path / "landing"
    t0 = datetime(2026, 11, 20, 10, 0)
    for k, sources in enumerate((["A", "B"], ["A"], ["A", "B"])):  # B silent at 10:00:30
        ts = t0 + timedelta(seconds=30 * k)
        d = lz.window_dir(landing, ts)
        d.mkdir(parents=True, exist_ok=True)
        for src in sources:
            f = d / lz.file_name(src, ts, "csv")
            f.write_text("sensor_id,ts,value\n")
            arr = (ts + timedelta(seconds=32)).replace(tzinfo=UTC).timestamp()
            os.utime(f, (arr, arr))
    # 10:01:05: 10:00:30 closed 5 s ago, B missing, inside the 6 s grace -> wait (and not skip ahead)
    assert ready_snapshots(landing, t0 + timedelta(seconds=65), None, 2, 6.0) == [t0]
    # 10:01:07: past the deadline -> estimated without B, then 10:01:00 (complete)
    assert ready_snapshots(landing, t0 + timedelta(seconds=67), None, 2, 6.0) == [
        t0, t0 + timedelta(seconds=30), t0 + timedelta(seconds=60)]
    assert ready_snapshots(landing, t0 + timedelta(seconds=67), t0 + timedelta(seconds=30), 2, 6.0) == [
        t0 + timedelta(seconds=60)]
