"""Read a window's landing files, validate every row, store accepted rows and quarantine the rest.

The unit of work is one 5-minute window (a partition); a backfill calls :func:`ingest_windows` over
a range (two windows at a time, on their own cursors) and each window is replaced as a whole, inside
its own transaction, so a re-run replaces exactly its rows. Nothing is dropped silently: ``rows_in == rows_stored + rows_quarantined`` for the
readable files, and every unreadable file is moved to the rejected folder with an error record. Links
and hidden files are recorded (``refused`` / ``skipped``) and never read or followed (see
:func:`landing.scan_window`); error texts name the exception, never quote the file.

Validation is one set-based DuckDB query over all of the window's rows. Parquet files whose columns
already have the right types (the common case) are scanned by DuckDB in bulk and skip every cast;
a window's CSV exports are parsed together by Arrow, and they and oddly typed files are read as text
and cast with ``TRY_CAST``, so a bad value rejects its row and never the file. Neither does a bad row:
a CSV file Arrow cannot parse (a row not UTF-8, or with too many or too few fields) is read again row by
row, and a Parquet timestamp beyond the microsecond range is nulled; such rows are quarantined with
their reason. Where the time goes: ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from gridpipeline.common import landing as lz
from gridpipeline.settings import PROJECT_ROOT

REQUIRED = ("sensor_id", "ts", "value")
UNIT_SEED = PROJECT_ROOT / "dbt_project" / "seeds" / "unit_conversions.csv"

# Hard physical limits in the canonical unit, as multiples of the sensor's nominal value where
# ``rel`` is true. Anything outside cannot be a real reading (plausibility is dbt's job).
IMPOSSIBLE = {
    #  kind            lo     hi    relative
    "v_mag":         (0.0,   2.0,   True),
    "p_inj":         (-20.0, 20.0,  True),
    "q_inj":         (-20.0, 20.0,  True),
    "p_branch":      (-20.0, 20.0,  True),
    "q_branch":      (-20.0, 20.0,  True),
    "i_branch":      (0.0,   20.0,  True),
    "switch_status": (0.0,   1.0,   False),
    "soc":           (0.0,   100.0, False),
    "frequency":     (45.0,  65.0,  False),
    "energy":        (0.0,   1e12,  False),
}


@dataclass
class WindowReport:
    window_start: datetime
    files: int = 0
    files_rejected: int = 0
    files_refused: int = 0      # links: never followed
    files_skipped: int = 0      # hidden files: not exports
    rows_in: int = 0
    rows_stored: int = 0
    rows_quarantined: int = 0
    sensors_reporting: int = 0
    lateness_max_s: float | None = None
    lateness_p95_s: float | None = None
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class IngestReport:
    windows: list[WindowReport] = field(default_factory=list)

    def total(self, attr: str) -> int:
        return sum(getattr(w, attr) for w in self.windows)

    @property
    def reasons(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for w in self.windows:
            for k, v in w.reasons.items():
                out[k] = out.get(k, 0) + v
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def summary(self) -> dict:
        late = [w.lateness_max_s for w in self.windows if w.lateness_max_s is not None]
        return {
            "windows": len(self.windows),
            "files": self.total("files"),
            "files_rejected": self.total("files_rejected"),
            "files_refused": self.total("files_refused"),
            "files_skipped": self.total("files_skipped"),
            "rows_in": self.total("rows_in"),
            "rows_stored": self.total("rows_stored"),
            "rows_quarantined": self.total("rows_quarantined"),
            "sensors_reporting": max((w.sensors_reporting for w in self.windows), default=0),
            "lateness_max_s": max(late) if late else None,
        }


def file_id(path: Path, landing: Path) -> int:
    """Stable id of a landing file (same file, same id on every re-run)."""
    try:
        rel = str(path.relative_to(landing))
    except ValueError:
        rel = str(path)
    return file_id_of(rel)


def file_id_of(rel: str) -> int:
    """:func:`file_id` of a path relative to its landing (or rejected) folder."""
    return int.from_bytes(hashlib.blake2b(rel.encode(), digest_size=8).digest(), "little") >> 1


def load_unit_conversions(path: Path = UNIT_SEED) -> pa.Table:
    """(from_unit, to_unit, factor) — the same seed dbt uses to normalise units."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return pa.table({
        "from_unit": [r["from_unit"] for r in rows],
        "to_unit": [r["to_unit"] for r in rows],
        "factor": [float(r["factor"]) for r in rows],
    })


_CSV_READ = pacsv.ReadOptions(use_threads=False)  # small files: Arrow's thread pool costs more than it saves
_CSV_CONVERT = pacsv.ConvertOptions(column_types={c: pa.string() for c in (*REQUIRED, "unit")},
                                    strings_can_be_null=True, null_values=[""])
