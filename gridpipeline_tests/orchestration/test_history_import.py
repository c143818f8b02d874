"""`gridpipeline history` on a new store: the archive goes through ingestion in chunks, newest first,
the partitions start on the history's first day, and a second call skips what is already in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb


def test_history_import_in_chunks_sets_the_epoch_and_resumes(tmp_path):
    home = tmp_path / "gp"
    env = {**os.environ, "GRIDPIPELINE_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home"),
           "GRIDPIPELINE_DUCKDB_PATH": str(home / "store.duckdb")}
    for k in ("GRIDPIPELINE_LANDING_DIR", "GRIDPIPELINE_REJECTED_DIR", "GRIDPIPELINE_ARCHIVE_DIR",
              "GRIDPIPELINE_PARTITIONS_START"):
        env.pop(k, None)
    exe = Path(sys.executable).parent / "gridpipeline"
    cmd = [str(exe), "history", "--days", "0.25", "--days-per-run", "0.125", "--end", "2026-11-20T00:00",
           "--no-train"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-4000:]
    out = json.loads(first.stdout.strip().splitlines()[-1])
    assert out["success"] and out["runs"] == 2 and out["imported"] == 2 and out["skipped"] == 0
    assert out["readings"] > 0
    # newest chunk first, with progress lines
    lines = [ln for ln in first.stderr.splitlines() if ln.startswith("history import: run")]
    assert [ln[:47] for ln in lines] == ["history import: run 1/2 (2026-11-19 21:00..2026",
                                         "history import: run 2/2 (2026-11-19 18:00..2026"]
    assert (home / "partitions_start").read_text().strip() == "2026-11-19"

    con = duckdb.connect(str(home / "store.duckdb"), read_only=True)
    lo, hi, n = con.execute("SELECT min(ts), max(ts), count(*) FROM telemetry.raw_readings").fetchone()
    windows = con.execute("SELECT count(DISTINCT window_start) FROM telemetry.ingest_files").fetchone()[0]
    con.close()
    assert n == out["readings"]
    assert str(lo) >= "2026-11-19 18:00" and str(hi) < "2026-11-20 00:05"
    assert windows == 72  # 6 h of 5-minute windows, every one recorded

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-4000:]
    out2 = json.loads(again.stdout.strip().splitlines()[-1])
    assert out2["imported"] == 0 and out2["skipped"] == 2
