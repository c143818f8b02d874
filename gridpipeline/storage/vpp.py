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


def envelope(members: pd.DataFrame, dt_h: float, feeder_headroom: dict | None = None) -> dict:
    """The aggregate flexibility of one VPP now: ``p_min`` (most charge, negative), ``p_max`` (most
    discharge), ``e_min``/``e_max``/``e_now`` (MWh), members available and left out with reasons.
    ``feeder_headroom``: feeder -> (MW more injection, MW more consumption) its head can carry; the
    members on a feeder (column ``feeder``) share it."""
    lim = member_limits(members, dt_h)
    dis, ch = lim.p_dis.copy(), lim.p_ch.copy()
    capped = {}
    if feeder_headroom and "feeder" in members:
        for f, (up, down) in feeder_headroom.items():
            on = (members.feeder == f).to_numpy()
            if dis[on].sum() > up:
                capped[f] = "discharge"
                dis[on] *= max(up, 0.0) / dis[on].sum()
            if ch[on].sum() > down:
                capped[f] = capped.get(f, "") + " charge"
                ch[on] *= max(down, 0.0) / ch[on].sum()
    a = members.available.astype(bool)
    return {"p_max_mw": float(dis.sum()), "p_min_mw": -float(ch.sum()),
            "e_now_mwh": float(members.e_mwh[a].sum()), "e_min_mwh": float(members.e_min_mwh[a].sum()),
            "e_max_mwh": float(members.e_max_mwh[a].sum()), "members": int(a.sum()),
            "unavailable": int((~a).sum()), "feeder_capped": capped}


def disaggregate(setpoint_mw: float, members: pd.DataFrame, dt_h: float, tol: float = 1e-9) -> Split:
    """Split an aggregate setpoint onto the members (rule in the module docstring)."""
    lim = member_limits(members, dt_h)
    if setpoint_mw >= 0:
        cap, weight = lim.p_dis.to_numpy(), lim.above.to_numpy()
    else:
        cap, weight = lim.p_ch.to_numpy(), lim.below.to_numpy()
    share = water_fill(abs(float(setpoint_mw)), cap, weight, tol)
    sign = 1.0 if setpoint_mw >= 0 else -1.0
    out = pd.Series(sign * share, index=members.index, name="setpoint_mw")
    return Split(out, float(setpoint_mw), float(out.sum()))


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


__all__ = ["Split", "disaggregate", "envelope", "member_limits", "water_fill"]