_CSV_HEADER = [b"sensor_id", b"ts", b"value", b"unit"]
_TYPED = {"sensor_id": pa.types.is_integer, "ts": pa.types.is_timestamp, "value": pa.types.is_floating}


def _read(f: lz.LandingFile) -> pa.Table:
    if f.fmt == "parquet":
        return pq.read_table(f.path)
    if f.fmt == "csv":
        return pacsv.read_csv(f.path, read_options=_CSV_READ, convert_options=_CSV_CONVERT)
    raise ValueError(f"unsupported file format '{f.fmt}'")


# Reasons of rows that are bad before any value is looked at (set per row, ahead of the validation query's).
UNDECODABLE, RAGGED, TS_RANGE = "undecodable_row", "ragged_row", "timestamp_out_of_range"
_ESCAPED = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of bytes that are not UTF-8


def _read_csv_rows(path: Path) -> tuple[pa.Table, list[tuple[int, str]]]:
    """A CSV file Arrow cannot read whole, row by row: a row that is not UTF-8 or has another number of
    fields than the header becomes an empty row with its reason (its fields are not text, or not what
    their columns say: none is kept), every other row is read as it is. Rows are numbered as Arrow
    does: from 1 after the header, blank lines not counted, a quoted newline inside its row.

    A file that also ends mid-line was cut short (a writer ends every row with a line break: the
    simulator's truncated exports, a copy that stopped): it is rejected whole, as Arrow would, rather
    than read as its first rows plus a bad one. Returns (all columns as text, [(row number, reason)])."""
    data = path.read_bytes()
    text = data.decode("utf-8-sig", errors="surrogateescape")
    escaped = _ESCAPED.search(text) is not None
    rows = (r for r in csv.reader(io.StringIO(text, newline="")) if r)
    header = next(rows, None)
    if not header:
        raise ValueError("Empty CSV file")
    if not data.endswith((b"\n", b"\r")):
        raise ValueError("CSV file cut short: no line break after its last row")
    if escaped and any(_ESCAPED.search(h) for h in header):
        raise ValueError("CSV header is not UTF-8")
    cols: list[list] = [[] for _ in header]
    bad = []
    for i, r in enumerate(rows, 1):
        why = RAGGED if len(r) != len(header) else \
            UNDECODABLE if escaped and any(_ESCAPED.search(v) for v in r) else None
        if why:
            bad.append((i, why))
            r = [""] * len(header)
        for col, v in zip(cols, r):
            col.append(v or None)  # empty is null, as for Arrow
    return pa.Table.from_arrays([pa.array(c, pa.string()) for c in cols], names=header), bad


def _read_rows(f: lz.LandingFile) -> tuple[pa.Table, list[tuple[int, str]]]:
    """The file's table and its rows that are bad as a whole (row number, reason). Arrow fails a whole
    CSV file for one broken row, so such a file is read again by :func:`_read_csv_rows`."""
    if f.fmt == "csv":
        # a writer ends every row with a line break: a file that does not was cut short, even when
        # its last, partial row happens to have every field (a value cut in the middle of the unit)
        with open(f.path, "rb") as fh:
            fh.seek(0, 2)
            if fh.tell():
                fh.seek(-1, 2)
                if fh.read(1) not in (b"\n", b"\r"):
                    raise ValueError("CSV file cut short: no line break after its last row")
        try:
            return _read(f), []
        except pa.ArrowInvalid:
            return _read_csv_rows(f.path)
    return _read(f), []


_US_PER = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 1}


def _ts_in_range(ts: pa.ChunkedArray) -> tuple[pa.ChunkedArray, list[tuple[int, str]]]:
    """Timestamps without a microsecond equivalent (1e15 s after the epoch) nulled, with their rows:
    left in, they fail the whole file's cast (Arrow) and the window's bulk scan (DuckDB)."""
    per = _US_PER[ts.type.unit]
    if per == 1:
        return ts, []
    lim = (2**63 - 1) // per
    raw = ts.cast(pa.int64())
    out = pc.fill_null(pc.or_(pc.greater(raw, lim), pc.less(raw, -lim)), False)
    idx = np.flatnonzero(out.to_numpy())
    if not len(idx):
        return ts, []
    return pc.if_else(out, pa.scalar(None, ts.type), ts), [(int(i) + 1, TS_RANGE) for i in idx]


