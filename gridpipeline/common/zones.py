"""Zones of a network: the operating areas a grid falls into by its topology and voltage levels.

Both sides need them: the simulated world places its sensors by zone, and the pipeline reports
availability, demand and forecasts per zone of the network model it was given. The function reads
only the pandapower network, so the same file gives the same zones on either side of the wall.
"""

from __future__ import annotations

import re

import pandas as pd


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
