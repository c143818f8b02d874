"""Build the grid worlds from SimBench and pvlib, deterministically.

``build_sample_world(out_dir)`` writes the committed sample world (``data/sample_grid/``):

* ``network.json``   pandapower JSON of SimBench ``1-MVLV-semiurb-5.220-0-sw`` with four MV batteries and
  60 home batteries (the VPP) added, battery parameters and curtailable generators flagged,
  without SimBench's bulky ``profiles`` dict (the ``profile`` column of load/sgen still names each
  element's profile type);
* ``profiles.parquet`` SimBench's normalised profile types on the 15-minute axis of the profile year
  2016 (35,136 steps), one float32 column per ``<table>/<type>/<field>`` plus an integer ``step``;
* ``weather.parquet`` pvlib's bundled TMY3 file for Greensboro NC, interpolated to the same 366-day,
  15-minute axis, in UTC;
* ``world.json``     metadata: location, local time zone, storage placement, versions, file sizes.

``build_world_files(spec, out_dir)`` does the network and profile part for any world spec; the scale
world (``1-MVLV-urban-all-0-sw``) is built with it on demand into a cache folder (see ``model.py``).

Two fixes are applied to the SimBench nets, both needed for a correct power flow:

* ``trafo.vector_group`` is ``None`` in SimBench; it is set to ``Dyn5`` (matching ``shift_degree`` 150)
  so power-grid-model's converter knows the winding types.
* ``load.const_{z,i}_{p,q}_percent`` are NaN after simbench 1.6.1's conversion; pandapower 3.3 then
  treats every load as voltage dependent with NaN shares and its Newton-Raphson never converges.
  They are set to 0 (constant-power loads, which is what SimBench means).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

#: Bump when the layout of the stored files changes; cached worlds with another version are rebuilt.
FORMAT_VERSION = 2  # 2: home batteries, battery parameters, curtailable generators

PROFILE_YEAR = 2016
STEP_MINUTES = 15
N_STEPS = 366 * 24 * 60 // STEP_MINUTES  # 35,136: the SimBench year 2016 is a leap year

#: pvlib ships this TMY3 file (Greensboro Piedmont Triad Int'l, NC, USAF 723170).
TMY3_FILE = "723170TYA.CSV"
#: The world's local civil calendar (the TMY3 station's zone, with daylight saving time): the
#: profiles are read on its wall clock (see ``model.py``). Worlds whose world.json names none use it.
DEFAULT_TIMEZONE = "America/New_York"

#: Load profile fields and the net column each multiplies.
LOAD_FIELDS = {"pload": "p_mw", "qload": "q_mvar"}
#: SimBench profile tables holding single-column (p) profiles.
P_TABLES = ("renewables", "powerplants", "storage")


@dataclass(frozen=True)
class WorldSpec:
    name: str
    simbench_code: str
    n_storage: int
    storage_p_mw: float = 1.0
    storage_e_mwh: float = 2.0
    #: behind-the-meter home batteries on LV buses (one VPP per world), see :func:`add_home_batteries`
    n_home: int = 0


WORLD_SPECS: dict[str, WorldSpec] = {
    "sample": WorldSpec("sample", "1-MVLV-semiurb-5.220-0-sw", n_storage=4, n_home=60),
    "scale": WorldSpec("scale", "1-MVLV-urban-all-0-sw", n_storage=8, n_home=1000),
}

#: Battery parameters (the columns added to ``net.storage``):
#: MV utility batteries (owner "DSO") and home batteries (owner and VPP "VPP_HOME").
#: Efficiencies are one-way (round trip 0.94^2 = 0.88 for MV, 0.95^2 = 0.90 for home units, typical
#: Li-ion); degradation is a cycle-life cost per MWh of throughput (about 6000 cycles at ~250 EUR/kWh
#: for MV, ~3000 cycles at ~450 EUR/kWh for homes); home batteries keep the owner's backup reserve.
MV_BATTERY = {"eta_charge": 0.94, "eta_discharge": 0.94, "soc_min_percent": 5.0, "soc_max_percent": 95.0,
              "backup_reserve_percent": 0.0, "degradation_eur_per_mwh": 20.0, "owner": "DSO", "vpp": ""}
HOME_BATTERY = {"eta_charge": 0.95, "eta_discharge": 0.95, "soc_min_percent": 5.0, "soc_max_percent": 100.0,
                "backup_reserve_percent": 20.0, "degradation_eur_per_mwh": 75.0, "owner": "VPP_HOME",
                "vpp": "VPP_HOME"}
HOME_P_KW = (5.0, 10.0)
HOME_E_KWH = (10.0, 15.0)
#: Generator types that are curtailable (PV, aggregated LV rooftop PV, wind), with their rating.
CURTAILABLE_TYPES = ("PV", "lv_RES", "Wind")


# ----------------------------------------------------------------------------------------------- network
def load_simbench(code: str):
    """SimBench net ``code`` (with its ``profiles``), quietly."""
    import simbench as sb

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sb.get_simbench_net(code)


def fix_simbench_net(net) -> None:
    """Apply the two fixes described in the module docstring, in place."""
    vg = net.trafo["vector_group"] if "vector_group" in net.trafo else pd.Series(None, index=net.trafo.index)
    net.trafo["vector_group"] = vg.where(vg.notna(), "Dyn5").astype(object)
    for col in ("const_z_p_percent", "const_i_p_percent", "const_z_q_percent", "const_i_q_percent"):
        if col in net.load:
            net.load[col] = net.load[col].astype(float).fillna(0.0)
        else:
            net.load[col] = 0.0


def _mv_bus_mask(net) -> pd.Series:
    return (net.bus.vn_kv >= 1.0) & (net.bus.vn_kv < 60.0) & net.bus.in_service.astype(bool)


def choose_storage_buses(net, n: int) -> list[int]:
    """``n`` well-spread MV buses: farthest-point sampling by line length (km) on the operating topology.

    The first bus is the MV bus farthest from the slack; each next one maximises its distance to the
    nearest already chosen bus (ties go to the lowest bus index). Substation buses (the LV side of
    HV/MV transformers) are never chosen.
    """
    import networkx as nx
    import pandapower.topology as top

    g = top.create_nxgraph(net, respect_switches=True, multi=False)
    # create_nxgraph weights lines by length_km and transformers/switches by 0.
    slack = int(net.ext_grid.bus.iloc[0])
    d_slack = nx.single_source_dijkstra_path_length(g, slack, weight="weight")
    substation = set(net.trafo.lv_bus[net.trafo.vn_hv_kv >= 60.0].astype(int))
    cand = [
        int(b) for b in net.bus.index[_mv_bus_mask(net)] if int(b) in d_slack and int(b) not in substation
    ]
    if len(cand) < n:
        raise ValueError(f"only {len(cand)} MV buses available for {n} storage units")
    cand = np.array(sorted(cand))
    mind = np.array([d_slack[b] for b in cand], dtype=float)
    chosen: list[int] = []
    for _ in range(n):
        k = int(np.argmax(mind))
        b = int(cand[k])
        chosen.append(b)
        d_b = nx.single_source_dijkstra_path_length(g, b, weight="weight")
        mind = np.minimum(mind, np.array([d_b.get(int(c), np.inf) for c in cand]))
        mind[k] = -1.0
    return chosen


def add_storage(net, spec: WorldSpec) -> list[int]:
    """Add ``spec.n_storage`` batteries BESS_1..n (p_mw > 0 = charging, pandapower convention)."""
    import pandapower as pp

    buses = choose_storage_buses(net, spec.n_storage)
    for k, b in enumerate(buses, start=1):
        pp.create_storage(
            net,
            bus=b,
            p_mw=0.0,
            max_e_mwh=spec.storage_e_mwh,
            q_mvar=0.0,
            sn_mva=spec.storage_p_mw,
            soc_percent=50.0,
            min_e_mwh=0.0,
            name=f"BESS_{k}",
            type="battery",
            max_p_mw=spec.storage_p_mw,
            min_p_mw=-spec.storage_p_mw,
            max_q_mvar=0.0,
            min_q_mvar=0.0,
            controllable=True,
        )
    if "subnet" in net.bus:
        net.storage["subnet"] = net.bus.subnet.reindex(net.storage.bus).to_numpy()
    for col, v in MV_BATTERY.items():
        net.storage[col] = v
    # The batteries follow a schedule (model.py), not a SimBench profile: their "profile" stays NaN.
    return buses


def _unit_draw(key: str) -> float:
    """A reproducible number in [0, 1) from ``key`` (no RNG state, so placement never shifts draws)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def choose_home_battery_buses(net, n: int) -> list[int]:
    """``n`` LV buses for home batteries: every LV bus with PV first (behind the PV owners' meters),
    then LV buses with load and no PV, evenly spread over their index order, to reach ``n``."""
    if n <= 0:
        return []
    lv = net.bus.index[(net.bus.vn_kv < 1.0) & net.bus.in_service.astype(bool)]
    types = net.sgen["type"].astype(str)
    pv_bus = sorted({int(b) for b in net.sgen.bus[types.str.startswith("PV") & net.sgen.bus.isin(lv)]})
    load_bus = sorted({int(b) for b in net.load.bus[net.load.bus.isin(lv)]} - set(pv_bus))
    need = n - len(pv_bus)
    if need <= 0:
        return pv_bus[:n]
    if need > len(load_bus):
        raise ValueError(f"only {len(pv_bus) + len(load_bus)} LV buses with PV or load for {n} home batteries")
    pick = np.unique(np.linspace(0, len(load_bus) - 1, need).round().astype(int))
    return pv_bus + [load_bus[k] for k in pick]


