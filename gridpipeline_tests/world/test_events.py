"""The world's events file: read again only when it changed, never half-written, and each reader
takes only its own kinds (a frequency event is no cloud front, and an entry without a start does not
stop the simulator)."""

from __future__ import annotations

import json
import os

from gridpipeline.world.events import read_events


def test_the_file_is_read_when_it_changes_and_a_half_written_one_is_read_again(tmp_path):
    p = tmp_path / "events.json"
    assert read_events(p, None) == (None, None)  # no file yet
    p.write_text('[{"kind": "pv", "start": "2026-11-03T10:00:00"}')  # half-written
    ev, m = read_events(p, None)
    assert ev is None and m is None  # its mtime not taken: read again
    p.write_text('[{"kind": "pv", "start": "2026-11-03T10:00:00"}]')
    os.utime(p, ns=(1, 10**18))
    ev, m = read_events(p, None)
    assert ev == [{"kind": "pv", "start": "2026-11-03T10:00:00"}] and m == 10**18
    assert read_events(p, m) == (None, m)  # unchanged


def test_the_simulator_takes_only_fronts_and_skips_what_it_cannot_read(tmp_path):
    from gridpipeline.telemetry.registry import PlacementPolicy, build_registry
    from gridpipeline.world.model import load_world
    from gridpipeline.world.scada import FaultConfig, ScadaSimulator

    world = load_world("sample")
    reg = build_registry(world.net, world.zones, PlacementPolicy())
    p = tmp_path / "events.json"
    p.write_text(json.dumps([
        {"kind": "generation_loss", "start": "2026-11-03T10:00:00", "share": 0.06, "minutes": 10},
        {"kind": "switch_fault", "switch": 230},
        {"kind": "breaker_trip", "switch": 230, "start": "2026-11-03T10:00:00"},
        {"kind": "pv", "start": "2026-11-03T11:00:00", "minutes": 30},
        {"kind": "wind"}]))  # no start: skipped with a warning
    sim = ScadaSimulator(world, reg, tmp_path / "landing", faults=FaultConfig.none(), events_path=p)
    try:
        sim._read_events()
        assert len(sim.fronts) == 1 and sim.fronts[0][0].hour == 11
    finally:
        sim.close()


def test_a_load_surge_on_a_feeder_really_overloads_its_head_in_the_world(tmp_path):
    """``load_surge`` raises the loads behind a feeder head (and only those), so the world's own power flow,
    which the outstation reports over IEC 104, puts the head above its emergency rating."""
    import numpy as np
    import pandas as pd

    from gridpipeline.common.iec104 import feeder_heads
    from gridpipeline.telemetry.registry import PlacementPolicy, build_registry
    from gridpipeline.world.model import load_world
    from gridpipeline.world.scada import FaultConfig, ScadaSimulator

    world = load_world("sample")
    reg = build_registry(world.net, world.zones, PlacementPolicy())
    p = tmp_path / "events.json"
    sim = ScadaSimulator(world, reg, tmp_path / "landing", faults=FaultConfig.none(), events_path=p)
    try:
        at = pd.DatetimeIndex([pd.Timestamp("2026-11-03T17:30:00", tz="UTC")])
        base = sim.engine.solve(sim._fronts(at, world.injections_at(at)))
        heads = feeder_heads(world.net)
        col = {int(i): k for k, i in enumerate(base.line_index)}
        line = max(heads, key=lambda h: base.line_loading_percent[0, col[h]])
        before = float(base.line_loading_percent[0, col[line]])
        behind = sim._loads_behind(line)
        assert behind and len(behind) < len(world.net.load)
        def surge(factor):
            p.write_text(json.dumps([{"kind": "load_surge", "start": "2026-11-03T17:00:00", "minutes": 60,
                                      "factor": factor, "line": line, "ramp_minutes": 2},
                                     {"kind": "load_surge", "start": "2026-11-03T17:00:00"}]))  # no feeder: skipped
            os.utime(p, ns=(1, 10**18 + int(factor * 1000)))
            inj = sim._fronts(at, world.injections_at(at))
            return inj, float(sim.engine.solve(inj).line_loading_percent[0, col[line]])

        factor = 2.0
        inj, after = surge(factor)
        while after <= 120.0 and factor < 40:  # the feeder's own generation offsets part of the surge
            factor *= 1.5
            inj, after = surge(factor)
        assert len(sim.surges) == 1
        raw = world.injections_at(at)
        pos = [world.net.load.index.get_loc(i) for i in behind]
        others = np.setdiff1d(np.arange(len(world.net.load)), pos)
        np.testing.assert_allclose(inj.load_p_mw[0, pos], raw.load_p_mw[0, pos] * factor)
        np.testing.assert_allclose(inj.load_p_mw[0, others], raw.load_p_mw[0, others])
        assert after > 120.0 > before, (before, after, factor, line, len(behind))
        # outside the surge's window, nothing changes
        late = pd.DatetimeIndex([pd.Timestamp("2026-11-03T19:00:00", tz="UTC")])
        np.testing.assert_allclose(sim._fronts(late, world.injections_at(late)).load_p_mw,
                                   world.injections_at(late).load_p_mw)
    finally:
        sim.close()


def test_a_restarted_world_keeps_its_switches_where_the_field_left_them(tmp_path):
    """The outstation's switch states survive a restart of the simulator: each switch's last operation
    in the world's own switching record holds again (a refused command does not count)."""
    from datetime import datetime

    from gridpipeline.telemetry.registry import PlacementPolicy, build_registry
    from gridpipeline.world.model import load_world
    from gridpipeline.world.outstation import FieldDynamics
    from gridpipeline.world.scada import FaultConfig, ScadaSimulator

    world = load_world("sample")
    reg = build_registry(world.net, world.zones, PlacementPolicy())
    truth = tmp_path / "truth.duckdb"
    sim = ScadaSimulator(world, reg, tmp_path / "landing", faults=FaultConfig.none(), truth_path=truth)
    try:
        fresh = FieldDynamics(sim)  # no record yet: the network's states
        a, b = fresh.switches[:2]
        assert fresh.closed[a] and fresh.closed[b]
        con = sim._truth_con()
        con.execute("CREATE TABLE truth_switching (ts TIMESTAMP, switch_id INTEGER, closed BOOLEAN, result VARCHAR)")
        con.executemany("INSERT INTO truth_switching VALUES (?, ?, ?, ?)", [
            (datetime(2026, 12, 5, 10), a, False, "accepted"), (datetime(2026, 12, 5, 10, 5), b, False, "trip"),
            (datetime(2026, 12, 5, 10, 6), b, True, "closed by the field crew"),
            (datetime(2026, 12, 5, 10, 7), b, False, "refused (switch fault)")])
        again = FieldDynamics(sim)
        assert again.closed[a] is False and again.closed[b] is True
        assert (datetime(2026, 12, 5, 10), a, False) in sim.switch_events
        assert not again._energized.all()  # the loads behind the open switch are off
    finally:
        sim.close()
