"""``gridpipeline bench prices``: DLMPs for one day (288 five-minute steps) on the sample grid and on
the scale grid, and the gap to pandapower's AC OPF on the sample grid.

The day (the same recipe on both grids, documented so the figure can be reproduced):

* loads: each load's rating times a daily shape (0.55 at 04:00 to 1.0 at 18:00), scaled so that the
  most loaded branch reaches 110 % of its rating (in MVA) at the evening peak: a stressed day, so that some
  steps bind and go to the LP (the rest are settled in closed form, see ``market.dlmp``);
* generators: each rating times a clear-sky bell (0 at night, 1 at 13:00);
* flexibility: every load bus offers 20 % of its load as demand response at 150 EUR/MWh (upward), and
  every generator its output as curtailment at 30 EUR/MWh, the dispatch's value of curtailed energy
  (downward);
* prices: the real German day-ahead prices of 17 January 2018 (``data/prices``), each hour's price
  on its twelve steps;
* loss factors around the evening peak, with the voltages of an AC power flow of the network as it
  stands (live, the state estimate gives them: untimed here).

Timed: the loss factors and ``solve_dlmp`` for the 288 steps (``seconds``, ``scale_seconds``), and one
step alone on the scale grid (the evening peak, ``scale_step_seconds``). Untimed: loading the network
models, building the radial feeders and the power flow for the voltages (``model_seconds``). ``max_abs_error_vs_acopf``: one period of
the sample grid with LV line 26 congested (``market.crosscheck``), EUR/MWh; ``max_abs_error_vs_acopf_export``:
the same line congested by the export of a 1 MW PV plant behind it, curtailable at 30 EUR/MWh.
"""

from __future__ import annotations

import copy
import os
import platform
import time

import numpy as np
import pandas as pd

from gridpipeline.settings import PROJECT_ROOT

STEPS = 288
DAY = pd.Timestamp("2018-01-17", tz="Europe/Berlin")


def _shapes() -> tuple[np.ndarray, np.ndarray]:
    h = np.arange(STEPS) * 5 / 60
    load = 0.55 + 0.45 * np.clip(np.exp(-((h - 18.0) / 4.0) ** 2) + 0.5 * np.exp(-((h - 8.0) / 2.5) ** 2), 0, 1)
    sun = np.clip(np.cos((h - 13.0) / 12.0 * np.pi * 1.6), 0.0, None) * ((h > 7.5) & (h < 18.5))
    return load, sun


def _prices() -> np.ndarray:
    from gridpipeline.world.price_exchange import load_reference

    s = load_reference()  # the real 2018 German day-ahead prices (data/prices), hourly on UTC
    start = DAY.tz_convert("UTC")
    hours = s[(s.index >= start) & (s.index < start + pd.Timedelta(hours=24))].to_numpy(float)
    return np.repeat(hours, 12)[:STEPS]


def _day(net, feeder, bus_map) -> dict:
    """The day's inputs on one network (see the module docstring)."""
    from gridpipeline.market.network import bus_injections

    n = feeder.n
    shape, sun = _shapes()
    load_net = copy.deepcopy(net)
    load_net.sgen["in_service"] = False
    if len(load_net.storage):
        load_net.storage["in_service"] = False
    p_load, q_load = bus_injections(load_net, bus_map, n)
    gen_net = copy.deepcopy(net)
    gen_net.load["in_service"] = False
    if len(gen_net.storage):
        gen_net.storage["in_service"] = False
    p_gen, q_gen = bus_injections(gen_net, bus_map, n)  # negative: injections
    peak = int(np.argmax(shape - 0.0 * sun))
    # scale the loads so the most loaded branch reaches 110 % at the evening peak
    L = feeder.subtree()
    smax = np.where(np.isfinite(feeder.s_max) & (np.arange(n) > 0), feeder.s_max, np.inf)
    flow = np.hypot(L @ (p_load * shape[peak] + p_gen * sun[peak]), L @ (q_load * shape[peak] + q_gen * sun[peak]))
    k = 1.1 / max(float(np.max(flow / smax)), 1e-9)
    p = np.outer(shape, p_load) * k + np.outer(sun, p_gen)
    q = np.outer(shape, q_load) * k + np.outer(sun, q_gen)
    flex = 0.2 * np.clip(np.outer(shape, p_load) * k, 0.0, None)
    down = np.clip(-np.outer(sun, p_gen), 0.0, None)
    return {"load_mw": p, "load_mvar": q, "flex_mw": flex, "flex_cost": np.full(n, 150.0), "down_mw": down,
            "down_cost": np.full(n, 30.0), "peak": peak, "k": k}


