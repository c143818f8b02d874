"""The response table and the frequency watch, by hand; the response_table asset on the sample."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from gridpipeline.load.response import (
    STAGES,
    FrequencyWatch,
    Reading,
    ResponseTable,
    blocks_for_deficit,
    build_table,
    merit_order,
    reserve_for,
)

T = datetime(2026, 6, 15, 18, 0)


def _blocks() -> pd.DataFrame:
    # 0 source; 1 (tier 4) feeds 2 (tier 4) and 3 (tier 1, protected) -> 1 may not be shed;
    # 4 (tier 3) feeds 5 (tier 4); 6 (tier 4) exports; 7 (tier 4), 8 (tier 2)
    return pd.DataFrame({
        "tier": [4, 4, 4, 1, 3, 4, 4, 4, 2],
        "mw": [0.0, 1.0, 2.0, 3.0, 1.5, 0.5, -0.4, 1.0, 2.5],
        "voll": [0, 1e4, 1e4, 2e5, 2.5e4, 1e4, 1e4, 1e4, 1.5e4],
        "sheddable": [False, False, True, False, True, True, False, True, True],
        "parent": [np.nan, 0, 1, 1, 0, 4, 0, 0, 0],
        "feeding_switch": [np.nan, 11, 12, 13, 14, 15, 16, 17, 18],
    }, index=range(9))


def test_merit_order_least_critical_first_subtrees_once_and_never_protected_or_exporting():
    o = merit_order(_blocks())
    assert list(o.block_id) == [2, 5, 7, 4, 8]  # tier 4 by VOLL and rotation, then 3 (its child 5 taken), then 2
    row4 = o.set_index("block_id").loc[4]
    assert row4.mw == pytest.approx(1.5)  # its child 5 was counted already
    assert not {1, 3, 6} & set(o.block_id)
    # rotation: the block out most recently goes last within its tier
    o2 = merit_order(_blocks(), last_out={2: T})
    assert list(o2.block_id[:3]) == [5, 7, 2]


def test_stages_take_their_share_in_order_and_deficits_use_the_same_list():
    b = _blocks()
    t = build_table(b, {"B1": 0.5}, T, "rated")
    total = b.mw.clip(lower=0).sum()
    assert t.load_mw == pytest.approx(total)
    first = t.stages.iloc[0]
    assert first.threshold_hz == 49.0 and first.target_mw == pytest.approx(0.075 * total)
    # 7.5 % of 11.5 MW = 0.86 MW: the battery first, half of it (0.43 MW), then block 5 (0.5 MW); block 2
    # (2 MW) would overshoot by more than half
    assert first.batteries == {"B1": pytest.approx(0.4312, abs=1e-4)} and first.blocks == [5]
    assert first.mw == pytest.approx(0.93125, abs=1e-4)
    assert t.stages.iloc[1].blocks == [7] and t.stages.iloc[1].batteries == {"B1": pytest.approx(0.0688, abs=1e-4)}
    # nothing fits stage 3: the smallest block of the tier left rather than stopping short
    assert t.stages.iloc[2].blocks == [2]
    no_batt = build_table(b, {}, T, "rated")
    assert no_batt.stages.iloc[0].blocks == [5, 7]
    assert blocks_for_deficit(t, 2.6) == [2, 5, 7]
    assert blocks_for_deficit(t, 1.0, skip={2}) == [5, 7]
    assert reserve_for(t, {2, 5}) == [7, 4, 8]
    back = ResponseTable.from_json(json.loads(json.dumps(t.to_json(), default=str)))
    assert back.stages.blocks.iloc[0] == [5] and back.stages.batteries.iloc[0] == first.batteries


def _r(sec: float, hz: float, q: str = "good") -> Reading:
    return Reading(T + timedelta(seconds=sec), hz, q)


def test_the_watch_acts_once_per_stage_flags_bad_readings_and_ends_events():
    w = FrequencyWatch()
    assert w.update(_r(0, 49.95)).acts == []
    assert "quality invalid" in w.update(_r(0.5, float("nan"), "invalid")).flag
    spike = w.update(_r(1.0, 47.0))
    assert spike.acts == [] and "spike" in spike.flag
    r = w.update(_r(1.5, 49.9))  # the spike was not confirmed
    assert r.acts == [] and r.flag is None
    r = w.update(_r(2.0, 48.95))
    assert r.acts == [1] and r.event is not None
    ev = r.event
    assert w.update(_r(2.2, 48.97)).acts == []  # stage 1 acts once
    assert w.update(_r(2.6, 48.75)).acts == [2]
    # a fast fall that two readings confirm is acted on (not a spike): both stages 3 and 4 at once
    assert w.update(_r(3.0, 47.9)).flag is not None
    r = w.update(_r(3.2, 47.95))
    assert sorted(r.acts) == [3, 4, 5, 6] and r.event == ev
    for k, hz in enumerate(np.linspace(48.5, 49.9, 8)):
        w.update(_r(4 + k, hz))
    end = None
    for k in range(70):
        end = end or w.update(_r(20 + k, 49.95)).ended
    assert end == ev and w.event is None
    assert w.update(_r(200, 48.9)).acts == [1]  # a new event acts again
    assert len(STAGES) == 6 and STAGES[0][0] == 49.0 and STAGES[-1][0] == 48.0


def test_response_table_asset_uses_the_estimated_state_and_writes_the_responders_file(gp_home):
    from dagster import materialize

    from gridpipeline.grid import store as gstore
    from gridpipeline.load.assets import response_table
    from gridpipeline.load.response import table_path
    from gridpipeline.settings import get_settings
    from gridpipeline.sources.resources import NetworkModelResource, SettingsResource
    from gridpipeline.store import connect
    from gridpipeline.world.model import load_world

    s = get_settings()
    world = load_world("sample")
    ts = datetime(2026, 6, 15, 23, 0)
    inj = world.injections_at(pd.DatetimeIndex([pd.Timestamp(ts, tz="UTC")]))
    rows = pd.concat([pd.DataFrame({"snapshot_ts": ts, "element_type": t, "element_id": idx, "p_mw": p[0],
                                    "q_mvar": 0.0, "energized": True})
                      for t, p, idx in (("load", inj.load_p_mw, inj.load_index), ("sgen", inj.sgen_p_mw, inj.sgen_index))])
    with connect(s.live_db_path) as con:
        gstore.ensure_grid_schema(con)
        con.register("_d", rows)
        con.execute("INSERT INTO grid.state_injection SELECT * FROM _d")
        con.execute("INSERT INTO grid.state_summary (snapshot_ts, window_start, converged) VALUES (?, ?, true)", [ts, ts])
    out = materialize([response_table], resources={"settings": SettingsResource.from_settings(s),
                                                    "network": NetworkModelResource(path=str(s.network))})
    assert out.success
    meta = out.get_asset_materialization_events()[0].materialization.metadata
    assert meta["basis"].value == "estimated" and meta["sheddable_blocks"].value > 0
    t = ResponseTable.from_json(json.loads(table_path(s).read_text()))
    assert t.basis == "estimated" and len(t.stages) == 6
    # the table's load is the state's net load over the blocks (exporting blocks count 0)
    from gridpipeline.load.priorities import priorities_for
    from gridpipeline.load.response import block_net_load

    pr = priorities_for(world.net, s.customers, s.load_policy)
    expect = block_net_load(pr, world.net, rows).clip(lower=0).sum()
    assert expect > 0 and t.load_mw == pytest.approx(expect, abs=1e-3)
    assert t.load_mw < float(inj.load_p_mw.sum()) + 1e-9  # generation nets out


def test_the_dispatcher_leaves_batteries_the_responder_holds_until_the_event_is_over():
    from gridpipeline.storage.vpp import responder_holds

    hold = {"kind": "critical_response", "id": "c1", "created_at": T,
            "body": {"battery_hold": {"setpoints_mw": {"B1": 0.4}, "until": (T + timedelta(minutes=15)).isoformat()}}}
    assert responder_holds([hold], T + timedelta(minutes=1)) == {"B1": (0.4, "c1")}
    assert responder_holds([hold], T + timedelta(minutes=16)) == {}  # the hold ran out
    over = {"kind": "critical_response", "id": "c2", "created_at": T, "body": {"event_ended": True,
                                                                              "battery_hold_released": True}}
    assert responder_holds([hold, over], T + timedelta(minutes=1)) == {}
