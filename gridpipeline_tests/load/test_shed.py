"""The shed schedule: a hand-checked case, rotation, precedence and the greedy counterfactual."""

from __future__ import annotations

import numpy as np
import pytest

from gridpipeline.load.shed import (
    P_CONTRACT,
    ShedProblem,
    _pattern_objective,
    audit,
    block_patterns,
    effective_sheddable,
    greedy_shed,
    polish_patterns,
    solve_shed,
    tier_fixing,
)

DT = 5 / 60


def six_blocks(deficit=(0.7, 1.2)) -> ShedProblem:
    """b0 tier 1 protected 1.0 MW; b1 tier 2 0.5 MW; b2, b3 tier 3 0.45 and 0.4 MW; b4 tier 4 0.6 MW
    feeding b5 tier 4 0.2 MW. VOLL 200k, 15k, 25k, 25k, 10k, 10k EUR/MWh."""
    net = np.array([1.0, 0.5, 0.45, 0.4, 0.6, 0.2])
    T = len(deficit)
    return ShedProblem(block_ids=np.arange(6), net_mw=np.repeat(net[:, None], T, 1),
                       load_mw=np.repeat(net[:, None], T, 1),
                       voll=np.array([2e5, 1.5e4, 2.5e4, 2.5e4, 1e4, 1e4]), tier=np.array([1, 2, 3, 3, 4, 4]),
                       sheddable=np.array([False, True, True, True, True, True]),
                       parent=np.array([-1, -1, -1, -1, -1, 4]), deficit_mw=np.array(deficit), dt_h=DT)


@pytest.mark.parametrize("presolve", [True, False])
def test_the_hand_checked_six_block_case(presolve):
    """Step 0 (0.7 MW): tier 4 first, and b5 alone (0.2) is short, so b4 with b5 below it (0.8 MW).
    Step 1 (1.2 MW): all of tier 4 (0.8) and 0.4 MW of tier 3: b3 (0.4) is cheaper than b2 (0.45).
    Cost: (0.8 x 10k x 2 + 0.4 x 25k) / 12 = 2,166.67 EUR. The greedy (largest first) takes b2: 2,270.83."""
    p = six_blocks()
    r = solve_shed(p, presolve_tiers=presolve)  # tier order settled first, or soft in the program
    assert r.shed[:, 0].tolist() == [0, 0, 0, 0, 1, 1]
    assert r.shed[:, 1].tolist() == [0, 0, 0, 1, 1, 1]
    assert r.cost_eur == pytest.approx((0.8 * 1e4 * 2 + 0.4 * 2.5e4) / 12, abs=1e-6)
    assert r.objective == pytest.approx(r.cost_eur, abs=1e-6)  # no slack in use
    assert r.violations == [] and r.unserved_deficit_mw.max() == 0
    g = greedy_shed(p)
    assert g[:, 1].tolist() == [0, 0, 1, 0, 1, 1]
    assert (p.cost_rate() * g).sum() == pytest.approx((0.8 * 1e4 * 2 + 0.45 * 2.5e4) / 12, abs=1e-6)
    assert audit(p, g) == []


@pytest.mark.parametrize("presolve", [True, False])
def test_a_block_sheds_with_its_subtree_and_a_block_above_a_protected_one_is_never_shed(presolve):
    p = six_blocks(deficit=(0.15,))
    r = solve_shed(p, presolve_tiers=presolve)
    assert r.shed[:, 0].tolist() == [0, 0, 0, 0, 0, 1]  # b5 alone covers it
    # protect b5: b4 above it can no longer be shed, and tier 3 goes first (the network reason)
    prot = ShedProblem(**{**p.__dict__, "sheddable": np.array([False, True, True, True, True, False])})
    r2 = solve_shed(prot, presolve_tiers=presolve)
    assert r2.shed[4:, 0].sum() == 0 and r2.shed[3, 0] == 1
    assert {v["rule"] for v in r2.violations} == {"tier order (network)"}


