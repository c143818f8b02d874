"""Topology views of a pandapower net: bus-branch graph, islands, feeders, critical elements, and the
events implied by a change of switch states.

Switch states are given as ``switch_closed``: a mapping/Series ``switch index -> closed`` (bool or 0/1)
that overrides ``net.switch.closed``; ``None`` means the net's own states. Raw telemetry (possibly
with duplicates, conflicts or junk values) goes through ``normalize_switch_states`` first, which
flags problems instead of failing.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = [
    "TopologyEvent",
    "bus_branch_graph",
    "bus_islands",
    "bus_load_mw",
    "connections",
    "critical_elements",
    "diff_topology",
    "events_frame",
    "feeders",
    "islands",
    "normalize_switch_states",
    "slack_buses",
    "tie_switches",
]


# ------------------------------------------------------------------------------------ basics
def _closed(net, switch_closed) -> pd.Series:
    from gridpipeline.grid.network import closed_series

    sw = net.switch if "switch" in net else pd.DataFrame(columns=["closed"])
    return closed_series(sw, switch_closed)


def slack_buses(net) -> np.ndarray:
    """Buses with an in-service ext_grid (or a gen marked slack)."""
    out = []
    if len(net.ext_grid):
        eg = net.ext_grid[net.ext_grid.in_service.astype(bool)]
        out.extend(eg.bus.astype(int).tolist())
    if "gen" in net and len(net.gen) and "slack" in net.gen.columns:
        g = net.gen[net.gen.in_service.astype(bool) & net.gen.slack.fillna(False).astype(bool)]
        out.extend(g.bus.astype(int).tolist())
    return np.unique(np.array(out, dtype=np.int64))


def bus_load_mw(net) -> pd.Series:
    """In-service load (MW, scaling applied) per bus."""
    ld = net.load
    if not len(ld):
        return pd.Series(0.0, index=net.bus.index)
    ld = ld[ld.in_service.astype(bool)]
    sc = ld["scaling"].fillna(1.0) if "scaling" in ld.columns else 1.0
    return (ld.p_mw * sc).groupby(ld.bus).sum().reindex(net.bus.index, fill_value=0.0)


def connections(net, switch_closed=None, *, include_open: bool = False) -> pd.DataFrame:
    """All bus-to-bus connections: columns u, v, element_type (line/trafo/switch), element_id, closed.

    A line/trafo is closed when it is in service, both buses are in service and every switch at its
    ends is closed; a bus-bus switch when it is closed. Open connections only with ``include_open``.
    """
    closed = _closed(net, switch_closed)
    bus_ok = net.bus.in_service.astype(bool)
    sw = net.switch if "switch" in net else pd.DataFrame(columns=["bus", "element", "et", "closed"])
    frames = []
    for table, a, b in (("line", "from_bus", "to_bus"), ("trafo", "hv_bus", "lv_bus")):
        df = net[table]
        if not len(df):
            continue
        ok = df.in_service.astype(bool).to_numpy() & bus_ok.reindex(df[a]).to_numpy() & \
            bus_ok.reindex(df[b]).to_numpy()
        et = "l" if table == "line" else "t"
        s = sw[sw.et == et] if len(sw) else sw
        if len(s):
            opened = s.index[~closed.reindex(s.index).fillna(True).to_numpy().astype(bool)]
            open_elems = set(s.loc[opened, "element"].astype(int))
            ok &= ~df.index.isin(list(open_elems))
        frames.append(pd.DataFrame({"u": df[a].astype(np.int64).to_numpy(), "v": df[b].astype(np.int64).to_numpy(),
                                    "element_type": table, "element_id": df.index.to_numpy().astype(np.int64),
                                    "closed": ok}))
    if len(sw):
        s = sw[sw.et == "b"]
        if len(s):
            c = closed.reindex(s.index).to_numpy().astype(bool) & bus_ok.reindex(s.bus).to_numpy() & \
                bus_ok.reindex(s.element.astype(int)).to_numpy()
            frames.append(pd.DataFrame({"u": s.bus.astype(np.int64).to_numpy(),
                                        "v": s.element.astype(np.int64).to_numpy(),
                                        "element_type": "switch", "element_id": s.index.to_numpy().astype(np.int64),
                                        "closed": c}))
    if not frames:
        return pd.DataFrame(columns=["u", "v", "element_type", "element_id", "closed"])
    out = pd.concat(frames, ignore_index=True)
    return out if include_open else out[out.closed].reset_index(drop=True)


def bus_components(buses: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    pos = pd.Series(np.arange(len(buses)), index=buses)
    n = len(buses)
    iu, iv = pos.reindex(u).to_numpy(), pos.reindex(v).to_numpy()
    keep = ~(np.isnan(iu) | np.isnan(iv)) if iu.dtype.kind == "f" else np.ones(len(iu), bool)
    iu, iv = iu[keep].astype(np.int64), iv[keep].astype(np.int64)
    g = coo_matrix((np.ones(len(iu)), (iu, iv)), shape=(n, n))
    _, labels = connected_components(g, directed=False)
    return labels


def _merge_map(net, conns: pd.DataFrame) -> pd.Series:
    """Bus -> representative bus (smallest index) over closed bus-bus switches."""
    buses = net.bus.index.to_numpy().astype(np.int64)
    sw = conns[conns.element_type == "switch"]
    labels = bus_components(buses, sw.u.to_numpy(), sw.v.to_numpy())
    rep = pd.Series(buses, index=buses).groupby(labels).transform("min")
    return pd.Series(rep.to_numpy(), index=buses)


def bus_branch_graph(net, switch_closed=None, *, merge_bus_switches: bool = True,
                     include_open: bool = False) -> nx.MultiGraph:
    """Undirected multigraph of the in-service buses and closed branches.

    With ``merge_bus_switches`` buses joined by closed bus-bus switches become one node (the smallest
    bus index; ``G.graph["bus_map"]`` maps every bus to its node, node attribute ``members`` lists the
    buses). Otherwise closed bus-bus switches are edges with ``element_type="switch"``. Edges carry
    ``element_type``, ``element_id`` and ``closed``; open branches appear only with ``include_open``.
    """
    conns = connections(net, switch_closed, include_open=include_open)
    in_service = net.bus.index[net.bus.in_service.astype(bool)].to_numpy().astype(np.int64)
    g = nx.MultiGraph()
    if merge_bus_switches:
        rep = _merge_map(net, conns[conns.closed])
        members = defaultdict(list)
        for b in in_service:
            members[int(rep[b])].append(int(b))
        for r, m in members.items():
            g.add_node(r, members=m, vn_kv=float(net.bus.vn_kv[r]))
        g.graph["bus_map"] = {int(b): int(rep[b]) for b in in_service}
        for row in conns.itertuples(index=False):
            if row.element_type == "switch" and row.closed:
                continue
            u, v = int(rep.get(row.u, row.u)), int(rep.get(row.v, row.v))
            if u == v and row.element_type == "switch":
                continue
            g.add_edge(u, v, key=f"{row.element_type}:{row.element_id}", element_type=row.element_type,
                       element_id=int(row.element_id), closed=bool(row.closed))
    else:
        for b in in_service:
            g.add_node(int(b), members=[int(b)], vn_kv=float(net.bus.vn_kv[b]))
        g.graph["bus_map"] = {int(b): int(b) for b in in_service}
        for row in conns.itertuples(index=False):
            g.add_edge(int(row.u), int(row.v), key=f"{row.element_type}:{row.element_id}",
                       element_type=row.element_type, element_id=int(row.element_id), closed=bool(row.closed))
    return g


# ---------------------------------------------------------------------------------- islands
def bus_islands(net, switch_closed=None) -> pd.Series:
    """Island label per bus (in-service buses; -1 for out-of-service buses)."""
    conns = connections(net, switch_closed)
    buses = net.bus.index.to_numpy().astype(np.int64)
    labels = bus_components(buses, conns.u.to_numpy(), conns.v.to_numpy())
    lab = pd.Series(labels, index=buses)
    lab[~net.bus.in_service.astype(bool).to_numpy()] = -1
    # renumber in-service islands 0..k-1 by their smallest bus
    valid = lab[lab >= 0]
    order = valid.groupby(valid).apply(lambda s: s.index.min()).sort_values()
    remap = {old: new for new, old in enumerate(order.index)}
    return lab.map(lambda x: remap.get(x, -1)).astype(np.int64)


def islands(net, switch_closed=None) -> pd.DataFrame:
    """One row per island: island, buses (list), n_buses, has_slack, slack_buses, load_mw, sgen_mw."""
    lab = bus_islands(net, switch_closed)
    slack = set(slack_buses(net).tolist())
    load = bus_load_mw(net)
    sg = net.sgen[net.sgen.in_service.astype(bool)] if len(net.sgen) else net.sgen
    sgen = (sg.p_mw * (sg["scaling"].fillna(1.0) if "scaling" in sg.columns else 1.0)).groupby(sg.bus).sum() \
        if len(sg) else pd.Series(dtype=float)
    rows = []
    for isl, buses in lab[lab >= 0].groupby(lab[lab >= 0]).groups.items():
        b = sorted(int(x) for x in buses)
        sl = sorted(set(b) & slack)
        rows.append({"island": int(isl), "buses": b, "n_buses": len(b), "has_slack": bool(sl),
                     "slack_buses": sl, "load_mw": float(load.reindex(b).sum()),
                     "sgen_mw": float(sgen.reindex(b).fillna(0.0).sum())})
    return pd.DataFrame(rows, columns=["island", "buses", "n_buses", "has_slack", "slack_buses", "load_mw",
                                       "sgen_mw"])


def energized_buses(net, switch_closed=None) -> pd.Series:
    """Bool per bus: connected to a slack through closed elements."""
    lab = bus_islands(net, switch_closed)
    sl = slack_buses(net)
    live = set(lab.reindex(sl).dropna().astype(int).tolist()) - {-1}
    return lab.isin(live) & (lab >= 0)


# ----------------------------------------------------------------------------------- feeders
def feeders(net, switch_closed=None) -> pd.DataFrame:
    """Radial trees from the substations: one row per bus reached.

    Roots are the LV sides of transformers and the ext_grid buses; from each root every line
    (following closed lines and bus-bus switches, never crossing a transformer) starts a feeder.
    Substation buses themselves get feeder = the root element's name and depth 0.
    Columns: bus, feeder (e.g. ``"trafo12/line40"``), root_bus, root_element, parent_bus,
    parent_element (line id), depth (lines from the root), meshed (the feeder holds a loop or
    touches another feeder).
    """
    conns = connections(net, switch_closed)
    rep = _merge_map(net, conns)
    lines = conns[conns.element_type == "line"]
    adj: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for row in lines.itertuples(index=False):
        u, v = int(rep[row.u]), int(rep[row.v])
        if u != v:
            adj[u].append((v, int(row.element_id)))
            adj[v].append((u, int(row.element_id)))
    roots: dict[int, str] = {}
    for i, r in net.trafo[net.trafo.in_service.astype(bool)].iterrows():
        roots.setdefault(int(rep[int(r.lv_bus)]), f"trafo{i}")
    for i, r in net.ext_grid[net.ext_grid.in_service.astype(bool)].iterrows():
        roots.setdefault(int(rep[int(r.bus)]), f"ext_grid{i}")
    owner: dict[int, tuple] = {}
    for root, name in roots.items():
        owner[root] = (None, root, name, None, None, 0)
    meshed_feeders: set[str] = set()
    # BFS from all roots at once: each first line out of a root opens a feeder
    queue = deque()
    for root, name in sorted(roots.items()):
        for nb, lid in sorted(adj.get(root, [])):
            if nb in roots:
                continue
            fid = f"{name}/line{lid}"
            if nb in owner:
                meshed_feeders.add(fid)
                meshed_feeders.add(owner[nb][0])
                continue
            owner[nb] = (fid, root, name, root, lid, 1)
            queue.append(nb)
    while queue:
        b = queue.popleft()
        fid, root, name, _, via, depth = owner[b]
        for nb, lid in adj.get(b, []):
            if lid == via or nb in roots:
                continue
            if nb in owner:
                meshed_feeders.add(fid)
                if owner[nb][0] is not None and owner[nb][0] != fid:
                    meshed_feeders.add(owner[nb][0])
                continue
            owner[nb] = (fid, root, name, b, lid, depth + 1)
            queue.append(nb)
    rows = []
    for bus in net.bus.index[net.bus.in_service.astype(bool)]:
        r = int(rep[bus])
        if r not in owner:
            continue
        fid, root, name, parent, via, depth = owner[r]
        if fid is None:  # a substation bus itself: its own row, depth 0
            fid = name
        rows.append({"bus": int(bus), "feeder": fid, "root_bus": int(root), "root_element": name,
                     "parent_bus": None if parent is None else int(parent),
                     "parent_element": None if via is None else int(via), "depth": int(depth),
                     "meshed": fid in meshed_feeders})
    out = pd.DataFrame(rows, columns=["bus", "feeder", "root_bus", "root_element", "parent_bus",
                                      "parent_element", "depth", "meshed"])
    return out.astype({"parent_bus": "Int64", "parent_element": "Int64"})


# ------------------------------------------------------------------------- critical elements
_VIRTUAL = -1  # the virtual node joining all slack buses


def critical_elements(net, switch_closed=None) -> pd.DataFrame:
    """Branches (bridges) and buses (articulation points) whose outage cuts buses off every slack.

    Columns: element_type (line/trafo/switch/bus), element_id, kind (bridge/articulation),
    buses_cut_off, load_mw_cut_off (MW of load losing supply, the bus's own load included for
    articulation points). Only elements of energised islands; sorted by load_mw_cut_off.
    """
    g = bus_branch_graph(net, switch_closed, merge_bus_switches=True)
    load = bus_load_mw(net)
    bus_map = g.graph["bus_map"]
    node_load = defaultdict(float)
    node_n = defaultdict(int)
    for b, r in bus_map.items():
        node_load[r] += float(load.get(b, 0.0))
        node_n[r] += 1
    simple = nx.Graph()
    simple.add_nodes_from(g.nodes)
    mult: dict[tuple, list] = defaultdict(list)
    for u, v, d in g.edges(data=True):
        if u == v:
            continue
        k = (min(u, v), max(u, v))
        mult[k].append((d["element_type"], d["element_id"]))
        simple.add_edge(*k)
    slack_nodes = {bus_map[int(b)] for b in slack_buses(net) if int(b) in bus_map}
    if not slack_nodes:
        return pd.DataFrame(columns=["element_type", "element_id", "kind", "buses_cut_off", "load_mw_cut_off"])
    simple.add_node(_VIRTUAL)
    for s in slack_nodes:
        simple.add_edge(_VIRTUAL, s)
    live = nx.node_connected_component(simple, _VIRTUAL)
    h = simple.subgraph(live).copy()
    rows = []
    # bridges: contract 2-edge-connected components, root the bridge tree at the virtual node
    bridges = [e for e in nx.bridges(h) if _VIRTUAL not in e and len(mult[(min(e), max(e))]) == 1]
    hb = h.copy()
    hb.remove_edges_from(bridges)
    comp_of = {}
    for ci, comp in enumerate(nx.connected_components(hb)):
        for n in comp:
            comp_of[n] = ci
    comp_n = defaultdict(int)
    comp_load = defaultdict(float)
    for n, ci in comp_of.items():
        if n != _VIRTUAL:
            comp_n[ci] += node_n[n]
            comp_load[ci] += node_load[n]
    tree = nx.Graph()
    tree.add_nodes_from(set(comp_of.values()))
    for u, v in bridges:
        tree.add_edge(comp_of[u], comp_of[v], bridge=(u, v))
    root = comp_of[_VIRTUAL]
    sub_n, sub_load = _subtree_sums(tree, root, comp_n, comp_load)
    parent = dict(nx.bfs_predecessors(tree, root))
    for u, v in bridges:
        cu, cv = comp_of[u], comp_of[v]
        child = cv if parent.get(cv) == cu else cu
        et, eid = mult[(min(u, v), max(u, v))][0]
        rows.append({"element_type": et, "element_id": int(eid), "kind": "bridge",
                     "buses_cut_off": int(sub_n[child]), "load_mw_cut_off": float(sub_load[child])})
    # articulation points via the block-cut tree
    arts = set(nx.articulation_points(h)) - {_VIRTUAL}
    if arts:
        bc = nx.Graph()
        blocks = list(nx.biconnected_components(h))
        own_n, own_load = {}, {}
        for i, blk in enumerate(blocks):
            bn = ("B", i)
            bc.add_node(bn)
            own = [n for n in blk if n not in arts and n != _VIRTUAL]
            own_n[bn] = sum(node_n[n] for n in own)
            own_load[bn] = sum(node_load[n] for n in own)
            for a in blk & arts:
                bc.add_edge(bn, ("A", a))
        for a in arts:
            own_n[("A", a)] = node_n[a]
            own_load[("A", a)] = node_load[a]
        root_blk = next(("B", i) for i, blk in enumerate(blocks) if _VIRTUAL in blk)
        s_n, s_load = _subtree_sums(bc, root_blk, own_n, own_load)
        for a in arts:
            members = [b for b, r in bus_map.items() if r == a]
            rows.append({"element_type": "bus", "element_id": int(a), "kind": "articulation",
                         "buses_cut_off": int(s_n[("A", a)] - node_n[a]) + max(len(members) - 1, 0),
                         "load_mw_cut_off": float(s_load[("A", a)])})
    out = pd.DataFrame(rows, columns=["element_type", "element_id", "kind", "buses_cut_off", "load_mw_cut_off"])
    return out.sort_values(["load_mw_cut_off", "buses_cut_off"], ascending=False, kind="stable").reset_index(drop=True)


def _subtree_sums(tree: nx.Graph, root, w_n: Mapping, w_load: Mapping):
    order = list(nx.dfs_preorder_nodes(tree, root))
    parent = dict(nx.bfs_predecessors(tree, root))
    s_n = {n: w_n.get(n, 0) for n in order}
    s_l = {n: w_load.get(n, 0.0) for n in order}
    for n in reversed(order):
        p = parent.get(n)
        if p is not None:
            s_n[p] += s_n[n]
            s_l[p] += s_l[n]
    return s_n, s_l


def tie_switches(net) -> pd.DataFrame:
    """Normally-open switches (open in the net's own state): switch, bus, element, et."""
    if "switch" not in net or not len(net.switch):
        return pd.DataFrame(columns=["switch", "bus", "element", "et"])
    s = net.switch[~net.switch.closed.astype(bool)]
    return pd.DataFrame({"switch": s.index.astype(int), "bus": s.bus.astype(int).to_numpy(),
                         "element": s.element.astype(int).to_numpy(), "et": s.et.astype(str).to_numpy()})


# ----------------------------------------------------------------------------- switch events
@dataclass
class TopologyEvent:
    """One topology finding. ``kind`` is one of: switch_opened, switch_closed, switch_status_conflict,
    switch_status_invalid, switch_unknown, island_split, islands_merged, supply_lost, supply_restored."""

    kind: str
    element_type: str | None = None
    element_id: int | None = None
    buses: list[int] = field(default_factory=list)
    load_mw: float = 0.0
    detail: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


_TRUE = {"1", "true", "closed", "close", "on", "1.0"}
_FALSE = {"0", "false", "open", "opened", "off", "0.0"}


def _parse_status(v) -> int | None:
    if isinstance(v, (bool, np.bool_)):
        return int(bool(v))
    if isinstance(v, (int, np.integer)):
        return int(v) if v in (0, 1) else None
    if isinstance(v, (float, np.floating)):
        if np.isfinite(v) and float(v) in (0.0, 1.0):
            return int(v)
        return None
    if isinstance(v, str):
        s = v.strip().lower()
        if s in _TRUE:
            return 1
        if s in _FALSE:
            return 0
    return None


def _as_pairs(states) -> list[tuple[Any, Any]]:
    if states is None:
        return []
    if isinstance(states, pd.DataFrame):
        key = next((c for c in ("switch", "switch_id", "element_id", "element") if c in states.columns), None)
        val = next((c for c in ("closed", "value", "status", "state") if c in states.columns), None)
        if key is None or val is None:
            raise ValueError("switch state frame needs a switch column (switch/element_id) and a value column "
                             "(closed/value/status)")
        return list(zip(states[key].tolist(), states[val].tolist()))
    if isinstance(states, pd.Series):
        return list(zip(states.index.tolist(), states.tolist()))
    if isinstance(states, Mapping):
        return list(states.items())
    return list(states)


def normalize_switch_states(states, net, baseline: pd.Series | None = None
                            ) -> tuple[pd.Series, list[TopologyEvent]]:
    """Turn raw switch readings into a clean ``closed`` Series plus flagged problems.

    ``states``: Mapping/Series (duplicates allowed), a DataFrame with switch + value columns, or
    (switch, value) pairs. Values may be bool, 0/1 or 'open'/'closed'. A switch reported with
    different values in the same snapshot gives ``switch_status_conflict``, a value that is not a
    status ``switch_status_invalid``, an id not in the net ``switch_unknown``; such switches keep
    their ``baseline`` state (default: the net's).
    """
    base = (baseline.copy() if baseline is not None else net.switch.closed.astype(bool).copy()).astype(bool)
    issues: list[TopologyEvent] = []
    seen: dict[Any, set] = defaultdict(set)
    bad: dict[Any, list] = defaultdict(list)
    for k, v in _as_pairs(states):
        try:
            key = int(k)
        except (TypeError, ValueError):
            issues.append(TopologyEvent("switch_unknown", "switch", None, detail=f"switch id {k!r} is not an integer"))
            continue
        s = _parse_status(v)
        if s is None:
            bad[key].append(v)
        else:
            seen[key].add(s)
    out = base.copy()
    for key in sorted(set(seen) | set(bad)):
        if key not in out.index:
            issues.append(TopologyEvent("switch_unknown", "switch", key, detail="switch not in the network"))
            continue
        if key in bad:
            issues.append(TopologyEvent("switch_status_invalid", "switch", key,
                                        buses=[int(net.switch.bus[key])],
                                        detail=f"status {bad[key]!r} is not 0/1; kept {int(out[key])}"))
            if not seen.get(key):
                continue
        vals = seen.get(key, set())
        if len(vals) > 1:
            issues.append(TopologyEvent("switch_status_conflict", "switch", key, buses=[int(net.switch.bus[key])],
                                        detail=f"reported both open and closed; kept {int(out[key])}"))
            continue
        if vals and key not in bad:
            out[key] = bool(next(iter(vals)))
    return out, issues


def diff_topology(prev_switch_state, new_switch_state, net) -> list[TopologyEvent]:
    """Events between two switch snapshots: switches changed, islands split/merged, buses losing or
    regaining supply (with the load MW concerned). Bad readings are flagged, never raised; a
    switch with a bad reading in the new snapshot keeps its previous state."""
    prev, ev_prev = normalize_switch_states(prev_switch_state, net)
    new, ev_new = normalize_switch_states(new_switch_state, net, baseline=prev)
    events: list[TopologyEvent] = []
    for e in ev_prev:
        e.detail = "previous snapshot: " + e.detail
    events.extend(ev_prev)
    events.extend(ev_new)
    changed = new.index[new.to_numpy() != prev.reindex(new.index).to_numpy()]
    for s in changed:
        r = net.switch.loc[s]
        events.append(TopologyEvent("switch_closed" if new[s] else "switch_opened", "switch", int(s),
                                    buses=[int(r.bus)] + ([int(r.element)] if r.et == "b" else []),
                                    detail=f"et={r.et} element={int(r.element)}"))
    if not len(changed):
        return events
    lab_p = bus_islands(net, prev)
    lab_n = bus_islands(net, new)
    load = bus_load_mw(net)
    sl = slack_buses(net)
    live_p = set(lab_p.reindex(sl).tolist()) - {-1}
    live_n = set(lab_n.reindex(sl).tolist()) - {-1}
    both = pd.DataFrame({"p": lab_p, "n": lab_n})
    both = both[(both.p >= 0) & (both.n >= 0)]
    for p, grp in both.groupby("p"):
        parts = grp.n.unique()
        if len(parts) > 1:
            for n in sorted(parts):
                b = sorted(int(x) for x in grp.index[grp.n == n])
                events.append(TopologyEvent("island_split", None, None, buses=b, load_mw=float(load.reindex(b).sum()),
                                            detail=f"previous island {p} split into {len(parts)}; this part "
                                                   f"{'has' if n in live_n else 'has no'} slack"))
    for n, grp in both.groupby("n"):
        parts = grp.p.unique()
        if len(parts) > 1:
            b = sorted(int(x) for x in grp.index)
            events.append(TopologyEvent("islands_merged", None, None, buses=b, load_mw=float(load.reindex(b).sum()),
                                        detail=f"{len(parts)} previous islands joined"))
    en_p = lab_p.isin(live_p) & (lab_p >= 0)
    en_n = lab_n.isin(live_n) & (lab_n >= 0)
    lost = en_p & ~en_n
    if lost.any():
        for n, grp in lab_n[lost].groupby(lab_n[lost]):
            b = sorted(int(x) for x in grp.index)
            events.append(TopologyEvent("supply_lost", None, None, buses=b, load_mw=float(load.reindex(b).sum()),
                                        detail=f"{len(b)} buses without a slack"))
    gained = en_n & ~en_p
    if gained.any():
        for n, grp in lab_n[gained].groupby(lab_n[gained]):
            b = sorted(int(x) for x in grp.index)
            events.append(TopologyEvent("supply_restored", None, None, buses=b, load_mw=float(load.reindex(b).sum()),
                                        detail=f"{len(b)} buses supplied again"))
    return events


def events_frame(events: Iterable[TopologyEvent]) -> pd.DataFrame:
    """Events as a DataFrame (one row each)."""
    return pd.DataFrame([e.as_dict() for e in events],
                        columns=["kind", "element_type", "element_id", "buses", "load_mw", "detail"])
