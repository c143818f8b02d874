"""From a dispatch plan to a shed schedule: the deficit dispatch cannot cover, the shed problem on the
network's blocks, and the decision record with its justification.

The **deficit** is what the dispatch plan leaves above the import limit: its net load after the
batteries and curtailment (``storage.cycle``'s substation frame: forecast demand less generation,
with the fleet already discharging as far as its power and energy allow) less the limit. That is
the issue's "forecast demand above import plus generation plus storage capability", counted by the
same plan that the batteries follow, so a shed never covers what a battery could.

Each block's load over the horizon is the system demand forecast shared out by the block's rated
load (the pipeline has no per-block forecast); its local generation is the rated output of its
generators times their kind's forecast capacity factor. Its net load is the difference: what opening
its switch takes off the grid.

State before the first step (which blocks are out now, and since when) and the contracts' use this
day and month come from the ledger's earlier shed records (``shed_history``).

Pure functions; the Dagster asset and the dispatcher call them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from gridpipeline.load.policy import Policy
from gridpipeline.load.priorities import Priorities
from gridpipeline.load.shed import ShedProblem, ShedResult, audit, greedy_shed, solve_shed

#: deficits below this are noise in a forecast, not a reason to shed (MW)
MIN_DEFICIT_MW = 1e-3
#: steps a shed schedule looks ahead (5-minute steps: two hours)
HORIZON_STEPS = 24
STEP = timedelta(minutes=5)


def deficit_from_plan(substation: pd.DataFrame, import_limit_mw: float | np.ndarray) -> pd.Series:
    """MW per step the plan's net load after the fleet stays above the import limit (a scalar, or one
    per step of ``substation``; 0 where it does not), indexed by ``step_ts``."""
    lim = np.broadcast_to(np.asarray(import_limit_mw, float), (len(substation),))
    d = substation.set_index("step_ts").net_load_after_mw.astype(float) - lim
    return d.clip(lower=0.0).where(lambda v: v > MIN_DEFICIT_MW, 0.0)


def block_loads(pr: Priorities, net, demand_mw: np.ndarray, gen_factor: dict[str, np.ndarray]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(block ids (B,), gross load (B, T), net load (B, T)) for every block of the network, the source
    included: ``demand_mw`` (T,) the system demand forecast shared by rated load; ``gen_factor`` kind
    -> (T,) forecast output per MW of rating (a generator whose profile names no known kind counts as
    PV, the common case on distribution feeders)."""
    table = pr.blocks.table
    ids = table.index.to_numpy(dtype=int)
    pos = {int(b): k for k, b in enumerate(ids)}
    T = len(demand_mw)
    ld = net.load
    sc = ld["scaling"].fillna(1.0).to_numpy(float) if "scaling" in ld else np.ones(len(ld))
    rated = ld.p_mw.to_numpy(float) * sc
    share = rated / max(rated.sum(), 1e-9)
    lb = pr.blocks.load_block(net).to_numpy()
    gross = np.zeros((len(ids), T))
    for k, b in enumerate(lb):
        if not pd.isna(b):
            gross[pos[int(b)]] += share[k] * np.asarray(demand_mw, float)
    gen = np.zeros((len(ids), T))
    sg = net.sgen
    if len(sg):
        sb = pr.blocks.bus_block.reindex(sg.bus).to_numpy()
        ssc = sg["scaling"].fillna(1.0).to_numpy(float) if "scaling" in sg else np.ones(len(sg))
        rating = sg.p_mw.to_numpy(float) * ssc
        kinds = _generator_kinds(sg)
        for k, b in enumerate(sb):
            if pd.isna(b) or int(b) not in pos:
                continue
            f = gen_factor.get(kinds[k], gen_factor.get("pv", np.zeros(T)))
            gen[pos[int(b)]] += rating[k] * np.asarray(f, float)
    return ids, gross, gross - gen


def _generator_kinds(sg: pd.DataFrame) -> list[str]:
    prof = sg["profile"].astype(str).str.lower() if "profile" in sg else pd.Series("", index=sg.index)
    typ = sg["type"].astype(str).str.lower() if "type" in sg else pd.Series("", index=sg.index)
    out = []
    for p, t in zip(prof, typ):
        s = f"{p} {t}"
        out.append("wind" if "wind" in s else "pv")
    return out