def test_rotation_passes_a_lasting_deficit_around_the_tier():
    """0.3 MW for 4 steps, two tier-4 blocks of 0.4 and 0.35 MW, at most 2 steps out in a row each."""
    net = np.array([0.4, 0.35])
    p = ShedProblem(block_ids=np.array([10, 11]), net_mw=np.repeat(net[:, None], 4, 1),
                    load_mw=np.repeat(net[:, None], 4, 1), voll=np.array([1e4, 1e4]), tier=np.array([4, 4]),
                    sheddable=np.array([True, True]), parent=np.array([-1, -1]), deficit_mw=np.full(4, 0.3),
                    dt_h=DT, max_outage_steps=np.array([2, 2]))
    r = solve_shed(p)
    # the cheaper block as much as the longest outage allows (3 of 4 steps, never 3 in a row), the other once
    assert r.shed.sum(axis=0).tolist() == [1, 1, 1, 1] and r.shed[1].sum() == 3
    assert "".join(str(int(v)) for v in r.shed[1]).find("111") < 0
    assert r.cost_eur == pytest.approx((3 * 0.35 + 0.4) * 1e4 / 12)
    assert r.violations == []
    # a restored block stays on for at least 2 steps: now each takes two
    p_on = ShedProblem(**{**p.__dict__, "min_on_steps": 2})
    on = solve_shed(p_on)
    assert on.shed.sum(axis=1).tolist() == [2, 2] and audit(p_on, on.shed) == []
    assert on.cost_eur == pytest.approx((2 * 0.4 + 2 * 0.35) * 1e4 / 12)
    # a block already out for 2 steps before the horizon cannot stay out
    q = ShedProblem(**{**p.__dict__, "shed_now": np.array([False, True]), "shed_for_steps": np.array([0, 2])})
    assert solve_shed(q).shed[:, 0].tolist() == [1, 0]


def test_when_balance_is_impossible_the_slack_says_so_and_protected_loads_stay_served():
    p = six_blocks(deficit=(5.0,))
    r = solve_shed(p)
    assert r.shed[0, 0] == 0 and r.shed[1:, 0].sum() == 5  # everything else, never the protected block
    assert r.unserved_deficit_mw[0] == pytest.approx(5.0 - 2.15)
    (v,) = r.violations
    assert v["rule"] == "supply balance" and "protected" in v["forced_by"]


def test_contract_limits_give_way_only_to_balance():
    """b1 is the only tier-2 block, under a contract with no interruptions left: with tiers 3-4 enough
    it stays served; when they are not, balance (rule 3) overrides the contract (rule 5)."""
    p = six_blocks(deficit=(1.5,))
    c = ShedProblem(**{**p.__dict__, "interruptions_left": np.array([-1, 0, -1, -1, -1, -1])})
    assert solve_shed(c).shed[1, 0] == 0
    big = ShedProblem(**{**c.__dict__, "deficit_mw": np.array([2.0])})
    r = solve_shed(big)
    assert r.shed[1, 0] == 1 and r.unserved_deficit_mw[0] == 0


def test_an_exporting_block_is_not_asked_for_and_the_greedy_never_takes_one_above_a_more_critical_block():
    """A tier-4 block full of PV (net -0.1 MW) is left served while tier 3 is shed: shedding it would
    deepen the deficit, which the audit records as the network's reason."""
    p = six_blocks(deficit=(0.5,))
    net = p.net_mw.copy()
    net[5] = -0.1  # b5 exports; b4 (above it) sheds 0.5 net with it
    q = ShedProblem(**{**p.__dict__, "net_mw": net, "parent": np.array([-1, -1, -1, -1, -1, -1])})
    r = solve_shed(q)
    assert r.shed[:, 0].tolist() == [0, 0, 0, 0, 1, 0]
    assert r.violations == []
    more = ShedProblem(**{**q.__dict__, "deficit_mw": np.array([0.9])})  # tier 4 (0.6) + 0.4 of tier 3
    r2 = solve_shed(more)
    assert r2.shed[:, 0].tolist() == [0, 0, 0, 1, 1, 0]
    (v,) = r2.violations
    assert v["rule"] == "tier order (network)" and v["block"] == 5 and "exports" in v["forced_by"]
    # the greedy never sheds b4 when it feeds a more critical block (b3 moved under it): b5, then the
    # largest of tier 3
    tree = ShedProblem(**{**p.__dict__, "parent": np.array([-1, -1, -1, 4, -1, 4]), "deficit_mw": np.array([0.3])})
    assert greedy_shed(tree)[:, 0].tolist() == [0, 0, 1, 0, 0, 1]


