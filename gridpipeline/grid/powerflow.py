"""Power flow with the right engine, and bottlenecks with the injections behind them.

``run_powerflow(net)`` uses power-grid-model's Newton-Raphson when the net has no voltage-controlled
generators and nothing PGM cannot represent, and pandapower's ``runpp`` otherwise (``engine`` says
which). Non-convergence and islands without a slack are flagged in the result, never raised.

``bottlenecks(result, net)`` lists branches loaded above a threshold and buses outside a voltage
band, ranked by relative margin, each with the injections contributing most, from finite-difference
sensitivities computed in one PGM batch (one scenario per perturbed injection).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from power_grid_model import CalculationMethod, ComponentType, PowerGridModel, initialize_array
from power_grid_model.errors import PowerGridError

from gridpipeline.grid.network import (
    SQRT3,
    PgmModel,
    appliance_results,
    branch_results,
    bus_results,
    has_voltage_controlled,
    sanitize_net,
    to_pgm,
)

__all__ = ["PowerFlowResult", "batch_update", "bottlenecks", "injection_sensitivities", "run_powerflow"]


@dataclass
class PowerFlowResult:
    """engine: "pgm" or "pandapower"; buses (u_pu, u_angle_deg, u_kv, energized), branches (see
    ``network.branch_results``), appliances (p_mw/q_mvar in pandapower sign, ext_grid included),
    losses_mw, islands_without_slack (island, buses, n_buses, load_mw), converged, message."""

    engine: str
    converged: bool
    buses: pd.DataFrame
    branches: pd.DataFrame
    appliances: pd.DataFrame
    losses_mw: float
    islands_without_slack: pd.DataFrame
    elapsed_s: float
    message: str = ""
    model: PgmModel | None = field(default=None, repr=False)
    data: dict | None = field(default=None, repr=False)
    switch_closed: Any = field(default=None, repr=False)

    def summary(self) -> dict:
        b = self.buses[self.buses.energized] if len(self.buses) else self.buses
        return {
            "engine": self.engine, "converged": self.converged, "n_buses": len(self.buses),
            "u_pu_min": _f(b.u_pu.min()) if len(b) else None, "u_pu_max": _f(b.u_pu.max()) if len(b) else None,
            "max_loading_percent": _f(self.branches.loading_percent.max()) if len(self.branches) else None,
            "losses_mw": _f(self.losses_mw), "islands_without_slack": len(self.islands_without_slack),
            "unsupplied_load_mw": _f(self.islands_without_slack.load_mw.sum()) if len(self.islands_without_slack) else 0.0,
            "elapsed_s": round(self.elapsed_s, 4), "message": self.message,
        }


def _f(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def choose_engine(net, model: PgmModel | None = None) -> tuple[str, str]:
    """("pgm" or "pandapower", reason)."""
    if has_voltage_controlled(net):
        return "pandapower", "voltage-controlled generators (PV buses) present"
    reasons = (model.unsupported if model is not None else None)
    if reasons is None:
        from gridpipeline.grid.network import unsupported_elements

        reasons = unsupported_elements(net)
    if reasons:
        return "pandapower", "; ".join(reasons)
    return "pgm", "no voltage-controlled generators"


def run_powerflow(
    net,
    *,
    engine: str = "auto",
    switch_closed: Mapping | pd.Series | None = None,
    tolerance: float = 1e-8,
    max_iterations: int = 30,
    model: PgmModel | None = None,
) -> PowerFlowResult:
    """AC power flow. ``engine``: "auto", "pgm" or "pandapower"."""
    t0 = time.perf_counter()
    sanitize_net(net)
    from gridpipeline.grid.topology import islands as _islands

    why = ""
    if engine == "auto":
        engine, why = choose_engine(net, model)
    isl = _islands(net, switch_closed)
    dead = isl[~isl.has_slack].drop(columns=["has_slack", "slack_buses", "sgen_mw"]).reset_index(drop=True)
    if engine == "pgm":
        model = model or to_pgm(net)
        data = model.with_switch_states(switch_closed)
        msg = why
        if model.voltage_controlled:
            msg = (msg + "; " if msg else "") + "gens treated as PQ injections (PGM has no PV buses)"
        try:
            out = PowerGridModel(data).calculate_power_flow(
                symmetric=True, error_tolerance=tolerance, max_iterations=max_iterations,
                calculation_method=CalculationMethod.newton_raphson)
        except PowerGridError as exc:
            return _failed(net, model, "pgm", f"{type(exc).__name__}: {str(exc).splitlines()[0]}", dead, t0)
        buses = bus_results(model, out)
        branches = branch_results(model, out)
        apps = appliance_results(model, out)
        return PowerFlowResult("pgm", True, buses, branches, apps, float(branches.pl_mw.sum()) if len(branches) else 0.0,
                               dead, time.perf_counter() - t0, msg, model, data, switch_closed)
    if engine != "pandapower":
        raise ValueError(f"unknown engine {engine!r}")
    return _run_pandapower(net, switch_closed, tolerance, max_iterations, dead, t0, why)


def _failed(net, model, engine, msg, dead, t0) -> PowerFlowResult:
    buses = pd.DataFrame({"u_pu": np.nan, "u_angle_deg": np.nan, "u_kv": np.nan, "energized": False},
                         index=pd.Index(net.bus.index, name="bus"))
    return PowerFlowResult(engine, False, buses, pd.DataFrame(columns=["element_type", "element_id", "loading_percent",
                                                                        "pl_mw"]),
                           pd.DataFrame(columns=["element_type", "element_id", "p_mw", "q_mvar"]), float("nan"), dead,
                           time.perf_counter() - t0, msg, model)


def _run_pandapower(net, switch_closed, tolerance, max_iterations, dead, t0, why) -> PowerFlowResult:
    import pandapower as pp
    from pandapower.auxiliary import LoadflowNotConverged

    saved = None
    if switch_closed is not None and len(net.switch):
        from gridpipeline.grid.network import closed_series

        saved = net.switch.closed.copy()
        net.switch["closed"] = closed_series(net.switch, switch_closed)
    try:
        pp.runpp(net, calculate_voltage_angles=True, tolerance_mva=max(tolerance, 1e-10),
                 max_iteration=max_iterations, numba=False)
        ok, msg = True, why
    except LoadflowNotConverged as exc:
        ok, msg = False, f"pandapower did not converge: {exc}"
    except Exception as exc:  # pandapower raises assorted errors on broken data
        ok, msg = False, f"pandapower failed: {type(exc).__name__}: {exc}"
    finally:
        if saved is not None:
            net.switch["closed"] = saved
    if not ok:
        return _failed(net, None, "pandapower", msg, dead, t0)
    rb = net.res_bus
    en = rb.vm_pu.notna().to_numpy()
    buses = pd.DataFrame({"u_pu": rb.vm_pu.to_numpy(), "u_angle_deg": rb.va_degree.to_numpy(),
                          "u_kv": rb.vm_pu.to_numpy() * net.bus.vn_kv.to_numpy(), "energized": en},
                         index=pd.Index(net.bus.index, name="bus"))
    frames = []
    if len(net.line):
        r = net.res_line
        frames.append(pd.DataFrame({
            "element_type": "line", "element_id": net.line.index.to_numpy().astype(np.int64),
            "p_from_mw": r.p_from_mw.to_numpy(), "q_from_mvar": r.q_from_mvar.to_numpy(),
            "i_from_a": r.i_from_ka.to_numpy() * 1e3, "p_to_mw": r.p_to_mw.to_numpy(),
            "q_to_mvar": r.q_to_mvar.to_numpy(), "i_to_a": r.i_to_ka.to_numpy() * 1e3, "pl_mw": r.pl_mw.to_numpy(),
            "ql_mvar": r.ql_mvar.to_numpy(), "loading_percent": r.loading_percent.fillna(0.0).to_numpy(),
            "energized": (r.i_from_ka.fillna(0) + r.i_to_ka.fillna(0) > 0).to_numpy() | net.line.in_service.to_numpy()}))
    if len(net.trafo):
        r = net.res_trafo
        frames.append(pd.DataFrame({
            "element_type": "trafo", "element_id": net.trafo.index.to_numpy().astype(np.int64),
            "p_from_mw": r.p_hv_mw.to_numpy(), "q_from_mvar": r.q_hv_mvar.to_numpy(),
            "i_from_a": r.i_hv_ka.to_numpy() * 1e3, "p_to_mw": r.p_lv_mw.to_numpy(),
            "q_to_mvar": r.q_lv_mvar.to_numpy(), "i_to_a": r.i_lv_ka.to_numpy() * 1e3, "pl_mw": r.pl_mw.to_numpy(),
            "ql_mvar": r.ql_mvar.to_numpy(), "loading_percent": r.loading_percent.fillna(0.0).to_numpy(),
            "energized": net.trafo.in_service.to_numpy()}))
    branches = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    apps = []
    for table, res, sign in (("load", "res_load", 1), ("storage", "res_storage", 1), ("sgen", "res_sgen", 1),
                             ("gen", "res_gen", 1), ("ext_grid", "res_ext_grid", 1)):
        if table in net and len(net[table]) and res in net:
            r = net[res]
            apps.append(pd.DataFrame({"element_type": table, "element_id": net[table].index.to_numpy().astype(np.int64),
                                      "p_mw": sign * r.p_mw.to_numpy(), "q_mvar": sign * r.q_mvar.to_numpy(),
                                      "energized": r.p_mw.notna().to_numpy()}))
    apps = pd.concat(apps, ignore_index=True) if apps else pd.DataFrame()
    losses = float(np.nansum(branches.pl_mw)) if len(branches) else 0.0
    return PowerFlowResult("pandapower", True, buses, branches, apps, losses, dead, time.perf_counter() - t0, msg,
                           None, None, switch_closed)


# ---------------------------------------------------------------------------------- batches
def batch_update(scenarios: Sequence[Sequence[tuple]]) -> dict:
    """Inhomogeneous PGM batch update from per-scenario changes.

    ``scenarios[k]`` is a list of ``(component, pgm_id, {attribute: value})``. Returns
    ``{component: {"indptr": ..., "data": ...}}`` covering every component touched.
    """
    comps = sorted({c for sc in scenarios for c, _, _ in sc}, key=lambda c: c.value)
    out = {}
    n = len(scenarios)
    for comp in comps:
        counts = np.zeros(n + 1, dtype=np.int64)
        items = []
        for k, sc in enumerate(scenarios):
            mine = [(i, attrs) for c, i, attrs in sc if c == comp]
            # one update row per id and scenario
            merged: dict[int, dict] = {}
            for i, attrs in mine:
                merged.setdefault(int(i), {}).update(attrs)
            counts[k + 1] = len(merged)
            items.extend(merged.items())
        data = initialize_array("update", comp, len(items))
        for j, (i, attrs) in enumerate(items):
            data["id"][j] = i
            for a, v in attrs.items():
                data[a][j] = v
        out[comp] = {"indptr": np.cumsum(counts), "data": data}
    return out


def candidate_injections(model: PgmModel, data: dict, seeds_nodes: Iterable[int], max_candidates: int) -> list[int]:
    """Appliance PGM ids nearest (by hops over connected branches) to the seed nodes."""
    adj: dict[int, list[int]] = {}
    for comp in (ComponentType.line, ComponentType.transformer, ComponentType.link):
        arr = data.get(comp)
        if arr is None or not len(arr):
            continue
        on = (arr["from_status"] == 1) & (arr["to_status"] == 1)
        for a, b in zip(arr["from_node"][on], arr["to_node"][on]):
            adj.setdefault(int(a), []).append(int(b))
            adj.setdefault(int(b), []).append(int(a))
    at_node: dict[int, list[int]] = {}
    for comp in (ComponentType.sym_load, ComponentType.sym_gen):
        arr = data.get(comp)
        if arr is None or not len(arr):
            continue
        on = arr["status"] == 1
        for i, nd in zip(arr["id"][on], arr["node"][on]):
            if model.id_table[int(i)] in ("load", "sgen", "storage", "gen"):
                at_node.setdefault(int(nd), []).append(int(i))
    seen = set(seeds_nodes)
    q = deque(seen)
    out: list[int] = []
    while q and len(out) < max_candidates:
        nd = q.popleft()
        out.extend(at_node.get(nd, []))
        for nb in adj.get(nd, []):
            if nb not in seen:
                seen.add(nb)
                q.append(nb)
    return out[:max_candidates]


def injection_sensitivities(
    model: PgmModel,
    data: dict,
    appliance_ids: Sequence[int],
    *,
    base_update: Sequence[tuple] = (),
    delta_mw: float = 0.01,
    branch_ids: Sequence[tuple[str, int]] | None = None,
    bus_ids: Sequence[int] | None = None,
    threading: int = -1,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Finite-difference sensitivities of branch loading (%/MW) and bus voltage (pu/MW) to the active
    power of each appliance (pandapower sign: load/storage consumption, sgen/gen generation), by
    one PGM batch: scenario 0 = base (+ ``base_update``), scenario k = base + ``delta_mw`` on
    appliance k. Returns (branch sensitivities: rows = (element_type, element_id), columns =
    appliance ids; bus sensitivities: rows = bus, columns = appliance ids)."""
    scen = [list(base_update)]
    for aid in appliance_ids:
        comp = model.component_of(model.id_table[int(aid)])
        arr = data[comp]
        row = int(np.searchsorted(arr["id"], aid))
        scen.append(list(base_update) + [(comp, int(aid), {"p_specified": float(arr["p_specified"][row]) + delta_mw * 1e6})])
    upd = batch_update(scen)
    pgm = PowerGridModel(data)
    out = pgm.calculate_power_flow(update_data=upd, calculation_method=CalculationMethod.newton_raphson,
                                   threading=threading, continue_on_batch_error=True,
                                   output_component_types={ComponentType.node: ["id", "u_pu"],
                                                           ComponentType.line: ["id", "i_from", "i_to"],
                                                           ComponentType.transformer: ["id", "i_from", "i_to"]})
    failed = set(pgm.batch_error.failed_scenarios.tolist()) if pgm.batch_error is not None else set()
    loading = batch_loading(model, data, out)
    cols = list(appliance_ids)
    with np.errstate(invalid="ignore"):
        dl = (loading[1:] - loading[0]) / delta_mw
    u = out[ComponentType.node]["u_pu"]
    du = (u[1:] - u[0]) / delta_mw
    for k in failed:
        if k == 0:
            dl[:] = np.nan
            du[:] = np.nan
        else:
            dl[k - 1] = np.nan
            du[k - 1] = np.nan
    br_index = branch_index(model, data)
    bs = pd.DataFrame(dl.T, index=br_index, columns=cols)
    node_ids = data[ComponentType.node]["id"]
    bus_idx = pd.Index(model.id_index[node_ids], name="bus")
    vs = pd.DataFrame(du.T, index=bus_idx, columns=cols)
    if branch_ids is not None:
        bs = bs.reindex(pd.MultiIndex.from_tuples(list(branch_ids), names=["element_type", "element_id"]))
    if bus_ids is not None:
        vs = vs.reindex(list(bus_ids))
    return bs, vs


