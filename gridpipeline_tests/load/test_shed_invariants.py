"""Invariants of the shed schedule and the restoration stages, over random policies and deficits
(Hypothesis): protected loads are never shed; every block of a less critical tier served while a more
critical one is shed is recorded with the rule that forced it; every break of a contract limit or the
longest outage is recorded, and none happens when the marginal tier can carry the deficit within its
limits; each restoration stage stays within the margin."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridpipeline.load.response import restoration_stages
from gridpipeline.load.shed import ShedProblem, effective_sheddable, solve_shed

DT = 5 / 60


@st.composite
def problems(draw):
    B = draw(st.integers(3, 9))
    T = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    net = rng.uniform(0.05, 1.0, B)
    net[rng.random(B) < 0.1] *= -0.5  # a block full of PV exports
    tier = rng.integers(1, 5, B)
    parent = np.array([-1] + [int(rng.integers(-1, b)) if rng.random() < 0.4 else -1 for b in range(1, B)])
    sheddable = (tier > 1) & (rng.random(B) < 0.9)  # tier 1 protected
    capacity = float(np.clip(net, 0, None)[sheddable].sum())
    deficit = rng.uniform(0.0, 1.1, T) * capacity
    limits = draw(st.booleans())
    return ShedProblem(
        block_ids=np.arange(B) + 100, net_mw=np.repeat(net[:, None], T, 1),
        load_mw=np.repeat(np.abs(net)[:, None], T, 1) + 0.1, voll=rng.uniform(5e3, 5e4, B), tier=tier,
        sheddable=sheddable, parent=parent, deficit_mw=deficit, dt_h=DT,
        max_outage_steps=rng.integers(1, 4, B) if limits else None,
        interruptions_left=rng.integers(-1, 2, B) if limits else None,
        min_off_steps=int(rng.integers(1, 3)) if limits else 1)


def _tier_breaks(p: ShedProblem, shed: np.ndarray) -> set[tuple[int, int]]:
    out = set()
    for t in range(p.shape[1]):
        s = shed[:, t] > 0.5
        if s.any():
            worst = p.tier[s].min()
            out |= {(int(p.block_ids[b]), t) for b in np.flatnonzero(~s & (p.tier > worst))}
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_the_schedule_keeps_the_order_of_precedence_or_records_what_forced_it(p):
    r = solve_shed(p, time_limit_s=20.0)
    # 1. protected loads (and the blocks above them) are never shed
    assert r.shed[~effective_sheddable(p)].sum() == 0
    # 3. balance: what is not shed is reported as unserved, never hidden
    got = (p.net_mw * r.shed).sum(axis=0)
    assert np.all(got + r.unserved_deficit_mw >= p.deficit_mw - 1e-6)
    # 4. tier order: every less critical block served while a more critical one is shed is recorded
    recorded = {(v["block"], v["step"]) for v in r.violations if v["rule"].startswith("tier order")}
    assert _tier_breaks(p, r.shed) <= recorded
    assert all(v.get("forced_by") for v in r.violations)
    # 5. contract limits and the longest outage: every break is recorded
    if p.max_outage_steps is not None:
        run, over = np.zeros(p.shape[0]), set()
        for t in range(p.shape[1]):
            run = np.where(r.shed[:, t] > 0.5, run + 1, 0)
            over |= {int(p.block_ids[b]) for b in np.flatnonzero(run > p.max_outage_steps)}
        assert over <= {v["block"] for v in r.violations if v["rule"] == "longest outage"}
        starts = np.clip(np.diff(np.concatenate([np.zeros((p.shape[0], 1)), r.shed], 1), axis=1), 0, None).sum(1)
        broke = {int(p.block_ids[b]) for b in np.flatnonzero((p.interruptions_left >= 0) & (starts > p.interruptions_left))}
        assert broke <= {v["block"] for v in r.violations if v["rule"] == "contract interruptions"}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**31 - 1))
def test_no_limit_gives_way_when_the_least_critical_tier_carries_the_deficit_within_its_limits(seed):
    rng = np.random.default_rng(seed)
    B, T = 8, 3
    net = rng.uniform(0.2, 1.0, B)
    tier = np.array([2, 2, 3, 3, 4, 4, 4, 4])
    # the deficit fits one tier-4 block at a time, and each tier-4 block may be out for the whole horizon
    deficit = np.full(T, 0.9 * net[4:].min())
    p = ShedProblem(block_ids=np.arange(B), net_mw=np.repeat(net[:, None], T, 1), load_mw=np.repeat(net[:, None], T, 1),
                    voll=rng.uniform(5e3, 5e4, B), tier=tier, sheddable=np.ones(B, bool), parent=-np.ones(B, int),
                    deficit_mw=deficit, dt_h=DT, max_outage_steps=np.full(B, T), interruptions_left=np.full(B, 1))
    r = solve_shed(p, time_limit_s=20.0)
    assert r.violations == [] and r.unserved_deficit_mw.max() < 1e-6
    assert set(np.flatnonzero(r.shed.any(axis=1))) <= {4, 5, 6, 7}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.floats(-0.5, 3.0)), min_size=1, max_size=15),
       st.floats(0.1, 5.0))
def test_each_restoration_stage_stays_within_the_margin_and_the_most_critical_go_first(blocks, margin):
    out = pd.DataFrame({"block_id": range(len(blocks)), "tier": [t for t, _ in blocks], "mw": [m for _, m in blocks]})
    stages = restoration_stages(out, margin, clpu=2.0)
    assert sorted(b for s in stages for b in s) == list(range(len(blocks)))  # every block, once
    mw = out.set_index("block_id").mw.clip(lower=0)
    tier = out.set_index("block_id").tier
    for s in stages:
        assert 2.0 * mw[s].sum() <= margin + 1e-9 or len(s) == 1
    order = [int(tier[b]) for s in stages for b in s]
    assert order == sorted(order)
