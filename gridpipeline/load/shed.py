"""Shed sequence optimisation: which switchable blocks to disconnect at each 5-minute step.

A mixed-integer program (cvxpy, HiGHS) over blocks ``b`` and steps ``t``, ``x[b, t] = 1`` when the
block is shed. Blocks are a tree (``load.blocks``): a shed block takes its subtree with it, so
``x[child] >= x[parent]``. Protected blocks, the source and blocks that are not switchable now are
fixed served; so is every ancestor of a protected block (shedding it would shed the protected one).

What a block sheds is its **net** load (load minus local generation: shedding a block full of PV can
deepen a deficit); what it costs is its **gross** load times its value of lost load, or the contract
compensation for the interruptible part.

Rules in their order of precedence (the issue's), each a soft constraint with a priced slack whose
price dominates everything below it, so the program is feasible by construction and a rule gives way
only to a higher one; every slack in use is reported with the rule it belongs to:

1. protected loads are never shed (hard: those blocks are fixed served);
2. network feasibility: ``S @ (net * x) >= relief`` per element and step (slack ``P_NETWORK``);
3. supply balance: the shed net load covers the deficit, as far as it can be covered at all (a
   hard constraint on ``min(deficit, achievable)``, ``achievable_shed``: a weighted slack cannot
   stay above a thousand blocks' worth of lower-rule penalties; what cannot be covered is reported
   as unserved, with the reason);
4. tier order: a block of tier ``a`` is shed only when every sheddable block of the next less
   critical tier with any is shed (slack ``P_TIER`` per block-step; chained tier by tier, so
   transitively all less critical tiers);
5. contract limits (interruptions left, notice) and the longest outage per block (``P_CONTRACT``);
6. minimum on and off times and the switching budget (``P_SWITCHING``).

Rotation comes from the longest outage: a block may stay shed at most ``max_outage_steps``, so a
deficit that lasts is passed around the blocks of the marginal tier.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

# penalties: each far above what the rules below it can cost (a block-step of lost load is at most
# 200,000 EUR/MWh x a few MW x 1/12 h, about 1e5 EUR)
P_NETWORK = 1e11
P_BALANCE = 1e10
P_TIER = 1e9
P_CONTRACT = 1e8
P_SWITCHING = 1e7
#: strict mode: a lower rule gives way only next to a step the tier order fixed, where its break is
#: the tier rule's doing; it still costs something (half a typical block-step of lost load), so the program
#: keeps such breaks few without a penalty that would swamp the lost-load cost it optimises
P_NEAR_FIXED = 50.0
#: a tie-breaker per shed block-step: of two schedules that cost the same, the one that opens fewer
#: blocks (a block without load costs nothing to shed, and is not shed for nothing)
P_TIE = 1e-3


@dataclass(frozen=True)
class ShedProblem:
    """Blocks ``B`` and steps ``T`` of ``dt_h`` hours. ``net_mw``/``load_mw`` (B, T): net and gross load;
    ``voll`` (B,) EUR/MWh of the block's gross load (its classes' values, weighted by load);
    ``tier`` (B,) 1 = most critical; ``sheddable`` (B,) bool (switchable, not protected, not above a
    protected block); ``parent`` (B,) index of the parent block or -1; ``deficit_mw`` (T,).

    Optional: ``interruptible_mw`` (B,) under contract and its ``compensation`` (B,) EUR/MWh (the
    interruptible part costs that instead of VOLL); ``interruptions_left`` (B,) this day (-1: no
    contract); ``notice_steps`` (B,); ``max_outage_steps`` (B,); ``min_off_steps``/``min_on_steps``;
    ``switching_budget`` (switch operations over the horizon); ``shed_now`` (B,) bool (the state before
    step 0, and how long it has lasted: ``shed_for_steps``); ``sensitivity`` (K, B) relief of element
    k per MW shed in block b, ``relief_mw`` (K, T) the relief each element needs."""

    block_ids: np.ndarray
    net_mw: np.ndarray
    load_mw: np.ndarray
    voll: np.ndarray
    tier: np.ndarray
    sheddable: np.ndarray
    parent: np.ndarray
    deficit_mw: np.ndarray
    dt_h: float = 5 / 60
    interruptible_mw: np.ndarray | None = None
    compensation: np.ndarray | None = None
    interruptions_left: np.ndarray | None = None
    notice_steps: np.ndarray | None = None
    max_outage_steps: np.ndarray | None = None
    min_off_steps: int = 1
    min_on_steps: int = 1
    switching_budget: int | None = None
    shed_now: np.ndarray | None = None
    shed_for_steps: np.ndarray | None = None
    sensitivity: np.ndarray | None = None
    relief_mw: np.ndarray | None = None
    element_names: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, int]:
        return self.net_mw.shape

    def cost_rate(self) -> np.ndarray:
        """EUR per step of shedding each block (B, T): gross load x VOLL, the interruptible part at
        its compensation instead."""
        load = np.maximum(self.load_mw, 0.0)
        if self.interruptible_mw is None:
            return load * self.voll[:, None] * self.dt_h
        firm = np.maximum(load - self.interruptible_mw[:, None], 0.0)
        part = np.minimum(load, self.interruptible_mw[:, None])
        comp = self.compensation if self.compensation is not None else self.voll
        return (firm * self.voll[:, None] + part * comp[:, None]) * self.dt_h


@dataclass
class ShedResult:
    shed: np.ndarray  # (B, T) 0/1
    cost_eur: float  # lost load and compensation only
    objective: float
    gap: float | None  # the program's relative gap (strict: on the cost), else ``bound_gap``
    status: str
    seconds: float
    shed_mw: np.ndarray  # (T,) net load shed
    unserved_deficit_mw: np.ndarray  # (T,) balance slack
    violations: list[dict] = field(default_factory=list)  # the rules that gave way, with what forced it
    solver_gap: float | None = None  # the program's own relative gap (on its penalty-weighted objective)
    source: str = "program"  # or "rotation heuristic"
    cost_lower_bound: float = 0.0  # a fast, loose lower bound on the cost (``cost_lower_bound``)
    bound_gap: float | None = None  # the cost against it: a conservative gap

    def frame(self, p: ShedProblem) -> pd.DataFrame:
        """One row per shed block and step."""
        b, t = np.nonzero(self.shed > 0.5)
        return pd.DataFrame({"block_id": p.block_ids[b], "step": t, "net_mw": p.net_mw[b, t],
                             "load_mw": p.load_mw[b, t], "tier": p.tier[b]})


def _children(parent: np.ndarray) -> dict[int, list[int]]:
    """Block -> the blocks it feeds directly."""
    out: dict[int, list[int]] = {}
    for b, a in enumerate(parent):
        if a >= 0:
            out.setdefault(int(a), []).append(b)
    return out


def _descendant_matrix(parent: np.ndarray) -> list[list[int]]:
    """The ancestors of each block (nearest first)."""
    out = []
    for b in range(len(parent)):
        anc, a = [], int(parent[b])
        while a >= 0:
            anc.append(a)
            a = int(parent[a])
        out.append(anc)
    return out


def effective_sheddable(p: ShedProblem) -> np.ndarray:
    """Blocks that may be shed: sheddable, and no unsheddable block below them (a protected block in
    the subtree would go dark with it)."""
    ok = p.sheddable.astype(bool).copy()
    for b, anc in enumerate(_descendant_matrix(p.parent)):
        if not p.sheddable[b]:
            ok[anc] = False
    return ok


def achievable_shed(p: ShedProblem, allowed: np.ndarray) -> np.ndarray:
    """The most net load that can be shed at each step (T,) when only ``allowed`` (B, T) blocks may
    be: on the tree, a block is shed with its whole subtree (every block of it allowed), or left
    served and its children decide for themselves: ``best(b) = max(subtree(b), sum best(children))``."""
    B, T = p.shape
    children = _children(p.parent)
    order = []  # post-order: children before parents
    roots = [b for b in range(B) if p.parent[b] < 0]
    stack = [(r, False) for r in roots]
    while stack:
        b, done = stack.pop()
        if done:
            order.append(b)
            continue
        stack.append((b, True))
        stack.extend((c, False) for c in children.get(b, []))
    sub = np.zeros((B, T))
    sub_ok = np.zeros((B, T), bool)
    best = np.zeros((B, T))
    for b in order:
        kids = children.get(b, [])
        sub[b] = p.net_mw[b] + (sub[kids].sum(axis=0) if kids else 0.0)
        sub_ok[b] = allowed[b] & (sub_ok[kids].all(axis=0) if kids else True)
        keep = best[kids].sum(axis=0) if kids else np.zeros(T)
        best[b] = np.where(sub_ok[b], np.maximum(sub[b], keep), keep)
    return best[roots].sum(axis=0) if roots else np.zeros(T)


def tier_exempt(p: ShedProblem) -> tuple[np.ndarray, np.ndarray]:
    """(exempt (B, T) bool, why (B,) str): the block-steps tier order cannot ask to be shed, for a
    network reason: not sheddable (protected, not switchable, above a protected block), feeding a
    more critical block (shedding it would shed that one), or exporting (net load <= 0: shedding it
    would deepen the deficit)."""
    B, T = p.shape
    ok = effective_sheddable(p)
    why = np.array([""] * B, dtype=object)
    why[~ok] = "not switchable, protected, or feeds a protected block"
    for b, anc in enumerate(_descendant_matrix(p.parent)):
        for a in anc:
            if p.tier[b] < p.tier[a] and not why[a]:
                why[a] = f"feeds block {int(p.block_ids[b])} of tier {int(p.tier[b])}"
    exempt = np.repeat((why != "")[:, None], T, axis=1) | (p.net_mw <= 0)
    return exempt, why


def tier_fixing(p: ShedProblem) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(shed (B, T), served (B, T), marginal tier (T,)): what tier order and balance settle before the
    solve. At each step the marginal tier is the most critical one still needed to cover the
    deficit, counting the less critical tiers' non-exempt blocks first; those are shed, every block
    of a more critical tier is served, and only the marginal tier's blocks (and exempt ones of the
    less critical tiers) are left to the program. Blocks that relieve a network element are never
    fixed (network feasibility comes before tier order)."""
    B, T = p.shape
    exempt, _ = tier_exempt(p)
    free_net = np.zeros(B, bool)
    if p.sensitivity is not None and p.relief_mw is not None and len(p.relief_mw):
        free_net = (np.abs(p.sensitivity) > 1e-9).any(axis=0)
    tiers = sorted(set(p.tier.tolist()), reverse=True)  # least critical first
    shed, served = np.zeros((B, T), bool), np.zeros((B, T), bool)
    marginal = np.zeros(T, dtype=int)
    for t in range(T):
        need, m = p.deficit_mw[t], tiers[-1]
        for k in tiers:
            cap = p.net_mw[(p.tier == k) & ~exempt[:, t], t].sum()
            if need <= cap + 1e-9:
                m = k
                break
            need -= cap
        marginal[t] = m
        shed[:, t] = (p.tier > m) & ~exempt[:, t]
        served[:, t] = p.tier < m
    shed &= ~free_net[:, None]
    served &= ~free_net[:, None]
    return shed, served, marginal


