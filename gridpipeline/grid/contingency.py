"""N-1 (and chosen N-2) contingency analysis as one power-grid-model batch.

Each contingency is a batch scenario: lines/transformers get ``from_status = to_status = 0``,
static generators ``status = 0``. PGM reports nodes cut off from every source as not energised;
the load connected there is the load lost (islanded). Per contingency: converged, max loading
(pandapower's current-based definition) and where, min/max voltage of energised buses, violation
counts, load lost, and a severity rank. With ``restore_via_ties`` each contingency that loses
load is re-run with every normally-open switch that reconnects the lost area (another batch) and
the best one is reported with the load it restores.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from power_grid_model import CalculationMethod, ComponentType, PowerGridModel

from gridpipeline.grid.network import PgmModel, has_voltage_controlled, sanitize_net, to_pgm
from gridpipeline.grid.powerflow import (
    batch_loading,
    batch_update,
    branch_index,
    injection_sensitivities,
)

__all__ = ["assess_contingencies", "contingency_list", "n1_trigger", "outage_changes", "relief_injections", "run_batch",
           "run_n1", "run_n1_decomposed"]

_COMP = {"line": ComponentType.line, "trafo": ComponentType.transformer, "sgen": ComponentType.sym_gen,
         "load": ComponentType.sym_load, "storage": ComponentType.sym_load, "switch": ComponentType.link}


def outage_changes(model: PgmModel, elements: Sequence[tuple[str, int]]) -> list[tuple]:
    """The PGM batch changes (``powerflow.batch_update``) that take ``elements`` ((table, index) pairs) out of
    service."""
    ch = []
    for etype, eid in elements:
        comp = _COMP[etype]
        pid = int(model.ids[etype][eid])
        if comp in (ComponentType.line, ComponentType.transformer, ComponentType.link):
            ch.append((comp, pid, {"from_status": 0, "to_status": 0}))
        else:
            ch.append((comp, pid, {"status": 0}))
    return ch


def contingency_list(model: PgmModel, data: dict, elements: Iterable[str] = ("line", "trafo", "sgen"),
                     n2: Sequence[Sequence[tuple[str, int]]] | None = None) -> list[tuple[tuple[str, int], ...]]:
    """All single outages of in-service, connected elements of the given types, plus ``n2`` tuples."""
    out: list[tuple[tuple[str, int], ...]] = []
    for etype in elements:
        comp = _COMP[etype]
        arr = data.get(comp)
        ids = model.ids.get(etype)
        if arr is None or ids is None or not len(ids):
            continue
        rows = np.searchsorted(arr["id"], ids.to_numpy())
        if comp in (ComponentType.line, ComponentType.transformer, ComponentType.link):
            live = (arr["from_status"][rows] == 1) & (arr["to_status"][rows] == 1)
        else:
            live = arr["status"][rows] == 1
        out.extend(((etype, int(i)),) for i in ids.index[live])
    for combo in n2 or []:
        out.append(tuple((str(t), int(i)) for t, i in combo))
    return out


def _load_per_node(model: PgmModel, data: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sym_load ids, nodes, p in MW) of in-service loads (ZIP parts included, storage excluded)."""
    arr = data.get(ComponentType.sym_load)
    if arr is None or not len(arr):
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    tables = model.id_table[arr["id"]]
    sel = np.isin(tables, ["load", "load_z", "load_i"]) & (arr["status"] == 1)
    return arr["id"][sel], arr["node"][sel], arr["p_specified"][sel] / 1e6


