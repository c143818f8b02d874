"""Reliability indices on a hand-computed case, the 2.5 beta method, and the records they come from."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from gridpipeline.load.reliability import (
    customer_interruptions,
    indices,
    interruptions_from_records,
    interruptions_from_switching,
    major_event_days,
    report,
)

T0 = datetime(2026, 11, 3, 10, 0)

# block 1 (feeder 1) feeds block 2; block 3 is feeder 3. 200 customers in all.
LOADS = pd.DataFrame({"load_id": [10, 11, 20, 30], "block_id": [1, 1, 2, 3],
                      "class": ["residential", "commercial", "residential", "residential"],
                      "customers": [100, 10, 50, 40], "feeder": [1, 1, 1, 3], "rated_mw": [0.3, 0.1, 0.2, 0.4]})
TREE = {1: [1, 2], 2: [2], 3: [3]}


def _intr(rows):
    return pd.DataFrame([{"block_id": b, "start": T0 + timedelta(minutes=s), "end": T0 + timedelta(minutes=e),
                          "mw": mw, "decision": None, "event": None, "still_out": False} for b, s, e, mw in rows])


def test_indices_match_a_hand_computed_day():
    # block 2 out 30 min (50 customers, sustained); block 3 out 3 min (40 customers, momentary)
    ci = customer_interruptions(_intr([(2, 0, 30, 0.2), (3, 0, 3, 0.4)]), LOADS, TREE.get)
    out = indices(ci, LOADS).set_index(["scope", "key"])
    sysr = out.loc[("system", "all")]
    assert sysr.customers_served == 200
    assert sysr.saifi == pytest.approx(50 / 200)
    assert sysr.saidi == pytest.approx(50 * 30 / 200)
    assert sysr.caidi == pytest.approx(30.0)
    assert sysr.maifi == pytest.approx(40 / 200)
    assert sysr.ens_mwh == pytest.approx(0.2 * 0.5 + 0.4 * 3 / 60)  # each block at its rated load here
    # per feeder: feeder 1 has 160 customers, 50 of them out for 30 min
    assert out.loc[("feeder", "1")].saidi == pytest.approx(1500 / 160)
    assert out.loc[("feeder", "3")].saidi == 0 and out.loc[("feeder", "3")].maifi == 1.0
    # per class: commercial untouched, CAIDI undefined
    com = out.loc[("class", "commercial")]
    assert com.saifi == 0 and np.isnan(com.caidi)


def test_opening_a_block_cuts_the_blocks_it_feeds():
    ci = customer_interruptions(_intr([(1, 0, 10, 0.6)]), LOADS, TREE.get)
    assert set(ci.load_id) == {10, 11, 20}
    sysr = indices(ci, LOADS).set_index(["scope", "key"]).loc[("system", "all")]
    assert sysr.saidi == pytest.approx(160 * 10 / 200)
    # block 1 was at 0.6 MW against 0.4 MW rated (x1.5); the block it feeds (0.2 MW rated) at the same level
    assert ci.ens_mwh.sum() == pytest.approx(1.5 * 0.6 * 10 / 60)
    # opening block 2 too, overlapping, does not interrupt its customers twice
    both = customer_interruptions(_intr([(1, 0, 10, 0.6), (2, 5, 30, 0.2)]), LOADS, TREE.get)
    assert len(both[both.load_id == 20]) == 1 and both[both.load_id == 20].minutes.iloc[0] == 30
    assert indices(both, LOADS).set_index(["scope", "key"]).loc[("system", "all")].saifi == pytest.approx(160 / 200)
    # a block whose net load was negative (PV) counts no energy
    assert customer_interruptions(_intr([(3, 0, 10, -0.2)]), LOADS, TREE.get).ens_mwh.sum() == 0


def test_major_event_days_by_the_2_5_beta_method():
    rng = np.random.default_rng(3)
    days = pd.date_range("2026-01-01", periods=60, freq="D")
    saidi = pd.Series(np.exp(rng.normal(0.0, 0.5, len(days))), index=days)
    saidi.iloc[40] = 500.0
    med = major_event_days(saidi)
    lg = np.log(saidi.to_numpy())
    assert med.threshold_min == pytest.approx(np.exp(lg.mean() + 2.5 * lg.std(ddof=1)))
    assert med.reliable and med.days == (days[40],)
    # too little history: the threshold is reported, no day is excluded
    short = major_event_days(saidi.iloc[35:45])
    assert not short.reliable and short.days == ()


def test_a_report_gives_the_month_with_and_without_major_event_days():
    rows = [(2, 24 * 60 * i, 24 * 60 * i + 10 + (i % 7), 0.2) for i in range(40)]
    rows.append((1, 24 * 60 * 20 + 60, 24 * 60 * 20 + 60 + 600, 0.6))  # day 20: 10 h on feeder 1
    ci = customer_interruptions(_intr(rows), LOADS, TREE.get)
    ci["day"] = pd.to_datetime(ci.start).dt.normalize()
    month = pd.date_range("2026-11-03", "2026-11-30", freq="D")
    daily, med, month_all, month_wo = report(ci, LOADS, month)
    assert len(daily[daily.scope == "system"]) == len(month)
    assert med.reliable and pd.Timestamp("2026-11-23") in med.days
    s_all = month_all.set_index("scope").loc["system"].saidi
    s_wo = month_wo.set_index("scope").loc["system"].saidi
    assert s_all > s_wo > 0


def test_interruptions_follow_the_ledger_and_agree_with_the_field():
    def rec(seq, kind, minutes, body):
        return {"seq": seq, "id": f"d{seq}", "kind": kind, "created_at": T0 + timedelta(minutes=minutes), "body": body}

    recs = [rec(1, "critical_response", 0, {"event": "e1", "commands": [
                {"block": 2, "switch": 7, "ok": True, "mw": 0.2},
                {"block": 3, "switch": 9, "ok": False, "replaced_by": 1},  # refused: no interruption
                {"block": 1, "switch": 5, "ok": False, "unconfirmed": True, "mw": 0.4}]}),  # may be out: counted
            rec(2, "restoration", 12, {"event": "e1", "restored": [1]}),
            rec(3, "restoration", 20, {"event": "e1", "restored": [2]})]
    intr = interruptions_from_records(recs, T0 + timedelta(hours=1)).set_index("block_id")
    assert set(intr.index) == {1, 2}
    assert intr.loc[2, "end"] - intr.loc[2, "start"] == timedelta(minutes=20)
    assert not intr.still_out.any()
    # a breaker trip (an outage record) cuts its blocks until the field reports it closed
    trip = [rec(4, "outage", 40, {"tripped": True, "blocks": [3], "block_mw": {"3": 0.4},
                                  "at": (T0 + timedelta(minutes=40)).isoformat()}),
            rec(5, "outage", 55, {"tripped": False, "blocks": [3], "at": (T0 + timedelta(minutes=55)).isoformat()})]
    t = interruptions_from_records(recs + trip, T0 + timedelta(hours=1)).set_index("block_id")
    assert t.loc[3, "end"] - t.loc[3, "start"] == timedelta(minutes=15) and t.loc[3, "mw"] == 0.4
    # a shed schedule's switching: opened at one step, closed at a later one
    sw_recs = [rec(6, "shed_switching", 0, {"commands": [{"block": 3, "switch": 9, "action": "open", "ok": True,
                                                          "mw": 0.4}]}),
               rec(7, "shed_switching", 10, {"commands": [{"block": 3, "switch": 9, "action": "close", "ok": True}]})]
    sh = interruptions_from_records(sw_recs, T0 + timedelta(hours=1)).set_index("block_id")
    assert sh.loc[3, "end"] - sh.loc[3, "start"] == timedelta(minutes=10) and sh.loc[3, "event"] == "shed"
    # a block not restored yet counts up to now, and is flagged
    still = interruptions_from_records(recs[:1], T0 + timedelta(minutes=30)).set_index("block_id")
    assert still.still_out.all() and still.loc[2, "end"] == T0 + timedelta(minutes=30)
    # the same from the field's switching log
    sw = pd.DataFrame({"ts": [T0, T0, T0 + timedelta(minutes=12), T0 + timedelta(minutes=20)],
                       "switch_id": [7, 5, 5, 7], "closed": [False, False, True, True]})
    field = interruptions_from_switching(sw, pd.Series({5: 1, 7: 2, 9: 3}), T0 + timedelta(hours=1))
    assert (field.set_index("block_id").sort_index()[["start", "end"]]
            .equals(intr.sort_index()[["start", "end"]]))


def test_the_asset_reports_the_ledger_s_interruptions_and_a_rerun_replaces_its_rows(tmp_path, monkeypatch):
    import duckdb
    from dagster import materialize
    from dagster_duckdb import DuckDBResource

    from gridpipeline.ledger.store import Ledger
    from gridpipeline.load.assets import reliability_report
    from gridpipeline.load.priorities import priorities_for
    from gridpipeline.settings import get_settings, reset_settings
    from gridpipeline.sources.network import load_network_model
    from gridpipeline.sources.resources import NetworkModelResource, SettingsResource

    monkeypatch.setenv("GRIDPIPELINE_HOME", str(tmp_path))
    monkeypatch.setenv("GRIDPIPELINE_DUCKDB_PATH", str(tmp_path / "store.duckdb"))
    reset_settings()
    s = get_settings()
    net = load_network_model(s.network).net
    pr = priorities_for(net, s.customers, s.load_policy)
    t = pr.table[~pr.table.protected & pr.table.switchable]
    b1, b2 = int(t.index[0]), int(t.index[1])
    led = Ledger(s.ledger)
    day = datetime(2026, 11, 3)
    led.append("critical_response", {"event": "e1", "commands": [
        {"block": b1, "switch": 1, "ok": True, "mw": 0.5}, {"block": b2, "switch": 2, "ok": True, "mw": 0.3}]},
        mode="automatic", actor="responder", created_at=day + timedelta(hours=9))
    led.append("restoration", {"event": "e1", "restored": [b1, b2]}, mode="automatic", actor="responder",
               created_at=day + timedelta(hours=9, minutes=20))
    res = {"duckdb": DuckDBResource(database=str(s.db_path)), "settings": SettingsResource.from_settings(s),
           "network": NetworkModelResource(path=str(s.network))}
    for _ in range(2):
        out = materialize([reliability_report], partition_key="2026-11-03", resources=res)
        assert out.success
    meta = out.get_asset_materialization_events()[0].materialization.metadata
    cut = set(pr.blocks.descendants(b1)) | set(pr.blocks.descendants(b2))
    customers = int(pr.loads[pr.loads.block_id.isin(cut)].customers.sum())
    total = int(pr.loads.customers.sum())
    assert meta["saidi_day_min"].value == pytest.approx(round(customers * 20 / total, 4))
    assert meta["saifi_day"].value == pytest.approx(round(customers / total, 6))
    assert meta["ens_day_mwh"].value > 0
    assert meta["saidi_month_min"].value == meta["saidi_day_min"].value
    assert not meta["med_reliable"].value  # one day of history
    assert "data:image/png" in meta["plot"].value
    (check,) = out.get_asset_check_evaluations()
    assert check.passed
    with duckdb.connect(str(s.db_path), read_only=True) as con:
        n, days = con.execute("SELECT count(*), count(DISTINCT computed_at) FROM load.reliability").fetchone()
    assert days == 1 and n > 0  # the second run replaced the first's rows
