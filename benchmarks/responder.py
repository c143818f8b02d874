"""``gridpipeline bench responder --events 100``: under-frequency events in the running sample world,
and the time from the IEC 104 reading that crosses 49.0 Hz leaving the simulator's outstation to the
switch commands confirmed and the ledger record committed.

Set-up (untimed), in a fresh home under a temp folder, on free ports: ``gridpipeline dev --catch-up
10m --no-history`` (the simulator with its IEC 104 outstation and Modbus field, the 30-second loop,
the dispatcher, the responder, Dagster), then a wait until the ``response_table`` asset has written
the responder's table (so the responses use the refreshed table, not the fallback).

Each event: a loss of 10 % of the area's generation for 6 s (written to the world's events file, read
by the simulator only), enough to pass 49.0 Hz about 3 s later. The responder sheds stage 1 over IEC
104 and records it; when the frequency has been back above 49.8 Hz for 5 s (``RECOVERY_S``; 60 s in
the shipped default, shortened so 100 events fit in about half an hour, which does not touch the
timed path) it restores the blocks in stages a second apart. The next event starts once the last
one's restoration has finished (or after 90 s).

Timed, per event, from the responder's journal (``<home>/load/responses.jsonl``): ``committed_at -
sent_at``, where ``sent_at`` is the reading's CP56Time2a time tag, set by the outstation when it
sends, and ``committed_at`` is taken after the ledger append returned, which is after every switch
command's select and execute were confirmed by the outstation. An event with no response within 30 s
counts as missed (20 s).
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

LOSS = {"kind": "generation_loss", "share": 0.10, "minutes": 0.1}
RECOVERY_S = 5
RESTORE_INTERVAL_S = 1
#: seconds between one event's restoration and the next loss (the governors, Tg 6 s, take the surplus
#: back; with 8 s, 16 of 100 losses started before the area had settled and never reached 49.0 Hz)
SETTLE_S = 20


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _journal(path: Path) -> list[dict]:
    try:
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    except (OSError, ValueError):
        return []


def _restored(rows: list[dict], event: str | None) -> bool:
    """Whether the journal shows ``event`` over and its restoration finished."""
    if event is None:
        return False
    end = [r for r in rows if r.get("event") == event and r.get("event_ended")]
    if not end:
        return False
    n = end[-1].get("restoration_stages", 0)
    return n == 0 or any(r.get("event") == event and r.get("restored_stage") == n for r in rows)


def run(events: int = 100, keep: bool = False, **_) -> dict:
    work = Path(tempfile.mkdtemp(prefix="gp_bench_responder_"))
    home = work / "home"
    port = 17000 + random.randrange(0, 2000, 100)
    iec = 24000 + random.randrange(0, 2000)
    env = {**os.environ, "GRIDPIPELINE_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home"),
           "GRIDPIPELINE_DUCKDB_PATH": str(home / "gridpipeline.duckdb"), "GRIDPIPELINE_FIELD_PORT": str(port),
           "GRIDPIPELINE_IEC104_PORT": str(iec), "GRIDPIPELINE_RESPONDER_RECOVERY_S": str(RECOVERY_S),
           "GRIDPIPELINE_RESPONDER_RESTORE_INTERVAL_S": str(RESTORE_INTERVAL_S)}
    for k in ("GRIDPIPELINE_LANDING_DIR", "GRIDPIPELINE_REJECTED_DIR", "GRIDPIPELINE_ARCHIVE_DIR",
              "GRIDPIPELINE_LIVE_DUCKDB_PATH", "GRIDPIPELINE_PARTITIONS_START", "GRIDPIPELINE_LEDGER_PATH",
              "GRIDPIPELINE_DECISION_MODES"):
        env.pop(k, None)
    exe = str(Path(sys.executable).parent / "gridpipeline")
    log = open(work / "bench_responder.log", "w")  # noqa: SIM115 - closed in the finally below
    say = lambda m: print(f"bench responder: {m}", file=sys.stderr, flush=True)  # noqa: E731
    events_file = home / "world" / "events.json"
    events_file.parent.mkdir(parents=True, exist_ok=True)
    table = home / "load" / "response_table.json"
    journal = home / "load" / "responses.jsonl"
    t_setup = time.monotonic()
    say(f"starting gridpipeline dev in {home} (IEC 104 on {iec}) and waiting for the response table")
    dev = subprocess.Popen([exe, "dev", "--catch-up", "10m", "--no-history", "--port", "3393"], env=env,
                           cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    starts: list[datetime] = []
    missed = 0
    try:
        deadline = time.monotonic() + 900
        while not table.exists():
            if dev.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the response table never appeared; see {work / 'bench_responder.log'}")
            time.sleep(5)
        time.sleep(10)
        setup_s = time.monotonic() - t_setup
        for k in range(events):
            start = _now() + timedelta(seconds=1)
            tmp = events_file.with_suffix(".tmp")
            tmp.write_text(json.dumps([{**LOSS, "start": start.isoformat()}]))
            os.replace(tmp, events_file)
            starts.append(start)
            n0 = len(_journal(journal))
            t0 = time.monotonic()
            while not any(r.get("stages") for r in _journal(journal)[n0:]) and time.monotonic() - t0 < 20:
                if dev.poll() is not None:
                    raise RuntimeError(f"dev stopped; see {work / 'bench_responder.log'}")
                time.sleep(0.5)
            new = [r for r in _journal(journal)[n0:] if r.get("stages")]  # an under-frequency response
            if not new:
                missed += 1
            event = new[0].get("event") if new else None
            while event is not None and not _restored(_journal(journal), event) and time.monotonic() - t0 < 90:
                time.sleep(0.5)
            time.sleep(SETTLE_S)  # the area's frequency back near 50 Hz before the next loss
            if (k + 1) % 10 == 0:
                say(f"{k + 1}/{events} events")
    finally:
        if dev.poll() is None:
            dev.send_signal(signal.SIGTERM)
            try:
                dev.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(dev.pid, signal.SIGKILL)
        log.close()
    rows = [r for r in _journal(journal) if 1 in r.get("stages", [])]
    later = [r["committed_at"] - r["sent_at"] for r in _journal(journal) if r.get("stages") and 1 not in r["stages"]]
    lat = [r["committed_at"] - r["sent_at"] for r in rows]
    transit = [r["received_at"] - r["sent_at"] for r in rows]
    result = {
        "benchmark": "responder", "events": len(starts), "responses": len(rows), "missed": missed,
        "p50_seconds": round(float(np.percentile(lat, 50)), 3) if lat else None,
        "p99_seconds": round(float(np.percentile(lat, 99)), 3) if lat else None,
        "max_seconds": round(max(lat), 3) if lat else None,
        "iec104_transit_p50_seconds": round(float(np.percentile(transit, 50)), 3) if transit else None,
        "switch_commands_per_response_p50": float(np.median([r["commands_ok"] for r in rows])) if rows else None,
        "later_stages": len(later), "later_stages_p99_seconds": round(float(np.percentile(later, 99)), 3) if later else None,
        "setup_seconds": round(setup_s, 1), "recovery_s": RECOVERY_S,
        "machine": f"{platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}",
    }
    if not keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    else:
        result["work"] = str(work)
    return result
