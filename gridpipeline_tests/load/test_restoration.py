"""The power flow check of restoration stages on the sample network."""

from __future__ import annotations

from gridpipeline.load.blocks import switchable_blocks
from gridpipeline.load.restoration import StageChecker, checked_stage
from gridpipeline.settings import get_settings
from gridpipeline.sources.network import load_network_model


def _setup():
    net = load_network_model(get_settings().network).net
    blk = switchable_blocks(net)
    lb = blk.load_block(net)
    t = blk.table
    loaded = [int(b) for b in t.index[t.switchable & t.feeding_switch.notna()] if (lb == b).any()]
    return net, blk, loaded


def test_a_stage_at_its_load_passes_and_an_impossible_pickup_is_split_then_held():
    net, blk, loaded = _setup()
    checker = StageChecker(net, blk)
    out = set(loaded[:4])
    stage = loaded[:4]
    normal = {b: 0.05 for b in stage}
    c = checker.check(out, stage, normal, clpu=2.0)
    assert c.ok and c.pickup_mw > 0 and not c.violations
    now, later, held, checks = checked_stage(checker, out, stage, normal, 2.0)
    assert now == stage and not later and not held and len(checks) == 1
    # one block with an absurd pre-outage load: the stage is halved until the others pass, and that block is held
    absurd = {**normal, stage[1]: 80.0}
    now, later, held, checks = checked_stage(checker, out, stage, absurd, 2.0)
    assert stage[1] not in now and now and not checks[0]["ok"] and checks[0]["violations"]
    # every block is restored by some later stage or held, none is lost
    rest = set(now) | {b for p in later for b in p} | set(held)
    assert rest == set(stage)
    # checked alone, the absurd block is held for an operator
    now, later, held, checks = checked_stage(checker, out, [stage[1]], absurd, 2.0)
    assert now == [] and held == [stage[1]] and "limit" in checks[0]["violations"][0]
    # the network model is not changed by the checks
    assert float(net.load.p_mw.sum()) == float(load_network_model(get_settings().network).net.load.p_mw.sum())


def test_checks_run_on_the_estimated_state_when_there_is_one_and_say_so():
    """With an estimated state the loads and generators in service run at it (here: half the rated load, the
    generators at their model values), so the same stage loads the grid less than on rated values; the check records its basis,
    and without a state it is back on rated values."""
    import pandas as pd

    net, blk, loaded = _setup()
    checker = StageChecker(net, blk)
    stage, out = loaded[:2], set(loaded[:2])
    mw = {b: 0.3 for b in stage}
    rated = checker.check(out, stage, mw, clpu=2.0)
    assert rated.basis == "rated loads" and rated.as_dict()["basis"] == "rated loads"
    sc = net.load["scaling"].fillna(1.0) if "scaling" in net.load else 1.0
    inj = pd.concat([
        pd.DataFrame({"element_type": "load", "element_id": net.load.index, "p_mw": 0.5 * net.load.p_mw * sc,
                      "q_mvar": 0.5 * net.load.q_mvar * sc}),
        pd.DataFrame({"element_type": "sgen", "element_id": net.sgen.index, "p_mw": net.sgen.p_mw,
                      "q_mvar": net.sgen.q_mvar})])
    checker.set_state(inj, "2026-12-05 22:00:00")
    est = checker.check(out, stage, mw, clpu=2.0)
    assert est.basis == "estimated state at 2026-12-05 22:00:00"
    assert est.max_loading_percent < rated.max_loading_percent
    assert est.pickup_mw == rated.pickup_mw  # the stage's own pickup is the pre-outage load either way
    checker.set_state(None)
    again = checker.check(out, stage, mw, clpu=2.0)
    assert again.basis == "rated loads" and again.max_loading_percent == rated.max_loading_percent