def run_n1(
    net,
    *,
    elements: Iterable[str] = ("line", "trafo", "sgen"),
    n2: list[tuple] | None = None,
    restore_via_ties: bool = False,
    switch_closed: Mapping | pd.Series | None = None,
    loading_limit: float = 100.0,
    v_min: float = 0.95,
    v_max: float = 1.05,
    model: PgmModel | None = None,
    threading: int = -1,
    tolerance: float = 1e-8,
    max_iterations: int = 30,
    chunk_size: int = 500,
    contingencies: Sequence[tuple[tuple[str, int], ...]] | None = None,
) -> pd.DataFrame:
    """Contingency table, one row per contingency, sorted by severity (rank 1 = worst).

    Columns: contingency (label), elements (tuple of (type, id)), converged, max_loading_percent,
    max_loading_element, min_u_pu, max_u_pu, n_overloads, n_voltage_violations, buses_lost,
    load_lost_mw, severity, rank; with ``restore_via_ties`` also tie_switch, load_restored_mw,
    max_loading_after_restore_percent. Scenarios run in batches of ``chunk_size`` (memory);
    ``threading`` is PGM's (0: all cores). ``contingencies``: run exactly these (tuples of
    (element_type, id)) instead of every outage of ``elements`` plus ``n2``.
    """
    t0 = time.perf_counter()
    sanitize_net(net)
    if has_voltage_controlled(net):
        raise ValueError("run_n1 uses power-grid-model, which has no voltage-controlled generators; "
                         "this net has gens (use pandapower.contingency for it)")
    model = model or to_pgm(net)
    data = model.with_switch_states(switch_closed)
    cons = contingency_list(model, data, elements, n2) if contingencies is None else \
        [tuple((str(t), int(i)) for t, i in c) for c in contingencies]
    # load lost is counted against the base case: a bus already dead before the outage (an area left
    # open by the operator) is not lost by it
    base = run_batch(model, data, [[]], threading, tolerance, max_iterations) if cons else None
    base_en = base["node_en"][0].astype(bool) if base is not None and 0 not in base["failed"] else None
    parts = []
    for s0 in range(0, len(cons), max(1, chunk_size)):
        c = cons[s0:s0 + chunk_size]
        scen = [outage_changes(model, x) for x in c]
        res = run_batch(model, data, scen, threading, tolerance, max_iterations)
        part = pd.DataFrame(_summarise(model, data, c, res, loading_limit, v_min, v_max, base_en))
        if restore_via_ties and len(part):
            _restore(model, data, c, scen, res, part, threading, tolerance, max_iterations, loading_limit, base_en)
        parts.append(part)
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["contingency", "elements", "converged", "max_loading_percent", "max_loading_element", "min_u_pu",
                 "max_u_pu", "n_overloads", "n_voltage_violations", "buses_lost", "load_lost_mw"])
    df = _rank(df, loading_limit, v_min, v_max)
    df.attrs["elapsed_s"] = time.perf_counter() - t0
    df.attrs["n_scenarios"] = len(cons)
    return df


def run_batch(model, data, scen, threading, tolerance, max_iterations) -> dict:
    """One PGM power-flow batch of ``scen`` (per scenario, a list of changes, ``powerflow.batch_update``):
    ``node_u`` and ``node_en`` (scenario x node), ``loading`` (scenario x branch, ``batch_loading``) and the
    ``failed`` scenarios' positions."""
    if not scen:
        return {"node_u": np.zeros((0, 0)), "node_en": np.zeros((0, 0)), "loading": np.zeros((0, 0)), "failed": set()}
    upd = batch_update(scen)
    if not upd:  # every scenario empty
        upd = batch_update([[(ComponentType.line, int(data[ComponentType.line]["id"][0]), {})]] * len(scen))
    pgm = PowerGridModel(data)
    out = pgm.calculate_power_flow(
        update_data=upd, calculation_method=CalculationMethod.newton_raphson, threading=threading,
        continue_on_batch_error=True, error_tolerance=tolerance, max_iterations=max_iterations,
        output_component_types={ComponentType.node: ["id", "u_pu", "energized"],
                                ComponentType.line: ["id", "i_from", "i_to"],
                                ComponentType.transformer: ["id", "i_from", "i_to"]})
    failed = set(pgm.batch_error.failed_scenarios.tolist()) if pgm.batch_error is not None else set()
    return {"node_u": out[ComponentType.node]["u_pu"], "node_en": out[ComponentType.node]["energized"],
            "loading": batch_loading(model, data, out), "failed": failed}


