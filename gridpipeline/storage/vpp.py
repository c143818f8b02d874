"""Virtual power plants: the aggregate flexibility of their members, and an aggregate setpoint split
back onto the members.

Sign convention: power is positive when the battery discharges (injects into the grid).

**Envelope.** Per VPP and step, ``p_min``/``p_max`` (MW) and the energy bounds ``e_min``/``e_max``
(MWh) of the aggregate: the sums of what every available member can do at that step from its
measured state, each member's power limited by what its energy allows over one step (a member
at its reserve cannot discharge), the sums capped by the feeders' limits (the members behind one
feeder head share its headroom). Energy bounds come from each member's reserve and maximum.

**Disaggregation.** A setpoint ``P`` is split in proportion to headroom in its direction: discharge
in proportion to the energy above each member's reserve (the fullest give most), charge in
proportion to the room below each member's maximum (the emptiest take most), each share clipped to
the member's power limit and the remainder re-spread over the members not yet at their limit
(water-filling). The shares sum exactly to ``P`` or, when the members cannot, to what they can, with
the shortfall reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class Split:
    setpoints: pd.Series   # MW per member (positive = discharge)
    requested_mw: float
    delivered_mw: float

    @property
    def shortfall_mw(self) -> float:
        return self.requested_mw - self.delivered_mw


def member_limits(members: pd.DataFrame, dt_h: float) -> pd.DataFrame:
    """Per member, the power it can give (``p_dis``) or take (``p_ch``) over one step of ``dt_h`` hours
    from its measured energy. Columns needed: ``e_mwh`` (measured), ``e_min_mwh`` (reserve),
    ``e_max_mwh``, ``p_charge_max_mw``, ``p_discharge_max_mw``, ``eta_c``, ``eta_d``, ``available``."""
    m = members
    avail = m.available.astype(bool).to_numpy()
    above = np.clip(m.e_mwh - m.e_min_mwh, 0, None).to_numpy()
    below = np.clip(m.e_max_mwh - m.e_mwh, 0, None).to_numpy()
    p_dis = np.minimum(m.p_discharge_max_mw.to_numpy(), above * m.eta_d.to_numpy() / dt_h) * avail
    p_ch = np.minimum(m.p_charge_max_mw.to_numpy(), below / (m.eta_c.to_numpy() * dt_h)) * avail
    return pd.DataFrame({"p_dis": p_dis, "p_ch": p_ch, "above": above * avail, "below": below * avail},
                        index=m.index)


def members_frame(units: pd.DataFrame) -> pd.DataFrame:
    """The member columns :func:`member_limits` needs, from ``planner.units_now`` rows: the energy
    bounds are the unit's own (SOC limits and the owner's backup reserve), no plan headroom."""
    cap = units.capacity_mwh.to_numpy(float)
    return pd.DataFrame({
        "battery_id": units.battery_id.to_numpy(), "e_mwh": np.nan_to_num(units.energy_mwh.to_numpy(float)),
        "e_min_mwh": np.maximum(units.soc_min.to_numpy(float), units.reserve.to_numpy(float)) * cap,
        "e_max_mwh": units.soc_max.to_numpy(float) * cap, "p_charge_max_mw": units.p_max_mw.to_numpy(float),
        "p_discharge_max_mw": units.p_max_mw.to_numpy(float), "eta_c": units.eta_c.to_numpy(float),
        "eta_d": units.eta_d.to_numpy(float), "available": units.available.to_numpy(bool),
        "feeder": units.feeder.astype(str).to_numpy() if "feeder" in units else "",
        "reason": units.reason.astype(str).to_numpy() if "reason" in units else ""}, index=units.index)


def capped_limits(members: pd.DataFrame, dt_h: float, feeder_headroom: dict | None = None
                  ) -> tuple[pd.DataFrame, dict]:
    """:func:`member_limits` with the members behind one feeder head scaled down together to what the
    head can carry (``feeder_headroom``: feeder -> (MW more injection, MW more consumption)); returns
    the limits and the feeders that cut them (feeder -> "discharge"/"charge")."""
    lim = member_limits(members, dt_h)
    capped: dict[str, str] = {}
    if feeder_headroom and "feeder" in members:
        feeder = members.feeder.astype(str).to_numpy()
        for f, (up, down) in feeder_headroom.items():
            on = feeder == str(f)
            for col, room, label in (("p_dis", up, "discharge"), ("p_ch", down, "charge")):
                tot = float(lim.loc[on, col].sum())
                if tot > room + 1e-9:
                    lim.loc[on, col] *= max(room, 0.0) / tot
                    capped[str(f)] = (capped.get(str(f), "") + " " + label).strip()
    return lim, capped


def envelope(members: pd.DataFrame, dt_h: float, feeder_headroom: dict | None = None) -> dict:
    """The aggregate flexibility of one VPP now: ``p_min`` (most charge, negative), ``p_max`` (most
    discharge), ``e_min``/``e_max``/``e_now`` (MWh), members available and left out with reasons.
    ``feeder_headroom``: feeder -> (MW more injection, MW more consumption) its head can carry; the
    members on a feeder (column ``feeder``) share it."""
    lim, capped = capped_limits(members, dt_h, feeder_headroom)
    a = members.available.astype(bool)
    return {"p_max_mw": float(lim.p_dis.sum()), "p_min_mw": -float(lim.p_ch.sum()),
            "e_now_mwh": float(members.e_mwh[a].sum()), "e_min_mwh": float(members.e_min_mwh[a].sum()),
            "e_max_mwh": float(members.e_max_mwh[a].sum()), "members": int(a.sum()),
            "unavailable": int((~a).sum()), "feeder_capped": capped}


def disaggregate(setpoint_mw: float, members: pd.DataFrame, dt_h: float, tol: float = 1e-9,
                 feeder_headroom: dict | None = None) -> Split:
    """Split an aggregate setpoint onto the members (rule in the module docstring), within what each
    member's feeder head can carry when ``feeder_headroom`` is given."""
    lim, _ = capped_limits(members, dt_h, feeder_headroom)
    if setpoint_mw >= 0:
        cap, weight = lim.p_dis.to_numpy(), lim.above.to_numpy()
    else:
        cap, weight = lim.p_ch.to_numpy(), lim.below.to_numpy()
    share = water_fill(abs(float(setpoint_mw)), cap, weight, tol)
    sign = 1.0 if setpoint_mw >= 0 else -1.0
    out = pd.Series(sign * share, index=members.index, name="setpoint_mw")
    return Split(out, float(setpoint_mw), float(out.sum()))


