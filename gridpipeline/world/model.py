"""Load a grid world and ask it for injections and weather at any UTC instants.

A *world* is a pandapower network plus SimBench's relative profiles for the profile year 2016 and the
TMY3 weather of its location (Greensboro NC, see ``data/README.md``).

Calendar
    The world lives on a local civil calendar, ``world.meta["timezone"]`` (``America/New_York`` for
    the sample, and for worlds whose ``world.json`` names none), with daylight saving time: people
    switch on their lights by the wall clock, and the pipeline's forecast calendar is the same zone.
    A UTC instant is converted to local wall-clock time, then mapped onto the 2016 profile axis by a
    *weekday-aligned* day of year: the 2016 day nearest the same day of year that falls on the same
    weekday (a shift of -3..+3 days, constant within a calendar year, see :func:`profile_day`),
    keeping the time of day. So a Friday gets a Friday's shape and 17:00 local is 17:00 on the
    profile all year round. Between 15-minute points the profiles are interpolated linearly,
    wrapping from Dec 31 23:45 to Jan 1 00:00. The mapping is a function of the instant alone, so
    values never depend on which other instants are asked for. In the repeated fall-back hour the
    wall clock shows the same times twice and the profiles repeat; the skipped spring-forward hour
    is never read.
    Weather is stored on the same 2016 axis in UTC (TMY3 is a sequence of real days, not a weekly
    pattern) and is mapped by month, day and UTC time of day (:func:`year_position`).

Moved worlds
    ``load_world(shift_h=h)`` (setting ``GRIDPIPELINE_WORLD_SHIFT_H``) moves the world ``h`` hours
    east: its longitude by 15·h degrees and its clock to the fixed zone UTC+(offset + h), so that at
    UTC ``t`` it shows what the unmoved world shows at ``t + h`` (weather, sun, load by the wall
    clock). The grid, fleet, weather days and profiles are the same; only the hour of the day at a
    given UTC instant changes. It lets a live benchmark that needs the sun run at any hour of the
    day. The pipeline is told the new place through its own settings (``site_longitude``,
    ``forecast_tz``), as a utility knows where it is; it never reads the world's.

Load noise
    Every load gets a stationary AR(1)-like multiplicative noise (sigma 2 %, correlation time 2 min),
    defined on a 30-second grid and interpolated between grid points. The value at a grid point is
    ``sum_k w_k e(element, g - k)`` over 20 taps with ``w_k`` proportional to ``phi**k`` (the AR(1)
    impulse response, normalised to unit variance) and ``e`` drawn from a hash of (element id, grid
    index). It therefore depends only on the instant, never on which other instants are asked for in
    the same call: results are bitwise identical however the times are chunked.

PV and wind
    Generators of SimBench types ``PV*``/``lv_RES`` (rooftop PV) follow the TMY3 weather through pvlib
    (``common.renewables.pv_physics``: a 25° south-facing array), and ``Wind*`` through the E-82
    power curve at 100 m (10 m wind, power-law shear 1/7), as fractions of their rating. Other
    generators keep their SimBench profiles. So the weather the forecasts read is the weather the
    grid's generation follows.

Batteries
    ``storage_p_mw`` follows a fixed schedule in local *solar* time (UTC + longitude/15 h): charge at
    50 % of the rating from 10:00 to 14:00, discharge at 50 % from 17:00 to 21:00, idle otherwise.
    Sign as in pandapower: p > 0 charges (consumes).

All values are actual MW/Mvar (the element's ``scaling`` is already applied); arrays are
``(n_times, n_elements)`` in the row order of the net's tables (``*_index`` give the labels).
"""

from __future__ import annotations

import json
import logging
import time
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gridpipeline.common.zones import compute_zones
from gridpipeline.world.build import (
    DEFAULT_TIMEZONE,
    FORMAT_VERSION,
    N_STEPS,
    PROFILE_YEAR,
    STEP_MINUTES,
    WORLD_SPECS,
    annual_load_mwh,
    profile_column_for,
)

log = logging.getLogger(__name__)

SAMPLE_SUBDIR = "sample_grid"

