"""``gridpipeline bench replan --events 20``: cloud fronts injected into the running sample world, and
the time from the first snapshot that shows the drop to new setpoints confirmed at the batteries.

Set-up (untimed), in a fresh home under a temp folder: ``gridpipeline dev --catch-up 10m --no-history``
(simulator serving the field over Modbus, the 30-second loop, the dispatcher in automatic mode,
Dagster), then a wait until the loop has estimates and the dispatcher has sent its first plan.

Each event: a cloud front on every PV generator (output down 70 % over one minute, held two minutes,
back over one) starting at the next 5-minute window start at least 20 s ahead, written to the world's event
file (``<home>/world/events.json``, read by the simulator only; the pipeline never sees it). The
pipeline has to notice it from its telemetry: the loop estimates the state, the dispatcher sees the
measured PV fall (against the forecast, or 50 % below its 10-minute high), re-plans, gates and writes
the setpoints over Modbus, confirming each by reading it back.

Measured per event, from the ledger: the first ``setpoint_write`` of a departure-triggered plan after
the front starts, minus the first 30-second snapshot at or after the front's start (the first snapshot
that shows the drop). An event with no such write within 5 minutes counts as missed.
"""

from __future__ import annotations

import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from gridpipeline.settings import PROJECT_ROOT

FRONT = {"minutes": 2.0, "depth": 0.7, "kind": "pv", "ramp_minutes": 1.0}
MISS_AFTER = timedelta(minutes=5)
# the simulator reads the event file at each 5-minute window's start, so 20 s ahead is enough, and
# fronts follow each other every 5 minutes (the 4-minute front has recovered a minute before the next)
LEAD_S = 20


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _records(ledger: Path) -> list[dict]:
    from gridpipeline.ledger.store import Ledger

    try:
        return Ledger(ledger).records()
    except Exception:  # noqa: BLE001 - the dispatcher may hold the lock a moment; asked again later
        return []


def run(events: int = 20, keep: bool = False, **_) -> dict:
    work = Path(tempfile.mkdtemp(prefix="gp_bench_replan_"))
    home = work / "home"
    port = 17000 + random.randrange(0, 2000, 100)
    env = {**os.environ, "GRIDPIPELINE_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home"),
           "GRIDPIPELINE_DUCKDB_PATH": str(home / "gridpipeline.duckdb"), "GRIDPIPELINE_FIELD_PORT": str(port),
           "GRIDPIPELINE_DECISION_MODES": "dispatch=automatic"}
    for k in ("GRIDPIPELINE_LANDING_DIR", "GRIDPIPELINE_REJECTED_DIR", "GRIDPIPELINE_ARCHIVE_DIR",
              "GRIDPIPELINE_LIVE_DUCKDB_PATH", "GRIDPIPELINE_PARTITIONS_START", "GRIDPIPELINE_LEDGER_PATH"):
        env.pop(k, None)
    exe = str(Path(sys.executable).parent / "gridpipeline")
    log = open(work / "bench_replan.log", "w")
    say = lambda m: print(f"bench replan: {m}", file=sys.stderr, flush=True)  # noqa: E731
    ledger = home / "ledger.duckdb"
    events_file = home / "world" / "events.json"
    events_file.parent.mkdir(parents=True, exist_ok=True)
    t_setup = time.monotonic()
    say(f"starting gridpipeline dev in {home} and waiting for the first plan sent")
    dev = subprocess.Popen([exe, "dev", "--catch-up", "10m", "--no-history", "--port", "3392"], env=env,
                           cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    fronts: list[datetime] = []
    try:
        deadline = time.monotonic() + 1200
        while not any(r["kind"] == "setpoint_write" and r["body"].get("confirmed", 0) > 0 for r in _records(ledger)):
            if dev.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"no setpoints were ever sent; see {work / 'bench_replan.log'}")
            time.sleep(10)
        setup_s = time.monotonic() - t_setup
        spec = []
        for k in range(events):
            now = _now()
            start = (now + timedelta(seconds=LEAD_S)).replace(second=0, microsecond=0)
            start += timedelta(minutes=(5 - start.minute % 5) % 5)
            spec.append({**FRONT, "start": start.isoformat()})
            tmp = events_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(spec))
            os.replace(tmp, events_file)
            fronts.append(start)
            say(f"event {k + 1}/{events}: a cloud front at {start:%H:%M:%S} UTC")
            # the front lasts 4 minutes; the next one starts at a later window
            while _now() < start + timedelta(minutes=4, seconds=30):
                if dev.poll() is not None:
                    raise RuntimeError(f"dev stopped; see {work / 'bench_replan.log'}")
                time.sleep(5)
        time.sleep(60)
        recs = _records(ledger)
    finally:
        if dev.poll() is None:
            dev.send_signal(signal.SIGTERM)
            try:
                dev.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(dev.pid, signal.SIGKILL)
        log.close()
    plans = {r["id"]: r for r in recs if r["kind"] == "dispatch"}
    writes = [(r["created_at"], plans.get(r["ref"])) for r in recs if r["kind"] == "setpoint_write"
              and r["body"].get("confirmed", 0) > 0]
    lat, missed, detected_at = [], 0, []
    for start in fronts:
        first_snapshot = start  # fronts start on the 30-second grid: the first snapshot showing the drop
        hit = [(w, p) for w, p in writes if p is not None and p["body"].get("trigger") == "departure"
               and start <= w <= start + MISS_AFTER]
        if not hit:
            missed += 1
            continue
        w, p = min(hit, key=lambda h: h[0])
        lat.append((w - first_snapshot).total_seconds())
        detected_at.append((datetime.fromisoformat(p["body"]["departure_snapshot"]) - first_snapshot).total_seconds())
    result = {
        "benchmark": "replan", "events": len(fronts), "replanned": len(lat), "missed": missed,
        "replan_p50_seconds": round(float(np.percentile(lat, 50)), 1) if lat else None,
        "replan_p99_seconds": round(float(np.percentile(lat, 99)), 1) if lat else None,
        "replan_max_seconds": round(max(lat), 1) if lat else None,
        "detection_snapshot_p50_seconds": round(float(np.percentile(detected_at, 50)), 1) if detected_at else None,
        "plans": len(plans), "setpoint_writes": len(writes), "setup_seconds": round(setup_s, 1),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}",
    }
    if not keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    else:
        result["work"] = str(work)
    return result
