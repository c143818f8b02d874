"""The decision ledger on a real DuckDB file: the chain, tampering caught by verify, approvals,
expiry, replays kept out of the live chain, one total order across processes."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta

import duckdb
import pytest

from gridpipeline.ledger.chain import GENESIS, canonical, record_hash
from gridpipeline.ledger.store import Ledger, LedgerError, approval_deadline

T0 = datetime(2026, 12, 4, 12, 0)


def _plan(ledger: Ledger, mode: str = "approve", at: datetime = T0, ttl_min: int = 10, chain: str = "live"):
    return ledger.append("dispatch_plan", {
        "summary": "charge 2 MW at battery 3", "inputs": {"forecast_issue": "2026-12-04T12:00", "state": "12:00:00"},
        "decision": {"battery_3_mw": -2.0}, "objective": {"total": 12.5, "energy": 10.0, "degradation": 2.5},
        "binding": [{"constraint": "line 7 loading", "dual": 3.25}],
        "alternatives": {"do_nothing": 20.0, "rule_based": 15.0},
        "expires_at": approval_deadline(at, timedelta(minutes=ttl_min))}, mode=mode, created_at=at, chain=chain)


def test_records_chain_and_verify(tmp_path):
    led = Ledger(tmp_path / "ledger.duckdb")
    assert led.verify().ok and led.verify().records == 0  # an empty ledger is intact
    a = _plan(led, "automatic")
    b = _plan(led, "advisory", T0 + timedelta(minutes=5))
    assert (a.seq, b.seq) == (1, 2) and a.prev_hash == GENESIS and b.prev_hash == a.hash
    assert b.hash == record_hash(b.fields())
    rep = led.verify()
    assert rep.ok and rep.records == 2 and rep.chains["live"]["head"] == b.hash
    # what is stored is what was hashed: the body reads back identical
    assert canonical(led.get(a.id)["body"]) == canonical(a.body)
    assert led.heads() == {"live": b.hash}


@pytest.mark.parametrize("tamper, seq, reason", [
    ("UPDATE ops.decisions SET body = replace(body, '-2.0', '-20.0') WHERE seq = 2", 2, "altered"),
    ("DELETE FROM ops.decisions WHERE seq = 2", 3, "record 2 is missing before it"),
    ("UPDATE ops.decisions SET created_at = created_at + INTERVAL 1 MINUTE WHERE seq = 2", 2, "altered"),
    # a forged record slipped in: the ones after it renumbered, its prev_hash copied from the real one
    ("UPDATE ops.decisions SET seq = seq + 100 WHERE seq >= 2; UPDATE ops.decisions SET seq = seq - 99 WHERE seq >= 100;"
     "INSERT INTO ops.decisions SELECT chain, 2, 'forged', kind, created_at, mode, actor, ref, body, prev_hash, hash "
     "FROM ops.decisions WHERE seq = 3", 2, "altered"),
])
def test_tampering_with_one_record_is_named_by_verify(tmp_path, tamper, seq, reason):
    led = Ledger(tmp_path / "ledger.duckdb")
    recs = [_plan(led, "automatic", T0 + timedelta(minutes=5 * k)) for k in range(4)]
    with duckdb.connect(str(led.path)) as con:
        con.execute(tamper)
    rep = led.verify()
    assert not rep.ok
    assert rep.broken.seq == seq and reason in rep.broken.reason, rep.broken
    assert rep.broken.id in (recs[1].id, recs[2].id, "forged")
    assert "BROKEN" in rep.summary() and f"record {seq}" in rep.summary()


def test_removing_the_newest_records_or_rebuilding_the_chain_is_caught_by_the_head(tmp_path):
    led = Ledger(tmp_path / "ledger.duckdb")
    for k in range(3):
        _plan(led, "automatic", T0 + timedelta(minutes=5 * k))
    with duckdb.connect(str(led.path)) as con:  # the chain left is internally consistent
        con.execute("DELETE FROM ops.decisions WHERE seq = 3")
    rep = led.verify()
    assert not rep.ok and "head kept outside the ledger" in rep.broken.reason


def test_approval_round_trip_and_refusals(tmp_path):
    led = Ledger(tmp_path / "ledger.duckdb")
    plan = _plan(led)
    assert list(led.pending(T0 + timedelta(minutes=1)).id) == [plan.id]
    with pytest.raises(LedgerError, match="operator"):
        led.approve(plan.id, " ", now=T0 + timedelta(minutes=1))
    with pytest.raises(LedgerError, match="no decision 'nope'"):
        led.approve("nope", "alice", now=T0)
    ok = led.approve(plan.id, "alice", now=T0 + timedelta(minutes=2))
    assert ok.kind == "approval" and ok.ref == plan.id and ok.actor == "alice"
    st = led.status(T0 + timedelta(minutes=3)).set_index("id")
    assert st.loc[plan.id, "state"] == "approved" and st.loc[plan.id, "settled_by"] == "alice"
    with pytest.raises(LedgerError, match="already approved by alice"):
        led.reject(plan.id, "bob", now=T0 + timedelta(minutes=3))
    auto = _plan(led, "automatic")
    with pytest.raises(LedgerError, match="does not wait for approval"):
        led.approve(auto.id, "alice", now=T0)
    assert led.verify().ok


def test_an_unapproved_decision_expires_to_its_fallback_and_cannot_be_approved_after(tmp_path):
    led = Ledger(tmp_path / "ledger.duckdb")
    plan = _plan(led, ttl_min=10)
    assert led.expire_due(T0 + timedelta(minutes=9)) == []
    late = T0 + timedelta(minutes=11)
    with pytest.raises(LedgerError, match="expired"):
        led.approve(plan.id, "alice", now=late)
    done = led.expire_due(late, fallback=lambda d: {"fallback": "idle", "why": "gate no longer passes"})
    assert len(done) == 1 and done[0].ref == plan.id and done[0].body["fallback"] == "idle"
    assert led.status(late).set_index("id").loc[plan.id, "state"] == "expired"
    assert led.expire_due(late + timedelta(minutes=1)) == []  # recorded once
    with pytest.raises(LedgerError, match="expired"):
        led.approve(plan.id, "alice", now=late)
    assert led.verify().ok


def test_replays_stay_out_of_the_live_chain(tmp_path):
    led = Ledger(tmp_path / "ledger.duckdb")
    live = _plan(led, "automatic")
    rep = _plan(led, "approve", chain="replay")
    assert rep.seq == 1 and rep.prev_hash == GENESIS  # its own chain
    assert [r["id"] for r in led.records("live")] == [live.id]
    with pytest.raises(LedgerError, match="replay"):
        led.approve(rep.id, "alice", now=T0)
    assert led.verify().ok and set(led.verify().chains) == {"live", "replay"}


def test_writers_in_several_processes_get_one_total_order(tmp_path):
    path = tmp_path / "ledger.duckdb"
    code = ("import sys; from gridpipeline.ledger.store import Ledger\n"
            "led = Ledger(sys.argv[1])\n"
            "for k in range(15): led.append('setpoint_write', {'writer': sys.argv[2], 'k': k}, mode='automatic')\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), str(w)]) for w in range(3)]
    assert all(p.wait(120) == 0 for p in procs)
    led = Ledger(path)
    recs = led.records()
    assert [r["seq"] for r in recs] == list(range(1, 46))
    rep = led.verify()
    assert rep.ok, rep.summary()
    # each writer's own records keep their order inside the total order
    for w in range(3):
        assert [r["body"]["k"] for r in recs if r["body"]["writer"] == str(w)] == list(range(15))


def test_cli_lists_approves_and_verifies(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from gridpipeline.cli import app
    from gridpipeline.settings import reset_settings

    monkeypatch.setenv("GRIDPIPELINE_HOME", str(tmp_path))
    reset_settings()
    try:
        led = Ledger(tmp_path / "ledger.duckdb")
        now = datetime.utcnow()
        plan = _plan(led, at=now)
        run = CliRunner().invoke
        out = run(app, ["decisions", "list", "--state", "pending"])
        assert out.exit_code == 0 and plan.id in out.output and "pending" in out.output
        out = run(app, ["decisions", "approve", plan.id, "--operator", "alice"])
        assert out.exit_code == 0 and "approved" in out.output, out.output
        out = run(app, ["decisions", "approve", plan.id, "--operator", "bob"])
        assert out.exit_code == 1 and "already approved by alice" in out.output
        out = run(app, ["decisions", "reject", "unknown-id", "--operator", "bob"])
        assert out.exit_code == 1 and "no decision" in out.output
        assert run(app, ["audit", "verify"]).exit_code == 0
        with duckdb.connect(str(led.path)) as con:
            con.execute("UPDATE ops.decisions SET actor = 'mallory' WHERE kind = 'approval'")
        out = run(app, ["audit", "verify"])
        assert out.exit_code == 1 and "record 2" in out.output and "altered" in out.output
    finally:
        reset_settings()
