"""Tests of the grid library; shared helpers for simulated measurements."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

SQ3 = np.sqrt(3.0)
SAMPLE_JSON = Path(__file__).resolve().parents[2] / "data" / "sample_grid" / "network.json"


def runpp(net, **kw):
    import pandapower as pp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net, calculate_voltage_angles=True, numba=False, **kw)


@functools.cache
def _cigre():
    import pandapower.networks as pn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pn.create_cigre_network_mv(with_der="pv_wind")


def cigre():
    """A fresh copy of CIGRE MV with PV and wind."""
    import copy

    return copy.deepcopy(_cigre())


@functools.cache
def _sample():
    from gridpipeline.grid.network import load_network

    return load_network(SAMPLE_JSON)


def sample_net():
    """A fresh copy of the sample grid (SimBench 1-MVLV-semiurb-5.220-0-sw + 4 batteries)."""
    import copy

    return copy.deepcopy(_sample())


def true_measurements(net, sigma_v_rel: float = 0.005, sigma_pq_rel: float = 0.01, trafos: bool = True) -> pd.DataFrame:
    """Full measurement set (V at all buses, P/Q of loads/sgens/storage, both ends of every line and
    transformer) with the true values of the last pandapower power flow and registry-style sigmas."""
    rows = []
    for b in net.bus.index:
        kv = float(net.bus.vn_kv[b])
        rows.append(("bus", b, None, "v_mag", float(net.res_bus.vm_pu[b]) * kv, sigma_v_rel * kv))
    for table in ("load", "sgen", "storage"):
        df = net[table]
        if not len(df):
            continue
        res = net[f"res_{table}"]
        for i in df.index:
            sn = float(df.sn_mva[i]) if "sn_mva" in df.columns and np.isfinite(df.sn_mva[i]) and df.sn_mva[i] > 0 \
                else 2 * max(abs(df.p_mw[i]), abs(df.q_mvar[i]), 0.001)
            rows.append((table, i, None, "p_inj", float(res.p_mw[i]), sigma_pq_rel * sn))
            rows.append((table, i, None, "q_inj", float(res.q_mvar[i]), sigma_pq_rel * sn))
    for i in net.line.index:
        for end in ("from", "to"):
            bus = net.line.from_bus[i] if end == "from" else net.line.to_bus[i]
            s = SQ3 * float(net.bus.vn_kv[bus]) * float(net.line.max_i_ka[i])
            rows.append(("line", i, end, "p_branch", float(net.res_line[f"p_{end}_mw"][i]), sigma_pq_rel * s))
            rows.append(("line", i, end, "q_branch", float(net.res_line[f"q_{end}_mvar"][i]), sigma_pq_rel * s))
    if trafos:
        for i in net.trafo.index:
            s = float(net.trafo.sn_mva[i])
            for end in ("hv", "lv"):
                rows.append(("trafo", i, end, "p_branch", float(net.res_trafo[f"p_{end}_mw"][i]), sigma_pq_rel * s))
                rows.append(("trafo", i, end, "q_branch", float(net.res_trafo[f"q_{end}_mvar"][i]), sigma_pq_rel * s))
    df = pd.DataFrame(rows, columns=["element_type", "element_id", "terminal", "kind", "true", "sigma"])
    df["value"] = df["true"]
    return df


def noisy(meas: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    out = meas.copy()
    out["value"] = out["true"] + rng.standard_normal(len(out)) * out["sigma"]
    return out