#: the pattern formulation is possible when no block has more free steps than this (2**8 patterns each)
PATTERN_MAX_FREE = 8
#: and chosen (``formulation="auto"``) from this many free block-steps: below it the compact program
#: closes its gap as fast and HiGHS's heuristics find better schedules in it (the sample world's
#: 118 blocks x 6 steps: 5,440 EUR in 6.2 s against 5,461 in 3.5 s at 1 %); above it the compact
#: relaxation is too weak to close (the benchmark's 1,000 blocks x 12 steps: 12-18 s against 5-6 s)
PATTERN_MIN_FREE_STEPS = 2000


def _free_steps(p: ShedProblem, idx: np.ndarray, fix1: np.ndarray, fix0: np.ndarray) -> np.ndarray:
    """(len(idx), T) bool: the steps at which a block's state is the program's choice: not settled by
    the tier order, and no block below it kept served by it (the tree: shedding it would shed that one)."""
    blocked = fix0.copy()
    for b, anc in enumerate(_descendant_matrix(p.parent)):
        if anc:
            blocked[anc] |= fix0[b]
    return (~fix1 & ~blocked)[idx]


def _window_sum(a: np.ndarray, m, wide: bool = False) -> np.ndarray:
    """(rows, T): the sum of ``a`` (rows, T) over the steps (t - m, t] for each t (``wide``: [t - m, t]);
    ``m`` one for all rows or one per row."""
    rows, T = a.shape
    cs = np.concatenate([np.zeros((rows, 1)), np.cumsum(a, axis=1)], axis=1)  # cs[:, k] = sum a[:, :k]
    m = np.broadcast_to(np.asarray(m) + (1 if wide else 0), (rows,)).astype(int)
    lo = np.clip(np.arange(T)[None, :] + 1 - m[:, None], 0, None)
    return cs[:, 1:] - np.take_along_axis(cs, lo, axis=1)


