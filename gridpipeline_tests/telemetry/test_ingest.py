"""Ingestion of landing files: every bad input lands in quarantine with its reason, counts reconcile,
re-runs replace exactly the window's rows."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridpipeline.common import landing as lz
from gridpipeline.store import connect, ensure_schema
from gridpipeline.telemetry.ingest import ingest_windows

W = datetime(2026, 11, 20, 10, 0)
NOW = datetime(2026, 11, 20, 10, 6)
SENSORS = pd.DataFrame({
    "sensor_id": [1, 2, 3, 4], "name": ["V:a", "P:l1", "Q:l1", "S:1"],
    "kind": ["v_mag", "p_inj", "q_inj", "switch_status"], "element_type": ["bus", "load", "load", "switch"],
    "element_id": [0, 0, 0, 0], "terminal": [None, None, None, "l"], "bus": [0, 0, 0, 0], "zone": ["MV"] * 4,
    "source": ["RTU_A"] * 4, "unit": ["kV", "MW", "Mvar", "state"], "nominal": [20.0, 1.0, 1.0, 1.0],
    "sigma": [0.1, 0.01, 0.01, 0.0], "interval_s": [30, 30, 30, 30],
})


def _db(con):
    ensure_schema(con)
    con.execute("INSERT INTO telemetry.sensors SELECT * FROM SENSORS")


def _write(path, table: pa.Table, arrived: datetime, fmt="parquet"):
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        pq.write_table(table, path)
    else:
        path.write_text(table)
    t = arrived.replace(tzinfo=UTC).timestamp()
    os.utime(path, (t, t))


def _landing(home):
    d = lz.window_dir(home / "landing", W)
    good = pa.table({
        "sensor_id": pa.array([1, 2, 1, 2], pa.int32()),
        "ts": pa.array([W, W, W + timedelta(seconds=30), W + timedelta(seconds=30)], pa.timestamp("ms", tz="UTC")),
        "value": [20.1, 0.5, 20.2, 0.51], "unit": ["kV", "MW", "kV", "MW"],
    })
    _write(d / lz.file_name("RTU_A", W, "parquet"), good, W + timedelta(seconds=31))
    csv = "\n".join([
        "sensor_id,ts,value,unit",
        "1,2026-11-20T10:01:00Z,n/a,kV",          # bad_value_type
        "1,2026-11-20T10:01:30Z,nan,kV",           # nan_value
        "2,2026-11-20T10:01:00Z,inf,MW",           # infinite_value
        "999,2026-11-20T10:01:00Z,1.0,MW",         # unknown_sensor
        "2,2026-11-30T10:01:00Z,1.0,MW",           # timestamp_in_future
        "2,2026-11-20T09:50:00Z,1.0,MW",           # outside_partition
        "1,2026-11-20T10:01:00Z,-5,kV",            # impossible_value
        "2,2026-11-20T10:01:30Z,480,kW",           # stored (dbt converts kW -> MW)
        "3,2026-11-20T10:01:30Z,0.2,furlong",      # unknown_unit
        ",2026-11-20T10:01:30Z,0.2,Mvar",          # missing_sensor_id
        "3,yesterday,0.2,Mvar",                    # bad_timestamp
        "4,2026-11-20T10:01:30Z,0.5,state",        # stored: inside [0, 1], plausibility is dbt's job
        "4,2026-11-20T10:02:00Z,7,state",          # impossible_value
        "2019,2026-11-20T10:02:00Z,1,MW",          # unknown_sensor
        "x1,2026-11-20T10:02:00Z,1,MW",            # bad_sensor_id
        "2,2026-11-20T10:02:00Z,,MW",              # missing_value
    ]) + "\n"
    _write(d / lz.file_name("RTU_B", W + timedelta(minutes=1), "csv"), csv, W + timedelta(minutes=1, seconds=31), "csv")
    corrupt = d / lz.file_name("RTU_C", W, "parquet")
    corrupt.write_bytes(b"PAR1\x00\x01this is not a parquet file")
    no_value = pa.table({"sensor_id": pa.array([1, 2], pa.int32()),
                         "ts": pa.array([W, W], pa.timestamp("ms", tz="UTC")), "val": [1.0, 2.0]})
    _write(d / lz.file_name("RTU_D", W, "parquet"), no_value, W + timedelta(minutes=9))
    return d


EXPECTED_REASONS = {
    "bad_value_type": 1, "nan_value": 1, "infinite_value": 1, "unknown_sensor": 2, "timestamp_in_future": 1,
    "outside_partition": 1, "impossible_value": 2, "unknown_unit": 1, "missing_sensor_id": 1,
    "bad_timestamp": 1, "bad_sensor_id": 1, "missing_value": 1, "missing_columns:value": 2,
}


def test_every_bad_input_is_quarantined_with_its_reason(tmp_path):
    _landing(tmp_path)
    with connect(tmp_path / "s.duckdb") as con:
        _db(con)
        rep = ingest_windows(con, tmp_path / "landing", tmp_path / "rejected", W, W + lz.WINDOW, now=NOW)
        s = rep.summary()
        assert s["files"] == 3 and s["files_rejected"] == 1
        assert s["rows_in"] == 4 + 16 + 2
        assert s["rows_stored"] == 4 + 2          # the four good rows, the kW row and the 0.5 switch row
        assert s["rows_in"] == s["rows_stored"] + s["rows_quarantined"]
        assert rep.reasons == EXPECTED_REASONS
        q = con.execute("SELECT reason, value, file_path FROM telemetry.quarantine ORDER BY reason").df()
        assert (q.file_path.notna()).all()
        assert set(q[q.reason == "bad_value_type"].value) == {"n/a"}
        files = con.execute("SELECT status, error, rows_in, rows_stored, rows_quarantined FROM telemetry.ingest_files "
                            "ORDER BY source").df()
        assert list(files.status) == ["ok", "ok", "rejected", "ok"]
        assert "ArrowInvalid" in files.error[2] or "Parquet" in files.error[2]
        ok = files[files.status == "ok"]
        assert (ok.rows_in == ok.rows_stored + ok.rows_quarantined).all()
    # The unreadable file was moved out of the landing zone, with a note why.
    rejected = lz.window_dir(tmp_path / "rejected", W)
    assert (rejected / lz.file_name("RTU_C", W, "parquet")).exists()
    assert (rejected / (lz.file_name("RTU_C", W, "parquet") + ".error")).read_text()


def test_rerun_replaces_exactly_the_window(tmp_path):
    _landing(tmp_path)
    with connect(tmp_path / "s.duckdb") as con:
        _db(con)
        # A reading from the next window must survive re-runs of this one.
        con.execute("INSERT INTO telemetry.raw_readings VALUES (1, ?, 20.0, 'kV', ?, 7)",
                    [W + lz.WINDOW, W + lz.WINDOW])
        first = ingest_windows(con, tmp_path / "landing", tmp_path / "rejected", W, W + lz.WINDOW, now=NOW).summary()
        counts = lambda: con.execute(
            "SELECT (SELECT count(*) FROM telemetry.raw_readings), (SELECT count(*) FROM telemetry.quarantine),"
            " (SELECT count(*) FROM telemetry.ingest_files)").fetchone()
        after_first = counts()
        files_first = con.execute("SELECT * FROM telemetry.ingest_files ORDER BY file_id").fetchall()
        second = ingest_windows(con, tmp_path / "landing", tmp_path / "rejected", W, W + lz.WINDOW, now=NOW).summary()
        assert counts() == after_first == (first["rows_stored"] + 1, first["rows_quarantined"], 4)
        # The rejected file keeps its arrival time to the microsecond through the move.
        assert con.execute("SELECT * FROM telemetry.ingest_files ORDER BY file_id").fetchall() == files_first
        # The corrupt file is no longer in the landing zone but is still on record.
        assert second["files_rejected"] == 1 and second["rows_stored"] == first["rows_stored"]
        dup = con.execute("SELECT count(*) FROM (SELECT sensor_id, ts, file_id FROM telemetry.raw_readings "
                          "GROUP BY ALL HAVING count(*) > 1)").fetchone()[0]
        assert dup == 0


def test_empty_window_materialises_nothing_and_does_not_fail(tmp_path):
    with connect(tmp_path / "s.duckdb") as con:
        _db(con)
        s = ingest_windows(con, tmp_path / "landing", tmp_path / "rejected", W, W + lz.WINDOW, now=NOW).summary()
    assert s["rows_in"] == 0 and s["files"] == 0


values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(1.0))
rows = st.lists(st.tuples(st.integers(-2, 6), st.integers(-700, 700), values, st.sampled_from(["kV", "MW", "kW", "x", None])),
                max_size=40)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows)
def test_counts_always_reconcile(tmp_path_factory, rows):
    root = tmp_path_factory.mktemp("h")
    d = lz.window_dir(root / "landing", W)
    table = pa.table({
        "sensor_id": pa.array([r[0] for r in rows], pa.int64()),
        "ts": pa.array([W + timedelta(seconds=r[1]) for r in rows], pa.timestamp("ms")),
        "value": pa.array([r[2] for r in rows], pa.float64()),
        "unit": pa.array([r[3] for r in rows], pa.string()),
    })
    _write(d / lz.file_name("RTU_H", W, "parquet"), table, W + timedelta(seconds=40))
    con = duckdb.connect()
    _db(con)
    rep = ingest_windows(con, root / "landing", root / "rejected", W, W + lz.WINDOW, now=NOW)
    s = rep.summary()
    assert s["rows_in"] == len(rows) == s["rows_stored"] + s["rows_quarantined"]
    stored = con.execute("SELECT count(*) FROM telemetry.raw_readings").fetchone()[0]
    assert stored == s["rows_stored"]
    # Everything stored is finite, known, inside the window.
    bad = con.execute("SELECT count(*) FROM telemetry.raw_readings r LEFT JOIN telemetry.sensors s USING (sensor_id) "
                      "WHERE s.sensor_id IS NULL OR NOT isfinite(value) OR ts < ? OR ts >= ?",
                      [W, W + lz.WINDOW]).fetchone()[0]
    assert bad == 0


def test_broken_pages_behind_a_valid_footer_reject_only_that_file(tmp_path):
    """The footer passes the bulk schema check, the scan then fails: the window falls back to reading
    file by file, rejects the broken one and keeps every row of the others."""
    d = _landing(tmp_path)
    n = 2000
    big = pa.table({"sensor_id": pa.array([1] * n, pa.int32()),
                    "ts": pa.array([W + timedelta(milliseconds=i) for i in range(n)], pa.timestamp("ms")),
                    "value": pa.array([20.0 + i * 1e-4 for i in range(n)]), "unit": ["kV"] * n})
    broken = d / lz.file_name("RTU_E", W, "parquet")
    pq.write_table(big, broken, compression="snappy", use_dictionary=False)
    raw = bytearray(broken.read_bytes())
    footer_len = int.from_bytes(raw[-8:-4], "little")
    for i in range(64, len(raw) - footer_len - 200, 7):  # scribble over the data pages, keep the footer
        raw[i] = 0xFF
    broken.write_bytes(bytes(raw))
    assert pq.read_schema(broken).names == big.column_names  # the footer still reads
    with connect(tmp_path / "s.duckdb") as con:
        _db(con)
        s = ingest_windows(con, tmp_path / "landing", tmp_path / "rejected", W, W + lz.WINDOW, now=NOW).summary()
        assert s["files_rejected"] == 2 and s["files"] == 3
        assert s["rows_stored"] == 6 and s["rows_in"] == 22
        status = dict(con.execute("SELECT source, status FROM telemetry.ingest_files").fetchall())
    assert status["RTU_E"] == "rejected" and status["RTU_A"] == "ok"
    assert (lz.window_dir(tmp_path / "rejected", W) / broken.name).exists()


def _csv_files(tmp_path, bodies: dict[str, str]):
    from gridpipeline.telemetry.ingest import file_id
    out = []
    for i, (name, text) in enumerate(bodies.items()):
        p = tmp_path / lz.file_name(name, W + timedelta(minutes=i), "csv")
        p.write_bytes(text.encode())
        out.append((lz.parse(p), file_id(p, tmp_path)))
    return out


def test_csv_files_read_together_match_file_by_file(tmp_path):
    from gridpipeline.telemetry.ingest import _TEXT_SCHEMA, _csv_together, _frame, _read
    files = _csv_files(tmp_path, {
        "A": '"sensor_id","ts","value","unit"\n1,"2026-11-20T10:00:00Z",20.1,"kV"\n2,"2026-11-20T10:00:00Z",,"MW"\n',
        "B": "sensor_id,ts,value,unit\nx,yesterday,n/a,kV\n",
        "C": "sensor_id,ts,value,unit\n",                                     # header only
        "D": "sensor_id,ts,value,unit\n3,2026-11-20T10:01:00Z,0.2,Mvar\n4,2026-11-20T10:01:00Z,1,state\n",
        "E": "sensor_id,ts,val,unit\n1,2026-11-20T10:00:00Z,20.1,kV\n",      # other header: one by one
        "F": "sensor_id,ts,value,unit\n1,2026-11-20T10:00:00Z,20.1,k",        # truncated: one by one
        "G": "sensor_id,ts,value,unit\r\n1,2026-11-20T10:00:00Z,20.1,kV\r\n",  # CR LF: one by one
    })
    frame, read, rest = _csv_together(files)
    assert [f.source for f, _, _ in read] == ["A", "B", "C", "D"] and [n for *_, n in read] == [2, 1, 0, 2]
    assert [f.source for f, _ in rest] == ["E", "F", "G"]
    one_by_one = pa.concat_tables([_frame(_read(f), fid, f.arrived_at)[0].cast(_TEXT_SCHEMA) for f, fid, _ in read])
    assert frame.to_pylist() == one_by_one.to_pylist()


def test_csv_rows_that_do_not_add_up_fall_back_to_file_by_file(tmp_path):
    from gridpipeline.telemetry.ingest import _csv_together
    files = _csv_files(tmp_path, {
        "A": "sensor_id,ts,value,unit\n1,2026-11-20T10:00:00Z,20.1,kV\n",
        "B": "sensor_id,ts,value,unit\n\n2,2026-11-20T10:00:00Z,0.5,MW\n",    # a blank line: 2 newlines, 1 row
        "C": 'sensor_id,ts,value,unit\n1,2026-11-20T10:00:00Z,20.1,"k\nV"\n',  # a quoted newline: a parse error
    })
    frame, read, rest = _csv_together(files[:2])
    assert frame is None and read == [] and rest == files[:2]
    frame, read, rest = _csv_together([files[0], files[2]])
    assert frame is None and rest == [files[0], files[2]]


def _one_window(tmp_path, **kw):
    with connect(tmp_path / "s.duckdb") as con:
        _db(con)
        rep = ingest_windows(con, tmp_path / "landing", tmp_path / "rejected", W, W + lz.WINDOW, now=NOW, **kw)
        q = con.execute("SELECT reason, ts FROM telemetry.quarantine ORDER BY ALL").fetchall()
        stored = con.execute("SELECT sensor_id, file_id FROM telemetry.raw_readings ORDER BY ALL").fetchall()
    return rep, q, stored


def test_infinite_timestamps_are_too_new_or_too_old_not_missing(tmp_path):
    d = lz.window_dir(tmp_path / "landing", W)
    _write(d / lz.file_name("RTU_B", W, "csv"),
           "sensor_id,ts,value,unit\n1,infinity,20.1,kV\n1,-infinity,20.1,kV\n", W + timedelta(seconds=40), "csv")
    big = pa.table({"sensor_id": pa.array([1], pa.int32()), "value": [20.0], "unit": ["kV"],
                    "ts": pa.array([2**63 - 1], pa.int64()).cast(pa.timestamp("us", tz="UTC"))})
    _write(d / lz.file_name("RTU_A", W, "parquet"), big, W + timedelta(seconds=40))
    rep, q, _ = _one_window(tmp_path)
    assert rep.reasons == {"timestamp_in_future": 2, "timestamp_too_old": 1}
    assert {ts for _, ts in q} == {"infinity", "-infinity"}


def test_file_names_with_glob_characters_are_read_as_themselves(tmp_path):
    """DuckDB expands patterns in a list of paths: a source called RTU_A* must not pull in RTU_A."""
    d = lz.window_dir(tmp_path / "landing", W)
    for i, src in enumerate(["RTU_A*", "RTU_A", "RTU_B", "RTU_[C]"]):
        t = pa.table({"sensor_id": pa.array([i + 1], pa.int32()),
                      "ts": pa.array([W + timedelta(seconds=30 * i)], pa.timestamp("ms", tz="UTC")),
                      "value": [20.0 if i == 0 else 0.5], "unit": ["kV" if i == 0 else ["MW", "Mvar", "state"][i - 1]]})
        _write(d / lz.file_name(src, W, "parquet"), t, W + timedelta(seconds=40))
    rep, _, stored = _one_window(tmp_path)
    s = rep.summary()
    assert s["rows_in"] == s["rows_stored"] == 4 and s["files"] == 4
    by_file = {}
    for sensor, fid in stored:
        by_file.setdefault(fid, []).append(sensor)
    assert sorted(by_file.values()) == [[1], [2], [3], [4]]


def test_database_settings_are_restored(tmp_path):
    _landing(tmp_path)
    with connect(tmp_path / "s.duckdb") as con:
        _db(con)
        # values ingestion changes and that differ from DuckDB's defaults, so that RESET would not do
        con.execute("SET preserve_insertion_order = false")
        con.execute("SET parquet_metadata_cache = false")
        con.execute("SET TimeZone = 'America/New_York'")
        before = con.execute("SELECT current_setting('preserve_insertion_order'), "
                             "current_setting('parquet_metadata_cache'), current_setting('TimeZone')").fetchone()
        ingest_windows(con, tmp_path / "landing", tmp_path / "rejected", W, W + 2 * lz.WINDOW, now=NOW)
        after = con.execute("SELECT current_setting('preserve_insertion_order'), "
                            "current_setting('parquet_metadata_cache'), current_setting('TimeZone')").fetchone()
    assert after == before == (False, False, "America/New_York")


def test_a_failing_window_stops_the_range_with_two_workers(tmp_path, monkeypatch):
    import gridpipeline.telemetry.ingest as ing

    real = ing.ingest_window
    started = []

    def flaky(con, landing, rejected, ws, **kw):
        started.append(ws)
        if ws == W + lz.WINDOW:
            raise RuntimeError("disk full")
        return real(con, landing, rejected, ws, **kw)

    monkeypatch.setattr(ing, "ingest_window", flaky)
    with connect(tmp_path / "s.duckdb") as con:
        _db(con)
        try:
            ingest_windows(con, tmp_path / "landing", tmp_path / "rejected", W, W + 12 * lz.WINDOW, now=NOW, workers=2)
        except RuntimeError as exc:
            assert "disk full" in str(exc)
        else:
            raise AssertionError("the failure was swallowed")
    # After the failure no new window starts; at most the one in flight on the other cursor finishes.
    assert len(started) <= 3
