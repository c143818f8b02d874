"""``gridpipeline bench loop --minutes 30``: the 30-second loop under ``gridpipeline dev`` while a
nightly training run and a day's backfill run at the same time.

Set-up (untimed), in a fresh home under a temp folder: ``history --days 11 --no-train`` (historian
archive through ingestion, so the training has the 10 measured days the demand model needs), then ``gridpipeline dev
--catch-up 10m --no-history`` (simulator, the live-loop worker, ``dagster dev`` with its daemon and
sensors) and a warm-up until the loop has estimated its first snapshot and the first window is clean.

Measured over ``minutes`` from then on, while two loads start at its beginning:

* the nightly training: ``forecast_models_job`` executed on the instance (demand and renewable models);
* a day's backfill: ``gridpipeline history --days 1`` of the day before the imported history (a day of
  archive through ``telemetry_job``: ingestion and ``dbt build`` of 288 partitions).

Both run at the CPU niceness ``dev`` gives its batch work (Dagster and its runs, the history import:
``cli.BATCH_NICE``), as they would as runs of ``dev``'s Dagster; the loop worker runs at 0.

Figures:

* ``snapshots_expected``: 30-second instants in the measured span (its last minute left out: still in
  flight); ``snapshots_estimated``: those with a committed estimate in the live store;
* ``grid_lag_p99_seconds``: snapshot complete -> estimate committed, p99. A snapshot can be complete at
  the earliest when its export interval closes (``ts + 30 s``; the RTUs deliver 1-5 s later), so the
  lag counts from there; ``grid_lag_from_instant_p99_seconds`` counts from the reading instant ``ts``;
* ``clean_lag_p99_seconds``: window close -> its first ``clean_telemetry`` materialisation, p99 over the
  windows closing in the span (the landing grace of 20 s is part of it);
* ``training_seconds`` / ``backfill_seconds`` and whether they succeeded, to show they overlapped.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import numpy as np

from gridpipeline.cli import BATCH_NICE
from gridpipeline.settings import PROJECT_ROOT

TRAIN = """
from dagster import DagsterInstance
from gridpipeline.definitions import defs
from gridpipeline.orchestration.runs import wait_for_pool
inst = DagsterInstance.get()
wait_for_pool(inst)
r = defs.resolve_job_def("forecast_models_job").execute_in_process(instance=inst, raise_on_error=False)
print(r.success)
"""


#: history imported before the measurement: the demand model needs at least 10 measured days
HISTORY_DAYS = 11


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _p99(x: list[float]) -> float | None:
    return round(float(np.percentile(x, 99)), 3) if x else None


def _live_rows(path: Path, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    if not path.exists():
        return []
    for _ in range(50):
        try:
            con = duckdb.connect(str(path), read_only=True)
            break
        except duckdb.IOException:
            time.sleep(0.1)
    else:
        return []
    try:
        return con.execute("SELECT snapshot_ts, computed_at FROM grid.state_summary WHERE snapshot_ts >= ? "
                           "AND snapshot_ts < ? ORDER BY 1", [start, end]).fetchall()
    except duckdb.CatalogException:
        return []
    finally:
        con.close()


def _clean_lags(dagster_home: Path, start: datetime, end: datetime) -> list[float]:
    from dagster import AssetKey, DagsterEventType, DagsterInstance, EventRecordsFilter

    os.environ["DAGSTER_HOME"] = str(dagster_home)
    with DagsterInstance.get() as inst:
        recs = inst.get_event_records(EventRecordsFilter(DagsterEventType.ASSET_MATERIALIZATION,
                                                         asset_key=AssetKey("clean_telemetry")), limit=100_000)
    first: dict[datetime, float] = {}
    for r in recs:
        p = r.partition_key
        if not p:
            continue
        w = datetime.strptime(p, "%Y-%m-%d-%H:%M")
        first[w] = min(first.get(w, float("inf")), r.timestamp)
    lags = []
    for w, t in first.items():
        close = w + timedelta(minutes=5)
        if start <= close < end:
            lags.append(t - close.replace(tzinfo=timezone.utc).timestamp())
    return lags


def run(minutes: int = 30, keep: bool = False, **_) -> dict:
    work = Path(tempfile.mkdtemp(prefix="gp_bench_loop_"))
    home = work / "home"
    env = {**os.environ, "GRIDPIPELINE_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home"),
           "GRIDPIPELINE_DUCKDB_PATH": str(home / "gridpipeline.duckdb"), "GRIDPIPELINE_FORECAST_TRAIN_DAYS": "30"}
    for k in ("GRIDPIPELINE_LANDING_DIR", "GRIDPIPELINE_REJECTED_DIR", "GRIDPIPELINE_ARCHIVE_DIR",
              "GRIDPIPELINE_LIVE_DUCKDB_PATH", "GRIDPIPELINE_PARTITIONS_START"):
        env.pop(k, None)
    exe = str(Path(sys.executable).parent / "gridpipeline")
    log = open(work / "bench_loop.log", "w")
    t_setup = time.monotonic()
    hist_end = _now() - timedelta(minutes=10)
    env["GRIDPIPELINE_PARTITIONS_START"] = f"{hist_end - timedelta(days=13):%Y-%m-%d}"  # room for the backfill day
    say = lambda m: print(f"bench loop: {m}", file=sys.stderr, flush=True)  # noqa: E731
    say(f"importing {HISTORY_DAYS} days of history into {home} (untimed set-up, ~10 min)")
    subprocess.run([exe, "history", "--days", str(HISTORY_DAYS), "--end", hist_end.isoformat(timespec="minutes"), "--no-train"],
                   env=env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, check=True)
    say("starting gridpipeline dev (simulator, live loop, Dagster) and waiting for the first estimates")
    dev = subprocess.Popen([exe, "dev", "--catch-up", "10m", "--no-history", "--port", "3391"], env=env,
                           cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    live = home / "live.duckdb"
    procs: list[subprocess.Popen] = []
    try:
        deadline = time.monotonic() + 900
        while not _live_rows(live, _now() - timedelta(minutes=2), _now()):
            if dev.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the loop never estimated a snapshot; see {work / 'bench_loop.log'}")
            time.sleep(5)
        time.sleep(60)  # the first windows' telemetry runs settle
        setup_s = time.monotonic() - t_setup
        t0 = _now()
        say(f"measuring {minutes} min from {t0:%H:%M:%S} UTC, with a training run and a day's backfill")
        backfill_end = hist_end - timedelta(days=HISTORY_DAYS)
        # both loads at the niceness `dev` gives batch work (its Dagster and runs, the history import)
        batch = functools.partial(os.nice, BATCH_NICE)
        loads = {
            "training": subprocess.Popen([sys.executable, "-c", TRAIN], env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                                         stderr=log, text=True, preexec_fn=batch),
            "backfill": subprocess.Popen([exe, "history", "--days", "1", "--end", backfill_end.isoformat(timespec="minutes"),
                                          "--no-train"], env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=log,
                                         text=True, preexec_fn=batch),
        }
        procs = list(loads.values())
        started = {k: time.monotonic() for k in loads}
        took: dict[str, float] = {}
        end = t0 + timedelta(minutes=minutes)
        while _now() < end:
            for k, p in loads.items():
                if k not in took and p.poll() is not None:
                    took[k] = round(time.monotonic() - started[k], 1)
            time.sleep(2)
        outcome = {}
        for k, p in loads.items():
            if p.poll() is None:
                outcome[k] = "still running at the end"
            else:
                out = (p.stdout.read() or "").strip().splitlines()
                outcome[k] = out[-1][:200] if out else f"exit {p.returncode}"
        measured_end = end - timedelta(minutes=1)
        rows = _live_rows(live, t0, measured_end)
        expected = int((measured_end - t0).total_seconds() // 30)
        lags_close = [(c - (ts + timedelta(seconds=30))).total_seconds() for ts, c in rows]
        lags_instant = [(c - ts).total_seconds() for ts, c in rows]
        clean = _clean_lags(home / "dagster_home", t0, measured_end - timedelta(minutes=1))
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        if dev.poll() is None:
            dev.send_signal(signal.SIGTERM)
            try:
                dev.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(dev.pid, signal.SIGKILL)
        log.close()
    result = {
        "benchmark": "loop", "minutes": minutes,
        "snapshots_expected": expected, "snapshots_estimated": len(rows),
        "grid_lag_p99_seconds": _p99(lags_close), "grid_lag_p50_seconds": _p99(lags_close) and
        round(float(np.percentile(lags_close, 50)), 3),
        "grid_lag_from_instant_p99_seconds": _p99(lags_instant),
        "clean_lag_p99_seconds": _p99(clean), "clean_windows": len(clean),
        "training_seconds": took.get("training"), "backfill_seconds": took.get("backfill"),
        "training_result": outcome.get("training"), "backfill_result": outcome.get("backfill"),
        "setup_seconds": round(setup_s, 1),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}",
    }
    if keep:
        result["work_dir"] = str(work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    print(json.dumps(run(minutes=int(sys.argv[1]) if len(sys.argv) > 1 else 30)))