def block_patterns(p: ShedProblem, idx: np.ndarray, fix1: np.ndarray, fix0: np.ndarray):
    """Every schedule a block may follow under the strict rules, block by block: the fixed steps as the
    tier order has them, every 0/1 choice at its free steps. Returns (owner (P,), X (P, T) 0/1, cost (P,)
    EUR of lost load, penalty (P,) near-fixed breaks, ops (P,) switch operations), or None when a block
    has more than ``PATTERN_MAX_FREE`` free steps. A pattern's penalty is exactly what the compact
    program's slacks would carry for it, and a pattern that breaks a strict rule is left out."""
    T = p.shape[1]
    free = _free_steps(p, idx, fix1, fix0)
    if len(idx) == 0 or free.sum(axis=1).max() > PATTERN_MAX_FREE:
        return None
    fixed = (fix1 | fix0)[idx]
    rate = p.cost_rate()[idx]
    x_prev = _shed_now(p)[idx] > 0.5
    run0 = np.where(x_prev, _shed_for(p)[idx], 0)
    L = np.maximum(p.max_outage_steps[idx].astype(int), 1) if p.max_outage_steps is not None else None
    left = p.interruptions_left[idx] if p.interruptions_left is not None else None
    ns = p.notice_steps[idx].astype(int) if p.notice_steps is not None else None
    need_ops = (p.max_outage_steps is not None or p.interruptions_left is not None or p.min_off_steps > 1
                or p.min_on_steps > 1 or p.switching_budget is not None)
    out = []
    f = free.sum(axis=1)
    for fv in np.unique(f):
        rows = np.flatnonzero(f == fv)
        P = 1 << int(fv)
        bits = ((np.arange(P)[:, None] >> np.arange(int(fv))[None, :]) & 1).astype(bool)  # (P, fv)
        X = np.repeat(fix1[idx[rows]][:, None, :], P, axis=1)  # (r, P, T)
        for k, r in enumerate(rows):
            X[k][:, np.flatnonzero(free[r])] = bits
        r_n = len(rows)
        prev = np.concatenate([np.repeat(x_prev[rows][:, None, None], P, axis=1), X[:, :, :-1]], axis=2)
        starts = X & ~prev
        stops = ~X & prev
        ok = np.ones((r_n, P), bool)
        pen = np.zeros((r_n, P))
        fx = fixed[rows]  # (r, T)
        if L is not None:
            Lr = L[rows]
            win = _window_sum(starts.reshape(r_n * P, T).astype(float), np.repeat(Lr, P)).reshape(r_n, P, T)
            init = x_prev[rows][:, None] & (np.arange(T)[None, :] < (Lr - run0[rows])[:, None])  # (r, T)
            v = np.clip(X.astype(float) - win - init[:, None, :], 0.0, None)
            near = _window_sum(fx.astype(float), Lr, wide=True) > 0  # (r, T)
            ok &= ~((v > 1e-9) & ~near[:, None, :]).any(axis=2)
            pen += v.sum(axis=2)
        if left is not None:
            lr = left[rows]
            has = lr >= 0
            v = np.clip(starts.sum(axis=2) - lr[:, None], 0.0, None) * has[:, None]
            ok &= ~((v > 1e-9) & ~fx.any(axis=1)[:, None])
            pen += v
        if ns is not None:
            for k, r in enumerate(rows):
                n_k = min(int(ns[r]), T)
                if n_k <= 0:
                    continue
                v = np.clip(X[k, :, :n_k].sum(axis=1) - float(x_prev[r]) * n_k, 0.0, None)
                if not fx[k, :n_k].any():
                    ok[k] &= v <= 1e-9
                pen[k] += v
        if need_ops:
            for m_steps, ev, rhs in ((p.min_off_steps, starts, X.astype(float)),
                                     (p.min_on_steps, stops, 1.0 - X)):
                if m_steps > 1:
                    win = _window_sum(ev.astype(float).reshape(r_n * P, T), m_steps).reshape(r_n, P, T)
                    v = np.clip(win - rhs, 0.0, None)
                    near = _window_sum(fx.astype(float), m_steps, wide=True) > 0
                    ok &= ~((v > 1e-9) & ~near[:, None, :]).any(axis=2)
                    pen += v.sum(axis=2)
        ops = (starts.sum(axis=2) + stops.sum(axis=2)).astype(float) if need_ops else np.zeros((r_n, P))
        cost = (X * rate[rows][:, None, :]).sum(axis=2)
        kk, pp = np.nonzero(ok)
        out.append((rows[kk], X[kk, pp], cost[kk, pp], pen[kk, pp], ops[kk, pp]))
    owner = np.concatenate([o[0] for o in out])
    order = np.argsort(owner, kind="stable")
    return tuple(np.concatenate([o[i] for o in out])[order] for i in range(5))


def _pattern_model(p: ShedProblem, idx: np.ndarray, target: np.ndarray, budget: float | None, pats):
    """The strict program over whole block schedules (``block_patterns``): one pattern per block, the
    balance, the tree, the network and the switching budget linking them. It is the compact program
    with each block's rules convexified, so its relaxation is far tighter (its LP bound is the
    Lagrangian bound of the block rules). Returns the problem and ``y``, one binary per pattern (the
    chosen pattern of each block is the one at 1)."""
    import cvxpy as cp
    import scipy.sparse as sp

    T = p.shape[1]
    owner, X, cost, pen, ops = pats
    n, P = len(idx), len(owner)
    y = cp.Variable(P, boolean=True)
    cols = np.arange(P)
    one = sp.csr_matrix((np.ones(P), (owner, cols)), shape=(n, P))
    kk, tt = np.nonzero(X)
    Xs = sp.csr_matrix((np.ones(len(kk)), (owner[kk] * T + tt, kk)), shape=(n * T, P))  # x, block-major
    net = p.net_mw[idx]
    bal = sp.csr_matrix((net[owner[kk], tt], (tt, kk)), shape=(T, P))
    cons = [one @ y == 1, bal @ y >= target - 1e-6]
    obj = [(cost + P_TIE * X.sum(axis=1) + P_NEAR_FIXED * pen) @ y]
    pos = {int(b): k for k, b in enumerate(idx)}
    pairs = np.array([(pos[int(b)], pos[int(p.parent[b])]) for b in idx if int(p.parent[b]) in pos]).reshape(-1, 2)
    if len(pairs):
        r = np.arange(len(pairs) * T)
        ch = (pairs[:, 0:1] * T + np.arange(T)).ravel()
        pa = (pairs[:, 1:2] * T + np.arange(T)).ravel()
        D = sp.csr_matrix((np.r_[np.ones(len(r)), -np.ones(len(r))], (np.r_[r, r], np.r_[ch, pa])),
                          shape=(len(r), n * T))
        cons.append((D @ Xs) @ y >= 0)
    if p.sensitivity is not None and p.relief_mw is not None and len(p.relief_mw):
        K = len(p.relief_mw)
        Sx = sp.csr_matrix(p.sensitivity[:, idx])  # (K, n)
        # relief of element k at step t: sum_b S[k, b] net[b, t] x[b, t]
        W = sp.csr_matrix((net.ravel(), (np.arange(n * T), np.arange(n * T))), shape=(n * T, n * T)) @ Xs
        rows = []
        for t in range(T):
            rows.append(Sx @ W[np.arange(n) * T + t])
        g = cp.Variable((T, K), nonneg=True)
        cons.append(cp.vstack([rows[t] @ y for t in range(T)]) + g >= p.relief_mw.T)
        obj.append(P_NETWORK * p.dt_h * cp.sum(g))
    if budget is not None:
        v = cp.Variable(nonneg=True)
        cons.append(ops @ y <= budget + v)
        obj.append(P_NEAR_FIXED * v)
    return cp.Problem(cp.Minimize(cp.sum(cp.hstack(obj))), cons), y