def branch_index(model: PgmModel, data: dict) -> pd.MultiIndex:
    tup = []
    for table, comp in (("line", ComponentType.line), ("trafo", ComponentType.transformer)):
        arr = data.get(comp)
        if arr is None:
            continue
        tup.extend((table, int(i)) for i in model.id_index[arr["id"]])
    return pd.MultiIndex.from_tuples(tup, names=["element_type", "element_id"])


def batch_loading(model: PgmModel, data: dict, out: dict) -> np.ndarray:
    """Loading in percent (pandapower definition) per scenario x branch (lines then trafos)."""
    parts = []
    line = data.get(ComponentType.line)
    if line is not None and len(line):
        o = out[ComponentType.line]
        i_n = line["i_n"]
        with np.errstate(divide="ignore", invalid="ignore"):
            parts.append(np.maximum(o["i_from"], o["i_to"]) / i_n * 100.0)
    tr = data.get(ComponentType.transformer)
    if tr is not None and len(tr):
        o = out[ComponentType.transformer]
        r = model.trafo_rating.reindex(model.id_index[tr["id"]])
        sn = r.sn_mva.to_numpy() * 1e6
        lhv = o["i_from"] * r.vn_hv_kv.to_numpy() * 1e3 * SQRT3 / sn
        llv = o["i_to"] * r.vn_lv_kv.to_numpy() * 1e3 * SQRT3 / sn
        parts.append(np.maximum(lhv, llv) * 100.0 / r.parallel.to_numpy() / r["df"].to_numpy())
    if not parts:
        return np.zeros((len(next(iter(out.values()))), 0))
    return np.concatenate(parts, axis=1)


