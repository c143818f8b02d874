"""The validation gate on a 3-bus feeder whose second line carries at most 0.1 kA (3.46 MVA at 20 kV)."""

from __future__ import annotations

import pandapower as pp
import pandas as pd
import pytest

from gridpipeline.storage.gate import gate


def _feeder(load_mw: float):
    net = pp.create_empty_network()
    b = [pp.create_bus(net, vn_kv=20.0) for _ in range(3)]
    pp.create_ext_grid(net, b[0], vm_pu=1.0)
    pp.create_line_from_parameters(net, b[0], b[1], 1.0, r_ohm_per_km=0.1, x_ohm_per_km=0.1, c_nf_per_km=0,
                                   max_i_ka=0.4)
    pp.create_line_from_parameters(net, b[1], b[2], 1.0, r_ohm_per_km=0.1, x_ohm_per_km=0.1, c_nf_per_km=0,
                                   max_i_ka=0.1)
    pp.create_load(net, b[2], p_mw=load_mw)
    pp.create_storage(net, b[2], p_mw=0.0, max_e_mwh=10.0)
    return net


def test_full_setpoints_pass_when_the_line_can_carry_them():
    v = gate(_feeder(1.0), pd.Series({0: -1.0}))  # charge 1 MW: 2 MW on line 1, ~58 %
    assert v.passed and v.scale == 1.0 and v.cases == 1


def test_charging_that_would_overload_line_1_is_scaled_back_by_bisection():
    v = gate(_feeder(1.0), pd.Series({0: -4.0}))  # 5 MW on line 1: ~145 %
    assert v.passed and 0.5 < v.scale < 0.62  # about 2.4 of the 4 MW fit under 100 %
    assert v.worst["element"] == "line 1" and v.worst["value_after"] > 140
    assert "scaled back" in v.reason and "line 1" in v.reason


def test_a_plan_that_would_worsen_an_overloaded_line_is_rejected_and_names_it():
    net = _feeder(3.6)  # line 1 already just above 100 %
    v = gate(net, pd.Series({0: -0.5}))
    assert not v.passed and v.scale == 0.0
    assert v.worst["element"] == "line 1" and v.worst["excess_after"] > v.worst["excess_before"] > 0
    assert "rejected: line 1" in v.reason
    # discharging relieves it: passes whole, though line 1 is still above its limit
    assert gate(net, pd.Series({0: 0.5})).scale == pytest.approx(1.0)


def test_the_gate_also_checks_contingencies():
    net = _feeder(1.0)
    b3 = pp.create_bus(net, vn_kv=20.0)  # a parallel path via bus 3 with a tight line
    pp.create_line_from_parameters(net, 1, b3, 1.0, r_ohm_per_km=0.1, x_ohm_per_km=0.1, c_nf_per_km=0, max_i_ka=0.4)
    pp.create_line_from_parameters(net, b3, 2, 1.0, r_ohm_per_km=0.1, x_ohm_per_km=0.1, c_nf_per_km=0, max_i_ka=0.06)
    setpoint = pd.Series({0: -2.0})
    assert gate(net, setpoint).scale == 1.0  # both paths share 3 MW
    v = gate(net, setpoint, contingencies=[("line", 1)])  # line 1 out: all 3 MW over line 3 (0.06 kA)
    assert v.worst["case"] == "outage of line 1" and v.worst["element"] == "line 3" and v.scale < 1.0


def test_reactive_setpoints_are_scaled_with_the_rest():
    """Reactive power is one of the setpoints: the common factor scales it too, so what is sent is what
    was checked. 3 Mvar absorbed at bus 2 on a lightly loaded feeder puts ~3 MVA over line 1 (0.1 kA =
    3.46 MVA at 20 kV): fine. 6 Mvar would not be, so about half of it passes."""
    net = _feeder(0.5)
    pp.create_sgen(net, 2, p_mw=0.2, q_mvar=0.0)
    assert gate(net, pd.Series(dtype=float), reactive_mvar=pd.Series({0: -3.0})).scale == 1.0
    v = gate(net, pd.Series(dtype=float), reactive_mvar=pd.Series({0: -6.0}))
    assert v.passed and 0.4 < v.scale < 0.6 and v.worst["element"] == "line 1"
    # the factor found is the one at which the AC power flow is within the limit
    assert gate(net, pd.Series(dtype=float), reactive_mvar=pd.Series({0: -6.0 * v.scale})).scale == 1.0