def active_holds(records: list[dict], now) -> dict[str, tuple[float, str]]:
    """Battery id -> (MW, decision id) of the operator VPP setpoints in force at ``now``: per VPP the
    newest ``vpp_setpoint`` record, while ``now`` is before its ``until`` and it is not a release."""
    from datetime import datetime

    latest: dict[str, dict] = {}
    for r in records:
        if r.get("kind") == "vpp_setpoint":
            latest[str(r["body"].get("vpp"))] = r  # records come in ledger order: the newest wins
    holds: dict[str, tuple[float, str]] = {}
    for r in latest.values():
        b = r["body"]
        until = b.get("until")
        if b.get("released") or not until or datetime.fromisoformat(str(until)) <= now:
            continue
        for bid, mw in (b.get("setpoints_mw") or {}).items():
            holds[str(bid)] = (float(mw), str(r["id"]))
    return holds


def responder_holds(records: list[dict], now) -> dict[str, tuple[float, str]]:
    """Battery id -> (MW, decision id) the critical-event responder holds now: the newest
    ``critical_response`` record with a ``battery_hold``, until its ``until`` or a later record of
    the responder releases it (the event is over)."""
    from datetime import datetime

    hold = None
    for r in records:
        if r.get("kind") != "critical_response":
            continue
        b = r["body"]
        if b.get("battery_hold"):
            hold = r
        elif b.get("battery_hold_released") or (b.get("event_ended")
                                                and b.get("ended_kind", "under-frequency") == "under-frequency"):
            hold = None  # an overload's end leaves an under-frequency event's batteries held
    if hold is None or datetime.fromisoformat(str(hold["body"]["battery_hold"]["until"])) <= now:
        return {}
    return {str(k): (float(v), str(hold["id"])) for k, v in hold["body"]["battery_hold"]["setpoints_mw"].items()}


def water_fill(target: float, cap: np.ndarray, weight: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """Shares of ``target`` in proportion to ``weight``, none above its ``cap``, the excess of capped
    members re-spread over the others (by ``cap`` when no weight is left); sums to min(target, Σcap)."""
    share = np.zeros(len(cap))
    free = cap > tol
    remaining = min(target, cap.sum())
    while remaining > tol and free.any():
        w = np.where(free, weight, 0.0)
        if w.sum() <= tol:  # no energy information left to weigh by: share by power limit
            w = np.where(free, cap, 0.0)
        add = remaining * w / w.sum()
        room = cap - share
        over = free & (add >= room - tol)
        if over.any():  # those reach their limit; spread the rest over the others
            share[over] = cap[over]
            free &= ~over
        else:
            share += add
        remaining = min(target, cap.sum()) - share.sum()
    return share


__all__ = ["Split", "active_holds", "capped_limits", "disaggregate", "envelope", "member_limits", "members_frame",
           "water_fill"]