@dataclass(frozen=True)
class ShedHistory:
    """What earlier shed records say: blocks out before the first step and for how many steps, and
    how many interruptions each block has had this day and this month."""

    shed_now: dict[int, int]  # block -> steps out so far
    today: dict[int, int]
    month: dict[int, int]

    @staticmethod
    def empty() -> ShedHistory:
        return ShedHistory({}, {}, {})


def shed_history(records: list[dict], now: datetime) -> ShedHistory:
    """From the ledger's ``shed`` records (oldest first, each body with ``first_step_blocks`` and
    ``starts``: [{block, at}]): the newest committed record's first-step blocks are out now (for as
    many consecutive records as they appear in), and the interruptions started this UTC day and month."""
    shed_now: dict[int, int] = {}
    today: dict[int, int] = {}
    month: dict[int, int] = {}
    committed = [r for r in records if (r.get("state") or r.get("mode")) in ("automatic", "approved")]
    for r in committed:
        for s in r["body"].get("starts", []):
            at = pd.Timestamp(s["at"]).to_pydatetime().replace(tzinfo=None)
            if at > now:
                continue
            b = int(s["block"])
            if at.date() == now.date():
                today[b] = today.get(b, 0) + 1
            if (at.year, at.month) == (now.year, now.month):
                month[b] = month.get(b, 0) + 1
    if committed:
        newest = committed[-1]
        age = now - pd.Timestamp(newest["created_at"]).to_pydatetime().replace(tzinfo=None)
        if age <= 2 * STEP:
            for b in newest["body"].get("first_step_blocks", []):
                n = 0
                for r in reversed(committed):
                    if int(b) in r["body"].get("first_step_blocks", []):
                        n += 1
                    else:
                        break
                shed_now[int(b)] = n
    return ShedHistory(shed_now, today, month)


def history_from_ledger(ledger, now: datetime, chain: str = "live") -> ShedHistory:
    """:func:`shed_history` on the ledger's ``shed`` records with their states (approved, rejected...)."""
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    recs = ledger.records(chain, kind="shed", since=month)
    if not recs:
        return ShedHistory.empty()
    st = ledger.status(now, chain, since=month)
    state = dict(zip(st.id, st.state)) if len(st) else {}
    return shed_history([{**r, "state": state.get(r["id"])} for r in recs], now)