def _frame(t: pa.Table, fid: int, arrived: datetime) -> tuple[pa.Table, bool, str | None, list[tuple[int, str]]]:
    """Bring one file to the common columns; say whether it is fully typed; name missing columns; list
    the rows whose timestamp is out of range (row number, reason)."""
    missing = [c for c in REQUIRED if c not in t.column_names]
    n = t.num_rows
    cols = {}
    typed = not missing
    bad: list[tuple[int, str]] = []
    for c in (*REQUIRED, "unit"):
        if c in t.column_names:
            col = t.column(c)
            if c != "unit" and not _TYPED[c](col.type):
                typed = False
            if c == "ts" and pa.types.is_timestamp(col.type):
                col, bad = _ts_in_range(col)
            cols[c] = col
        else:
            cols[c] = pa.nulls(n, pa.string())
    if typed:
        ts = cols["ts"]
        if ts.type.tz is not None:
            ts = ts.cast(pa.timestamp(ts.type.unit))  # stored instants are UTC already
        cols["ts"] = ts.cast(pa.timestamp("us"))
        cols["sensor_id"] = cols["sensor_id"].cast(pa.int64())
        cols["value"] = cols["value"].cast(pa.float64())
        cols["unit"] = cols["unit"].cast(pa.string())
    else:
        cols = {c: (v.cast(pa.string()) if not pa.types.is_string(v.type) else v) for c, v in cols.items()}
    out = pa.table({
        "file_id": pa.array(np.full(n, fid, dtype=np.int64)),
        "row_number": pa.array(np.arange(1, n + 1, dtype=np.int64)),
        "arrived_at": pa.array(np.full(n, np.datetime64(arrived, "us"))),
        **cols,
    })
    error = f"missing_columns:{','.join(missing)}" if missing else None
    return out, typed, error, bad


# Error texts (ingest_files.error and the .error note) describe, they do not quote: a parser's message
# holds the offending line or a column's name, i.e. the file's content (perhaps of a file the landing
# zone pointed elsewhere to). Known messages are recognised by a fragment and described in our words.
_DESCRIBED = (
    ("magic bytes not found", "not a Parquet file (no magic bytes)"),
    ("Couldn't deserialize thrift", "corrupt Parquet metadata"),
    ("Parquet", "corrupt Parquet file"),
    ("invalid UTF8", "text that is not UTF-8"),
    ("CSV header is not UTF-8", "a CSV header that is not UTF-8"),
    ("Empty CSV file", "empty CSV file"),
    ("CSV file cut short", "truncated CSV file (it ends mid-row)"),
    ("CSV parse error", "CSV parse error"),
    ("field larger than field limit", "a CSV field longer than the limit"),
    ("Unsupported cast", "a column of an unsupported type"),
    ("unsupported file format", "unsupported file format"),
)
_ROW_NO = re.compile(r"\bRow #(\d+)")
_COLUMNS = re.compile(r"\bExpected (\d+) columns, got (\d+)")


def _describe(exc: Exception) -> str:
    """``<exception class>: <our description>``, with a row number and column counts where the parser
    gives them (digits only); never the exception's message itself."""
    msg = str(exc)
    text = next((d for k, d in _DESCRIBED if k in msg), "unreadable file")
    if m := _ROW_NO.search(msg):
        text += f" at row {m[1]}"
    if m := _COLUMNS.search(msg):
        text += f" (expected {m[1]} columns, got {m[2]})"
    return f"{type(exc).__name__}: {text}"


def _csv_together(files: list[tuple[lz.LandingFile, int]]) -> tuple[pa.Table | None, list, list]:
    """Parse many small CSV exports in one Arrow read (a file at a time costs ~0.2 ms of set-up each).

    Only files with exactly the canonical header that end in a newline are joined (a truncated last
    line must not run into the next file's first one). A file's rows are its newline count, so file
    ids and row numbers follow: without carriage returns no file can parse to more rows than it has
    newlines (blank lines and quoted newlines only give fewer), so equal totals mean equal counts for
    every file. Anything else (other headers, CR line ends, a parse error, totals that do not add up)
    is returned for the one-by-one path, which rejects or reads it.
    Returns (rows in the text schema, [(file, file id, rows)] read, files left over)."""
    header, bodies, counts, taken, rest = None, [], [], [], []
    for f, fid in files:
        try:
            data = f.path.read_bytes()
        except OSError:
            rest.append((f, fid))
            continue
        nl = data.find(b"\n")
        first = data[:nl].rstrip(b"\r").replace(b'"', b"").split(b",") if nl > 0 else None
        if first != _CSV_HEADER or not data.endswith(b"\n") or b"\r" in data:
            rest.append((f, fid))
            continue
        header = header or data[:nl + 1]
        bodies.append(data[nl + 1:])
        counts.append(bodies[-1].count(b"\n"))
        taken.append((f, fid))
    if not taken:
        return None, [], rest
    try:
        t = pacsv.read_csv(pa.py_buffer(header + b"".join(bodies)), convert_options=_CSV_CONVERT)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None, [], files
    n = np.asarray(counts, dtype=np.int64)
    if t.num_rows != int(n.sum()) or t.column_names != [c.decode() for c in _CSV_HEADER]:
        return None, [], files
    starts = np.repeat(np.cumsum(n) - n, n)
    frame = pa.table({
        "file_id": pa.array(np.repeat(np.array([fid for _, fid in taken], dtype=np.int64), n)),
        "row_number": pa.array(np.arange(1, t.num_rows + 1, dtype=np.int64) - starts),
        "arrived_at": pa.array(np.repeat(np.array([f.arrived_at for f, _ in taken], dtype="datetime64[us]"), n)),
        **{c: t.column(c) for c in (*REQUIRED, "unit")},
    })
    return frame.cast(_TEXT_SCHEMA), [(f, fid, c) for (f, fid), c in zip(taken, counts)], rest