def _summarise(model, data, cons, res, loading_limit, v_min, v_max, base_en=None) -> list[dict]:
    node_ids = data[ComponentType.node]["id"]
    _, lnode, lp = _load_per_node(model, data)
    lnode_pos = np.searchsorted(node_ids, lnode)
    br_index = branch_index(model, data)
    rows = []
    for k, c in enumerate(cons):
        label = "+".join(f"{t}:{i}" for t, i in c)
        if k in res["failed"]:
            rows.append({"contingency": label, "elements": c, "converged": False, "max_loading_percent": np.nan,
                         "max_loading_element": None, "min_u_pu": np.nan, "max_u_pu": np.nan, "n_overloads": 0,
                         "n_voltage_violations": 0, "buses_lost": 0, "load_lost_mw": np.nan})
            continue
        en = res["node_en"][k].astype(bool)
        u = res["node_u"][k][en]
        ld = np.nan_to_num(res["loading"][k], nan=0.0)
        j = int(np.argmax(ld)) if len(ld) else -1
        dead = ~en if base_en is None else (~en & base_en)  # de-energised by this outage
        lost = dead[lnode_pos]
        rows.append({
            "contingency": label, "elements": c, "converged": True,
            "max_loading_percent": float(ld[j]) if j >= 0 else 0.0,
            "max_loading_element": f"{br_index[j][0]}:{br_index[j][1]}" if j >= 0 else None,
            "min_u_pu": float(u.min()) if len(u) else np.nan, "max_u_pu": float(u.max()) if len(u) else np.nan,
            "n_overloads": int((ld > loading_limit).sum()),
            "n_voltage_violations": int(((u < v_min) | (u > v_max)).sum()),
            "buses_lost": int(dead.sum()), "load_lost_mw": float(lp[lost].sum()),
        })
    return rows


def _rank(df: pd.DataFrame, loading_limit: float = 100.0, v_min: float = 0.95, v_max: float = 1.05) -> pd.DataFrame:
    """Severity and rank against the configured limits (loading in %, voltages in p.u.)."""
    if not len(df):
        return df
    over = (df.max_loading_percent.fillna(0) - loading_limit).clip(lower=0)
    vdev = np.maximum((v_min - df.min_u_pu.fillna(1.0)).clip(lower=0), (df.max_u_pu.fillna(1.0) - v_max).clip(lower=0))
    # severity: divergence dominates, then lost load (MW x 100), then overload (%), then voltage (% of nominal)
    df["severity"] = (~df.converged).astype(float) * 1e6 + df.load_lost_mw.fillna(0) * 100.0 + over + vdev * 100.0
    df = df.sort_values(["severity", "max_loading_percent"], ascending=False, kind="stable").reset_index(drop=True)
    df["rank"] = np.arange(1, len(df) + 1)
    return df


# --------------------------------------------------------------------------------- restoration
def _tie_candidates(model: PgmModel, data: dict) -> list[tuple[int, tuple, int, int]]:
    """Open switches as (switch index, status change, node a, node b): closing it joins a and b."""
    sm = model.switch_map
    if not len(sm):
        return []
    out = []
    for sw, r in sm.iterrows():
        comp = ComponentType(r.component)
        arr = data[comp]
        row = int(np.searchsorted(arr["id"], r.pgm_id))
        fs, ts = int(arr["from_status"][row]), int(arr["to_status"][row])
        if fs == 1 and ts == 1:
            continue  # already conducting
        new = {"from_status": 1 if r.side in ("from", "both") else fs, "to_status": 1 if r.side in ("to", "both") else ts}
        if not (new["from_status"] == 1 and new["to_status"] == 1):
            continue  # another open switch on the same branch
        out.append((int(sw), (comp, int(r.pgm_id), new), int(arr["from_node"][row]), int(arr["to_node"][row])))
    return out