def add_home_batteries(net, spec: WorldSpec) -> list[int]:
    """Add ``spec.n_home`` behind-the-meter home batteries HOME_1..n, 5-10 kW and 10-15 kWh each
    (drawn reproducibly per unit), all in the world's VPP ``VPP_HOME``."""
    import pandapower as pp

    buses = choose_home_battery_buses(net, spec.n_home)
    first = len(net.storage)
    for k, b in enumerate(buses, start=1):
        p_mw = round(HOME_P_KW[0] + (HOME_P_KW[1] - HOME_P_KW[0]) * _unit_draw(f"home-p-{k}"), 1) / 1000
        e_mwh = round(HOME_E_KWH[0] + (HOME_E_KWH[1] - HOME_E_KWH[0]) * _unit_draw(f"home-e-{k}"), 1) / 1000
        pp.create_storage(net, bus=b, p_mw=0.0, max_e_mwh=e_mwh, q_mvar=0.0, sn_mva=p_mw, soc_percent=50.0,
                          min_e_mwh=0.0, name=f"HOME_{k}", type="home_battery", max_p_mw=p_mw, min_p_mw=-p_mw,
                          max_q_mvar=0.0, min_q_mvar=0.0, controllable=True)
    rows = net.storage.index[first:]
    if "subnet" in net.bus:
        net.storage.loc[rows, "subnet"] = net.bus.subnet.reindex(net.storage.bus.loc[rows]).to_numpy()
    for col, v in HOME_BATTERY.items():
        net.storage.loc[rows, col] = v
    return buses


