"""Ingestion under hostile or broken input: nothing outside the landing zone is read or touched, no file
content leaks into error texts, a bad row costs only that row, nothing in ``rejected/`` is overwritten
and no file is passed over without a record."""

from __future__ import annotations

import os
from datetime import UTC, timedelta

import pyarrow as pa
import pytest

from gridpipeline.common import landing as lz
from gridpipeline.store import connect
from gridpipeline.telemetry.ingest import ingest_windows
from gridpipeline_tests.telemetry.test_ingest import NOW, W, _db, _write

GOOD_CSV = ("sensor_id,ts,value,unit\n"
            "1,2026-11-20T10:00:00Z,20.1,kV\n"
            "2,2026-11-20T10:00:00Z,0.5,MW\n")
SECRET = "AKIAIOSFODNN7EXAMPLE-hunter2"
OLD = 1_600_000_000_123_456_789  # mtime (ns) of files outside the landing zone: must never change


def _ingest(tmp_path):
    """Ingest the window W; the report and the store's three tables."""
    with connect(tmp_path / "s.duckdb") as con:
        _db(con)
        rep = ingest_windows(con, tmp_path / "landing", tmp_path / "rejected", W, W + lz.WINDOW, now=NOW)
        tables = {t: con.execute(f"SELECT * FROM telemetry.{t} ORDER BY ALL").df()
                  for t in ("raw_readings", "quarantine", "ingest_files")}
    return rep, tables


def _outside(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(OLD, OLD))
    return path


def _untouched(path, data: bytes):
    st = os.stat(path)
    return path.read_bytes() == data and st.st_mtime_ns == OLD and st.st_atime_ns == OLD


def _reconciles(files):
    ok = files[files.status == "ok"]
    return bool((ok.rows_in == ok.rows_stored + ok.rows_quarantined).all())


# ---------------------------------------------------------------- 1. symlinks


def test_symlinked_files_pointing_outside_are_refused_and_never_touched(tmp_path):
    outside = tmp_path / "outside"
    # Readable rows (value 0.777 marks them) and a file that is no Parquet at all: read through the
    # link the first would be stored, the second moved to rejected/ with its first line in the error.
    rows = b"sensor_id,ts,value,unit\n2,2026-11-20T10:00:30Z,0.777,MW\n"
    csv_target = _outside(outside / "readings.csv", rows)
    txt_target = _outside(outside / "id_rsa", (SECRET + "\n").encode())
    d = lz.window_dir(tmp_path / "landing", W)
    _write(d / lz.file_name("RTU_A", W, "csv"), GOOD_CSV, W + timedelta(seconds=40), "csv")
    (d / lz.file_name("RTU_X", W, "csv")).symlink_to(csv_target)
    (d / lz.file_name("RTU_Y", W, "parquet")).symlink_to(txt_target)
    (d / lz.file_name("RTU_Z", W, "csv")).symlink_to(txt_target)

    rep, t = _ingest(tmp_path)

    assert _untouched(csv_target, rows) and _untouched(txt_target, (SECRET + "\n").encode())
    assert 0.777 not in set(t["raw_readings"].value) and len(t["raw_readings"]) == 2
    assert t["quarantine"].empty
    assert not (tmp_path / "rejected").exists() or not any((tmp_path / "rejected").rglob("*"))
    files = t["ingest_files"].set_index("source")
    assert list(files.loc[["RTU_X", "RTU_Y", "RTU_Z"], "status"]) == ["refused"] * 3
    assert set(files.loc[["RTU_X", "RTU_Y", "RTU_Z"], "error"]) == {"outside_landing_zone"}
    assert files.loc["RTU_A", "status"] == "ok"
    assert SECRET not in t["ingest_files"].to_string()
    s = rep.summary()
    assert s["files"] == 1 and s["files_refused"] == 3 and s["files_rejected"] == 0
    assert s["rows_in"] == s["rows_stored"] + s["rows_quarantined"] == 2
    # The links were not followed, and not replaced by what they point to.
    assert (d / lz.file_name("RTU_X", W, "csv")).is_symlink()


