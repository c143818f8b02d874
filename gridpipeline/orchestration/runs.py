"""Runs whose process died, and the pool slots they still hold.

A run killed with SIGKILL (or by the OOM killer, or a power cut) never writes its failure: it stays
STARTED and keeps its ``duckdb`` pool slot, and every later writer waits behind it for ever. Dagster's
run monitoring cannot see it either: the default run launcher has no worker health check. So:

* :func:`reap_dead_runs` finds every STARTED or CANCELING run none of whose worker processes (the run
  process, and every pid on its latest events: steps' subprocesses) is alive, or each was reused by a
  process younger than its event, marks it failed with the reason, and frees its pool slots; slots held by runs that already finished are freed too. The
  ``run_reaper_sensor`` runs it every 30 s under the daemon, and every CLI command that starts runs
  calls it first.
* :func:`cancel_in_flight` is what ``gridpipeline dev`` does before it stops Dagster: every started run
  is marked CANCELING first, so the interrupt its worker then gets ends it CANCELED with the reason
  (not "interrupted unexpectedly ... treating as failure"), and a run still starting is marked
  CANCELED outright; queued runs stay queued for the next start. The landing sensor re-runs the
  windows of such runs (``sensors.windows_to_retry``).
* :func:`wait_for_pool` is what a CLI command does before it starts a run: it waits in its own loop
  (so Ctrl-C and SIGTERM work), says which run holds the pool, and reaps dead holders as it goes.

Only runs of this machine are judged: the instance is local (SQLite under DAGSTER_HOME).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import psutil
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

log = logging.getLogger(__name__)

ACTIVE = [DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
POOL = "duckdb"


def _worker_pids(instance: DagsterInstance, run_id: str) -> list[tuple[int, float]]:
    """The processes that may still be working for the run, each with the time of the latest event it
    wrote: the run process (the pid of its start event) and every pid among its latest events (a step's
    subprocess under the multiprocess executor). Newest first; empty before the run wrote any."""
    seen: dict[int, float] = {}
    for rec in instance.event_log_storage.get_records_for_run(run_id, ascending=False, limit=50).records:
        ev = rec.event_log_entry.dagster_event
        if ev is not None and ev.pid is not None and int(ev.pid) not in seen:
            seen[int(ev.pid)] = float(rec.event_log_entry.timestamp)
    for rec in instance.event_log_storage.get_records_for_run(run_id, ascending=True, limit=20).records:
        ev = rec.event_log_entry.dagster_event
        if ev is not None and ev.pid is not None and ev.event_type_value == "PIPELINE_START":
            seen.setdefault(int(ev.pid), float(rec.event_log_entry.timestamp))
    return list(seen.items())


def process_alive(pid: int, since: float | None = None) -> bool:
    """Is ``pid`` a live process that existed at ``since`` (a pid reused later belongs to someone else)?"""
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        return since is None or p.create_time() <= since + 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def reap_dead_runs(instance: DagsterInstance, pool: str = POOL) -> list[dict]:
    """Fail the active runs whose worker is gone and free every slot of ``pool`` no live run holds.
    Returns one record per action: {"run_id", "job", "pid", "action"}."""
    done = []
    for rec in instance.get_run_records(RunsFilter(statuses=ACTIVE)):
        run = rec.dagster_run
        # dead only when no process that worked for it is alive: a step's subprocess that finished is
        # gone while the run process waits for the next step's pool slot (judging by the latest event's
        # writer alone failed such a run). Each process must have existed when it wrote its event: a
        # step's subprocess starts long after the run does (a reused pid is not the worker)
        workers = _worker_pids(instance, run.run_id)
        if not workers or any(process_alive(p, since) for p, since in workers):
            continue
        pid = workers[0][0]
        if run.status == DagsterRunStatus.CANCELING:  # it was being stopped: it ends as asked
            msg = (f"run worker (pid {pid}) is gone while the run was being canceled; "
                   "marked canceled and its pool slots freed by gridpipeline's run reaper")
            instance.report_run_canceled(run, message=msg)
        else:
            msg = (f"run worker (pid {pid}) is gone: the process was killed without reporting; "
                   "marked failed and its pool slots freed by gridpipeline's run reaper")
            instance.report_run_failed(run, message=msg)
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        log.warning("%s (run %s of %s)", msg, run.run_id, run.job_name)
        done.append({"run_id": run.run_id, "job": run.job_name, "pid": pid, "action": "failed and freed"})
    info = instance.event_log_storage.get_concurrency_info(pool)
    for run_id in info.active_run_ids | {s.run_id for s in info.pending_steps}:
        run = instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            instance.event_log_storage.free_concurrency_slots_for_run(run_id)
            done.append({"run_id": run_id, "job": run.job_name if run else None, "pid": None,
                         "action": "slot of a finished run freed"})
    return done


STOPPING = "gridpipeline dev is stopping: the run is interrupted; the landing sensor re-runs its windows at the next start"


def cancel_in_flight(instance: DagsterInstance, message: str = STOPPING) -> list[str]:
    """Stop every run in flight cleanly (see the module docstring); returns their ids.

    A STARTED run is marked CANCELING: its worker gets the interrupt and ends it CANCELED. A STARTING
    run (launched, its worker still loading the code) is marked CANCELED at once. Marked CANCELING, its
    worker would find a status it did not expect when it got going: with run monitoring on, Dagster
    takes it for a duplicate worker and exits with code 0, and the code server then fails the unfinished
    run ("run execution process unexpectedly exited with code 0"), which is how runs launched in the
    last seconds before a stop ended FAILURE. Marked CANCELED, the worker does not start it."""
    ids = []
    for rec in instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.STARTING, DagsterRunStatus.STARTED])):
        run = rec.dagster_run
        if run.status == DagsterRunStatus.STARTING:
            instance.report_run_canceled(run, message=message)
        else:
            instance.report_run_canceling(run, message=message)
        ids.append(run.run_id)
    return ids


def settle_canceled(instance: DagsterInstance, run_ids: list[str], message: str = STOPPING) -> list[str]:
    """After the workers were stopped: the runs of ``run_ids`` still CANCELING (their worker was killed
    before it could report) are marked CANCELED and their pool slots freed; returns their ids.

    So is any run still in flight that :func:`cancel_in_flight` did not see: the daemon may launch a
    queued run in the seconds between that scan and its own stop, and that run's worker is stopped with
    the rest, so it would be left STARTED (and failed by run monitoring at the next start)."""
    done = []
    late = [r.dagster_run.run_id for r in instance.get_run_records(RunsFilter(statuses=[
        DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]))]
    for run_id in list(dict.fromkeys([*run_ids, *late])):
        run = instance.get_run_by_id(run_id)
        if run is not None and not run.is_finished:
            instance.report_run_canceled(run, message=message)
            done.append(run_id)
        if run is not None and instance.get_run_by_id(run_id).is_finished:
            # its workers are stopped: a slot it took (a run canceled while STARTING may have got
            # going in the meantime) is freed here, not left to the reaper at the next start
            instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    return done


def pool_holders(instance: DagsterInstance, pool: str = POOL) -> list[str]:
    """Human-readable holders of ``pool``'s slots: "run 1a2b3c4d (telemetry_job, step raw_telemetry)"."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    out = []
    for slot in info.claimed_slots:
        run = instance.get_run_by_id(slot.run_id)
        out.append(f"run {slot.run_id[:8]} ({run.job_name if run else '?'}, step {slot.step_key})")
    return out


