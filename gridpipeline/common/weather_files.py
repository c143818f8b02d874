"""The weather provider's drop folder: numerical-weather-prediction runs and station observations.

A utility buys its weather: a provider drops forecast runs and the observations of a nearby station
into a folder. The simulated world writes this folder (:mod:`gridpipeline.world.weather_service`) and
the pipeline reads it (:mod:`gridpipeline.sources.weather`); this module is the format both agree on.

Layout (all times UTC)::

    <weather_dir>/forecasts/nwp_<INIT:%Y%m%dT%H%M>Z_avail_<AVAIL:%Y%m%dT%H%M>Z.parquet
    <weather_dir>/observations/<YYYYMMDD>.parquet

Forecast runs
    One file per NWP run, initialised every :data:`RUN_INTERVAL` (00, 06, 12 and 18 UTC, the
    synoptic cycles of GFS and ECMWF) and available :data:`AVAILABILITY_DELAY` after its
    initialisation. A global model needs hours for data cut-off, assimilation, integration and
    dissemination: real runs reach users roughly 3.5 h (GFS) to 6 h (ECMWF HRES) after their cycle
    time; this provider delivers after 3 h, so a run initialised at 06 UTC is first usable at 09 UTC
    and a forecast issued at 08:55 still uses the 00 UTC run. The name carries both times so a
    reader can choose the runs available at any instant without opening a file. Rows are hourly
    ``valid_time`` from INIT to INIT + :data:`RUN_LENGTH` (49 rows), with ``init_time``,
    ``lead_hours`` and the weather in pvlib's TMY3 names (:data:`VARIABLES`, those the provider has).
    A file's mtime is its availability time.

Observations
    The station feed at :data:`OBSERVATION_STEP` steps, one file per UTC day (column ``time``),
    rewritten as the day fills. An observation, once written, never changes; the file never holds a
    time the provider has not observed yet.

Every write goes to a hidden ``.*.tmp`` file in the same folder and is renamed into place, so readers
never see half a file; observation files are merged under a lock so that two writers (a live
simulator and a history import) never lose each other's rows.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

FORECASTS = "forecasts"
OBSERVATIONS = "observations"
#: NWP runs start every 6 h (00, 06, 12, 18 UTC).
RUN_INTERVAL = pd.Timedelta(hours=6)
#: A run is available this long after its initialisation time (see the module docstring).
AVAILABILITY_DELAY = pd.Timedelta(hours=3)
#: Each run reaches this far past its initialisation time.
RUN_LENGTH = pd.Timedelta(hours=48)
#: Time step of a run's rows.
RUN_STEP = pd.Timedelta(hours=1)
#: Time step of the observations feed.
OBSERVATION_STEP = pd.Timedelta(minutes=5)
#: Weather columns a file may hold (pvlib TMY3 names and units: W/m², °C, %, m/s, hPa, % cover).
VARIABLES = ("ghi", "dni", "dhi", "temp_air", "temp_dew", "relative_humidity", "wind_speed", "pressure",
             "cloud_cover_total", "cloud_cover_opaque")

_RUN_NAME = re.compile(r"^nwp_(?P<init>\d{8}T\d{4})Z_avail_(?P<avail>\d{8}T\d{4})Z\.parquet$")
_STAMP = "%Y%m%dT%H%M"
_TS = pa.timestamp("us", tz="UTC")


class NoForecastAvailable(Exception):
    """No run available at the issue time covers the requested horizon; the message says why."""


@dataclass(frozen=True)
class RunFile:
    """One forecast run in the drop folder."""

    init_time: pd.Timestamp
    available_at: pd.Timestamp
    path: Path


# ------------------------------------------------------------------------------------------------ times
def utc_timestamp(ts: datetime | pd.Timestamp | str) -> pd.Timestamp:
    """``ts`` as a tz-aware UTC Timestamp (a naive time is taken to be UTC already)."""
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def available_at(init: datetime | pd.Timestamp) -> pd.Timestamp:
    """When the run initialised at ``init`` becomes available."""
    return utc_timestamp(init) + AVAILABILITY_DELAY


def run_inits(since: datetime | pd.Timestamp, until: datetime | pd.Timestamp) -> pd.DatetimeIndex:
    """Initialisation times ``>= since`` of the runs available at ``until`` (on the 6-hour grid)."""
    first = utc_timestamp(since).ceil(RUN_INTERVAL)
    last = (utc_timestamp(until) - AVAILABILITY_DELAY).floor(RUN_INTERVAL)
    if first > last:
        return pd.DatetimeIndex([], tz="UTC")
    return pd.date_range(first, last, freq=RUN_INTERVAL)


def run_valid_times(init: datetime | pd.Timestamp) -> pd.DatetimeIndex:
    """The hourly valid times of the run initialised at ``init``: INIT .. INIT + RUN_LENGTH."""
    i = utc_timestamp(init)
    return pd.date_range(i, i + RUN_LENGTH, freq=RUN_STEP)


# ------------------------------------------------------------------------------------------------ paths
def forecast_path(weather_dir: Path, init: datetime | pd.Timestamp) -> Path:
    i = utc_timestamp(init)
    return Path(weather_dir) / FORECASTS / f"nwp_{i:{_STAMP}}Z_avail_{available_at(i):{_STAMP}}Z.parquet"


def observation_path(weather_dir: Path, day: datetime | pd.Timestamp) -> Path:
    return Path(weather_dir) / OBSERVATIONS / f"{utc_timestamp(day):%Y%m%d}.parquet"


def parse_run_name(name: str) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """(init, available) from a run file name, or None for any other name (tmp files, strays)."""
    m = _RUN_NAME.match(name)
    if not m:
        return None
    try:
        init = pd.Timestamp(datetime.strptime(m["init"], _STAMP), tz="UTC")
        avail = pd.Timestamp(datetime.strptime(m["avail"], _STAMP), tz="UTC")
    except ValueError:  # digits that are no date
        return None
    return init, avail


def list_runs(weather_dir: Path) -> list[RunFile]:
    """Every run file in the folder, oldest initialisation first."""
    d = Path(weather_dir) / FORECASTS
    try:
        names = os.listdir(d)
    except (FileNotFoundError, NotADirectoryError):
        return []
    runs = []
    for name in names:
        parsed = parse_run_name(name)
        if parsed is not None:
            runs.append(RunFile(parsed[0], parsed[1], d / name))
    return sorted(runs, key=lambda r: (r.init_time, r.available_at))


# ------------------------------------------------------------------------------------------------ writing
def _atomic_write_table(table: pa.Table, path: Path, mtime: pd.Timestamp | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.chmod(tmp, 0o644)
        if mtime is not None:
            stamp = mtime.timestamp()
            os.utime(tmp, (stamp, stamp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _weather_columns(frame: pd.DataFrame) -> list[str]:
    unknown = [c for c in frame.columns if c not in VARIABLES]
    if unknown:
        raise ValueError(f"unknown weather columns {unknown}; known: {', '.join(VARIABLES)}")
    return [c for c in VARIABLES if c in frame.columns]


def _index_utc(frame: pd.DataFrame) -> pd.DatetimeIndex:
    idx = pd.DatetimeIndex(frame.index)
    return idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")


def write_forecast_run(weather_dir: Path, init: datetime | pd.Timestamp, frame: pd.DataFrame) -> Path:
    """Write one run: ``frame`` indexed by its hourly valid times (:func:`run_valid_times`), columns
    among :data:`VARIABLES`. Stored as float32, the precision of the provider's values."""
    i = utc_timestamp(init)
    valid = run_valid_times(i)
    if not _index_utc(frame).equals(valid):
        raise ValueError(f"a run initialised at {i} must have the {len(valid)} hourly valid times "
                         f"{valid[0]} .. {valid[-1]}")
    cols = _weather_columns(frame)
    lead = ((valid - i) // pd.Timedelta(hours=1)).to_numpy().astype(np.int16)
    table = pa.table({
        "valid_time": pa.array(valid.tz_convert("UTC").as_unit("us").tz_localize(None).to_numpy(), _TS),
        "init_time": pa.array(np.full(len(valid), i.tz_localize(None).as_unit("us").to_datetime64()), _TS),
        "lead_hours": pa.array(lead, pa.int16()),
        **{c: pa.array(frame[c].to_numpy(dtype=np.float32), pa.float32()) for c in cols},
    })
    path = forecast_path(weather_dir, i)
    _atomic_write_table(table, path, mtime=available_at(i))
    return path


@contextmanager
def _observation_lock(weather_dir: Path) -> Iterator[None]:
    d = Path(weather_dir) / OBSERVATIONS
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _read_observation_file(path: Path) -> pd.DataFrame:
    df = pq.read_table(path).to_pandas()
    idx = pd.DatetimeIndex(df.pop("time")).as_unit("ns")
    return df.set_axis(idx.rename("time"), axis=0)


def write_observations(weather_dir: Path, frame: pd.DataFrame) -> list[Path]:
    """Add the observations of ``frame`` (UTC index on the :data:`OBSERVATION_STEP` grid, columns
    among :data:`VARIABLES`) to their day files. Times a file already holds keep their values (an
    observation does not change once published); a day file without new times is left untouched.
    Returns the files rewritten."""
    if frame.empty:
        return []
    idx = _index_utc(frame)
    if ((idx - idx.floor(OBSERVATION_STEP)) != pd.Timedelta(0)).any():
        raise ValueError(f"observation times must lie on the {OBSERVATION_STEP.total_seconds() / 60:g}-minute grid")
    cols = _weather_columns(frame)
    new = frame[cols].astype(np.float32).set_axis(idx.as_unit("ns").rename("time"), axis=0)
    new = new[~new.index.duplicated(keep="first")].sort_index()
    written = []
    with _observation_lock(weather_dir):
        for day, part in new.groupby(new.index.floor("D")):
            path = observation_path(weather_dir, day)
            if path.exists():
                old = _read_observation_file(path)
                fresh = part[~part.index.isin(old.index)]
                if fresh.empty:
                    continue
                part = pd.concat([old, fresh]).sort_index()
            columns = [c for c in VARIABLES if c in part.columns]
            table = pa.table({
                "time": pa.array(part.index.as_unit("us").tz_localize(None).to_numpy(), _TS),
                **{c: pa.array(part[c].to_numpy(dtype=np.float32), pa.float32()) for c in columns},
            })
            _atomic_write_table(table, path, mtime=part.index.max())
            written.append(path)
    return written


# ------------------------------------------------------------------------------------------------ reading
def read_run(path: Path) -> pd.DataFrame:
    """One run file as a frame indexed by UTC ``valid_time`` (hourly), with ``lead_hours`` and the
    weather columns as float64."""
    df = pq.read_table(path).to_pandas()
    idx = pd.DatetimeIndex(df.pop("valid_time")).as_unit("ns").rename("valid_time")
    df = df.drop(columns=["init_time"]).set_axis(idx, axis=0)
    return df.astype({c: float for c in df.columns if c in VARIABLES})


def read_forecast_asof(weather_dir: Path, issue: datetime | pd.Timestamp, horizon: pd.Timedelta,
                       step: str = "5min") -> tuple[pd.DataFrame, dict]:
    """The forecast a user had at ``issue``: the newest run available at ``issue`` (never one that
    became available later), over ``[issue, issue + horizon)`` at ``step``, interpolated linearly in
    time between the run's hourly values.

    Returns the frame (index UTC valid times, weather columns) and where it came from:
    ``{"source", "init_time", "avail", "age", "path"}`` (``age`` = issue - init_time). Raises
    :class:`NoForecastAvailable` when no run was available at ``issue`` or the newest one ends
    before the horizon does (older runs end even earlier). An unreadable newest file is skipped for
    the next newest, which may still cover the horizon.
    """
    issue = utc_timestamp(issue)
    horizon = pd.Timedelta(horizon)
    target = pd.date_range(issue, issue + horizon, freq=step, inclusive="left", name="valid_time")
    runs = [r for r in list_runs(weather_dir) if r.available_at <= issue]
    if not runs:
        raise NoForecastAvailable(f"no NWP run in {Path(weather_dir) / FORECASTS} was available at "
                                  f"{issue:%Y-%m-%d %H:%M}Z")
    problems = []
    for run in reversed(runs):
        try:
            frame = read_run(run.path)
        except (OSError, pa.ArrowException, ValueError, KeyError) as exc:
            problems.append(f"{run.path.name}: {type(exc).__name__}: {exc}")
            log.warning("skipping unreadable NWP run %s: %s", run.path, exc)
            continue
        if len(target) and (target[-1] > frame.index.max() or target[0] < frame.index.min()):
            raise NoForecastAvailable(
                f"the newest NWP run available at {issue:%Y-%m-%d %H:%M}Z (init {run.init_time:%Y-%m-%d %H:%M}Z) "
                f"covers {frame.index.min():%Y-%m-%d %H:%M}Z .. {frame.index.max():%Y-%m-%d %H:%M}Z, "
                f"not the horizon to {target[-1]:%Y-%m-%d %H:%M}Z")
        weather = frame[[c for c in VARIABLES if c in frame.columns]]
        both = weather.index.union(target)
        out = weather.reindex(both).interpolate(method="time", limit_area="inside").reindex(target)
        info = {"source": "nwp_file", "init_time": run.init_time, "avail": run.available_at,
                "age": issue - run.init_time, "path": str(run.path)}
        return out, info
    raise NoForecastAvailable(f"no readable NWP run available at {issue:%Y-%m-%d %H:%M}Z: " + "; ".join(problems))


def read_observations(weather_dir: Path, start: datetime | pd.Timestamp,
                      end: datetime | pd.Timestamp) -> pd.DataFrame:
    """The observations in ``[start, end)`` that exist (index UTC ``time`` at :data:`OBSERVATION_STEP`,
    weather columns as float64); times the station has not reported are absent, never filled."""
    start, end = utc_timestamp(start), utc_timestamp(end)
    frames = []
    if end > start:
        for day in pd.date_range(start.floor("D"), (end - pd.Timedelta(1, "ns")).floor("D"), freq="D"):
            path = observation_path(weather_dir, day)
            if not path.exists():
                continue
            try:
                frames.append(_read_observation_file(path))
            except (OSError, pa.ArrowException, ValueError, KeyError) as exc:
                log.warning("skipping unreadable observation file %s: %s", path, exc)
    if not frames:
        return pd.DataFrame(columns=list(VARIABLES), index=pd.DatetimeIndex([], tz="UTC", name="time"), dtype=float)
    obs = pd.concat(frames).sort_index()
    obs = obs[(obs.index >= start) & (obs.index < end)]
    return obs[[c for c in VARIABLES if c in obs.columns]].astype(float)