def bottlenecks(
    result: PowerFlowResult,
    net,
    loading_threshold: float = 80.0,
    v_min: float = 0.95,
    v_max: float = 1.05,
    *,
    top_n: int = 3,
    max_candidates: int = 200,
    delta_mw: float = 0.01,
) -> pd.DataFrame:
    """Branches above ``loading_threshold`` % and buses outside [v_min, v_max], ranked by relative
    margin (negative: limit already violated). ``contributors`` lists the ``top_n`` injections with
    the largest contribution (sensitivity x current p_mw), each a dict with element_type,
    element_id, sensitivity (%/MW or pu/MW) and contribution (% or pu)."""
    rows = []
    br = result.branches
    if len(br):
        sel = br[br.loading_percent > loading_threshold]
        for r in sel.itertuples(index=False):
            rows.append({"element_type": r.element_type, "element_id": int(r.element_id), "quantity": "loading_percent",
                         "value": float(r.loading_percent), "limit": 100.0, "margin": 100.0 - float(r.loading_percent),
                         "margin_rel": (100.0 - float(r.loading_percent)) / 100.0})
    b = result.buses[result.buses.energized]
    for bus, u in b.u_pu.items():
        if u < v_min:
            rows.append({"element_type": "bus", "element_id": int(bus), "quantity": "u_min", "value": float(u),
                         "limit": v_min, "margin": float(u - v_min), "margin_rel": float((u - v_min) / v_min)})
        elif u > v_max:
            rows.append({"element_type": "bus", "element_id": int(bus), "quantity": "u_max", "value": float(u),
                         "limit": v_max, "margin": float(v_max - u), "margin_rel": float((v_max - u) / v_max)})
    cols = ["rank", "element_type", "element_id", "quantity", "value", "limit", "margin", "margin_rel", "contributors"]
    if not rows:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(rows).sort_values("margin_rel", kind="stable").reset_index(drop=True)
    df["rank"] = np.arange(1, len(df) + 1)
    df["contributors"] = [[] for _ in range(len(df))]
    if result.engine == "pgm" and result.model is not None and result.data is not None:
        _pgm_contributors(df, result, top_n, max_candidates, delta_mw)
    elif result.converged:
        _pandapower_contributors(df, net, top_n, min(max_candidates, 30), delta_mw)
    return df[cols]


