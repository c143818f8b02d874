"""``gridpipeline bench contingency``: full N-1 with restoration through tie switches.

- Scale grid (SimBench ``1-MVLV-urban-all-0-sw``, 10,458 buses): every line, transformer and static
  generator out in turn (11,258 contingencies) with ``run_n1_decomposed``: HV/MV outages on the whole
  grid, each LV area's outages as a batch on the area fed at its base-case MV voltage, then the 200
  most severe and every violating area result re-run on the whole grid. ``seconds`` is that run. Its
  accuracy is measured in the same run: ``check_cases`` randomly chosen LV contingencies that kept
  their area result are re-run on the whole grid (``run_n1`` with the same outage) and the largest
  differences in max loading, minimum voltage and load lost are reported.
- Sample grid (227 buses): the whole-grid ``run_n1`` (``sample_seconds``).
- ``--reference-scale``: also the whole-grid ``run_n1`` on the scale grid (about 3 minutes here).
"""

from __future__ import annotations

import platform
import time

import numpy as np
import psutil

from gridpipeline.settings import PROJECT_ROOT


def run(reference_scale: bool = False, check_cases: int = 200, seed: int = 0, **_) -> dict:
    from gridpipeline.grid.contingency import lv_areas, run_n1, run_n1_decomposed
    from gridpipeline.world.model import load_world

    world = load_world("scale", cache_dir=PROJECT_ROOT / "var" / "worlds" / "scale")
    net = world.net
    t0 = time.perf_counter()
    dec = run_n1_decomposed(net, restore_via_ties=True)
    seconds = time.perf_counter() - t0

    # accuracy of the decomposition: LV contingencies re-run on the whole grid
    lab = lv_areas(net)
    lv_rows = dec[(dec.method == "area") & dec.elements.map(
        lambda e: e[0][0] == "line" and lab.get(int(net.line.from_bus[e[0][1]]), -1) >= 0)]
    rng = np.random.default_rng(seed)
    pick = lv_rows.iloc[rng.choice(len(lv_rows), size=min(check_cases, len(lv_rows)), replace=False)]
    t1 = time.perf_counter()
    full = run_n1(net, contingencies=list(pick.elements), restore_via_ties=True)
    check_seconds = time.perf_counter() - t1
    m = pick.merge(full, on="contingency", suffixes=("_dec", "_full"))
    conv = m.converged_dec & m.converged_full

    def dev(col):
        d = np.abs(m[f"{col}_dec"].to_numpy(dtype=float)[conv] - m[f"{col}_full"].to_numpy(dtype=float)[conv])
        return float(np.nanmax(d)) if len(d) else None

    sample = load_world("sample")
    t2 = time.perf_counter()
    srun = run_n1(sample.net, restore_via_ties=True)
    sample_seconds = time.perf_counter() - t2
    out = {
        "benchmark": "contingency",
        "grid": "1-MVLV-urban-all-0-sw",
        "buses": int(len(net.bus)),
        "contingencies": int(len(dec)),
        "seconds": round(seconds, 2),
        "lv_areas": int(dec.attrs.get("lv_areas", 0)),
        "whole_grid_scenarios": int(dec.attrs.get("global_scenarios", 0)),
        "not_converged": int((~dec.converged).sum()),
        "losing_load": int((dec.load_lost_mw > 0).sum()),
        "restored_via_ties": int((dec.get("load_restored_mw", 0) > 0).sum()),
        "check_cases": int(conv.sum()),
        "check_seconds": round(check_seconds, 2),
        "verified_whole_grid": int(dec.attrs.get("verified_whole_grid", 0)),
        "check_max_loading_diff_pct": dev("max_loading_percent"),
        "check_max_loading_underestimate_pct": float(np.nanmax(
            (m.max_loading_percent_full - m.max_loading_percent_dec).to_numpy(dtype=float)[conv])) if conv.any() else None,
        "check_min_u_diff_pu": dev("min_u_pu"),
        "check_load_lost_diff_mw": dev("load_lost_mw"),
        "check_same_worst_element": float((m.max_loading_element_dec[conv] == m.max_loading_element_full[conv]).mean())
        if conv.any() else None,
        "sample_contingencies": int(len(srun)),
        "sample_seconds": round(sample_seconds, 3),
        "machine": f"{platform.machine()} {psutil.cpu_count()} cpu {round(psutil.virtual_memory().total / 2**30)} GiB",
    }
    if reference_scale:
        t3 = time.perf_counter()
        ref = run_n1(net, restore_via_ties=True)
        out["reference_full_seconds"] = round(time.perf_counter() - t3, 1)
        out["reference_full_contingencies"] = int(len(ref))
    return out