def _restore(model, data, cons, scen, res, df, threading, tolerance, max_iterations, loading_limit,
             base_en=None) -> None:
    ties = _tie_candidates(model, data)
    node_ids = data[ComponentType.node]["id"]
    _, lnode, lp = _load_per_node(model, data)
    lnode_pos = np.searchsorted(node_ids, lnode)
    df["tie_switch"] = pd.array([pd.NA] * len(df), dtype="Int64")
    df["load_restored_mw"] = 0.0
    df["max_loading_after_restore_percent"] = np.nan
    trial_scen, trial_of = [], []
    for k, c in enumerate(cons):
        if k in res["failed"] or not df.at[k, "load_lost_mw"] > 0:
            continue
        en = res["node_en"][k].astype(bool)
        out_ids = {pid for _, pid, _ in scen[k]}
        for sw, change, a, b in ties:
            if change[1] in out_ids:
                continue
            pa, pb = np.searchsorted(node_ids, [a, b])
            if en[pa] != en[pb]:  # joins a dead area to a live one
                trial_scen.append(scen[k] + [change])
                trial_of.append((k, sw))
    if not trial_scen:
        return
    tr = run_batch(model, data, trial_scen, threading, tolerance, max_iterations)
    best: dict[int, tuple] = {}
    for j, (k, sw) in enumerate(trial_of):
        if j in tr["failed"]:
            continue
        en = tr["node_en"][j].astype(bool)
        dead = ~en if base_en is None else (~en & base_en)
        lost_after = float(lp[dead[lnode_pos]].sum())
        restored = float(df.at[k, "load_lost_mw"]) - lost_after
        mx = float(np.nan_to_num(tr["loading"][j], nan=0.0).max()) if tr["loading"].shape[1] else 0.0
        # prefer more load restored, then no overload, then the lower loading
        key = (round(restored, 9), mx <= loading_limit, -mx)
        if restored > 0 and (k not in best or key > best[k][0]):
            best[k] = (key, sw, restored, mx)
    for k, (_, sw, restored, mx) in best.items():
        df.at[k, "tie_switch"] = sw
        df.at[k, "load_restored_mw"] = restored
        df.at[k, "max_loading_after_restore_percent"] = mx