def test_a_symlink_to_a_file_inside_the_landing_zone_is_refused_too(tmp_path):
    """Any link is refused: one into the zone would read a file twice, under another name."""
    d = lz.window_dir(tmp_path / "landing", W)
    real = d / lz.file_name("RTU_A", W, "csv")
    _write(real, GOOD_CSV, W + timedelta(seconds=40), "csv")
    (d / lz.file_name("RTU_B", W, "csv")).symlink_to(real)
    rep, t = _ingest(tmp_path)
    assert len(t["raw_readings"]) == 2
    status = dict(zip(t["ingest_files"].source, zip(t["ingest_files"].status, t["ingest_files"].error)))
    assert status == {"RTU_A": ("ok", None), "RTU_B": ("refused", "symlink")}


@pytest.mark.parametrize("level", ["window", "day"])
def test_a_symlinked_window_folder_is_refused_and_never_touched(tmp_path, level):
    outside = tmp_path / "outside"
    good = GOOD_CSV.replace("0.5", "0.777").encode()
    corrupt = b"PAR1\x00\x01" + SECRET.encode()
    target = outside / "win"
    a = _outside(target / lz.file_name("RTU_A", W, "csv"), good)
    c = _outside(target / lz.file_name("RTU_C", W, "parquet"), corrupt)
    os.utime(target, ns=(OLD, OLD))
    d = lz.window_dir(tmp_path / "landing", W)
    if level == "window":
        d.parent.mkdir(parents=True)
        d.symlink_to(target, target_is_directory=True)
        link = d
    else:  # the day folder links to a folder that holds the window's folder
        day = outside / "day"
        day.mkdir()
        target.rename(day / d.name)
        a, c = day / d.name / a.name, day / d.name / c.name
        d.parent.parent.mkdir(parents=True)
        d.parent.symlink_to(day, target_is_directory=True)
        link = d.parent

    rep, t = _ingest(tmp_path)

    assert _untouched(a, good) and _untouched(c, corrupt)
    assert t["raw_readings"].empty and t["quarantine"].empty
    assert not (tmp_path / "rejected").exists() or not any((tmp_path / "rejected").rglob("*"))
    files = t["ingest_files"]
    assert list(zip(files.file_path, files.status, files.error)) == [(str(link), "refused", "outside_landing_zone")]
    assert SECRET not in files.to_string()
    assert rep.summary()["files_refused"] == 1 and rep.summary()["rows_in"] == 0
    assert lz.window_files(tmp_path / "landing", W) == []


def test_a_linked_window_folder_is_seen_by_the_sensor_without_being_listed(tmp_path):
    """The window shows up (so that a run records the refusal) and its fingerprint is the link's own."""
    target = tmp_path / "outside" / "win"
    _outside(target / lz.file_name("RTU_A", W, "csv"), GOOD_CSV.encode())
    d = lz.window_dir(tmp_path / "landing", W)
    d.parent.mkdir(parents=True)
    d.symlink_to(target, target_is_directory=True)
    assert lz.recent_windows(tmp_path / "landing", W) == [W]
    before = lz.fingerprint(tmp_path / "landing", W)
    _outside(target / lz.file_name("RTU_B", W, "csv"), GOOD_CSV.encode())  # a change behind the link
    assert before is not None and lz.fingerprint(tmp_path / "landing", W) == before


def test_links_in_the_rejected_folder_are_not_followed(tmp_path):
    """A note planted as a link must not bring the linked file's text into the store."""
    secret = _outside(tmp_path / "outside" / "secret.txt", SECRET.encode())
    r = lz.window_dir(tmp_path / "rejected", W)
    r.mkdir(parents=True)
    name = lz.file_name("RTU_C", W, "parquet")
    (r / name).symlink_to(secret)
    (r / (name + ".error")).symlink_to(secret)
    rep, t = _ingest(tmp_path)
    assert _untouched(secret, SECRET.encode())
    assert SECRET not in t["ingest_files"].to_string()


