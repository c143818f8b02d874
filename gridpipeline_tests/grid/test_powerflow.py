from __future__ import annotations

import numpy as np
import pytest

from gridpipeline.grid.network import load_network
from gridpipeline.grid.powerflow import bottlenecks, run_powerflow
from gridpipeline_tests.grid import cigre, runpp, sample_net


def _compare_with_pandapower(net, tol=1e-6):
    res = run_powerflow(net, engine="auto")
    assert res.engine == "pgm" and res.converged
    runpp(net, trafo_model="pi", tolerance_mva=1e-10)
    rb = net.res_bus
    ok = rb.vm_pu.notna().to_numpy()
    assert np.abs(res.buses.u_pu.to_numpy()[ok] - rb.vm_pu.to_numpy()[ok]).max() < tol
    assert np.abs(np.deg2rad(res.buses.u_angle_deg.to_numpy()[ok] - rb.va_degree.to_numpy()[ok])).max() < tol
    lines = res.branches[res.branches.element_type == "line"].set_index("element_id")
    assert np.allclose(lines.loading_percent.reindex(net.line.index), net.res_line.loading_percent.fillna(0), atol=1e-4)
    assert np.allclose(lines.p_from_mw.reindex(net.line.index), net.res_line.p_from_mw.fillna(0), atol=1e-6)
    trafos = res.branches[res.branches.element_type == "trafo"].set_index("element_id")
    assert np.allclose(trafos.loading_percent.reindex(net.trafo.index), net.res_trafo.loading_percent, atol=1e-4)
    assert res.losses_mw == pytest.approx(net.res_line.pl_mw.sum() + net.res_trafo.pl_mw.sum(), abs=1e-6)
    return res


def test_pgm_matches_pandapower_cigre_mv():
    _compare_with_pandapower(cigre())


def test_pgm_matches_pandapower_simbench_mv():
    net = load_network("1-MV-semiurb--0-sw")
    _compare_with_pandapower(net)


def test_pgm_matches_pandapower_sample_grid_with_storage():
    _compare_with_pandapower(sample_net())


@pytest.mark.parametrize("case", ["case9", "case14", "case30", "case39"])
def test_transmission_cases_routed_to_pandapower(case):
    net = load_network(case)
    res = run_powerflow(net)
    assert res.engine == "pandapower" and res.converged
    # the solution satisfies the AC power-flow equations to 1e-6 pu: bus injections from Ybus and V
    # equal the specified injections at PQ buses, and PV voltages equal their set points
    ppci = net._ppc["internal"]
    V = ppci["V"]
    S = V * np.conj(ppci["Ybus"] @ V)
    from pandapower.pypower.idx_bus import BUS_TYPE, PD, PQ, PV, QD

    bus = ppci["bus"]
    base = ppci["baseMVA"]
    gen_p = np.zeros(len(bus))
    gen_q = np.zeros(len(bus))
    from pandapower.pypower.idx_gen import GEN_BUS, PG, QG, VG

    g = ppci["gen"]
    np.add.at(gen_p, g[:, GEN_BUS].real.astype(int), g[:, PG].real)
    np.add.at(gen_q, g[:, GEN_BUS].real.astype(int), g[:, QG].real)
    spec = (gen_p - bus[:, PD].real + 1j * (gen_q - bus[:, QD].real)) / base
    pq = bus[:, BUS_TYPE].real == PQ
    pv = bus[:, BUS_TYPE].real == PV
    assert np.abs(S[pq] - spec[pq]).max() < 1e-6
    assert np.abs(S[pv].real - spec[pv].real).max() < 1e-6
    vg = np.zeros(len(bus))
    vg[g[:, GEN_BUS].real.astype(int)] = g[:, VG].real
    assert np.abs(np.abs(V[pv]) - vg[pv]).max() < 1e-6
    assert np.allclose(res.buses.u_pu.to_numpy(), net.res_bus.vm_pu.to_numpy())


def test_non_convergence_is_flagged_not_raised():
    net = cigre()
    net.load["p_mw"] *= 40
    res = run_powerflow(net)
    assert res.converged is False and res.engine == "pgm" and res.message
    assert res.buses.u_pu.isna().all()


def test_island_without_slack_is_reported():
    net = cigre()
    # cut bus 12-14 feeder from the rest: lines 12-13 and 13-14 remain, feeder head line 0-12 is a trafo
    net.trafo.loc[1, "in_service"] = False
    res = run_powerflow(net)
    assert res.converged
    assert len(res.islands_without_slack) == 1
    dead = res.islands_without_slack.buses.iloc[0]
    assert {12, 13, 14} <= set(dead)
    assert res.islands_without_slack.load_mw.iloc[0] > 0
    assert not res.buses.loc[dead, "energized"].any()


def test_bottlenecks_rank_and_contributors():
    net = cigre()
    net.load["p_mw"] *= 2.5
    net.load["q_mvar"] *= 2.5
    res = run_powerflow(net)
    b = bottlenecks(res, net, loading_threshold=80, v_min=0.95)
    assert len(b) and (np.diff(b.margin_rel.to_numpy()) >= 0).all()
    top = b.iloc[0]
    assert top.margin_rel < 0 and len(top.contributors) == 3
    # the largest contributor's sensitivity agrees with a direct re-run (finite difference)
    c = top.contributors[0]
    net2 = cigre()
    net2.load["p_mw"] *= 2.5
    net2.load["q_mvar"] *= 2.5
    net2[c["element_type"]].loc[c["element_id"], "p_mw"] += 0.05
    res2 = run_powerflow(net2)
    if top.element_type == "bus":
        now = res2.buses.u_pu[top.element_id]
    else:
        br = res2.branches.set_index(["element_type", "element_id"])
        now = br.loading_percent[(top.element_type, top.element_id)]
    assert (now - top.value) / 0.05 == pytest.approx(c["sensitivity"], rel=0.05)