_TYPED_SCHEMA = pa.schema([
    ("file_id", pa.int64()), ("row_number", pa.int64()), ("arrived_at", pa.timestamp("us")),
    ("sensor_id", pa.int64()), ("ts", pa.timestamp("us")), ("value", pa.float64()), ("unit", pa.string()),
])
_TEXT_SCHEMA = pa.schema([
    ("file_id", pa.int64()), ("row_number", pa.int64()), ("arrived_at", pa.timestamp("us")),
    ("sensor_id", pa.string()), ("ts", pa.string()), ("value", pa.string()), ("unit", pa.string()),
])


def _utc(ts: str) -> str:
    """SQL: the UTC wall time of a zoned or naive timestamp expression. Finite values by epoch
    arithmetic (the zoned cast goes through ICU, 0.03 s per window); +-infinity by the cast, so that
    they stay infinite and are judged too new / too old rather than missing."""
    return f"CASE WHEN isfinite({ts}) THEN make_timestamp(epoch_us({ts})) ELSE ({ts})::TIMESTAMP END"


def _validated_sql(window_start: datetime, window_end: datetime, typed_sql: str, row_errors: bool = False) -> str:
    """One row per input row: typed values plus ``reason`` (NULL when the row is accepted).

    ``row_errors``: join the ``row_errors`` table (rows bad before any value is judged); left out when
    it is empty, so that the bulk of windows pays nothing for it."""
    ws, we = f"TIMESTAMP '{window_start:%Y-%m-%d %H:%M:%S}'", f"TIMESTAMP '{window_end:%Y-%m-%d %H:%M:%S}'"
    limits = " ".join(
        f"WHEN '{k}' THEN NOT (v.conv >= {lo}{' * v.nominal' if rel else ''} AND v.conv <= {hi}{' * v.nominal' if rel else ''})"
        for k, (lo, hi, rel) in IMPOSSIBLE.items()
    )
    return f"""
    WITH rows AS (
        SELECT file_id, row_number, arrived_at, sensor_id AS sid, ts AS t, value AS val, unit,
               NULL::VARCHAR AS sid_raw, NULL::VARCHAR AS ts_raw, NULL::VARCHAR AS val_raw, FALSE AS text_row
        FROM ({typed_sql})
        UNION ALL
        SELECT file_id, row_number, arrived_at,
               TRY_CAST(sensor_id AS BIGINT), {_utc('TRY_CAST(ts AS TIMESTAMPTZ)')},
               TRY_CAST(value AS DOUBLE), unit, sensor_id, ts, value, TRUE
        FROM text_rows
    ),
    v AS (
        SELECT r.*, coalesce(u.factor, CASE WHEN r.unit IS NULL OR r.unit = s.unit THEN 1.0 END) AS factor,
               r.val * coalesce(u.factor, 1.0) AS conv, s.kind, s.nominal, s.sensor_id IS NOT NULL AS known
        FROM rows r
        LEFT JOIN sensors s ON s.sensor_id = r.sid
        LEFT JOIN units u ON u.from_unit = r.unit AND u.to_unit = s.unit
    )
    SELECT v.file_id, v.row_number, v.arrived_at, v.sid, v.t, v.val, v.unit, v.sid_raw, v.ts_raw, v.val_raw, CASE
        WHEN fe.error IS NOT NULL THEN fe.error
        {"WHEN re.row_error IS NOT NULL THEN re.row_error" if row_errors else ""}
        WHEN sid IS NULL AND (NOT text_row OR sid_raw IS NULL) THEN 'missing_sensor_id'
        WHEN sid IS NULL THEN 'bad_sensor_id'
        WHEN t IS NULL AND (NOT text_row OR ts_raw IS NULL) THEN 'missing_timestamp'
        WHEN t IS NULL THEN 'bad_timestamp'
        WHEN val IS NULL AND (NOT text_row OR val_raw IS NULL) THEN 'missing_value'
        WHEN val IS NULL THEN 'bad_value_type'
        WHEN isnan(val) THEN 'nan_value'
        WHEN isinf(val) THEN 'infinite_value'
        WHEN NOT known THEN 'unknown_sensor'
        WHEN t > $now + INTERVAL ($future_s) SECOND THEN 'timestamp_in_future'
        WHEN t < $now - INTERVAL ($max_age_days) DAY THEN 'timestamp_too_old'
        WHEN t < {ws} OR t >= {we} THEN 'outside_partition'
        WHEN factor IS NULL THEN 'unknown_unit'
        WHEN CASE kind {limits} ELSE FALSE END THEN 'impossible_value'
    END AS reason
    FROM v LEFT JOIN file_errors fe USING (file_id)
    {"LEFT JOIN row_errors re USING (file_id, row_number)" if row_errors else ""}
    """