# Load noise parameters (see module docstring).
NOISE_SIGMA = 0.02
NOISE_STEP_S = 30
NOISE_TAU_S = 120.0
NOISE_TAPS = 20
NOISE_SEED = 0x5EED_6121_D0D0_0001
_PHI = float(np.exp(-NOISE_STEP_S / NOISE_TAU_S))
_TAP_W = _PHI ** np.arange(NOISE_TAPS)
_TAP_W = _TAP_W / np.sqrt(np.sum(_TAP_W**2))

# Battery schedule (local solar time, hours) and the share of the rating used.
CHARGE_HOURS = (10.0, 14.0)
DISCHARGE_HOURS = (17.0, 21.0)
SCHEDULE_SHARE = 0.5

# Days before each month in a leap year (the profile year 2016).
_CUM_DAYS_LEAP = np.array([0, 31, 60, 91, 121, 152, 182, 213, 244, 274, 305, 335])
#: Weekday (Monday = 0) of Jan 1 of the profile year: 2016-01-01 was a Friday.
PROFILE_YEAR_JAN1_WEEKDAY = pd.Timestamp(PROFILE_YEAR, 1, 1).dayofweek
_PROFILE_DAYS = N_STEPS * STEP_MINUTES // (24 * 60)  # 366
_WEEKS_52 = 364  # whole weeks: moving a day by this keeps its weekday


# ----------------------------------------------------------------------------------------------- types
@dataclass(frozen=True)
class Injections:
    """Power injections of every load, static generator and battery at ``times``.

    Arrays are ``(len(times), n_elements)`` in the row order of ``net.load``/``net.sgen``/``net.storage``
    (``load_index`` etc. are those tables' index labels). Loads and batteries: p > 0 consumes;
    static generators: p > 0 generates (pandapower conventions).
    """

    times: pd.DatetimeIndex
    load_index: np.ndarray
    sgen_index: np.ndarray
    storage_index: np.ndarray
    load_p_mw: np.ndarray
    load_q_mvar: np.ndarray
    sgen_p_mw: np.ndarray
    sgen_q_mvar: np.ndarray
    storage_p_mw: np.ndarray
    storage_q_mvar: np.ndarray

    def __len__(self) -> int:
        return len(self.times)

    def take(self, rows) -> Injections:
        """The injections at the given row positions (an int array, slice or boolean mask)."""
        rows = np.arange(len(self))[rows]
        return Injections(
            times=self.times[rows],
            load_index=self.load_index,
            sgen_index=self.sgen_index,
            storage_index=self.storage_index,
            **{
                f: getattr(self, f)[rows]
                for f in (
                    "load_p_mw",
                    "load_q_mvar",
                    "sgen_p_mw",
                    "sgen_q_mvar",
                    "storage_p_mw",
                    "storage_q_mvar",
                )
            },
        )


# ---------------------------------------------------------------------------------------------- clocks
def as_utc(times) -> pd.DatetimeIndex:
    """``times`` as a UTC DatetimeIndex (naive times are taken to be UTC already)."""
    idx = pd.DatetimeIndex(times)
    return idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")


def year_position(times: pd.DatetimeIndex, utc_offset_h: float = 0.0) -> np.ndarray:
    """Fractional 15-minute step on the 2016 axis of each UTC instant, read on a clock UTC+offset, by
    month, day and time of day. The weather's mapping (UTC, offset 0); profiles use :func:`profile_position`."""
    local = as_utc(times).tz_convert(None) + pd.Timedelta(hours=float(utc_offset_h))
    sec = (local - local.normalize()).to_numpy().astype("timedelta64[ns]").astype(np.int64) / 1e9
    doy = _CUM_DAYS_LEAP[local.month.to_numpy() - 1] + local.day.to_numpy() - 1
    return (doy * 86400.0 + sec) / (STEP_MINUTES * 60.0)


def profile_day(day_of_year: np.ndarray, weekday: np.ndarray) -> np.ndarray:
    """The 0-based day of the profile year 2016 that stands in for local dates with 0-based
    ``day_of_year`` and ``weekday`` (Monday = 0): the 2016 day nearest the same day of year that falls
    on the same weekday, i.e. shifted by -3..+3 days.

    Within one calendar year the day of year and the weekday advance together, so the shift is the
    same for every day of the year and consecutive dates map to consecutive profile days. A shifted
    day before Jan 1 or after Dec 31 2016 is moved by 52 weeks (364 days) back into the year, which
    keeps its weekday and its place in the year's end-of-year holiday fortnight; wrapping by the
    year's 366 days would not keep the weekday.
    """
    doy = np.asarray(day_of_year, dtype=np.int64)
    shift = (np.asarray(weekday, dtype=np.int64) - PROFILE_YEAR_JAN1_WEEKDAY - doy + 3) % 7 - 3
    d = doy + shift
    return np.where(d < 0, d + _WEEKS_52, np.where(d >= _PROFILE_DAYS, d - _WEEKS_52, d))


