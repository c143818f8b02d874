"""Sensor registry: which measurements exist on the grid, derived from the network model.

``build_registry(net, zones, policy)`` is deterministic: the same network and policy give the same
sensor ids, so the simulator, the ingestion validator and the state estimator agree on ids without
sharing state. The policy is a plain dataclass a user can tune (``PlacementPolicy.full()`` puts a
sensor on everything, which is what the 100k-sensor scale grid uses).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

SQRT3 = math.sqrt(3.0)

KINDS = (
    "v_mag", "p_inj", "q_inj", "p_branch", "q_branch", "i_branch",
    "switch_status", "soc", "frequency", "energy",
)
CANONICAL_UNIT = {
    "v_mag": "kV", "p_inj": "MW", "q_inj": "Mvar", "p_branch": "MW", "q_branch": "Mvar",
    "i_branch": "A", "switch_status": "state", "soc": "%", "frequency": "Hz", "energy": "kWh",
}
REGISTRY_COLUMNS = [
    "sensor_id", "name", "kind", "element_type", "element_id", "terminal", "bus", "zone", "source",
    "unit", "nominal", "sigma", "interval_s",
]


@dataclass(frozen=True)
class PlacementPolicy:
    """Where sensors go and how good they are.

    Fractions choose a deterministic subset (by a hash of the element), so growing a fraction only
    adds sensors. Accuracies are 1-sigma, relative to the sensor's nominal value unless noted.
    """

    lv_bus_voltage_fraction: float = 0.5     # LV buses with a voltage sensor (MV and trafo buses: all)
    load_pq_fraction: float = 1.0            # loads with P/Q at the connection point
    lv_line_fraction: float = 0.3            # LV lines with P/Q/I at the sending end (MV lines: both ends)
    line_both_ends_lv: bool = False          # also the receiving end on metered LV lines
    energy_meters: bool = True               # cumulative kWh register per metered load
    analog_interval_s: int = 30
    status_interval_s: int = 30
    energy_interval_s: int = 900
    sigma_v_rel: float = 0.005               # class 0.5 voltage transducer
    sigma_pq_rel: float = 0.01               # 1 % of rating
    sigma_i_rel: float = 0.01
    sigma_soc_pct: float = 1.0
    sigma_freq_hz: float = 0.005
    sigma_energy_rel: float = 0.005
    max_sensors_per_source: int = 600        # an RTU/historian export never exceeds this
    exclude_kinds: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def full(cls, **kw) -> "PlacementPolicy":
        """Everything measured: every bus, every line at both ends, every load and generator."""
        base = dict(
            lv_bus_voltage_fraction=1.0, load_pq_fraction=1.0, lv_line_fraction=1.0,
            line_both_ends_lv=True, energy_meters=False, analog_interval_s=60, status_interval_s=60,
            max_sensors_per_source=1000,
        )
        base.update(kw)
        return cls(**base)


def _pick(kind: str, ids: np.ndarray, fraction: float) -> np.ndarray:
    """Deterministic subset of ``ids`` of about ``fraction`` (stable under growth of the fraction)."""
    if fraction >= 1.0:
        return ids
    if fraction <= 0.0:
        return ids[:0]
    keep = [
        int.from_bytes(hashlib.blake2b(f"{kind}:{i}".encode(), digest_size=4).digest(), "little") / 2**32
        < fraction
        for i in ids
    ]
    return ids[np.asarray(keep, dtype=bool)]


def _col(df: pd.DataFrame, name: str, default: float) -> pd.Series:
    if name in df.columns:
        return pd.to_numeric(df[name], errors="coerce").fillna(default)
    return pd.Series(default, index=df.index, dtype=float)


def build_registry(net, zones: pd.Series, policy: PlacementPolicy | None = None) -> pd.DataFrame:
    """All sensors for ``net`` under ``policy``, as a DataFrame with ``REGISTRY_COLUMNS``."""
    policy = policy or PlacementPolicy()
    rows: list[tuple] = []
    bus_kv = net.bus.vn_kv
    mv_kv = 1.0  # above this a bus is MV or higher and is always measured

    def add(kind, etype, eid, terminal, bus, nominal, sigma, interval, name):
        rows.append((name, kind, etype, int(eid), terminal, int(bus), float(nominal), float(sigma), int(interval)))

    a, st = policy.analog_interval_s, policy.status_interval_s
    # Bus voltages: all MV buses, all transformer terminals, a share of LV buses.
    trafo_buses = set(net.trafo.hv_bus) | set(net.trafo.lv_bus)
    in_service = net.bus.index[net.bus.in_service.astype(bool)].to_numpy()
    lv = np.array([b for b in in_service if bus_kv[b] < mv_kv and b not in trafo_buses], dtype=int)
    chosen = set(_pick("v", lv, policy.lv_bus_voltage_fraction)) | {
        b for b in in_service if bus_kv[b] >= mv_kv or b in trafo_buses
    }
    for b in sorted(chosen):
        kv = float(bus_kv[b])
        add("v_mag", "bus", b, None, b, kv, policy.sigma_v_rel * kv, a, f"V:{net.bus.name.get(b, b)}")

    # Loads, generators, storage: P/Q at the connection point.
    def injections(table: str, fraction: float):
        df = getattr(net, table)
        df = df[df.in_service.astype(bool)]
        ids = _pick(table, df.index.to_numpy(), fraction)
        for i in ids:
            r = df.loc[i]
            rating = float(_col(df.loc[[i]], "sn_mva", 0.0).iloc[0])
            if not rating or not math.isfinite(rating):
                rating = max(abs(float(r.get("p_mw", 0.0))), abs(float(r.get("q_mvar", 0.0))), 0.001) * 2
            for kind, letter in (("p_inj", "P"), ("q_inj", "Q")):
                add(kind, table, i, None, r.bus, rating, policy.sigma_pq_rel * rating, a, f"{letter}:{table}:{r['name']}")
        return ids

    load_ids = injections("load", policy.load_pq_fraction)
    injections("sgen", 1.0)
    storage_ids = injections("storage", 1.0)

    # Branches: MV lines at both ends; a share of LV lines at the sending end (both if asked).
    line = net.line[net.line.in_service.astype(bool)]
    from_kv = bus_kv.loc[line.from_bus].to_numpy()
    mv_lines = line.index[from_kv >= mv_kv].to_numpy()
    lv_lines = _pick("line", line.index[from_kv < mv_kv].to_numpy(), policy.lv_line_fraction)
    for ids, ends in ((mv_lines, ("from", "to")), (lv_lines, ("from", "to") if policy.line_both_ends_lv else ("from",))):
        for i in ids:
            r = line.loc[i]
            i_rated_a = float(r.max_i_ka) * 1000.0 * float(r.get("parallel", 1) or 1)
            for end in ends:
                bus = int(r.from_bus if end == "from" else r.to_bus)
                s_rated = SQRT3 * float(bus_kv[bus]) * i_rated_a / 1000.0
                tag = f"line:{r['name']}:{end}"
                add("p_branch", "line", i, end, bus, s_rated, policy.sigma_pq_rel * s_rated, a, f"P:{tag}")
                add("q_branch", "line", i, end, bus, s_rated, policy.sigma_pq_rel * s_rated, a, f"Q:{tag}")
                add("i_branch", "line", i, end, bus, i_rated_a, policy.sigma_i_rel * i_rated_a, a, f"I:{tag}")
    for i, r in net.trafo[net.trafo.in_service.astype(bool)].iterrows():
        for end, bus_col, kv_col in (("hv", "hv_bus", "vn_hv_kv"), ("lv", "lv_bus", "vn_lv_kv")):
            s = float(r.sn_mva)
            i_rated_a = s / (SQRT3 * float(r[kv_col])) * 1000.0
            tag = f"trafo:{r['name']}:{end}"
            add("p_branch", "trafo", i, end, r[bus_col], s, policy.sigma_pq_rel * s, a, f"P:{tag}")
            add("q_branch", "trafo", i, end, r[bus_col], s, policy.sigma_pq_rel * s, a, f"Q:{tag}")
            add("i_branch", "trafo", i, end, r[bus_col], i_rated_a, policy.sigma_i_rel * i_rated_a, a, f"I:{tag}")

    # Switch status: every switch (breakers, disconnectors, tie switches).
    for i, r in net.switch.iterrows():
        add("switch_status", "switch", i, str(r.et), r.bus, 1.0, 0.0, st, f"S:{r['name'] if r['name'] else i}")

    # Battery state of charge.
    for i in storage_ids:
        r = net.storage.loc[i]
        add("soc", "storage", i, None, r.bus, 100.0, policy.sigma_soc_pct, a, f"SOC:{r['name']}")

    # System frequency at the grid infeed(s).
    for i, r in net.ext_grid.iterrows():
        add("frequency", "ext_grid", i, None, r.bus, 50.0, policy.sigma_freq_hz, a, f"F:{r['name'] or i}")

    # Revenue meters: cumulative kWh register on metered loads.
    if policy.energy_meters:
        for i in load_ids:
            r = net.load.loc[i]
            kw = max(float(_col(net.load.loc[[i]], "sn_mva", 0.0).iloc[0]) * 1000.0, 1.0)
            add("energy", "load", i, None, r.bus, kw, policy.sigma_energy_rel * kw * policy.energy_interval_s / 3600,
                policy.energy_interval_s, f"E:{r['name']}")

    reg = pd.DataFrame(
        rows, columns=["name", "kind", "element_type", "element_id", "terminal", "bus", "nominal", "sigma", "interval_s"]
    )
    reg = reg[~reg.kind.isin(policy.exclude_kinds)].reset_index(drop=True)
    reg["zone"] = zones.reindex(reg.bus).fillna("unzoned").astype(str).to_numpy()
    reg["unit"] = reg.kind.map(CANONICAL_UNIT)
    reg["source"] = _assign_sources(reg, policy.max_sensors_per_source)
    reg.insert(0, "sensor_id", np.arange(1, len(reg) + 1, dtype=np.int32))
    reg["name"] = _unique(reg["name"])
    return reg[REGISTRY_COLUMNS]


def _assign_sources(reg: pd.DataFrame, max_per_source: int) -> np.ndarray:
    """One RTU per zone; a big zone is split by bus order into RTUs of at most ``max_per_source``."""
    out = np.empty(len(reg), dtype=object)
    for zone, idx in reg.groupby("zone").groups.items():
        sub = reg.loc[idx].sort_values(["bus", "kind"], kind="stable")
        n = math.ceil(len(sub) / max_per_source)
        if n == 1:
            out[sub.index.to_numpy()] = f"RTU_{zone}"
            continue
        # Keep a bus's sensors together: split on bus boundaries.
        buses = sub.bus.to_numpy()
        cuts = np.array_split(np.arange(len(sub)), n)
        part = np.zeros(len(sub), dtype=int)
        for k, c in enumerate(cuts):
            part[c] = k
        for k in range(1, len(part)):
            if buses[k] == buses[k - 1]:
                part[k] = part[k - 1]
        out[sub.index.to_numpy()] = [f"RTU_{zone}_{p + 1}" for p in part]
    return out


def _unique(names: pd.Series) -> pd.Series:
    dup = names.groupby(names).cumcount()
    return names.where(dup == 0, names + "#" + dup.astype(str))