def _typed_schema(schema: pa.Schema) -> bool:
    """A Parquet export with the expected column types: read in bulk by DuckDB, no casts needed."""
    names = set(schema.names)
    if not set(REQUIRED) <= names:
        return False
    if "unit" in names and not pa.types.is_string(schema.field("unit").type):
        return False
    return all(check(schema.field(c).type) for c, check in _TYPED.items())


# The same test on DuckDB's reading of the footers (one call for all of a window's files; with
# ``parquet_metadata_cache`` on, the scan that follows does not parse them again).
_TYPED_FILES_SQL = """
    SELECT file_name,
           count(*) FILTER (name = 'sensor_id' AND duckdb_type IN
               ('TINYINT', 'SMALLINT', 'INTEGER', 'BIGINT', 'UTINYINT', 'USMALLINT', 'UINTEGER')) = 1
           AND count(*) FILTER (name = 'ts' AND duckdb_type LIKE 'TIMESTAMP%') = 1
           AND count(*) FILTER (name = 'value' AND duckdb_type IN ('FLOAT', 'DOUBLE')) = 1
           AND count(*) FILTER (name = 'unit' AND duckdb_type IS DISTINCT FROM 'VARCHAR') = 0 AS typed
    FROM parquet_schema($paths)
    GROUP BY file_name
"""


# DuckDB expands glob patterns in a list of paths, which would shift its file_index numbering and
# read other files: such paths are read by Arrow, one by one.
_GLOB = re.compile(r"[*?\[\]{}]")


def _typed_parquet(con: duckdb.DuckDBPyConnection, files: list[lz.LandingFile]) -> dict[str, bool] | None:
    """Path -> fully typed, for every Parquet file; None when some footer cannot be read."""
    if not files:
        return {}
    try:
        return dict(con.execute(_TYPED_FILES_SQL, {"paths": [str(f.path) for f in files]}).fetchall())
    except duckdb.Error:
        return None


def _sql_list(items: list[str]) -> str:
    return "[" + ", ".join("'" + i.replace("'", "''") + "'" for i in items) + "]"


def _bulk_parquet_sql(paths: list[str]) -> str:
    """Rows of the bulk files; ``bulk_files.idx`` is the file's position in ``paths`` (DuckDB's file_index).

    ``ts`` may be zoned or naive (see :func:`_utc`)."""
    return f"""
        SELECT f.file_id, p.file_row_number + 1 AS row_number, f.arrived_at,
               p.sensor_id::BIGINT AS sensor_id, {_utc('p.ts')} AS ts, p.value::DOUBLE AS value,
               p.unit::VARCHAR AS unit
        FROM read_parquet({_sql_list(paths)}, file_row_number = true, union_by_name = true) p
        JOIN bulk_files f ON f.idx = p.file_index
    """


def _bulk_files(bulk: list[tuple[lz.LandingFile, int]]) -> pa.Table:
    """The bulk scan's file table: ``idx`` is the position in its path list (DuckDB's file_index)."""
    return pa.table({
        "idx": pa.array(range(len(bulk)), pa.uint64()),  # the type of DuckDB's file_index
        "file_id": pa.array([fid for _, fid in bulk], pa.int64()),
        "arrived_at": pa.array([f.arrived_at for f, _ in bulk], pa.timestamp("us")),
    })