def mark_curtailable(net) -> int:
    """Flag PV and wind generators curtailable (``sgen.curtailable``); their rating is ``sn_mva``."""
    types = net.sgen["type"].astype(str)
    net.sgen["curtailable"] = types.str.startswith(CURTAILABLE_TYPES).to_numpy()
    return int(net.sgen.curtailable.sum())


def canonical_column_order(net) -> None:
    """Put every table's columns in a fixed order (pandapower's own first, then the rest sorted).

    simbench's converter emits the extra columns of some tables in a run-dependent order; without
    this, ``network.json`` would not be byte-identical from one build to the next.
    """
    import pandapower as pp

    empty = pp.create_empty_network()
    for key in list(net.keys()):
        df = net[key]
        if not isinstance(df, pd.DataFrame) or key.startswith("_"):
            continue
        std = list(empty[key].columns) if isinstance(empty.get(key), pd.DataFrame) else []
        cols = [c for c in std if c in df.columns] + sorted((c for c in df.columns if c not in std), key=str)
        net[key] = df[cols]


# ---------------------------------------------------------------------------------------------- profiles
def profiles_frame(net) -> pd.DataFrame:
    """SimBench's relative profiles of ``net.profiles`` as one float32 frame with ``<table>/<type>/<field>``
    columns (fields: ``pload``/``qload`` for load types, ``p`` for the others) and an int32 ``step``."""
    cols: dict[str, np.ndarray] = {}
    for table, df in net.profiles.items():
        if len(df) == 0:
            continue
        if len(df) != N_STEPS:
            raise ValueError(f"profiles[{table!r}] has {len(df)} rows, expected {N_STEPS}")
        for c in df.columns:
            if c == "time":
                continue
            if table == "load":
                typ, _, field = c.rpartition("_")
                if field not in LOAD_FIELDS:
                    raise ValueError(f"unexpected load profile column {c!r}")
            elif table in P_TABLES:
                typ, field = c, "p"
            else:
                raise ValueError(f"unexpected profile table {table!r}")
            cols[f"{table}/{typ}/{field}"] = df[c].to_numpy(dtype=np.float32)
    out = pd.DataFrame({"step": np.arange(N_STEPS, dtype=np.int32)})
    return pd.concat([out, pd.DataFrame({k: cols[k] for k in sorted(cols)})], axis=1)