def _seed_nodes(model: PgmModel, data: dict, etype: str, eid: int) -> list[int]:
    if etype == "bus":
        return [int(model.ids["bus"][eid])]
    comp = ComponentType.line if etype == "line" else ComponentType.transformer
    arr = data[comp]
    row = int(np.searchsorted(arr["id"], model.ids[etype][eid]))
    return [int(arr["from_node"][row]), int(arr["to_node"][row])]


def _pgm_contributors(df, result, top_n, max_candidates, delta_mw) -> None:
    model, data = result.model, result.data
    cand: list[int] = []
    per_row = []
    for r in df.itertuples(index=False):
        c = candidate_injections(model, data, _seed_nodes(model, data, r.element_type, r.element_id),
                                  max(10, max_candidates // max(len(df), 1)))
        per_row.append(c)
        cand.extend(c)
    cand = list(dict.fromkeys(cand))[:max_candidates]
    if not cand:
        return
    bs, vs = injection_sensitivities(model, data, cand, delta_mw=delta_mw)
    p_now = _p_now(model, data, cand)
    for k, r in enumerate(df.itertuples(index=False)):
        if r.element_type == "bus":
            sens = vs.loc[r.element_id] if r.element_id in vs.index else None
        else:
            key = (r.element_type, int(r.element_id))
            sens = bs.loc[key] if key in bs.index else None
        if sens is None:
            continue
        df.at[k, "contributors"] = _top(model, sens, p_now, top_n)


def _p_now(model, data, ids) -> pd.Series:
    out = {}
    for aid in ids:
        comp = model.component_of(model.id_table[int(aid)])
        arr = data[comp]
        row = int(np.searchsorted(arr["id"], aid))
        out[aid] = float(arr["p_specified"][row]) / 1e6
    return pd.Series(out)


def _top(model, sens: pd.Series, p_now: pd.Series, top_n: int) -> list[dict]:
    contrib = (sens * p_now.reindex(sens.index)).dropna()
    order = contrib.abs().sort_values(ascending=False).index[:top_n]
    out = []
    for aid in order:
        table, idx = model.pp_of([aid])
        out.append({"element_type": str(table[0]), "element_id": int(idx[0]), "sensitivity": float(sens[aid]),
                    "p_mw": float(p_now[aid]), "contribution": float(contrib[aid])})
    return out


def _pandapower_contributors(df, net, top_n, max_candidates, delta_mw) -> None:
    """Finite differences with pandapower for nets PGM cannot run (slow: capped candidates)."""
    import pandapower as pp

    cands = []
    for table in ("load", "sgen", "storage", "gen"):
        if table in net and len(net[table]):
            t = net[table][net[table].in_service.astype(bool)]
            cands.extend((table, int(i), float(abs(t.p_mw[i]))) for i in t.index)
    cands = sorted(cands, key=lambda c: -c[2])[:max_candidates]
    base_load = {(r.element_type, r.element_id): r.value for r in df.itertuples(index=False)}
    sens = {key: {} for key in base_load}

    def observe():
        vals = {}
        for (et, eid) in base_load:
            if et == "bus":
                vals[(et, eid)] = float(net.res_bus.vm_pu[eid])
            elif et == "line":
                vals[(et, eid)] = float(net.res_line.loading_percent[eid])
            else:
                vals[(et, eid)] = float(net.res_trafo.loading_percent[eid])
        return vals

    pp.runpp(net, calculate_voltage_angles=True, numba=False)
    base = observe()
    for table, i, _ in cands:
        old = net[table].at[i, "p_mw"]
        net[table].at[i, "p_mw"] = old + delta_mw
        try:
            pp.runpp(net, calculate_voltage_angles=True, numba=False)
            now = observe()
            for key in base_load:
                sens[key][(table, i)] = (now[key] - base[key]) / delta_mw
        except Exception:  # the perturbed case diverged: this injection gets no sensitivity entry
            continue
        finally:
            net[table].at[i, "p_mw"] = old
    pp.runpp(net, calculate_voltage_angles=True, numba=False)
    for k, r in enumerate(df.itertuples(index=False)):
        s = sens[(r.element_type, r.element_id)]
        items = []
        for (table, i), v in s.items():
            p = float(net[table].p_mw[i])
            items.append({"element_type": table, "element_id": i, "sensitivity": v, "p_mw": p, "contribution": v * p})
        df.at[k, "contributors"] = sorted(items, key=lambda d: -abs(d["contribution"]))[:top_n]
