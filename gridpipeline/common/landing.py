"""The landing zone: where historian exports arrive, one file per source per export interval.

Layout (UTC)::

    <landing>/<YYYYMMDD>/<HHMM>/<source>__<YYYYMMDDTHHMMSS>Z[__<tag>].parquet|csv

``<YYYYMMDD>/<HHMM>`` is the 5-minute window the file's readings belong to (the partition), the
timestamp in the name is the start of the export interval. A file's arrival time is its mtime.
Writers create ``*.tmp`` and rename, so readers never see half a file.

Whoever can write the landing zone must not be able to make the pipeline read, move or touch anything
outside it: symlinks (to files or window folders) are never followed, only recorded as refused.

The layout is an interface both sides share, like a file format: the SCADA simulator of the world
writes it, the pipeline's ingestion reads it.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, replace
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
    size: int | None  # None for a refused link: what it points to is not looked at


# Why an entry of a window folder is not read (the ``ingest_files`` error of a refused / skipped entry).
SYMLINK = "symlink"                      # a link, to somewhere inside the landing zone
OUTSIDE = "outside_landing_zone"         # a link whose real path leaves the landing zone
HIDDEN = "hidden_file"                   # a dot-file: no export is hidden


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
    """The file's record from its own metadata (a link's, not its target's)."""
    return _entry(path, os.lstat(path))


def _entry(path: Path, st: os.stat_result) -> LandingFile:
    f = _landing_file(path, path.name, st)
    return replace(f, size=None) if stat.S_ISLNK(st.st_mode) else f


def _link_reason(link: Path, root: Path) -> str:
    """Why a link is refused. Resolving it reads links and lstat-s path components; nothing is opened."""
    real, top = os.path.realpath(link), os.path.realpath(root)
    return SYMLINK if os.path.commonpath([real, top]) == top else OUTSIDE


def _linked_folder(root: Path, window_start: datetime) -> Path | None:
    """The window's folder or its day folder, if either is a link (listing it would follow the link)."""
    d = window_dir(root, window_start)
    for p in (d.parent, d):
        try:
            if stat.S_ISLNK(os.lstat(p).st_mode):
                return p
        except (FileNotFoundError, NotADirectoryError):
            return None
    return None