def profile_column_for(table: str, profile: object, field: str, columns) -> str | None:
    """Stored column holding ``profile`` for an element of ``table`` (``None``: no profile, factor 1)."""
    if profile is None or (isinstance(profile, float) and np.isnan(profile)) or profile == "":
        return None
    if table == "load":
        key = f"load/{profile}/{'pload' if field == 'p_mw' else 'qload'}"
        cands = [key]
    elif table in ("sgen", "gen"):
        cands = [f"powerplants/{profile}/p", f"renewables/{profile}/p"]
    elif table == "storage":
        cands = [f"storage/{profile}/p"]
    else:
        raise ValueError(table)
    for c in cands:
        if c in columns:
            return c
    raise KeyError(f"{table} profile {profile!r} ({field}) is not in the stored profiles")


def absolute_values(net, profiles: pd.DataFrame, table: str, field: str, steps=None) -> np.ndarray:
    """(steps, elements) absolute values = relative profile x ``net[table][field]``, like
    ``simbench.get_absolute_values`` (an element without a profile keeps its constant value)."""
    steps = np.arange(len(profiles)) if steps is None else np.asarray(steps)
    el = net[table]
    prof = el["profile"].to_numpy(dtype=object) if "profile" in el else [None] * len(el)
    cols = [profile_column_for(table, p, field, profiles.columns) for p in prof]
    used = sorted({c for c in cols if c is not None})
    pos = {c: j for j, c in enumerate(used)}
    rel = np.hstack(
        [
            profiles[used].to_numpy(dtype=np.float64)[steps] if used else np.zeros((len(steps), 0)),
            np.ones((len(steps), 1)),
        ]
    )
    gather = np.array([len(used) if c is None else pos[c] for c in cols], dtype=np.int64)
    return rel[:, gather] * el[field].to_numpy(dtype=float)[None, :]


def verify_profiles(
    net_with_profiles, profiles: pd.DataFrame, atol: float = 1e-4, max_elements: int | None = 500
) -> float:
    """Max |difference| between ``simbench.get_absolute_values`` and the stored profiles; raises above atol.

    At most ``max_elements`` evenly spread elements per table are compared (simbench builds dense
    float64 year x element frames, 3 GB for the 11,542 loads of the scale grid); ``None`` compares all.
    """
    import copy

    import simbench as sb

    net = copy.copy(net_with_profiles)
    for table in ("load", "sgen", "gen", "storage"):
        n = len(net[table])
        if max_elements is not None and n > max_elements:
            net[table] = net[table].iloc[np.linspace(0, n - 1, max_elements).round().astype(int)]
    abs_sb = sb.get_absolute_values(net, True)
    worst = 0.0
    for (table, field), ref in abs_sb.items():
        if ref.shape[1] == 0 or ref.shape[0] == 0:
            continue
        mine = absolute_values(net, profiles, table, field)
        worst = max(worst, float(np.nanmax(np.abs(mine - ref.to_numpy()))))
    if worst > atol:
        raise AssertionError(f"stored profiles differ from simbench by {worst:g} > {atol:g}")
    return worst


# ----------------------------------------------------------------------------------------------- weather
def tmy3_path() -> Path:
    import pvlib

    return Path(pvlib.__file__).parent / "data" / TMY3_FILE