# ------------------------------------------------------------------------------- relief
def relief_injections(
    net,
    contingency: Sequence[tuple[str, int]] | str,
    *,
    target: tuple[str, int] | None = None,
    model: PgmModel | None = None,
    switch_closed: Mapping | pd.Series | None = None,
    max_candidates: int = 100,
    top_n: int = 10,
    delta_mw: float = 0.01,
    loading_limit: float = 100.0,
) -> pd.DataFrame:
    """Injections that would relieve the worst-loaded branch under ``contingency``.

    ``contingency``: tuple of (element_type, id) or a label like "line:3+line:7". ``target``: the
    branch to relieve (default: the most loaded one under the outage). Sensitivities come from one
    PGM batch with the outage applied in every scenario. Columns: element_type, element_id, bus,
    p_mw, sensitivity_pct_per_mw, action, relief_capacity_pct (what the action can achieve within
    the element's current output/consumption or rating), mw_to_limit (MW of the action that brings
    the target to ``loading_limit``), target, target_loading_percent.
    """
    sanitize_net(net)
    model = model or to_pgm(net)
    data = model.with_switch_states(switch_closed)
    if isinstance(contingency, str):
        contingency = tuple((p.split(":")[0], int(p.split(":")[1])) for p in contingency.split("+"))
    base = outage_changes(model, contingency)
    res = run_batch(model, data, [base], -1, 1e-8, 30)
    cols = ["element_type", "element_id", "bus", "p_mw", "sensitivity_pct_per_mw", "action", "relief_capacity_pct",
            "mw_to_limit", "target", "target_loading_percent"]
    if 0 in res["failed"]:
        return pd.DataFrame(columns=cols)
    br_index = branch_index(model, data)
    ld = np.nan_to_num(res["loading"][0], nan=0.0)
    if target is None:
        j = int(np.argmax(ld))
        target = (br_index[j][0], int(br_index[j][1]))
    else:
        j = list(br_index).index((target[0], int(target[1])))
    target_loading = float(ld[j])
    comp = ComponentType.line if target[0] == "line" else ComponentType.transformer
    arr = data[comp]
    row = int(np.searchsorted(arr["id"], model.ids[target[0]][target[1]]))
    from gridpipeline.grid.powerflow import candidate_injections

    # candidates: near the target, among what is still energised under the outage
    cand = candidate_injections(model, data, [int(arr["from_node"][row]), int(arr["to_node"][row])], max_candidates * 3)
    cand = [c for c in cand if model.id_table[c] in ("load", "sgen", "storage")][:max_candidates]
    if not cand:
        return pd.DataFrame(columns=cols)
    bs, _ = injection_sensitivities(model, data, cand, base_update=base, delta_mw=delta_mw, branch_ids=[target])
    sens = bs.iloc[0]
    over = target_loading - loading_limit
    rows = []
    apps = model.appliances
    for aid, s in sens.items():
        if not np.isfinite(s) or abs(s) < 1e-9:
            continue
        table = model.id_table[aid]
        eid = int(model.id_index[aid])
        a = apps.loc[aid]
        p = float(a.p_mw)
        rating = float(a.sn_mva) if np.isfinite(a.sn_mva) and a.sn_mva > 0 else abs(p)
        if table == "load":
            action, cap = ("reduce load", max(p, 0.0)) if s > 0 else ("increase load", 0.0)
        elif table == "sgen":
            action, cap = ("reduce generation", max(p, 0.0)) if s > 0 else ("increase generation", max(rating - p, 0.0))
        else:  # storage: p > 0 charges
            action, cap = ("reduce charging / discharge", p + rating) if s > 0 else ("charge more", rating - p)
        relief = abs(s) * cap
        if relief <= 0:
            continue
        node = int(data[model.component_of(table)]["node"][np.searchsorted(data[model.component_of(table)]["id"], aid)])
        rows.append({"element_type": table, "element_id": eid, "bus": int(model.id_index[node]), "p_mw": p,
                     "sensitivity_pct_per_mw": float(s), "action": action, "relief_capacity_pct": relief,
                     "mw_to_limit": float(over / abs(s)) if over > 0 else 0.0, "target": f"{target[0]}:{target[1]}",
                     "target_loading_percent": target_loading})
    out = pd.DataFrame(rows, columns=cols)
    return out.sort_values("relief_capacity_pct", ascending=False, kind="stable").head(top_n).reset_index(drop=True)


# ------------------------------------------------------------------------- decomposed N-1
def lv_areas(net, switch_closed=None, lv_kv: float = 1.0) -> pd.Series:
    """Bus -> LV area label (-1 for buses above ``lv_kv``).

    An LV area is a set of LV buses connected by lines or switches, closed or open (so that an area
    contains its own tie switches), and fed from MV through its transformer(s)."""
    from gridpipeline.grid.topology import bus_components, connections

    conns = connections(net, switch_closed, include_open=True)
    lv = net.bus.vn_kv.astype(float) < lv_kv
    e = conns[(conns.element_type != "trafo") & lv.reindex(conns.u).to_numpy() & lv.reindex(conns.v).to_numpy()]
    buses = net.bus.index[lv].to_numpy().astype(np.int64)
    labels = pd.Series(-1, index=net.bus.index, dtype=np.int64)
    if len(buses):
        labels[buses] = bus_components(buses, e.u.to_numpy(), e.v.to_numpy())
    return labels


def _area_subnet(net, area_buses: np.ndarray, base_u: pd.Series, base_angle: pd.Series):
    """The LV area with its feeding transformers; the MV side of each is a source at its base voltage."""
    import pandapower as pp

    area = set(int(b) for b in area_buses)
    tr = net.trafo[net.trafo.lv_bus.isin(area) & net.trafo.in_service.astype(bool)]
    hv = set(int(b) for b in tr.hv_bus)
    sub = pp.select_subnet(net, list(area | hv), include_switch_buses=False, include_results=False)
    for table in ("load", "sgen", "storage", "shunt", "ext_grid", "gen", "ward", "xward"):
        if table in sub and len(sub[table]):
            sub[table] = sub[table][~sub[table].bus.isin(hv)]
    if len(sub.line):
        sub.line = sub.line[~(sub.line.from_bus.isin(hv) & sub.line.to_bus.isin(hv))]
    if len(sub.trafo):
        sub.trafo = sub.trafo[sub.trafo.lv_bus.isin(area)]
    for b in sorted(hv):
        pp.create_ext_grid(sub, b, vm_pu=float(base_u.get(b, 1.0)), va_degree=float(base_angle.get(b, 0.0)))
    return sub