def _pattern_objective(p: ShedProblem, idx: np.ndarray, budget: float | None, pats, sel: np.ndarray) -> float:
    """The strict program's objective of one pattern per block (``sel``: a pattern index per block),
    without the tie-breaker."""
    _, X, cost, pen, ops = pats
    total = float((cost[sel] + P_NEAR_FIXED * pen[sel]).sum())
    if budget is not None:
        total += P_NEAR_FIXED * max(float(ops[sel].sum()) - budget, 0.0)
    if p.sensitivity is not None and p.relief_mw is not None and len(p.relief_mw):
        rel = p.sensitivity[:, idx] @ (p.net_mw[idx] * X[sel])
        total += P_NETWORK * p.dt_h * float(np.clip(p.relief_mw - rel, 0.0, None).sum())
    return total


def polish_patterns(p: ShedProblem, idx: np.ndarray, target: np.ndarray, budget: float | None, pats,
                    sel: np.ndarray, passes: int = 4) -> np.ndarray:
    """Improve a schedule one block at a time: each block in turn takes its cheapest pattern that keeps
    the balance, the tree, the network relief already reached and the budget, with every other block as
    it is; until no block improves. A solve stopped at its gap may shed a block where no step needs it
    (the gap allows it); this takes such outages back when the rules let it. Never worse."""
    owner, X, cost, pen, ops = pats
    n = len(idx)
    net = p.net_mw[idx]
    value = cost + P_TIE * X.sum(axis=1) + P_NEAR_FIXED * pen
    first = np.searchsorted(owner, np.arange(n))
    last = np.searchsorted(owner, np.arange(n), side="right")
    x = X[sel].astype(float)  # (n, T)
    got = (net * x).sum(axis=0)
    pos = {int(b): k for k, b in enumerate(idx)}
    par = np.array([pos.get(int(p.parent[b]), -1) for b in idx])
    kids: dict[int, list[int]] = {}
    for k, a in enumerate(par):
        if a >= 0:
            kids.setdefault(int(a), []).append(k)
    net_rows = p.sensitivity is not None and p.relief_mw is not None and len(p.relief_mw)
    if net_rows:
        S = p.sensitivity[:, idx]
        rel = S @ (net * x)
    used = float(ops[sel].sum())
    sel = sel.copy()
    for _ in range(passes):
        changed = False
        for k in np.argsort(-value[sel]):
            lo, hi = first[k], last[k]
            if hi - lo <= 1:
                continue
            cand = X[lo:hi].astype(float)  # (c, T)
            others = got - net[k] * x[k]
            ok = (others[None, :] + net[k][None, :] * cand >= target[None, :] - 1e-6).all(axis=1)
            if par[k] >= 0:
                ok &= (cand >= x[par[k]][None, :]).all(axis=1)
            for c in kids.get(int(k), []):
                ok &= (cand <= x[c][None, :]).all(axis=1)
            if net_rows:
                base = rel - S[:, [k]] * (net[k] * x[k])[None, :]  # (K, T)
                new = base[None, :, :] + S[:, k][None, :, None] * (net[k] * cand)[:, None, :]
                need = np.minimum(p.relief_mw, rel)[None, :, :] - 1e-6  # keep what is reached
                ok &= (new >= need).all(axis=(1, 2))
            v = value[lo:hi].copy()
            if budget is not None:
                v += P_NEAR_FIXED * (np.maximum(used - ops[sel[k]] + ops[lo:hi] - budget, 0.0)
                                     - max(used - budget, 0.0))
            v[~ok] = np.inf
            j = int(np.argmin(v))
            if v[j] < value[sel[k]] - 1e-9 and lo + j != sel[k]:
                used += ops[lo + j] - ops[sel[k]]
                if net_rows:
                    rel += S[:, [k]] * (net[k] * (cand[j] - x[k]))[None, :]
                got += net[k] * (cand[j] - x[k])
                x[k] = cand[j]
                sel[k] = lo + j
                changed = True
        if not changed:
            break
    return sel