def weather_frame() -> tuple[pd.DataFrame, dict]:
    """TMY3 Greensboro on the 2016 15-minute axis in UTC, and the station metadata.

    TMY3 rows are hour-ending values in local standard time (UTC-5, no daylight saving) of a
    365-day "typical" year whose months come from different years. Row order is used, not the
    stated years. Feb 29 is a copy of Feb 28. Irradiances are averages over the hour, so they are
    placed at the middle of their hour (HH-1:30); the other variables are instantaneous at the hour.
    Values are interpolated linearly (wrapping around the year end) onto
    ``2016-01-01T00:00Z + 15 min * step``.
    """
    import pvlib

    data, meta = pvlib.iotools.read_tmy3(str(tmy3_path()), map_variables=True)
    if len(data) != 8760:
        raise ValueError(f"TMY3 file has {len(data)} rows, expected 8760")
    hourly = (
        pd.DataFrame(
            {
                "ghi": data["ghi"],
                "dni": data["dni"],
                "dhi": data["dhi"],
                "temp_air": data["temp_air"],
                "temp_dew": data["temp_dew"],
                "relative_humidity": data["relative_humidity"],
                "wind_speed": data["wind_speed"],
                "pressure": data["pressure"],
                "cloud_cover_total": data["TotCld (tenths)"] * 10.0,
                "cloud_cover_opaque": data["OpqCld (tenths)"] * 10.0,
            }
        )
        .astype(float)
        .reset_index(drop=True)
    )
    feb28 = slice(58 * 24, 59 * 24)
    hourly = pd.concat(
        [hourly.iloc[: 59 * 24], hourly.iloc[feb28], hourly.iloc[59 * 24 :]], ignore_index=True
    )
    n_h = len(hourly)  # 8784
    utc_offset_h = float(meta["TZ"])  # -5.0
    # Target: local standard time (in hours since Jan 1 00:00 LST) of each UTC step.
    t_local = (np.arange(N_STEPS) * STEP_MINUTES / 60.0 + utc_offset_h) % n_h
    hour_end = np.arange(1, n_h + 1, dtype=float)
    out = {
        "step": np.arange(N_STEPS, dtype=np.int32),
        "time_utc": pd.date_range(
            f"{PROFILE_YEAR}-01-01", periods=N_STEPS, freq=f"{STEP_MINUTES}min", tz="UTC"
        ),
    }
    for c in hourly.columns:
        xp = hour_end - 0.5 if c in ("ghi", "dni", "dhi") else hour_end
        v = np.interp(t_local, xp, hourly[c].to_numpy(), period=n_h)
        out[c] = np.round(v, 2).astype(np.float32)
    station = {
        "station": str(meta["Name"]).strip('"'),
        "state": meta["State"],
        "usaf": int(meta["USAF"]),
        "latitude": float(meta["latitude"]),
        "longitude": float(meta["longitude"]),
        "altitude_m": float(meta["altitude"]),
        "tmy3_utc_offset_h": utc_offset_h,
    }
    return pd.DataFrame(out), station


# ------------------------------------------------------------------------------------------------ writing
def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write_parquet(df: pd.DataFrame, path: Path, meta: dict) -> None:
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), b"gridpipeline": json.dumps(meta, sort_keys=True).encode()}
    )
    _atomic_write(
        path,
        lambda p: pq.write_table(table, p, compression="zstd", compression_level=19, use_dictionary=False),
    )


