"""End to end on the sample world: simulate with every fault kind, materialise partitions through
Dagster in-process (real DuckDB file, real dbt), and check that nothing is lost and every fault is
flagged or quarantined."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from dagster import AssetKey, DagsterInstance

from gridpipeline.common import landing as lz
from gridpipeline.settings import get_settings
from gridpipeline.telemetry.quality import QualityBit as Q

W0 = datetime(2026, 11, 20, 9, 0)   # 09:00 UTC: drift has run 3 h into its 6 h cycle
FAULTS = ("gap_rate=0.01,comm_loss_rate=0.03,stuck_rate=0.02,spike_rate=0.003,drift_fraction=0.1,"
          "late_rate=0.03,out_of_order_rate=0.03,duplicate_rate=0.03,wrong_units_rate=0.3,"
          "corrupt_rate=0.03,invalid_row_rate=0.002")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Two simulated windows, replayed as one range run (single-run backfill) via the CLI."""
    home = tmp_path_factory.mktemp("pipe")
    env = {**os.environ, "GRIDPIPELINE_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home"),
           "GRIDPIPELINE_DUCKDB_PATH": str(home / "store.duckdb"),
           "GRIDPIPELINE_FORECAST_TRAIN_DAYS": "9"}  # the bootstrap trains a first demand model
    for k in ("GRIDPIPELINE_LANDING_DIR", "GRIDPIPELINE_REJECTED_DIR", "GRIDPIPELINE_TRUTH_PATH"):
        env.pop(k, None)
    exe = Path(sys.executable).parent / "gridpipeline"
    sim = subprocess.run([str(exe), "simulate", "--start", W0.isoformat(), "--end", (W0 + 2 * lz.WINDOW).isoformat(),
                          "--faults", FAULTS, "--seed", "7"], env=env, capture_output=True, text=True, timeout=600)
    assert sim.returncode == 0, sim.stderr[-3000:]
    rep = subprocess.run([str(exe), "replay", "--start", W0.isoformat(), "--end", (W0 + 2 * lz.WINDOW).isoformat(),
                          "--no-simulate"], env=env, capture_output=True, text=True, timeout=900)
    assert rep.returncode == 0, rep.stdout[-3000:] + rep.stderr[-5000:]
    return home, env