@dataclass
class _Window:
    """What a window's files gave before anything is written: rows read through Arrow, the typed
    Parquet files left for DuckDB's bulk scan, rows bad as a whole (ragged, undecodable, timestamp out of
    range), and one ``ingest_files`` record per entry read, rejected, refused (a link) or skipped (hidden)."""
    start: datetime
    landing: Path
    rejected: Path
    text: list[pa.Table] = field(default_factory=list)
    file_rows: list[tuple] = field(default_factory=list)
    file_errors: list[tuple[int, str]] = field(default_factory=list)
    row_errors: list[tuple[int, int, str]] = field(default_factory=list)
    bulk: list[tuple[lz.LandingFile, int]] = field(default_factory=list)

    def record(self, f: lz.LandingFile, fid: int, rows: int | None, status: str = "ok", error: str | None = None,
               path: Path | None = None) -> tuple:
        """The file's ``ingest_files`` row (``rows`` None: counted by the validation query)."""
        return (fid, self.start, str(path or f.path), f.source, f.arrived_at, f.size, rows, status, error)

    def reject(self, f: lz.LandingFile, fid: int, exc: Exception) -> None:
        msg = _describe(exc)
        dest = lz.move_to_rejected(f, self.landing, self.rejected, msg)
        # On record under its rejected copy's id: a re-delivered file's copy (renamed, next to the one
        # rejected before) is another file than that one, which stays on record too.
        self.file_rows.append(self.record(f, file_id(dest, self.rejected), None, "rejected", msg, dest))

    def read_one(self, f: lz.LandingFile, fid: int) -> None:
        try:
            table, bad = _read_rows(f)
            frame, is_typed, err, out_of_range = _frame(table, fid, f.arrived_at)
        except Exception as exc:  # unreadable: corrupt, truncated, not a table at all
            self.reject(f, fid, exc)
            return
        self.text.append(frame if not is_typed else frame.cast(_TYPED_SCHEMA).cast(_TEXT_SCHEMA))
        if err:
            self.file_errors.append((fid, err))
        self.row_errors.extend((fid, row, why) for row, why in bad + out_of_range)
        self.file_rows.append(self.record(f, fid, frame.num_rows, error=err))

    def bulk_rows(self) -> list[tuple]:
        return [self.record(f, fid, None) for f, fid in self.bulk]


def _gather(con: duckdb.DuckDBPyConnection, landing: Path, rejected: Path, window_start: datetime) -> _Window:
    """List and read the window's files; unreadable ones are moved to the rejected folder. Writes
    nothing to the store (``con`` only reads Parquet footers)."""
    w = _Window(window_start, landing, rejected)
    files, refused = lz.scan_window(landing, window_start)
    for f, why in refused:  # links and hidden files: on record, never read, moved or followed
        status = "skipped" if why == lz.HIDDEN else "refused"
        w.file_rows.append(w.record(f, file_id(f.path, landing), None, status, why))
    rel_dir = str(lz.window_dir(Path(), window_start))  # what Path.relative_to(landing) gives, without its cost
    ids = {f.path: file_id_of(os.path.join(rel_dir, f.path.name)) for f in files}
    typed = _typed_parquet(con, [f for f in files if f.fmt == "parquet" and not _GLOB.search(str(f.path))])
    csvs = []
    for f in files:
        fid = ids[f.path]
        if f.fmt == "csv":
            csvs.append((f, fid))
            continue
        if f.fmt == "parquet" and not _GLOB.search(str(f.path)):
            if typed is None:  # some footer is unreadable: find it (and the typed ones) file by file
                try:
                    is_typed = _typed_schema(pq.read_schema(f.path))
                except Exception as exc:  # no valid footer: truncated or not Parquet
                    w.reject(f, fid, exc)
                    continue
            else:
                is_typed = typed.get(str(f.path), False)
            if is_typed:
                w.bulk.append((f, fid))
                continue
        w.read_one(f, fid)
    together, read, csvs = _csv_together(csvs)
    if together is not None:
        w.text.append(together)
        w.file_rows.extend(w.record(f, fid, n) for f, fid, n in read)
    for f, fid in csvs:
        w.read_one(f, fid)
    # Files rejected on an earlier run of this window stay on record.
    seen = {r[0] for r in w.file_rows} | {fid for _, fid in w.bulk}
    for f, err in lz.rejected_files(rejected, window_start):
        fid = file_id(f.path, rejected)
        if fid not in seen:
            w.file_rows.append(w.record(f, fid, None, "rejected", err))
    return w


def read_windows(con: duckdb.DuckDBPyConnection, landing: Path, rejected: Path, start: datetime, end: datetime,
                 workers: int = 2) -> int:
    """Only the reading part of :func:`ingest_windows`, windows side by side as there: list each window's
    files, read their footers, parse the CSV and odd files with Arrow and scan the bulk Parquet files
    into a temp table. Nothing is validated or stored (files a full ingest would reject are moved, as
    there). Returns the rows read. ``gridpipeline bench ingest`` times it: the floor that reading the
    files sets under any validation and store."""
    def one(ws: datetime) -> int:
        cur = con.cursor()
        try:
            return _read_window(cur, landing, rejected, ws)
        finally:
            cur.close()

    with _settings(con, SESSION_SETTINGS), ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return sum(pool.map(one, lz.windows(start, end)))


def _read_window(con: duckdb.DuckDBPyConnection, landing: Path, rejected: Path, window_start: datetime) -> int:
    w = _gather(con, landing, rejected, window_start)
    n = sum(t.num_rows for t in w.text)
    if w.bulk:
        con.register("bulk_files", _bulk_files(w.bulk))
        try:
            con.execute("CREATE OR REPLACE TEMP TABLE read_only AS "
                        + _bulk_parquet_sql([str(f.path) for f, _ in w.bulk]))
            n += con.execute("SELECT count(*) FROM read_only").fetchone()[0]
            con.execute("DROP TABLE read_only")
        finally:
            con.unregister("bulk_files")
    return n