def _versions() -> dict:
    out = {}
    for pkg in ("simbench", "pandapower", "pvlib"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:  # pragma: no cover - all are project dependencies
            out[pkg] = None
    return out


def default_location() -> dict:
    """The world's location: the TMY3 station (its weather is the world's weather)."""
    import pvlib

    _, meta = pvlib.iotools.read_tmy3(str(tmy3_path()), map_variables=True)
    return {
        "latitude": float(meta["latitude"]),
        "longitude": float(meta["longitude"]),
        "utc_offset_h": float(meta["TZ"]),
    }


def build_world_files(
    spec: WorldSpec, out_dir: Path, location: dict | None = None, verify: bool = True
) -> dict:
    """Write ``network.json``, ``profiles.parquet`` and ``world.json`` of ``spec`` into ``out_dir``."""
    import pandapower as pp

    out_dir = Path(out_dir)
    location = location or default_location()
    net = load_simbench(spec.simbench_code)
    fix_simbench_net(net)
    profiles = profiles_frame(net)
    # Verified before the batteries are added: simbench.get_absolute_values rejects NaN profile names.
    worst = verify_profiles(net, profiles) if verify else None
    storage_buses = add_storage(net, spec)
    home_buses = add_home_batteries(net, spec)
    n_curtailable = mark_curtailable(net)

    del net["profiles"]
    canonical_column_order(net)
    _atomic_write(out_dir / "network.json", lambda p: pp.to_json(net, str(p)))
    axis = {
        "profile_year": PROFILE_YEAR,
        "step_minutes": STEP_MINUTES,
        "n_steps": N_STEPS,
        "clock": "local standard time of the world (UTC offset in world.json)",
    }
    _write_parquet(profiles, out_dir / "profiles.parquet", {**axis, "source": spec.simbench_code})
    summary = {
        "format_version": FORMAT_VERSION,
        "name": spec.name,
        "simbench_code": spec.simbench_code,
        "profile_year": PROFILE_YEAR,
        "step_minutes": STEP_MINUTES,
        "n_steps": N_STEPS,
        "location": location,
        "timezone": location.get("timezone", DEFAULT_TIMEZONE),
        "storage": {"buses": storage_buses, "p_mw": spec.storage_p_mw, "e_mwh": spec.storage_e_mwh},
        "home_batteries": {"count": len(home_buses), "lv_buses": len(set(home_buses)),
                           "p_kw": list(HOME_P_KW), "e_kwh": list(HOME_E_KWH), "vpp": HOME_BATTERY["vpp"]},
        "curtailable_sgens": n_curtailable,
        "counts": {
            t: len(net[t]) for t in ("bus", "line", "trafo", "switch", "load", "sgen", "storage", "ext_grid")
        },
        "profile_columns": int(profiles.shape[1] - 1),
        "profile_check_max_abs_diff_mw": worst,
        "versions": _versions(),
    }
    return summary


def _write_world_json(out_dir: Path, summary: dict) -> None:
    files = {}
    for f in ("network.json", "profiles.parquet", "weather.parquet"):
        if (out_dir / f).exists():
            files[f] = (out_dir / f).stat().st_size
    summary["file_bytes"] = files
    text = json.dumps(summary, indent=2, sort_keys=True) + "\n"
    _atomic_write(out_dir / "world.json", lambda p: p.write_text(text))


def build_sample_world(out_dir: Path) -> dict:
    """Build the committed sample world into ``out_dir`` (``data/sample_grid/``); returns its summary."""
    out_dir = Path(out_dir)
    weather, station = weather_frame()
    location = {
        "latitude": station["latitude"],
        "longitude": station["longitude"],
        "utc_offset_h": station["tmy3_utc_offset_h"],
    }
    summary = build_world_files(WORLD_SPECS["sample"], out_dir, location=location)
    _write_parquet(
        weather,
        out_dir / "weather.parquet",
        {
            "source": f"pvlib/data/{TMY3_FILE}",
            **station,
            "time": "UTC",
            "profile_year": PROFILE_YEAR,
            "step_minutes": STEP_MINUTES,
        },
    )
    summary["weather"] = {**station, "columns": [c for c in weather.columns if c not in ("step", "time_utc")]}
    summary["customers"] = write_customer_registry(out_dir)
    _write_world_json(out_dir, summary)
    return summary


def annual_load_mwh(net, profiles: pd.DataFrame) -> np.ndarray:
    """Annual energy of every load of ``net`` (MWh, in its load order): the mean of its relative profile
    over the profile year times its rating (with ``scaling``) times 8,760 h. Loads without a profile
    count at their rating all year."""
    cols = {c for c in profiles.columns if c != "step"}
    prof = net.load["profile"].to_numpy(dtype=object) if "profile" in net.load else [None] * len(net.load)
    means = np.array(
        [
            1.0 if (c := profile_column_for("load", p, "p_mw", cols)) is None else float(profiles[c].astype(np.float64).mean())
            for p in prof
        ]
    )
    rating = net.load["p_mw"].to_numpy(dtype=np.float64)
    if "scaling" in net.load:
        rating = rating * net.load["scaling"].fillna(1.0).to_numpy(dtype=np.float64)
    return means * rating * 8760.0


def write_customer_registry(out_dir: Path) -> dict:
    """``customers.csv`` beside the world's network: the utility's customer information system, as
    ``common.customers.customer_registry`` derives it from the profiles' annual energy. Returns counts."""
    import pandapower as pp

    from gridpipeline.common.customers import customer_registry

    out_dir = Path(out_dir)
    net = pp.from_json(str(out_dir / "network.json"))
    annual = annual_load_mwh(net, pd.read_parquet(out_dir / "profiles.parquet"))
    reg = customer_registry(net, pd.Series(annual, index=net.load.index))
    reg.to_csv(out_dir / "customers.csv", index=False)
    return {"file": "customers.csv", "loads": len(reg), "customers": int(reg.customers.sum()),
            "by_class": reg.groupby("class").customers.sum().astype(int).to_dict()}


def build_cached_world(name: str, out_dir: Path, location: dict | None = None) -> dict:
    """Build a non-committed world (``scale``) into a cache folder."""
    out_dir = Path(out_dir)
    summary = build_world_files(WORLD_SPECS[name], out_dir, location=location)
    summary["customers"] = write_customer_registry(out_dir)
    _write_world_json(out_dir, summary)
    return summary