def _q(home: Path, sql: str, *params):
    con = duckdb.connect(str(home / "store.duckdb"), read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def test_counts_reconcile_and_every_slot_is_accounted_for(pipeline):
    home, _ = pipeline
    (files_in, stored, quarantined), = _q(home, "SELECT sum(rows_in), sum(rows_stored), sum(rows_quarantined) "
                                                "FROM telemetry.ingest_files WHERE status = 'ok'")
    assert files_in == stored + quarantined > 0
    assert _q(home, "SELECT count(*) FROM telemetry.raw_readings")[0][0] == stored
    assert _q(home, "SELECT count(*) FROM telemetry.quarantine")[0][0] == quarantined
    # Every sensor has a row for every expected slot of both windows.
    # (slots on each sensor's own interval grid: ceil(end/iv) - ceil(start/iv))
    (expected,), = _q(home, "SELECT sum(ceil(epoch(?::TIMESTAMP) / interval_s) - ceil(epoch(?::TIMESTAMP) / interval_s))::BIGINT "
                            "FROM telemetry.sensors", W0 + 2 * lz.WINDOW, W0)
    assert _q(home, "SELECT count(*) FROM clean.clean_telemetry")[0][0] == expected
    assert _q(home, "SELECT count(*) FROM (SELECT sensor_id, ts FROM clean.clean_telemetry GROUP BY ALL HAVING count(*) > 1)")[0][0] == 0


def test_every_fault_kind_is_flagged_or_quarantined(pipeline):
    home, _ = pipeline
    truth = duckdb.connect(str(home / "simulator_truth.duckdb"), read_only=True)
    faults = truth.execute("SELECT kind, source, sensor_id, ts, file_path FROM fault_log").df()
    truth.close()
    seen = set(faults.kind)
    assert {"gap", "comm_loss", "stuck", "spike", "drift", "late", "out_of_order", "duplicate", "wrong_units",
            "corrupt_file", "missing_column", "nan_value", "unknown_sensor", "impossible_value"} <= seen

    con = duckdb.connect(str(home / "store.duckdb"), read_only=True)
    try:
        con.register("faults", faults)
        bits = lambda mask, where: con.execute(
            f"SELECT count(*) FILTER (WHERE quality_bits & {int(mask)} = 0), count(*) FROM faults f "
            f"JOIN clean.clean_telemetry c ON {where}").fetchone()

        # Single readings: gaps, spikes.
        missed, total = bits(Q.GAP, "c.sensor_id = f.sensor_id AND c.ts = f.ts AND f.kind = 'gap'")
        assert total > 0 and missed == 0
        # A spike is detectable when it arrived and both neighbours arrived too; next to a gap it
        # cannot be told from a step change, so those are left out.
        missed, total = bits(Q.SPIKE | Q.OUT_OF_RANGE | Q.RATE_OF_CHANGE, """
            c.sensor_id = f.sensor_id AND c.ts = f.ts AND f.kind = 'spike' AND c.n_copies > 0
            AND (SELECT count(*) FROM clean.clean_telemetry n JOIN telemetry.sensors s USING (sensor_id)
                 WHERE n.sensor_id = c.sensor_id AND n.n_copies > 0 AND n.quality_bits & 1 = 0
                   AND abs(epoch(n.ts) - epoch(c.ts)) = s.interval_s) = 2""")
        assert total > 0 and missed == 0
        # Whole substation silent for a window: every slot of its sensors is a gap.
        missed, total = bits(Q.GAP, "f.kind = 'comm_loss' AND c.sensor_id IN (SELECT sensor_id FROM telemetry.sensors "
                             "WHERE source = f.source) AND c.ts >= f.ts AND c.ts < f.ts + INTERVAL 5 MINUTE")
        assert total > 0 and missed == 0
        # Stuck for a window: flagged STUCK where the frozen readings arrived in an unbroken run
        # (a run cut by gaps shorter than stuck_samples is indistinguishable from a steady value).
        stuck = con.execute("""SELECT f.sensor_id, count(*) FILTER (WHERE quality_bits & ? <> 0) FROM faults f
                               JOIN clean.clean_telemetry c ON c.sensor_id = f.sensor_id
                                AND c.ts >= f.ts AND c.ts < f.ts + INTERVAL 5 MINUTE
                               WHERE f.kind = 'stuck' GROUP BY 1 HAVING count(*) FILTER (WHERE n_copies = 0) = 0""",
                            [int(Q.STUCK)]).fetchall()
        assert stuck and all(n > 0 for _, n in stuck)
        # Drift 3 h into its cycle (0.06 pu off): flagged once the trailing mean has its 5 samples
        # (the simulation starts at W0, so the first 2 minutes have no history).
        missed, total = bits(Q.DRIFT, "c.sensor_id = f.sensor_id AND f.kind = 'drift' AND c.quality_bits & "
                             f"{int(Q.GAP)} = 0 AND c.ts >= TIMESTAMP '{W0 + timedelta(minutes=2)}'")
        assert total > 0 and missed / total < 0.05
        # Files: late, out of order, resent, wrong units.
        file_rows = lambda kind, mask: con.execute(
            f"""SELECT count(*) FILTER (WHERE c.quality_bits & {int(mask)} = 0), count(*)
                FROM faults f JOIN telemetry.ingest_files i ON i.file_path = f.file_path
                JOIN telemetry.raw_readings r ON r.file_id = i.file_id
                JOIN clean.clean_telemetry c ON c.sensor_id = r.sensor_id AND c.ts = r.ts
                WHERE f.kind = '{kind}'""").fetchone()
        for kind, mask in (("late", Q.OLD_DATA), ("out_of_order", Q.OLD_DATA), ("duplicate", Q.DUPLICATE)):
            missed, total = file_rows(kind, mask)
            assert total > 0 and missed == 0, kind
        missed, total = con.execute(
            f"""SELECT count(*) FILTER (WHERE c.quality_bits & {int(Q.UNIT_CONVERTED)} = 0), count(*)
                FROM clean.clean_telemetry c JOIN telemetry.sensors s USING (sensor_id)
                WHERE s.source IN (SELECT source FROM faults WHERE kind = 'wrong_units')
                  AND s.unit IN ('MW', 'Mvar', 'kV', 'A') AND c.raw_value IS NOT NULL""").fetchone()
        assert total > 0 and missed == 0
        # Files nobody can read are on record as rejected; renamed columns quarantine their rows.
        rejected = {r[0] for r in con.execute("SELECT file_path FROM telemetry.ingest_files WHERE status = 'rejected'").fetchall()}
        corrupt = set(faults[faults.kind == "corrupt_file"].file_path)
        assert len(corrupt) > 0 and {Path(p).name for p in corrupt} <= {Path(p).name for p in rejected}
        q = con.execute("SELECT DISTINCT file_path, reason FROM telemetry.quarantine").df()
        for kind, reason in (("missing_column", "missing_columns:value"), ("nan_value", "nan_value"),
                             ("unknown_sensor", "unknown_sensor"), ("impossible_value", "impossible_value"),
                             ("infinite_value", "infinite_value"), ("future_timestamp", "timestamp_in_future"),
                             ("old_timestamp", "timestamp_too_old"),
                             ("outside_partition", "outside_partition"), ("bad_type", "bad_value_type")):
            whole_file = set(faults[faults.kind.isin(["corrupt_file", "missing_column"])].file_path)
            paths = set(faults[faults.kind == kind].file_path) - (whole_file if kind != "missing_column" else set())
            got = set(q[q.reason == reason].file_path)
            assert paths <= got, (kind, paths - got)
    finally:
        con.close()


def test_rerun_replaces_rows_without_duplicates(pipeline, monkeypatch):
    home, env = pipeline
    before = _q(home, "SELECT count(*), sum(hash(sensor_id, ts, value, quality_bits)) FROM clean.clean_telemetry")
    raw_before = _q(home, "SELECT count(*) FROM telemetry.raw_readings")
    exe = Path(sys.executable).parent / "gridpipeline"
    rep = subprocess.run([str(exe), "replay", "--start", W0.isoformat(), "--end", (W0 + lz.WINDOW).isoformat(),
                          "--no-simulate"], env=env, capture_output=True, text=True, timeout=900)
    assert rep.returncode == 0, rep.stderr[-3000:]
    assert _q(home, "SELECT count(*), sum(hash(sensor_id, ts, value, quality_bits)) FROM clean.clean_telemetry") == before
    assert _q(home, "SELECT count(*) FROM telemetry.raw_readings") == raw_before
    # The run is on record in the instance, so it shows in the UI.
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    runs = DagsterInstance.get().get_runs()
    assert len([r for r in runs if r.job_name == "telemetry_job"]) == 2


def test_two_processes_writing_the_same_store_at_once_both_succeed(tmp_path):
    """Two replays of different windows, started together against one DuckDB file: the writer lock
    (and, under the daemon, the duckdb pool) makes them queue instead of failing on DuckDB's lock."""
    env = {**os.environ, "GRIDPIPELINE_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path / "dagster_home"),
           "GRIDPIPELINE_DUCKDB_PATH": str(tmp_path / "store.duckdb")}
    exe = str(Path(sys.executable).parent / "gridpipeline")
    w1, w2 = W0 + 4 * lz.WINDOW, W0 + 5 * lz.WINDOW
    sim = subprocess.run([exe, "simulate", "--start", w1.isoformat(), "--end", (w2 + lz.WINDOW).isoformat(),
                          "--faults", "none"], env=env, capture_output=True, text=True, timeout=600)
    assert sim.returncode == 0, sim.stderr[-2000:]
    procs = [subprocess.Popen([exe, "replay", "--start", w.isoformat(), "--end", (w + lz.WINDOW).isoformat(),
                               "--no-simulate"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for w in (w1, w2)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, out[-2000:] + err[-4000:]
    con = duckdb.connect(str(tmp_path / "store.duckdb"), read_only=True)
    try:
        windows = con.execute("SELECT DISTINCT time_bucket(INTERVAL 5 MINUTE, ts) FROM clean.clean_telemetry "
                              "ORDER BY 1").fetchall()
        assert [w[0] for w in windows] == [w1, w2]
        (n_sensors,), = con.execute("SELECT count(*) FROM telemetry.sensors").fetchall()
        assert n_sensors > 0
    finally:
        con.close()


def test_sensor_health_materialises_for_the_hour(pipeline, monkeypatch):
    from dagster import materialize

    from gridpipeline.orchestration.resources import build_resources
    from gridpipeline.settings import reset_settings
    from gridpipeline.telemetry.assets import sensor_coverage, sensor_health

    home, env = pipeline
    for k in ("GRIDPIPELINE_HOME", "GRIDPIPELINE_DUCKDB_PATH"):
        monkeypatch.setenv(k, env[k])
    reset_settings()
    try:
        res = materialize([sensor_health, sensor_coverage], partition_key="2026-11-20-09:00",
                          resources=build_resources())
    finally:
        reset_settings()
    assert res.success
    meta = res.asset_materializations_for_node("sensor_health")[0].metadata
    # Two of the hour's twelve windows were simulated: about 1/6 of the expected readings arrived.
    assert 0.1 < meta["coverage"].value < 0.2
    assert "data:image/png;base64," in meta["availability_by_zone"].value
    check = res.get_asset_check_evaluations()[0]
    assert not check.passed and check.severity.value == "WARN"
    (n,), = _q(home, "SELECT count(*) FROM telemetry.sensor_health WHERE hour_start = '2026-11-20 09:00'")
    (sensors,), = _q(home, "SELECT count(*) FROM telemetry.sensors")
    assert n == sensors


def test_replay_estimates_every_snapshot(pipeline):
    """The replay's second run (grid_state_job over the range) estimates every 30-second snapshot from
    clean_telemetry, with N-1 once per window, and never crashes on the injected faults."""
    home, _ = pipeline
    (n, conv, src), = _q(home, "SELECT count(*), count(*) FILTER (WHERE converged), max(source) FROM grid.state_summary")
    assert n == 20 and src == "clean_telemetry"
    assert conv >= 18, "bad data must not stop the estimate from converging"
    windows = _q(home, "SELECT DISTINCT time_bucket(INTERVAL 5 MINUTE, snapshot_ts), trigger FROM grid.contingencies")
    assert len(windows) == 2 and {w[1] for w in windows} <= {"backfill", "topology_event"}
    # the drifting and stuck sensors the simulator injected are caught as bad data somewhere
    assert _q(home, "SELECT count(*) FROM grid.bad_data WHERE action = 'removed'")[0][0] > 0


def test_forecast_chain_issues_scores_and_falls_back(pipeline, monkeypatch):
    """Nightly model, then the 5-minute forecast job at 09:00 and 09:10 over the replayed telemetry:
    24 h of P10/P50/P90 per zone and system, matched against the measured 09:00-09:10 load, anomaly
    scan; then with the weather API down the forecast is still issued, flagged stale."""
    from dagster import DagsterInstance

    from gridpipeline.definitions import build_definitions
    from gridpipeline.settings import reset_settings

    home, env = pipeline
    for k in ("GRIDPIPELINE_HOME", "GRIDPIPELINE_DUCKDB_PATH"):
        monkeypatch.setenv(k, env[k])
    monkeypatch.setenv("GRIDPIPELINE_FORECAST_TRAIN_DAYS", "9")
    reset_settings()
    try:
        defs = build_definitions(get_settings())
        inst = DagsterInstance.ephemeral()
        model = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=inst, asset_selection=[AssetKey("demand_model")])
        assert model.success
        job = defs.resolve_job_def("forecast_job")
        for key in ("2026-11-20-09:00", "2026-11-20-09:10"):
            assert job.execute_in_process(instance=inst, partition_key=key).success
        # the weather API is down: the last good forecast serves, flagged
        monkeypatch.setenv("GRIDPIPELINE_WEATHER_SOURCE", "open_meteo")
        monkeypatch.setenv("GRIDPIPELINE_WEATHER_URL", "http://127.0.0.1:9")
        monkeypatch.setenv("GRIDPIPELINE_WEATHER_RETRIES", "0")
        reset_settings()
        defs2 = build_definitions(get_settings())
        res = defs2.resolve_job_def("forecast_job").execute_in_process(instance=inst, partition_key="2026-11-20-09:15")
        assert res.success
        # as of: re-running the 09:00 issue after later readings, later accuracy and a model trained
        # on data up to 09:05 were added gives the same rows (the later model would not even load)
        first = _q(home, "SELECT series, valid_time, p10, p50, p90, model, model_version FROM forecast.demand "
                         "WHERE issue_time = '2026-11-20 09:00' ORDER BY 1, 2")
        later = Path(env["GRIDPIPELINE_HOME"]) / "later_model.joblib"
        later.write_bytes(b"not a model")
        with duckdb.connect(str(Path(env["GRIDPIPELINE_DUCKDB_PATH"]))) as con:
            con.execute("INSERT INTO forecast.models (trained_at, kind, path, series, trained_until, version) "
                        "VALUES ('2026-11-20 09:06', 'demand', ?, 3, '2026-11-20 09:05', 'demand@later')", [str(later)])
        monkeypatch.setenv("GRIDPIPELINE_WEATHER_SOURCE", "file")
        reset_settings()
        again = build_definitions(get_settings()).resolve_job_def("forecast_job").execute_in_process(
            instance=inst, partition_key="2026-11-20-09:00")
        assert again.success
        assert _q(home, "SELECT series, valid_time, p10, p50, p90, model, model_version FROM forecast.demand "
                        "WHERE issue_time = '2026-11-20 09:00' ORDER BY 1, 2") == first
        with duckdb.connect(str(Path(env["GRIDPIPELINE_DUCKDB_PATH"]))) as con:
            con.execute("DELETE FROM forecast.models WHERE version = 'demand@later'")
    finally:
        reset_settings()
    (series, rows, bad_q, no_model), = _q(home, """
        SELECT count(DISTINCT series), count(*), count(*) FILTER (WHERE NOT (p10 <= p50 AND p50 <= p90)),
               count(*) FILTER (WHERE model IS NULL OR model = 'none')
        FROM forecast.demand WHERE issue_time = '2026-11-20 09:10'""")
    assert series >= 3 and rows == series * 288 and bad_q == 0 and no_model == 0
    # ten minutes of measured history is too little to learn from: no model was trained, and the
    # labelled fallback served (never the simulator's profiles)
    assert _q(home, "SELECT count(*) FROM forecast.models")[0][0] == 0
    served = {m for (m,) in _q(home, "SELECT DISTINCT model FROM forecast.demand WHERE issue_time = '2026-11-20 09:10'")}
    assert served <= {"seasonal_naive", "nominal"} and "nominal" in served
    assert _q(home, "SELECT count(*) FROM forecast.demand WHERE model_version IS NOT NULL")[0][0] == 0
    (matched,), = _q(home, "SELECT count(*) FROM forecast.errors WHERE valid_time < '2026-11-20 09:10' "
                           "AND series NOT LIKE 'gen:%'")
    gen = _q(home, "SELECT DISTINCT series FROM forecast.errors WHERE series LIKE 'gen:%' ORDER BY 1")
    assert gen == [("gen:pv",), ("gen:wind",)]  # PV and wind forecasts scored against measured output too
    # the 09:00 forecast against the measured 09:00 and 09:05 slots; a zone-slot whose sensors
    # reported less than 80 % (the injected communication losses) has no actual and is not scored
    assert series * 2 * 0.75 <= matched <= series * 2
    (mape,), = _q(home, "SELECT max(mape) FROM forecast.accuracy WHERE series = 'system' AND window_start = '2026-11-20 09:10'")
    assert mape is not None and mape > 0
    stale = _q(home, "SELECT DISTINCT source, stale FROM forecast.weather WHERE issue_time = '2026-11-20 09:15'")
    assert stale == [("open_meteo (last forecast)", True)]
    assert _q(home, "SELECT bool_and(weather_stale) FROM forecast.demand WHERE issue_time = '2026-11-20 09:15'")[0][0]


def test_replay_into_a_new_store_sets_up_its_reference_tables(pipeline, tmp_path):
    """The instance remembers a bootstrap, but the store is a new file (moved, deleted, or a new
    GRIDPIPELINE_DUCKDB_PATH): replay sets up registry, seeds and network again rather than
    quarantining every row as an unknown sensor."""
    home, env = pipeline
    new_store = tmp_path / "elsewhere" / "new.duckdb"
    env2 = {**env, "GRIDPIPELINE_DUCKDB_PATH": str(new_store)}
    exe = Path(sys.executable).parent / "gridpipeline"
    rep = subprocess.run([str(exe), "replay", "--start", W0.isoformat(), "--end", (W0 + lz.WINDOW).isoformat(),
                          "--no-simulate"], env=env2, capture_output=True, text=True, timeout=900)
    assert rep.returncode == 0, rep.stderr[-3000:]
    con = duckdb.connect(str(new_store), read_only=True)
    try:
        stored = con.execute("SELECT count(*) FROM telemetry.raw_readings").fetchone()[0]
        unknown = con.execute("SELECT count(*) FROM telemetry.quarantine WHERE reason = 'unknown_sensor'").fetchone()[0]
        sensors = con.execute("SELECT count(*) FROM telemetry.sensors").fetchone()[0]
    finally:
        con.close()
    assert sensors > 0 and stored > 0
    # the same verdicts as the original store's first run: only the simulator's invalid rows are unknown
    (orig,) = _q(home, "SELECT count(*) FROM telemetry.quarantine WHERE reason = 'unknown_sensor' AND window_start = ?",
                 W0)
    assert unknown == orig[0] and unknown < 0.001 * stored


def test_live_loop_worker_estimates_every_snapshot_and_reports_to_dagster(pipeline, monkeypatch):
    """The long-lived worker of the 30-second loop on the replayed store: every export interval of
    the landing zone is estimated in order, committed to the live store, and reported to Dagster as
    runless materialisations with checks; N-1 runs beside it once per window."""
    from gridpipeline.orchestration.live_loop import GridLoop, expected_sources, ready_snapshots
    from gridpipeline.settings import Settings

    home, env = pipeline
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    s = Settings(home=home, duckdb_path=home / "store.duckdb")
    instance = DagsterInstance.get()
    loop = GridLoop(s, instance)
    now = W0 + 2 * lz.WINDOW + timedelta(minutes=20)  # past every late file's grace
    assert loop.refresh(now, force=True) and loop.model is not None
    todo = ready_snapshots(s.landing, now, None, expected_sources(s.landing, W0 + lz.WINDOW), s.snapshot_grace_s,
                           lookback=timedelta(minutes=40))
    assert todo == [W0 + timedelta(seconds=30 * k) for k in range(20)]
    for ts in todo:
        out = loop.estimate(ts)
        assert out["readings"] > 0
    loop.n1.shutdown(wait=True)
    con = duckdb.connect(str(s.live_db_path), read_only=True)
    try:
        n, conv = con.execute("SELECT count(*), count(*) FILTER (WHERE converged) FROM grid.state_summary").fetchone()
        n1 = con.execute("SELECT count(DISTINCT snapshot_ts) FROM grid.contingencies").fetchone()[0]
    finally:
        con.close()
    assert n == 20 and conv == 20
    assert n1 >= 1 and loop.stats.n1_runs == n1
    ev = instance.get_latest_materialization_event(AssetKey("grid_state"))
    assert ev.asset_materialization.metadata["source"].value == "live loop"
    assert ev.asset_materialization.partition == "2026-11-20-09:05"
    # a restarted worker resumes after the last estimated snapshot
    assert GridLoop(s, None).last_done == todo[-1]