def ingest_window(
    con: duckdb.DuckDBPyConnection,
    landing: Path,
    rejected: Path,
    window_start: datetime,
    now: datetime | None = None,
    future_tolerance_s: int = 300,
    max_age_days: int = 400,
) -> WindowReport:
    """Replace the window's rows in ``telemetry.raw_readings`` / ``quarantine`` / ``ingest_files``.

    Parquet files with the expected types (the bulk of a historian's exports) are read by DuckDB in
    one parallel scan; CSV and oddly typed files go through Arrow and are cast with TRY_CAST. A file
    that cannot be read at all is moved to the rejected folder."""
    window_end = window_start + lz.WINDOW
    now = now or datetime.now(timezone.utc).replace(tzinfo=None)
    rep = WindowReport(window_start)
    w = _gather(con, landing, rejected, window_start)
    text, file_rows, file_errors, row_errors, bulk = w.text, w.file_rows, w.file_errors, w.row_errors, w.bulk
    bulk_rows = w.bulk_rows()

    params = {"now": now, "future_s": future_tolerance_s, "max_age_days": max_age_days}
    try:
        while True:  # twice at most: the bulk scan, then (if it fails) every file read by Arrow
            con.register("file_errors", pa.table({"file_id": pa.array([e[0] for e in file_errors], pa.int64()),
                                                  "error": pa.array([e[1] for e in file_errors], pa.string())}))
            con.register("row_errors", pa.table({"file_id": pa.array([e[0] for e in row_errors], pa.int64()),
                                                 "row_number": pa.array([e[1] for e in row_errors], pa.int64()),
                                                 "row_error": pa.array([e[2] for e in row_errors], pa.string())}))
            rows = file_rows + bulk_rows
            cols = list(zip(*rows)) if rows else [[]] * 9
            con.register("file_list", pa.table({
                "file_id": pa.array(cols[0], pa.int64()),
                "window_start": pa.array(cols[1], pa.timestamp("us")),
                "file_path": pa.array(cols[2], pa.string()),
                "source": pa.array(cols[3], pa.string()),
                "arrived_at": pa.array(cols[4], pa.timestamp("us")),
                "bytes": pa.array(cols[5], pa.int64()),
                "rows_in": pa.array(cols[6], pa.int64()),
                "status": pa.array(cols[7], pa.string()),
                "error": pa.array(cols[8], pa.string()),
            }))
            con.register("bulk_files", _bulk_files(bulk))
            con.register("text_rows", pa.concat_tables(text) if text else _TEXT_SCHEMA.empty_table())
            typed_sql = _bulk_parquet_sql([str(f.path) for f, _ in bulk]) if bulk else \
                "SELECT * FROM typed_rows_in"
            con.register("typed_rows_in", _TYPED_SCHEMA.empty_table())
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute("CREATE OR REPLACE TEMP TABLE validated AS "
                            + _validated_sql(window_start, window_end, typed_sql, bool(row_errors)), params)
                break
            except duckdb.Error:
                con.execute("ROLLBACK")
                if not bulk:
                    raise
                # A file with a valid footer but broken pages spoils the bulk scan: take them one by one.
                for f, fid in bulk:
                    w.read_one(f, fid)
                bulk, bulk_rows = [], []
        try:
            con.execute("DELETE FROM telemetry.raw_readings WHERE ts >= ? AND ts < ?", [window_start, window_end])
            con.execute("DELETE FROM telemetry.quarantine WHERE window_start = ?", [window_start])
            con.execute("DELETE FROM telemetry.ingest_files WHERE window_start = ?", [window_start])
            rep.rows_stored = con.execute(
                "INSERT INTO telemetry.raw_readings SELECT sid::INTEGER, t, val, unit, arrived_at, file_id "
                "FROM validated WHERE reason IS NULL"
            ).fetchone()[0]
            rep.rows_quarantined = con.execute(
                """INSERT INTO telemetry.quarantine
                   SELECT ?, q.file_id, f.file_path, q.row_number,
                          coalesce(q.sid_raw, q.sid::VARCHAR), coalesce(q.ts_raw, q.t::VARCHAR),
                          coalesce(q.val_raw, q.val::VARCHAR), q.unit, q.reason, ?
                   FROM validated q LEFT JOIN file_list f USING (file_id)
                   WHERE q.reason IS NOT NULL""",
                [window_start, now],
            ).fetchone()[0]
            con.execute(
                """INSERT INTO telemetry.ingest_files
                   SELECT f.file_id, f.window_start, f.file_path, f.source, f.arrived_at, f.bytes,
                          CASE WHEN f.status = 'ok' THEN coalesce(f.rows_in, v.stored + v.quarantined, 0) END,
                          coalesce(v.stored, 0), coalesce(v.quarantined, 0), f.status, f.error, ?
                   FROM file_list f LEFT JOIN (
                       SELECT file_id, count(*) FILTER (WHERE reason IS NULL) AS stored,
                              count(*) FILTER (WHERE reason IS NOT NULL) AS quarantined
                       FROM validated GROUP BY 1) v USING (file_id)""",
                [now],
            )
            rep.rows_in = rep.rows_stored + rep.rows_quarantined
            rep.sensors_reporting = con.execute(
                "SELECT count(DISTINCT sid) FROM validated WHERE reason IS NULL").fetchone()[0]
            rep.reasons = dict(con.execute(
                "SELECT reason, count(*) FROM telemetry.quarantine WHERE window_start = ? GROUP BY 1 ORDER BY 2 DESC",
                [window_start]).fetchall())
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    finally:
        for name in ("typed_rows_in", "text_rows", "file_errors", "row_errors", "file_list", "bulk_files"):
            try:
                con.unregister(name)
            except Exception:
                pass
    file_rows += bulk_rows
    rep.files = sum(1 for r in file_rows if r[7] == "ok")
    rep.files_rejected = sum(1 for r in file_rows if r[7] == "rejected")
    rep.files_refused = sum(1 for r in file_rows if r[7] == "refused")
    rep.files_skipped = sum(1 for r in file_rows if r[7] == "skipped")
    # Lateness of exports only: a link's or a hidden file's time says nothing about the historian.
    late = [(r[4] - window_end).total_seconds() for r in file_rows if r[4] is not None and r[7] in ("ok", "rejected")]
    if late:
        rep.lateness_max_s = float(max(late))
        rep.lateness_p95_s = float(np.percentile(late, 95))
    return rep