def _parallel_feeder():
    net = _feeder(1.0)
    b3 = pp.create_bus(net, vn_kv=20.0)
    pp.create_line_from_parameters(net, 1, b3, 1.0, r_ohm_per_km=0.1, x_ohm_per_km=0.1, c_nf_per_km=0, max_i_ka=0.4)
    pp.create_line_from_parameters(net, b3, 2, 1.0, r_ohm_per_km=0.1, x_ohm_per_km=0.1, c_nf_per_km=0, max_i_ka=0.06)
    return net


@pytest.mark.parametrize(("net", "setpoint", "contingencies"), [
    (_feeder(1.0), -4.0, []),                       # scaled back: line 1
    (_feeder(3.6), -0.5, []),                       # rejected: line 1 already over
    (_feeder(3.6), 0.5, []),                        # relief passes whole
    (_parallel_feeder(), -2.0, [("line", 1)]),      # scaled back in the contingency
    (_parallel_feeder(), -2.0, [("line", 1), ("line", 3)]),
])
def test_the_batched_gate_gives_the_bisection_s_verdict(net, setpoint, contingencies):
    """The gate runs its cases and factors as power-grid-model batches; one power flow at a time by
    bisection (the pandapower path) must reach the same factor and name the same element."""
    from gridpipeline.storage.gate import _gate_by_bisection

    sp = pd.Series({0: setpoint})
    batched = gate(net, sp, contingencies=contingencies)
    one_by_one = _gate_by_bisection(net, sp, pd.Series(dtype=float), contingencies=contingencies)
    assert batched.scale == pytest.approx(one_by_one.scale)
    assert batched.passed == one_by_one.passed
    assert batched.worst.get("element") == one_by_one.worst.get("element")
    assert batched.worst.get("case") == one_by_one.worst.get("case")
    if batched.worst:
        assert batched.worst["value_after"] == pytest.approx(one_by_one.worst["value_after"], rel=1e-6)


def test_the_batched_gate_on_the_sample_world_agrees_with_the_bisection():
    """A real state (the sample world's injections at one instant), every battery asked to discharge 3 MW
    (MV) or 30 kW (home), ten contingencies: line 58 would overload, both scale back to a quarter."""
    import copy

    import numpy as np

    from gridpipeline.storage.gate import _gate_by_bisection
    from gridpipeline.world.model import load_world

    world = load_world("sample")
    inj = world.injections_at(pd.DatetimeIndex(["2018-01-15 01:00"], tz="UTC"))
    net = copy.deepcopy(world.net)
    net.load["p_mw"], net.load["q_mvar"], net.load["scaling"] = inj.load_p_mw[0], inj.load_q_mvar[0], 1.0
    net.sgen["p_mw"], net.sgen["q_mvar"], net.sgen["scaling"] = inj.sgen_p_mw[0], inj.sgen_q_mvar[0], 1.0
    net.storage["p_mw"] = 0.0
    big = (net.storage.max_e_mwh > 1).to_numpy()
    sp = pd.Series(np.where(big, 3.0, 0.03), index=net.storage.index)
    cases = [("line", int(i)) for i in net.line.index[net.line.in_service.astype(bool)][:10]]
    batched = gate(net, sp, contingencies=cases)
    one_by_one = _gate_by_bisection(net, sp, pd.Series(dtype=float), contingencies=cases)
    assert 0 < batched.scale < 1 and batched.scale == pytest.approx(one_by_one.scale)
    assert (batched.worst["element"], batched.worst["case"]) == (one_by_one.worst["element"], one_by_one.worst["case"])
    assert batched.evaluations == 11 * 2 + 11 * 63  # one batch before and at full, one at every factor
