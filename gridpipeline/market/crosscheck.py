"""The DLMPs checked against pandapower's AC optimal power flow (``res_bus.lam_p``) on the same network.

Both sides price one period of the network as it stands: every load, generator and storage fixed, the
external grid at ``price`` EUR/MWh, the voltage band [0.9, 1.1] pu, every line and transformer at its
rating. The LinDistFlow side takes its loss factors from an AC power flow of that state (what the
state estimate gives live). With ``congest_line``, that line's rating is set to ``share`` of its loading
in the power flow and a controllable generator of ``flex_mw`` at ``flex_cost`` is put at its
downstream end, so the line binds and the prices behind it separate.

With ``export_mw`` as well, the line is congested the other way: a PV plant of ``export_mw`` is put at
its downstream end instead, so the line carries export, and its rating is set to ``share`` of that
loading. The plant can be curtailed at ``curtail_cost`` EUR/MWh (the value of the energy lost): downward
flexibility on the LinDistFlow side, a controllable generator whose every MW earns ``curtail_cost`` on
the AC side. The prices behind the line fall to about ``-curtail_cost``.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd

from gridpipeline.market.dlmp import solve_dlmp
from gridpipeline.market.network import bus_injections, loss_factors, radial_feeder


def acopf_crosscheck(net, price: float = 50.0, congest_line: int | None = None, share: float = 0.8,
                     flex_mw: float = 3.0, flex_cost: float = 80.0, export_mw: float | None = None,
                    curtail_cost: float = 30.0) -> dict:
    """{'max_abs_error', 'mean_abs_error' (EUR/MWh), 'prices' (frame per bus: acopf, dlmp), 'binding'
    (the DLMP side's binding constraints), 'separated' (buses more than 10 from ``price`` on each side),
    'flex_mw' / 'curtailed_mw' (each side's dispatch of the flexibility)}."""
    import pandapower as pp

    net = copy.deepcopy(net)
    pp.runpp(net, calculate_voltage_angles=False, init="flat")
    flex_bus = None
    if congest_line is not None:
        f0, bm0, _ = radial_feeder(net)
        ln = net.line.loc[congest_line]
        a, b = int(bm0[ln.from_bus]), int(bm0[ln.to_bus])
        flex_bus = int(ln.to_bus if f0.parent[b] == a else ln.from_bus)
        if export_mw is not None:
            pv = pp.create_sgen(net, flex_bus, p_mw=export_mw, q_mvar=0.0, name="export pv")
            pp.runpp(net, calculate_voltage_angles=False, init="flat")
            side = "p_to_mw" if flex_bus == int(ln.to_bus) else "p_from_mw"
            if float(net.res_line.at[congest_line, side]) <= 0:  # power into the line at the downstream end
                raise ValueError(f"line {congest_line} does not export with {export_mw} MW behind it")
        net.line["max_loading_percent"] = 100.0
        net.line.loc[congest_line, "max_loading_percent"] = share * float(net.res_line.loading_percent[congest_line])
    f, bm, _ = radial_feeder(net, v_min=0.9, v_max=1.1)
    p, q = bus_injections(net, bm, f.n)
    vm = np.ones(f.n)
    for bus, k in bm.dropna().items():
        vm[int(k)] = net.res_bus.vm_pu[bus]
    lf = loss_factors(f, p, q, vm)
    flex, cost, down, dcost = np.zeros(f.n), np.zeros(f.n), np.zeros(f.n), np.zeros(f.n)
    if flex_bus is not None and export_mw is None:
        flex[int(bm[flex_bus])], cost[int(bm[flex_bus])] = flex_mw, flex_cost
    elif flex_bus is not None:
        down[int(bm[flex_bus])], dcost[int(bm[flex_bus])] = export_mw, curtail_cost
    r = solve_dlmp(f, [p], [price], load_mvar=[q], loss_factor=lf, flex_mw=[flex], flex_cost=cost, down_mw=[down],
                   down_cost=dcost)
    # the AC side
    for t in ("load", "sgen", "storage"):
        getattr(net, t)["controllable"] = False
    if flex_bus is not None and export_mw is not None:
        net.sgen.loc[pv, ["controllable", "max_p_mw", "min_p_mw", "max_q_mvar", "min_q_mvar"]] = \
            [True, export_mw, 0.0, 0.0, 0.0]
        pp.create_poly_cost(net, pv, "sgen", cp1_eur_per_mw=-curtail_cost)
    elif flex_bus is not None:
        g = pp.create_sgen(net, flex_bus, p_mw=0.0, q_mvar=0.0, max_p_mw=flex_mw, min_p_mw=0.0, max_q_mvar=0.0,
                           min_q_mvar=0.0, controllable=True, name="flex")
        pp.create_poly_cost(net, g, "sgen", cp1_eur_per_mw=flex_cost)
    pp.create_poly_cost(net, int(net.ext_grid.index[0]), "ext_grid", cp1_eur_per_mw=price)
    net.bus["min_vm_pu"], net.bus["max_vm_pu"] = 0.9, 1.1
    if congest_line is None:
        net.line["max_loading_percent"] = 100.0
    net.trafo["max_loading_percent"] = 100.0
    net.ext_grid["controllable"] = True
    for c, v in (("max_p_mw", 1e3), ("min_p_mw", -1e3), ("max_q_mvar", 1e3), ("min_q_mvar", -1e3)):
        net.ext_grid[c] = v
    pp.runopp(net, verbose=False, init="flat", calculate_voltage_angles=False)
    lam = net.res_bus.lam_p[net.bus.in_service]
    ours = np.array([r.price[0, int(bm[b])] for b in lam.index])
    frame = pd.DataFrame({"acopf": lam.to_numpy(), "dlmp": ours}, index=lam.index)
    err = (frame.dlmp - frame.acopf).abs()
    return {"max_abs_error": float(err.max()), "mean_abs_error": float(err.mean()), "prices": frame,
            "binding": r.binding, "separated": (int(((frame.acopf - price).abs() > 10).sum()),
                                          int(((frame.dlmp - price).abs() > 10).sum())),
            "flex_mw": (float(r.flex_mw.sum()), float(net.res_sgen.p_mw[net.sgen.name == "flex"].sum())),
            "curtailed_mw": (float(r.down_mw.sum()),
                             float(export_mw - net.res_sgen.p_mw[net.sgen.name == "export pv"].sum()) if export_mw else 0.0)}
