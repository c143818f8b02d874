"""The grid loop through Dagster on the sample world: bootstrap (registry, seeds, grid model), the
30-second sensor picking the newest complete snapshot, a live grid_state run with N-1, and a re-run
that replaces exactly the snapshot's rows. Real DuckDB file, real landing files, in-process runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb
import pytest
from dagster import DagsterInstance, build_sensor_context

from gridpipeline.common import landing as lz
from gridpipeline.settings import get_settings


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("gridlive")
    mp.setenv("GRIDPIPELINE_HOME", str(home))
    mp.setenv("GRIDPIPELINE_DUCKDB_PATH", str(home / "store.duckdb"))
    mp.setenv("GRIDPIPELINE_FORECAST_TRAIN_DAYS", "9")  # the bootstrap trains a first demand model
    from gridpipeline.settings import reset_settings

    reset_settings()
    s = get_settings()
    s.ensure_dirs()
    from gridpipeline.telemetry.registry import build_registry
    from gridpipeline.world.model import load_world
    from gridpipeline.world.scada import FaultConfig, ScadaSimulator

    world = load_world("sample")
    reg = build_registry(world.net, world.zones)
    now = datetime.now(UTC).replace(tzinfo=None)
    window = lz.floor_window(now) - lz.WINDOW  # the last closed window: within the sensor's look-back
    sim = ScadaSimulator(world, reg, s.landing, faults=FaultConfig.none(), seed=5, export_interval_s=30)
    sim.run(window, window + lz.WINDOW)
    sim.close()
    instance = DagsterInstance.ephemeral()
    from gridpipeline.definitions import build_definitions

    defs = build_definitions(s)  # resources bound to this test's store

    boot = defs.resolve_job_def("bootstrap_job").execute_in_process(instance=instance, raise_on_error=False)
    assert boot.success
    yield home, s, window, instance, defs
    mp.undo()
    reset_settings()


def _q(s, sql, *params):
    con = duckdb.connect(str(s.db_path), read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def test_sensor_requests_the_newest_complete_snapshot(live):
    _, s, window, instance, defs = live
    sensor = next(x for x in defs.get_repository_def().sensor_defs if x.name == "grid_state_sensor")
    ctx = build_sensor_context(instance=instance, definitions=defs)
    reqs = list(sensor(ctx))
    assert len(reqs) == 1, reqs
    req = reqs[0]
    last = window + timedelta(minutes=4, seconds=30)
    assert req.tags["gridpipeline/snapshot"] == last.isoformat()
    assert req.partition_key == f"{window:%Y-%m-%d-%H:%M}"
    # the same snapshot is not requested twice
    ctx2 = build_sensor_context(instance=instance, definitions=defs, cursor=ctx.cursor)
    assert not [r for r in sensor(ctx2) if hasattr(r, "run_key")]


def test_live_run_estimates_one_snapshot_with_n1(live):
    _, s, window, instance, defs = live
    ts = window + timedelta(minutes=4, seconds=30)
    job = defs.resolve_job_def("grid_state_job")
    res = job.execute_in_process(instance=instance, partition_key=f"{window:%Y-%m-%d-%H:%M}",
                                 tags={"gridpipeline/snapshot": ts.isoformat()})
    assert res.success
    mats = {e.asset_key.to_user_string(): e.materialization.metadata for e in res.get_asset_materialization_events()}
    assert {"grid_state", "topology_events", "grid_bottlenecks", "n1_contingency"} <= set(mats)
    assert mats["grid_state"]["snapshots"].value == 1 and mats["grid_state"]["converged"].value == 1
    checks = {c.check_name: c.passed for c in res.get_asset_check_evaluations()}
    assert checks["estimate_converged"]
    (n, conv), = _q(s, "SELECT count(*), bool_and(converged) FROM grid.state_summary")
    assert n == 1 and conv
    assert _q(s, "SELECT count(*) FROM grid.state_bus WHERE snapshot_ts = ?", ts)[0][0] == 227
    n1 = _q(s, "SELECT count(*), max(trigger) FROM grid.contingencies WHERE snapshot_ts = ?", ts)[0]
    assert n1[0] > 300 and n1[1] == "schedule"
    # a re-run of the snapshot replaces its rows; N-1 is not repeated inside the window
    res2 = job.execute_in_process(instance=instance, partition_key=f"{window:%Y-%m-%d-%H:%M}",
                                  tags={"gridpipeline/snapshot": ts.isoformat()})
    assert res2.success
    assert _q(s, "SELECT count(*) FROM grid.state_bus")[0][0] == 227
    assert "n1_contingency" not in {e.asset_key.to_user_string() for e in res2.get_asset_materialization_events()}
    assert _q(s, "SELECT count(*) FROM grid.model_versions")[0][0] == 1


def test_landing_sensor_requests_the_first_forecast_models(live):
    """After the bootstrap run the forecast models are trained once in their own run, so the grid loop
    never waits for them."""
    from dagster import RunRequest

    _, s, window, instance, defs = live
    sensor = next(x for x in defs.get_repository_def().sensor_defs if x.name == "landing_zone_sensor")
    # evaluate_tick checks the tick as the daemon does (run requests or a skip reason, never both)
    first = sensor.evaluate_tick(build_sensor_context(instance=instance, definitions=defs))
    assert all(isinstance(r, RunRequest) for r in first.run_requests)
    assert any(r.job_name == "forecast_models_job" for r in first.run_requests)
    # live windows claim the duckdb pool ahead of backfills and training registrations
    windows = [r for r in first.run_requests if r.job_name == "telemetry_job"]
    assert windows and all(r.tags["dagster/priority"] == "8" for r in windows)
    # next tick, windows taken and models not trained yet: the models request again, and no skip reason
    again = sensor.evaluate_tick(build_sensor_context(instance=instance, definitions=defs, cursor=first.cursor))
    assert [r.job_name for r in again.run_requests] == ["forecast_models_job"] and not again.skip_message


def test_window_run_estimates_and_runs_n1_without_holding_the_writer_lock(live, monkeypatch):
    """A backfill run reads a window's inputs and commits its snapshots in short locked bursts: while it
    estimates and while N-1 runs, another writer can take the store's lock."""
    from gridpipeline.grid import contingency, cycle
    from gridpipeline.store import writer_lock

    _, s, window, instance, defs = live
    free = []

    def probing(fn):
        def wrapper(*a, **k):
            try:
                with writer_lock(s.db_path, timeout_s=0):
                    free.append(fn.__name__)
            except TimeoutError:
                free.append(f"{fn.__name__}: locked")
            return fn(*a, **k)
        return wrapper

    monkeypatch.setattr(cycle, "run_cycle", probing(cycle.run_cycle))
    monkeypatch.setattr(contingency, "assess_contingencies", probing(contingency.assess_contingencies))
    res = defs.resolve_job_def("grid_state_job").execute_in_process(
        instance=instance, partition_key=f"{window:%Y-%m-%d-%H:%M}")
    assert res.success
    assert free.count("run_cycle") == 10, free
    assert not [f for f in free if "locked" in f], free
    (n, windows), = _q(s, "SELECT count(*), count(DISTINCT window_start) FROM grid.state_summary "
                          "WHERE snapshot_ts >= ? AND snapshot_ts < ?", window, window + lz.WINDOW)
    assert n == 10 and windows == 1
