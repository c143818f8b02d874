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