def _build_model(p: ShedProblem, idx: np.ndarray, target: np.ndarray, fix1: np.ndarray, fix0: np.ndarray,
                 hard: bool, presolve_tiers: bool, budget: float | None, elements: np.ndarray | None = None):
    """The program over the sheddable blocks ``idx`` (the whole set, or a group of whole feeders):
    balance to ``target`` (T,), the switching ``budget``, the network ``elements`` (rows of the
    sensitivity; all by default). ``fix1``/``fix0`` (B, T): the tier order's fixing. Returns the
    problem and its shed variable (len(idx), T)."""
    import cvxpy as cp

    T = p.shape[1]
    n = len(idx)
    rate = p.cost_rate()
    if elements is None:
        elements = np.arange(0 if p.relief_mw is None else len(p.relief_mw))
    x = cp.Variable((n, T), boolean=True)
    net = p.net_mw[idx]
    cons, obj = [], [cp.sum(cp.multiply(rate[idx] + P_TIE, x))]
    # tree: a shed parent sheds its children (both sheddable: the rest are fixed served)
    pos = {int(b): k for k, b in enumerate(idx)}
    pairs = [(pos[int(b)], pos[int(p.parent[b])]) for b in idx if int(p.parent[b]) in pos]
    if pairs:
        ch, pa = np.array(pairs).T
        cons.append(x[ch, :] >= x[pa, :])
    # 3. balance, as far as it can be had (``target``: the whole deficit, or a group's share of it)
    cons.append(cp.sum(cp.multiply(net, x), axis=0) >= target - 1e-6)
    # 2. network
    if p.sensitivity is not None and p.relief_mw is not None and len(p.relief_mw) and len(elements):
        relief = p.relief_mw[elements]
        g = cp.Variable(relief.shape, nonneg=True)
        S = p.sensitivity[np.ix_(elements, idx)]
        cons.append(S @ cp.multiply(net, x) + g >= relief)
        obj.append(P_NETWORK * p.dt_h * cp.sum(g))
    # 4. tier order: settled before the solve, or tier by tier: f[c, t] = 1 only when every block of
    # tier c that tier order may ask for is shed
    exempt, _ = tier_exempt(p)
    tiers = sorted(set(p.tier[idx].tolist()))
    fixed = np.zeros((n, T), bool)
    F1 = F0 = np.zeros((n, T))
    if presolve_tiers:
        fixed = (fix1 | fix0)[idx]
        F1, F0 = fix1[idx].astype(float), fix0[idx].astype(float)
        if F1.any():
            cons.append(cp.multiply(F1, x) == F1)
        if F0.any():
            cons.append(cp.multiply(F0, x) == 0)
    elif len(tiers) > 1:
        f = cp.Variable((len(tiers), T), boolean=True)
        u = cp.Variable((n, T), nonneg=True)
        tpos = {c: k for k, c in enumerate(tiers)}
        member = np.zeros((len(tiers), n))
        member[[tpos[c] for c in p.tier[idx]], np.arange(n)] = 1.0
        askable = (~exempt[idx]).astype(float)
        cons.append(x >= cp.multiply(askable, member.T @ f))
        nxt = np.array([tpos[c] + 1 for c in p.tier[idx]])
        has_next = nxt < len(tiers)
        rows = np.flatnonzero(has_next)
        if len(rows):
            cons.append(x[rows, :] <= f[nxt[rows], :] + u[rows, :])
        obj.append(P_TIER * cp.sum(u))
    # starts and stops of outages, tight (Rajan-Takriti): start = 1 exactly when shed now and not before
    w = []
    starts = None
    x_prev = _shed_now(p)[idx]
    if (p.max_outage_steps is not None or p.interruptions_left is not None or p.min_off_steps > 1
            or p.min_on_steps > 1 or p.switching_budget is not None):
        starts = cp.Variable((n, T), nonneg=True)
        stops = cp.Variable((n, T), nonneg=True)
        prev = cp.hstack([cp.reshape(x_prev, (n, 1), order="C"), x[:, :-1]]) if T > 1 else \
            cp.reshape(x_prev, (n, 1), order="C")
        cons += [starts >= x - prev, starts <= x, starts <= 1 - prev,
                 stops >= prev - x, stops <= prev, stops <= 1 - x]
    # 5. the longest outage: shed at t only if the outage started within the last L steps (the outage
    # in progress at step 0 started run0 steps before it)
    if p.max_outage_steps is not None:
        L = np.maximum(p.max_outage_steps[idx].astype(int), 1)
        run0 = np.where(x_prev > 0.5, _shed_for(p)[idx], 0)
        for lk in sorted(set(L[L < T + run0.max() + 1].tolist())):
            ks = np.flatnonzero(L == lk)
            ML = np.array([[1.0 if t - lk < k <= t else 0.0 for k in range(T)] for t in range(T)])
            init = ((x_prev[ks] > 0.5)[:, None] & (np.arange(T)[None, :] < (lk - run0[ks])[:, None])).astype(float)
            v = cp.Variable((len(ks), T), nonneg=True)
            cons.append(x[ks, :] <= starts[ks, :] @ ML.T + init + v)
            if hard:  # steps whose window touches an outage the tier order imposes may give
                wideL = np.array([[1.0 if t - lk <= k <= t else 0.0 for k in range(T)] for t in range(T)])
                cons.append(v <= ((fixed[ks].astype(float) @ wideL.T) > 0) * 1.0)
            w.append(cp.sum(v))
    if p.interruptions_left is not None:
        left = p.interruptions_left[idx]
        has = np.flatnonzero(left >= 0)
        if len(has):
            v = cp.Variable(len(has), nonneg=True)
            cons.append(cp.sum(starts[has, :], axis=1) <= left[has] + v)
            if hard:
                cons.append(v <= fixed[has].any(axis=1) * T)
            w.append(cp.sum(v))
    if p.notice_steps is not None:
        ns = p.notice_steps[idx].astype(int)
        for k in np.flatnonzero(ns > 0):
            v = cp.Variable(nonneg=True)
            cons.append(cp.sum(x[k, :min(ns[k], T)]) <= float(x_prev[k]) * min(ns[k], T) + v)
            if hard and not fixed[k, :min(ns[k], T)].any():
                cons.append(v == 0)
            w.append(v)
    if w:
        obj.append((P_NEAR_FIXED if hard else P_CONTRACT) * cp.sum(cp.hstack(w)))
    # 6. minimum off and on times, the switching budget
    if starts is not None:
        sw = []
        for m_steps, var, rhs in ((p.min_off_steps, starts, x), (p.min_on_steps, stops, 1 - x)):
            if m_steps > 1:
                # a start (stop) within the last m steps keeps the block shed (served)
                M = np.array([[1.0 if t - m_steps < k <= t else 0.0 for k in range(T)] for t in range(T)])
                v = cp.Variable((n, T), nonneg=True)
                cons.append(var @ M.T <= rhs + v)
                if hard:  # steps whose window touches a step the tier order fixed may give
                    wide = np.array([[1.0 if t - m_steps <= k <= t else 0.0 for k in range(T)] for t in range(T)])
                    near = (fixed.astype(float) @ wide.T) > 0
                    cons.append(v <= near * T)
                sw.append(cp.sum(v))
        if budget is not None:
            v = cp.Variable(nonneg=True)
            cons.append(cp.sum(starts + stops) <= budget + v)
            sw.append(v)
        if sw:
            obj.append((P_NEAR_FIXED if hard else P_SWITCHING) * cp.sum(cp.hstack(sw)))
    return cp.Problem(cp.Minimize(cp.sum(cp.hstack(obj))), cons), x


