"""The 30-second loop on the sample world: simulator files -> snapshot -> topology, estimate, bad data,
bottlenecks. Real landing files, real power-grid-model; no Dagster."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pandas as pd
import pytest

from gridpipeline.grid.cycle import CycleConfig, measurements_from_snapshot, run_cycle
from gridpipeline.grid.network import to_pgm
from gridpipeline.grid.topology import critical_elements
from gridpipeline.telemetry.registry import build_registry
from gridpipeline.telemetry.snapshot import landing_snapshot, latest_snapshot
from gridpipeline.world.model import load_world
from gridpipeline.world.scada import FaultConfig, ScadaSimulator

T0 = datetime(2026, 11, 20, 12, 0)
T_SWITCH = T0 + timedelta(minutes=2, seconds=15)


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    world = load_world("sample")
    reg = build_registry(world.net, world.zones)
    net = world.net
    # a closed line switch whose opening cuts load off (a bridge in the radial feeder)
    crit = critical_elements(net)
    bridges = crit[(crit.element_type == "line") & (crit.load_mw_cut_off > 0)]
    sw = net.switch[(net.switch.et == "l") & net.switch.closed.astype(bool) & net.switch.element.isin(bridges.element_id)]
    switch_id = int(sw.index[0])
    base = tmp_path_factory.mktemp("loop")
    landing = base / "landing"
    sim = ScadaSimulator(world, reg, landing, faults=FaultConfig.none(), seed=3, export_interval_s=30,
                         switch_events=[(T_SWITCH, switch_id, False)], truth_path=base / "truth.duckdb")
    sim.run(T0, T0 + timedelta(minutes=5))
    sim.close()
    con = duckdb.connect(str(base / "truth.duckdb"), read_only=True)
    truth = con.execute("SELECT sensor_id, ts, true_value FROM truth_readings").df()
    con.close()
    return world, reg, landing, switch_id, to_pgm(net), truth


def test_clean_snapshot_estimate_is_consistent(loop):
    world, reg, landing, _, model, truth = loop
    ts = T0 + timedelta(minutes=1)
    readings, counts = landing_snapshot(landing, ts, reg)
    assert counts["rows_in"] == counts["rows_used"] + counts["rows_rejected"] > 0
    assert set(readings.quality) == {"good"}
    res = run_cycle(world.net, model, reg, readings, ts)
    s = res.summary
    assert s["converged"] and s["fallback"] is None and s["observable"]
    # clean data: J within the chi-squared bound; anything removed is a genuine tail draw of the
    # sensor noise (1,500 Gaussian readings may hold one beyond 4 sigma), never a good reading
    assert s["J"] < s["chi2_threshold"]
    removed = res.bad_data[res.bad_data.action == "removed"].merge(
        truth[truth.ts == ts][["sensor_id", "true_value"]], on="sensor_id").merge(reg[["sensor_id", "sigma"]], on="sensor_id")
    assert s["n_bad_removed"] == len(removed) <= 1
    assert ((removed.value - removed.true_value).abs() > 4 * removed.sigma).all()
    assert len(res.events) == 0
    # estimated voltages closer to the true ones than the voltage sensors' sigma (0.5 %)
    v = truth[truth.ts == ts].merge(reg[reg.kind == "v_mag"][["sensor_id", "element_id", "nominal"]], on="sensor_id")
    est = res.buses.u_kv.reindex(v.element_id).to_numpy()
    rel = np.abs(est - v.true_value.to_numpy()) / v.nominal.to_numpy()
    assert np.sqrt(np.mean(rel ** 2)) < 0.005 / 2
    assert res.timings["cycle_s"] < 10


def test_gross_error_is_removed(loop):
    world, reg, landing, _, model, truth = loop
    ts = T0 + timedelta(minutes=1, seconds=30)
    readings, _ = landing_snapshot(landing, ts, reg)
    # a 25-sigma error on an MV line flow (measured at both ends: redundant)
    mv = reg[(reg.kind == "p_branch") & (reg.element_type == "line") & (reg.nominal > 1.0)]
    target = mv.iloc[len(mv) // 2]
    readings = readings.copy()
    readings.loc[readings.sensor_id == target.sensor_id, "value"] += 25 * target.sigma
    res = run_cycle(world.net, model, reg, readings, ts)
    removed = res.bad_data[res.bad_data.action == "removed"]
    assert int(target.sensor_id) in set(removed.sensor_id.astype(int))
    assert res.summary["converged"] and res.summary["J"] < res.summary["chi2_threshold"]


def test_switch_opening_is_a_topology_event(loop):
    world, reg, landing, switch_id, model, _ = loop
    before_ts, after_ts = T_SWITCH - timedelta(seconds=15), T_SWITCH + timedelta(seconds=15)
    before = run_cycle(world.net, model, reg, landing_snapshot(landing, before_ts, reg)[0], before_ts)
    after = run_cycle(world.net, model, reg, landing_snapshot(landing, after_ts, reg)[0], after_ts,
                      prev_switch_states=before.switch_states, last_good=before.estimate,
                      work_net=copy.deepcopy(world.net))
    assert before.switch_states[switch_id] and not after.switch_states[switch_id]
    kinds = set(after.events.kind)
    assert {"switch_opened", "supply_lost"} <= kinds
    lost = after.events[after.events.kind == "supply_lost"]
    assert lost.load_mw.sum() > 0
    # the estimate still converges on the rest of the grid, and the cut-off buses are de-energised
    assert after.summary["converged"]
    assert (~after.buses.energized).sum() > 0


def test_bad_switch_telemetry_keeps_the_previous_state(loop):
    world, reg, landing, switch_id, model, _ = loop
    ts = T0 + timedelta(minutes=1)
    readings, _ = landing_snapshot(landing, ts, reg)
    sw_sensor = reg[(reg.kind == "switch_status") & (reg.element_id == switch_id)].sensor_id.iloc[0]
    readings = readings.copy()
    readings.loc[readings.sensor_id == sw_sensor, "value"] = 0.5  # not a status
    res = run_cycle(world.net, model, reg, readings, ts)
    assert "switch_status_invalid" in set(res.events.kind)
    assert res.switch_states[switch_id]  # kept closed


def test_no_readings_falls_back_without_raising(loop):
    world, reg, _, _, model, _ = loop
    empty = pd.DataFrame(columns=["sensor_id", "value", "quality"])
    res = run_cycle(world.net, model, reg, empty, T0, config=CycleConfig())
    assert not res.summary["observable"]
    assert res.summary["n_measurements"] == 0


def test_measurement_mapping_uses_registry_sigma(loop):
    _, reg, landing, _, _, _ = loop
    readings, _ = landing_snapshot(landing, T0, reg)
    meas, switches = measurements_from_snapshot(reg, readings)
    assert meas.index.is_unique
    r = meas.merge(reg[["sensor_id", "sigma"]], on="sensor_id", suffixes=("", "_reg"))
    assert np.allclose(r.sigma, r.sigma_reg)
    assert len(switches) == (reg.kind == "switch_status").sum()


def test_latest_snapshot_waits_for_every_source(loop):
    _, reg, landing, _, _, _ = loop
    n = reg.source.nunique()
    last = T0 + timedelta(minutes=4, seconds=30)
    later = T0 + timedelta(minutes=6)
    # every source delivered: the newest interval is complete
    assert latest_snapshot(landing, later, n) == last
    # one source more than deliver: nothing qualifies before the grace period has passed
    assert latest_snapshot(landing, later, n + 1, grace_s=3600) is None
    assert latest_snapshot(landing, later + timedelta(hours=2), n + 1, grace_s=3600, lookback=timedelta(hours=3)) == last