def build_problem(pr: Priorities, net, deficit_mw: np.ndarray, demand_mw: np.ndarray,
                  gen_factor: dict[str, np.ndarray], history: ShedHistory | None = None,
                  dt_h: float = 5 / 60, network: dict | None = None) -> ShedProblem:
    """The :class:`ShedProblem` for the network's blocks under the policy, over ``len(deficit_mw)``
    steps of ``dt_h`` hours."""
    policy: Policy = pr.policy
    history = history or ShedHistory.empty()
    ids, gross, netl = block_loads(pr, net, demand_mw, gen_factor)
    B, T = gross.shape
    pos = {int(b): k for k, b in enumerate(ids)}
    table = pr.blocks.table
    prio = pr.table
    least = max(policy.tier_names) if policy.tier_names else 4
    tier = np.array([int(prio.tier.get(b, least)) if b in prio.index else least for b in ids])
    protected = np.array([bool(prio.protected.get(b, False)) if b in prio.index else False for b in ids])
    switchable = table.switchable.reindex(ids).fillna(False).to_numpy(bool)
    parent = np.array([pos.get(int(a), -1) if not pd.isna(a) and int(a) >= 0 else -1
                       for a in table.parent.reindex(ids).to_numpy()])
    # the value of lost load of each block: its classes' values weighted by rated load
    loads = pr.loads
    rated = net.load.p_mw.reindex(loads.load_id).to_numpy(float)
    voll_l = loads["class"].map(policy.voll_eur_mwh).fillna(max(policy.voll_eur_mwh.values())).to_numpy(float)
    num = pd.Series(rated * voll_l).groupby(loads.block_id.to_numpy()).sum()
    den = pd.Series(rated).groupby(loads.block_id.to_numpy()).sum()
    vb = (num / den.replace(0, np.nan)).reindex(ids).fillna(min(policy.voll_eur_mwh.values())).to_numpy(float)
    # contracts, per block: the interruptible MW, its compensation, interruptions left, notice, longest outage
    step_min = dt_h * 60
    rot = policy.rotation
    max_out = np.full(B, max(int(rot.max_outage_min // step_min), 1))
    interr = np.zeros(B)
    comp = vb.copy()
    left = np.full(B, -1)
    notice = np.zeros(B, int)
    lb = pr.blocks.load_block(net)
    for c in policy.contracts:
        b = lb.get(c.load_id)
        if b is None or pd.isna(b) or int(b) not in pos:
            continue
        k = pos[int(b)]
        interr[k] += c.interruptible_mw
        comp[k] = c.compensation_eur_mwh if interr[k] == c.interruptible_mw else min(comp[k], c.compensation_eur_mwh)
        room = min(c.max_per_day - history.today.get(int(b), 0), c.max_per_month - history.month.get(int(b), 0))
        left[k] = max(room, 0) if left[k] < 0 else min(left[k], max(room, 0))
        notice[k] = max(notice[k], int(np.ceil(c.notice_min / step_min)))
        max_out[k] = min(max_out[k], max(int(c.max_duration_min // step_min), 1))
    shed_now = np.zeros(B, bool)
    shed_for = np.zeros(B, int)
    for b, n in history.shed_now.items():
        if b in pos:
            shed_now[pos[b]], shed_for[pos[b]] = True, n
    hours = T * dt_h
    rows = None
    if network:  # overloads now and after the worst outage (load.network)
        from gridpipeline.load.network import network_rows

        rows = network_rows(net, pr.blocks, ids, netl, demand_mw, network.get("bottlenecks"),
                            network.get("relief"), network.get("load_p"))
    return ShedProblem(
        sensitivity=None if rows is None else rows.sensitivity, relief_mw=None if rows is None else rows.relief,
        element_names=() if rows is None else tuple(rows.labels),
        block_ids=ids, net_mw=netl, load_mw=gross, voll=vb, tier=tier,
        sheddable=switchable & ~protected & (parent >= 0), parent=parent, deficit_mw=np.asarray(deficit_mw, float),
        dt_h=dt_h, interruptible_mw=interr, compensation=comp, interruptions_left=left, notice_steps=notice,
        max_outage_steps=max_out, min_off_steps=max(int(np.ceil(rot.min_off_min / step_min)), 1),
        min_on_steps=max(int(np.ceil(rot.min_on_min / step_min)), 1),
        switching_budget=max(int(rot.switching_per_hour * hours), 1),
        shed_now=shed_now, shed_for_steps=shed_for)


@dataclass
class ShedDecision:
    problem: ShedProblem
    result: ShedResult
    greedy: np.ndarray
    times: pd.DatetimeIndex
    body: dict
    mode: str
    frame: pd.DataFrame  # one row per shed block and step


def decide(p: ShedProblem, times: pd.DatetimeIndex, inputs: dict, mode: str, time_limit_s: float = 20.0,
           dr_called: list | None = None) -> ShedDecision:
    """Solve, compare with the greedy priority order, and build the record's body. The mode turns to
    ``approve`` whatever it was when balance needs a protected load (the schedule cannot cover the
    deficit): an operator must decide."""
    r = solve_shed(p, time_limit_s=time_limit_s)
    g = greedy_shed(p)
    rate = p.cost_rate()
    greedy_cost = float((rate * g).sum())
    shed = r.shed > 0.5
    prev = p.shed_now.astype(bool) if p.shed_now is not None else np.zeros(p.shape[0], bool)
    starts = []
    was = prev.copy()
    for t in range(p.shape[1]):
        for b in np.flatnonzero(shed[:, t] & ~was):
            starts.append({"block": int(p.block_ids[b]), "at": str(times[t])})
        was = shed[:, t]
    unserved = float(r.unserved_deficit_mw.max()) if len(r.unserved_deficit_mw) else 0.0
    escalate = unserved > 1e-6
    rows = []
    for b in np.flatnonzero(shed.any(axis=1)):
        rows.append({"block": int(p.block_ids[b]), "tier": int(p.tier[b]), "steps": int(shed[b].sum()),
                     "net_mwh": round(float((p.net_mw[b] * shed[b]).sum() * p.dt_h), 4),
                     "cost_eur": round(float((rate[b] * shed[b]).sum()), 2)})
    broken = {}
    for v in r.violations:
        broken[v["rule"]] = broken.get(v["rule"], 0) + 1
    body = {
        "summary": (f"shed up to {float(r.shed_mw.max()):.3f} MW in {len(rows)} blocks over {p.shape[1]} steps "
                    f"for a deficit of up to {float(p.deficit_mw.max()):.3f} MW; cost {r.cost_eur:,.0f} EUR "
                    f"(greedy priority order: {greedy_cost:,.0f} EUR)"
                    + (f"; network relief for {len(p.element_names)} overloaded elements" if p.element_names else "")
                    + (f"; {unserved:.3f} MW cannot be covered without a protected load: operator decides"
                       if escalate else "")),
        "horizon": {"start": str(times[0]), "steps": int(p.shape[1]), "step_minutes": round(p.dt_h * 60, 3)},
        "deficit_mw": [round(float(v), 4) for v in p.deficit_mw],
        "dr_called": dr_called or [],
        "blocks": rows,
        "first_step_blocks": [int(b) for b in p.block_ids[shed[:, 0]]] if p.shape[1] else [],
        # what the switching follows (the responder executes it once automatic or approved)
        "out_by_step": [[int(b) for b in p.block_ids[shed[:, t]]] for t in range(p.shape[1])],
        "starts": starts,
        "cost_eur": round(r.cost_eur, 2),
        "counterfactual": {"method": "greedy priority order (least critical tier first, largest block first, "
                                     "each step on its own, no rotation, contracts or network)",
                           "cost_eur": round(greedy_cost, 2), "rule_breaks": len(audit(p, g)),
                           "saving_eur": round(greedy_cost - r.cost_eur, 2)},
        "solver": {"status": r.status, "gap": None if r.gap is None else round(float(r.gap), 5),
                   "seconds": round(r.seconds, 3), "source": r.source,
                   "cost_lower_bound": round(float(r.cost_lower_bound), 2)},
        "rules_given_way": broken,
        "violations": r.violations[:50],
        "unserved_mw": [round(float(v), 4) for v in r.unserved_deficit_mw],
        "escalated": escalate,
        "inputs": inputs,
    }
    frame = r.frame(p)
    frame["step_ts"] = times[frame.step.to_numpy()] if len(frame) else pd.Series([], dtype="datetime64[ns]")
    return ShedDecision(p, r, g, times, body, "approve" if escalate else mode, frame)


def plan_deficit(substation: pd.DataFrame, import_limit_mw: float | np.ndarray,
                 horizon_steps: int = HORIZON_STEPS) -> pd.Series:
    """The deficit (MW) a dispatch plan leaves over the shed horizon, per step start: its net load
    above ``import_limit_mw`` (before any DR or shed)."""
    order = substation.step.to_numpy().argsort(kind="stable")[:horizon_steps]
    sub = substation.iloc[order].reset_index(drop=True)
    lim = np.asarray(import_limit_mw, float)
    lim = lim[order] if lim.ndim else lim
    return pd.Series(deficit_from_plan(sub, lim).to_numpy(float), index=pd.DatetimeIndex(sub.step_ts))


def from_plan(pr: Priorities, net, substation: pd.DataFrame, renewables: dict[str, pd.DataFrame],
              import_limit_mw: float | np.ndarray, history: ShedHistory | None = None, mode: str = "approve",
              horizon_steps: int = HORIZON_STEPS, inputs: dict | None = None, time_limit_s: float = 20.0,
              demand_response=None, network: dict | None = None) -> ShedDecision | None:
    """The shed decision for a dispatch plan (its ``substation`` frame and ``renewables`` forecasts,
    on the plan's steps), or ``None`` when the plan stays within ``import_limit_mw`` over the shed
    horizon. ``demand_response``: called with the deficit (MW per step start) before the shed is
    solved; returns (the deficit it leaves, the calls made), so DR is called first wherever its
    notice allows and the schedule sheds only what is left. ``network``: the newest ``bottlenecks``
    and N-1 ``relief`` tables (and ``load_p``, the estimated loads), whose overloads become network
    rows (``load.network``); an overload dispatch has not relieved triggers a schedule on its own."""
    order = substation.step.to_numpy().argsort(kind="stable")[:horizon_steps]
    sub = substation.iloc[order].reset_index(drop=True)
    lim = np.asarray(import_limit_mw, float)
    lim = lim[order] if lim.ndim else lim
    deficit = plan_deficit(substation, import_limit_mw, horizon_steps).to_numpy()
    overloaded = _overloaded(network)
    if not (deficit > 0).any() and not overloaded:
        return None
    times = pd.DatetimeIndex(sub.step_ts)
    before_dr, dr_called = deficit.copy(), []
    if demand_response is not None and (deficit > 0).any():
        left, dr_called = demand_response(pd.Series(deficit, index=times))
        deficit = np.asarray(left, float)
        if not (deficit > MIN_DEFICIT_MW).any() and not overloaded:
            return None
    T = len(sub)
    dt_h = (times[1] - times[0]).total_seconds() / 3600 if T > 1 else 5 / 60
    factor = {}
    for kind, fc in renewables.items():
        cap = float(np.nanmax(fc.capacity_mw)) if "capacity_mw" in fc and np.isfinite(fc.capacity_mw).any() else 0.0
        factor[kind] = (np.clip(fc.p50.to_numpy(float)[:T], 0, None) / cap) if cap > 0 else np.zeros(T)
    p = build_problem(pr, net, deficit, sub.demand_p50_mw.to_numpy(float), factor, history, dt_h,
                      network=network if overloaded else None)
    if not (deficit > MIN_DEFICIT_MW).any() and (p.relief_mw is None or not (p.relief_mw > 1e-6).any()):
        return None
    info = {"import_limit_mw": [round(float(v), 4) for v in np.broadcast_to(lim, (T,))],
            "net_load_after_fleet_mw": [round(float(v), 4) for v in sub.net_load_after_mw],
            "fleet_mw": [round(float(v), 4) for v in sub.battery_mw],
            "demand_p50_mw": [round(float(v), 4) for v in sub.demand_p50_mw],
            "policy_sha256": pr.policy_sha256[:12], **(inputs or {})}
    if demand_response is not None:
        info["deficit_before_dr_mw"] = [round(float(v), 4) for v in before_dr]
    if p.relief_mw is not None:
        info["network_rows"] = [{"element": n, "relief_first_step": round(float(p.relief_mw[k, 0]), 4),
                                 "blocks_relieving": int((p.sensitivity[k] > 0).sum())}
                                for k, n in enumerate(p.element_names)]
    return decide(p, times, info, mode, time_limit_s=time_limit_s, dr_called=dr_called)


def _overloaded(network: dict | None) -> bool:
    """Whether the network inputs show a branch over its limit now or under the worst outage."""
    if not network:
        return False
    bn, rl = network.get("bottlenecks"), network.get("relief")
    now = bn is not None and len(bn) and bool(((bn.quantity == "loading_percent") & (bn.value > bn["limit"])).any())
    n1 = rl is not None and len(rl) and bool((rl.target_loading_percent > 100.0).any())
    return bool(now or n1)


def blocks_due(body: dict, now) -> list[int] | None:
    """The blocks a shed record's schedule has out at ``now``: None outside its horizon."""
    h = body.get("horizon") or {}
    steps = body.get("out_by_step")
    if not h or steps is None:
        return None
    start = pd.Timestamp(h["start"])
    start = start.tz_convert(None) if start.tzinfo is not None else start
    k = int((pd.Timestamp(now) - start) // pd.Timedelta(minutes=float(h.get("step_minutes", 5))))
    if k < 0 or k >= len(steps):
        return None
    return [int(b) for b in steps[k]]


def schedule_in_force(shed_records: list[dict], states: dict[str, str], now) -> tuple[dict | None, list[int]]:
    """The shed record whose schedule the field follows at ``now`` and its blocks due: the newest one
    that may be executed (automatic, or approved by an operator) and whose horizon covers ``now``.
    ``states``: decision id -> state (``Ledger.status``). (None, []) when none is in force: every block
    shed by a schedule goes back."""
    for r in sorted(shed_records, key=lambda x: x["seq"], reverse=True):
        if states.get(r["id"]) not in ("automatic", "approved"):
            continue
        due = blocks_due(r["body"], now)
        if due is not None:
            return r, due
    return None, []