def test_the_audit_names_every_lower_rule_a_schedule_breaks():
    net = np.array([0.4, 0.35])
    p = ShedProblem(block_ids=np.array([10, 11]), net_mw=np.repeat(net[:, None], 4, 1),
                    load_mw=np.repeat(net[:, None], 4, 1), voll=np.array([1e4, 1e4]), tier=np.array([4, 4]),
                    sheddable=np.array([True, True]), parent=np.array([-1, -1]), deficit_mw=np.full(4, 0.3),
                    dt_h=DT, max_outage_steps=np.array([2, 2]), min_on_steps=2, switching_budget=2,
                    interruptions_left=np.array([1, -1]), notice_steps=np.array([1, 0]))
    sched = np.array([[1, 0, 1, 0], [0, 1, 1, 1]], float)  # b10 out twice, at once; b11 three in a row
    rules = sorted((v["rule"], v.get("block"), v.get("step")) for v in audit(p, sched))
    assert rules == [("contract interruptions", 10, None), ("contract notice", 10, 0), ("longest outage", 11, 3),
                     ("minimum on time", 10, 2), ("switching budget", None, None)]


def test_the_rotation_heuristic_keeps_the_rules_and_the_tier_order():
    """The step-by-step rolling outage: on the hand-checked case it finds the optimum; on two blocks
    with a 2-step longest outage it passes the deficit around without breaking a rule."""
    from gridpipeline.load.shed import rotation_shed

    p = six_blocks()
    h = rotation_shed(p)
    assert h[:, 0].tolist() == [0, 0, 0, 0, 1, 1] and h[:, 1].tolist() == [0, 0, 0, 1, 1, 1]
    net = np.array([0.4, 0.35])
    q = ShedProblem(block_ids=np.array([10, 11]), net_mw=np.repeat(net[:, None], 6, 1),
                    load_mw=np.repeat(net[:, None], 6, 1), voll=np.array([1e4, 1e4]), tier=np.array([4, 4]),
                    sheddable=np.array([True, True]), parent=np.array([-1, -1]), deficit_mw=np.full(6, 0.3),
                    dt_h=DT, max_outage_steps=np.array([2, 2]), min_on_steps=2, min_off_steps=2)
    r = rotation_shed(q)
    assert r.sum(axis=0).tolist() == [1] * 6 and audit(q, r) == []
    assert r.tolist() == [[0, 0, 1, 1, 0, 0], [1, 1, 0, 0, 1, 1]]  # the cheaper first, then turn about


def random_problem(seed: int, B: int = 12, T: int = 6) -> ShedProblem:
    """A small instance with every rule in play: a forest of blocks of mixed tiers, exporting blocks,
    contracts with interruptions left and notice, the longest outage, minimum off and on times, a
    switching budget, and outages in progress before step 0."""
    rng = np.random.default_rng(seed)
    parent = np.array([-1 if b == 0 or rng.random() < 0.4 else int(rng.integers(0, b)) for b in range(B)])
    net = rng.uniform(0.05, 0.6, B)
    net[rng.random(B) < 0.1] *= -0.3  # a block with more PV than load
    load = np.abs(net) * rng.uniform(1.0, 1.5, B)
    tier = rng.choice([2, 3, 4, 4], B)
    contract = rng.random(B) < 0.3
    shed_now = rng.random(B) < 0.2
    deficit = np.abs(net).sum() * rng.uniform(0.05, 0.35, T)
    return ShedProblem(block_ids=np.arange(B), net_mw=np.repeat(net[:, None], T, 1) * rng.uniform(0.9, 1.1, (B, T)),
                       load_mw=np.repeat(load[:, None], T, 1), voll=np.where(tier == 4, 1e4, 2.5e4) * rng.uniform(0.8, 1.2, B),
                       tier=tier, sheddable=rng.random(B) > 0.05, parent=parent, deficit_mw=deficit, dt_h=DT,
                       interruptible_mw=np.where(contract, load * 0.5, 0.0), compensation=np.where(contract, 600.0, 0.0),
                       interruptions_left=np.where(contract, rng.integers(1, 3, B), -1),
                       notice_steps=np.where(contract, rng.integers(0, 3, B), 0),
                       max_outage_steps=rng.integers(2, 5, B), min_off_steps=2, min_on_steps=int(rng.integers(1, 3)),
                       switching_budget=int(rng.integers(8, 24)), shed_now=shed_now,
                       shed_for_steps=np.where(shed_now, rng.integers(1, 3, B), 0))