def solve_shed(p: ShedProblem, time_limit_s: float = 60.0, mip_gap: float = 0.01, verbose: bool = False,
               presolve_tiers: bool = True, strict: bool = True, solver_opts: dict | None = None,
               formulation: str = "auto") -> ShedResult:
    """The schedule (see the module docstring). With ``presolve_tiers`` the tier order is settled
    before the solve (``tier_fixing``): the program then only chooses within each step's marginal
    tier; without it, tier order is a soft rule of the program (the monolithic formulation).

    ``strict`` (with ``presolve_tiers``): the rotation rules govern the choices within the marginal
    tier. Where a rule's window touches a step the tier order fixed (a whole tier out, a tier kept
    in), it may give way, penalised; everywhere else it is hard, which keeps the program's bound
    tight. If that leaves no schedule, the program is solved again with every lower rule soft. The
    audit counts every actual break either way.

    ``formulation``: ``"patterns"`` states the strict program over whole block schedules
    (``block_patterns``; possible when no block has more than ``PATTERN_MAX_FREE`` free steps),
    ``"compact"`` step by step, ``"auto"`` the first for large instances (``PATTERN_MIN_FREE_STEPS``).
    Both are the same program; the pattern one has a far tighter relaxation where the longest outage
    and the near-fixed breaks bind (on the benchmark instance 554,565 against 542,961, the optimum
    about 557,200), so HiGHS closes the gap at its root. Its schedule is then polished block by block
    (``polish_patterns``)."""
    import cvxpy as cp

    t0 = time.perf_counter()
    B, T = p.shape
    ok = effective_sheddable(p)
    idx = np.flatnonzero(ok)  # only sheddable blocks get variables
    n = len(idx)
    rate = p.cost_rate()
    hard = strict and presolve_tiers
    if n == 0:
        shed = np.zeros((B, T))
        return ShedResult(shed, 0.0, 0.0, 0.0, "nothing sheddable", time.perf_counter() - t0, np.zeros(T),
                          np.maximum(p.deficit_mw, 0.0), _violations_without_shed(p))
    allowed = np.repeat(ok[:, None], T, axis=1)
    fix1 = fix0 = np.zeros((B, T), bool)
    if presolve_tiers:
        fix1, fix0, _ = tier_fixing(p)
        allowed &= ~fix0
    target = np.minimum(p.deficit_mw, achievable_shed(p, allowed))
    budget = p.switching_budget
    pats = None
    if hard and formulation != "compact" and (
            formulation == "patterns" or _free_steps(p, idx, fix1, fix0).sum() >= PATTERN_MIN_FREE_STEPS):
        pats = block_patterns(p, idx, fix1, fix0)
    if pats is not None and len(np.unique(pats[0])) < n:
        log.info("shed: the strict lower rules leave a block no schedule; solving with every lower rule soft")
        return solve_shed(p, max(time_limit_s - (time.perf_counter() - t0), 1.0), mip_gap, verbose,
                          presolve_tiers, strict=False, solver_opts=solver_opts, formulation=formulation)
    if pats is not None:  # few free steps per block: the program over whole block schedules
        prob, xe = _pattern_model(p, idx, target, budget, pats)
    else:
        prob, xe = _build_model(p, idx, target, fix1, fix0, hard, presolve_tiers, budget)
    heuristic = rotation_shed(p, presolve_tiers)
    lb = cost_lower_bound(p, presolve_tiers)
    left_s = max(time_limit_s - (time.perf_counter() - t0), 1.0)
    # strict: the objective is the lost-load cost plus small penalties for breaks next to fixed steps,
    # so the program's relative gap is the cost's; soft: the penalties dominate, so ask for an
    # absolute gap of mip_gap x the cost bound instead
    if hard:
        prob.solve(solver=cp.HIGHS, verbose=verbose, time_limit=float(left_s), mip_rel_gap=float(mip_gap),
                   **(solver_opts or {}))
    else:
        prob.solve(solver=cp.HIGHS, verbose=verbose, time_limit=float(left_s), mip_rel_gap=1e-9,
                   mip_abs_gap=max(float(mip_gap) * lb, 1e-6), **(solver_opts or {}))
    found = xe.value is not None
    if hard and not found and prob.status in ("infeasible", "infeasible_inaccurate"):
        log.info("shed: the strict lower rules leave no schedule; solving with every lower rule soft")
        # the strict rules leave no schedule: every lower rule soft
        return solve_shed(p, max(time_limit_s - (time.perf_counter() - t0), 1.0), mip_gap, verbose,
                          presolve_tiers, strict=False, solver_opts=solver_opts, formulation=formulation)
    shed = np.zeros((B, T))
    objective = float(prob.value) if found else float("nan")
    if found and pats is not None:
        owner = pats[0]
        yv = np.asarray(xe.value)
        sel = np.array([lo + int(np.argmax(yv[lo:hi])) for lo, hi in
                        zip(np.searchsorted(owner, np.arange(n)), np.searchsorted(owner, np.arange(n), side="right"),
                            strict=True)])
        sel = polish_patterns(p, idx, target, budget, pats, sel)
        objective = _pattern_objective(p, idx, budget, pats, sel)  # the schedule as polished
        shed[idx] = pats[1][sel]
    elif found:
        shed[idx] = np.round(np.asarray(xe.value))
        objective -= P_TIE * float(shed[idx].sum())  # reported without the tie-breaker
    # the program's schedule, or the rolling-outage heuristic's when it keeps the rules better (the
    # program ran out of time): judged rule by rule in the order of precedence, then by cost
    chosen, source = shed, "program"
    if not found or schedule_rank(p, heuristic) < schedule_rank(p, shed):
        chosen, source = heuristic, "rotation heuristic"
    cost = float((rate * chosen).sum())
    got = (p.net_mw * chosen).sum(axis=0)
    solver_gap = _gap(prob)
    bound_gap = max(cost - lb, 0.0) / max(abs(lb), 1e-9) if lb > 0 else (0.0 if cost <= 1e-9 else None)
    res = ShedResult(shed=chosen, cost_eur=cost, objective=objective,
                     gap=solver_gap if (source == "program" and hard and solver_gap is not None) else bound_gap,
                     status=f"{prob.status} ({source})", seconds=time.perf_counter() - t0, shed_mw=got,
                     unserved_deficit_mw=np.maximum(p.deficit_mw - got, 0.0))
    res.violations = audit(p, chosen)
    res.solver_gap = solver_gap
    res.bound_gap = bound_gap
    res.source = source
    res.cost_lower_bound = lb
    return res


#: the rules of ``audit`` in their order of precedence (rank 0 first); tier order for a network
#: reason is no break of the rule
_RANK = {"network feasibility": 0, "supply balance": 1, "tier order": 2, "longest outage": 3,
         "contract interruptions": 3, "contract notice": 3, "minimum off time": 4, "minimum on time": 4,
         "switching budget": 4}


def schedule_rank(p: ShedProblem, shed: np.ndarray) -> tuple:
    """A schedule's standing: unserved network relief and deficit (MW), then the count of broken rules
    of each lower level, then its cost; smaller is better (lexicographic, as the precedence says)."""
    v = audit(p, shed)
    mw = [0.0, 0.0]
    counts = [0, 0, 0]
    for r in v:
        k = _RANK.get(r["rule"])
        if k is None:
            continue
        if k < 2:
            mw[k] += float(r.get("mw", 0.0))
        else:
            counts[k - 2] += 1
    return (round(mw[0], 6), round(mw[1], 6), *counts, float((p.cost_rate() * shed).sum()))


