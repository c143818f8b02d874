"""The world's flexible devices with state: every battery's true state of charge and every
curtailable generator's limit, evolving with the simulated time and the commands received.

The world's grid is otherwise a function of time (``model.py``). Batteries are not: what a battery
can do next depends on what it did. :class:`FieldFleet` holds the true state, and the simulator
asks it, window by window and in order, for the power the batteries and generators actually
produce:

* a battery with a setpoint in force (written over Modbus, see ``bms.py``) follows it; one without
  follows the world's default schedule (``World.storage_schedule``, "today's behaviour");
* either way the power is limited by the unit's ratings and by its SOC limits, and the SOC follows
  ``e[t+1] = e[t] + dt (eta_c charge - discharge / eta_d)``;
* a generator with a limit in force produces ``min(available, limit)``; others produce what the
  weather gives.

Commands take effect from the next simulated window (the simulator computes a 5-minute window at
its start), which is the step the dispatch commits. The state starts at each battery's
``soc_percent`` (50 %) at the first window simulated, and restarts there whenever windows are not
simulated in order (a new simulation of a past period), so two simulations from the same start give
the same result.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime

import numpy as np
import pandas as pd

from gridpipeline.world.bms import BatteryUnit, InverterUnit


def _num(df: pd.DataFrame, col: str, default: float) -> np.ndarray:
    if col not in df:
        return np.full(len(df), default, dtype=float)
    return pd.to_numeric(df[col], errors="coerce").fillna(default).to_numpy(dtype=float)


class FieldFleet:
    """True state of the batteries (``net.storage`` order) and curtailable inverters."""

    def __init__(self, net, window_s: int = 300):
        st = net.storage
        scale = _num(st, "scaling", 1.0)
        p_max = np.where(_num(st, "max_p_mw", 0.0) > 0, _num(st, "max_p_mw", 0.0), _num(st, "sn_mva", 0.0)) * scale
        self.capacity = _num(st, "max_e_mwh", 0.0) * scale
        self.p_max = p_max
        self.eta_c = _num(st, "eta_charge", 1.0)
        self.eta_d = _num(st, "eta_discharge", 1.0)
        self.soc_min = _num(st, "soc_min_percent", 0.0) / 100
        self.soc_max = _num(st, "soc_max_percent", 100.0) / 100
        self.soc0 = _num(st, "soc_percent", 50.0) / 100
        names = st["name"].astype(str).tolist() if "name" in st else [f"storage_{i}" for i in st.index]
        self.batteries = [
            BatteryUnit(battery_id=n, capacity_mwh=float(c), p_charge_max_mw=float(p), p_discharge_max_mw=float(p),
                        soc=float(s0), soc_min=float(lo), soc_max=float(hi), eta_c=float(ec), eta_d=float(ed))
            for n, c, p, s0, lo, hi, ec, ed in zip(names, self.capacity, p_max, self.soc0, self.soc_min,
                                                   self.soc_max, self.eta_c, self.eta_d)]
        sg = net.sgen
        curt = sg["curtailable"].fillna(False).astype(bool).to_numpy() if "curtailable" in sg else np.zeros(len(sg), bool)
        self.sgen_pos = np.flatnonzero(curt)
        rating = _num(sg, "sn_mva", 0.0) * _num(sg, "scaling", 1.0)
        sg_names = sg["name"].astype(str).to_numpy() if "name" in sg else np.array([f"sgen_{i}" for i in sg.index])
        self.inverters = [InverterUnit(sgen_id=str(sg_names[j]), rating_mw=float(rating[j])) for j in self.sgen_pos]
        self.energy = self.soc0 * self.capacity
        self.clock: datetime | None = None
        self.window_s = window_s
        self._timeline: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ the physics
    def reset(self) -> None:
        self.energy = self.soc0 * self.capacity
        for u, s in zip(self.batteries, self.soc0):
            u.soc, u.p_mw = float(s), 0.0

    def apply(self, times: pd.DatetimeIndex, inj, now: float | None = None):
        """The injections of one window with the fleet's true behaviour; advances the state.

        ``inj`` is the world's ``Injections`` at ``times`` (storage on its default schedule). Returns a
        copy with ``storage_p_mw`` (pandapower sign, > 0 charging), the curtailed ``sgen_p_mw`` and the
        inverters' reactive setpoints in ``sgen_q_mvar``."""
        start = times[0].tz_convert("UTC").tz_localize(None).to_pydatetime()
        if self.clock is None or start != self.clock:
            self.reset()
        n_t = len(times)
        dt_h = (self.window_s / n_t) / 3600.0
        mono = time.monotonic() if now is None else now
        # What each battery is asked to do (pandapower sign): its setpoint in force, else the schedule.
        cmd = np.array([np.nan if (c := u.commanded(mono)) is None else -c for u in self.batteries])
        asked = np.where(np.isnan(cmd)[None, :], inj.storage_p_mw, cmd[None, :]) if len(cmd) else inj.storage_p_mw
        p_out = np.zeros_like(asked)
        soc = np.zeros_like(asked)
        e = self.energy.copy()
        cap = np.maximum(self.capacity, 1e-12)
        for k in range(n_t):
            p = np.clip(asked[k], -self.p_max, self.p_max)
            room = np.maximum(self.soc_max * self.capacity - e, 0.0) / (self.eta_c * dt_h)
            avail = np.maximum(e - self.soc_min * self.capacity, 0.0) * self.eta_d / dt_h
            p = np.where(p > 0, np.minimum(p, room), np.maximum(p, -avail))
            p_out[k], soc[k] = p, e / cap  # SOC at the instant, before the step's energy
            e = e + dt_h * np.where(p > 0, self.eta_c * p, p / self.eta_d)
        self.energy = e
        sgen = inj.sgen_p_mw.copy()
        caps = np.array([np.inf if (c := u.cap_mw(mono)) is None else c for u in self.inverters])
        avail_g = sgen[:, self.sgen_pos] if len(self.sgen_pos) else np.zeros((n_t, 0))
        sgen_q = inj.sgen_q_mvar.copy()
        if len(self.sgen_pos):
            sgen[:, self.sgen_pos] = np.minimum(avail_g, caps[None, :])
            # reactive setpoints within each inverter's apparent power: |Q| <= sqrt(S^2 - P^2)
            for j, u in enumerate(self.inverters):
                q = u.q_setpoint_mvar(mono)
                if q is None:
                    continue
                room = np.sqrt(np.clip(u.rating_mw ** 2 - sgen[:, self.sgen_pos[j]] ** 2, 0.0, None))
                sgen_q[:, self.sgen_pos[j]] = np.clip(q, -room, room)
                u.q_mvar = float(sgen_q[-1, self.sgen_pos[j]])
        self.clock = start + pd.Timedelta(seconds=self.window_s).to_pytimedelta()
        ns = times.tz_convert("UTC").tz_localize(None).asi8
        self._timeline = (ns, soc, p_out, np.column_stack([avail_g, sgen[:, self.sgen_pos]]) if len(self.sgen_pos)
                          else np.zeros((n_t, 0)))
        self.tick(None)
        return replace(inj, storage_p_mw=p_out, sgen_p_mw=sgen, sgen_q_mvar=sgen_q)

    def tick(self, now: datetime | None) -> None:
        """Bring what the controllers report up to the simulated instant ``now`` (None: the end of the
        last window simulated)."""
        if self._timeline is None:
            return
        ns, soc, p, g = self._timeline
        k = len(ns) - 1 if now is None else int(np.clip(np.searchsorted(ns, pd.Timestamp(now).value, "right") - 1,
                                                        0, len(ns) - 1))
        for j, u in enumerate(self.batteries):
            u.soc, u.p_mw = float(soc[k, j]), float(-p[k, j])
        m = len(self.inverters)
        for j, u in enumerate(self.inverters):
            u.avail_mw, u.p_mw = float(g[k, j]), float(g[k, m + j])

    def soc_percent(self, times: pd.DatetimeIndex) -> np.ndarray:
        """SOC (%) of every battery at ``times`` within the last window simulated."""
        ns, soc, _, _ = self._timeline
        k = np.clip(np.searchsorted(ns, times.tz_convert("UTC").tz_localize(None).asi8, "right") - 1, 0, len(ns) - 1)
        return 100.0 * soc[k]


__all__ = ["FieldFleet"]