def pool_free(instance: DagsterInstance, pool: str = POOL) -> bool:
    info = instance.event_log_storage.get_concurrency_info(pool)
    limit = info.limit if info.limit is not None else info.slot_count
    return not limit or len(info.claimed_slots) < limit


def queued_runs(instance: DagsterInstance, above_priority: int = 0) -> int:
    """Runs waiting in the run queue with a ``dagster/priority`` above ``above_priority`` (the daemon
    dequeues them by priority as the pool frees): by default the live windows, forecasts and the
    automation sensor's runs, not other backfills."""
    runs = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.QUEUED]), limit=1000)

    def priority(run) -> int:
        try:
            return int(run.tags.get("dagster/priority", 0))
        except ValueError:
            return 0

    return sum(priority(r) > above_priority for r in runs)


def wait_for_pool(instance: DagsterInstance, pool: str = POOL, echo: Callable[[str], None] | None = None,
                  timeout_s: float | None = None, poll_s: float = 1.0, say_every_s: float = 30.0,
                  behind_queue: bool = False) -> float:
    """Block (sleeping, signals work) until ``pool`` has a free slot; reap dead holders on the way.
    With ``behind_queue``, also until no run of a positive priority is queued (:func:`queued_runs`): a
    run started in process (the history import, ``replay``) does not pass through the queue, so without
    it a free slot went to the import ahead of live windows and forecasts that had waited for it.
    Queued runs of priority 0 (other backfills) are its peers: it does not wait for them.
    Returns the seconds waited; raises TimeoutError after ``timeout_s``."""
    t0 = last_said = time.monotonic()
    said = False
    while True:
        reaped = reap_dead_runs(instance, pool)
        for r in reaped:
            if echo:
                echo(f"freed pool '{pool}' from run {r['run_id'][:8]} ({r['job']}): {r['action']}")
        queued = queued_runs(instance) if behind_queue else 0
        if not queued and pool_free(instance, pool):
            return time.monotonic() - t0
        now = time.monotonic()
        if echo and (not said or now - last_said >= say_every_s):
            why = (f"held by {', '.join(pool_holders(instance, pool))}" if not pool_free(instance, pool)
                   else f"{queued} queued run(s) go first")
            echo(f"waiting for pool '{pool}' (one writer at a time), {why}; "
                 f"{now - t0:.0f} s so far (Ctrl-C to stop)")
            said, last_said = True, now
        if timeout_s is not None and now - t0 > timeout_s:
            raise TimeoutError(f"pool '{pool}' not free after {timeout_s:.0f} s: held by "
                               f"{', '.join(pool_holders(instance, pool)) or 'none'}, {queued} run(s) queued")
        time.sleep(poll_s)


__all__ = ["POOL", "pool_free", "pool_holders", "process_alive", "queued_runs", "reap_dead_runs", "wait_for_pool"]
