"""A run killed with SIGKILL while it holds the duckdb pool slot: the reaper marks it failed and frees
the slot, and a waiting command names the holder instead of spinning (real instance, real processes)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from gridpipeline.orchestration.runs import pool_free, reap_dead_runs, wait_for_pool
from gridpipeline.settings import PROJECT_ROOT

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from dagster import DagsterInstance, job, op

    @op(pool="duckdb")
    def hold_the_writer():
        Path(sys.argv[1]).write_text("holding")
        time.sleep(600)

    @job
    def writer_job():
        hold_the_writer()

    writer_job.execute_in_process(instance=DagsterInstance.get(), raise_on_error=False)
""")


@pytest.fixture
def instance(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with DagsterInstance.get() as inst:
        yield inst


def _start_holder(tmp_path: Path, name: str) -> tuple[subprocess.Popen, Path]:
    script, ready = tmp_path / f"{name}.py", tmp_path / f"{name}.ready"
    script.write_text(HOLDER)
    proc = subprocess.Popen([sys.executable, str(script), str(ready)], env=os.environ.copy())
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert proc.poll() is None, "holder exited before it took the slot"
        assert time.monotonic() < deadline, "holder never took the slot"
        time.sleep(0.2)
    return proc, ready


def test_a_killed_run_is_failed_and_its_slot_freed(instance, tmp_path):
    proc, _ = _start_holder(tmp_path, "killed")
    assert not pool_free(instance)
    assert reap_dead_runs(instance) == []  # a live holder is left alone
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    (run,) = instance.get_runs(RunsFilter(job_name="writer_job"))
    assert run.status == DagsterRunStatus.STARTED and not pool_free(instance)  # what the probe found

    reaped = reap_dead_runs(instance)
    assert [r["run_id"] for r in reaped] == [run.run_id]
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE
    assert pool_free(instance)
    assert wait_for_pool(instance, timeout_s=5) < 5


def test_a_waiting_command_names_the_live_holder_and_gives_up_on_time(instance, tmp_path):
    proc, _ = _start_holder(tmp_path, "alive")
    said = []
    try:
        with pytest.raises(TimeoutError, match="writer_job, step hold_the_writer"):
            wait_for_pool(instance, echo=said.append, timeout_s=2, poll_s=0.2)
        assert said and "waiting for pool 'duckdb'" in said[0] and "writer_job" in said[0]
    finally:
        proc.kill()
        proc.wait(30)
    # the holder died: the next wait frees the slot and goes on
    assert wait_for_pool(instance, echo=said.append, timeout_s=10, poll_s=0.2) < 10
    assert any("freed pool 'duckdb'" in m for m in said)


LATE_STEP = textwrap.dedent("""
    import os, subprocess, sys, time
    from pathlib import Path
    from dagster import DagsterInstance, job, op

    CHILD = '''
    import os, sys, time
    from pathlib import Path
    from dagster import DagsterInstance
    from dagster._core.events import DagsterEvent, DagsterEventType, EngineEventData
    inst = DagsterInstance.get()
    run = inst.get_run_by_id(sys.argv[1])
    # what a step's subprocess writes: an event with its own pid
    inst.report_dagster_event(DagsterEvent(DagsterEventType.ENGINE_EVENT.value, run.job_name,
                                           message="a step's subprocess at work",
                                           event_specific_data=EngineEventData(), pid=os.getpid()),
                              run_id=run.run_id)
    Path(sys.argv[2]).write_text(str(os.getpid()))
    time.sleep(600)
    '''

    @op(pool="duckdb")
    def late_step(context):
        time.sleep(3)  # the step's process starts well after the run
        subprocess.Popen([sys.executable, "-c", CHILD, context.run_id, sys.argv[1]])
        time.sleep(600)

    @job
    def late_job():
        late_step()

    late_job.execute_in_process(instance=DagsterInstance.get(), raise_on_error=False)
""")


def test_a_step_process_younger_than_the_run_is_not_taken_for_a_reused_pid(instance, tmp_path):
    """Under the multiprocess executor a step runs in a subprocess started after the run, and its
    events carry its pid: the reaper judges that pid by the event it wrote, not by the run's start, so
    a live late step is left alone. Once it is gone the run process, still alive (as it is between two
    steps, waiting for a pool slot), keeps the run; once that is killed too, the run is reaped."""
    script, ready = tmp_path / "late.py", tmp_path / "late.ready"
    script.write_text(LATE_STEP)
    proc = subprocess.Popen([sys.executable, str(script), str(ready)], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() or not ready.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, "the late step never started"
            time.sleep(0.2)
        child = int(ready.read_text())
        assert reap_dead_runs(instance) == []
        os.kill(child, signal.SIGKILL)
        time.sleep(0.5)
        (run,) = instance.get_runs(RunsFilter(job_name="late_job"))
        assert reap_dead_runs(instance) == []  # the step's process is gone, the run's is not
        assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED
        proc.kill()
        proc.wait(30)
        reaped = reap_dead_runs(instance)
        assert [r["pid"] for r in reaped] == [child] and run.run_id in [r["run_id"] for r in reaped]
    finally:
        proc.kill()
        proc.wait(30)


def test_a_run_interrupted_by_a_stopping_dev_ends_canceled_not_failed(instance, tmp_path):
    """``gridpipeline dev`` stopping: started runs are marked canceling before their worker gets the
    interrupt, so they end CANCELED with the reason; one whose worker is killed before it can say so
    is settled as canceled, and its pool slot freed."""
    from gridpipeline.orchestration.runs import STOPPING, cancel_in_flight, settle_canceled

    proc, _ = _start_holder(tmp_path, "stopped")
    ids = cancel_in_flight(instance)
    (run,) = instance.get_runs(RunsFilter(job_name="writer_job"))
    assert ids == [run.run_id] and instance.get_run_by_id(run.run_id).status == DagsterRunStatus.CANCELING
    proc.send_signal(signal.SIGINT)
    proc.wait(60)
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.CANCELED
    assert settle_canceled(instance, ids) == []  # it said so itself
    assert pool_free(instance)

    killed, _ = _start_holder(tmp_path, "killed")
    (run2,) = [r for r in instance.get_runs(RunsFilter(job_name="writer_job")) if r.run_id != run.run_id]
    ids = cancel_in_flight(instance)
    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    assert settle_canceled(instance, ids) == [run2.run_id]
    assert instance.get_run_by_id(run2.run_id).status == DagsterRunStatus.CANCELED and pool_free(instance)
    logs = [e.message for e in instance.all_logs(run2.run_id) if e.message]
    assert any(STOPPING in m for m in logs)


def test_a_run_launched_after_the_stop_s_scan_is_settled_canceled_too(instance, tmp_path):
    """The daemon may launch a queued run between ``cancel_in_flight``'s scan and its own stop (a fresh
    clone's ``dev`` left one telemetry run STARTED that way). Its worker is stopped with the others;
    settling afterwards ends it CANCELED and frees its slot, so run monitoring does not fail it at the
    next start."""
    from gridpipeline.orchestration.runs import STOPPING, cancel_in_flight, settle_canceled

    ids = cancel_in_flight(instance)
    assert ids == []
    late, _ = _start_holder(tmp_path, "late")  # launched after the scan
    (run,) = instance.get_runs(RunsFilter(job_name="writer_job"))
    late.send_signal(signal.SIGKILL)  # what stopping the process groups does to it
    late.wait(30)
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED
    assert settle_canceled(instance, ids) == [run.run_id]
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.CANCELED and pool_free(instance)
    assert any(STOPPING in (e.message or "") for e in instance.all_logs(run.run_id))


QUICK = textwrap.dedent("""
    import sys
    from pathlib import Path
    from dagster import job, op

    @op(pool="duckdb")
    def write_marker():
        Path(__file__).with_suffix(".ran").write_text("ran")

    @job
    def quick_job():
        write_marker()
""")


def test_a_run_still_starting_when_dev_stops_ends_canceled_and_never_runs(instance, tmp_path):
    """A run launched in the last seconds before a stop is STARTING while its worker loads the code.
    It is marked CANCELED, so the worker that then gets going does not run it; marked CANCELING (as
    before), the worker took itself for a duplicate, exited 0, and the code server failed the run."""
    from dagster._core.definitions.reconstruct import ReconstructableJob
    from dagster._core.execution.api import execute_run_iterator

    from gridpipeline.orchestration.runs import STOPPING, cancel_in_flight, settle_canceled

    src = tmp_path / "quick.py"
    src.write_text(QUICK)
    recon = ReconstructableJob.for_file(str(src), "quick_job")
    run = instance.create_run_for_job(recon.get_definition(), status=DagsterRunStatus.STARTING)

    assert cancel_in_flight(instance) == [run.run_id]
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.CANCELED
    # what the run worker does once it has loaded the job
    events = list(execute_run_iterator(recon, instance.get_run_by_id(run.run_id), instance))
    assert any("canceled before execution could start" in (e.message or "") for e in events)
    assert not src.with_suffix(".ran").exists()
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.CANCELED
    assert settle_canceled(instance, [run.run_id]) == [] and pool_free(instance)
    assert any(STOPPING in (e.message or "") for e in instance.all_logs(run.run_id))


def test_the_reaper_ends_a_dead_canceling_run_canceled(instance, tmp_path):
    from gridpipeline.orchestration.runs import cancel_in_flight

    proc, _ = _start_holder(tmp_path, "canceling")
    cancel_in_flight(instance)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    (run,) = instance.get_runs(RunsFilter(job_name="writer_job"))
    assert [r["run_id"] for r in reap_dead_runs(instance)] == [run.run_id]
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.CANCELED and pool_free(instance)


def test_windows_of_runs_that_ended_badly_are_offered_once(instance):
    """The landing sensor re-runs a window whose newest telemetry run failed or was canceled (dev
    stopped under it), once: not if a newer run covers it, and not after a retry failed too."""
    from datetime import datetime, timedelta

    from dagster._core.storage.dagster_run import DagsterRun

    from gridpipeline.orchestration.sensors import RETRY_TAG, run_partitions, windows_to_retry

    def add(run_id, status, **tags):
        instance.add_run(DagsterRun(job_name="telemetry_job", run_id=run_id, status=status, tags=tags))
        time.sleep(0.01)  # runs are ordered by creation

    S, F, C = DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED
    add("a", C, **{"dagster/partition": "2026-12-05-01:00"})                 # canceled: offered
    add("b", F, **{"dagster/partition": "2026-12-05-01:05"})                 # failed, then done again
    add("c", S, **{"dagster/partition": "2026-12-05-01:05"})
    add("d", S, **{"dagster/partition": "2026-12-05-01:10"})                 # done, then a failure: offered
    add("e", F, **{"dagster/partition": "2026-12-05-01:10"})
    add("f", F, **{"dagster/partition": "2026-12-05-01:15"})                 # failed, and its retry failed
    add("g", F, **{"dagster/partition": "2026-12-05-01:15", RETRY_TAG: "f"})
    add("h", C, **{"dagster/asset_partition_range_start": "2026-12-05-01:20",  # a canceled range
                   "dagster/asset_partition_range_end": "2026-12-05-01:30"})
    add("i", DagsterRunStatus.STARTED, **{"dagster/partition": "2026-12-05-01:30"})  # ... one running again
    since = datetime.utcnow() - timedelta(hours=1)  # noqa: DTZ003 - naive UTC, as the sensor passes it
    assert windows_to_retry(instance, "telemetry_job", since) == {
        "2026-12-05-01:00": "a", "2026-12-05-01:10": "e", "2026-12-05-01:20": "h", "2026-12-05-01:25": "h"}
    assert run_partitions({"dagster/asset_partition_range_start": "2026-12-05-23:55",
                           "dagster/asset_partition_range_end": "2026-12-06-00:05"}) == [
        "2026-12-05-23:55", "2026-12-06-00:00", "2026-12-06-00:05"]
    assert windows_to_retry(instance, "telemetry_job", datetime.utcnow() + timedelta(hours=1)) == {}  # noqa: DTZ003


def test_windows_of_runs_not_yet_launched_are_pending(instance):
    """A late file for a window whose run is still queued needs no run of its own: the queued run
    lists the landing files when it starts. Runs already launched (they may have listed the files) and
    ended runs do not count."""
    from datetime import datetime, timedelta

    from dagster._core.remote_origin import (
        InProcessCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    from gridpipeline.orchestration.sensors import windows_pending

    repo = RemoteRepositoryOrigin(InProcessCodeLocationOrigin(LoadableTargetOrigin(module_name="gridpipeline.definitions")),
                                  "__repository__")

    def add(run_id, status, job="telemetry_job", **tags):
        # a queued run names the code location it will be launched from
        instance.add_run(DagsterRun(job_name=job, run_id=run_id, status=status, tags=tags,
                                    remote_job_origin=RemoteJobOrigin(repo, job)))

    R = DagsterRunStatus
    add("q", R.QUEUED, **{"dagster/asset_partition_range_start": "2026-12-07-02:45",
                          "dagster/asset_partition_range_end": "2026-12-07-02:50"})
    add("n", R.NOT_STARTED, **{"dagster/partition": "2026-12-07-03:00"})
    add("s", R.STARTING, **{"dagster/partition": "2026-12-07-02:35"})
    add("r", R.STARTED, **{"dagster/partition": "2026-12-07-02:40"})
    add("d", R.SUCCESS, **{"dagster/partition": "2026-12-07-02:55"})
    add("o", R.QUEUED, job="forecast_job", **{"dagster/partition": "2026-12-07-03:05", "dagster/priority": "5"})
    since = datetime.utcnow() - timedelta(hours=1)  # noqa: DTZ003 - naive UTC, as the sensor passes it
    assert windows_pending(instance, "telemetry_job", since) == {
        "2026-12-07-02:45", "2026-12-07-02:50", "2026-12-07-03:00"}
    assert windows_pending(instance, "telemetry_job", datetime.utcnow() + timedelta(hours=1)) == set()  # noqa: DTZ003
    # a run started in process (the history import) waits behind the queued ones; by default it does not
    from gridpipeline.orchestration.runs import wait_for_pool

    instance.event_log_storage.set_concurrency_slots("duckdb", 1)
    assert wait_for_pool(instance, timeout_s=5) < 5
    with pytest.raises(TimeoutError, match="1 run"):  # the queued forecast (5); "q" has no priority
        wait_for_pool(instance, timeout_s=0.5, poll_s=0.1, behind_queue=True)
