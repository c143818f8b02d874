"""State estimation with power-grid-model, plus the WLS bookkeeping PGM does not expose.

``estimate_state(net_or_model, measurements)`` maps measurement rows (``element_type, element_id,
terminal, kind, value, sigma`` and optionally ``quality``/``sensor_id``) onto PGM sensors:

* ``v_mag`` (kV) on a bus -> ``sym_voltage_sensor`` (magnitude only);
* ``p_inj``/``q_inj`` (MW/Mvar) on load/storage/sgen/gen/ext_grid -> ``sym_power_sensor`` on the
  appliance. PGM measures appliances in their own reference direction, which is pandapower's sign
  for each element (load/storage consumption positive -> ``sym_load``; sgen/gen generation positive
  -> ``sym_gen``; ext_grid supply positive -> ``source``), so values pass through unchanged;
* ``p_branch``/``q_branch`` on line (from/to) or trafo (hv=from, lv=to) -> branch power sensors,
  flow into the branch at that end, as pandapower's ``p_from_mw``/``p_hv_mw``;
* ``i_branch`` is not used: PGM 1.12 has ``sym_current_sensor`` but it needs a phase angle (global
  or relative to the voltage) and may not share a terminal with a power sensor; magnitude-only
  current readings are listed in ``dropped`` with that reason.

Quality: ``invalid`` rows are dropped, ``questionable`` sigma x3, ``substituted`` sigma x10.

Observability: PGM counts a node injection as measured only when *every* appliance at the node is
measured (nodes without appliances are zero injections). If PGM reports the system unobservable
(``NotObservableError``/singular gain), pseudo-measurements are added for the unmeasured appliances
(from ``pseudo_injections`` or the net's own p/q, sigma 50 % of the rating) and for the source
voltage if an island has no voltage sensor, and the estimate is repeated. If it still fails, the
result falls back to ``last_good`` or to a power flow over the best known injections (or a flat
profile), with ``converged=False`` and ``fallback`` saying which; nothing is raised.

The WLS objective ``J(x)``, degrees of freedom and residuals are computed here on a bus-branch model
identical to PGM's (same per-unit branch admittances; link-connected nodes merged), see ``WlsModel``;
``bad_data`` adds the Jacobian-based normalised residuals.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from power_grid_model import (
    CalculationMethod,
    ComponentType,
    MeasuredTerminalType,
    PowerGridModel,
    initialize_array,
)
from power_grid_model.errors import (
    IterationDiverge,
    NotObservableError,
    PowerGridError,
    SparseMatrixError,
)
from scipy.sparse.csgraph import connected_components

from gridpipeline.grid.network import (
    PgmModel,
    appliance_results,
    branch_results,
    bus_results,
    model_of,
)
from gridpipeline.grid.residuals import residual_covariance_diag
from gridpipeline.grid.wls import WlsModel

log = logging.getLogger(__name__)

QUALITY_SIGMA_FACTOR = {"good": 1.0, "questionable": 3.0, "substituted": 10.0}
SE_KINDS = ("v_mag", "p_inj", "q_inj", "p_branch", "q_branch")
_APPLIANCE_TERMINAL = {
    "load": MeasuredTerminalType.load, "storage": MeasuredTerminalType.load,
    "sgen": MeasuredTerminalType.generator, "gen": MeasuredTerminalType.generator,
    "ext_grid": MeasuredTerminalType.source,
}
_SIDE = {"from": 0, "hv": 0, "to": 1, "lv": 1}
#: Omega_ii / sigma_i^2 below this: the measurement is critical, r_N undefined.
CRITICAL_RHO = 1e-6


# ------------------------------------------------------------------------------------- result
@dataclass
class EstimationResult:
    """Outcome of ``estimate_state``.

    buses: index bus -> u_pu, u_angle_deg, u_kv, energized
    branches: element_type (line/trafo), element_id, p/q/i at both ends (MW, Mvar, A, flow into the
        branch), pl_mw, ql_mvar, loading_percent (pandapower's current-based definition), energized
    appliances: element_type, element_id, estimated p_mw/q_mvar (pandapower sign)
    measurements: the rows used (original index as ``row``), with ``sigma_used``, ``estimate``,
        ``residual`` (value - estimate, measurement units), ``r_w`` (residual/sigma) and ``r_n``
        (normalised residual, when computed); pseudo-measurements are listed in ``pseudo``
    dropped: input rows not used, with ``reason``
    J: weighted residual sum of squares at the estimate; dof = m - n (constraints counted);
    max_abs_rn: largest |normalised residual| over real measurements (None if not computed)
    converged / fallback (None, "last_good", "powerflow", "flat") / observable (no pseudo needed)
    """

    converged: bool
    fallback: str | None
    algorithm: str
    buses: pd.DataFrame
    branches: pd.DataFrame
    appliances: pd.DataFrame
    losses_mw: float
    J: float
    dof: int
    m: int
    n: int
    max_abs_rn: float | None
    measurements: pd.DataFrame
    dropped: pd.DataFrame
    pseudo: pd.DataFrame
    observable: bool
    elapsed_s: float
    pgm_s: float
    message: str = ""
    wls: Any = field(default=None, repr=False)
    state: Any = field(default=None, repr=False)

    def summary(self) -> dict:
        return {
            "converged": self.converged, "fallback": self.fallback, "algorithm": self.algorithm,
            "observable": self.observable, "n_buses": len(self.buses), "m": self.m, "n": self.n,
            "dof": self.dof, "J": _f(self.J), "max_abs_rn": _f(self.max_abs_rn), "losses_mw": _f(self.losses_mw),
            "n_measurements": len(self.measurements), "n_dropped": len(self.dropped),
            "n_pseudo": len(self.pseudo), "elapsed_s": round(self.elapsed_s, 4),
            "pgm_s": round(self.pgm_s, 4), "message": self.message,
            "u_pu_min": _f(self.buses.u_pu.min()) if len(self.buses) else None,
            "u_pu_max": _f(self.buses.u_pu.max()) if len(self.buses) else None,
            "max_loading_percent": _f(self.branches.loading_percent.max()) if len(self.branches) else None,
        }


def _f(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


# ------------------------------------------------------------------------- measurement mapping
def prepare_measurements(model: PgmModel, measurements: pd.DataFrame,
                         quality_factor: Mapping[str, float] | None = None,
                         data: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate and map measurement rows to PGM objects.

    Returns (used, dropped). ``used`` has: row (original index), sensor_id, kind, element_type,
    element_id, terminal, value, sigma (as given), sigma_used (quality-inflated), quality,
    quantity ("u"/"p"/"q"), pgm_object, terminal_type (MeasuredTerminalType or -1 for voltage),
    value_si, sigma_si (V, W, var). ``data``: the PGM input with the switch states in force
    (default: the model's own) to check that measured elements are connected.
    """
    arrays = data if data is not None else model.input
    qf = dict(QUALITY_SIGMA_FACTOR)
    if quality_factor:
        qf.update(quality_factor)
    need = {"element_type", "element_id", "kind", "value", "sigma"}
    missing = need - set(measurements.columns)
    if missing:
        raise ValueError(f"measurements lack columns {sorted(missing)}")
    df = measurements.copy()
    df["row"] = df.index
    if "sensor_id" not in df.columns:
        df["sensor_id"] = pd.NA
    if "terminal" not in df.columns:
        df["terminal"] = None
    if "quality" not in df.columns:
        df["quality"] = "good"
    df = df.reset_index(drop=True)
    n_rows = len(df)
    reason = np.full(n_rows, "", dtype=object)
    free = np.ones(n_rows, dtype=bool)  # rows not dropped yet (cheaper than comparing ``reason``)
    kind = df["kind"].astype("category")
    etype = df["element_type"].astype("category")
    quality = df["quality"].fillna("good").astype("category")
    quality = quality.cat.rename_categories([str(c).lower() for c in quality.cat.categories]) \
        if len(set(str(c).lower() for c in quality.cat.categories)) == len(quality.cat.categories) \
        else df["quality"].fillna("good").astype(str).str.lower().astype("category")
    value = pd.to_numeric(df["value"], errors="coerce")
    sigma = pd.to_numeric(df["sigma"], errors="coerce")
    eid = pd.to_numeric(df["element_id"], errors="coerce")

    def drop(mask, why):
        m = np.asarray(mask, dtype=bool) & free
        reason[m] = why
        free[m] = False

    def at(positions) -> np.ndarray:
        m = np.zeros(n_rows, dtype=bool)
        m[positions] = True
        return m

    drop(quality == "invalid", "quality invalid")
    drop(kind == "i_branch", "current magnitude not used: PGM current sensors need a phase angle")
    drop(~kind.isin(SE_KINDS) & (kind != "i_branch"), "not a state-estimation input")
    drop(~np.isfinite(value), "value missing")
    drop(~(np.isfinite(sigma) & (sigma > 0)), "sigma missing or not positive")
    drop(eid.isna(), "element id missing")
    factor = quality.astype(str).map(qf).fillna(qf["questionable"]).astype(float)
    sigma_used = sigma * factor

    pgm_obj = np.full(len(df), -1, dtype=np.int64)
    ttype = np.full(len(df), -1, dtype=np.int64)
    quantity = np.full(len(df), "", dtype=object)
    scale_v = np.ones(len(df))
    # voltages
    mv = (kind == "v_mag") & free
    if mv.any():
        ok = mv & (etype == "bus")
        drop(mv & ~ok, "voltage measurement not on a bus")
        ids = model.ids["bus"].reindex(eid[np.asarray(ok)].astype(np.int64)).to_numpy()
        bad = np.isnan(ids.astype(float))
        idx = np.flatnonzero(np.asarray(ok))
        drop(at(idx[bad]), "unknown bus")
        pgm_obj[idx[~bad]] = ids[~bad]
        quantity[idx] = "u"
        scale_v[idx] = 1e3
    # appliance injections
    mi = kind.isin(["p_inj", "q_inj"]) & free
    if mi.any():
        ok = mi & etype.isin(list(_APPLIANCE_TERMINAL))
        drop(mi & ~ok, "injection measurement on an unsupported element type")
        for table, tt in _APPLIANCE_TERMINAL.items():
            sel = ok & (etype == table) & free
            if not sel.any():
                continue
            idx = np.flatnonzero(np.asarray(sel))
            ids = model.ids.get(table, pd.Series(dtype=np.int64)).reindex(eid[np.asarray(sel)].astype(np.int64)).to_numpy()
            bad = np.isnan(ids.astype(float))
            drop(at(idx[bad]), f"unknown {table}")
            good_idx, good_ids = idx[~bad], ids[~bad].astype(np.int64)
            comp = model.component_of(table)
            rows = model.rows_of(comp, good_ids)
            status = model.input[comp]["status"][rows].astype(bool)
            if comp in arrays:
                st_arr = arrays[comp]
                pos_ = np.searchsorted(st_arr["id"], good_ids)
                status &= st_arr["status"][np.minimum(pos_, len(st_arr) - 1)].astype(bool)
            drop(at(good_idx[~status]), "element out of service")
            pgm_obj[good_idx] = good_ids
            ttype[good_idx] = int(tt)
        quantity[np.flatnonzero(np.asarray(mi))] = np.where((kind[np.asarray(mi)] == "p_inj").to_numpy(), "p", "q")
        scale_v[np.flatnonzero(np.asarray(mi))] = 1e6
    # branch flows
    mb = kind.isin(["p_branch", "q_branch"]) & free
    if mb.any():
        term = df["terminal"].astype("category")
        term = term.cat.rename_categories([str(c).lower() for c in term.cat.categories]) \
            if len(set(str(c).lower() for c in term.cat.categories)) == len(term.cat.categories) \
            else df["terminal"].astype(str).str.lower().astype("category")
        ok = mb & etype.isin(["line", "trafo"]) & term.isin(list(_SIDE))
        drop(mb & ~ok, "branch measurement needs a line/trafo and terminal from/to/hv/lv")
        for table, comp in (("line", ComponentType.line), ("trafo", ComponentType.transformer)):
            sel = ok & (etype == table) & free
            if not sel.any():
                continue
            idx = np.flatnonzero(np.asarray(sel))
            ids = model.ids[table].reindex(eid[np.asarray(sel)].astype(np.int64)).to_numpy()
            bad = np.isnan(ids.astype(float))
            drop(at(idx[bad]), f"unknown {table}")
            good_idx, good_ids = idx[~bad], ids[~bad].astype(np.int64)
            side = term.iloc[good_idx].astype(str).map(_SIDE).to_numpy()
            arr = arrays[comp]
            rows = np.searchsorted(arr["id"], good_ids)
            st = np.where(side == 0, arr["from_status"][rows], arr["to_status"][rows]).astype(bool) & \
                arr["from_status"][rows].astype(bool) & arr["to_status"][rows].astype(bool)
            drop(at(good_idx[~st]), "branch not connected at both ends")
            pgm_obj[good_idx] = good_ids
            ttype[good_idx] = np.where(side == 0, int(MeasuredTerminalType.branch_from),
                                       int(MeasuredTerminalType.branch_to))
        quantity[np.flatnonzero(np.asarray(mb))] = np.where((kind[np.asarray(mb)] == "p_branch").to_numpy(), "p", "q")
        scale_v[np.flatnonzero(np.asarray(mb))] = 1e6
    df["sigma_used"] = sigma_used
    df["quality"] = quality
    df["quantity"] = quantity
    df["pgm_object"] = pgm_obj
    df["terminal_type"] = ttype
    df["value_si"] = value * scale_v
    df["sigma_si"] = sigma_used * scale_v
    df["pseudo"] = False
    used = df[free].copy()
    dropped = df[~free].copy()
    dropped["reason"] = reason[~free]
    cols = ["row", "sensor_id", "kind", "element_type", "element_id", "terminal", "value", "sigma", "quality"]
    return used.reset_index(drop=True), dropped[cols + ["reason"]].reset_index(drop=True)


def pseudo_table(model: PgmModel, pseudo_injections: pd.DataFrame | None = None,
                 sigma_fraction: float = 0.5) -> pd.DataFrame:
    """Pseudo injections per appliance PGM id: p_w, q_var (reference direction) and sigmas.

    ``pseudo_injections`` (optional) has element_type, element_id, p_mw, q_mvar and optionally
    sigma_p_mw/sigma_q_mvar (e.g. profile or forecast values); elements not in it use the net's own
    p/q. Default sigma: ``sigma_fraction`` of the rating (sn_mva, else max(|p|,|q|), at least 1 kW).
    """
    base = model.appliances.copy()
    if pseudo_injections is not None and len(pseudo_injections):
        pi = pseudo_injections.copy()
        pi["pgm_id"] = [model.ids.get(str(t), pd.Series(dtype=np.int64)).get(int(i), -1)
                        for t, i in zip(pi["element_type"], pi["element_id"])]
        pi = pi[pi.pgm_id >= 0].drop_duplicates("pgm_id", keep="last").set_index("pgm_id")
        for c in ("p_mw", "q_mvar"):
            if c in pi.columns:
                base.loc[pi.index.intersection(base.index), c] = pi[c].reindex(
                    pi.index.intersection(base.index)).to_numpy()
        for c in ("sigma_p_mw", "sigma_q_mvar"):
            if c in pi.columns:
                base[c] = pi[c].reindex(base.index)
    rating = base["sn_mva"].where(base["sn_mva"] > 0)
    rating = rating.fillna(np.maximum(base["p_mw"].abs(), base["q_mvar"].abs()))
    rating = np.maximum(rating.fillna(0.0), 1e-3)
    sp_ = base["sigma_p_mw"] if "sigma_p_mw" in base.columns else pd.Series(np.nan, index=base.index)
    sq_ = base["sigma_q_mvar"] if "sigma_q_mvar" in base.columns else pd.Series(np.nan, index=base.index)
    out = pd.DataFrame({
        "table": base["table"], "element_id": base["element_id"],
        "p_w": base["p_mw"].astype(float) * 1e6, "q_var": base["q_mvar"].astype(float) * 1e6,
        "sigma_p_w": sp_.fillna(sigma_fraction * rating) * 1e6,
        "sigma_q_w": sq_.fillna(sigma_fraction * rating) * 1e6,
    }, index=base.index)
    return out


# --------------------------------------------------------------------------------- sensors
def _build_sensors(model: PgmModel, used: pd.DataFrame, pseudo: pd.DataFrame, first_id: int,
                   extra_pseudo_objects: set[int] | None = None, source_voltage_sigma_pu: float | None = None,
                   pseudo_voltage_nodes: list[int] | None = None):
    """PGM sensor arrays from mapped measurements. P and Q rows of the same (object, terminal) are
    paired into one power sensor (k-th P with k-th Q); a missing partner is filled with a pseudo
    value. Returns (sensor dict, sensor table with one row per PGM sensor: sensor, type ("u"/"pq"),
    object, terminal_type, p_row, q_row (positions in ``used``, -1: none), pseudo_p, pseudo_q)."""
    sensors: dict = {}
    tables = []
    # voltage sensors
    v = used[used.quantity == "u"]
    pv_nodes = list(pseudo_voltage_nodes or [])
    k = len(v)
    vs = initialize_array("input", ComponentType.sym_voltage_sensor, k + len(pv_nodes))
    vs["id"] = np.arange(first_id, first_id + len(vs))
    vs["measured_object"][:k] = v.pgm_node.to_numpy()
    vs["u_measured"][:k] = v.value_si.to_numpy()
    vs["u_sigma"][:k] = v.sigma_si.to_numpy()
    if pv_nodes:
        src = model.input[ComponentType.source]
        node = model.input[ComponentType.node]
        for j, nd in enumerate(pv_nodes):
            sel = src["node"] == nd
            u_ref = float(src["u_ref"][sel][0]) if sel.any() else 1.0
            u_rated = float(node["u_rated"][np.searchsorted(node["id"], nd)])
            vs["measured_object"][k + j] = nd
            vs["u_measured"][k + j] = u_ref * u_rated
            vs["u_sigma"][k + j] = (source_voltage_sigma_pu or 0.05) * u_rated
    if len(vs):
        sensors[ComponentType.sym_voltage_sensor] = vs
        tables.append(pd.DataFrame({
            "sensor": vs["id"], "type": "u", "object": vs["measured_object"].astype(np.int64), "terminal_type": -1,
            "p_row": np.r_[v.index.to_numpy(), np.full(len(pv_nodes), -1)].astype(np.int64), "q_row": -1,
            "pseudo_p": np.r_[np.zeros(k, bool), np.ones(len(pv_nodes), bool)], "pseudo_q": False}))
    next_id = first_id + len(vs)
    # power sensors: pair P and Q rows per (object, terminal)
    pq = used[used.quantity.isin(["p", "q"])]
    frames = {}
    for qty in ("p", "q"):
        d = pq[pq.quantity == qty]
        d = pd.DataFrame({"object": d.pgm_object.to_numpy().astype(np.int64),
                          "terminal_type": d.terminal_type.to_numpy().astype(np.int64), "row": d.index.to_numpy()})
        d["k"] = d.groupby(["object", "terminal_type"]).cumcount()
        frames[qty] = d.rename(columns={"row": f"{qty}_row"})
    pairs = frames["p"].merge(frames["q"], on=["object", "terminal_type", "k"], how="outer")
    if extra_pseudo_objects:
        objs = np.array(sorted(extra_pseudo_objects), dtype=np.int64)
        tts = np.array([int(_APPLIANCE_TERMINAL[model.id_table[o]]) for o in objs], dtype=np.int64)
        extra = pd.DataFrame({"object": objs, "terminal_type": tts, "k": 0})
        have = pairs[["object", "terminal_type"]].drop_duplicates()
        extra = extra.merge(have, how="left", indicator=True)
        extra = extra[extra["_merge"] == "left_only"].drop(columns="_merge")
        pairs = pd.concat([pairs, extra], ignore_index=True)
    pairs = pairs.sort_values(["object", "terminal_type", "k"], kind="stable").reset_index(drop=True)
    n = len(pairs)
    ps = initialize_array("input", ComponentType.sym_power_sensor, n)
    if n:
        p_row = pairs["p_row"].fillna(-1).astype(np.int64).to_numpy()
        q_row = pairs["q_row"].fillna(-1).astype(np.int64).to_numpy()
        obj = pairs["object"].to_numpy()
        tt = pairs["terminal_type"].to_numpy()
        fill_p, fill_sp, fill_q, fill_sq = _filler(model, pseudo, obj, tt)
        val = np.r_[used["value_si"].to_numpy(dtype=float), 0.0]
        sig = np.r_[used["sigma_si"].to_numpy(dtype=float), 1.0]
        hp, hq = p_row >= 0, q_row >= 0
        ps["id"] = np.arange(next_id, next_id + n)
        ps["measured_object"] = obj
        ps["measured_terminal_type"] = tt
        ps["p_measured"] = np.where(hp, val[np.maximum(p_row, 0)], fill_p)
        ps["p_sigma"] = np.where(hp, sig[np.maximum(p_row, 0)], fill_sp)
        ps["q_measured"] = np.where(hq, val[np.maximum(q_row, 0)], fill_q)
        ps["q_sigma"] = np.where(hq, sig[np.maximum(q_row, 0)], fill_sq)
        sensors[ComponentType.sym_power_sensor] = ps
        tables.append(pd.DataFrame({"sensor": ps["id"], "type": "pq", "object": obj, "terminal_type": tt,
                                    "p_row": p_row, "q_row": q_row, "pseudo_p": ~hp, "pseudo_q": ~hq}))
    st = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(
        columns=["sensor", "type", "object", "terminal_type", "p_row", "q_row", "pseudo_p", "pseudo_q"])
    return sensors, st


def _filler(model: PgmModel, pseudo: pd.DataFrame, obj: np.ndarray, tt: np.ndarray):
    """Pseudo (p, sigma_p, q, sigma_q) in SI for unmeasured P or Q of sensors: appliances from the
    pseudo table; branch flows 0 with sigma half the branch rating."""
    n = len(obj)
    fp, fsp, fq, fsq = np.zeros(n), np.full(n, 1e6), np.zeros(n), np.full(n, 1e6)
    isbr = np.isin(tt, [int(MeasuredTerminalType.branch_from), int(MeasuredTerminalType.branch_to)])
    app = ~isbr
    if app.any():
        ps = pseudo.reindex(obj[app])
        fp[app] = ps.p_w.fillna(0.0).to_numpy()
        fsp[app] = ps.sigma_p_w.fillna(1e6).to_numpy()
        fq[app] = ps.q_var.fillna(0.0).to_numpy()
        fsq[app] = ps.sigma_q_w.fillna(1e6).to_numpy()
    if isbr.any():
        o = obj[isbr]
        tables = model.id_table[o]
        idx = model.id_index[o]
        rating = np.full(len(o), 1e6)
        ln = tables == "line"
        if ln.any():
            arr = model.input[ComponentType.line]
            rows = np.searchsorted(arr["id"], o[ln])
            node = model.input[ComponentType.node]
            u = node["u_rated"][np.searchsorted(node["id"], arr["from_node"][rows])]
            i_n = arr["i_n"][rows]
            rating[ln] = np.where(np.isfinite(i_n), math.sqrt(3) * u * i_n, 1e6)
        tr = tables == "trafo"
        if tr.any():
            rating[tr] = model.trafo_rating.sn_mva.reindex(idx[tr]).fillna(1.0).to_numpy() * 1e6
        fsp[isbr] = 0.5 * rating
        fsq[isbr] = 0.5 * rating
    return fp, fsp, fq, fsq


# ------------------------------------------------------------------------------- estimation
def _se_input(model: PgmModel, switch_closed) -> tuple[dict, np.ndarray]:
    """PGM input for state estimation: switch states applied, ZIP parts of loads dropped (their
    split plays no role in SE) and link-connected nodes merged into one node (PGM's estimator can
    go singular on links next to measured parallel branches). Returns (data, node_map) where
    ``node_map[pgm node id]`` is the node that represents it; branches inside a merged group (shorted
    by closed links) are left out."""
    data = model.with_switch_states(switch_closed)
    extra = [model.ids[t].to_numpy() for t in ("load_z", "load_i") if t in model.ids and len(model.ids[t])]
    if extra:
        sl = data[ComponentType.sym_load]
        data[ComponentType.sym_load] = sl[~np.isin(sl["id"], np.concatenate(extra))]
    node = data[ComponentType.node]
    node_map = np.arange(model.n_ids, dtype=np.int64)
    link = data.pop(ComponentType.link, None)
    if link is None or not len(link):
        return data, node_map
    closed = (link["from_status"] == 1) & (link["to_status"] == 1)
    nn = len(node)
    npos = lambda ids: np.searchsorted(node["id"], ids)
    a, b = npos(link["from_node"][closed]), npos(link["to_node"][closed])
    _, lab = connected_components(sp.coo_matrix((np.ones(len(a)), (a, b)), shape=(nn, nn)), directed=False)
    rep_pos = pd.Series(np.arange(nn)).groupby(lab).transform("min").to_numpy()
    node_map[node["id"]] = node["id"][rep_pos]
    data[ComponentType.node] = node[rep_pos == np.arange(nn)]
    for comp in (ComponentType.line, ComponentType.transformer):
        arr = data.get(comp)
        if arr is None or not len(arr):
            continue
        arr = arr.copy()
        arr["from_node"] = node_map[arr["from_node"]]
        arr["to_node"] = node_map[arr["to_node"]]
        data[comp] = arr[arr["from_node"] != arr["to_node"]]
    for comp in (ComponentType.sym_load, ComponentType.sym_gen, ComponentType.source, ComponentType.shunt):
        arr = data.get(comp)
        if arr is None or not len(arr):
            continue
        arr = arr.copy()
        arr["node"] = node_map[arr["node"]]
        data[comp] = arr
    return data, node_map


def _invalid_output(out: dict, data: dict) -> str | None:
    """Why a PGM output cannot be the estimate of ``data`` (its node ids are not those of the input),
    or None when it can."""
    node = out.get(ComponentType.node)
    want = data[ComponentType.node]["id"]
    if node is None or len(node) != len(want) or not np.array_equal(node["id"], want):
        return "node ids differ from the input"
    return None


def _expand_nodes(out: dict, model: PgmModel, node_map: np.ndarray) -> dict:
    """Node output for every model node from the output of the merged representative nodes."""
    node = out[ComponentType.node]
    ids = model.input[ComponentType.node]["id"]
    rows = np.searchsorted(node["id"], node_map[ids])
    full = node[rows].copy()
    full["id"] = ids
    res = dict(out)
    res[ComponentType.node] = full
    return res


def _run_pgm_se(data: dict, sensors: dict, method: CalculationMethod, max_iterations: int, tol: float):
    d = dict(data)
    d.update(sensors)
    pgm = PowerGridModel(d)
    return pgm.calculate_state_estimation(symmetric=True, error_tolerance=tol, max_iterations=max_iterations,
                                          calculation_method=method)


def estimate_state(
    net_or_model,
    measurements: pd.DataFrame,
    *,
    switch_closed: Mapping | pd.Series | None = None,
    algorithm: str = "iterative_linear",
    pseudo_injections: pd.DataFrame | None = None,
    pseudo_sigma_fraction: float = 0.5,
    pseudo_voltage_sigma_pu: float = 0.05,
    last_good: EstimationResult | pd.DataFrame | None = None,
    normalized_residuals: bool | None = None,
    refine: bool = True,
    max_iterations: int = 50,
    tolerance: float = 1e-8,
    quality_factor: Mapping[str, float] | None = None,
) -> EstimationResult:
    """Weighted-least-squares state estimate of ``net_or_model`` from ``measurements``.

    ``algorithm``: "iterative_linear" (default) or "newton_raphson". ``refine``: polish PGM's
    estimate with Gauss-Newton steps on the exact AC WLS objective of the same model (PGM's
    iterative-linear method linearises power measurements through currents, so its optimum differs
    slightly; the chi-squared and r_N statistics need the true WLS optimum). Bus voltages and branch
    flows then come from the refined state; appliance estimates stay PGM's. ``normalized_residuals``:
    compute r_N (selected inverse of the gain matrix; default: grids up to 20,000 buses).
    Never raises for numerical trouble: see ``EstimationResult.fallback``.
    """
    t0 = time.perf_counter()
    _, model = model_of(net_or_model)
    method = CalculationMethod.newton_raphson if algorithm in ("newton_raphson", "nr") else CalculationMethod.iterative_linear
    data, node_map = _se_input(model, switch_closed)
    used, dropped = prepare_measurements(model, measurements, quality_factor, model.with_switch_states(switch_closed))
    used = used.copy()
    isu = (used.quantity == "u").to_numpy()
    used["pgm_node"] = used["pgm_object"]
    used.loc[isu, "pgm_node"] = node_map[used.loc[isu, "pgm_object"].to_numpy().astype(np.int64)]
    pseudo = pseudo_table(model, pseudo_injections, pseudo_sigma_fraction)
    first_id = model.n_ids
    pgm_s = 0.0
    message = ""
    out = None
    observable = True
    pseudo_objects: set[int] = set()
    pseudo_v: list[int] = []
    attempts = []
    # attempt 1: measurements only (missing partners of P/Q pairs filled with pseudo values)
    if not (used.quantity == "u").any():
        observable = False
        pseudo_v = _source_nodes(data)
        attempts.append("no voltage measurement: pseudo voltage at the source(s)")
    sensors, st = _build_sensors(model, used, pseudo, first_id, None, pseudo_voltage_sigma_pu, pseudo_v)
    coarse = False
    used_method = method

    def attempt(sens, iters):
        """Run PGM with the requested method; if it does not converge, with the other method, then
        (with ``refine``) iterative-linear to a coarse tolerance that the Gauss-Newton refinement
        tightens. Returns (output or None, error or None)."""
        nonlocal pgm_s, coarse, used_method
        other = CalculationMethod.newton_raphson if method == CalculationMethod.iterative_linear \
            else CalculationMethod.iterative_linear
        tries = [(method, tolerance, False), (other, tolerance, False)]
        if refine:
            tries.append((CalculationMethod.iterative_linear, max(tolerance, 1e-4), True))
        err_ = None
        for meth, tol, is_coarse in tries:
            ts = time.perf_counter()
            try:
                res_ = _run_pgm_se(data, sens, meth, iters, tol)
                bad = _invalid_output(res_, data)
                if bad:
                    # PGM's output buffers are np.empty: a calculation that returns without writing
                    # them (seen once in CI, under the N-1 thread) must not be read as a state
                    log.warning("PGM %s returned an unwritten output (%s); trying the next method", meth.name, bad)
                    attempts.append(f"{meth.name} returned an invalid output ({bad})")
                    err_ = IterationDiverge(bad)
                    continue
                used_method, coarse = meth, is_coarse
                return res_, None
            except IterationDiverge as exc:
                err_ = exc
            except PowerGridError as exc:
                return None, exc
            finally:
                pgm_s += time.perf_counter() - ts
        return None, err_

    out, err = attempt(sensors, max_iterations)
    if out is None and isinstance(err, (NotObservableError, SparseMatrixError, IterationDiverge)):
        # attempt 2: pseudo injections for every unmeasured appliance, pseudo voltage where missing
        observable = False
        attempts.append(f"{type(err).__name__}: added pseudo-measurements")
        pseudo_objects = _unmeasured_appliances(data, used)
        pseudo_v = sorted(set(pseudo_v) | set(_islands_without_voltage(model, data, used)))
        sensors, st = _build_sensors(model, used, pseudo, first_id, pseudo_objects, pseudo_voltage_sigma_pu, pseudo_v)
        out, err = attempt(sensors, max(max_iterations, 100))
    if coarse:
        attempts.append("PGM iterated to 1e-4 only; Gauss-Newton refinement finished the estimate")
    elif out is not None and used_method != method:
        attempts.append(f"{method.name} did not converge; used {used_method.name}")
    if out is None:
        message = "; ".join(attempts + [f"estimation failed: {type(err).__name__}: {str(err).splitlines()[0]}"])
        return _fallback(model, data, node_map, used, dropped, pseudo, last_good, message, t0, pgm_s,
                         "newton_raphson" if method == CalculationMethod.newton_raphson else "iterative_linear")
    if attempts:
        message = "; ".join(attempts)
    # WLS bookkeeping on the estimated state
    wls = WlsModel(model, data, sensors, st, used)
    if wls.n_bus == 0 or not len(wls.kind):
        message = "; ".join(attempts + ["estimation failed: no bus connected to an in-service source"])
        return _fallback(model, data, node_map, used, dropped, pseudo, last_good, message, t0, pgm_s,
                         used_method.name)
    V = wls.state_from_pgm(out)
    if refine:
        V2, ok, info = wls.refine(V, max_iter=12 if coarse else 6)
        if ok:
            V = V2
            wls.write_state(out, V)
        elif coarse:
            message = "; ".join(attempts + [f"estimation failed: PGM did not converge and refinement failed ({info})"])
            return _fallback(model, data, node_map, used, dropped, pseudo, last_good, message, t0, pgm_s,
                             "newton_raphson" if method == CalculationMethod.newton_raphson else "iterative_linear")
        else:
            message = (message + "; " if message else "") + f"Gauss-Newton refinement skipped: {info}"
    J, r = wls.objective(V)
    rn = None
    if normalized_residuals is None:
        normalized_residuals = wls.n_bus <= 20000
    omega = None
    if normalized_residuals:

        try:
            omega = residual_covariance_diag(wls, V)
            with np.errstate(divide="ignore", invalid="ignore"):
                rn = np.where(omega > CRITICAL_RHO * wls.sigma ** 2, r / np.sqrt(np.maximum(omega, 0.0)), np.nan)
        except Exception as exc:  # numerical trouble in the gain matrix: report, do not fail
            message = (message + "; " if message else "") + f"normalised residuals unavailable: {exc}"
            rn = None
    meas = _measurement_table(used, wls, r, rn, omega)
    ps_rows = _pseudo_rows(model, st, sensors, pseudo_v)
    max_rn = None
    if rn is not None:
        cand = np.abs(rn[~wls.constraint & ~wls.pseudo])
        cand = cand[np.isfinite(cand)]
        max_rn = float(cand.max()) if len(cand) else 0.0
    out = _expand_nodes(out, model, node_map)
    buses = bus_results(model, out)
    branches = branch_results(model, out)
    return EstimationResult(
        converged=True, fallback=None, algorithm=used_method.name, buses=buses, branches=branches,
        appliances=appliance_results(model, out), losses_mw=float(branches.pl_mw.sum()) if len(branches) else 0.0,
        J=J, dof=wls.dof, m=wls.m, n=wls.n_state, max_abs_rn=max_rn, measurements=meas, dropped=dropped,
        pseudo=ps_rows, observable=observable, elapsed_s=time.perf_counter() - t0, pgm_s=pgm_s, message=message,
        wls=wls, state={"V": V, "r": r, "rn": rn, "omega": omega, "used": used, "sensor_table": st,
                        "data": data, "model": model, "sensors": sensors},
    )


def _source_nodes(data: dict) -> list[int]:
    src = data.get(ComponentType.source)
    if src is None or not len(src):
        return []
    return sorted(set(int(n) for n in src["node"][src["status"] == 1]))


def _unmeasured_appliances(data: dict, used: pd.DataFrame) -> set[int]:
    measured = set(used.loc[used.terminal_type.isin([int(MeasuredTerminalType.load), int(MeasuredTerminalType.generator),
                                                     int(MeasuredTerminalType.source)]), "pgm_object"].astype(int))
    out = set()
    for comp in (ComponentType.sym_load, ComponentType.sym_gen):
        arr = data.get(comp)
        if arr is None:
            continue
        on = arr["status"] == 1
        out |= set(int(i) for i in arr["id"][on]) - measured
    return out


def _islands_without_voltage(model: PgmModel, data: dict, used: pd.DataFrame) -> list[int]:
    """Source nodes of energised islands that hold no voltage measurement."""
    node = data[ComponentType.node]
    nn = len(node)
    npos = lambda ids: np.searchsorted(node["id"], ids)
    a, b = [], []
    for comp in (ComponentType.line, ComponentType.transformer, ComponentType.link):
        arr = data.get(comp)
        if arr is None or not len(arr):
            continue
        on = (arr["from_status"] == 1) & (arr["to_status"] == 1)
        a.append(npos(arr["from_node"][on]))
        b.append(npos(arr["to_node"][on]))
    a = np.concatenate(a) if a else np.zeros(0, int)
    b = np.concatenate(b) if b else np.zeros(0, int)
    _, lab = connected_components(sp.coo_matrix((np.ones(len(a)), (a, b)), shape=(nn, nn)), directed=False)
    vnodes = npos(used.loc[used.quantity == "u", "pgm_node"].to_numpy())
    have = set(lab[vnodes].tolist())
    out = []
    for s in _source_nodes(data):
        if lab[npos(s)] not in have:
            out.append(s)
    return out


def _measurement_table(used: pd.DataFrame, wls: WlsModel, r: np.ndarray, rn, omega) -> pd.DataFrame:
    """Per used measurement: estimate, residual (measurement units), r_w, r_n, wls_row."""
    n = len(used)
    est_res = np.full(n, np.nan)
    rnn = np.full(n, np.nan)
    wrow = np.full(n, -1, dtype=np.int64)
    real = ~wls.constraint[wls.mem_row]
    pos, row, share = wls.mem_pos[real], wls.mem_row[real], wls.mem_share[real]
    est_res[pos] = r[row] * share
    wrow[pos] = row
    if rn is not None:
        rnn[pos] = rn[row]
    unit = np.where(used.quantity == "u", wls_u_rated(used, wls) / 1e3, 1.0)
    res = est_res * unit
    out = used[["row", "sensor_id", "kind", "element_type", "element_id", "terminal", "value", "sigma", "sigma_used",
                "quality"]].copy()
    out["estimate"] = out["value"].astype(float) - res
    out["residual"] = res
    out["r_w"] = res / out["sigma_used"].astype(float)
    out["r_n"] = rnn
    out["wls_row"] = wrow
    return out


def wls_u_rated(used: pd.DataFrame, wls: WlsModel) -> np.ndarray:
    node = wls.model.input[ComponentType.node]
    obj = used["pgm_object"].to_numpy()
    out = np.ones(len(used))
    isu = (used.quantity == "u").to_numpy()
    out[isu] = node["u_rated"][np.searchsorted(node["id"], obj[isu])]
    return out


def _pseudo_rows(model: PgmModel, st: pd.DataFrame, sensors: dict, pseudo_v: list[int]) -> pd.DataFrame:
    rows = []
    ps = sensors.get(ComponentType.sym_power_sensor)
    if ps is not None and len(ps):
        stp = st[st.type == "pq"].reset_index(drop=True)
        table, idx = model.pp_of(ps["measured_object"])
        for qty, flag, val, sg in (("p", stp.pseudo_p.to_numpy(), ps["p_measured"], ps["p_sigma"]),
                                   ("q", stp.pseudo_q.to_numpy(), ps["q_measured"], ps["q_sigma"])):
            if flag.any():
                rows.append(pd.DataFrame({"element_type": table[flag], "element_id": idx[flag].astype(np.int64),
                                          "kind": f"{qty}_pseudo", "value": val[flag] / 1e6, "sigma": sg[flag] / 1e6}))
    if pseudo_v:
        table, idx = model.pp_of(pseudo_v)
        rows.append(pd.DataFrame({"element_type": "bus", "element_id": idx.astype(np.int64), "kind": "v_pseudo",
                                  "value": np.nan, "sigma": np.nan}))
    if not rows:
        return pd.DataFrame(columns=["element_type", "element_id", "kind", "value", "sigma"])
    return pd.concat(rows, ignore_index=True)


# --------------------------------------------------------------------------------- fallback
def _fallback(model, data, node_map, used, dropped, pseudo, last_good, message, t0, pgm_s, algorithm) -> EstimationResult:
    from gridpipeline.grid.network import bus_results as _br

    empty_meas = used[["row", "sensor_id", "kind", "element_type", "element_id", "terminal", "value", "sigma",
                       "sigma_used", "quality"]].copy()
    kind = None
    buses = branches = apps = None
    if last_good is not None:
        lg = last_good.buses if isinstance(last_good, EstimationResult) else last_good
        if isinstance(last_good, EstimationResult):
            branches, apps = last_good.branches.copy(), last_good.appliances.copy()
        else:
            branches = pd.DataFrame(columns=["element_type", "element_id", "loading_percent", "pl_mw"])
            apps = pd.DataFrame(columns=["element_type", "element_id", "p_mw", "q_mvar"])
        buses = lg.copy()
        kind = "last_good"
    else:
        # power flow over the best known injections: measured where measured, pseudo elsewhere
        d = dict(data)
        for comp in (ComponentType.sym_load, ComponentType.sym_gen):
            arr = d.get(comp)
            if arr is None or not len(arr):
                continue
            arr = arr.copy()
            ids = arr["id"]
            p = pseudo.reindex(ids)
            arr["p_specified"] = np.where(p.p_w.notna(), p.p_w, arr["p_specified"])
            arr["q_specified"] = np.where(p.q_var.notna(), p.q_var, arr["q_specified"])
            for qty, col in (("p", "p_specified"), ("q", "q_specified")):
                m = used[(used.quantity == qty) & used.pgm_object.isin(ids)]
                if len(m):
                    mv = m.groupby("pgm_object").value_si.mean()
                    rows = np.searchsorted(ids, mv.index.to_numpy())
                    arr[col][rows] = mv.to_numpy()
            arr["type"] = 0
            d[comp] = arr
        for method, name in ((CalculationMethod.newton_raphson, "powerflow"), (CalculationMethod.linear, "flat")):
            try:
                if name == "flat":
                    for comp in (ComponentType.sym_load, ComponentType.sym_gen):
                        if comp in d:
                            a = d[comp].copy()
                            a["status"] = 0
                            d[comp] = a
                ts = time.perf_counter()
                out = PowerGridModel(d).calculate_power_flow(calculation_method=method, max_iterations=30)
                pgm_s += time.perf_counter() - ts
                out = _expand_nodes(out, model, node_map)
                buses = _br(model, out)
                branches = branch_results(model, out)
                apps = appliance_results(model, out)
                kind = name
                break
            except PowerGridError as exc:
                message += f"; fallback {name} failed: {type(exc).__name__}"
        if buses is None:
            idx = model.ids["bus"].index
            buses = pd.DataFrame({"u_pu": np.nan, "u_angle_deg": np.nan, "u_kv": np.nan, "energized": False},
                                 index=pd.Index(idx, name="bus"))
            branches = pd.DataFrame(columns=["element_type", "element_id", "loading_percent", "pl_mw"])
            apps = pd.DataFrame(columns=["element_type", "element_id", "p_mw", "q_mvar"])
            kind = "flat"
    for c in ("estimate", "residual", "r_w", "r_n"):
        empty_meas[c] = np.nan
    return EstimationResult(
        converged=False, fallback=kind, algorithm=algorithm, buses=buses, branches=branches, appliances=apps,
        losses_mw=float(pd.to_numeric(branches["pl_mw"], errors="coerce").sum()) if len(branches) else float("nan"),
        J=float("nan"), dof=0, m=len(used), n=0, max_abs_rn=None, measurements=empty_meas, dropped=dropped,
        pseudo=pd.DataFrame(columns=["element_type", "element_id", "kind", "value", "sigma"]), observable=False,
        elapsed_s=time.perf_counter() - t0, pgm_s=pgm_s, message=message,
    )
