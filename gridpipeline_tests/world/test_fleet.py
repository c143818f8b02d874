"""The closed loop in the world: batteries follow the setpoints written to their BMS over Modbus
(within their limits), true SOC follows the efficiency-weighted energy, curtailment limits cap the
generators, and the effect shows in the telemetry the simulator exports."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from gridpipeline.common import bms_registers as reg
from gridpipeline.common.field_map import INVERTER_OFFSET, endpoints
from gridpipeline.sources.bms import BmsClient
from gridpipeline.telemetry.registry import PlacementPolicy, build_registry
from gridpipeline.world.fleet import FieldFleet
from gridpipeline.world.model import load_world
from gridpipeline.world.scada import FaultConfig, ScadaSimulator


@pytest.fixture(scope="module")
def world():
    return load_world("sample")


def _window(start: str) -> pd.DatetimeIndex:
    return pd.date_range(start, periods=30, freq="10s", tz="UTC")


def test_fleet_follows_setpoints_within_limits_and_soc_follows_energy(world):
    fleet = FieldFleet(world.net)
    t = _window("2026-06-15 08:00")  # solar night: the default schedule idles
    inj = world.injections_at(t)
    out = fleet.apply(t, inj)
    assert np.allclose(out.storage_p_mw, inj.storage_p_mw)  # no setpoint: today's behaviour
    b = fleet.batteries[0]
    b.write(reg.SETPOINT, reg.to_words(-400_000))  # raw registers: -0.4 MW (charge), as Modbus writes it
    assert b.commanded() == pytest.approx(-0.4)
    e0 = fleet.energy.copy()
    t2 = t + pd.Timedelta(minutes=5)
    out = fleet.apply(t2, world.injections_at(t2))
    assert np.allclose(out.storage_p_mw[:, 0], 0.4)  # pandapower sign: charging consumes
    # SOC invariant: energy grows by eta_c * P * dt over the window
    assert fleet.energy[0] - e0[0] == pytest.approx(0.94 * 0.4 * 5 / 60, rel=1e-9)
    # a setpoint beyond the rating is held at the rating; an empty battery stops at its SOC minimum
    b.setpoint_mw, fleet.energy[0] = 3.0, 0.06 * fleet.capacity[0]
    t3 = t2 + pd.Timedelta(minutes=5)
    out = fleet.apply(t3, world.injections_at(t3))
    assert (-out.storage_p_mw[:, 0] <= 1.0 + 1e-12).all()
    assert fleet.energy[0] == pytest.approx(0.05 * fleet.capacity[0], abs=1e-9)
    # out of order: a new simulation restarts from the stated initial SOC
    fleet.apply(t, world.injections_at(t))
    assert fleet.energy[1] == pytest.approx(0.5 * fleet.capacity[1])


def test_simulator_serves_the_field_and_the_loop_closes(world, tmp_path):
    sensors = build_registry(world.net, world.zones, PlacementPolicy())
    sim = ScadaSimulator(world, sensors, tmp_path / "landing", faults=FaultConfig.none(), truth_path=None)
    plan = sim.serve_field("127.0.0.1", 0)
    try:
        assert len(plan["batteries"]) == 1 and plan["batteries"][0]["units"] == 64
        assert plan["inverters"][0]["units"] == 127
        bats = [u.battery_id for u in sim.fleet.batteries]
        eps = [e.__class__(e.device_id, e.host, plan["batteries"][0]["port"], e.unit)
               for e in endpoints(bats, "127.0.0.1", 1)]
        gens = [u.sgen_id for u in sim.fleet.inverters]
        ieps = [e.__class__(e.device_id, e.host, plan["inverters"][0]["port"], e.unit)
                for e in endpoints(gens, "127.0.0.1", 1, INVERTER_OFFSET)]
        client = BmsClient(eps, timeout_s=2.0, inverters=ieps)
        w0 = datetime(2026, 6, 15, 17, 0)  # midday: PV produces
        sim.simulate_window(w0)
        soc_before = client.read_fleet().set_index("battery_id").soc_percent
        ok, detail = client.write_setpoint("BESS_1", 0.8)  # discharge 0.8 MW
        assert ok, detail
        pv = next(g for g in gens if "PV" in g or "SGen" in g)
        ok, detail = client.write_limit(pv, 10.0)
        assert ok, detail
        ok, detail = client.write_var(pv, -20.0)  # absorb 20 % of its rating (a voltage binds)
        assert ok, detail
        times, truth, _ = sim.true_values(datetime(2026, 6, 15, 17, 5))
        sim.fleet.tick(None)
        # the battery's measured P (a telemetry sensor) shows the discharge: -0.8 MW consumption
        st_p = sensors.index[(sensors.element_type == "storage") & (sensors.kind == "p_inj")
                             & (sensors.element_id == world.net.storage.index[0])]
        assert np.allclose(truth[:, st_p], -0.8, atol=1e-6)
        soc_after = client.read_fleet().set_index("battery_id").soc_percent
        assert soc_after["BESS_1"] < soc_before["BESS_1"]
        inv = client.read_inverters().set_index("sgen_id").loc[pv]
        assert inv.limit_enabled and inv.limit_pct == pytest.approx(10.0)
        assert inv.p_mw <= 0.1 * inv.rating_mw + 1e-9 and inv.p_avail_mw > inv.p_mw
        # the reactive setpoint is followed within the inverter's apparent power and shows in the truth
        assert inv.var_enabled and inv.var_pct == pytest.approx(-20.0)
        assert inv.q_mvar == pytest.approx(-0.2 * inv.rating_mw, rel=1e-3)
        q_sens = sensors.index[(sensors.element_type == "sgen") & (sensors.kind == "q_inj")
                               & (sensors.element_id == world.net.sgen.index[world.net.sgen.name.astype(str) == pv][0])]
        assert len(q_sens) == 1  # every generator's Q is measured
        assert np.allclose(truth[:, q_sens], -0.2 * inv.rating_mw, rtol=1e-3)
        client.close()
    finally:
        sim.close()
