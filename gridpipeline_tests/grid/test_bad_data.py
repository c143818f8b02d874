from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from gridpipeline.grid import bad_data as bd
from gridpipeline.grid import residuals
from gridpipeline.grid.estimation import estimate_state
from gridpipeline.grid.network import to_pgm
from gridpipeline_tests.grid import cigre, noisy, runpp, sample_net, true_measurements

TRIALS = 40


@pytest.fixture(scope="module")
def setup():
    net = cigre()
    runpp(net)
    model = to_pgm(net)
    meas = true_measurements(net)
    # redundancy of every measurement (rho = Omega_ii / sigma_i^2), from one estimate
    res = estimate_state(model, noisy(meas, np.random.default_rng(100)))
    nr = bd.normalized_residuals(res)
    assert nr.rho[~nr.constraint].sum() == pytest.approx(res.dof + 0.0, abs=1e-3)
    return net, model, meas, nr


def test_false_alarm_rate_on_clean_data(setup):
    _, model, meas, _ = setup
    rng = np.random.default_rng(2024)
    alarms = 0
    for _ in range(TRIALS):
        r = bd.detect_bad_data(model, noisy(meas, rng))
        alarms += bool(r.removed)
    assert alarms / TRIALS <= 0.05


def test_gross_errors_detected_and_removed(setup):
    _, model, meas, nr = setup
    rng = np.random.default_rng(7)
    # "redundant": a measurement whose own redundancy rho_k (its share of its row's) is >= 0.1
    cands = []
    for row in nr[~nr.constraint & ~nr.pseudo].itertuples():
        for lab, share in zip(row.rows, row.shares):
            if row.rho * share >= 0.1:
                cands.append(lab)
    assert len(cands) > 60
    hits = 0
    for _ in range(TRIALS):
        m = noisy(meas, rng)
        lab = cands[rng.integers(len(cands))]
        m.loc[lab, "value"] += rng.choice([-1.0, 1.0]) * 20.0 * m.loc[lab, "sigma"]
        r = bd.detect_bad_data(model, m)
        hit = lab in r.removed
        hits += hit
        if hit:
            s = r.suspects.set_index("row")
            assert s.action[lab] == "removed" and abs(s.r_n[lab]) > 3
            assert r.estimate.converged
    assert hits / TRIALS >= 0.95


def test_suspects_table_and_chi2():
    t = bd.chi2_test(150.0, 100, alpha=0.01)
    assert t["alarm"] and 0 < t["p_value"] < 0.01 and t["threshold"] == pytest.approx(135.807, abs=1e-2)
    assert not bd.chi2_test(100.0, 100)["alarm"]


def test_selected_inverse_matches_dense():
    net = sample_net()
    runpp(net)
    model = to_pgm(net)
    res = estimate_state(model, noisy(true_measurements(net), np.random.default_rng(1)), normalized_residuals=False)
    wls, V = res.wls, res.state["V"]
    H = wls.jacobian(V)
    G = (H.T @ sp.diags(1.0 / wls.sigma ** 2) @ H).tocsc()
    s = sp.diags(1.0 / np.sqrt(G.diagonal()))
    Gs, Hs = (s @ G @ s).tocsc(), (H @ s).tocsr()
    d_dense = residuals._diag_dense(Gs, Hs)
    d_sel = residuals._diag_selected_inverse(Gs, Hs)
    d_blk = residuals._diag_blocked(Gs, Hs)
    rel = lambda d: np.max(np.abs(d - d_dense) / wls.sigma ** 2)
    assert rel(d_sel) < 1e-4 and rel(d_blk) < 1e-4
