"""Limit rows around a state, checked against full AC power flows, and used by the dispatch and
the gate together on a feeder whose line limits charging."""

from __future__ import annotations

import numpy as np
import pandapower as pp
import pandas as pd
import pytest

from gridpipeline.grid.network import to_pgm
from gridpipeline.grid.powerflow import run_powerflow
from gridpipeline.storage.dispatch import DispatchInputs, DispatchModel, Fleet
from gridpipeline.storage.gate import gate
from gridpipeline.storage.limits import feeder_heads, limit_rows


def _feeder(load_mw=2.0):
    net = pp.create_empty_network()
    hv = pp.create_bus(net, vn_kv=110.0)
    b = [pp.create_bus(net, vn_kv=20.0) for _ in range(3)]
    pp.create_ext_grid(net, hv)
    pp.create_transformer(net, hv, b[0], std_type="25 MVA 110/20 kV")
    pp.create_line_from_parameters(net, b[0], b[1], 2.0, r_ohm_per_km=0.2, x_ohm_per_km=0.1, c_nf_per_km=0,
                                   max_i_ka=0.2)
    pp.create_line_from_parameters(net, b[1], b[2], 2.0, r_ohm_per_km=0.2, x_ohm_per_km=0.1, c_nf_per_km=0,
                                   max_i_ka=0.12)
    pp.create_load(net, b[2], p_mw=load_mw, q_mvar=0.2)
    pp.create_sgen(net, b[1], p_mw=1.0, type="PV")
    pp.create_storage(net, b[2], p_mw=0.0, max_e_mwh=8.0)
    return net


def _line1_loading(net) -> float:
    pf = run_powerflow(net)
    br = pf.branches.set_index(["element_type", "element_id"])
    return float(br.loc[("line", 1), "loading_percent"])


def test_sensitivities_match_full_power_flows():
    net = _feeder()
    model = to_pgm(net)
    rows = limit_rows(model, model.with_switch_states(None), net, batteries=[0], generators=[0],
                      zone_of_load=pd.Series(["Z1"], index=net.load.index))
    assert feeder_heads(net) == [0] and "trafo 0 loading" in rows.names and "line 0 loading" in rows.names
    assert "line 1 loading" not in rows.names  # ~49 %: below the 60 % watch mark, not a feeder head
    rows = limit_rows(model, model.with_switch_states(None), net, batteries=[0], generators=[0],
                      zone_of_load=pd.Series(["Z1"], index=net.load.index), watch_percent=40.0)
    k = rows.names.index("line 1 loading")
    base = _line1_loading(net)
    assert rows.now[k] == pytest.approx(base, rel=1e-6)
    # 1 MW of battery discharge at the load bus relieves line 1; check against a full power flow
    n2 = _feeder()
    n2.storage.loc[0, "p_mw"] = -1.0
    assert rows.s_battery[k, 0] == pytest.approx(_line1_loading(n2) - base, rel=0.03)
    n3 = _feeder(load_mw=3.0)
    assert rows.s_zone[k, 0] == pytest.approx(_line1_loading(n3) - base, rel=0.03)
    kv = rows.names.index("bus 3 voltage")
    assert rows.s_battery[kv, 0] > 0  # discharging raises the end voltage
    # 1 Mvar from the PV inverter at bus 2, against a full power flow: it raises the voltage there
    kq = rows.names.index("bus 2 voltage")
    pf = run_powerflow(net)
    v0 = float(pf.buses.loc[2, "u_pu"])
    n4 = _feeder()
    n4.sgen.loc[0, "q_mvar"] = 1.0
    v1 = float(run_powerflow(n4).buses.loc[2, "u_pu"])
    assert rows.s_generator_q is not None and rows.s_generator_q[kq, 0] > 0
    assert rows.s_generator_q[kq, 0] == pytest.approx(v1 - v0, rel=0.03)


