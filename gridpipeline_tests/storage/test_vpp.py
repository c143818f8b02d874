"""VPP envelope and disaggregation: limits respected, shares summing to the setpoint or a reported
shortfall, on cases checked by hand and on random fleets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridpipeline.storage.vpp import disaggregate, envelope

DT = 5 / 60


def _members(e, e_min=None, e_max=None, p=None, available=None, feeder=None):
    n = len(e)
    return pd.DataFrame({
        "e_mwh": e, "e_min_mwh": e_min if e_min is not None else [0.0] * n,
        "e_max_mwh": e_max if e_max is not None else [0.013] * n,
        "p_charge_max_mw": p if p is not None else [0.005] * n, "p_discharge_max_mw": p if p is not None else [0.005] * n,
        "eta_c": [1.0] * n, "eta_d": [1.0] * n, "available": available if available is not None else [True] * n,
        "feeder": feeder if feeder is not None else ["F1"] * n}, index=[f"H{k}" for k in range(n)])


def test_split_in_proportion_to_energy_above_reserve_by_hand():
    # 10 kWh, 13 kWh-capacity homes with a 3 kWh backup reserve: 6, 3 and 0 kWh above it
    m = _members([0.009, 0.006, 0.003], e_min=[0.003] * 3)
    s = disaggregate(0.006, m, DT)
    np.testing.assert_allclose(s.setpoints.to_numpy(), [0.004, 0.002, 0.0], atol=1e-12)
    assert s.shortfall_mw == pytest.approx(0.0, abs=1e-12)
    # 12 kW asked of 10 kW: the first home is capped at 5 kW, the rest goes to the second
    s = disaggregate(0.012, m, DT)
    np.testing.assert_allclose(s.setpoints.to_numpy(), [0.005, 0.005, 0.0], atol=1e-12)
    assert s.shortfall_mw == pytest.approx(0.002, abs=1e-12)


def test_charging_favours_the_emptiest_and_unavailable_members_get_nothing():
    m = _members([0.003, 0.010, 0.008], available=[True, True, False])
    s = disaggregate(-0.004, m, DT)  # room below 13 kWh: 10 and 3 kWh
    np.testing.assert_allclose(s.setpoints.to_numpy(), [-0.004 * 10 / 13, -0.004 * 3 / 13, 0.0], atol=1e-12)
    env = envelope(m, DT)
    assert env["members"] == 2 and env["unavailable"] == 1
    assert env["p_max_mw"] == pytest.approx(0.010) and env["p_min_mw"] == pytest.approx(-0.010)


def test_the_envelope_respects_energy_within_a_step_and_the_feeder_head():
    # 0.1 kWh above reserve can give only 1.2 kW over 5 minutes
    m = _members([0.0031, 0.010], e_min=[0.003, 0.003], feeder=["F1", "F2"])
    env = envelope(m, DT)
    assert env["p_max_mw"] == pytest.approx(0.0001 / DT + 0.005)
    capped = envelope(m, DT, feeder_headroom={"F2": (0.002, 1.0)})
    assert capped["p_max_mw"] == pytest.approx(0.0001 / DT + 0.002) and capped["feeder_capped"] == {"F2": "discharge"}


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 30), st.floats(-0.3, 0.3), st.integers(0, 2**31 - 1))
def test_shares_sum_to_the_setpoint_or_report_the_shortfall(n, setpoint, seed):
    rng = np.random.default_rng(seed)
    cap = rng.uniform(0.010, 0.015, n)
    m = _members(list(cap * rng.uniform(0, 1, n)), e_min=list(cap * 0.2), e_max=list(cap),
                 p=list(rng.uniform(0.005, 0.010, n)), available=list(rng.uniform(size=n) > 0.2))
    s = disaggregate(setpoint, m, DT)
    env = envelope(m, DT)
    assert (s.setpoints <= m.p_discharge_max_mw + 1e-12).all() and (s.setpoints >= -m.p_charge_max_mw - 1e-12).all()
    assert (s.setpoints[~m.available] == 0).all()
    assert np.all(np.sign(s.setpoints[s.setpoints != 0]) == np.sign(setpoint))
    reachable = min(max(setpoint, env["p_min_mw"]), env["p_max_mw"])
    assert s.delivered_mw == pytest.approx(reachable, abs=1e-9)
