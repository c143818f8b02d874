"""Benchmark clean_telemetry on synthetic data (default: 100k sensors x 10 one-minute slots = 1M readings).

Usage (from the repository root)::

    uv run python dbt_project/scripts/bench_synthetic.py --db /tmp/gp_bench.duckdb [--sensors 100000 --slots 10]

Creates the telemetry tables with gridpipeline.store's DDL, fills them with readings carrying every defect
the model handles (duplicates, kW/V units, spikes, stuck runs, gaps, late arrivals), runs
``dbt seed`` and ``dbt build`` for a window covering all slots (wall time printed), then re-runs the
compiled SELECT of clean_telemetry on 2 threads a few times and prints the best time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from gridpipeline.store import connect, ensure_schema

PROJECT_DIR = Path(__file__).resolve().parents[1]
T0 = datetime(2024, 3, 1, 12, 0, 0)

KINDS = (  # kind, unit, nominal, share (per 20 sensors)
    ("v_mag", "kV", 20.0, 6),
    ("p_inj", "MW", 1.0, 4),
    ("q_inj", "Mvar", 1.0, 2),
    ("p_branch", "MW", 10.0, 2),
    ("q_branch", "Mvar", 10.0, 1),
    ("i_branch", "A", 300.0, 2),
    ("switch_status", "state", 1.0, 1),
    ("soc", "%", 100.0, 1),
    ("frequency", "Hz", 50.0, 1),
)


def fill(db: Path, n_sensors: int, n_slots: int) -> None:
    kind_rows = [k for k in KINDS for _ in range(k[3])]
    assert len(kind_rows) == 20
    kinds_sql = ", ".join(f"({i}, '{k}', '{u}', {n})" for i, (k, u, n, _) in enumerate(kind_rows))
    with connect(db) as con:
        ensure_schema(con)
        con.execute("DELETE FROM telemetry.sensors")
        con.execute("DELETE FROM telemetry.raw_readings")
        con.execute(f"""
            INSERT INTO telemetry.sensors
            SELECT i::INTEGER, 'sensor_' || i, k.kind, 'bus', i::INTEGER, NULL, (i // 5)::INTEGER,
                   'zone_' || (i // 100), 'rtu_' || (i // 1000), k.unit, k.nominal, k.nominal * 0.005, 60
            FROM range({n_sensors}) t(i)
            JOIN (VALUES {kinds_sql}) k(m, kind, unit, nominal) ON k.m = i % 20
        """)
        # One reading per sensor and slot; ~1% of the rows are moved onto the previous slot (a duplicate
        # there, a gap here), 0.5% exported in kW/V/kvar/kA, 0.2% spikes, 0.5% late, every 500th sensor stuck.
        con.execute(f"""
            INSERT INTO telemetry.raw_readings
            WITH base AS (
                SELECT s.sensor_id, s.kind, s.unit, s.nominal, k,
                       hash(s.sensor_id * 131 + k) % 1000 AS h,
                       CASE s.kind
                           WHEN 'switch_status' THEN 1.0
                           WHEN 'soc' THEN 50 + k * 0.1
                           WHEN 'frequency' THEN 50 + 0.02 * sin(k + s.sensor_id)
                           WHEN 'v_mag' THEN s.nominal * (1.0 + 0.01 * sin(k / 3.0 + s.sensor_id % 7))
                           ELSE s.nominal * 0.5 * (1 + 0.2 * sin(k / 2.0 + s.sensor_id))
                       END + CASE WHEN s.kind IN ('switch_status') THEN 0
                                  ELSE s.sigma * (random() - 0.5) END AS v
                FROM telemetry.sensors s, range({n_slots}) r(k)
            )
            SELECT sensor_id,
                   TIMESTAMP '{T0:%Y-%m-%d %H:%M:%S}' + to_seconds(60 * (CASE WHEN h < 10 AND k > 0 THEN k - 1 ELSE k END)),
                   CASE WHEN sensor_id % 500 = 0 THEN nominal
                        WHEN h BETWEEN 20 AND 21 AND kind NOT IN ('switch_status') THEN v * 1.5
                        WHEN h BETWEEN 30 AND 34 AND unit IN ('MW', 'Mvar', 'kV', 'A')
                            THEN v * (CASE WHEN unit = 'A' THEN 0.001 ELSE 1000 END)
                        ELSE v END,
                   CASE WHEN h BETWEEN 30 AND 34 THEN
                        CASE unit WHEN 'MW' THEN 'kW' WHEN 'Mvar' THEN 'kvar' WHEN 'kV' THEN 'V' WHEN 'A' THEN 'kA'
                                  ELSE unit END
                        ELSE unit END,
                   TIMESTAMP '{T0:%Y-%m-%d %H:%M:%S}' + to_seconds(60 * k + 20 + CASE WHEN h BETWEEN 40 AND 44 THEN 900 ELSE 0 END),
                   (k * 10 + sensor_id // 10000)::BIGINT
            FROM base
        """)
        n = con.execute("SELECT count(*) FROM telemetry.raw_readings").fetchone()[0]
        print(f"filled {db}: {n_sensors} sensors, {n} raw readings")


def dbt(args: list[str], env: dict[str, str], target_path: Path) -> float:
    exe = Path(sys.executable).parent / "dbt"
    cmd = [
        str(exe),
        *args,
        "--project-dir",
        str(PROJECT_DIR),
        "--profiles-dir",
        str(PROJECT_DIR),
        "--target-path",
        str(target_path),
        "--log-path",
        str(target_path.parent / "logs"),
    ]
    t = time.perf_counter()
    out = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if out.returncode != 0:
        print(out.stdout[-5000:], out.stderr[-3000:])
        raise SystemExit(f"dbt {args[0]} failed")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", type=Path, default=Path(tempfile.gettempdir()) / "gp_bench.duckdb")
    ap.add_argument("--sensors", type=int, default=100_000)
    ap.add_argument("--slots", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-fill", action="store_true")
    ap.add_argument(
        "--window-minutes",
        type=int,
        default=0,
        help="window length for the dbt build (default: all slots); the rest is lookback context",
    )
    a = ap.parse_args()

    if not a.no_fill:
        for p in (a.db, a.db.with_suffix(".duckdb.wal")):
            p.unlink(missing_ok=True)
        fill(a.db, a.sensors, a.slots)
    end = T0 + timedelta(minutes=a.slots)
    start = end - timedelta(minutes=a.window_minutes) if a.window_minutes else T0
    dbt_vars = json.dumps(
        {"window_start": f"{start:%Y-%m-%d %H:%M:%S}", "window_end": f"{end:%Y-%m-%d %H:%M:%S}"}
    )
    env = {**os.environ, "GRIDPIPELINE_DUCKDB_PATH": str(a.db)}
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "target"
        print(f"dbt seed: {dbt(['seed', '--vars', dbt_vars], env, target):.2f} s")
        t_build = dbt(["build", "--select", "clean_telemetry+", "--vars", dbt_vars], env, target)
        print(f"dbt build --select clean_telemetry+ (first build, incl. tests): {t_build:.2f} s")
        t_build = dbt(["build", "--select", "clean_telemetry+", "--vars", dbt_vars], env, target)
        print(f"dbt build --select clean_telemetry+ (incremental re-run, incl. tests): {t_build:.2f} s")
        dbt(["compile", "--select", "clean_telemetry", "--vars", dbt_vars], env, target)
        sql = next(target.rglob("compiled/**/clean_telemetry.sql")).read_text()

    with connect(a.db, read_only=True) as con:
        con.execute(f"SET threads = {a.threads}")
        n = con.execute(f"SELECT count(*) FROM ({sql})").fetchone()[0]
        times, cpu = [], []
        for _ in range(a.repeat):
            r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            con.execute(f"CREATE OR REPLACE TEMP TABLE bench_out AS {sql}")
            times.append(time.perf_counter() - t)
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            cpu.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
        print(
            f"compiled clean_telemetry SQL -> temp table, {n} rows, threads={a.threads}: wall best "
            f"{min(times):.3f} s, median {sorted(times)[len(times) // 2]:.3f} s; CPU (all threads) best "
            f"{min(cpu):.3f} s (load average {os.getloadavg()[0]:.2f})"
        )
        print(con.execute("SELECT quality, count(*) FROM bench_out GROUP BY ALL ORDER BY ALL").fetchall())
        print(
            con.execute(
                "SELECT quality_bits, count(*) FROM bench_out GROUP BY ALL ORDER BY 2 DESC LIMIT 12"
            ).fetchall()
        )


if __name__ == "__main__":
    main()