def ingest_windows(
    con: duckdb.DuckDBPyConnection,
    landing: Path,
    rejected: Path,
    start: datetime,
    end: datetime,
    now: datetime | None = None,
    workers: int = 2,
    **kw,
) -> IngestReport:
    """Ingest every 5-minute window in ``[start, end)``; each window is replaced on its own.

    With ``workers`` > 1 and more than one window, windows are ingested side by side, each on its own
    cursor and in its own transaction (they touch disjoint rows, so they never conflict): a window's
    file reading is Python and its queries leave gaps a second window fills (1M readings in two
    windows: 0.44 s instead of 0.51 s on 2 cores). A failing window stops the range as it does one
    window at a time: no new window is started, the one in flight on the other cursor finishes, and
    the error of the earliest failed window is raised."""
    starts = lz.windows(start, end)
    report = IngestReport()
    with _settings(con, SESSION_SETTINGS):
        prepare(con)
        if workers <= 1 or len(starts) <= 1:
            report.windows = [ingest_window(con, landing, rejected, ws, now=now, **kw) for ws in starts]
            return report
        todo, lock, done, failed = iter(starts), threading.Lock(), {}, []

        def work() -> None:
            cur = con.cursor()
            try:
                prepare(cur)
                while True:
                    with lock:
                        ws = None if failed else next(todo, None)
                    if ws is None:
                        return
                    try:
                        done[ws] = ingest_window(cur, landing, rejected, ws, now=now, **kw)
                    except BaseException as exc:
                        with lock:
                            failed.append((ws, exc))
                        return
            finally:
                cur.close()

        n = min(workers, len(starts))
        with ThreadPoolExecutor(max_workers=n) as pool:
            for f in [pool.submit(work) for _ in range(n)]:
                f.result()
        if failed:
            raise min(failed, key=lambda f: f[0])[1]
        report.windows = [done[ws] for ws in starts]
    return report


# DuckDB settings the ingestion relies on (they are database-wide; restored afterwards):
SESSION_SETTINGS = {
    "TimeZone": "UTC",                    # naive timestamps are UTC instants
    "parquet_metadata_cache": True,       # footers are read once per window, not once per pass
    "preserve_insertion_order": False,    # nothing reads raw rows in insertion order; the append is 2x faster
}


@contextmanager
def _settings(con: duckdb.DuckDBPyConnection, values: dict[str, object]):
    def literal(v: object) -> str:
        return str(v).lower() if isinstance(v, bool) else "'" + str(v).replace("'", "''") + "'"

    before = {k: con.execute("SELECT current_setting(?)", [k]).fetchone()[0] for k in values}
    try:
        for k, v in values.items():
            con.execute(f"SET {k} = {literal(v)}")
        yield
    finally:
        for k, v in before.items():
            con.execute(f"SET {k} = {literal(v)}")


def prepare(con: duckdb.DuckDBPyConnection) -> None:
    """What the validation query needs on a connection: sensors and units visible."""
    con.execute("CREATE OR REPLACE TEMP VIEW sensors AS SELECT sensor_id, kind, unit, nominal FROM telemetry.sensors")
    con.register("units", load_unit_conversions())
