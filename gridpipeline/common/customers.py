"""The customer registry: the class and customers behind every load of a network.

A utility knows this from its customer information system; a world writes it beside its network
(``customers.csv``) the way it writes the network model, and the pipeline reads it from there.

Class, from the load's SimBench profile:
* ``H0-*`` households, and ``lv_*`` (an aggregated LV network, mostly households) -> residential;
* ``G*`` trade and commerce, ``L*`` agriculture -> commercial, or industrial when the load is
  connected at medium voltage (a customer with its own MV connection is a large industrial site);
* ``BL-*`` (constant band load) and ``mv_*`` industrial MV profiles -> industrial;
* critical loads are designated among them (``designate_critical``): per substation area the MV
  trade load with the continuous-operation profile ``G3`` (or else the largest MV trade load)
  is the **hospital**, every MV band load ``BL`` the **water** works, and in each LV grid the first
  ``G4`` load (shops and services, here a telecom site) **telecom** and the first ``G1`` load (office
  hours, here a fire and rescue station) **emergency**. They keep their profile; only the class changes.

Customers, from the annual energy: an aggregated load stands for many customers, so the count is its
annual energy over a typical annual consumption per class (``TYPICAL_MWH``: a German household
3.5 MWh, a small business 30 MWh, an industrial site 1,000 MWh; BDEW figures, rounded), at least 1.
A critical load is one customer (one hospital, one pumping station).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CLASSES = ("residential", "commercial", "industrial", "critical")
TYPICAL_MWH = {"residential": 3.5, "commercial": 30.0, "industrial": 1000.0}
COLUMNS = ["load_id", "customer_id", "class", "critical_kind", "customers", "annual_mwh", "profile"]


def class_of_profile(profile, mv: bool = False) -> str:
    """The class of a load with SimBench ``profile``, connected at MV (>= 1 kV) or not."""
    p = str(profile or "")
    if p.startswith(("H0", "lv_")):
        return "residential"
    if p.startswith(("BL", "mv_")) or mv:
        return "industrial"
    return "commercial"  # G*, L*, and loads without a profile (SimBench's business default)


def designate_critical(net) -> pd.Series:
    """Load id -> critical kind (hospital, water, telecom, emergency) for the designated loads."""
    ld = net.load
    prof = ld["profile"].astype(str) if "profile" in ld else pd.Series("", index=ld.index)
    vn = net.bus.vn_kv.reindex(ld.bus).to_numpy()
    mv = pd.Series(vn >= 1.0, index=ld.index)
    subnet = ld["subnet"].astype(str) if "subnet" in ld else pd.Series("", index=ld.index)
    out = {}
    # one hospital per MV area (the part of the subnet name before its feeder tag)
    area = subnet.str.replace(r"_?Feeder\d+.*$", "", regex=True)
    for _, g in ld[mv].groupby(area[mv]):
        g3 = g[prof[g.index].str.startswith("G3")]
        trade = g[prof[g.index].str.startswith(("G", "L"))]
        pick = g3 if len(g3) else trade
        if len(pick):
            out[int(pick.p_mw.idxmax())] = "hospital"
    for i in ld.index[mv & prof.str.startswith("BL")]:
        out.setdefault(int(i), "water")
    for _, g in ld[~mv].groupby(subnet[~mv]):
        for prefix, kind in (("G4", "telecom"), ("G1", "emergency")):
            hit = [i for i in sorted(g.index) if prof[i].startswith(prefix) and int(i) not in out]
            if hit:
                out[int(hit[0])] = kind
    return pd.Series(out, dtype=object).sort_index()


def customer_registry(net, annual_mwh: pd.Series) -> pd.DataFrame:
    """One row per load (``COLUMNS``); ``annual_mwh``: load id -> annual energy (MWh)."""
    ld = net.load
    prof = ld["profile"].astype(str) if "profile" in ld else pd.Series("", index=ld.index)
    mv = net.bus.vn_kv.reindex(ld.bus).to_numpy() >= 1.0
    cls = pd.Series([class_of_profile(p, m) for p, m in zip(prof, mv)], index=ld.index, dtype=object)
    crit = designate_critical(net)
    cls[crit.index] = "critical"
    e = annual_mwh.reindex(ld.index).fillna(0.0).astype(float)
    typical = cls.map(TYPICAL_MWH)
    n = np.where(cls == "critical", 1, np.maximum(1, np.round(e / typical.fillna(1.0)))).astype(np.int64)
    return pd.DataFrame({"load_id": ld.index.astype(np.int64), "customer_id": [f"C{int(i):06d}" for i in ld.index],
                         "class": cls.to_numpy(), "critical_kind": crit.reindex(ld.index).fillna("").to_numpy(),
                         "customers": n, "annual_mwh": e.round(3).to_numpy(), "profile": prof.to_numpy()},
                        columns=COLUMNS)
