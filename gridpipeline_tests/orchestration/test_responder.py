"""The critical-event responder against the simulator's IEC 104 outstation on loopback.

An under-frequency event (a loss of 6 % of the area's generation) in the simulated area: the
outstation sends the frequency spontaneously; the responder sheds the first stage's blocks by
select-before-operate commands the world obeys, records the response and the frequency recovers in
the simulation, which counts the shed load. Bad readings (NaN, a spike) are flagged and not acted
on; a refused switch is replaced by the next block; a restart does not act twice."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from gridpipeline.ledger.store import Ledger
from gridpipeline.load.priorities import priorities_for
from gridpipeline.load.response import block_net_load, build_table, table_blocks
from gridpipeline.settings import get_settings
from gridpipeline.telemetry.registry import PlacementPolicy, build_registry
from gridpipeline.world.model import load_world
from gridpipeline.world.scada import FaultConfig, ScadaSimulator


_CLIENTS: list = []


def _responder(**kw):
    """A responder whose IEC 104 client the fixture stops, pass or fail (a c104 thread left running
    crashes the interpreter at exit)."""
    from gridpipeline.orchestration.responder import Responder

    r = Responder(get_settings(), report=False, **kw)
    _CLIENTS.append(r.client)
    return r


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@pytest.fixture
def field(gp_home):
    from gridpipeline.load.response import write_table
    from gridpipeline.world.frequency import AreaParams
    from gridpipeline.world.outstation import Outstation

    s = get_settings()
    world = load_world("sample")
    reg = build_registry(world.net, world.zones, PlacementPolicy())
    sim = ScadaSimulator(world, reg, s.landing, faults=FaultConfig.none(), truth_path=s.truth,
                         events_path=s.home / "world" / "events.json")
    port = _free_port()
    # a fast area (low inertia) so the test's event crosses 49.0 Hz within a couple of seconds
    out = Outstation(sim, "127.0.0.1", port, area=AreaParams(inertia_s=2.0, governor_s=30.0))
    out.start()
    # the table as the response_table asset builds it, on the load now (the harness's stand-in for the
    # estimated state)
    pr = priorities_for(world.net, s.customers, s.load_policy)
    inj = world.injections_at(pd.DatetimeIndex([pd.Timestamp(_now(), tz="UTC")]))
    rows = pd.concat([pd.DataFrame({"element_type": t, "element_id": idx, "p_mw": p[0]})
                      for t, p, idx in (("load", inj.load_p_mw, inj.load_index), ("sgen", inj.sgen_p_mw, inj.sgen_index))])
    blocks, basis = table_blocks(pr, world.net, block_net_load(pr, world.net, rows))
    write_table(s, build_table(blocks, {}, _now(), basis))
    yield sim, out, port
    while _CLIENTS:
        _CLIENTS.pop().stop()
    out.stop()
    sim.close()


def _events(events: list[dict]) -> None:
    p = get_settings().home / "world" / "events.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(events))
    tmp.replace(p)


def _run_until(resp, cond, timeout_s: float) -> list[dict]:
    out = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        out += resp.drain(0.2)
        if cond(out):
            break
    return out


def test_under_frequency_is_shed_recorded_and_the_frequency_recovers(field):
    sim, out, port = field
    s = get_settings()
    resp = _responder(port=port)
    resp.start()
    assert resp.wait_connected()
    start = _now()
    _events([{"kind": "generation_loss", "start": start.isoformat(), "share": 0.06, "minutes": 10}])
    acts = _run_until(resp, lambda a: len(a) >= 1, 20.0)
    assert acts, "no response to the under-frequency event"
    a = acts[0]
    assert a["stages"][0] == 1 and a["trigger"]["hz"] < 49.0
    opened = [c for c in a["commands"] if c["ok"]]
    # the latency (reading sent -> record committed) is recorded; its figure is bench responder's, not a test's
    assert opened and a["latency_s"] > 0
    # the world obeyed: the switches are open in the outstation and the simulator's switch events (the
    # outstation confirms at once and switches within its next 0.1-s step)
    t0 = time.monotonic()
    while any(out.dyn.closed[c["switch"]] for c in opened) and time.monotonic() - t0 < 2.0:
        time.sleep(0.05)
    for c in opened:
        assert out.dyn.closed[c["switch"]] is False
        assert any(sw == c["switch"] and not closed for _, sw, closed in sim.switch_events)
    # protected blocks are never in the table
    pr = priorities_for(sim.world.net, s.customers, s.load_policy)
    assert not {c["block"] for c in opened} & set(pr.table.index[pr.table.protected])
    # the frequency recovers in the simulation: the local shed counts by the region's share
    time.sleep(3.0)
    relief = out.dyn.last["shed_mw"]
    assert relief > 0
    before = out.dyn.model.steady_state_df_hz(0.0)
    after = out.dyn.model.steady_state_df_hz(relief)
    assert after > before
    led = Ledger(s.ledger)
    rec = led.records(kind="critical_response")[0]
    assert rec["body"]["event"] == a["event"] and rec["mode"] == "automatic" and led.verify().ok
    # a restart in the middle of the event does not act on stage 1 again
    resp.client.stop()
    again = _responder(port=port)
    assert 1 in again.watch.done[a["event"]] and again.watch.event == a["event"]
    again.start()
    assert again.wait_connected()
    more = _run_until(again, lambda x: False, 2.0)
    assert all(1 not in m["stages"] for m in more)
    again.client.stop()


def test_bad_readings_are_flagged_and_a_refused_switch_is_replaced(field):
    sim, out, port = field
    s = get_settings()
    resp = _responder(port=port)
    resp.start()
    assert resp.wait_connected()
    table, _ = resp.table(_now())
    first = table.stages.blocks.iloc[0][0]
    bad_switch = int(table.order.set_index("block_id").switch[first])
    t = _now() + timedelta(seconds=1)
    _events([{"kind": "frequency_glitch", "start": t.isoformat(), "value": "nan"},
             {"kind": "frequency_glitch", "start": (t + timedelta(seconds=1)).isoformat(), "value": 47.5},
             {"kind": "switch_fault", "switch": bad_switch},
             {"kind": "generation_loss", "start": (t + timedelta(seconds=3)).isoformat(), "share": 0.06,
              "minutes": 10}])
    acts = _run_until(resp, lambda a: len(a) >= 1, 20.0)
    assert resp.stats.flagged >= 2  # the NaN and the spike
    assert {f["quality"] for f in resp.flags} >= {"invalid", "good"}
    assert any("spike" in f["why"] for f in resp.flags)
    assert acts and acts[0]["trigger"]["hz"] < 49.0 and acts[0]["trigger"]["hz"] > 48.0  # not the spike
    cmds = acts[0]["commands"]
    refused = [c for c in cmds if c["switch"] == bad_switch]
    assert refused and not refused[0]["ok"] and refused[0]["replaced_by"] is not None
    assert any(c["block"] == refused[0]["replaced_by"] and c["ok"] for c in cmds)
    resp.client.stop()


def test_after_the_event_the_blocks_are_restored_in_stages_highest_tier_first(field, monkeypatch):
    from gridpipeline.settings import reset_settings

    sim, out, port = field
    monkeypatch.setenv("GRIDPIPELINE_RESPONDER_RECOVERY_S", "2")
    monkeypatch.setenv("GRIDPIPELINE_RESPONDER_RESTORE_INTERVAL_S", "0.5")
    reset_settings()
    s = get_settings()
    resp = _responder(port=port)
    resp.start()
    assert resp.wait_connected()
    _events([{"kind": "generation_loss", "start": _now().isoformat(), "share": 0.06, "minutes": 0.1}])
    # until every block is back. A CI run on a loaded machine (2026-12-08) ended with one opened block
    # still out and no record kept to say why: a close not checked back in time (now commanded again,
    # the next test) or a stage's pickup dipping this low-inertia area into a new event (its end restores
    # what is still out). The message below now says which.
    done = _run_until(resp, lambda a: any(x.get("restoration") for x in a) and resp.restoring is None
                      and not resp.out, 60.0)
    acted = [a for a in done if not a.get("restoration")]
    restored = [a for a in done if a.get("restoration")]
    assert acted and restored, done
    opened = {c["block"] for a in acted for c in a["commands"] if c["ok"]}
    back = {b for a in restored for b in a["restored"]}
    led = Ledger(s.ledger)
    assert back == opened and not resp.out, (sorted(resp.out), resp.held, [
        (r["kind"], r["body"].get("summary"), r["body"].get("commands")) for r in led.records()
        if r["kind"] in ("critical_response", "restoration")])
    time.sleep(0.5)  # the outstation switches within its next 0.1-s step
    for a in acted:
        for c in a["commands"]:
            if c["ok"]:
                assert out.dyn.closed[c["switch"]] is True  # the world closed it again
    plan = [r for r in led.records(kind="critical_response") if r["body"].get("event_ended")]
    assert plan and plan[-1]["body"]["restoration"]["cold_load_pickup"]["factor"] == 2.0
    # each stage's pickup (cold-load factor x pre-outage load) stays within the margin, unless one block alone
    margin = plan[-1]["body"]["restoration"]["margin_mw"]
    for a in restored:
        assert a["pickup_mw"] <= margin + 1e-6 or len(a["restored"]) == 1
        assert a["hz_before"] >= 49.9
    resp.client.stop()
    # the interruptions and customer minutes from the ledger agree with the field's record of the switching
    from gridpipeline.load.reliability import (
        customer_interruptions,
        indices,
        interruptions_from_records,
        interruptions_from_switching,
        loads_table,
    )

    time.sleep(1.5)  # the outstation writes its switching record each second
    now = _now()
    recs = led.records(kind="critical_response") + led.records(kind="restoration")
    ours = interruptions_from_records(recs, now).set_index("block_id").sort_index()
    sw = sim._truth_con().cursor().execute(
        "SELECT ts, switch_id, closed FROM truth_switching WHERE result = 'accepted'").df()
    pr = priorities_for(sim.world.net, s.customers, s.load_policy)
    feeding = pr.blocks.table.feeding_switch.dropna()
    truth = interruptions_from_switching(sw, pd.Series(feeding.index, index=feeding.astype(int)), now)
    truth = truth.set_index("block_id").sort_index()
    assert list(ours.index) == list(truth.index) and not ours.still_out.any()
    dur = lambda f: (f.end - f.start).dt.total_seconds()  # noqa: E731
    assert (abs(dur(ours) - dur(truth)) < 1.0).all()  # the record is committed right after the switching
    loads = loads_table(pr, sim.world.net)
    cm = [indices(customer_interruptions(f.reset_index(), loads, pr.blocks.descendants), loads, sustained_min=0)
          .set_index("scope").loc["system"].customer_minutes for f in (ours, truth)]
    assert cm[0] == pytest.approx(cm[1], rel=0.1, abs=0.5)


def test_a_close_that_fails_in_restoration_is_tried_again_then_held_for_an_operator(field, monkeypatch):
    """Two blocks' switches refuse their close (a switch fault in the world): one is mended after its
    first refusal and comes back in a retry at the end of the restoration; the other keeps refusing
    and is held for an operator after 1 + RESTORE_RETRIES tries, recorded, its breaker still open.
    Before the retries, a failed close left its block out with nothing coming back to it."""
    from gridpipeline.orchestration.responder import RESTORE_RETRIES
    from gridpipeline.settings import reset_settings

    _, out, port = field
    monkeypatch.setenv("GRIDPIPELINE_RESPONDER_RECOVERY_S", "2")
    monkeypatch.setenv("GRIDPIPELINE_RESPONDER_RESTORE_INTERVAL_S", "1.5")
    reset_settings()
    s = get_settings()
    resp = _responder(port=port)
    resp.start()
    assert resp.wait_connected()
    loss = {"kind": "generation_loss", "start": _now().isoformat(), "share": 0.06, "minutes": 0.1}
    _events([loss])
    acts = _run_until(resp, lambda a: len(a) >= 1, 20.0)
    assert acts and not acts[0].get("restoration")
    cmds = [c for c in acts[0]["commands"] if c["ok"]]
    assert len(cmds) >= 2, acts[0]["commands"]
    mended, broken = cmds[0], cmds[-1]
    _events([loss, {"kind": "switch_fault", "switch": mended["switch"]},
             {"kind": "switch_fault", "switch": broken["switch"]}])

    def failed(a, block):
        return a.get("restoration") and any(c["block"] == block and not c["ok"] for c in a["commands"])

    done, t0, is_mended = list(acts), time.monotonic(), False
    while time.monotonic() - t0 < 60.0:
        done += resp.drain(0.1)
        if not is_mended and any(failed(a, mended["block"]) for a in done):
            _events([loss, {"kind": "switch_fault", "switch": broken["switch"]}])  # the crew mends one
            is_mended = True
        if broken["block"] in resp.held and resp.restoring is None:
            break
    restored = [a for a in done if a.get("restoration")]
    opened = {c["block"] for a in done if not a.get("restoration") for c in a["commands"] if c["ok"]}
    back = {b for a in restored for b in a["restored"]}
    assert is_mended and back == opened - {broken["block"]}, [(a["summary"], a["commands"]) for a in restored]
    assert resp.out == {broken["block"]} and resp.held == [broken["block"]]
    # the mended block: refused once, put at the end, back in the retry
    first = next(a for a in restored if failed(a, mended["block"]))
    assert mended["block"] in first["retry_later"] and "commanded again at the end" in first["summary"]
    assert any(mended["block"] in a["restored"] for a in restored[restored.index(first) + 1:])
    # the broken block: 1 + RESTORE_RETRIES refusals, then held, said so in the last record
    tries = [a for a in restored if failed(a, broken["block"])]
    assert len(tries) == 1 + RESTORE_RETRIES
    assert broken["block"] in tries[-1]["held_for_operator"] and "held for an operator" in tries[-1]["summary"]
    assert all(broken["block"] in a["retry_later"] for a in tries[:-1])
    time.sleep(0.5)
    assert out.dyn.closed[mended["switch"]] is True and out.dyn.closed[broken["switch"]] is False
    led = Ledger(s.ledger)
    assert any(broken["block"] in r["body"].get("held_for_operator", []) for r in led.records(kind="restoration"))
    assert led.verify().ok


def test_a_breaker_trip_is_recorded_as_an_outage_and_its_end_when_the_crew_closes_it(field):
    from gridpipeline.load.reliability import interruptions_from_records

    sim, out, port = field
    s = get_settings()
    resp = _responder(port=port)
    resp.start()
    assert resp.wait_connected()
    table, _ = resp.table(_now())
    first = table.order.iloc[0]
    sw = int(first.switch)
    time.sleep(0.5)  # the interrogation brings the breakers' present states
    _events([{"kind": "breaker_trip", "switch": sw, "start": _now().isoformat(), "minutes": 0.05}])
    got = _run_until(resp, lambda a: sum(1 for x in a if x.get("outage")) >= 2, 20.0)
    trip, back = [x for x in got if x.get("outage")][:2]
    assert trip["tripped"] and trip["switch"] == sw and int(first.block_id) in trip["blocks"]
    assert trip["loaded"] == (trip["mw"] > 1e-3) and "tripped" in trip["summary"]
    assert not back["tripped"] and back["blocks"] == trip["blocks"]
    assert not resp.out  # the responder opened nothing: the field did
    led = Ledger(s.ledger)
    recs = led.records(kind="outage")
    assert len(recs) == 2 and led.verify().ok
    intr = interruptions_from_records(recs, _now())
    assert set(intr.block_id) == set(trip["blocks"]) and not intr.still_out.any()
    secs = (intr.end - intr.start).dt.total_seconds()
    assert (abs(secs - 3.0) < 1.0).all()  # 0.05 minutes in the field
    resp.client.stop()


def test_an_approved_shed_schedule_is_switched_step_by_step_and_ends_with_its_blocks_back(field):
    sim, out, port = field
    s = get_settings()
    resp = _responder(port=port)
    resp.start()
    assert resp.wait_connected()
    table, _ = resp.table(_now())
    b1, b2 = (int(b) for b in table.order.block_id.iloc[:2])
    sw1 = int(table.order.set_index("block_id").switch[b1])
    led = Ledger(s.ledger)
    start = pd.Timestamp(_now()) - pd.Timedelta(minutes=1)  # step 0 covers the next four minutes
    body = {"summary": "test schedule", "horizon": {"start": str(start), "steps": 3, "step_minutes": 5},
            "out_by_step": [[b1], [b1, b2], []]}
    pending = led.append("shed", body, mode="approve", actor="dispatcher")
    assert resp.shed_tick() is None  # waiting for approval: nothing is switched
    led.approve(pending.id, "ana")
    done = resp.shed_tick()
    assert done["opened"] == [b1] and done["schedule"] == pending.id and resp.shed_out == {b1: sw1}
    t0 = time.monotonic()
    while out.dyn.closed[sw1] and time.monotonic() - t0 < 2.0:
        time.sleep(0.05)
    assert out.dyn.closed[sw1] is False  # the world obeyed
    assert resp.shed_tick() is None  # nothing new due
    # a restart knows what the schedule left out
    again = _responder(port=port)
    assert again.shed_out == {b1: sw1}
    # the next step's blocks, then the end of the schedule: every block back
    nxt = resp.shed_tick(start.to_pydatetime() + timedelta(minutes=6))
    assert nxt["opened"] == [b2]
    end = resp.shed_tick(start.to_pydatetime() + timedelta(minutes=16))
    assert sorted(end["closed"]) == sorted([b1, b2]) and not resp.shed_out
    kinds = [r["kind"] for r in led.records()]
    assert kinds.count("shed_switching") == 3 and led.verify().ok
    resp.client.stop()


def test_a_feeder_above_its_emergency_rating_is_relieved_by_the_blocks_it_feeds_and_restored_after(field, monkeypatch):
    """Loading readings of a feeder-head line above its emergency rating for 2 s: the responder opens blocks fed
    through it (least critical first) until their load covers the excess over the normal rating, over IEC 104
    with the world obeying; one NaN reading is flagged, not acted on; once the loading has stayed below 90 %
    of the normal rating, the event ends and its blocks are restored in stages."""
    from gridpipeline.load.overload import LoadingReading, fed_through
    from gridpipeline.settings import reset_settings

    sim, out, port = field
    monkeypatch.setenv("GRIDPIPELINE_RESPONDER_RESTORE_INTERVAL_S", "0.5")
    reset_settings()
    resp = _responder(port=port)
    resp.start()
    assert resp.wait_connected(10)
    line = ("line", 175)
    t = _now()
    assert resp.handle(LoadingReading(line, t, float("nan"), "good", time.time())) is None
    assert resp.handle(LoadingReading(line, t, 150.0, "good", time.time())) is None  # not yet 2 s above
    rec = resp.handle(LoadingReading(line, t + timedelta(seconds=2.1), 150.0, "good", time.time()))
    assert rec is not None and rec["trigger"]["kind"] == "emergency rating"
    rating = rec["trigger"]["rating_mva"]
    assert rec["need_mw"] == pytest.approx((150.0 - 95.0) / 100 * rating, rel=1e-3)
    opened = [c["block"] for c in rec["commands"] if c["ok"]]
    assert opened and set(opened) <= set(fed_through(resp.blocks, resp.net, line))
    # the world obeyed: the blocks' feeding switches are open in the outstation
    for c in rec["commands"]:
        if c["ok"]:
            assert out.dyn.closed[c["switch"]] is False
    assert resp.stats.flagged >= 1
    # still above 8 s later: no second step yet (it comes after 10 s)
    assert resp.handle(LoadingReading(line, t + timedelta(seconds=8), 130.0, "good", time.time())) is None
    # below 90 % of the normal rating for a minute: the event ends and its blocks are restored
    for k in range(0, 62, 2):
        resp.handle(LoadingReading(line, t + timedelta(seconds=20 + k), 40.0, "good", time.time()))
    assert resp.restoring is not None and {b for st in resp.restoring["stages"] for b in st} == set(opened)
    got = _run_until(resp, lambda o: resp.restoring is None, 30)
    restored = [b for r in got if r.get("restoration") for b in r["restored"]]
    assert sorted(restored) == sorted(opened), [(r.get("summary"), r.get("commands"), r.get("power_flow"))
                                                for r in got if r.get("restoration")]
    led = Ledger(get_settings().ledger)
    ends = [r for r in led.records(kind="critical_response") if r["body"].get("event_ended")]
    assert ends and "below" in ends[-1]["body"]["summary"]
    # the cause is still there: over again soon after the restoration, relieved again, and then locked out
    t2 = t + timedelta(seconds=200)
    resp.handle(LoadingReading(line, t2, 150.0, "good", time.time()))
    again = resp.handle(LoadingReading(line, t2 + timedelta(seconds=2.1), 150.0, "good", time.time()))
    second = {c["block"] for c in again["commands"] if c["ok"]}
    assert second
    res = [resp.handle(LoadingReading(line, t2 + timedelta(seconds=20 + k), 40.0, "good", time.time()))
           for k in range(0, 62, 2)]
    (lock,) = [x for x in res if x]
    assert lock["lockout"] and set(lock["held_for_operator"]) == second and resp.restoring is None
    assert second <= resp.out and second <= set(resp.held)


def test_an_operator_restores_blocks_the_power_flow_held_by_a_ledger_request(field):
    """A block held out (here: opened for an overload, its restoration held for an operator) comes back on an
    operator's ``restore_request``: the responder closes its switch over IEC 104 (the world obeys), records
    the restoration referring to the request with who decided and the power flow it saw, carries a request
    out once, and says which requested blocks it did not hold out."""
    from gridpipeline.load.cli import load_app
    from gridpipeline.load.overload import LoadingReading
    from typer.testing import CliRunner

    sim, out, port = field
    resp = _responder(port=port)
    resp.start()
    assert resp.wait_connected(10)
    line = ("line", 175)
    t = _now()
    resp.handle(LoadingReading(line, t, 150.0, "good", time.time()))
    rec = resp.handle(LoadingReading(line, t + timedelta(seconds=2.1), 150.0, "good", time.time()))
    opened = [c for c in rec["commands"] if c["ok"]]
    assert opened and all(out.dyn.closed[c["switch"]] is False for c in opened)
    b = opened[0]["block"]
    resp.held.append(b)
    other = max(resp.blocks.table.index) + 1000  # a block it does not hold out
    res = CliRunner().invoke(load_app, ["restore", "--block", str(b), "--block", str(other), "--operator", "ana",
                                        "--reason", "crew checked the feeder"])
    assert res.exit_code == 0, res.output
    (done,) = resp.restore_requests()
    assert done["restored"] == [b] and done["not_held_out"] == [other] and done["requested_by"] == "ana"
    assert done["power_flow"] and b not in resp.out and b not in resp.held
    t0 = time.monotonic()
    while out.dyn.closed[opened[0]["switch"]] is False and time.monotonic() - t0 < 2.0:
        time.sleep(0.05)
    assert out.dyn.closed[opened[0]["switch"]] is True  # the world closed it
    led = Ledger(get_settings().ledger)
    (req,) = led.records(kind="restore_request")
    assert led.records(kind="restoration")[-1]["ref"] == req["id"] and req["actor"] == "ana"
    assert resp.restore_requests() == []  # carried out once


def test_a_loss_of_local_generation_discharges_the_batteries(field):
    """A sudden drop of local generation: the batteries the table lists add the lost power to what they give
    now, over Modbus to the field's BMS (the world's units then hold the setpoints), shared by headroom."""
    from dataclasses import replace

    from gridpipeline.common.field_map import endpoints
    from gridpipeline.orchestration.responder import GenerationReading
    from gridpipeline.sources.bms import BmsClient

    sim, out, port = field
    plan = sim.serve_field("127.0.0.1", 0)
    ids = [u.battery_id for u in sim.fleet.batteries]
    bat = [e.__class__(e.device_id, e.host, plan["batteries"][0]["port"], e.unit)
           for e in endpoints(ids, "127.0.0.1", 1)]
    bms = BmsClient(bat, timeout_s=2.0, stale_s=60.0)
    resp = _responder(port=port, bms=bms)
    t = _now()
    table = replace(resp.table(t)[0], batteries={ids[0]: 1.0, ids[1]: 4.0})
    resp.table = lambda now: (table, [])
    assert resp.handle(GenerationReading(t, 5.0, "good", time.time())) is None
    assert resp.handle(GenerationReading(t + timedelta(seconds=1), float("nan"), "invalid", time.time())) is None
    rec = resp.handle(GenerationReading(t + timedelta(seconds=3), 2.0, "good", time.time()))
    assert rec["trigger"]["kind"] == "loss of generation" and rec["trigger"]["lost_mw"] == pytest.approx(3.0)
    sent = {k: v["mw"] for k, v in rec["batteries"].items()}
    assert all(v["ok"] for v in rec["batteries"].values()), rec["batteries"]
    now_mw = {u.battery_id: u.p_mw for u in sim.fleet.batteries[:2]}
    room = {k: max(c - now_mw[k], 0.0) for k, c in ((ids[0], 1.0), (ids[1], 4.0))}
    added = sum(sent[k] - now_mw[k] for k in sent)
    assert added == pytest.approx(min(3.0, sum(room.values())), abs=2e-3)
    for u in sim.fleet.batteries[:2]:  # the world's units hold what was written
        assert u.commanded() == pytest.approx(sent[u.battery_id], abs=1e-3)
    assert rec["battery_hold"]["setpoints_mw"] == pytest.approx(sent)
    # the same loss is not acted on twice
    assert resp.handle(GenerationReading(t + timedelta(seconds=4), 2.0, "good", time.time())) is None
    # the event's end releases the batteries at once, to what the dispatcher last set (0 MW where it
    # set nothing), and the dispatcher plans them again
    from gridpipeline.storage.vpp import responder_holds

    resp.ledger.append("setpoint_write", {"summary": "dispatcher", "setpoints_mw": {ids[0]: 0.25}},
                       mode="automatic", actor="dispatcher")
    resp.poll_battery_base()
    assert resp.battery_base == {}  # not while the responder holds them
    held = dict(resp.battery_sp)
    resp.battery_sp = {}
    resp.poll_battery_base()
    assert resp.battery_base == {ids[0]: 0.25}
    resp.battery_sp = held
    resp._close_event(rec["event"], None, why="test")
    end = resp.ledger.records(kind="critical_response")[-1]["body"]
    assert end["battery_hold_released"] and set(end["battery_release"]) == set(held)
    assert all(v["ok"] for v in end["battery_release"].values())
    for u in sim.fleet.batteries[:2]:
        assert u.commanded() == pytest.approx(0.25 if u.battery_id == ids[0] else 0.0, abs=1e-3)
    assert responder_holds(resp.ledger.records(kind="critical_response"), _now()) == {}
    # the base the next event adds to is what the table's batteries measure now, over Modbus, and it wins
    # over the dispatcher's record
    st = resp.table(_now())[0]
    stages = st.stages.copy()
    stages["batteries"] = [{ids[0]: 0.5}] + [None] * (len(stages) - 1)
    resp._table = replace(st, stages=stages)
    measured = resp.measure_battery_base()
    assert set(measured) == {ids[0]} and np.isfinite(measured[ids[0]])
    resp._measured_base = measured
    resp.poll_battery_base()
    assert resp.battery_base == measured
    bms.close()
