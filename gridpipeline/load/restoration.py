"""A power flow checks each restoration stage before it is executed.

The network model with every block still out cut off at its feeding switch, and the stage's blocks
back at cold-load pickup: their pre-outage net load (the response table's estimate the shed record
carries) times the pickup factor, spread over each block's loads by rated load. The loads and
generators in service run at the newest estimated state when the checker has one
(:meth:`StageChecker.set_state`, the 30-second loop's ``grid.state_injection``), else at their rated
values, which errs on the safe side for loading (the record's ``basis`` says which). A stage passes
when the AC power flow (power-grid-model, through ``grid.powerflow``) converges with every energized
bus within the voltage limits and every branch within its loading limit, or at least no worse than
with the stage still out; otherwise the stage is split in two and each half is checked in turn, and a
single block that still fails is held for an operator.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class StageCheck:
    ok: bool
    u_min_pu: float | None
    u_max_pu: float | None
    max_loading_percent: float | None
    pickup_mw: float
    violations: tuple[str, ...]
    elapsed_s: float
    basis: str = "rated loads"

    def as_dict(self) -> dict:
        return {"ok": self.ok, "u_min_pu": self.u_min_pu, "u_max_pu": self.u_max_pu,
                "max_loading_percent": self.max_loading_percent, "pickup_mw": round(self.pickup_mw, 4),
                "violations": list(self.violations), "elapsed_s": round(self.elapsed_s, 3), "basis": self.basis}


class StageChecker:
    """Checks restoration stages on one network model (copied once; loads rewritten per check)."""

    def __init__(self, net, blocks, v_min_pu: float = 0.95, v_max_pu: float = 1.05, loading_max: float = 100.0):
        self.net = copy.deepcopy(net)
        self.blocks = blocks
        self.lb = blocks.load_block(self.net)
        sc = self.net.load["scaling"].fillna(1.0) if "scaling" in self.net.load else 1.0
        self.rated = (self.net.load.p_mw * sc).clip(lower=0.0)
        if "scaling" in self.net.load:
            self.net.load["scaling"] = 1.0
        self.q_ratio = (self.net.load.q_mvar / self.net.load.p_mw.replace(0, np.nan)).fillna(0.0)
        self.limits = (v_min_pu, v_max_pu, loading_max)
        self.sgen_rated = self.net.sgen[["p_mw", "q_mvar"]].copy() if len(self.net.sgen) else None
        self.state_ts = None
        self._load_p = self._load_q = None  # estimated load (p, q) of loads in service, by load id
        self._sgen = None

    def set_state(self, injections: pd.DataFrame | None, ts=None) -> None:
        """The estimated state the checks run on (``element_type``, ``element_id``, ``p_mw``, ``q_mvar``;
        the 30-second loop's ``grid.state_injection``), or None to check on rated values."""
        if injections is None or not len(injections):
            self.state_ts, self._load_p, self._load_q, self._sgen = None, None, None, None
            return
        inj = injections.assign(element_id=injections.element_id.astype(int))
        ld = inj[inj.element_type == "load"].set_index("element_id")
        sg = inj[inj.element_type == "sgen"].set_index("element_id")
        self._load_p = ld.p_mw.reindex(self.net.load.index)
        self._load_q = ld.q_mvar.reindex(self.net.load.index)
        self._sgen = sg[["p_mw", "q_mvar"]].reindex(self.net.sgen.index) if len(self.net.sgen) else None
        self.state_ts = ts

    @property
    def basis(self) -> str:
        return "rated loads" if self.state_ts is None else f"estimated state at {self.state_ts}"

    def _flow(self, out_blocks: set[int], stage: list[int], block_mw: dict[int, float], clpu: float):
        from gridpipeline.grid.powerflow import run_powerflow

        bt = self.blocks.table
        p = self.rated.copy()
        q = p * self.q_ratio
        if self._load_p is not None:  # loads in service at the estimate (a load it lacks: rated)
            have = self._load_p.notna()
            p[have] = self._load_p[have].clip(lower=0.0)
            q[have] = self._load_q[have].fillna(0.0)
        if self.sgen_rated is not None:
            sg = self.sgen_rated if self._sgen is None else self._sgen.fillna(self.sgen_rated)
            self.net.sgen["p_mw"] = sg.p_mw.to_numpy()
            self.net.sgen["q_mvar"] = sg.q_mvar.to_numpy()
        pickup = 0.0
        for b in stage:
            idx = self.lb.index[self.lb == b]
            own = float(self.rated[idx].sum())
            level = max(float(block_mw.get(b, own)), 0.0) / own if own > 0 else 0.0
            p[idx] = self.rated[idx] * level * clpu
            q[idx] = p[idx] * self.q_ratio[idx]
            pickup += float(p[idx].sum())
        self.net.load["p_mw"] = p
        self.net.load["q_mvar"] = q
        closed = self.net.switch.closed.astype(bool).copy()
        for b in out_blocks:
            sw = bt.feeding_switch.get(b)
            if sw is not None and not pd.isna(sw):
                closed[int(sw)] = b in stage
        res = run_powerflow(self.net, switch_closed=closed)
        if not res.converged:
            return res, pickup, None
        b_ = res.buses[res.buses.energized]
        ml = float(res.branches.loading_percent.max()) if len(res.branches) else 0.0
        return res, pickup, (float(b_.u_pu.min()), int(b_.u_pu.idxmin()), float(b_.u_pu.max()), int(b_.u_pu.idxmax()),
                             ml)

    def check(self, out_blocks: set[int], stage: list[int], block_mw: dict[int, float], clpu: float) -> StageCheck:
        """The stage passes unless it creates or worsens a violation against the same network with
        the stage still out (so a grid already outside a limit does not block every restoration)."""
        out_blocks = set(out_blocks) | set(stage)
        base_res, _, base = self._flow(out_blocks, [], block_mw, clpu)
        res, pickup, now = self._flow(out_blocks, stage, block_mw, clpu)
        elapsed = base_res.elapsed_s + res.elapsed_s
        if now is None:
            return StageCheck(False, None, None, None, pickup, (f"power flow did not converge: {res.message}",), elapsed,
                              self.basis)
        v_min, v_max, lmax = self.limits
        b0 = base or (np.inf, -1, -np.inf, -1, 0.0)
        u_min, bus_lo, u_max, bus_hi, ml = now
        viol = []
        if u_min < v_min and u_min < b0[0] - 1e-4:
            viol.append(f"undervoltage {u_min:.4f} pu at bus {bus_lo} (limit {v_min}; {b0[0]:.4f} without the stage)")
        if u_max > v_max and u_max > b0[2] + 1e-4:
            viol.append(f"overvoltage {u_max:.4f} pu at bus {bus_hi} (limit {v_max}; {b0[2]:.4f} without the stage)")
        if ml > lmax and ml > b0[4] + 0.01:
            viol.append(f"branch loading {ml:.1f} % (limit {lmax:.0f} %; {b0[4]:.1f} % without the stage)")
        return StageCheck(not viol, round(u_min, 5), round(u_max, 5), round(ml, 2), pickup, tuple(viol), elapsed,
                          self.basis)


def checked_stage(checker: StageChecker, out_blocks: set[int], stage: list[int], block_mw: dict[int, float],
                  clpu: float) -> tuple[list[int], list[list[int]], list[int], list[dict]]:
    """The part of ``stage`` to execute now: (now, put back as later stages, held for an operator,
    every check made). A failing stage is halved (highest tier first, as ordered) until a part passes;
    a single block that fails is held."""
    checks = []
    pending = [list(stage)]
    later: list[list[int]] = []
    held: list[int] = []
    while pending:
        part = pending.pop(0)
        c = checker.check(out_blocks - set(held), part, block_mw, clpu)
        checks.append({"blocks": part, **c.as_dict()})
        if c.ok:
            return part, pending + later, held, checks
        if len(part) == 1:
            held.append(part[0])
            continue
        h = len(part) // 2
        pending = [part[:h], part[h:], *pending]
    return [], later, held, checks
