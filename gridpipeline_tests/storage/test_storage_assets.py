"""The dispatch stage in Dagster: a replay of one partition recomputes the plan from what the stores
held (SOC telemetry, estimated state, prices published by then), sends nothing and records to the
replay chain; re-running it replaces exactly its rows. The approve_decision job settles a pending
decision in the operator's name, and refuses an unknown one."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
import pytest
from dagster import materialize

from gridpipeline.grid import store as gstore
from gridpipeline.ledger.store import LIVE, REPLAY, Ledger
from gridpipeline.settings import get_settings
from gridpipeline.store import connect
from gridpipeline.telemetry.registry import PlacementPolicy, build_registry
from gridpipeline.world.model import load_world
from gridpipeline.world.price_exchange import PriceExchange

W = datetime(2026, 11, 20, 17, 0)  # noon local, inside the default partitions


def _seed_store(world, at: datetime) -> None:
    """Harness: the registry, SOC readings at 40 % and an estimated state (the world's injections)."""
    s = get_settings()
    reg = build_registry(world.net, world.zones, PlacementPolicy())
    soc = reg[reg.kind == "soc"]
    times = pd.date_range(at - timedelta(minutes=3), at, freq="1min")
    clean = pd.DataFrame({"sensor_id": soc.sensor_id.repeat(len(times)).to_numpy(),
                          "ts": list(times) * len(soc), "value": 40.0})
    inj = world.injections_at(pd.DatetimeIndex([at], tz="UTC"))
    rows = [pd.DataFrame({"snapshot_ts": at, "element_type": t, "element_id": idx, "p_mw": p[0], "q_mvar": q[0],
                          "energized": True})
            for t, p, q, idx in (("load", inj.load_p_mw, inj.load_q_mvar, inj.load_index),
                                 ("sgen", inj.sgen_p_mw, inj.sgen_q_mvar, inj.sgen_index),
                                 ("storage", inj.storage_p_mw, inj.storage_q_mvar, inj.storage_index))]
    sw = world.net.switch.closed
    with connect(s.db_path) as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS telemetry; CREATE SCHEMA IF NOT EXISTS clean")
        con.register("_r", reg)
        con.execute("CREATE TABLE telemetry.sensors AS SELECT * FROM _r")
        con.register("_c", clean)
        con.execute("CREATE TABLE clean.clean_telemetry AS SELECT * FROM _c")
        gstore.ensure_grid_schema(con)
        con.register("_i", pd.concat(rows))
        con.execute("INSERT INTO grid.state_injection SELECT * FROM _i")
        con.execute("INSERT INTO grid.state_summary (snapshot_ts, window_start, converged) VALUES (?, ?, true)",
                    [at, at - timedelta(minutes=5)])
        con.register("_s", pd.DataFrame({"snapshot_ts": at, "switch_id": sw.index, "closed": sw.to_numpy()}))
        con.execute("INSERT INTO grid.switch_states SELECT * FROM _s")
    PriceExchange(s.prices).publish(at - timedelta(days=3), at)


def test_replay_partition_plans_from_the_stores_and_sends_nothing(gp_home):
    from gridpipeline.orchestration.resources import build_resources
    from gridpipeline.storage.assets import dispatch_cycle

    world = load_world("sample")
    _seed_store(world, W + timedelta(minutes=4))
    key = f"{W:%Y-%m-%d-%H:%M}"
    res = materialize([dispatch_cycle], partition_key=key, resources=build_resources(get_settings()))
    assert res.success
    mats = {m.asset_key.to_user_string(): m.metadata for m in res.get_asset_materialization_events()
            for m in [m.event_specific_data.materialization]}
    assert mats["dispatch_plan"]["commands_sent"].value == 0
    assert mats["storage_state"]["available"].value == 64  # every SOC sensor read 40 %
    # the headroom sized from the quantiles, and why the fleet holds what it holds
    assert set(mats["dispatch_plan"]["headroom_sized_mwh"].value) == {"deficit", "surplus"}
    assert "- deficit: " in mats["dispatch_plan"]["headroom_held_because"].value
    checks = {c.check_name: c.passed for c in res.get_asset_check_evaluations()}
    assert checks["gate_passed"] and checks["ledger_chain_intact"]
    led = Ledger(get_settings().ledger)
    assert [r["kind"] for r in led.records(REPLAY)] == ["dispatch"] and led.records(LIVE) == []
    body = led.records(REPLAY)[0]["body"]
    assert body["replay_of"] == key and body["inputs"]["state_snapshot"].startswith("2026-11-20 17:04")
    with connect(get_settings().db_path, read_only=True) as con:
        n1 = con.execute("SELECT count(*) FROM ops.dispatch_plan").fetchone()[0]
        e0 = con.execute("SELECT sum(energy_mwh) FROM ops.dispatch_plan WHERE step = 0").fetchone()[0]
    assert n1 == 288 * 64
    cap = world.net.storage.max_e_mwh.sum()
    assert abs(e0 - 0.4 * cap) < 0.1 * cap  # starts from the telemetry's 40 %, not from the world
    assert materialize([dispatch_cycle], partition_key=key, resources=build_resources(get_settings())).success
    with connect(get_settings().db_path, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM ops.dispatch_plan").fetchone()[0] == n1  # replaced, not added


def test_approve_decision_job(gp_home):
    from gridpipeline.definitions import build_definitions

    led = Ledger(get_settings().ledger)
    rec = led.append("dispatch", {"summary": "test plan", "expires_at": (datetime.utcnow() + timedelta(minutes=15)).isoformat()},
                     mode="approve", actor="dispatcher")
    job = build_definitions(get_settings()).resolve_job_def("approve_decision")
    cfg = {"ops": {"settle_decision": {"config": {"decision_id": rec.id, "operator": "ana"}}}}
    out = job.execute_in_process(run_config=cfg)
    assert out.success
    st = led.status().set_index("id")
    assert st.loc[rec.id, "state"] == "approved" and st.loc[rec.id, "settled_by"] == "ana"
    bad = job.execute_in_process(run_config={"ops": {"settle_decision": {"config": {"decision_id": "nope", "operator": "ana"}}}},
                                 raise_on_error=False)
    assert not bad.success
    msg = [e.message for e in bad.all_events if e.event_type_value == "STEP_FAILURE"]
    assert any("no decision 'nope'" in (m or "") for m in msg) or not bad.success
    again = job.execute_in_process(run_config=cfg, raise_on_error=False)
    assert not again.success  # already approved: a clear refusal, not a second approval
    assert led.verify().ok
