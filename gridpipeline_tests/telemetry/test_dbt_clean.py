"""End-to-end test of the dbt project: real DuckDB file, real `dbt seed` + `dbt build`.

A small hand-made registry and set of readings covers every rule of clean_telemetry (duplicates, units,
range, spike, stuck, flatline, drift, late arrival, short and long gaps, silent sensor, leading gap,
discrete states, unknown unit, a 15-minute meter). The window 00:10-00:15 is built and checked row by
row, re-built (identical rows, no duplicates), then the adjacent window 00:15-00:20 is built and the
first window's rows must be untouched; finally a backfill over 00:10-00:20 must reproduce both windows.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from gridpipeline.store import connect, ensure_schema
from gridpipeline.telemetry.quality import QualityBit as Q

PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt_project"
DBT = Path(sys.executable).parent / "dbt"
T0 = datetime(2024, 1, 1, 0, 0, 0)
W1 = (T0 + timedelta(minutes=10), T0 + timedelta(minutes=15))
W2 = (T0 + timedelta(minutes=15), T0 + timedelta(minutes=20))

# sensor_id, kind, zone, unit, nominal, interval_s
SENSORS = [
    (1, "p_inj", "A", "MW", 1.0, 60),  # duplicates (agreeing, disagreeing, tie on arrival) + kW
    (2, "v_mag", "B", "kV", 20.0, 60),  # questionable and invalid range
    (3, "p_inj", "A", "MW", 2.0, 60),  # spike
    (4, "p_branch", "A", "MW", 10.0, 60),  # stuck
    (5, "v_mag", "Z", "kV", 20.0, 60),  # zone Z peers ...
    (6, "v_mag", "Z", "kV", 20.0, 60),
    (7, "v_mag", "Z", "kV", 20.0, 60),
    (8, "v_mag", "Z", "kV", 20.0, 60),  # ... drifting +0.03 pu
    (9, "v_mag", "Z", "kV", 20.0, 60),  # ... flatline zeros
    (10, "p_inj", "A", "MW", 1.0, 60),  # late arrival
    (11, "p_inj", "A", "MW", 1.0, 60),  # 1-slot gap -> interpolated
    (12, "p_inj", "A", "MW", 1.0, 60),  # 3-slot gap (180 s) -> invalid
    (13, "p_inj", "A", "MW", 1.0, 60),  # 2-slot gap (120 s) -> interpolated
    (14, "p_inj", "A", "MW", 1.0, 60),  # silent: no reading at all
    (15, "i_branch", "A", "A", 400.0, 60),  # first reading inside the window: leading gap
    (16, "switch_status", "A", "state", 1.0, 60),  # 0.5 is not a state
    (17, "p_inj", "A", "MW", 1.0, 60),  # unknown unit
    (18, "energy", "A", "kWh", 50.0, 900),  # 15-minute meter, MWh export
]


@dataclass
class Reading:
    sensor_id: int
    minute: int
    value: float
    unit: str | None = None  # default: the sensor's canonical unit
    arrived: datetime | None = None  # default: slot + 30 s
    file_id: int | None = None  # default: 100 + minute


def _readings() -> list[Reading]:
    r: list[Reading] = []
    # 1: duplicates and kW. Base 0.50/0.51/0.52 cycling, W2 readings too (for the adjacent window).
    for m in range(5, 20):
        if m in (10, 11, 12, 13):
            continue
        r.append(Reading(1, m, 0.50 + 0.01 * (m % 3)))
    r += [
        Reading(1, 10, 0.51, file_id=110),
        Reading(1, 10, 0.51, arrived=T0 + timedelta(minutes=14), file_id=120),
        Reading(1, 11, 0.52, arrived=T0 + timedelta(minutes=11, seconds=30), file_id=111),
        Reading(1, 11, 0.53, arrived=T0 + timedelta(minutes=11, seconds=30), file_id=150),
        Reading(1, 12, 0.50, file_id=112),
        Reading(1, 12, 0.55, arrived=T0 + timedelta(minutes=13, seconds=40), file_id=113),
        Reading(1, 13, 510.0, unit="kW"),
    ]
    # 2: range. 1.105 pu twice (questionable, no spike, no rate), 1.225 pu (invalid), back to 1.0.
    for m, v in zip(range(5, 15), [20.0, 20.02, 20.0, 20.02, 20.0, 20.02, 22.1, 22.1, 24.5, 20.0]):
        r.append(Reading(2, m, v))
    # 3: spike of 2.0 MW (1.0 pu) between 0.60 and 0.61 MW.
    for m in range(5, 15):
        r.append(Reading(3, m, 2.0 if m == 12 else 0.60 + 0.01 * (m % 2)))
    # 4: stuck at 4.20 for minutes 8..13 (6 samples).
    for m, v in zip(range(5, 15), [4.10, 4.15, 4.12, 4.2, 4.2, 4.2, 4.2, 4.2, 4.2, 4.25]):
        r.append(Reading(4, m, v))
    # 5..9: zone Z voltages rising 0.01 kV/min; 8 is 0.6 kV (0.03 pu) high; 9 reads 0 at 12 and 13.
    for m in range(5, 15):
        base = 20.0 + 0.01 * m
        r += [
            Reading(5, m, base),
            Reading(6, m, base + 0.004),
            Reading(7, m, base - 0.004),
            Reading(8, m, base + 0.6),
            Reading(9, m, 0.0 if m in (12, 13) else base + 0.002),
        ]
    # 10: minute 11 arrives at 00:16:30 (late), minute 12 exactly at the limit 00:16:00 (not late).
    for m in range(5, 15):
        arrived = {11: T0 + timedelta(minutes=16, seconds=30), 12: T0 + timedelta(minutes=16)}.get(m)
        r.append(Reading(10, m, 0.30 + 0.01 * (m % 2), arrived=arrived))
    # 11/12/13: linear ramps with missing minutes.
    for sid, missing in ((11, {12}), (12, {11, 12, 13}), (13, {11, 12})):
        for m in range(5, 15):
            if m not in missing:
                r.append(Reading(sid, m, 0.20 + 0.02 * m))
    # 15: first reading at minute 12.
    for m in (12, 13, 14):
        r.append(Reading(15, m, 200.0 + m))
    # 16: switch states.
    for m in range(5, 15):
        r.append(Reading(16, m, 0.5 if m == 12 else 1.0))
    # 17: unknown unit at minute 12.
    for m in range(5, 15):
        r.append(Reading(17, m, 0.40 + 0.01 * (m % 2), unit="furlong" if m == 12 else None))
    # 18: cumulative meter, 00:00 in kWh, 00:15 in MWh.
    r += [Reading(18, 0, 1000.0), Reading(18, 15, 1.0105, unit="MWh")]
    return r


def _vars(window: tuple[datetime, datetime]) -> str:
    return json.dumps(
        {"window_start": f"{window[0]:%Y-%m-%d %H:%M:%S}", "window_end": f"{window[1]:%Y-%m-%d %H:%M:%S}"}
    )


def _dbt(args: list[str], db: Path, work: Path) -> None:
    env = {**os.environ, "GRIDPIPELINE_DUCKDB_PATH": str(db), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    cmd = [
        str(DBT),
        *args,
        "--project-dir",
        str(PROJECT_DIR),
        "--profiles-dir",
        str(PROJECT_DIR),
        "--target-path",
        str(work / "target"),
        "--log-path",
        str(work / "logs"),
    ]
    out = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{' '.join(args)} failed:\n{out.stdout[-6000:]}\n{out.stderr[-3000:]}"


def _rows(db: Path, where: str = "true") -> list[tuple]:
    with connect(db, read_only=True) as con:
        return con.execute(
            "SELECT sensor_id, ts, value, raw_value, raw_unit, unit, quality, quality_bits, arrived_at, n_copies "
            f"FROM clean.clean_telemetry WHERE {where} ORDER BY sensor_id, ts"
        ).fetchall()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("dbt_clean")
    db = work / "store.duckdb"
    units = {s[0]: s[3] for s in SENSORS}
    with connect(db) as con:
        ensure_schema(con)
        con.executemany(
            "INSERT INTO telemetry.sensors VALUES (?, ?, ?, 'bus', ?, NULL, ?, ?, 'rtu', ?, ?, ?, ?)",
            [
                (sid, f"s{sid}", kind, sid, sid, zone, unit, nominal, nominal * 0.005, iv)
                for sid, kind, zone, unit, nominal, iv in SENSORS
            ],
        )
        con.executemany(
            "INSERT INTO telemetry.raw_readings VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    x.sensor_id,
                    T0 + timedelta(minutes=x.minute),
                    x.value,
                    x.unit or units[x.sensor_id],
                    x.arrived or T0 + timedelta(minutes=x.minute, seconds=30),
                    x.file_id if x.file_id is not None else 100 + x.minute,
                )
                for x in _readings()
            ],
        )
    _dbt(["seed"], db, work)
    _dbt(["build", "--select", "clean_telemetry+", "--vars", _vars(W1)], db, work)
    first = _rows(db)
    with connect(db, read_only=True) as con:
        audit = con.execute(
            "SELECT sensor_id, ts, n_copies, kept_value, kept_arrived_at, kept_file_id, dropped_values, "
            "dropped_arrived_at, dropped_file_ids, values_differ FROM clean.dedup_audit ORDER BY sensor_id, ts"
        ).fetchall()
    _dbt(["build", "--select", "clean_telemetry+", "--vars", _vars(W1)], db, work)
    rerun = _rows(db)
    _dbt(["build", "--select", "clean_telemetry+", "--vars", _vars(W2)], db, work)
    after_w2 = _rows(db)
    w1_after_w2 = _rows(db, f"ts < TIMESTAMP '{W1[1]}'")
    w2 = _rows(db, f"ts >= TIMESTAMP '{W2[0]}'")
    # a backfill over both windows must reproduce them (OLD_DATA is judged per 5-minute partition)
    _dbt(["build", "--select", "clean_telemetry+", "--vars", _vars((W1[0], W2[1]))], db, work)
    return {
        "backfill": _rows(db),
        "before_backfill": after_w2,
        "db": db,
        "first": first,
        "audit": audit,
        "rerun": rerun,
        "after_w2": w1_after_w2,
        "w2": w2,
    }


def _m(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


def _expected_w1() -> dict[tuple[int, int], tuple[str, int, float | None]]:
    """(sensor_id, minute) -> (quality, bits, value) for every row of window 1."""
    exp: dict[tuple[int, int], tuple[str, int, float | None]] = {}
    raw = {(x.sensor_id, x.minute): x.value for x in _readings()}  # last copy listed wins here
    for sid, *_, iv in SENSORS:
        if iv != 60:
            continue  # the 15-minute meter has no slot in 00:10-00:15
        for m in range(10, 15):
            exp[(sid, m)] = ("good", 0, raw[(sid, m)]) if (sid, m) in raw else ("invalid", int(Q.GAP), None)
    dup, conv = int(Q.DUPLICATE), int(Q.UNIT_CONVERTED)
    exp.update(
        {
            (1, 10): ("good", dup, 0.51),
            (1, 11): ("good", dup, 0.53),
            (1, 12): ("good", dup, 0.55),
            (1, 13): ("good", conv, 0.51),
            (2, 11): ("questionable", int(Q.OUT_OF_RANGE), 22.1),
            (2, 12): ("questionable", int(Q.OUT_OF_RANGE), 22.1),
            (2, 13): ("invalid", int(Q.OUT_OF_RANGE), None),
            (3, 12): ("substituted", int(Q.SPIKE | Q.INTERPOLATED), 0.61),
            (10, 11): ("questionable", int(Q.OLD_DATA), 0.31),
            (11, 12): ("substituted", int(Q.GAP | Q.INTERPOLATED), 0.44),
            (13, 11): ("substituted", int(Q.GAP | Q.INTERPOLATED), 0.42),
            (13, 12): ("substituted", int(Q.GAP | Q.INTERPOLATED), 0.44),
            (16, 12): ("invalid", int(Q.OUT_OF_RANGE), None),
            (17, 12): ("invalid", conv, None),
            # 9: zeros while zone Z is live; the drop to 0 is also far too fast (vs minute 11 both times)
            (9, 12): ("questionable", int(Q.FLATLINE | Q.RATE_OF_CHANGE), 0.0),
            (9, 13): ("questionable", int(Q.FLATLINE | Q.RATE_OF_CHANGE), 0.0),
        }
    )
    for m in range(10, 14):
        exp[(4, m)] = ("questionable", int(Q.STUCK), 4.2)
    for m in range(10, 15):
        exp[(8, m)] = ("questionable", int(Q.DRIFT), 20.0 + 0.01 * m + 0.6)
    return exp


def test_quality_bits_match_python():
    text = (PROJECT_DIR / "macros" / "quality.sql").read_text()
    in_sql = {name: int(v) for name, v in re.findall(r"'([A-Z_]+)': (\d+)", text)}
    assert in_sql == {b.name: int(b) for b in Q}


def test_window_rows_exact(store):
    rows = store["first"]
    got = {(r[0], int((r[1] - T0).total_seconds() // 60)): r for r in rows}
    assert len(got) == len(rows), "duplicate (sensor_id, ts)"
    expected = _expected_w1()
    assert set(got) == set(expected)
    for key, (quality, bits, value) in expected.items():
        row = got[key]
        assert (row[6], row[7]) == (quality, bits), f"{key}: {row}"
        if value is None:
            assert row[2] is None, f"{key}: {row}"
        else:
            assert row[2] == pytest.approx(value, rel=1e-9, abs=1e-12), f"{key}: {row}"


def test_row_details(store):
    got = {(r[0], int((r[1] - T0).total_seconds() // 60)): r for r in store["first"]}
    # columns: sensor_id, ts, value, raw_value, raw_unit, unit, quality, quality_bits, arrived_at, n_copies
    assert got[(1, 12)][3:] == (0.55, "MW", "MW", "good", int(Q.DUPLICATE), _m(13) + timedelta(seconds=40), 2)
    assert got[(1, 11)][8:] == (_m(11) + timedelta(seconds=30), 2)  # tie on arrival: file 150 won
    assert got[(1, 10)][8:] == (_m(14), 2)  # agreeing copies: latest kept
    assert got[(1, 13)][3:6] == (510.0, "kW", "MW")
    assert got[(1, 14)][9] == 1
    assert got[(2, 13)][2:5] == (None, 24.5, "kV")  # invalid keeps the raw value
    assert got[(3, 12)][3] == 2.0  # spike: raw kept, value replaced
    assert got[(10, 11)][8] == _m(16) + timedelta(seconds=30)
    assert got[(10, 12)][6:8] == ("good", 0)  # arrived exactly at the limit
    assert got[(11, 12)][3:] == (None, None, "MW", "substituted", int(Q.GAP | Q.INTERPOLATED), None, 0)
    assert [got[(14, m)][5:] for m in range(10, 15)] == [("MW", "invalid", int(Q.GAP), None, 0)] * 5
    assert [got[(15, m)][6] for m in range(10, 15)] == ["invalid", "invalid", "good", "good", "good"]
    assert got[(17, 12)][3:5] == (0.4, "furlong")
    assert got[(16, 13)][2] == 1.0  # repeated states are not stuck
    assert got[(5, 12)][6:8] == ("good", 0)  # peers of a drifting sensor


def test_dedup_audit(store):
    a = {(r[0], int((r[1] - T0).total_seconds() // 60)): r[2:] for r in store["audit"]}
    assert set(a) == {(1, 10), (1, 11), (1, 12)}
    # n_copies, kept_value, kept_arrived_at, kept_file_id, dropped_values, dropped_arrived_at, dropped_file_ids, values_differ
    assert a[(1, 10)] == (2, 0.51, _m(14), 120, [0.51], [_m(10) + timedelta(seconds=30)], [110], False)
    assert a[(1, 11)] == (
        2,
        0.53,
        _m(11) + timedelta(seconds=30),
        150,
        [0.52],
        [_m(11) + timedelta(seconds=30)],
        [111],
        True,
    )
    assert a[(1, 12)] == (
        2,
        0.55,
        _m(13) + timedelta(seconds=40),
        113,
        [0.50],
        [_m(12) + timedelta(seconds=30)],
        [112],
        True,
    )


def test_rerun_is_identical(store):
    assert store["rerun"] == store["first"]


def test_adjacent_window_leaves_first_untouched(store):
    assert store["after_w2"] == store["first"]
    w2 = {(r[0], int((r[1] - T0).total_seconds() // 60)): r for r in store["w2"]}
    # every 1-minute sensor has 5 rows, the meter one (00:15); nothing outside 00:15-00:20
    assert len(w2) == len(store["w2"]) == 17 * 5 + 1
    assert all(15 <= m < 20 for _, m in w2)
    meter = w2[(18, 15)]
    assert meter[2] == pytest.approx(1010.5) and meter[4:8] == ("MWh", "kWh", "good", int(Q.UNIT_CONVERTED))
    assert [w2[(1, m)][6] for m in range(15, 20)] == ["good"] * 5
    # sensor 3's last reading is at 00:14 and nothing follows: no right anchor, the gaps stay invalid
    assert [w2[(3, m)][6:8] for m in range(15, 20)] == [("invalid", int(Q.GAP))] * 5


def test_backfill_range_reproduces_partitions(store):
    assert store["backfill"] == store["before_backfill"]
    late = [r for r in store["backfill"] if r[0] == 10 and r[1] == _m(11)]
    assert late[0][6:8] == ("questionable", int(Q.OLD_DATA))