def cost_lower_bound(p: ShedProblem, presolve_tiers: bool = True) -> float:
    """A lower bound on the lost-load cost of any schedule that covers the deficit as far as it can be
    covered (with the same tier fixing): per step, the fixed outages plus the cheapest fractional
    cover of the rest (a fractional knapsack over the free blocks with positive net load, cheapest
    EUR per MW first). It relaxes the subtree coupling and every lower rule, so it is below the
    program's optimum: the gap a schedule reports against it is a certificate, if a loose one."""
    B, T = p.shape
    ok = effective_sheddable(p)
    allowed = np.repeat(ok[:, None], T, axis=1)
    fix1 = np.zeros((B, T), bool)
    if presolve_tiers:
        fix1, fix0, _ = tier_fixing(p)
        allowed &= ~fix0
    target = np.minimum(p.deficit_mw, achievable_shed(p, allowed))
    rate = p.cost_rate()
    total = 0.0
    for t in range(T):
        total += float(rate[fix1[:, t], t].sum())
        need = target[t] - float(p.net_mw[fix1[:, t], t].sum())
        free = np.flatnonzero(allowed[:, t] & ~fix1[:, t] & (p.net_mw[:, t] > 1e-12))
        for b in free[np.argsort(rate[free, t] / p.net_mw[free, t])]:
            if need <= 1e-12:
                break
            take = min(1.0, need / p.net_mw[b, t])
            total += take * rate[b, t]
            need -= take * p.net_mw[b, t]
    return total


def _gap(prob) -> float | None:
    try:
        info = prob.solver_stats.extra_stats
        gap = getattr(info, "mip_gap", None)
        if gap is None and isinstance(info, dict):
            gap = info.get("mip_gap")
        return float(gap) if gap is not None else None
    except Exception:  # noqa: BLE001 - solver statistics differ by version
        return None


def _shed_now(p: ShedProblem) -> np.ndarray:
    B = p.shape[0]
    return np.zeros(B) if p.shed_now is None else p.shed_now.astype(float)


def _shed_for(p: ShedProblem) -> np.ndarray:
    """How many steps each block has been shed before step 0 (0 when served now)."""
    return p.shed_for_steps.astype(int) if p.shed_for_steps is not None else _shed_now(p).astype(int)


def _violations_without_shed(p: ShedProblem) -> list[dict]:
    out = []
    for t in np.flatnonzero(p.deficit_mw > 1e-9):
        out.append({"rule": "supply balance", "step": int(t), "mw": float(p.deficit_mw[t]),
                    "forced_by": "protected loads: no block may be shed"})
    return out


def audit(p: ShedProblem, shed: np.ndarray) -> list[dict]:
    """Every rule a schedule breaks, per step, with what forced it (judged on the schedule itself, so
    the same audit applies to the greedy baseline)."""
    out = []
    T = p.shape[1]
    ok = effective_sheddable(p)
    got = (p.net_mw * shed).sum(axis=0)
    most = achievable_shed(p, np.repeat(ok[:, None], T, axis=1))
    for t in range(T):
        short = p.deficit_mw[t] - got[t]
        if short > 1e-6:
            out.append({"rule": "supply balance", "step": t, "mw": round(float(short), 4),
                        "forced_by": "protected loads: nothing more can be shed (the rest is protected, not "
                        "switchable, or feeds a protected block)" if got[t] >= most[t] - 1e-6 else
                        "a schedule that sheds less than it could"})
    if p.sensitivity is not None and p.relief_mw is not None:
        rel = p.sensitivity @ (p.net_mw * shed)
        for k, t in zip(*np.nonzero(rel < p.relief_mw - 1e-6)):
            out.append({"rule": "network feasibility", "step": int(t),
                        "element": p.element_names[k] if k < len(p.element_names) else int(k),
                        "mw": round(float(p.relief_mw[k, t] - rel[k, t]), 4), "forced_by": "protected loads (never shed)"})
    # tier order: a served block of a less critical tier while a more critical one is shed
    exempt, why = tier_exempt(p)
    for t in range(T):
        s = shed[:, t] > 0.5
        if not s.any():
            continue
        worst = p.tier[s].min()
        for b in np.flatnonzero(~s & (p.tier > worst)):
            row = {"step": t, "block": int(p.block_ids[b]), "tier": int(p.tier[b]), "while_shed_tier": int(worst)}
            if exempt[b, t]:
                out.append({"rule": "tier order (network)", **row,
                            "forced_by": f"network: {why[b] or 'it exports (shedding it would deepen the deficit)'}"})
            else:
                out.append({"rule": "tier order", **row, "forced_by": _lower_rule_reason(p, shed, b, t)})
    out += _audit_lower_rules(p, shed)
    return out


def _audit_lower_rules(p: ShedProblem, shed: np.ndarray) -> list[dict]:
    """Rules 5 and 6 on a schedule: the longest outage, interruptions left and notice (contracts),
    minimum off and on times, the switching budget. Each names the higher rule that may have forced it
    (a tier that had to be shed whole, or the balance), as the program only breaks them for those."""
    out = []
    T = p.shape[1]
    prev = np.concatenate([_shed_now(p)[:, None], shed], axis=1)
    starts = np.clip(np.diff(prev, axis=1), 0, None)
    stops = np.clip(-np.diff(prev, axis=1), 0, None)
    why = "tier order or balance (a higher rule)"
    if p.max_outage_steps is not None:
        run = _shed_for(p).astype(float)
        for t in range(T):
            run = np.where(shed[:, t] > 0.5, run + 1, 0)
            for b in np.flatnonzero(run == p.max_outage_steps + 1):  # once, when the run first goes over
                out.append({"rule": "longest outage", "step": t, "block": int(p.block_ids[b]),
                            "limit_steps": int(p.max_outage_steps[b]), "forced_by": why})
    if p.interruptions_left is not None:
        used = starts.sum(axis=1)
        for b in np.flatnonzero((p.interruptions_left >= 0) & (used > p.interruptions_left)):
            out.append({"rule": "contract interruptions", "block": int(p.block_ids[b]), "used": int(used[b]),
                        "left": int(p.interruptions_left[b]), "forced_by": why})
    if p.notice_steps is not None:
        for b in np.flatnonzero(p.notice_steps > 0):
            n = min(int(p.notice_steps[b]), T)
            if starts[b, :n].any():
                out.append({"rule": "contract notice", "block": int(p.block_ids[b]), "step": int(np.argmax(starts[b, :n])),
                            "notice_steps": int(p.notice_steps[b]), "forced_by": why})
    for m, ev, state, name in ((p.min_off_steps, starts, shed, "minimum off time"),
                               (p.min_on_steps, stops, 1 - shed, "minimum on time")):
        if m > 1:
            for t in range(T):
                recent = ev[:, max(0, t - m + 1):t + 1].sum(axis=1)
                for b in np.flatnonzero((recent > 0) & (state[:, t] < 0.5)):
                    out.append({"rule": name, "step": t, "block": int(p.block_ids[b]), "steps": m, "forced_by": why})
    if p.switching_budget is not None:
        ops = int(starts.sum() + stops.sum())
        if ops > p.switching_budget:
            out.append({"rule": "switching budget", "operations": ops, "budget": int(p.switching_budget),
                        "forced_by": why})
    return out