def profile_position(times, timezone: str = DEFAULT_TIMEZONE) -> np.ndarray:
    """Fractional 15-minute step on the 2016 profile axis of each instant of ``times``: local
    wall-clock time in ``timezone`` (with daylight saving), on the weekday-aligned profile day
    (:func:`profile_day`)."""
    wall = as_utc(times).tz_convert(timezone).tz_localize(None)
    sec = (wall - wall.normalize()).to_numpy().astype("timedelta64[ns]").astype(np.int64) / 1e9
    day = profile_day(wall.dayofyear.to_numpy() - 1, wall.dayofweek.to_numpy())
    return (day * 86400.0 + sec) / (STEP_MINUTES * 60.0)


def _interp_rows(matrix: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Rows of ``matrix`` (the periodic 2016 axis) linearly interpolated at fractional steps ``pos``."""
    n = matrix.shape[0]
    base = np.floor(pos)
    w = (pos - base)[:, None]
    i0 = base.astype(np.int64) % n
    i1 = (i0 + 1) % n
    return matrix[i0].astype(np.float64) * (1.0 - w) + matrix[i1].astype(np.float64) * w


# ----------------------------------------------------------------------------------------------- noise
_U64 = np.uint64


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + _U64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def _element_keys(ids: np.ndarray) -> np.ndarray:
    return _splitmix64(np.asarray(ids, dtype=np.int64).view(np.uint64) ^ _U64(NOISE_SEED))


def _shocks(keys: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Unit-variance uniform shocks e(element, grid index): (len(g), len(keys))."""
    gk = _splitmix64(np.asarray(g, dtype=np.int64).view(np.uint64))
    h = _splitmix64(keys[None, :] ^ gk[:, None])
    u = (h >> _U64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
    return (u - 0.5) * np.sqrt(12.0)


def _noise_on_grid(keys: np.ndarray, grid: np.ndarray, max_cells: int = 2_000_000) -> np.ndarray:
    """Unit-variance noise at sorted unique grid indices ``grid``: (len(grid), len(keys)).

    Dense runs are filtered over their whole span, isolated points gathered tap by tap; both sum the
    taps in the same order, so the result does not depend on which path computed it.
    """
    K, n_el = NOISE_TAPS, len(keys)
    out = np.empty((len(grid), n_el))
    if len(grid) == 0 or n_el == 0:
        return out
    breaks = np.flatnonzero(np.diff(grid) > K) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [len(grid)]])
    gather: list[np.ndarray] = []
    rows_per_chunk = max(1, max_cells // max(n_el, 1))
    for s, e in zip(starts, ends):
        span = int(grid[e - 1] - grid[s]) + 1
        if (e - s) < 4 or 2 * (span + K - 1) >= (e - s) * K:
            gather.append(np.arange(s, e))
            continue
        for a in range(int(grid[s]), int(grid[e - 1]) + 1, rows_per_chunk):
            b = min(a + rows_per_chunk, int(grid[e - 1]) + 1)
            sel = np.arange(s, e)[(grid[s:e] >= a) & (grid[s:e] < b)]
            if len(sel) == 0:
                continue
            shocks = _shocks(keys, np.arange(a - K + 1, b))
            x = np.zeros((b - a, n_el))
            for k in range(K):
                x += _TAP_W[k] * shocks[K - 1 - k : K - 1 - k + (b - a)]
            out[sel] = x[grid[sel] - a]
    if gather:
        rows = np.concatenate(gather)
        for c in range(0, len(rows), rows_per_chunk):
            r = rows[c : c + rows_per_chunk]
            x = np.zeros((len(r), n_el))
            for k in range(K):
                x += _TAP_W[k] * _shocks(keys, grid[r] - k)
            out[r] = x
    return out


def load_noise(ids: np.ndarray, times: pd.DatetimeIndex) -> np.ndarray:
    """Relative noise (sigma ``NOISE_SIGMA``) of elements ``ids`` at UTC ``times``: (n_times, n_ids)."""
    ns = as_utc(times).asi8
    step = np.int64(NOISE_STEP_S * 1_000_000_000)
    g0 = ns // step
    w = ((ns - g0 * step) / float(step))[:, None]
    need = np.concatenate([g0, g0[w[:, 0] > 0] + 1])
    grid = np.unique(need)
    x = _noise_on_grid(_element_keys(ids), grid)
    i0 = np.searchsorted(grid, g0)
    i1 = np.where(w[:, 0] > 0, np.searchsorted(grid, g0 + 1), i0)
    return NOISE_SIGMA * (x[i0] * (1.0 - w) + x[i1] * w)


# ----------------------------------------------------------------------------------------------- world
def _col(el: pd.DataFrame, name: str, default: float) -> np.ndarray:
    if name not in el:
        return np.full(len(el), default, dtype=float)
    return el[name].astype(float).fillna(default).to_numpy()


@dataclass
class World:
    """A grid world: the network, its zones, profiles and weather (see the module docstring)."""

    name: str
    net: object  # pandapowerNet
    zones: pd.Series
    meta: dict = field(default_factory=dict, repr=False)
    profiles: pd.DataFrame | None = field(default=None, repr=False)
    weather: pd.DataFrame | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.profiles is None:
            raise ValueError("a World needs its profiles")
        cols = [c for c in self.profiles.columns if c != "step"]
        if len(self.profiles) != N_STEPS:
            raise ValueError(f"profiles have {len(self.profiles)} rows, expected {N_STEPS}")
        # Relative profiles plus a trailing column of ones for elements without a profile.
        self._prof = np.hstack(
            [self.profiles[cols].to_numpy(dtype=np.float32), np.ones((N_STEPS, 1), dtype=np.float32)]
        )
        pos = {c: j for j, c in enumerate(cols)}
        ones = len(cols)

        def cols_for(table: str, field_: str) -> np.ndarray:
            el = self.net[table]
            prof = el["profile"].to_numpy(dtype=object) if "profile" in el else [None] * len(el)
            out = [profile_column_for(table, p, field_, pos) for p in prof]
            return np.array([ones if c is None else pos[c] for c in out], dtype=np.int64)

        net = self.net
        self._load_p_col = cols_for("load", "p_mw")
        self._load_q_col = cols_for("load", "q_mvar")
        self._sgen_col = cols_for("sgen", "p_mw")
        ls, ss = _col(net.load, "scaling", 1.0), _col(net.sgen, "scaling", 1.0)
        self._load_p = _col(net.load, "p_mw", 0.0) * ls
        self._load_q = _col(net.load, "q_mvar", 0.0) * ls
        self._sgen_p = _col(net.sgen, "p_mw", 0.0) * ss
        self._sgen_q = _col(net.sgen, "q_mvar", 0.0) * ss
        self._load_keys = net.load.index.to_numpy(dtype=np.int64)
        st = net.storage
        rating = _col(st, "max_p_mw", np.nan)
        rating = np.where(np.isfinite(rating) & (rating > 0), rating, _col(st, "sn_mva", 0.0))
        self._storage_rating = rating * _col(st, "scaling", 1.0)
        self.timezone = str(self.meta.get("timezone") or DEFAULT_TIMEZONE)
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"world {self.name!r}: unknown time zone {self.timezone!r} in world.json") from exc
        self._longitude = float(self.meta.get("location", {}).get("longitude", 0.0))
        if self.weather is not None:
            self._weather_cols = [c for c in self.weather.columns if c not in ("step", "time_utc")]
            self._weather = self.weather[self._weather_cols].to_numpy(dtype=np.float32)
        # PV and wind follow the world's weather (pvlib / the E-82 power curve), so that forecasts
        # from that weather mean something; other generators keep their SimBench profiles.
        types = net.sgen["type"].astype(str) if "type" in net.sgen else pd.Series("", index=net.sgen.index)
        loc = self.meta.get("location") or {}
        driven = self.weather is not None and "latitude" in loc
        self._pv_cols = np.flatnonzero(types.map(lambda t: t.startswith(("PV", "lv_RES"))).to_numpy()) \
            if driven else np.zeros(0, np.int64)
        self._wind_cols = np.flatnonzero(types.str.startswith("Wind").to_numpy()) if driven else np.zeros(0, np.int64)

    def __repr__(self) -> str:
        net = self.net
        return (
            f"World(name={self.name!r}, buses={len(net.bus)}, loads={len(net.load)}, sgens={len(net.sgen)}, "
            f"storage={len(net.storage)}, zones={self.zones.nunique()})"
        )

    # -------------------------------------------------------------------------------------------------
    def profile_factors(self, times) -> np.ndarray:
        """Interpolated relative profiles at UTC ``times``: (n_times, n_profile_columns + 1)."""
        return _interp_rows(self._prof, profile_position(times, self.timezone))

    def expected_load_p_mw(self, times) -> np.ndarray:
        """Active power of every load (MW) at UTC ``times`` without the load noise: its profile times its
        rating, (n_times, n_loads). Cheap enough for whole years (no noise filter)."""
        return self.profile_factors(times)[:, self._load_p_col] * self._load_p[None, :]

    def annual_load_mwh(self) -> np.ndarray:
        """Annual energy of every load (MWh, in the net's load order), without the noise, whose mean is 0:
        :func:`gridpipeline.world.build.annual_load_mwh`."""
        return annual_load_mwh(self.net, self.profiles)

    def storage_schedule(self, times) -> np.ndarray:
        """Default battery power (MW, > 0 charging) at UTC ``times``: (n_times, n_storage)."""
        t = as_utc(times)
        hours = (t - t.normalize()).to_numpy().astype("timedelta64[ns]").astype(np.int64) / 3.6e12
        solar = (hours + self._longitude / 15.0) % 24.0
        sign = np.where(
            (solar >= CHARGE_HOURS[0]) & (solar < CHARGE_HOURS[1]),
            1.0,
            np.where((solar >= DISCHARGE_HOURS[0]) & (solar < DISCHARGE_HOURS[1]), -1.0, 0.0),
        )
        return sign[:, None] * (SCHEDULE_SHARE * self._storage_rating)[None, :]

    def injections_at(self, times) -> Injections:
        """Loads, static generators and batteries at the UTC instants ``times`` (tz-aware)."""
        t = as_utc(times)
        f = self.profile_factors(t)
        noise = 1.0 + load_noise(self._load_keys, t)
        sgen_f = f[:, self._sgen_col]
        if len(self._pv_cols) or len(self._wind_cols):
            sgen_f = self._weather_driven(t, sgen_f)
        net = self.net
        return Injections(
            times=t,
            load_index=net.load.index.to_numpy(),
            sgen_index=net.sgen.index.to_numpy(),
            storage_index=net.storage.index.to_numpy(),
            load_p_mw=f[:, self._load_p_col] * self._load_p[None, :] * noise,
            load_q_mvar=f[:, self._load_q_col] * self._load_q[None, :] * noise,
            sgen_p_mw=sgen_f * self._sgen_p[None, :],
            sgen_q_mvar=sgen_f * self._sgen_q[None, :],
            storage_p_mw=self.storage_schedule(t),
            storage_q_mvar=np.zeros((len(t), len(net.storage))),
        )

    def _weather_driven(self, t: pd.DatetimeIndex, sgen_f: np.ndarray) -> np.ndarray:
        """Output factors (of the rating) of PV and wind generators from the weather at ``t``."""
        from gridpipeline.common.renewables import hub_wind_speed, pv_physics, wind_physics

        w = self.weather_at(t)
        loc = self.meta["location"]
        out = np.array(sgen_f, dtype=float, copy=True)
        if len(self._pv_cols):
            frame = pd.DataFrame({"ghi": w["ghi"].to_numpy(), "temperature": w["temp_air"].to_numpy(),
                                  "wind_speed_10m": w["wind_speed"].to_numpy()}, index=t)
            out[:, self._pv_cols] = pv_physics(frame, loc["latitude"], loc["longitude"], 1.0).to_numpy()[:, None]
        if len(self._wind_cols):
            out[:, self._wind_cols] = wind_physics(hub_wind_speed(w["wind_speed"]), 1.0)[:, None]
        return out

    def weather_at(self, times) -> pd.DataFrame:
        """Weather (TMY3 Greensboro, see data/README.md) at the UTC ``times``; index = ``times``."""
        if self.weather is None:
            raise ValueError(f"world {self.name!r} was loaded without weather")
        t = as_utc(times)
        vals = _interp_rows(self._weather, year_position(t, float(self.meta.get("shift_h", 0))))
        return pd.DataFrame(vals, index=pd.DatetimeIndex(times), columns=self._weather_cols)


