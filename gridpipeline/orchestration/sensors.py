"""The landing-zone sensor: turns finished (or changed) 5-minute windows into telemetry runs.

A window is ready once it has closed plus a grace period. Each window's delivery fingerprint (file
count and newest arrival, over landing and rejected folders together) is kept in the cursor, so a
late or re-sent file changes it and re-runs exactly that partition, which replaces its rows, while
the run's own moves of bad files into rejected/ do not. Many ready
windows at once (catch-up after downtime) go out as one range run, like a single-run backfill.

One run per window, not one per file, on a machine where one writer slot serves everything: a
window whose run is still queued takes its late files with it (``windows_pending``), and a window
that changed after its run waits for the next window's run and goes in the same range run
(``defer_late``, at most ``LATE_DEFER``).

A window whose latest run ended FAILURE or CANCELED (``gridpipeline dev`` stopped under it, a
crash) is re-run once (tag ``gridpipeline/retry_of``), since its delivery did not change and the
cursor would otherwise never offer it again: nothing that landed is left uningested.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from dagster import (
    AssetKey,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from gridpipeline.base.partitions import five_minute_partitions
from gridpipeline.common import landing as lz
from gridpipeline.settings import get_settings

LOOKBACK = timedelta(days=1)
RANGE_RUN_THRESHOLD = 6
BOOTSTRAP = [AssetKey("sensor_registry"), AssetKey("unit_conversions"), AssetKey("kind_limits"), AssetKey("grid_model")]
GRID_SNAPSHOT_TAG = "gridpipeline/snapshot"
#: at most this many grid_state runs queued or running: a late loop skips to the newest snapshot
GRID_MAX_IN_FLIGHT = 1


def partition_key(window: datetime) -> str:
    return f"{window:%Y-%m-%d-%H:%M}"


def window_of(key: str) -> datetime:
    """The window start (naive UTC) of a 5-minute partition key: the inverse of :func:`partition_key`."""
    return datetime.strptime(key, "%Y-%m-%d-%H:%M")


def ready_windows(landing, rejected, now: datetime, cursor: dict[str, str], grace_s: int) -> dict[str, str]:
    """Windows (key -> fingerprint) that are closed and new or changed since the cursor (pure)."""
    out = {}
    first = datetime.strptime(five_minute_partitions.start.strftime("%Y-%m-%d %H:%M"), "%Y-%m-%d %H:%M")
    for w in lz.recent_windows(landing, max(now - LOOKBACK, first)):
        if w + lz.WINDOW + timedelta(seconds=grace_s) > now:
            continue
        fp = lz.delivery_fingerprint(landing, rejected, w)
        if fp is None:
            continue
        key = partition_key(w)
        if cursor.get(key) != fp:
            out[key] = fp
    return out


def group_ranges(keys: list[str]) -> list[tuple[str, str]]:
    """Contiguous runs of partition keys as (first, last) pairs."""
    keys = sorted(keys)
    ranges, prev = [], None
    for k in keys:
        t = window_of(k)
        if prev is not None and t - prev == lz.WINDOW:
            prev = t
            ranges[-1] = (ranges[-1][0], k)
            continue
        ranges.append((k, k))
        prev = t
    return ranges


#: a window that changed after its run (late files) waits for the next new window's run, at most this
#: long, so that a 5-minute period's late files and its new window cost one run, not one each
LATE_DEFER = timedelta(minutes=6)
#: ready windows within this many 5-minute windows of each other go as one range run (the windows
#: between them that did not change are re-cleaned too, which replaces exactly their rows)
ONE_RUN_SPAN = 12
DEFERRED = "_deferred"


def defer_late(ready: dict[str, str], cursor: dict[str, str], deferred: dict[str, str], now: datetime,
               max_wait: timedelta = LATE_DEFER) -> tuple[dict[str, str], dict[str, str]]:
    """(windows to run now, windows deferred: key -> first seen, naive UTC ISO) (pure).

    A window not in the cursor is new, and runs now with every changed one. A window that ran and
    changed since (a late or re-sent file) waits for the next new window, or ``max_wait`` from when it
    was first seen changed: late data is not urgent (the 30-second loop does not read it), and on a
    2-core machine a run per late file kept the single writer slot busy enough to starve the costs
    and reports (the 2026-12-07 dev checks: 2-3 telemetry runs per window)."""
    if any(k not in cursor for k in ready):
        return dict(ready), {}
    seen = {k: deferred.get(k, now.isoformat()) for k in ready}
    if any(now - datetime.fromisoformat(t) >= max_wait for t in seen.values()):
        return dict(ready), {}
    return {}, seen


def plan_runs(ready: dict[str, str], cursor: dict[str, str]) -> list[tuple[str, str]]:
    """(first, last) partition ranges to run for the ready windows (pure).

    Cleaning reads the next window as context (``lookahead_minutes``), which a live window's run does
    not have yet: so a window's run also re-cleans the window before it when that one ran live
    (it is in the cursor), and every window is finally cleaned with its successor, as a backfill
    cleans it. Ready windows within ``ONE_RUN_SPAN`` of each other (a new window and the late ones
    before it) go as one range run; many (catch-up) as contiguous range runs; else one run each."""
    keys = sorted(ready)
    if not keys:
        return []
    span = (window_of(keys[-1]) - window_of(keys[0])) / lz.WINDOW
    if 1 < len(keys) and span < ONE_RUN_SPAN:
        groups = [(keys[0], keys[-1])]
    else:
        groups = group_ranges(keys) if len(keys) >= RANGE_RUN_THRESHOLD else [(k, k) for k in keys]
    out = []
    for first, last in groups:
        prev = partition_key(window_of(first) - lz.WINDOW)
        if prev in cursor and prev not in ready:
            first = prev
        out.append((first, last))
    return out


RETRY_TAG = "gridpipeline/retry_of"
#: ended runs older than this are not re-run by the sensor (a backfill's job)
RETRY_LOOKBACK = timedelta(hours=6)
_ENDED_BADLY = (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)


def run_partitions(tags: dict[str, str]) -> list[str]:
    """The 5-minute partition keys a run covers, from its tags (one partition, or a range)."""
    if "dagster/partition" in tags:
        return [tags["dagster/partition"]]
    a, b = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    if not a or not b:
        return []
    t, end = window_of(a), window_of(b)
    out = []
    while t <= end:
        out.append(partition_key(t))
        t += lz.WINDOW
    return out


#: a run in one of these has not launched its process yet, so it has not listed the landing files
_NOT_LAUNCHED = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED]


def windows_pending(instance: DagsterInstance, job_name: str, since: datetime) -> set[str]:
    """Partition keys covered by a run of ``job_name`` (created after ``since``, naive UTC) that is
    still queued: it will read every file in the landing zone when it starts, so a file that arrived
    since it was requested needs no run of its own. Live windows get late files for minutes; without
    this each one queued another run of the same window behind the first, and on two cores the queue
    grew faster than the single DuckDB writer slot drained it (the 2026-12-07 dev check: 16 runs
    queued after 20 minutes, three of them for the same window, automation runs starved)."""
    runs = instance.get_runs(RunsFilter(job_name=job_name, statuses=_NOT_LAUNCHED,
                                        created_after=since.replace(tzinfo=UTC)))
    return {k for run in runs for k in run_partitions(run.tags)}


def windows_to_retry(instance: DagsterInstance, job_name: str, since: datetime) -> dict[str, str]:
    """Partition key -> id of the run to re-run it after: windows whose newest run of ``job_name``
    (created after ``since``, UTC) ended FAILURE or CANCELED and was not itself a retry. A window with
    a newer run (done, queued or running), or whose failed run was a retry, is not offered again."""
    runs = instance.get_runs(RunsFilter(job_name=job_name, created_after=since.replace(tzinfo=UTC)))
    seen, out = set(), {}
    for run in runs:  # newest first
        keys = run_partitions(run.tags)
        if run.status in _ENDED_BADLY and RETRY_TAG not in run.tags:
            out.update({k: run.run_id for k in keys if k not in seen})
        seen.update(keys)
    return out


FORECAST_MODELS = [AssetKey("demand_model"), AssetKey("renewable_models")]


def build_landing_sensor(job, bootstrap_job, models_job=None):
    @sensor(
        name="landing_zone_sensor",
        jobs=[job, bootstrap_job] + ([models_job] if models_job is not None else []),
        minimum_interval_seconds=15,
        default_status=DefaultSensorStatus.RUNNING,
        description="Launches telemetry runs for closed 5-minute windows with new or changed landing files.",
    )
    def landing_zone_sensor(context: SensorEvaluationContext):
        s = get_settings()
        s.ensure_dirs()
        instance = context.instance
        missing = [k for k in BOOTSTRAP if instance.get_latest_materialization_event(k) is None]
        if missing:
            # Registry and seeds first; a later tick picks up the windows.
            yield RunRequest(run_key=f"bootstrap-{context.cursor or 'start'}", job_name=bootstrap_job.name,
                             tags=LIVE_PRIORITY)
            return
        first_models = models_job is not None and any(
            instance.get_latest_materialization_event(k) is None for k in FORECAST_MODELS)
        if first_models:
            # first forecast models, once, in their own run: the grid loop does not wait for them
            yield RunRequest(run_key="forecast-models-initial", job_name=models_job.name)
        cursor = json.loads(context.cursor) if context.cursor else {}
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        ready = ready_windows(s.landing, s.rejected, now, cursor, s.landing_grace_s)
        retry = {k: rid for k, rid in windows_to_retry(instance, job.name, now - RETRY_LOOKBACK).items()
                 if k not in ready}
        keys = sorted(retry)
        for first, last in group_ranges(keys) if len(keys) >= RANGE_RUN_THRESHOLD else [(k, k) for k in keys]:
            tags = {RETRY_TAG: retry[last], **LIVE_PRIORITY}
            if first == last:
                yield RunRequest(run_key=f"retry:{last}:{retry[last]}", job_name=job.name, partition_key=last, tags=tags)
            else:
                yield RunRequest(run_key=f"retry:{first}:{last}:{retry[last]}", job_name=job.name,
                                 tags={"dagster/asset_partition_range_start": first,
                                       "dagster/asset_partition_range_end": last, **tags})
        pending = windows_pending(instance, job.name, now - LOOKBACK) if ready else set()
        # the cursor takes their fingerprints now: the queued run reads the files that changed them
        cursor.update({k: fp for k, fp in ready.items() if k in pending})
        ready = {k: fp for k, fp in ready.items() if k not in pending}
        ready, deferred = defer_late(ready, cursor, cursor.pop(DEFERRED, {}), now)
        if not ready:
            context.update_cursor(json.dumps({**cursor, **({DEFERRED: deferred} if deferred else {})}))
            if not first_models and not retry:  # a tick may yield run requests or a skip reason, never both
                yield SkipReason(f"late files in {len(deferred)} window(s) wait for the next window's run"
                                 if deferred else "no closed window with new landing files")
            return
        for first, last in plan_runs(ready, cursor):
            if first == last:
                yield RunRequest(run_key=f"{last}:{ready[last]}", job_name=job.name, partition_key=last,
                                 tags=LIVE_PRIORITY)
            else:
                yield RunRequest(
                    run_key=f"range:{first}:{last}:{ready[last]}",
                    job_name=job.name,
                    tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last,
                          **LIVE_PRIORITY},
                )
        cursor.update(ready)
        horizon = partition_key(now - LOOKBACK - timedelta(hours=1))
        context.update_cursor(json.dumps({k: v for k, v in cursor.items() if k >= horizon}))

    return landing_zone_sensor


#: live windows claim the duckdb pool slot ahead of backfills and training registrations (priority 0),
#: which wait between their short writes
LIVE_PRIORITY = {"dagster/priority": "8"}


def build_grid_state_sensor(job):
    """Every 30 s: one run of ``job`` for the newest complete snapshot in the landing zone.

    Off by default: the live loop is the long-lived worker of ``orchestration/live_loop.py``
    (``gridpipeline loop``, started by ``dev``), which estimates every snapshot within seconds. This
    sensor is the run-per-snapshot alternative for deployments that cannot keep a worker process.

    A snapshot is complete when every source that delivered in the window has sent its file for that
    export interval, or ``GRIDPIPELINE_SNAPSHOT_GRACE_S`` after its newest file. While a grid run is
    still queued or running the tick is skipped, so a slow loop always catches up to the newest
    snapshot instead of working through a backlog."""

    @sensor(
        name="grid_state_sensor",
        job=job,
        minimum_interval_seconds=30,
        default_status=DefaultSensorStatus.STOPPED,
        description="Estimates the newest telemetry snapshot every 30 seconds (grid_state, bottlenecks, topology "
        "events; N-1 every 5 minutes and on topology events).",
    )
    def grid_state_sensor(context: SensorEvaluationContext):
        from dagster import DagsterRunStatus, RunsFilter

        from gridpipeline.telemetry.snapshot import latest_snapshot

        s = get_settings()
        s.ensure_dirs()
        instance = context.instance
        if any(instance.get_latest_materialization_event(k) is None for k in BOOTSTRAP):
            yield SkipReason("waiting for the bootstrap run (sensor registry, seeds, grid model)")
            return
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        windows = lz.recent_windows(s.landing, now - timedelta(minutes=10))
        expected = max((len({f.source for f in lz.window_files(s.landing, w) if f.source}) for w in windows[-2:]),
                       default=0)
        ts = latest_snapshot(s.landing, now, expected, s.snapshot_grace_s) if expected else None
        if ts is None:
            yield SkipReason("no complete snapshot in the landing zone")
            return
        if context.cursor and context.cursor >= ts.isoformat():
            yield SkipReason(f"snapshot {ts.isoformat()} already requested")
            return
        in_flight = instance.get_runs_count(RunsFilter(job_name=job.name, statuses=[
            DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
            DagsterRunStatus.STARTED]))
        if in_flight >= GRID_MAX_IN_FLIGHT:
            yield SkipReason(f"{in_flight} grid run(s) still in flight; the next tick takes the newest snapshot")
            return
        context.update_cursor(ts.isoformat())
        yield RunRequest(run_key=f"grid-state:{ts.isoformat()}", partition_key=partition_key(lz.floor_window(ts)),
                         # ahead of telemetry catch-up runs in the queue: the operator's view comes first
                         tags={GRID_SNAPSHOT_TAG: ts.isoformat(), "dagster/priority": "10"})

    return grid_state_sensor


def build_run_reaper_sensor():
    """Every 30 s: fail runs whose worker process is gone and free the pool slots they hold (see
    ``orchestration/runs.py``), so one killed run cannot block every later writer."""
    from gridpipeline.orchestration.runs import reap_dead_runs

    @sensor(
        name="run_reaper_sensor",
        minimum_interval_seconds=30,
        default_status=DefaultSensorStatus.RUNNING,
        description="Fails runs whose process was killed and frees their duckdb pool slots.",
    )
    def run_reaper_sensor(context: SensorEvaluationContext):
        done = reap_dead_runs(context.instance)
        if not done:
            return SkipReason("no dead runs and no stale pool slots")
        for r in done:
            context.log.warning(f"run {r['run_id']} ({r['job']}, pid {r['pid']}): {r['action']}")
        return SkipReason(f"reaped {len(done)}: " + "; ".join(f"{r['run_id'][:8]} {r['action']}" for r in done))

    return run_reaper_sensor