def test_dispatch_charges_only_what_line_1_carries_and_the_gate_agrees():
    net = _feeder(load_mw=2.0)
    model = to_pgm(net)
    rows = limit_rows(model, model.with_switch_states(None), net, batteries=[0], generators=[],
                      zone_of_load=pd.Series(["Z1"], index=net.load.index), also_watch=[("line", 1)])
    T = 2
    fleet = Fleet(("bess",), eta_c=np.array([0.95]), eta_d=np.array([0.95]))
    x = DispatchInputs(dt_h=1.0, price_buy=np.array([0.0, 100.0]), price_sell=np.array([0.0, 100.0]),
                       net_load=np.array([1.0, 1.0]), soc0=np.array([0.0]), e_min=np.array([0.0]),
                       e_max=np.array([8.0]), p_charge_max=np.array([5.0]), p_discharge_max=np.array([5.0]),
                       degradation=np.array([1.0]), e_target=np.array([0.0]), terminal_value=0.0,
                       limit_base=rows.base(None, None).repeat(T, axis=0), limit_lower=rows.lower,
                       limit_upper=rows.upper, sens_battery=rows.s_battery, limit_names=rows.names)
    r = DispatchModel(fleet, T, limit_rows=len(rows.names)).solve(x)
    charge = r.charge[0, 0]
    assert 0.5 < charge < 5.0  # cheap energy, but line 1 caps it well below the 5 MW rating
    assert any(b["where"] == "line 1 loading" and b["step"] == 0 for b in r.binding)
    v = gate(net, pd.Series({0: -charge}))
    assert v.passed and v.scale > 0.9  # the linearised limit is close to the AC one


def test_rows_the_fleet_cannot_move_are_dropped_unless_already_violated():
    from gridpipeline.storage.limits import LimitRows

    rows = LimitRows(names=("line 1 loading", "line 2 loading", "line 3 loading", "bus 4 voltage", "line 5 loading"),
                     now=np.array([80.0, 120.0, 50.0, 1.04, 30.0]), lower=np.array([-1e6, -1e6, -1e6, 0.95, -1e6]),
                     upper=np.array([100.0, 100.0, 100.0, 1.05, 100.0]),
                     s_battery=np.array([[10.0], [0.001], [0.001], [0.01], [10.0]]), s_generator=np.zeros((5, 0)),
                     s_zone=np.zeros((5, 0)), zones=())
    kept = rows.relevant(np.array([0.2]), min_loading=0.5, min_voltage=0.001)
    # line 1: 2 % at 0.2 MW and 80 + 2 + 25 % margin reaches 100 %; line 2: already past its limit;
    # line 3: 0.0002 %; bus 4: 0.002 pu and 1.04 can reach 1.05; line 5: moved 2 % but 30 % cannot bind
    assert kept.names == ("line 1 loading", "line 2 loading", "bus 4 voltage")
    assert kept.s_battery.shape == (3, 1) and kept.now.tolist() == [80.0, 120.0, 1.04]
    assert rows.loading_only().names == ("line 1 loading", "line 2 loading", "line 3 loading", "line 5 loading")


def test_the_rows_start_from_the_state_without_the_planned_batteries_power():
    """The plan adds the batteries' power to the rows' base, so the base must not hold the power they
    have now: with the battery discharging 1 MW in the estimated state and the plan keeping 1 MW, the
    rows must predict the AC power flow at 1 MW, not at 2."""
    from gridpipeline.storage.inputs import without_planned_batteries

    net = _feeder()
    net.storage.loc[0, "p_mw"] = -1.0  # discharging 1 MW now (pandapower storage: + is consumption)
    base = without_planned_batteries(net, [0])
    assert base is not net and base.storage.p_mw[0] == 0.0 and net.storage.p_mw[0] == -1.0
    assert without_planned_batteries(base, [0]) is base  # nothing to take out: no copy
    model = to_pgm(base)
    rows = limit_rows(model, model.with_switch_states(None), base, batteries=[0], generators=[],
                      zone_of_load=pd.Series(["Z1"], index=net.load.index), also_watch=[("line", 1)])
    k = rows.names.index("line 1 loading")
    predicted = rows.now[k] + rows.s_battery[k, 0] * 1.0
    assert predicted == pytest.approx(_line1_loading(net), rel=0.01)  # the AC flow at 1 MW, as it is now
