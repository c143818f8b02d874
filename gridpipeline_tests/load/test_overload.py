"""The emergency-rating and loss-of-generation watches (load/overload.py), on hand-made readings."""

from datetime import datetime, timedelta

import pandas as pd
import pytest

from gridpipeline.load.overload import (
    GenerationWatch,
    LoadingReading,
    OverloadWatch,
    battery_relief,
    pick_blocks,
    relief_mw,
)

T = datetime(2026, 12, 3, 17, 0)
E = ("trafo", 1)


def _r(s, pct, q="good"):
    return LoadingReading(E, T + timedelta(seconds=s), pct, q)


def test_an_overload_acts_after_two_seconds_again_after_ten_and_ends_after_a_minute_below():
    w = OverloadWatch(emergency_pct=120, clear_pct=90, persist_s=2, again_s=10, clear_s=60)
    assert not w.update(_r(0, 130)).act
    assert w.update(_r(1, 125)).act is False
    first = w.update(_r(2, 125))
    assert first.act and first.event.startswith("overload-trafo1-")
    assert not w.update(_r(5, 140)).act  # acted 3 s ago
    assert w.update(_r(12, 140)).act  # still above 10 s later: another step
    assert w.update(_r(13, 100)).ended is None  # below the emergency rating, above the clearing level
    assert w.update(_r(14, 80)).ended is None
    assert w.update(_r(73, 85)).ended is None  # below for 59 s
    assert w.update(_r(74, 85)).ended == first.event
    assert w.events == {}


def test_a_dip_below_the_emergency_rating_restarts_the_two_seconds_and_bad_readings_are_flagged():
    w = OverloadWatch(persist_s=2)
    w.update(_r(0, 130))
    w.update(_r(1, 110))
    assert not w.update(_r(2, 130)).act
    assert w.update(_r(3, float("nan"))).flag
    assert w.update(_r(3.5, 500, "invalid")).flag
    assert w.update(_r(4, 130)).act


def test_relief_is_the_excess_over_the_normal_rating_less_a_margin():
    assert relief_mw(150, 10.0) == pytest.approx(5.5)  # (150 - 95) % of 10 MVA
    assert relief_mw(80, 10.0) == 0.0


def test_blocks_are_picked_least_critical_first_among_those_fed_through_until_the_relief_is_covered():
    order = pd.DataFrame({"block_id": [5, 6, 7, 8], "tier": [4, 4, 3, 2], "mw": [0.5, 0.0, 1.0, 2.0]})
    assert pick_blocks(order, [5, 6, 7, 8], 1.2, set()) == [5, 7]
    assert pick_blocks(order, [6, 7, 8], 1.2, set()) == [7, 8]  # 5 is not fed through; 6 carries nothing
    assert pick_blocks(order, [5, 7, 8], 1.2, {7}) == [5, 8]


def test_a_loss_of_generation_is_seen_once_and_the_batteries_share_it():
    g = GenerationWatch(loss_mw=0.5, loss_share=0.2, window_s=10)
    assert g.update(T, 4.0) == (0.0, None)
    assert g.update(T + timedelta(seconds=1), 3.9)[0] == 0.0  # noise
    lost, _ = g.update(T + timedelta(seconds=3), 1.0)
    assert lost == pytest.approx(3.0)
    assert g.update(T + timedelta(seconds=4), 0.5)[0] == 0.0  # the same event
    assert g.update(T + timedelta(seconds=5), float("nan"))[1]
    # a decline over minutes (a cloud front: 60 % of 4 MW in 2 minutes) is no loss of generation
    g2 = GenerationWatch()
    assert all(g2.update(T + timedelta(seconds=k), 4.0 - 0.02 * k)[0] == 0.0 for k in range(120))
    assert battery_relief({"a": 1.0, "b": 3.0, "c": 0.0}, 2.0) == {"a": 0.5, "b": 1.5}
    assert battery_relief({"a": 1.0}, 5.0) == {"a": 1.0}


def test_an_overloads_end_leaves_an_under_frequency_events_batteries_held():
    from gridpipeline.storage.vpp import responder_holds

    until = (T + timedelta(minutes=15)).isoformat()
    hold = {"kind": "critical_response", "id": "h", "body": {"battery_hold": {"setpoints_mw": {"B": 1.0},
                                                                             "until": until}}}
    over_end = {"kind": "critical_response", "id": "o", "body": {"event_ended": True, "ended_kind": "emergency rating",
                                                                 "battery_hold_released": False}}
    freq_end = {"kind": "critical_response", "id": "f", "body": {"event_ended": True, "ended_kind": "under-frequency"}}
    assert responder_holds([hold, over_end], T) == {"B": (1.0, "h")}
    assert responder_holds([hold, over_end, freq_end], T) == {}
    old_style = {"kind": "critical_response", "id": "x", "body": {"event_ended": True}}  # records before ended_kind
    assert responder_holds([hold, old_style], T) == {}


def test_a_backwards_feeder_head_line_is_followed_downstream():
    import pandapower as pp

    from gridpipeline.common.iec104 import feeder_heads
    from gridpipeline.load.overload import downstream_bus
    from gridpipeline.settings import PROJECT_ROOT

    net = pp.from_json(str(PROJECT_ROOT / "data" / "sample_grid" / "network.json"))
    lv = set(net.trafo.lv_bus.astype(int))
    for line in feeder_heads(net):  # every feeder head leaves a transformer's busbar, whichever end it names
        d = downstream_bus(net, line)
        assert d not in lv, line
        assert d in (int(net.line.from_bus.at[line]), int(net.line.to_bus.at[line]))
