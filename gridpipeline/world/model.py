"""Load a grid world and ask it for injections and weather at any UTC instants.

A *world* is a pandapower network plus SimBench's relative profiles for the profile year 2016 and the
TMY3 weather of its location (Greensboro NC, see ``data/README.md``).

Clocks
    The profiles are on the world's *profile clock*: local standard time (UTC-5 for the sample,
    ``world.meta["profile_clock_utc_offset_h"]``, no daylight saving). A UTC instant is moved to that
    clock, then mapped onto the profile year by month, day and time of day (Feb 29 exists in 2016,
    so every date of every year has a place; non-leap years skip Feb 29). Between 15-minute points
    the profiles are interpolated linearly, wrapping from Dec 31 23:45 to Jan 1 00:00.
    Weather is stored on the same 2016 axis in UTC and mapped the same way (without the offset).

Load noise
    Every load gets a stationary AR(1)-like multiplicative noise (sigma 2 %, correlation time 2 min),
    defined on a 30-second grid and interpolated between grid points. The value at a grid point is
    ``sum_k w_k e(element, g - k)`` over 20 taps with ``w_k`` proportional to ``phi**k`` (the AR(1)
    impulse response, normalised to unit variance) and ``e`` drawn from a hash of (element id, grid
    index). It therefore depends only on the instant, never on which other instants are asked for in
    the same call: results are bitwise identical however the times are chunked.

PV and wind
    Generators of SimBench types ``PV*``/``lv_RES`` (rooftop PV) follow the TMY3 weather through pvlib
    (``forecast.renewables.pv_physics``: a 25° south-facing array), and ``Wind*`` through the E-82
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
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gridpipeline.world.build import (
    FORMAT_VERSION,
    N_STEPS,
    STEP_MINUTES,
    WORLD_SPECS,
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
    """Fractional 15-minute step on the 2016 axis of each UTC instant, read on a clock UTC+offset."""
    local = as_utc(times).tz_convert(None) + pd.Timedelta(hours=float(utc_offset_h))
    sec = (local - local.normalize()).to_numpy().astype("timedelta64[ns]").astype(np.int64) / 1e9
    doy = _CUM_DAYS_LEAP[local.month.to_numpy() - 1] + local.day.to_numpy() - 1
    return (doy * 86400.0 + sec) / (STEP_MINUTES * 60.0)


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


# ----------------------------------------------------------------------------------------------- zones
def compute_zones(net) -> pd.Series:
    """Zone of every bus: connected components of the bus graph without transformers (switches closed).

    * a component at >= 60 kV is ``HV`` (``HV_<k>`` if there are several);
    * a component at 1-60 kV is split by SimBench feeder (``...Feeder<n>`` in ``bus.subnet``) into
      ``MV_Feeder<n>``; its buses without a feeder tag (substation busbars) are ``MV_Substation``;
      without feeder tags the whole component is ``MV``. Several MV components get ``MV<k>_...``;
    * a component below 1 kV is named after its SimBench LV grid (``bus.subnet``, e.g. ``LV5.220``)
      when all its buses share one, otherwise ``LV_<k>``.
    Components are numbered by their smallest bus index, so names are deterministic.
    """
    import networkx as nx
    import pandapower.topology as top

    g = top.create_nxgraph(
        net,
        respect_switches=False,
        include_trafos=False,
        include_trafo3ws=False,
        include_out_of_service=True,
        multi=False,
    )
    g.add_nodes_from(int(b) for b in net.bus.index)
    comps = sorted((sorted(int(b) for b in c) for c in nx.connected_components(g)), key=lambda c: c[0])
    vn = net.bus.vn_kv
    subnet = net.bus["subnet"].astype(object) if "subnet" in net.bus else pd.Series(None, index=net.bus.index)
    levels = {"HV": [], "MV": [], "LV": []}
    for c in comps:
        v = float(vn.loc[c].max())
        levels["HV" if v >= 60.0 else "MV" if v >= 1.0 else "LV"].append(c)
    zone: dict[int, str] = {}
    for k, c in enumerate(levels["HV"], start=1):
        for b in c:
            zone[b] = "HV" if len(levels["HV"]) == 1 else f"HV_{k}"
    feeder_re = re.compile(r"Feeder(\d+)$")
    for k, c in enumerate(levels["MV"], start=1):
        prefix = "MV" if len(levels["MV"]) == 1 else f"MV{k}"
        tags = {b: feeder_re.search(str(subnet.get(b) or "")) for b in c}
        if not any(tags.values()):
            for b in c:
                zone[b] = prefix
            continue
        for b, m in tags.items():
            zone[b] = f"{prefix}_Feeder{int(m.group(1))}" if m else f"{prefix}_Substation"
    used: set[str] = set()
    for k, c in enumerate(levels["LV"], start=1):
        names = {str(s).split("_")[0] for s in subnet.loc[c] if isinstance(s, str) and s}
        name = names.pop() if len(names) == 1 else None
        if name is None or not name.startswith("LV") or name in used:
            name = f"LV_{k}"
        used.add(name)
        for b in c:
            zone[b] = name
    return pd.Series(zone, name="zone").reindex(net.bus.index).astype(str)


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
        self._offset_h = float(self.meta.get("profile_clock_utc_offset_h", 0.0))
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
        return _interp_rows(self._prof, year_position(times, self._offset_h))

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
        from gridpipeline.forecast.renewables import pv_physics, wind_physics

        w = self.weather_at(t)
        loc = self.meta["location"]
        out = np.array(sgen_f, dtype=float, copy=True)
        if len(self._pv_cols):
            frame = pd.DataFrame({"ghi": w["ghi"].to_numpy(), "temperature": w["temp_air"].to_numpy(),
                                  "wind_speed_10m": w["wind_speed"].to_numpy()}, index=t)
            out[:, self._pv_cols] = pv_physics(frame, loc["latitude"], loc["longitude"], 1.0).to_numpy()[:, None]
        if len(self._wind_cols):
            hub = w["wind_speed"].to_numpy(dtype=float) * (100.0 / 10.0) ** (1 / 7)
            out[:, self._wind_cols] = wind_physics(hub, 1.0)[:, None]
        return out

    def weather_at(self, times) -> pd.DataFrame:
        """Weather (TMY3 Greensboro, see data/README.md) at the UTC ``times``; index = ``times``."""
        if self.weather is None:
            raise ValueError(f"world {self.name!r} was loaded without weather")
        t = as_utc(times)
        vals = _interp_rows(self._weather, year_position(t, 0.0))
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
    )


def load_world(name: str = "sample", data_dir: Path | None = None, cache_dir: Path | None = None) -> World:
    """Load world ``name``: ``"sample"`` from the committed ``data/sample_grid`` or ``"scale"``
    (SimBench ``1-MVLV-urban-all-0-sw``) from ``cache_dir`` (default ``<home>/worlds/scale``),
    building and caching it on first use (about a minute). Both use the sample's weather."""
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
    weather = pd.read_parquet(sdir / "weather.parquet")
    world = World(name=name, net=net, zones=compute_zones(net), meta=meta, profiles=profiles, weather=weather)
    log.info("loaded world %r in %.2f s", name, time.perf_counter() - t0)
    return world