@pytest.mark.parametrize("seed", [0, 1, 3, 4, 8, 10, 11, 12, 13, 14, 17, 18])
def test_the_pattern_program_is_the_compact_program(seed):
    """The program over whole block schedules has the same optimum as the step-by-step one (it only
    convexifies each block's rules), so the fast path loses nothing. The seeds are instances the
    strict rules leave a schedule (others fall back to the soft program, which has no pattern form)."""
    p = random_problem(seed)
    ok = effective_sheddable(p)
    fix1, fix0, _ = tier_fixing(p)
    pats = block_patterns(p, np.flatnonzero(ok), fix1, fix0)
    assert pats is not None and len(set(pats[0].tolist())) == ok.sum()  # the pattern path is taken
    a = solve_shed(p, mip_gap=1e-9, formulation="compact")
    b = solve_shed(p, mip_gap=1e-9, formulation="patterns")
    assert b.objective < P_CONTRACT  # strict: no rule gave way beyond the near-fixed ones
    assert a.objective == pytest.approx(b.objective, rel=1e-7, abs=1e-6)


@pytest.mark.parametrize("seed", [0, 3, 8, 13])
def test_the_pattern_program_keeps_the_network_rows_as_the_compact_one_does(seed):
    """Two elements that need relief at some steps, from the blocks behind them."""
    p = random_problem(seed)
    rng = np.random.default_rng(100 + seed)
    B, T = p.shape
    sens = np.where(rng.random((2, B)) < 0.5, rng.uniform(0.5, 1.0, (2, B)), 0.0)
    relief = np.where(rng.random((2, T)) < 0.5, 0.2, 0.0)
    q = ShedProblem(**{**p.__dict__, "sensitivity": sens, "relief_mw": relief, "element_names": ("l1", "l2")})
    a = solve_shed(q, mip_gap=1e-9, formulation="compact")
    b = solve_shed(q, mip_gap=1e-9, formulation="patterns")
    assert a.objective == pytest.approx(b.objective, rel=1e-7, abs=1e-6)
    rel = sens @ (q.net_mw * b.shed)
    assert (rel >= relief - 1e-6).all() or b.objective >= 1e9  # met, or the slack says it is not


def test_the_polish_takes_back_an_outage_no_step_needs():
    """Two tier-4 blocks, a deficit at the middle step only: a schedule that keeps the bigger block out
    for all three steps is polished to that block at the middle step alone (one block at a time: the
    swap to the cheaper block is the program's to find, not the polish's)."""
    net = np.array([0.4, 0.35])
    p = ShedProblem(block_ids=np.array([1, 2]), net_mw=np.repeat(net[:, None], 3, 1),
                    load_mw=np.repeat(net[:, None], 3, 1), voll=np.array([1e4, 1e4]), tier=np.array([4, 4]),
                    sheddable=np.array([True, True]), parent=np.array([-1, -1]),
                    deficit_mw=np.array([0.0, 0.3, 0.0]), dt_h=DT)
    idx = np.arange(2)
    fix1, fix0, _ = tier_fixing(p)
    pats = block_patterns(p, idx, fix1, fix0)
    owner, X = pats[0], pats[1]
    start = np.array([int(np.flatnonzero((owner == 0) & (X == 1).all(axis=1))[0]),
                      int(np.flatnonzero((owner == 1) & (X == 0).all(axis=1))[0])])
    sel = polish_patterns(p, idx, p.deficit_mw, None, pats, start)
    assert X[sel].astype(int).tolist() == [[0, 1, 0], [0, 0, 0]]
    assert _pattern_objective(p, idx, None, pats, sel) < _pattern_objective(p, idx, None, pats, start)