# ---------------------------------------------------------------- 2. no file content in error texts


def _all_text(tmp_path, t) -> str:
    notes = [p.read_text(errors="replace") for p in (tmp_path / "rejected").rglob("*.error")] \
        if (tmp_path / "rejected").exists() else []
    return t["quarantine"].to_string() + t["ingest_files"].to_string() + "".join(notes)


def test_a_parser_message_quoting_the_file_is_not_stored(tmp_path):
    """Arrow's CSV parse error quotes the offending line: here the file's first line after the header."""
    d = lz.window_dir(tmp_path / "landing", W)
    _write(d / lz.file_name("RTU_S", W, "csv"),
           f"sensor_id,ts,value,unit\n{SECRET}\n1,2026-11-20T10:00:00Z,20.1,kV\n", W + timedelta(seconds=40), "csv")
    rep, t = _ingest(tmp_path)
    assert SECRET not in _all_text(tmp_path, t)
    assert len(t["raw_readings"]) == 1 and list(t["quarantine"].reason) == ["ragged_row"]


def test_a_rejected_files_error_names_the_class_not_the_content(tmp_path):
    """A nested column's field name (file content) is quoted by Arrow's cast error: it must reach neither
    the store nor the .error note, which keep the exception's class."""
    d = lz.window_dir(tmp_path / "landing", W)
    nested = pa.table({"sensor_id": pa.array([1], pa.int32()), "ts": pa.array([W], pa.timestamp("ms")),
                       "value": pa.array([{SECRET: 1}]), "unit": ["kV"]})
    _write(d / lz.file_name("RTU_N", W, "parquet"), nested, W + timedelta(seconds=40))
    rep, t = _ingest(tmp_path)
    files = t["ingest_files"]
    assert list(files.status) == ["rejected"]
    assert files.error[0].startswith("ArrowNotImplementedError")
    note = lz.window_dir(tmp_path / "rejected", W) / (lz.file_name("RTU_N", W, "parquet") + ".error")
    assert note.read_text().startswith("ArrowNotImplementedError")
    assert SECRET not in _all_text(tmp_path, t)


# ---------------------------------------------------------------- 3. a bad row costs only that row


def test_an_undecodable_row_is_quarantined_alone(tmp_path):
    d = lz.window_dir(tmp_path / "landing", W)
    body = (b"sensor_id,ts,value,unit\n"
            b"1,2026-11-20T10:00:00Z,20.1,kV\n"
            b"2,2026-11-20T10:00:00Z,0.5,M\x96W\n"          # one Windows-1252 byte
            b"2,2026-11-20T10:00:30Z,0.51,MW\n")
    p = d / lz.file_name("RTU_W", W, "csv")
    p.parent.mkdir(parents=True)
    p.write_bytes(body)
    _write(d / lz.file_name("RTU_A", W, "csv"), GOOD_CSV.replace("10:00:00", "10:01:00"), W + timedelta(seconds=40),
           "csv")  # read together with it when the window's CSVs parse as one
    rep, t = _ingest(tmp_path)
    q = t["quarantine"]
    assert list(zip(q.row_number, q.reason)) == [(2, "undecodable_row")]
    assert len(t["raw_readings"]) == 4
    assert list(t["ingest_files"].status) == ["ok", "ok"] and _reconciles(t["ingest_files"])
    s = rep.summary()
    assert s["rows_in"] == 5 == s["rows_stored"] + s["rows_quarantined"] and s["files_rejected"] == 0
    assert p.read_bytes() == body  # left where it is, as every readable file


