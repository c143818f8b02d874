"""An operator's aggregate setpoint for a VPP (``gridpipeline dispatch vpp-setpoint``): split onto its
members and held for a while.

1. The members' BMS are read over Modbus (what they have, what they can do now, who is out and why).
2. The VPP's envelope now: the members' power limits from their energy, the members behind one feeder
   head sharing what that head can carry (limit rows on the newest estimated state,
   ``storage.limits.feeder_headroom``). The request is clipped to it.
3. The split (``storage.vpp.disaggregate``): discharge from the fullest, charge into the emptiest,
   water-filled within each member's and each feeder head's limits.
4. The gate: an AC power flow on the newest estimated state with the split applied, base case and
   the ten worst N-1 cases; a setpoint that would create or worsen a violation is scaled back or
   refused.
5. The ledger: a ``vpp_setpoint`` record with the request, the envelope, the headroom, the split,
   the shortfall, the gate's verdict, the operator and the note; then the setpoints are written
   over Modbus and confirmed by reading them back (a ``setpoint_write`` record).
6. The hold: until it ends (``--minutes``) or is released (``--release``), the live dispatcher
   leaves the held members out of its plans, takes their power as given, and sends their setpoints
   again with every plan (the BMS watchdog drops a setpoint after 15 minutes).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from gridpipeline.settings import Settings

STEP_H = 5 / 60


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def vpp_setpoint(settings: Settings, vpp: str, mw: float | None, minutes: float, operator: str, note: str = "",
                 release: bool = False, client=None, now: datetime | None = None) -> dict:
    """Split, gate, record and send an aggregate setpoint (MW, + discharge) for ``vpp``; or release
    the VPP's hold. Returns the summary that is also the ledger record's body."""
    import duckdb

    from gridpipeline.ledger.store import Ledger
    from gridpipeline.sources.network import load_network_model
    from gridpipeline.storage.cycle import PlanEngine
    from gridpipeline.storage.gate import gate
    from gridpipeline.storage.inputs import estimated_net, state_at
    from gridpipeline.storage.planner import units_now
    from gridpipeline.storage.vpp import disaggregate, envelope, members_frame
    from gridpipeline.store import connect

    now = now or _utcnow()
    if not operator.strip():
        raise ValueError("an operator name is required: the ledger records who dispatched")
    nm = load_network_model(settings.network)
    engine = PlanEngine(nm.net, nm.zones, nm.sha256[:16], settings.prices, loading_limit=settings.loading_limit_percent,
                        v_min=settings.v_min_pu, v_max=settings.v_max_pu)
    fleet = engine.fleet
    known = sorted(v for v in fleet.vpp.unique() if v)
    if vpp not in known:
        raise ValueError(f"unknown VPP {vpp!r}; the network model has: {', '.join(known) or 'none'}")
    ledger = Ledger(settings.ledger)
    if release:
        body = {"summary": f"{vpp}: operator hold released by {operator}", "vpp": vpp, "released": True,
                "until": now.isoformat(), "setpoints_mw": {}, "operator": operator, "note": note}
        rec = ledger.append("vpp_setpoint", body, mode="automatic", actor=operator)
        return {**body, "decision_id": rec.id}
    if mw is None:
        raise ValueError("--mw is required (positive = discharge), or --release")
    if client is None:
        from gridpipeline.common.field_map import endpoints
        from gridpipeline.sources.bms import BmsClient

        eps = [e for e in endpoints(fleet.battery_id, settings.field_host, settings.field_port)
               if e.device_id in set(fleet.battery_id[fleet.vpp == vpp])]
        client = BmsClient(eps, timeout_s=1.0, stale_s=30.0)
    bms = client.read_fleet()
    units = units_now(fleet, bms)
    on = (units.vpp == vpp).to_numpy()
    members = members_frame(units[on])
    st = None
    try:
        with connect(settings.live_db_path, read_only=True, timeout_s=5.0) as con:
            st = state_at(con, contingencies=10)
    except (duckdb.IOException, TimeoutError):
        st = None
    est = estimated_net(nm.net, st) if st is not None else None
    flags = []
    if est is not None:
        engine.limit_rows_for(est, units)
    else:
        flags.append("no estimated state: no feeder headroom, gate on the network model's nominal state")
    env = envelope(members, STEP_H, engine.headroom or None)
    target = min(max(float(mw), env["p_min_mw"]), env["p_max_mw"])
    if abs(target - float(mw)) > 1e-9:
        flags.append(f"request {mw:+.4f} MW clipped to the envelope [{env['p_min_mw']:+.4f}, {env['p_max_mw']:+.4f}] MW")
    split = disaggregate(target, members, STEP_H, feeder_headroom=engine.headroom or None)
    idx = pd.Series(fleet.storage_index.to_numpy(), index=fleet.battery_id.to_numpy())
    sp = pd.Series(split.setpoints.to_numpy(), index=idx.reindex(members.battery_id).to_numpy())
    verdict = gate(est if est is not None else nm.net, sp, contingencies=(st or {}).get("contingencies", []),
                   loading_limit=settings.loading_limit_percent, v_min=settings.v_min_pu, v_max=settings.v_max_pu)
    setpoints = {b: round(float(v) * verdict.scale, 6) for b, v, ok in
                 zip(members.battery_id, split.setpoints, members.available) if ok} if verdict.passed else {}
    delivered = sum(setpoints.values())
    until = now + timedelta(minutes=float(minutes))
    left_out = members.loc[~members.available.astype(bool), ["battery_id", "reason"]]
    body = {
        "summary": (f"{vpp}: {operator} asked {float(mw):+.3f} MW for {minutes:g} min; "
                    + (f"{delivered:+.3f} MW split over {len(setpoints)} members, gate {verdict.reason}"
                       if verdict.passed else f"refused by the gate: {verdict.reason}")),
        "vpp": vpp, "operator": operator, "note": note, "requested_mw": float(mw), "target_mw": round(target, 6),
        "delivered_mw": round(delivered, 6), "shortfall_mw": round(float(mw) - delivered, 6),
        "until": until.isoformat() if verdict.passed else now.isoformat(),
        "released": not verdict.passed, "envelope": env,
        "feeder_headroom_mw": {f: {"injection": u, "consumption": d} for f, (u, d) in engine.headroom.items()},
        "setpoints_mw": setpoints, "members_left_out": dict(zip(left_out.battery_id, left_out.reason)),
        "inputs": {"state_snapshot": str(st["ts"]) if st else None, "bms_read": len(bms),
                   "network_version": nm.sha256[:16]},
        "alternatives": {"nothing": "the dispatcher's own plan goes on for these members",
                         "rule": "split in proportion to headroom (the fullest give, the emptiest take)"},
        "gate": verdict.record(), "flags": flags}
    rec = ledger.append("vpp_setpoint", body, mode="automatic", actor=operator)
    if setpoints:
        confirmed, bad = 0, {}
        for b, v in setpoints.items():
            ok, detail = client.write_setpoint(b, v)
            confirmed += ok
            if not ok:
                bad[b] = detail
        ledger.append("setpoint_write", {"decision": rec.id, "confirmed": confirmed, "failed": bad,
                                         "summary": f"{confirmed} VPP setpoints confirmed by read-back, {len(bad)} failed",
                                         "setpoints_mw": setpoints}, mode="automatic", actor=operator, ref=rec.id)
        body["confirmed"], body["failed"] = confirmed, bad
    return {**body, "decision_id": rec.id}


__all__ = ["vpp_setpoint"]