def run_n1_decomposed(
    net,
    *,
    elements: Iterable[str] = ("line", "trafo", "sgen"),
    n2: list[tuple] | None = None,
    restore_via_ties: bool = False,
    switch_closed: Mapping | pd.Series | None = None,
    loading_limit: float = 100.0,
    v_min: float = 0.95,
    v_max: float = 1.05,
    lv_kv: float = 1.0,
    threading: int = -1,
    chunk_size: int = 500,
    verify_top: int = 200,
    verify_max: int = 1000,
) -> pd.DataFrame:
    """N-1 for distribution grids, decomposed by LV area: the same table as :func:`run_n1`.

    An outage inside a radial LV area changes flows only inside that area and, slightly, on the
    path up to the source. So each LV area's contingencies (its lines, its feeding transformers, its
    generators) run as a batch on the area alone, fed from its MV bus(es) held at their base-case
    voltage, and each result is combined with the base case outside the area (max loading, voltage
    range, violation counts). Contingencies of HV/MV elements run on the whole grid as in
    :func:`run_n1`. Each scenario then costs the size of its area, not of the grid: the difference is
    the MV voltage response to an LV outage, which ``benchmarks/contingency.py`` measures against
    full-grid runs. Screening, then verification: the ``verify_top`` most severe area results and every
    area result with a violation (at most ``verify_max``) are re-run on the whole grid and replaced,
    so the head of the ranking is exact. Column ``method`` says which (``whole_grid``/``area``);
    ``df.attrs`` records the areas and scenarios."""
    from gridpipeline.grid.powerflow import run_powerflow

    t0 = time.perf_counter()
    sanitize_net(net)
    closed = None
    if switch_closed is not None:
        closed = pd.Series(switch_closed) if not isinstance(switch_closed, pd.Series) else switch_closed
    base = run_powerflow(net, engine="pgm", switch_closed=closed)
    if not base.converged:
        raise ValueError(f"base case does not converge: {base.message}")
    labels = lv_areas(net, closed, lv_kv)
    elements = tuple(elements)
    bus_area = labels
    # element -> area (-1: runs on the whole grid)
    area_of: dict[tuple[str, int], int] = {}
    if "line" in elements and len(net.line):
        fa = bus_area.reindex(net.line.from_bus).to_numpy()
        ta = bus_area.reindex(net.line.to_bus).to_numpy()
        for i, a, b in zip(net.line.index, fa, ta):
            area_of[("line", int(i))] = int(a) if a == b and a >= 0 else -1
    if "trafo" in elements and len(net.trafo):
        la = bus_area.reindex(net.trafo.lv_bus).to_numpy()
        ha = bus_area.reindex(net.trafo.hv_bus).to_numpy()
        for i, a, h in zip(net.trafo.index, la, ha):
            area_of[("trafo", int(i))] = int(a) if a >= 0 and h < 0 else -1
    if "sgen" in elements and len(net.sgen):
        for i, a in zip(net.sgen.index, bus_area.reindex(net.sgen.bus).to_numpy()):
            area_of[("sgen", int(i))] = int(a)

    # the whole-grid part: HV/MV elements, as one run_n1 restricted to them
    model = to_pgm(net)
    data = model.with_switch_states(closed)
    all_cons = contingency_list(model, data, elements)
    # HV/MV single outages and every N-2 case run on the whole grid
    global_cons = [c for c in all_cons if area_of.get(c[0], -1) < 0] + \
        [tuple((str(t), int(i)) for t, i in combo) for combo in (n2 or [])]
    parts = []
    if global_cons:
        whole = run_n1(net, contingencies=global_cons, restore_via_ties=restore_via_ties, switch_closed=closed,
                       loading_limit=loading_limit, v_min=v_min, v_max=v_max, model=model, threading=threading,
                       chunk_size=chunk_size)
        parts.append(whole.drop(columns=["severity", "rank"], errors="ignore"))

    # the LV areas
    live = {c[0] for c in all_cons}
    br = base.branches
    br_area = np.where(br.element_type.to_numpy() == "line",
                       [area_of.get(("line", int(i)), -1) for i in br.element_id],
                       [area_of.get(("trafo", int(i)), -1) for i in br.element_id])
    ld_all = np.nan_to_num(br.loading_percent.to_numpy(), nan=0.0)
    bus_en = base.buses.energized.to_numpy(dtype=bool)
    bus_u = base.buses.u_pu.to_numpy()
    bus_lab = bus_area.reindex(base.buses.index).to_numpy()
    base_u = base.buses.u_pu
    base_ang = base.buses.u_angle_deg
    n_areas = 0
    by_area: dict[int, list] = {}
    for c in all_cons:
        a = area_of.get(c[0], -1)
        if a >= 0:
            by_area.setdefault(a, []).append(c[0])
    for a, elems in sorted(by_area.items()):
        buses = bus_area.index[bus_area.to_numpy() == a].to_numpy()
        sub = _area_subnet(net, buses, base_u, base_ang)
        sub_closed = closed.reindex(sub.switch.index) if closed is not None and len(sub.switch) else None
        sub_df = run_n1(sub, elements=elements, restore_via_ties=restore_via_ties, switch_closed=sub_closed,
                        loading_limit=loading_limit, v_min=v_min, v_max=v_max, threading=threading,
                        chunk_size=chunk_size)
        sub_df = sub_df[sub_df.elements.map(lambda e: len(e) == 1 and e[0] in set(elems) and e[0] in live)]
        n_areas += 1
        # the base case outside the area
        out_br = br_area != a
        out_ld = ld_all[out_br]
        j = int(np.argmax(out_ld)) if len(out_ld) else -1
        out_max = float(out_ld[j]) if j >= 0 else 0.0
        out_name = f"{br.element_type.iloc[np.flatnonzero(out_br)[j]]}:{br.element_id.iloc[np.flatnonzero(out_br)[j]]}" \
            if j >= 0 else None
        out_bus = bus_en & (bus_lab != a)
        u_out = bus_u[out_bus]
        out_over = int((out_ld > loading_limit).sum())
        out_vv = int(((u_out < v_min) | (u_out > v_max)).sum())
        rows = sub_df.drop(columns=["severity", "rank"], errors="ignore").copy()
        conv = rows.converged.to_numpy(dtype=bool)
        # violations the outage adds inside the area (the base case may have some already)
        in_over = int((ld_all[~out_br] > loading_limit).sum())
        u_in = bus_u[bus_en & (bus_lab == a)]
        in_vv = int(((u_in < v_min) | (u_in > v_max)).sum())
        rows["_new_violation"] = ~conv | (rows.n_overloads.to_numpy() > in_over) | \
            (rows.n_voltage_violations.to_numpy() > in_vv)
        sub_max = rows.max_loading_percent.to_numpy(dtype=float)
        take_out = conv & (out_max > np.nan_to_num(sub_max, nan=-1.0))
        rows.loc[take_out, "max_loading_element"] = out_name
        rows.loc[conv, "max_loading_percent"] = np.maximum(np.nan_to_num(sub_max[conv], nan=0.0), out_max)
        if len(u_out):
            rows.loc[conv, "min_u_pu"] = np.fmin(rows.min_u_pu.to_numpy(dtype=float)[conv], u_out.min())
            rows.loc[conv, "max_u_pu"] = np.fmax(rows.max_u_pu.to_numpy(dtype=float)[conv], u_out.max())
        rows.loc[conv, "n_overloads"] = rows.n_overloads.to_numpy()[conv] + out_over
        rows.loc[conv, "n_voltage_violations"] = rows.n_voltage_violations.to_numpy()[conv] + out_vv
        parts.append(rows)
    df = pd.concat([p for p in parts if len(p)], ignore_index=True) if parts else pd.DataFrame()
    if len(df):
        df["method"] = np.where(df.elements.map(lambda e: len(e) > 1 or area_of.get(e[0], -1) < 0), "whole_grid", "area")
    df = _rank(df, loading_limit, v_min, v_max)
    verified = 0
    if len(df) and (verify_top > 0 or verify_max > 0):
        area_rows = df[df.method == "area"]
        flagged = area_rows[area_rows["_new_violation"].fillna(False).astype(bool)]
        pick = pd.concat([area_rows.head(verify_top), flagged]).drop_duplicates("contingency").head(verify_max)
        if len(pick):
            exact = run_n1(net, contingencies=list(pick.elements), restore_via_ties=restore_via_ties,
                           switch_closed=closed, loading_limit=loading_limit, v_min=v_min, v_max=v_max,
                           model=model, threading=threading, chunk_size=chunk_size)
            exact = exact.drop(columns=["severity", "rank"], errors="ignore").assign(method="whole_grid")
            df = pd.concat([df[~df.contingency.isin(set(exact.contingency))].drop(columns=["severity", "rank"]), exact],
                           ignore_index=True)
            df = _rank(df, loading_limit, v_min, v_max)
            verified = len(exact)
    df = df.drop(columns=["_new_violation"], errors="ignore")
    df.attrs["elapsed_s"] = time.perf_counter() - t0
    df.attrs["n_scenarios"] = len(df)
    df.attrs["lv_areas"] = n_areas
    df.attrs["global_scenarios"] = len(global_cons)
    df.attrs["verified_whole_grid"] = verified
    return df