def _lower_rule_reason(p: ShedProblem, shed: np.ndarray, b: int, t: int) -> str:
    if p.max_outage_steps is not None:
        run = 0
        for k in range(t - 1, -1, -1):
            if shed[b, k] < 0.5:
                break
            run += 1
        if run >= p.max_outage_steps[b]:
            return "longest outage reached"
    return "network feasibility or supply balance"


def greedy_shed(p: ShedProblem) -> np.ndarray:
    """The counterfactual: a plain priority-order shed, each step on its own: the least critical tier
    first and within a tier the largest net load first, subtree with its block (never a block that
    feeds a more critical one), until the deficit is covered. No rotation, contracts or network."""
    B, T = p.shape
    _, why = tier_exempt(p)
    ok = why == ""  # sheddable, and feeding nothing more critical
    children = _children(p.parent)

    def subtree(b):
        out, stack = [], [b]
        while stack:
            c = stack.pop()
            out.append(c)
            stack.extend(children.get(c, []))
        return out

    shed = np.zeros((B, T))
    order = sorted(np.flatnonzero(ok), key=lambda b: (-p.tier[b], -p.net_mw[b].mean()))
    for t in range(T):
        need = p.deficit_mw[t]
        for b in order:
            if need <= 1e-9:
                break
            if shed[b, t] or p.net_mw[b, t] <= 0:
                continue
            sub = [c for c in subtree(b) if not shed[c, t]]
            shed[sub, t] = 1.0
            need -= p.net_mw[sub, t].sum()
    return shed


def rotation_shed(p: ShedProblem, presolve_tiers: bool = True) -> np.ndarray:
    """A rolling-outage schedule built step by step, the way a control room rotates blocks: tier order
    settled first (``tier_fixing``), then in the marginal tier, blocks still inside their minimum off
    time stay out, blocks already out continue while under their longest outage, and new outages go
    to the blocks served longest (fairness), cheapest first; a block whose start would break a lower
    rule (contract interruptions or notice, longest outage, minimum on time) is taken only when no
    rule-keeping block is left, the lower rule first. The step's surplus is then trimmed (the largest
    new outages that are not needed go back). Used as the program's incumbent and as a schedule of its
    own when the program runs out of time."""
    B, T = p.shape
    ok = effective_sheddable(p)
    exempt, _ = tier_exempt(p)
    if presolve_tiers:
        fix1, fix0, _ = tier_fixing(p)
    else:
        fix1, fix0 = np.zeros((B, T), bool), np.zeros((B, T), bool)
    allowed = ok[:, None] & ~fix0
    target = np.minimum(p.deficit_mw, achievable_shed(p, allowed))
    children = _children(p.parent)
    subtree: list[list[int]] = []
    for b in range(B):
        out, stack = [], [b]
        while stack:
            c = stack.pop()
            out.append(c)
            stack.extend(children.get(c, []))
        subtree.append(out)
    L = p.max_outage_steps if p.max_outage_steps is not None else np.full(B, 10**6)
    left = (p.interruptions_left.astype(float) if p.interruptions_left is not None else np.full(B, -1.0))
    left = np.where(left < 0, np.inf, left)
    notice = p.notice_steps if p.notice_steps is not None else np.zeros(B, int)
    was = _shed_now(p) > 0.5
    run = np.where(was, _shed_for(p), 0).astype(int)  # steps in the current outage
    on_for = np.where(was, 0, 10**6).astype(int)  # steps served since the last restore
    last = np.where(was, 0, -(10**6)).astype(int)  # the step of the last outage (fairness)
    rate = p.cost_rate()
    x = np.zeros((B, T), bool)
    for t in range(T):
        cur = fix1[:, t].copy()
        for b in np.flatnonzero(cur):
            cur[subtree[b]] = True

        # 0: shedding the block now keeps every lower rule; 1: breaks a minimum on time (rule 6);
        # 2: a contract or the longest outage (rule 5): taken last
        lvl = np.where(was, np.where(run >= L, 2, 0),
                       np.where((left < 1) | (t < notice), 2, np.where(on_for < p.min_on_steps, 1, 0)))

        need = target[t] - p.net_mw[cur, t].sum()
        must = [b for b in np.flatnonzero(was & ~cur & allowed[:, t]) if run[b] < p.min_off_steps
                and all(allowed[c, t] for c in subtree[b])]
        for b in must:
            if need <= 1e-9 and exempt[b, t]:
                continue
            add = [c for c in subtree[b] if not cur[c]]
            cur[add] = True
            need -= p.net_mw[add, t].sum()
        if need > 1e-9:
            cand = [b for b in np.flatnonzero(allowed[:, t] & ~cur & ~exempt[:, t])
                    if all(allowed[c, t] for c in subtree[b])]
            cand.sort(key=lambda b: (lvl[b], not was[b], last[b], rate[b, t] / max(p.net_mw[b, t], 1e-9), rate[b, t]))
            new = []
            for b in cand:
                if need <= 1e-9:
                    break
                add = [c for c in subtree[b] if not cur[c]]
                gain = p.net_mw[add, t].sum()
                if gain <= 1e-9:
                    continue
                cur[add] = True
                need -= gain
                new.append((b, add, gain))
            # trim: the largest new outages whose removal still covers the step go back
            for b, add, gain in sorted(new, key=lambda r: -r[2]):
                if -need >= gain - 1e-9:
                    cur[add] = False
                    need += gain
        x[:, t] = cur
        starts = cur & ~was
        left = np.where(starts, left - 1, left)
        run = np.where(cur, np.where(was, run + 1, 1), 0)
        on_for = np.where(cur, 0, np.where(was, 1, on_for + 1))
        last = np.where(cur, t, last)
        was = cur
    return x.astype(float)