# ----------------------------------------------------------------------------------------------- loading
def _settings():
    from gridpipeline.settings import get_settings

    return get_settings()


def sample_dir(data_dir: Path | None = None) -> Path:
    """The folder of the committed sample world (``data_dir`` may be ``data/`` or ``data/sample_grid``)."""
    d = Path(data_dir) if data_dir is not None else _settings().data_dir
    return d if (d / "network.json").exists() else d / SAMPLE_SUBDIR


def _read_world_dir(d: Path) -> tuple[object, pd.DataFrame, dict]:
    import pandapower as pp

    meta = json.loads((d / "world.json").read_text())
    net = pp.from_json(str(d / "network.json"))
    profiles = pd.read_parquet(d / "profiles.parquet")
    return net, profiles, meta


def _cache_valid(d: Path, name: str) -> bool:
    try:
        meta = json.loads((d / "world.json").read_text())
    except (OSError, ValueError):
        return False
    return (
        meta.get("format_version") == FORMAT_VERSION
        and meta.get("name") == name
        and (d / "network.json").exists()
        and (d / "profiles.parquet").exists()
        and (d / "customers.csv").exists()
    )


def moved_meta(meta: dict, shift_h: int) -> dict:
    """``meta`` of a world moved ``shift_h`` hours east (see "Moved worlds" in the module docstring):
    longitude + 15·h degrees (wrapped to [-180, 180)), the fixed zone UTC+(offset + h) and
    ``shift_h``, which moves the weather's axis. 0 returns ``meta`` unchanged."""
    h = int(shift_h)
    if h == 0:
        return meta
    loc = dict(meta.get("location") or {})
    if "longitude" not in loc or "utc_offset_h" not in loc:
        raise ValueError(f"world {meta.get('name')!r}: moving it needs its longitude and UTC offset")
    offset = round(float(loc["utc_offset_h"])) + h
    if not -12 <= offset <= 14:
        # no civil zone there; wrapping by a day would put the weather and the wall clock on different dates
        raise ValueError(f"world {meta.get('name')!r}: moved {h} h it would be at UTC{offset:+d}, outside -12..+14")
    loc["longitude"] = (float(loc["longitude"]) + 15.0 * h + 180.0) % 360.0 - 180.0
    loc["utc_offset_h"] = float(offset)
    # the Etc zones count west positive: UTC+10 is Etc/GMT-10
    tz = "UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"
    return {**meta, "location": loc, "timezone": tz, "shift_h": h}