# ------------------------------------------------------------------------------- scheduling
def n1_trigger(n_events: int, window_has_n1: bool, live: bool, last_in_window: bool, converged: bool) -> str | None:
    """Why N-1 runs after this snapshot's estimate, or None when it does not.

    A topology event always triggers it (the grid the last screening saw is gone). Otherwise the live
    loop screens once per 5-minute window (the first snapshot of a window without one), and a
    backfill screens the last snapshot of each window. Never on a state that did not converge: a
    contingency analysis around a fallback state would rank fiction."""
    if not converged:
        return None
    if n_events > 0:
        return "topology_event"
    if live:
        return None if window_has_n1 else "schedule"
    return "backfill" if last_in_window else None


def assess_contingencies(work_net, switch_closed, n2: list[tuple] | None = None, *, loading_limit: float = 100.0,
                         v_min: float = 0.95, v_max: float = 1.05, relief_top: int = 5,
                         decompose_above_buses: int = 2000) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """N-1 (plus ``n2``) on the estimated grid, and relieving injections for the worst cases.

    Large grids are screened area by area with the severe head re-run on the whole grid
    (:func:`run_n1_decomposed`); small ones run as one batch. For the ``relief_top`` most severe
    converged contingencies with an overload, :func:`relief_injections` says which injections relieve
    the worst branch. Returns (contingency table, relief rows with a ``contingency`` column or None)."""
    n1 = run_n1_decomposed if len(work_net.bus) > decompose_above_buses else run_n1
    table = n1(work_net, n2=n2, switch_closed=switch_closed, restore_via_ties=True,
               loading_limit=loading_limit, v_min=v_min, v_max=v_max)
    relief = []
    if len(table):
        severe = table[(table.n_overloads > 0) & table.converged.astype(bool)].head(relief_top)
        for r in severe.itertuples():
            rel = relief_injections(work_net, r.elements, switch_closed=switch_closed)
            if len(rel):
                relief.append(rel.assign(contingency=r.contingency))
    return table, (pd.concat(relief, ignore_index=True) if relief else None)