@pytest.mark.parametrize("line_ending", ["\n", "\r\n"])
def test_ragged_rows_are_quarantined_alone(tmp_path, line_ending):
    d = lz.window_dir(tmp_path / "landing", W)
    body = line_ending.join([
        "sensor_id,ts,value,unit",
        "1,2026-11-20T10:00:00Z,20.1,kV",
        "1,2026-11-20T10:00:30Z,20.2",                  # too few fields
        "2,2026-11-20T10:00:00Z,0.5,MW",
        "2,2026-11-20T10:00:30Z,0.51,MW,extra,fields",  # too many
        "",
        "2,2026-11-20T10:01:00Z,0.52,MW",
    ]) + line_ending
    _write(d / lz.file_name("RTU_R", W, "csv"), body, W + timedelta(seconds=40), "csv")
    rep, t = _ingest(tmp_path)
    q = t["quarantine"]
    assert list(zip(q.row_number, q.reason)) == [(2, "ragged_row"), (4, "ragged_row")]
    assert q[["sensor_id", "ts", "value", "unit"]].isna().all().all()  # fields of a ragged row are not kept
    assert len(t["raw_readings"]) == 3
    files = t["ingest_files"]
    assert list(files.status) == ["ok"] and list(files.rows_in) == [5] and _reconciles(files)
    s = rep.summary()
    assert s["rows_in"] == 5 == s["rows_stored"] + s["rows_quarantined"]


def test_a_csv_file_cut_short_is_still_rejected_whole(tmp_path):
    """A file that ends mid-row (the simulator's truncated exports: a third of the bytes, then garbage)
    is a broken file, not good rows plus a ragged one: it is rejected, its note says so in our words."""
    d = lz.window_dir(tmp_path / "landing", W)
    body = (GOOD_CSV + "2,2026-11-20T10:00:30Z,0.51,MW\n").encode()
    name = lz.file_name("RTU_K", W, "csv")
    d.mkdir(parents=True)
    (d / name).write_bytes(body[: len(body) - 9] + b"\x00garbage")
    rep, t = _ingest(tmp_path)
    assert list(t["ingest_files"].status) == ["rejected"] and t["raw_readings"].empty
    note = (lz.window_dir(tmp_path / "rejected", W) / (name + ".error")).read_text()
    assert note == "ValueError: truncated CSV file (it ends mid-row)" == t["ingest_files"].error[0]


def test_a_parquet_timestamp_out_of_range_is_quarantined_alone(tmp_path):
    d = lz.window_dir(tmp_path / "landing", W)
    secs = int(W.replace(tzinfo=UTC).timestamp())
    bad = pa.table({
        "sensor_id": pa.array([1, 1, 2], pa.int32()),
        "ts": pa.array([secs, 10**15, secs + 30], pa.int64()).cast(pa.timestamp("s", tz="UTC")),
        "value": [20.1, 20.2, 0.5], "unit": ["kV", "kV", "MW"],
    })
    _write(d / lz.file_name("RTU_T", W, "parquet"), bad, W + timedelta(seconds=40))
    good = pa.table({"sensor_id": pa.array([2], pa.int32()), "ts": pa.array([W], pa.timestamp("ms")),
                     "value": [0.4], "unit": ["MW"]})
    _write(d / lz.file_name("RTU_A", W, "parquet"), good, W + timedelta(seconds=40))  # bulk-readable
    rep, t = _ingest(tmp_path)
    q = t["quarantine"]
    assert list(zip(q.row_number, q.reason, q.sensor_id, q.value)) == [(2, "timestamp_out_of_range", "1", "20.2")]
    assert len(t["raw_readings"]) == 3
    files = t["ingest_files"]
    assert list(files.status) == ["ok", "ok"] and _reconciles(files)
    s = rep.summary()
    assert s["rows_in"] == 4 == s["rows_stored"] + s["rows_quarantined"] and s["files_rejected"] == 0


# ---------------------------------------------------------------- 4. rejected/ is never overwritten


