"""``gridpipeline bench replan``'s world side, by hand: when a front shows the drop, how far the world
is moved to have the sun, and which windows get a front at all."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
import pytest

from benchmarks.replan import SKY_MIN, ready, shows_drop_at, sky, world_shift


def test_a_front_shows_the_drop_at_the_first_snapshot_past_sixty_percent():
    """-70 % over a 1-minute ramp takes 60 % off after 51.4 s: the snapshot at +60 s is the first to
    show it; a front that falls at once shows it at its start."""
    t = datetime(2026, 12, 7, 9, 5)
    assert shows_drop_at(t) == t + timedelta(seconds=60)
    assert shows_drop_at(t, {"depth": 0.7, "ramp_minutes": 0.0}) == t
    with pytest.raises(ValueError):
        shows_drop_at(t, {"depth": 0.5, "ramp_minutes": 1.0})


def test_the_world_is_moved_so_the_run_is_at_its_midday():
    """At 09:01 UTC a 20-event run's middle is 09:56; at longitude -79.95 that is 04:36 solar time, 7.65 h
    before 12:15, so the world moves 8 h east; at 17:00 the middle is at 12:35 solar already: no move."""
    assert world_shift(datetime(2026, 12, 7, 9, 1), 20, -79.95, -5.0) == 8
    assert world_shift(datetime(2026, 12, 7, 17, 0), 20, -79.95, -5.0) == 0  # its own midday


def test_a_window_gets_a_front_only_under_the_worlds_own_sun():
    """The sky the bench reads is the moved world's, the one the simulator runs (at UTC t it shows what
    the unmoved world shows at t + h), dark at night and, in some summer hour, above the threshold."""
    from gridpipeline.world.model import load_world

    w0, w8 = load_world("sample"), load_world("sample", shift_h=8)
    t = datetime(2026, 6, 3, 9, 0)
    # the same up to the sun's own motion in 8 h (its declination): 0.8097 against 0.8095 here
    assert sky(w8, t) == pytest.approx(sky(w0, t + timedelta(hours=8)), rel=1e-3)
    shares = [sky(w0, x.to_pydatetime()) for x in pd.date_range("2026-06-01", periods=7 * 24, freq="h")]
    assert min(shares) < 0.01 and max(shares) > SKY_MIN


def test_the_fronts_wait_for_a_plan_made_with_forecasts():
    """The cold start's plans run on persistence while the bootstrap trains the models: the benchmark
    starts its fronts once a plan with forecasts has had its setpoints confirmed."""
    cold = {"id": "a", "kind": "dispatch", "body": {"flags": [
        "no demand forecast: persistence of the estimated load, with a +-5 % band"]}}
    warm = {"id": "b", "kind": "dispatch", "body": {"flags": ["pv: measured 2.4 MW against 6.0 MW forecast now"]}}
    sent = lambda ref, n: {"id": f"w{ref}", "kind": "setpoint_write", "ref": ref, "body": {"confirmed": n}}
    assert not ready([cold, sent("a", 64)])
    assert not ready([cold, sent("a", 64), warm, sent("b", 0)])  # written, not confirmed
    assert ready([cold, sent("a", 64), warm, sent("b", 64)])
