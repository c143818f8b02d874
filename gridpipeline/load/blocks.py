"""Switchable blocks: the feeder sections a control room can disconnect, derived from the switches.

Shedding never acts on single loads: it opens a remote-controllable switch, a circuit breaker
(``CB``) or a load-break switch (``LBS``). Line switches (``LS``, disconnectors) are worked by a
crew on site, so they do not bound a block. A **block** is the area between controllable switches:
the buses still connected to each other when every element a controllable switch sits on is taken
out (an open switch of any type cuts too).

The blocks form a tree over the closed controllable switches, rooted at the block of the slack
(the source: the upstream grid, never switchable). Each other block hangs from its **parent** by
its **feeding switch**: opening it de-energises the block and every block below it, which is why
a schedule sheds a block only with its whole subtree (``descendants``), and why a block of a low
tier above a critical one can only be shed with it (the network reason the shed schedule records).
Controllable switches that are open now are **ties**: a restoration may close them to back-feed.

Pure functions of the network model; no store, no Dagster.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gridpipeline.grid.topology import bus_components, connections, slack_buses

#: switch types a control room can open and close remotely
CONTROLLABLE = ("CB", "LBS")
SOURCE = 0


@dataclass(frozen=True)
class Blocks:
    """``table``: one row per block (index block_id; 0 is the source): parent, feeding_switch,
    feeder (the block below the source it belongs to), depth, buses, loads, switchable.
    ``bus_block``: bus -> block_id. ``ties``: open controllable switches with the two blocks they join."""

    table: pd.DataFrame
    bus_block: pd.Series
    ties: pd.DataFrame

    def descendants(self, block: int) -> list[int]:
        """``block`` and every block fed through it (what opening its feeding switch disconnects)."""
        children = self.table.groupby("parent").groups
        out, queue = [], deque([block])
        while queue:
            b = queue.popleft()
            out.append(int(b))
            queue.extend(int(c) for c in children.get(b, []))
        return out

    def load_block(self, net) -> pd.Series:
        """Load id -> block_id."""
        return pd.Series(self.bus_block.reindex(net.load.bus).to_numpy(), index=net.load.index, name="block_id")


def _controlled_elements(net) -> pd.DataFrame:
    """Every controllable switch with the bus-to-bus connection it breaks: switch_id, type, closed,
    element_type (line/trafo/switch), element_id, u, v (the connection's two buses)."""
    sw = net.switch
    ctl = sw[sw.type.astype(str).isin(CONTROLLABLE)]
    rows = []
    for sid, s in ctl.iterrows():
        if s.et == "l":
            ln = net.line.loc[int(s.element)]
            rows.append((sid, s.type, bool(s.closed), "line", int(s.element), int(ln.from_bus), int(ln.to_bus)))
        elif s.et == "t":
            tr = net.trafo.loc[int(s.element)]
            rows.append((sid, s.type, bool(s.closed), "trafo", int(s.element), int(tr.hv_bus), int(tr.lv_bus)))
        elif s.et == "b":
            rows.append((sid, s.type, bool(s.closed), "switch", int(sid), int(s.bus), int(s.element)))
    return pd.DataFrame(rows, columns=["switch_id", "type", "closed", "element_type", "element_id", "u", "v"])


def switchable_blocks(net) -> Blocks:
    """The blocks of ``net`` (see the module docstring)."""
    ctl = _controlled_elements(net)
    conns = connections(net)  # closed connections only: open switches of any type cut
    cut = set(zip(ctl.element_type, ctl.element_id))
    inner = conns[[(t, int(i)) not in cut for t, i in zip(conns.element_type, conns.element_id)]]
    buses = net.bus.index.to_numpy().astype(np.int64)
    labels = bus_components(buses, inner.u.to_numpy(), inner.v.to_numpy())
    comp = pd.Series(labels, index=buses)
    source_comps = set(comp.reindex(slack_buses(net)).dropna().astype(int))
    # block ids: the source 0, then the others in order of their smallest bus
    order = comp.groupby(comp).apply(lambda s: int(s.index.min())).sort_values()
    ids, nxt = {}, 1
    for c in order.index:
        if c in source_comps:
            ids[c] = SOURCE
        else:
            ids[c], nxt = nxt, nxt + 1
    bus_block = comp.map(ids).astype(np.int64).rename("block_id")

    # the tree over closed controllable switches, from the source outwards (breadth first, so each
    # block hangs from the switch on its shortest switch path to the source)
    edges: dict[int, list[tuple[int, int]]] = {}
    closed = ctl[ctl.closed]
    # an element with switches at both ends counts once, by its lowest switch id
    closed = closed.sort_values("switch_id").drop_duplicates(["element_type", "element_id"])
    for r in closed.itertuples(index=False):
        a, b = int(bus_block[r.u]), int(bus_block[r.v])
        if a != b:
            edges.setdefault(a, []).append((b, int(r.switch_id)))
            edges.setdefault(b, []).append((a, int(r.switch_id)))
    parent: dict[int, tuple[int | None, int | None, int]] = {SOURCE: (None, None, 0)}
    queue = deque([SOURCE])
    while queue:
        b = queue.popleft()
        for nb, sid in sorted(edges.get(b, [])):
            if nb not in parent:
                parent[nb] = (b, sid, parent[b][2] + 1)
                queue.append(nb)
    n_blocks = int(bus_block.max()) + 1
    load_bus = net.load[net.load.in_service.astype(bool)].bus
    loads_per = bus_block.reindex(load_bus).value_counts()
    rows = []
    for blk in range(n_blocks):
        par, sid, depth = parent.get(blk, (None, None, -1))  # -1: not energised now
        rows.append({"block_id": blk, "parent": par, "feeding_switch": sid, "depth": depth,
                     "buses": int((bus_block == blk).sum()), "loads": int(loads_per.get(blk, 0)),
                     "switchable": sid is not None})
    table = pd.DataFrame(rows).set_index("block_id")
    table["parent"] = table.parent.astype("Int64")
    table["feeding_switch"] = table.feeding_switch.astype("Int64")
    # feeder: the highest ancestor fed through a line switch (the feeder head's breaker or first
    # load-break switch out of the substation busbar); the substation's own blocks have none
    on_line = set(closed[closed.element_type == "line"].switch_id.astype(int))
    feeder = {}
    for blk in table.index:
        b, head = blk, None
        while b in parent and parent[b][0] is not None:
            if parent[b][1] in on_line:
                head = b
            b = parent[b][0]
        feeder[blk] = head
    table["feeder"] = pd.Series(feeder, dtype="object").astype("Int64")
    opened = ctl[~ctl.closed]
    ties = pd.DataFrame({"switch_id": opened.switch_id.to_numpy(), "type": opened.type.to_numpy(),
                         "block_a": bus_block.reindex(opened.u).to_numpy(),
                         "block_b": bus_block.reindex(opened.v).to_numpy()})
    return Blocks(table=table, bus_block=bus_block, ties=ties)
