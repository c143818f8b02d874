"""The landing zone: where historian exports arrive, one file per source per export interval.

Layout (UTC)::

    <landing>/<YYYYMMDD>/<HHMM>/<source>__<YYYYMMDDTHHMMSS>Z[__<tag>].parquet|csv

``<YYYYMMDD>/<HHMM>`` is the 5-minute window the file's readings belong to (the partition), the
timestamp in the name is the start of the export interval. A file's arrival time is its mtime.
Writers create ``*.tmp`` and rename, so readers never see half a file.

The layout is an interface both sides share, like a file format: the SCADA simulator of the world
writes it, the pipeline's ingestion reads it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

WINDOW = timedelta(minutes=5)
_NAME = re.compile(r"^(?P<source>.+?)__(?P<ts>\d{8}T\d{6})Z(?:__(?P<tag>[^.]+))?\.(?P<ext>parquet|csv)$")
FORMATS = ("parquet", "csv")


def floor_window(ts: datetime) -> datetime:
    ts = ts.replace(second=0, microsecond=0)
    return ts - timedelta(minutes=ts.minute % 5)


def window_dir(landing: Path, window_start: datetime) -> Path:
    return landing / f"{window_start:%Y%m%d}" / f"{window_start:%H%M}"


def file_name(source: str, export_start: datetime, ext: str, tag: str | None = None) -> str:
    return f"{source}__{export_start:%Y%m%dT%H%M%S}Z" + (f"__{tag}" if tag else "") + f".{ext}"


@dataclass(frozen=True)
class LandingFile:
    path: Path
    source: str | None
    export_start: datetime | None
    fmt: str
    arrived_at: datetime
    size: int


_EPOCH = datetime(1970, 1, 1)


def _export_start(ts: str) -> datetime:
    """``YYYYMMDDTHHMMSS`` (matched by the name pattern) without strptime's per-call cost."""
    return datetime(int(ts[0:4]), int(ts[4:6]), int(ts[6:8]), int(ts[9:11]), int(ts[11:13]), int(ts[13:15]))


def _landing_file(path: Path, name: str, st: os.stat_result) -> LandingFile:
    m = _NAME.match(name)
    arrived = _EPOCH + timedelta(microseconds=(st.st_mtime_ns + 500) // 1000)  # nearest microsecond
    if not m:
        return LandingFile(path, None, None, path.suffix.lstrip(".").lower(), arrived, st.st_size)
    try:
        start = _export_start(m["ts"])
    except ValueError:  # digits that are no date (month 13): the name says nothing usable
        return LandingFile(path, None, None, m["ext"], arrived, st.st_size)
    return LandingFile(path, m["source"], start, m["ext"], arrived, st.st_size)


def parse(path: Path) -> LandingFile:
    return _landing_file(path, path.name, path.stat())


def window_files(landing: Path, window_start: datetime) -> list[LandingFile]:
    """Every finished file in the window's folder, in name order (hidden and *.tmp files skipped)."""
    d = window_dir(landing, window_start)
    try:
        entries = sorted((e for e in os.scandir(d)
                          if not e.name.startswith(".") and not e.name.endswith((".tmp", ".error")) and e.is_file()),
                         key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [_landing_file(d / e.name, e.name, e.stat()) for e in entries]


def windows(start: datetime, end: datetime) -> list[datetime]:
    """5-minute window starts in ``[start, end)``."""
    out, t = [], floor_window(start)
    while t < end:
        out.append(t)
        t += WINDOW
    return out


def fingerprint(landing: Path, window_start: datetime) -> str | None:
    """Changes whenever a file is added, replaced or removed in the window; None if empty."""
    d = window_dir(landing, window_start)
    try:
        entries = [e for e in os.scandir(d) if e.is_file() and not e.name.endswith(".tmp")]
    except FileNotFoundError:
        return None
    if not entries:
        return None
    latest = max(e.stat().st_mtime_ns for e in entries)
    return f"{len(entries)}-{latest}"


def recent_windows(landing: Path, since: datetime) -> list[datetime]:
    """Window starts that have a folder in the landing zone, at or after ``since``."""
    out = []
    if not landing.is_dir():
        return out
    for day in sorted(p for p in landing.iterdir() if p.is_dir() and p.name.isdigit()):
        if day.name < f"{since:%Y%m%d}":
            continue
        for w in sorted(p for p in day.iterdir() if p.is_dir() and p.name.isdigit()):
            try:
                t = datetime.strptime(day.name + w.name, "%Y%m%d%H%M")
            except ValueError:
                continue
            if t >= floor_window(since):
                out.append(t)
    return out


def move_to_rejected(f: LandingFile, landing: Path, rejected: Path, error: str) -> Path:
    """Move an unreadable file out of the landing zone, keeping its window folder and an .error note."""
    rel = f.path.relative_to(landing)
    dest = rejected / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(f.path, dest)
    ns = (f.arrived_at - _EPOCH) // timedelta(microseconds=1) * 1000  # exact: reads back as the same arrival
    os.utime(dest, ns=(ns, ns))
    dest.with_name(dest.name + ".error").write_text(error)
    return dest


def rejected_files(rejected: Path, window_start: datetime) -> list[tuple[LandingFile, str]]:
    d = window_dir(rejected, window_start)
    if not d.is_dir():
        return []
    out = []
    for p in sorted(d.iterdir()):
        if p.is_file() and not p.name.endswith(".error"):
            err = p.with_name(p.name + ".error")
            out.append((parse(p), err.read_text() if err.exists() else "rejected"))
    return out
