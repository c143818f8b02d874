"""``gridpipeline bench ingest``: landing files -> validated raw readings -> cleaned telemetry.

On the scale grid (SimBench 1-MVLV-urban-all-0-sw, full sensor placement, 118,890 sensors) the
simulator writes ``--minutes`` of one-minute historian exports for the first ``--sensors`` sensors
(with the default fault mix), untimed. Then, timed:

- ``ingest_seconds``: read every file, validate every row, replace the windows in
  ``telemetry.raw_readings`` / ``quarantine`` / ``ingest_files`` (the ``raw_telemetry`` asset's code);
- ``clean_seconds``: the ``clean_telemetry`` and ``dedup_audit`` models' SQL, compiled by dbt for
  the range, run as dbt's delete+insert would (the ``clean_telemetry`` asset's work without dbt's
  fixed process start-up, which is reported apart as ``dbt_build_seconds``);
- ``bare_append_seconds``: a plain DuckDB append of the same rows from an Arrow table, in the same
  run: the floor this machine sets.

``readings_per_second`` = readings in / (ingest + clean), the end-to-end figure.

``read_only_seconds`` (best of three, after the timed part): listing, footers, Arrow parsing and DuckDB's
scan of the same files into memory, windows side by side, nothing validated or stored. An ingest that
reads the files this way cannot take less, so ``read_only_ratio_to_bare`` (bare append time / read-only
time, per row) bounds its ``ratio_to_bare`` from above whatever validation and cleaning cost.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import psutil

from gridpipeline.project import DBT_PROJECT_DIR
from gridpipeline.settings import PROJECT_ROOT
from gridpipeline.store import connect, ensure_schema
from gridpipeline.telemetry.ingest import ingest_windows, read_windows
from gridpipeline.telemetry.registry import PlacementPolicy, build_registry
from gridpipeline.world.scada import FaultConfig, ScadaSimulator

START = datetime(2026, 11, 20, 12, 0)


def _dbt(args: list[str], db: Path, target: Path) -> float:
    exe = Path(sys.executable).parent / "dbt"
    env = {**os.environ, "GRIDPIPELINE_DUCKDB_PATH": str(db)}
    t0 = time.perf_counter()
    out = subprocess.run([str(exe), *args, "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir",
                          str(DBT_PROJECT_DIR), "--target-path", str(target)], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"dbt {' '.join(args)} failed:\n{out.stdout[-4000:]}")
    return time.perf_counter() - t0


def run(sensors: int = 100_000, minutes: int = 10, keep: bool = False, **_) -> dict:
    from gridpipeline.world.model import load_world

    if minutes % 5:
        raise ValueError("--minutes must be a multiple of 5 (whole partitions)")
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-", dir=PROJECT_ROOT / "var" if (PROJECT_ROOT / "var").exists() else None))
    try:
        world = load_world("scale", cache_dir=PROJECT_ROOT / "var" / "worlds" / "scale")
        reg = build_registry(world.net, world.zones, PlacementPolicy.full())
        reg = reg[reg.sensor_id <= sensors].reset_index(drop=True)
        end = START + timedelta(minutes=minutes)
        sim = ScadaSimulator(world, reg, work / "landing", faults=FaultConfig(), seed=0, export_interval_s=60)
        t0 = time.perf_counter()
        sim.run(START, end)
        simulate_seconds = time.perf_counter() - t0
        db, target = work / "bench.duckdb", work / "dbt_target"
        with connect(db) as con:
            ensure_schema(con)
            con.execute("INSERT INTO telemetry.sensors SELECT * FROM reg")
        _dbt(["seed"], db, target)
        vars_ = json.dumps({"window_start": f"{START:%Y-%m-%d %H:%M:%S}", "window_end": f"{end:%Y-%m-%d %H:%M:%S}"})
        now = end + timedelta(minutes=30)

        # First pass through the real pipeline code and a real `dbt build` (creates the tables).
        with connect(db) as con:
            ingest_windows(con, work / "landing", work / "rejected", START, end, now=now)
        dbt_build_seconds = _dbt(["build", "--select", "clean_telemetry", "dedup_audit", "--vars", vars_], db, target)
        _dbt(["compile", "--select", "clean_telemetry", "dedup_audit", "--vars", vars_], db, target)
        compiled = {m: next(target.rglob(f"compiled/**/{m}.sql")).read_text() for m in ("clean_telemetry", "dedup_audit")}

        # Timed, warm: a re-run of the range replaces exactly its rows, as a partition re-run does.
        with connect(db) as con:
            t0 = time.perf_counter()
            rep = ingest_windows(con, work / "landing", work / "rejected", START, end, now=now)
            t1 = time.perf_counter()
            for model, sql in compiled.items():
                con.execute("BEGIN TRANSACTION")
                con.execute(f"DELETE FROM clean.{model} WHERE ts >= ? AND ts < ?", [START, end])
                con.execute(f"INSERT INTO clean.{model} BY NAME {sql}")
                con.execute("COMMIT")
            t2 = time.perf_counter()
            clean_rows = con.execute("SELECT count(*) FROM clean.clean_telemetry WHERE ts >= ? AND ts < ?",
                                     [START, end]).fetchall()[0][0]
            arrow = con.sql("SELECT * FROM telemetry.raw_readings").to_arrow_table()
            con.execute("CREATE TABLE bare AS SELECT * FROM arrow LIMIT 0")
            t3 = time.perf_counter()
            con.execute("INSERT INTO bare SELECT * FROM arrow")
            bare = time.perf_counter() - t3
            # Reading alone (best of 3): what reading the files costs under any validation and store.
            read = []
            for _ in range(3):
                t4 = time.perf_counter()
                read_rows = read_windows(con, work / "landing", work / "rejected", START, end)
                read.append(time.perf_counter() - t4)
            read_only = min(read)
        s = rep.summary()
        total = t2 - t0
        return {
            "benchmark": "ingest",
            "sensors": len(reg),
            "minutes": minutes,
            "files": s["files"],
            "readings_in": s["rows_in"],
            "readings_stored": s["rows_stored"],
            "readings_quarantined": s["rows_quarantined"],
            "clean_rows": clean_rows,
            "ingest_seconds": round(t1 - t0, 3),
            "clean_seconds": round(t2 - t1, 3),
            "readings_per_second": round(s["rows_in"] / total),
            "bare_append_seconds": round(bare, 4),
            "bare_append_readings_per_second": round(arrow.num_rows / bare),
            "ratio_to_bare": round((s["rows_in"] / arrow.num_rows) * bare / total, 3) if total else None,
            "read_only_seconds": round(read_only, 3),
            "read_only_readings_per_second": round(read_rows / read_only),
            # bare append / reading alone: ratio_to_bare stays below this, whatever validation costs
            "read_only_ratio_to_bare": round((read_rows / arrow.num_rows) * bare / read_only, 3),
            "dbt_build_seconds": round(dbt_build_seconds, 2),
            "simulate_seconds": round(simulate_seconds, 2),
            "machine": f"{platform.machine()} {psutil.cpu_count()} cpu {round(psutil.virtual_memory().total / 2**30)} GiB",
        }
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
