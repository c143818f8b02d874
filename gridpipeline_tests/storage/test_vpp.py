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


def test_feeder_head_headroom_by_hand():
    """One feeder head at 60 % of its rating; each MW injected behind it adds 10 % (both members alike):
    4 MW more injection take it to 100 %, 16 MW more consumption take it through zero to 100 % the
    other way. A head that does not see a feeder (sensitivity 0) gives it no limit."""
    from gridpipeline.storage.limits import LimitRows, feeder_headroom

    rows = LimitRows(names=("line 7 loading", "line 8 loading", "bus 3 voltage"), now=np.array([60.0, 10.0, 1.0]),
                     lower=np.array([-1e6, -1e6, 0.95]), upper=np.array([100.0, 100.0, 1.05]),
                     s_battery=np.array([[10.0, 10.0, 0.0], [0.0, 0.0, -5.0], [0.01, 0.01, 0.01]]),
                     s_generator=np.zeros((3, 0)), s_zone=np.zeros((3, 0)), zones=())
    hr = feeder_headroom(rows, np.array(["A", "A", "B"]), heads=[7, 8])
    assert hr["A"] == pytest.approx((4.0, 16.0))
    # B: injection unloads line 8 (s = -5): 90 % / 5 more consumption, (100 + 10) / 5 more injection
    assert hr["B"] == pytest.approx((22.0, 18.0))


def test_envelope_and_split_share_the_feeder_head():
    """Three members that could give 5 kW each; two sit behind a head with 6 kW of room: the envelope
    gives 6 + 5 = 11 kW, and a 11 kW setpoint gives the capped pair 3 kW each."""
    m = _members([0.010, 0.010, 0.010], e_min=[0.0] * 3, feeder=["F1", "F1", "F2"])
    hr = {"F1": (0.006, 1.0)}
    env = envelope(m, DT, feeder_headroom=hr)
    assert env["p_max_mw"] == pytest.approx(0.011)
    assert env["feeder_capped"] == {"F1": "discharge"}
    s = disaggregate(0.011, m, DT, feeder_headroom=hr)
    np.testing.assert_allclose(s.setpoints.to_numpy(), [0.003, 0.003, 0.005], atol=1e-9)
    assert s.shortfall_mw == pytest.approx(0.0, abs=1e-12)


def test_active_holds_newest_per_vpp_until_it_ends_or_is_released():
    from datetime import datetime

    from gridpipeline.storage.vpp import active_holds

    def rec(i, vpp, until, sp, released=False):
        return {"id": i, "kind": "vpp_setpoint", "body": {"vpp": vpp, "until": until, "setpoints_mw": sp,
                                                          "released": released}}

    now = datetime(2026, 6, 1, 12, 0)
    recs = [rec("a", "V1", "2026-06-01T12:30:00", {"H1": 0.004}), rec("b", "V2", "2026-06-01T11:59:00", {"H9": 0.001}),
            {"id": "x", "kind": "dispatch", "body": {}}]
    assert active_holds(recs, now) == {"H1": (0.004, "a")}
    recs.append(rec("c", "V1", "2026-06-01T12:00:00", {}, released=True))
    assert active_holds(recs, now) == {}