def load_world(name: str = "sample", data_dir: Path | None = None, cache_dir: Path | None = None,
               shift_h: int | None = None) -> World:
    """Load world ``name``: ``"sample"`` from the committed ``data/sample_grid`` or ``"scale"``
    (SimBench ``1-MVLV-urban-all-0-sw``) from ``cache_dir`` (default ``<home>/worlds/scale``),
    building and caching it on first use (about a minute). Both use the sample's weather.
    ``shift_h`` (default: the setting ``world_shift_h``) moves it east (:func:`moved_meta`)."""
    t0 = time.perf_counter()
    sdir = sample_dir(data_dir)
    if name == "sample":
        wdir = sdir
    elif name in WORLD_SPECS:
        wdir = Path(cache_dir) if cache_dir is not None else _settings().home / "worlds" / name
        if not _cache_valid(wdir, name):
            from gridpipeline.world.build import build_cached_world

            location = json.loads((sdir / "world.json").read_text())["location"]
            log.info("building world %r into %s", name, wdir)
            build_cached_world(name, wdir, location=location)
    else:
        raise ValueError(f"unknown world {name!r}; choose one of {sorted(WORLD_SPECS)}")
    net, profiles, meta = _read_world_dir(wdir)
    meta = moved_meta(meta, _settings().world_shift_h if shift_h is None else shift_h)
    weather = pd.read_parquet(sdir / "weather.parquet")
    world = World(name=name, net=net, zones=compute_zones(net), meta=meta, profiles=profiles, weather=weather)
    log.info("loaded world %r in %.2f s", name, time.perf_counter() - t0)
    return world