def scan_window(landing: Path, window_start: datetime) -> tuple[list[LandingFile], list[tuple[LandingFile, str]]]:
    """The window's finished files to read, in name order, and the entries not read, with why.

    Links are refused, whether they point outside the landing zone or not (one inside would read a file
    twice, under another name): a linked file, or a linked window or day folder (then the folder is the
    one entry), is recorded from its own lstat; its target is never opened, listed or touched (only
    resolved, for the reason).
    Hidden files are recorded (``hidden_file``) and not read: no export is hidden, and a ``._<name>``
    AppleDouble twin even matches the naming rules. They are not errors either (not moved, not counted
    as rejected). In-flight files are not hidden: a writer's temporary name is ``<name>.tmp`` (see
    above), skipped without a record as before, as are ``*.error`` notes; an uploader
    whose temporary names are dot-files (rsync's ``.<name>.XXXXXX``) only leaves a ``hidden_file``
    record, and the window is read after its grace anyway. Folders and special files (FIFOs) are
    never opened."""
    link = _linked_folder(landing, window_start)
    if link is not None:
        return [], [(_entry(link, os.lstat(link)), _link_reason(link, landing))]
    d = window_dir(landing, window_start)
    try:
        entries = sorted(os.scandir(d), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return [], []
    files, refused = [], []
    for e in entries:
        path = d / e.name
        if e.is_symlink():
            refused.append((_entry(path, e.stat(follow_symlinks=False)), _link_reason(path, landing)))
        elif not e.is_file(follow_symlinks=False):
            continue
        elif e.name.startswith("."):
            refused.append((_entry(path, e.stat(follow_symlinks=False)), HIDDEN))
        elif not e.name.endswith((".tmp", ".error")):
            files.append(_landing_file(path, e.name, e.stat(follow_symlinks=False)))
    return files, refused


def window_files(landing: Path, window_start: datetime) -> list[LandingFile]:
    """Every finished file in the window's folder, in name order (links, hidden and *.tmp files skipped)."""
    return scan_window(landing, window_start)[0]


def windows(start: datetime, end: datetime) -> list[datetime]:
    """5-minute window starts in ``[start, end)``."""
    out, t = [], floor_window(start)
    while t < end:
        out.append(t)
        t += WINDOW
    return out


def fingerprint(landing: Path, window_start: datetime) -> str | None:
    """Changes whenever a file is added, replaced or removed in the window; None if empty.

    Links count by their own mtime; a linked window folder is fingerprinted by the link (not listed)."""
    link = _linked_folder(landing, window_start)
    if link is not None:
        return f"link-{os.lstat(link).st_mtime_ns}"
    d = window_dir(landing, window_start)
    try:
        entries = [e for e in os.scandir(d)
                   if (e.is_file(follow_symlinks=False) or e.is_symlink()) and not e.name.endswith(".tmp")]
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not entries:
        return None
    latest = max(e.stat(follow_symlinks=False).st_mtime_ns for e in entries)
    return f"{len(entries)}-{latest}"


def delivery_fingerprint(landing: Path, rejected: Path, window_start: datetime) -> str | None:
    """What was delivered for the window, whichever folder it sits in now: the number of files and the
    newest arrival over the landing and rejected folders (``.error`` notes and ``*.tmp`` left out).
    Ingestion moving a bad file to ``rejected/`` keeps both (the move keeps the arrival time), so only
    a new or re-sent file changes it, and a window is not re-ingested for its own rejections."""
    n, latest = 0, None
    for root in (landing, rejected):
        link = _linked_folder(root, window_start)
        if link is not None:
            n, latest = n + 1, max(latest or 0, os.lstat(link).st_mtime_ns)
            continue
        try:
            entries = [e for e in os.scandir(window_dir(root, window_start))
                       if (e.is_file(follow_symlinks=False) or e.is_symlink()) and not e.name.endswith((".tmp", ".error"))]
        except (FileNotFoundError, NotADirectoryError):
            continue
        if entries:
            n += len(entries)
            latest = max(latest or 0, max(e.stat(follow_symlinks=False).st_mtime_ns for e in entries))
    return None if not n else f"{n}-{latest}"


def recent_windows(landing: Path, since: datetime) -> list[datetime]:
    """Window starts that have a folder in the landing zone, at or after ``since``.

    A window folder that is a link is listed (its run records it as refused) but not entered; a day
    folder that is a link is not listed at all (naming its windows would mean listing the link's target)."""
    out = []
    if not landing.is_dir():
        return out
    days = sorted(e.name for e in os.scandir(landing) if e.is_dir(follow_symlinks=False) and e.name.isdigit())
    for day in days:
        if day < f"{since:%Y%m%d}":
            continue
        for w in sorted(e.name for e in os.scandir(landing / day)
                        if (e.is_dir(follow_symlinks=False) or e.is_symlink()) and e.name.isdigit()):
            try:
                t = datetime.strptime(day + w, "%Y%m%d%H%M")
            except ValueError:
                continue
            if t >= floor_window(since):
                out.append(t)
    return out


def _free_name(folder: Path, name: str) -> Path:
    """``name`` in ``folder``, or ``<stem>__dup<n><ext>`` if it (or its note) is taken: a re-delivered
    file never replaces the copy rejected before. The counter goes in as a name tag, so the copy's name
    still parses to the same source and export interval."""
    stem, dot, ext = name.rpartition(".")
    stem, ext = (stem, dot + ext) if stem else (name, "")
    dest, n = folder / name, 1
    while os.path.lexists(dest) or os.path.lexists(dest.with_name(dest.name + ".error")):
        n += 1
        dest = folder / f"{stem}__dup{n}{ext}"
    return dest


def move_to_rejected(f: LandingFile, landing: Path, rejected: Path, error: str) -> Path:
    """Move an unreadable file out of the landing zone, keeping its window folder and an .error note.

    Returns where it went: under its own name, unless an earlier rejected copy holds that name. Nothing
    is written through a link: a linked rejected folder is an error, the time is set on the moved entry
    itself and the note is created new ("x")."""
    rel = f.path.relative_to(landing)
    folder = (rejected / rel).parent
    folder.mkdir(parents=True, exist_ok=True)
    if any(stat.S_ISLNK(os.lstat(p).st_mode) for p in (folder.parent, folder)):
        raise OSError(f"rejected folder {folder} is a symlink: not moving {f.path.name} there")
    dest = _free_name(folder, rel.name)
    os.replace(f.path, dest)
    ns = (f.arrived_at - _EPOCH) // timedelta(microseconds=1) * 1000  # exact: reads back as the same arrival
    os.utime(dest, ns=(ns, ns), follow_symlinks=False)
    with open(dest.with_name(dest.name + ".error"), "x") as fh:
        fh.write(error)
    return dest


def _note(path: Path) -> str:
    """A rejected file's .error note; only a regular file is read (a planted link is not followed)."""
    try:
        if stat.S_ISREG(os.lstat(path).st_mode):
            with open(path, errors="replace") as fh:
                return fh.read(1000)
    except FileNotFoundError:
        pass
    return "rejected"


def rejected_files(rejected: Path, window_start: datetime) -> list[tuple[LandingFile, str]]:
    """The window's rejected files with their notes, from their own metadata (links not followed)."""
    if _linked_folder(rejected, window_start) is not None:
        return []
    d = window_dir(rejected, window_start)
    try:
        entries = sorted(os.scandir(d), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [(_entry(d / e.name, e.stat(follow_symlinks=False)), _note(d / (e.name + ".error")))
            for e in entries
            if (e.is_file(follow_symlinks=False) or e.is_symlink()) and not e.name.endswith(".error")]