def _state_vm(net, feeder, bus_map) -> np.ndarray:
    """The voltages of the network as it stands (an AC power flow standing in for the state estimate)."""
    import pandapower as pp

    pp.runpp(net, calculate_voltage_angles=False, init="flat")
    vm = np.ones(feeder.n)
    for b, k in bus_map.dropna().items():
        vm[int(k)] = net.res_bus.vm_pu[b]
    return vm


def _one(net, price) -> dict:
    from gridpipeline.market.dlmp import solve_dlmp
    from gridpipeline.market.network import loss_factors, radial_feeder

    t0 = time.perf_counter()
    f, bm, notes = radial_feeder(net, v_min=0.9, v_max=1.1)
    d = _day(net, f, bm)
    vm = _state_vm(net, f, bm)
    model_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    lf = loss_factors(f, d["load_mw"][d["peak"]], d["load_mvar"][d["peak"]], vm)
    r = solve_dlmp(f, d["load_mw"], price, load_mvar=d["load_mvar"], flex_mw=d["flex_mw"], flex_cost=d["flex_cost"],
                   loss_factor=lf, down_mw=d["down_mw"], down_cost=d["down_cost"])
    seconds = time.perf_counter() - t1
    t2 = time.perf_counter()
    pk = d["peak"]
    solve_dlmp(f, d["load_mw"][pk:pk + 1], price[pk:pk + 1], load_mvar=d["load_mvar"][pk:pk + 1],
               flex_mw=d["flex_mw"][pk:pk + 1], flex_cost=d["flex_cost"], loss_factor=lf,
               down_mw=d["down_mw"][pk:pk + 1], down_cost=d["down_cost"])
    step_s = time.perf_counter() - t2
    lp_steps = len({b["step"] for b in r.binding})
    return {"buses": f.n, "seconds": seconds, "step_seconds": step_s, "model_seconds": model_s,
            "binding_steps": lp_steps, "price_max": float(r.price.max()), "price_min": float(r.price.min()),
            "notes": notes, "load_scale": d["k"]}


def run(**_) -> dict:
    import cvxpy  # noqa: F401 - the library's import is a process's start-up, not the pricing
    import pandapower as pp

    from gridpipeline.market.crosscheck import acopf_crosscheck
    from gridpipeline.world.model import load_world

    price = _prices()
    sample = pp.from_json(str(PROJECT_ROOT / "data" / "sample_grid" / "network.json"))
    a = _one(sample, price)
    xc = acopf_crosscheck(sample, price=50.0, congest_line=14, share=0.8)
    xe = acopf_crosscheck(sample, price=50.0, congest_line=14, share=0.8, export_mw=1.0, curtail_cost=30.0)
    scale_net = load_world("scale", cache_dir=PROJECT_ROOT / "var" / "worlds" / "scale").net
    b = _one(scale_net, price)
    return {"benchmark": "prices", "buses": a["buses"], "steps": STEPS, "seconds": round(a["seconds"], 3),
            "scale_buses": b["buses"], "scale_step_seconds": round(b["step_seconds"], 3),
            "scale_seconds": round(b["seconds"], 3), "max_abs_error_vs_acopf": round(xc["max_abs_error"], 4),
            "acopf_mean_abs_error": round(xc["mean_abs_error"], 4),
            "max_abs_error_vs_acopf_export": round(xe["max_abs_error"], 4),
            "binding_steps": a["binding_steps"], "scale_binding_steps": b["binding_steps"],
            "price_range": [round(a["price_min"], 2), round(a["price_max"], 2)],
            "scale_price_range": [round(b["price_min"], 2), round(b["price_max"], 2)],
            "model_seconds": round(a["model_seconds"], 2), "scale_model_seconds": round(b["model_seconds"], 2),
            "scale_notes": b["notes"][:3], "machine": f"{platform.machine()} {os.cpu_count()} cores, "
                                                      f"python {platform.python_version()}"}
