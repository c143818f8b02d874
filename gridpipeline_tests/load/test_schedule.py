"""From a dispatch plan to a shed schedule on the sample world: the deficit is what the plan leaves
above the import limit, blocks shed their net load, protected loads stay on, and the record carries
the deficit, the blocks, their cost and the greedy counterfactual."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandapower as pp
import pandas as pd
import pytest

from gridpipeline.load.policy import PolicyError, parse_policy
from gridpipeline.load.priorities import priorities_for
from gridpipeline.load.schedule import ShedHistory, block_loads, deficit_from_plan, from_plan, shed_history
from gridpipeline.settings import PROJECT_ROOT

SAMPLE = PROJECT_ROOT / "data" / "sample_grid"
T0 = datetime(2026, 6, 15, 18, 0)


@pytest.fixture(scope="module")
def sample():
    net = pp.from_json(str(SAMPLE / "network.json"))
    pr = priorities_for(net, SAMPLE / "customers.csv", PROJECT_ROOT / "data" / "load_policy.yaml")
    return net, pr


def _plan(net_after: list[float], demand: float = 30.0) -> pd.DataFrame:
    T = len(net_after)
    return pd.DataFrame({"step": range(T), "step_ts": pd.date_range(T0, periods=T, freq="5min"),
                         "net_load_after_mw": net_after, "battery_mw": [-1.0] * T,
                         "demand_p50_mw": [demand] * T})


def test_the_deficit_is_what_the_plan_leaves_above_the_import_limit():
    d = deficit_from_plan(_plan([9.0, 10.5, 12.0, 10.0]), 10.0)
    assert d.tolist() == [0.0, 0.5, 2.0, 0.0]


def test_block_loads_share_the_forecast_and_subtract_local_generation(sample):
    net, pr = sample
    ids, gross, netl = block_loads(pr, net, np.array([30.0, 30.0]), {"pv": np.array([0.0, 0.5])})
    assert gross.sum(axis=0) == pytest.approx([30.0, 30.0])  # every load sits in a block
    assert (netl[:, 0] == gross[:, 0]).all()  # no sun: net = gross
    sc = net.sgen["scaling"].fillna(1.0) if "scaling" in net.sgen else 1.0
    pv_mw = float((net.sgen.p_mw * sc).sum())
    # a generator without a kind counts as PV, so half of all rated generation comes off at step 1
    assert gross[:, 1].sum() - netl[:, 1].sum() == pytest.approx(0.5 * pv_mw, rel=1e-9)


def test_a_plan_within_the_limit_sheds_nothing(sample):
    net, pr = sample
    assert from_plan(pr, net, _plan([8.0] * 6), {}, import_limit_mw=10.0) is None


def test_a_deficit_is_shed_within_tier_order_and_recorded(sample):
    net, pr = sample
    plan = _plan([10.0, 11.0, 12.0, 12.0, 11.5, 10.0], demand=30.0)
    dec = from_plan(pr, net, plan, {}, import_limit_mw=10.0, mode="automatic")
    assert dec is not None
    p, r, body = dec.problem, dec.result, dec.body
    need = p.deficit_mw
    assert (r.shed_mw >= need - 1e-6).all()  # the deficit is covered at every step
    # protected blocks never shed
    prot = pr.table.index[pr.table.protected]
    assert not set(dec.frame.block_id) & set(prot)
    # tier order: at each step, no less critical sheddable block is served while a more critical one is out,
    # unless the audit names a network reason
    assert not [v for v in r.violations if v["rule"] == "tier order"]
    assert body["deficit_mw"][2] == pytest.approx(2.0)
    assert body["counterfactual"]["cost_eur"] >= body["cost_eur"] - 1e-6
    assert body["first_step_blocks"] == [] and body["starts"]  # no deficit at step 0, outages start later
    assert dec.mode == "automatic" and not body["escalated"]
    assert {"block", "tier", "steps", "net_mwh", "cost_eur"} <= set(body["blocks"][0])


def test_a_deficit_beyond_every_sheddable_block_escalates_to_an_operator(sample):
    net, pr = sample
    dec = from_plan(pr, net, _plan([500.0, 500.0]), {}, import_limit_mw=10.0, mode="automatic")
    assert dec.body["escalated"] and dec.mode == "approve"
    assert max(dec.body["unserved_mw"]) > 0
    prot = set(pr.table.index[pr.table.protected])
    assert not set(dec.frame.block_id) & prot
    assert "operator decides" in dec.body["summary"]


def test_history_counts_outages_in_progress_and_contract_use():
    now = datetime(2026, 6, 15, 18, 10)
    recs = [{"mode": "automatic", "created_at": now - timedelta(minutes=10),
             "body": {"first_step_blocks": [5], "starts": [{"block": 5, "at": str(now - timedelta(minutes=10))}]}},
            {"mode": "automatic", "created_at": now - timedelta(minutes=5),
             "body": {"first_step_blocks": [5, 7], "starts": [{"block": 7, "at": str(now - timedelta(minutes=5))},
                                                              {"block": 9, "at": str(now + timedelta(minutes=20))}]}},
            {"mode": "approve", "state": "rejected", "created_at": now,
             "body": {"first_step_blocks": [11], "starts": [{"block": 11, "at": str(now)}]}}]
    h = shed_history(recs, now)
    assert h.shed_now == {5: 2, 7: 1}  # the rejected one never happened; block 9 starts later
    assert h.today == {5: 1, 7: 1} and h.month == {5: 1, 7: 1}
    assert shed_history([], now) == ShedHistory.empty()


def test_rotation_settings_are_validated():
    base = {"tiers": [{"tier": 1, "classes": ["critical"]}, {"tier": 2, "classes": ["industrial", "commercial",
                                                                                     "residential"]}],
            "voll_eur_mwh": {"residential": 1, "commercial": 1, "industrial": 1, "critical": 1}}
    assert parse_policy(base).rotation.max_outage_min == 60
    with pytest.raises(PolicyError, match=r"rotation: min_off_min \(90.0\) is above max_outage_min"):
        parse_policy({**base, "rotation": {"min_off_min": 90}})
    with pytest.raises(PolicyError, match="rotation: 'switching_per_hour' must be at least 1"):
        parse_policy({**base, "rotation": {"switching_per_hour": 0}})


def test_import_limit_instructions_apply_over_their_steps_and_end():
    from gridpipeline.load.cli import import_limit_record
    from gridpipeline.storage.inputs import active_import_limit, import_limit_steps

    now = datetime(2026, 6, 15, 18, 0)
    body = import_limit_record(2.0, 30, "ana", "TSO", start=now + timedelta(minutes=10), now=now)
    recs = [{"kind": "import_limit", "id": "a1", "created_at": now, "body": body}]
    ins = active_import_limit(recs, now)
    assert ins["mw"] == 2.0 and ins["start"] == now + timedelta(minutes=10) and ins["id"] == "a1"
    times = pd.date_range(pd.Timestamp(now, tz="UTC"), periods=12, freq="5min")
    lim = import_limit_steps(times, 10.0, ins)
    assert lim.tolist() == [10.0, 10.0] + [2.0] * 6 + [10.0] * 4  # 18:10 .. 18:40, announced ahead
    assert active_import_limit(recs, now + timedelta(minutes=41)) is None  # over
    rel = recs + [{"kind": "import_limit", "id": "a2", "created_at": now,
                   "body": import_limit_record(None, None, "ana", "", release=True, now=now)}]
    assert active_import_limit(rel, now) is None
    with pytest.raises(ValueError, match="--mw is required"):
        import_limit_record(None, 30, "ana", "")
    with pytest.raises(ValueError, match="operator name"):
        import_limit_record(1.0, 30, " ", "")


def test_the_schedule_in_force_is_the_newest_executable_one_covering_now():
    from gridpipeline.load.schedule import blocks_due, schedule_in_force

    t0 = pd.Timestamp("2026-11-03 10:00")
    def rec(seq, start, steps):
        return {"seq": seq, "id": f"s{seq}", "body": {"horizon": {"start": str(start), "steps": len(steps),
                                                                  "step_minutes": 5}, "out_by_step": steps}}
    old, new = rec(1, t0, [[1], [1, 2], [2]]), rec(2, t0 + pd.Timedelta(minutes=5), [[3], [3]])
    assert blocks_due(old["body"], t0 + pd.Timedelta(minutes=7)) == [1, 2]
    assert blocks_due(old["body"], t0 + pd.Timedelta(minutes=15)) is None  # past its horizon
    now = t0 + pd.Timedelta(minutes=7)
    assert schedule_in_force([old, new], {"s1": "approved", "s2": "automatic"}, now) == (new, [3])
    # the newest is still waiting for approval: the older approved one stays in force
    assert schedule_in_force([old, new], {"s1": "approved", "s2": "pending"}, now) == (old, [1, 2])
    assert schedule_in_force([old, new], {"s1": "rejected", "s2": "pending"}, now) == (None, [])


def test_an_overload_dispatch_left_is_relieved_by_blocks_fed_through_the_branch_without_any_deficit(sample):
    """No supply deficit, but a feeder head above its limit in the grid state: the schedule sheds blocks fed
    through it until their net load covers the excess over the limit, and none elsewhere; an N-1 overload
    becomes a row in % of loading with each block's sensitivity from the relief table."""
    from gridpipeline.load.network import network_rows
    from gridpipeline.load.overload import element_rating_mva, fed_through

    net, pr = sample
    line = 175
    rating = element_rating_mva(net, ("line", line))
    bn = pd.DataFrame({"element_type": ["line"], "element_id": [line], "quantity": ["loading_percent"],
                       "value": [115.0], "limit": [100.0]})
    plan = _plan([8.0] * 6, demand=30.0)
    assert from_plan(pr, net, plan, {}, import_limit_mw=10.0) is None  # within the import limit
    dec = from_plan(pr, net, plan, {}, import_limit_mw=10.0, mode="automatic", network={"bottlenecks": bn})
    assert dec is not None
    p, r = dec.problem, dec.result
    downstream = set(fed_through(pr.blocks, net, ("line", line)))
    shed_blocks = set(dec.frame.block_id)
    assert shed_blocks and shed_blocks <= downstream
    need = 0.15 * rating
    assert p.relief_mw[0, 0] == pytest.approx(need)
    for t in range(p.shape[1]):
        relief = float((p.net_mw[:, t] * (r.shed[:, t] > 0.5) * p.sensitivity[0]).sum())
        assert relief >= need - 1e-6 or [v for v in r.violations if v["rule"] == "network feasibility"]
    assert dec.body["inputs"]["network_rows"][0]["element"].startswith("overload line 175")
    # N-1: two loads of one block relieve the target by 2 and 1 % per MW
    lb = pr.blocks.load_block(net)
    loads = lb[lb == lb.value_counts().index[0]].index[:2]
    rel = pd.DataFrame({"contingency": "line:1", "target": "line:2", "element_type": "load",
                        "element_id": [int(loads[0]), int(loads[1])], "p_mw": [1.0, 2.0],
                        "sensitivity_pct_per_mw": [2.0, 1.0], "target_loading_percent": 110.0})
    ids = pr.blocks.table.index.to_numpy(dtype=int)
    netl = np.full((len(ids), 3), 4.0)
    rows = network_rows(net, pr.blocks, ids, netl, np.array([30.0, 30.0, 33.0]), None, rel)
    k = list(ids).index(int(lb[loads[0]]))
    assert rows.sensitivity[0, k] == pytest.approx((2.0 * 1.0 + 1.0 * 2.0) / 4.0)
    assert rows.relief[0].tolist() == pytest.approx([10.0, 10.0, 11.0])
    assert rows.labels == ["N-1 line:1: line:2 at 110.0 %"]
