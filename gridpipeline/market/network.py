"""The network model as the price model sees it: a radial feeder in per unit, and loss factors.

:func:`radial_feeder` reads a pandapower network (the utility's network model): buses joined by closed
bus-bus switches are one bus; lines and transformers in service, behind closed switches, are branches;
parallel branches between the same buses are one equivalent (impedances in parallel, ratings summed).
A breadth-first walk from the external grid orders the buses, each after its parent. A branch that
would close a loop (a meshed grid) is left open in the radial model and named in the notes: LinDistFlow
is for radial feeders, and the sample grid's one loop is its two parallel HV/MV transformers.

:func:`loss_factors` gives each bus's loss sensitivity around a state: a MW more net load at bus j
adds ``sum over the branches l to j of 2 r_l P_l / V_l^2`` (per unit) to the losses, from the DistFlow
loss term ``r (P^2 + Q^2) / V^2``.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import pandas as pd

from gridpipeline.market.dlmp import RadialFeeder


def _union_find(n_items: list, pairs: list[tuple]) -> dict:
    parent = {b: b for b in n_items}

    def find(b):
        while parent[b] != b:
            parent[b] = parent[parent[b]]
            b = parent[b]
        return b

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {b: find(b) for b in n_items}


def radial_feeder(net, base_mva: float = 10.0, v_min: float = 0.95, v_max: float = 1.05
                  ) -> tuple[RadialFeeder, pd.Series, list[str]]:
    """(feeder, the feeder bus index of every network bus (NaN: not supplied), notes)."""
    import pandapower.topology as top

    g = top.create_nxgraph(net, respect_switches=True, multi=True, include_out_of_service=False)
    buses = list(net.bus.index[net.bus.in_service])
    fused = [(u, v) for u, v, k in g.edges(keys=True) if k[0] == "switch"]
    rep = _union_find(buses, fused)
    branches: dict[tuple, list] = {}  # (a, b) merged buses -> [(r_pu, x_pu, s_mva, name)]
    for u, v, k in g.edges(keys=True):
        kind, i = k[0], k[1]
        a, b = rep[u], rep[v]
        if kind == "switch" or a == b:
            continue
        if kind == "line":
            ln = net.line.loc[i]
            zb = float(net.bus.vn_kv[ln.from_bus]) ** 2 / base_mva
            par = float(ln.get("parallel", 1) or 1)
            r = float(ln.r_ohm_per_km * ln.length_km) / par / zb
            x = float(ln.x_ohm_per_km * ln.length_km) / par / zb
            s = np.sqrt(3) * float(net.bus.vn_kv[ln.from_bus]) * float(ln.max_i_ka) * par
            s *= float(ln.get("max_loading_percent", 100.0) if pd.notna(ln.get("max_loading_percent", np.nan)) else 100.0) / 100
            name = str(ln.get("name", f"line {i}"))
        elif kind == "trafo":
            tr = net.trafo.loc[i]
            par = float(tr.get("parallel", 1) or 1)
            zk, rk = float(tr.vk_percent) / 100, float(tr.vkr_percent) / 100
            r = rk * base_mva / float(tr.sn_mva) / par
            x = np.sqrt(max(zk ** 2 - rk ** 2, 0.0)) * base_mva / float(tr.sn_mva) / par
            s = float(tr.sn_mva) * par
            s *= float(tr.get("max_loading_percent", 100.0) if pd.notna(tr.get("max_loading_percent", np.nan)) else 100.0) / 100
            name = str(tr.get("name", f"trafo {i}"))
        else:
            continue
        branches.setdefault((min(a, b), max(a, b)), []).append((r, x, s, name))
    # parallel branches: one equivalent
    eq = {}
    for key, items in branches.items():
        if len(items) == 1:
            eq[key] = items[0]
            continue
        z = np.array([complex(r, x) for r, x, _, _ in items])
        zeq = 1.0 / np.sum(1.0 / np.where(np.abs(z) > 1e-12, z, 1e-12))
        eq[key] = (zeq.real, zeq.imag, sum(s for _, _, s, _ in items), " || ".join(n for *_, n in items))
    adj: dict = {}
    for (a, b), br in eq.items():
        adj.setdefault(a, []).append((b, br))
        adj.setdefault(b, []).append((a, br))
    root = rep[int(net.ext_grid.bus.iloc[0])]
    order, parent, r_, x_, s_, names = [root], [-1], [0.0], [0.0], [np.inf], ["substation"]
    pos = {root: 0}
    notes: list[str] = []
    seen_edges = set()
    q = deque([root])
    while q:
        a = q.popleft()
        for b, br in sorted(adj.get(a, []), key=lambda e: e[0]):
            key = (min(a, b), max(a, b))
            if key in seen_edges:
                continue
            seen_edges.add(key)
            if b in pos:
                notes.append(f"branch {br[3]} closes a loop: left open in the radial price model")
                continue
            pos[b] = len(order)
            order.append(b)
            parent.append(pos[a])
            r_.append(br[0])
            x_.append(br[1])
            s_.append(br[2])
            names.append(br[3])
            q.append(b)
    bus_map = pd.Series({b: pos.get(rep[b], np.nan) for b in buses}, dtype=float)
    if bus_map.isna().any():
        notes.append(f"{int(bus_map.isna().sum())} buses not supplied (behind open switches): no price")
    f = RadialFeeder(bus_ids=np.array(order), parent=np.array(parent), r=np.array(r_), x=np.array(x_),
                     s_max=np.array(s_), base_mva=base_mva,
                     v0=float(net.ext_grid.vm_pu.iloc[0]) if "vm_pu" in net.ext_grid else 1.0,
                     v_min=v_min, v_max=v_max, line_names=tuple(names))
    return f, bus_map, notes


def bus_injections(net, bus_map: pd.Series, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(p, q) (n,) MW and MVAr net load per feeder bus from the network's loads, generators and storage
    as they stand (loads and charging storage draw, generators inject)."""
    p, q = np.zeros(n), np.zeros(n)
    for table, sign in (("load", 1.0), ("sgen", -1.0), ("storage", 1.0)):
        t = getattr(net, table)
        if not len(t):
            continue
        t = t[t.in_service]
        k = bus_map.reindex(t.bus).to_numpy()
        ok = np.isfinite(k)
        sc = t["scaling"].fillna(1.0).to_numpy() if "scaling" in t else 1.0
        np.add.at(p, k[ok].astype(int), sign * (t.p_mw.to_numpy() * sc)[ok])
        if "q_mvar" in t:
            np.add.at(q, k[ok].astype(int), sign * (t.q_mvar.fillna(0.0).to_numpy() * sc)[ok])
    return p, q


def loss_factors(feeder: RadialFeeder, p_mw: np.ndarray, q_mvar: np.ndarray, v_pu: np.ndarray | None = None) -> np.ndarray:
    """(N,) d(losses)/d(net load at j) around the state: net loads ``p_mw``/``q_mvar`` (N,) and voltages
    ``v_pu`` (N,; 1 where unknown). The flow into each bus is its subtree's net load (plus the losses
    below it, neglected: second order)."""
    L = feeder.subtree()
    P = (L @ np.asarray(p_mw, float)) / feeder.base_mva
    v = np.ones(feeder.n) if v_pu is None else np.asarray(v_pu, float)
    per_branch = 2.0 * feeder.r * P / np.maximum(v, 0.5) ** 2  # branch into bus l
    per_branch[0] = 0.0
    return L.T @ per_branch  # a MW at j flows through every branch on its path