def test_a_redelivered_bad_file_keeps_both_rejected_copies(tmp_path):
    d = lz.window_dir(tmp_path / "landing", W)
    name = lz.file_name("RTU_C", W, "parquet")
    first, second = b"PAR1\x00first delivery", b"PAR1\x00second delivery, other bytes"
    d.mkdir(parents=True)
    (d / name).write_bytes(first)
    _ingest(tmp_path)
    (d / name).write_bytes(second)
    rep, t = _ingest(tmp_path)
    r = lz.window_dir(tmp_path / "rejected", W)
    copies = sorted(p for p in r.iterdir() if not p.name.endswith(".error"))
    assert sorted(p.read_bytes() for p in copies) == sorted([first, second])
    assert all(p.with_name(p.name + ".error").read_text() for p in copies)
    assert (r / name).read_bytes() == first  # the earlier copy keeps its name
    files = t["ingest_files"]
    assert list(files.status) == ["rejected", "rejected"] and len(set(files.file_id)) == 2
    assert sorted(files.file_path) == sorted(str(p) for p in copies)
    assert set(files.source) == {"RTU_C"}  # the later copy's name still parses
    assert rep.summary()["files_rejected"] == 2


# ---------------------------------------------------------------- 5. hidden files are recorded


def test_hidden_files_are_recorded_not_read(tmp_path):
    d = lz.window_dir(tmp_path / "landing", W)
    good = pa.table({"sensor_id": pa.array([2], pa.int32()), "ts": pa.array([W], pa.timestamp("ms")),
                     "value": [0.777], "unit": ["MW"]})
    hidden = ["." + lz.file_name("RTU_A", W, "parquet"), "._" + lz.file_name("RTU_B", W, "parquet"), "..x.csv", ".dot"]
    _write(d / hidden[0], good, W + timedelta(seconds=40))
    _write(d / hidden[1], good, W + timedelta(seconds=40))
    _write(d / hidden[2], GOOD_CSV, W + timedelta(seconds=40), "csv")
    _write(d / hidden[3], "not an export", W + timedelta(seconds=40), "csv")
    _write(d / lz.file_name("RTU_C", W, "csv"), GOOD_CSV, W + timedelta(seconds=40), "csv")
    # A writer's file in flight (it writes <name>.tmp, then renames): no record, no error.
    _write(d / (lz.file_name("RTU_D", W, "csv") + ".tmp"), "sensor_id,ts", W + timedelta(seconds=40), "csv")
    rep, t = _ingest(tmp_path)
    files = t["ingest_files"]
    skipped = files[files.status == "skipped"]
    assert sorted(os.path.basename(p) for p in skipped.file_path) == sorted(hidden)
    assert set(skipped.error) == {"hidden_file"}
    assert list(files[files.status != "skipped"].source) == ["RTU_C"]
    assert 0.777 not in set(t["raw_readings"].value) and len(t["raw_readings"]) == 2
    s = rep.summary()
    assert s["files"] == 1 and s["files_skipped"] == 4 and s["files_rejected"] == 0
    assert all((d / h).exists() for h in hidden) and not (tmp_path / "rejected").exists()


def test_window_files_still_lists_only_readable_exports(tmp_path):
    """Other readers of the landing zone (snapshots, grid state) see exactly the files ingestion reads."""
    d = lz.window_dir(tmp_path / "landing", W)
    _write(d / lz.file_name("RTU_C", W, "csv"), GOOD_CSV, W + timedelta(seconds=40), "csv")
    _write(d / ".hidden.csv", GOOD_CSV, W + timedelta(seconds=40), "csv")
    (d / lz.file_name("RTU_L", W, "csv")).symlink_to(d / lz.file_name("RTU_C", W, "csv"))
    (d / "sub").mkdir()
    assert [f.source for f in lz.window_files(tmp_path / "landing", W)] == ["RTU_C"]
    files, refused = lz.scan_window(tmp_path / "landing", W)
    assert sorted((f.path.name, why) for f, why in refused) == [
        (".hidden.csv", "hidden_file"), (lz.file_name("RTU_L", W, "csv"), "symlink")]
