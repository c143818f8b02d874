"""``gridpipeline bench shed --loads 10000 --steps 12``: the shed schedule on a generated instance.

The instance (``instance(seed=7, loads=10_000, steps=12)``, the defaults reproduce the recorded
figure):

* **feeders and blocks.** ``loads / 10`` blocks (1,000) on ``blocks / 3.3`` feeders (303): each
  feeder is a tree grown block by block, every new block hanging from a random earlier block of its
  feeder (a main line with laterals), behind a load-break switch; the feeder head behind a breaker.
* **loads.** ``loads`` loads spread over the blocks (at least one each). Areas are zoned: each block
  draws its class (residential 70 %, commercial 20 %, industrial 8 %, critical 2 %) and 90 % of its
  loads are of that class, the rest households; sizes lognormal around 8, 40, 250 and 150 kW;
  VOLL 10k, 25k, 15k and 200k EUR/MWh. A block's tier is its most critical load's (critical 1,
  industrial 2, commercial 3, residential 4); a block serving a critical load is protected.
* **generation.** 30 % of blocks have rooftop PV of 20-60 % of their load; net load is load minus PV.
* **contracts.** Half of the industrial loads are interruptible: their block may be interrupted at
  most 1-3 more times today, with 0-2 steps of notice, compensation 300-900 EUR/MWh.
* **deficit.** 12 five-minute steps rising from 6 % to 14 % of the total net load and back to 8 %
  (an import limit lowered for an hour), more than tier 4 alone can cover at its peak.
* **rules.** The longest outage 4 steps (20 minutes), minimum off and on times 2 steps, a switching
  budget of 3 operations per shed block of the greedy schedule.

Timed: building and solving the schedule (``load.shed.solve_shed``), from the problem arrays to the
schedule, with cvxpy imported before the clock starts (as in the long-lived processes that plan). ``gap`` is the solver's relative MIP gap at the end; ``cost`` the lost-load and compensation
cost of the schedule; ``greedy_cost`` that of the plain priority-order greedy on the same instance
(which ignores rotation, contracts and switching, so it may break rules the schedule keeps: the
rules it breaks are counted in ``greedy_rule_breaks``).
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np

from gridpipeline.load.shed import ShedProblem, audit, greedy_shed, solve_shed

CLASSES = ("residential", "commercial", "industrial", "critical")
SHARE = (0.70, 0.20, 0.08, 0.02)
SIZE_KW = (8.0, 40.0, 250.0, 150.0)
VOLL = (1e4, 2.5e4, 1.5e4, 2e5)
TIER = (4, 3, 2, 1)


def instance(seed: int = 7, loads: int = 10_000, steps: int = 12) -> tuple[ShedProblem, dict]:
    """The benchmark's problem (see the module docstring) and its description."""
    rng = np.random.default_rng(seed)
    B = max(loads // 10, 1)
    F = max(round(B / 3.3), 1)
    feeder = np.sort(rng.integers(0, F, B))
    parent = np.full(B, -1)
    for f in range(F):
        members = np.flatnonzero(feeder == f)
        for k, b in enumerate(members[1:], start=1):
            parent[b] = members[rng.integers(0, k)]
    owner = np.sort(np.concatenate([np.arange(B), rng.integers(0, B, max(loads - B, 0))])[:loads])
    # areas are zoned: a block serves mostly one class (its own), with a few households mixed in
    block_cls = rng.choice(4, size=B, p=SHARE)
    cls = np.where(rng.random(loads) < 0.9, block_cls[owner], 0)
    kw = np.array(SIZE_KW)[cls] * rng.lognormal(0.0, 0.5, loads)
    load_mw = np.bincount(owner, kw / 1000.0, minlength=B)
    voll_mw = np.bincount(owner, kw / 1000.0 * np.array(VOLL)[cls], minlength=B)
    tier = np.full(B, 4)
    np.minimum.at(tier, owner, np.array(TIER)[cls])
    protected = np.zeros(B, bool)
    protected[owner[cls == 3]] = True
    pv = np.where(rng.random(B) < 0.3, load_mw * rng.uniform(0.2, 0.6, B), 0.0)
    shape = 1.0 + 0.05 * np.sin(np.linspace(0, np.pi, steps))[None, :]
    gross = load_mw[:, None] * shape
    net = gross - pv[:, None]
    interruptible = np.zeros(B)
    comp = np.zeros(B)
    ind = np.flatnonzero((cls == 2) & (rng.random(loads) < 0.5))
    np.add.at(interruptible, owner[ind], kw[ind] / 1000.0)
    has = interruptible > 0
    comp[has] = rng.uniform(300, 900, has.sum())
    left = np.where(has, rng.integers(1, 4, B), -1)
    notice = np.where(has, rng.integers(0, 3, B), 0)
    total = net.sum(axis=0)
    prof = np.interp(np.arange(steps), [0, steps * 0.4, steps * 0.6, steps - 1], [0.06, 0.14, 0.14, 0.08])
    deficit = prof * total
    p = ShedProblem(block_ids=np.arange(B), net_mw=net, load_mw=gross,
                    voll=np.where(load_mw > 0, voll_mw / np.maximum(load_mw, 1e-12), VOLL[0]), tier=tier,
                    sheddable=~protected, parent=parent, deficit_mw=deficit, dt_h=5 / 60,
                    interruptible_mw=interruptible, compensation=np.where(has, comp, 0.0),
                    interruptions_left=left, notice_steps=notice, max_outage_steps=np.full(B, 4),
                    min_off_steps=2, min_on_steps=2)
    greedy = greedy_shed(p)
    ops = int(np.abs(np.diff(np.concatenate([np.zeros((B, 1)), greedy], axis=1), axis=1)).sum())
    p = ShedProblem(**{**p.__dict__, "switching_budget": 3 * max(int(greedy.any(axis=1).sum()), 1)})
    desc = {"loads": loads, "blocks": B, "feeders": F, "steps": steps, "seed": seed,
            "protected_blocks": int(protected.sum()), "contract_blocks": int(has.sum()),
            "blocks_by_tier": {int(k): int((tier == k).sum()) for k in (1, 2, 3, 4)},
            "peak_deficit_mw": round(float(deficit.max()), 3), "total_net_mw": round(float(total.mean()), 3),
            "greedy_switch_operations": ops}
    return p, desc


def run(loads: int = 10_000, steps: int = 12, seed: int = 7, **_) -> dict:
    p, desc = instance(seed, loads, steps)
    greedy = greedy_shed(p)
    import cvxpy  # noqa: F401 - the library's import (1-4 s) is a process's start-up, not the solve
    t0 = time.perf_counter()
    r = solve_shed(p, time_limit_s=120.0, mip_gap=0.01)
    seconds = time.perf_counter() - t0
    return {"benchmark": "shed", "loads": loads, "blocks": desc["blocks"], "steps": steps,
            "seconds": round(seconds, 2), "gap": r.gap, "cost": round(r.cost_eur, 2),
            "greedy_cost": round(float((p.cost_rate() * greedy).sum()), 2),
            "status": r.status, "rule_breaks": len(r.violations), "greedy_rule_breaks": len(audit(p, greedy)),
            "unserved_mw_max": round(float(r.unserved_deficit_mw.max()), 4), "instance": desc,
            "machine": f"{platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}"}
