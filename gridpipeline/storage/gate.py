"""The validation gate: no setpoint reaches a battery before an AC power flow of the current estimated
state with the setpoints applied shows it does not create or worsen a violation, in the base case and
in the most severe contingencies of the latest N-1 ranking.

A violation is a branch loaded above ``loading_limit`` % or an energised bus outside
``[v_min, v_max]``. The setpoints pass when every branch and bus is within its limit after, or no worse
than before (by ``tol``). When the full setpoints fail, they are scaled back by bisection on a
common factor in [0, 1] (``iterations`` halvings) and the largest factor that passes is kept; a factor
of 0 is a rejection. The verdict carries the numbers: base and after, the worst element, the factor,
the cases checked.

The power flows run with power-grid-model through :func:`gridpipeline.grid.powerflow.run_powerflow`
(never a home-made solver).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from gridpipeline.grid.powerflow import run_powerflow


@dataclass
class GateVerdict:
    passed: bool                 # something (scale > 0) may be sent
    scale: float                 # the factor applied to every setpoint
    reason: str
    worst: dict                  # the element that decided it, with before/after
    cases: int                   # base + contingencies checked at the chosen scale
    evaluations: int             # power flows run
    details: list[dict] = field(default_factory=list)

    def record(self) -> dict:
        return {"passed": self.passed, "scale": round(self.scale, 4), "reason": self.reason, "worst": self.worst,
                "cases": self.cases, "power_flows": self.evaluations, "details": self.details[:20]}


def _apply(net, battery_mw: pd.Series, curtail_mw: pd.Series, scale: float, reactive_mvar: pd.Series | None = None):
    """A copy of ``net`` with setpoints (storage index -> MW, positive = discharge), curtailment
    (sgen index -> MW) and reactive setpoints (sgen index -> Mvar, from no reactive support) applied at
    ``scale``: one common factor, so the setpoints sent are the ones checked. pandapower storage
    ``p_mw`` is consumption (charging)."""
    n = copy.deepcopy(net)
    if len(battery_mw):
        n.storage.loc[battery_mw.index, "p_mw"] = -scale * battery_mw.to_numpy()
        n.storage.loc[battery_mw.index, "scaling"] = 1.0
    if len(curtail_mw):
        p = n.sgen.loc[curtail_mw.index, "p_mw"].to_numpy() * n.sgen.loc[curtail_mw.index, "scaling"].to_numpy()
        n.sgen.loc[curtail_mw.index, "p_mw"] = np.maximum(p - scale * curtail_mw.to_numpy(), 0.0)
        n.sgen.loc[curtail_mw.index, "scaling"] = 1.0
    if reactive_mvar is not None and len(reactive_mvar):  # the inverters' reactive setpoints (+ injects), scaled too
        p = n.sgen.loc[reactive_mvar.index, "p_mw"].to_numpy() * n.sgen.loc[reactive_mvar.index, "scaling"].to_numpy()
        n.sgen.loc[reactive_mvar.index, "q_mvar"] = scale * reactive_mvar.to_numpy()
        n.sgen.loc[reactive_mvar.index, "p_mw"] = p
        n.sgen.loc[reactive_mvar.index, "scaling"] = 1.0
    return n


def _outage(net, element: tuple[str, int]):
    n = copy.deepcopy(net)
    table, idx = element
    n[table].loc[idx, "in_service"] = False
    return n


def _measures(net, switch_closed) -> tuple[pd.Series, pd.Series, bool]:
    pf = run_powerflow(net, switch_closed=switch_closed)
    if not pf.converged:
        return pd.Series(dtype=float), pd.Series(dtype=float), False
    br = pf.branches
    loading = pd.Series(br.loading_percent.to_numpy(), index=[f"{t} {i}" for t, i in zip(br.element_type, br.element_id)])
    b = pf.buses[pf.buses.energized]
    volt = pd.Series(b.u_pu.to_numpy(), index=[f"bus {i}" for i in b.index])
    return loading, volt, True


def _excess(loading: pd.Series, volt: pd.Series, limit: float, v_min: float, v_max: float) -> pd.Series:
    """How far each element is beyond its limit (0 when within): % for branches, pu for buses."""
    lo = np.clip(loading - limit, 0, None)
    vo = np.clip(volt - v_max, 0, None) + np.clip(v_min - volt, 0, None)
    return pd.concat([lo, vo])


def gate(net, battery_mw: pd.Series, curtail_mw: pd.Series | None = None, *, switch_closed=None,
         contingencies: list[tuple[str, int]] = (), loading_limit: float = 100.0, v_min: float = 0.95,
         v_max: float = 1.05, tol: float = 1e-3, iterations: int = 6,
         reactive_mvar: pd.Series | None = None) -> GateVerdict:
    """Check setpoints on ``net`` (the current estimated state's injections; see module docstring)."""
    curtail_mw = curtail_mw if curtail_mw is not None else pd.Series(dtype=float)
    cases = [None, *contingencies]
    runs = 0
    before = {}
    for case in cases:
        base = net if case is None else _outage(net, case)
        lo, vo, ok = _measures(base, switch_closed)
        runs += 1
        before[case] = _excess(lo, vo, loading_limit, v_min, v_max) if ok else None

    def check(scale: float) -> tuple[bool, dict, list[dict]]:
        nonlocal runs
        applied = _apply(net, battery_mw, curtail_mw, scale, reactive_mvar)
        worst, details = {}, []
        for case in cases:
            n = applied if case is None else _outage(applied, case)
            lo, vo, ok = _measures(n, switch_closed)
            runs += 1
            label = "base case" if case is None else f"outage of {case[0]} {case[1]}"
            if not ok:
                if before[case] is None:  # did not converge before either: nothing to compare
                    continue
                return False, {"case": label, "element": "-", "why": "power flow does not converge"}, details
            ex = _excess(lo, vo, loading_limit, v_min, v_max)
            prev = before[case] if before[case] is not None else ex * 0
            worse = ex - prev.reindex(ex.index).fillna(0)
            bad = worse[(ex > 0) & (worse > tol)]
            if len(bad):
                el = bad.idxmax()
                value = lo.get(el, vo.get(el))
                worst = {"case": label, "element": el, "excess_before": float(prev.get(el, 0.0)),
                         "excess_after": float(ex[el]), "value_after": float(value),
                         "unit": "% loading" if el in lo.index else "pu"}
                details.append(worst)
                return False, worst, details
        return True, worst, details

    ok, worst, details = check(1.0)
    if ok:
        return GateVerdict(True, 1.0, "passed: no violation created or worsened", {}, len(cases), runs, details)
    first = worst
    lo_s, hi_s = 0.0, 1.0
    for _ in range(iterations):
        mid = (lo_s + hi_s) / 2
        ok_mid, w, d = check(mid)
        details.extend(d)
        if ok_mid:
            lo_s = mid
        else:
            hi_s = mid
    if lo_s <= 0:
        return GateVerdict(False, 0.0, f"rejected: {first['element']} ({first['case']}) would go from "
                           f"{first.get('excess_before', 0):.3g} to {first.get('excess_after', float('nan')):.3g} "
                           f"beyond its limit even at {hi_s:.0%} of the setpoints", first, len(cases), runs, details)
    return GateVerdict(True, lo_s, f"scaled back to {lo_s:.0%}: at full setpoints {first['element']} ({first['case']}) "
                       f"would exceed its limit by {first.get('excess_after', float('nan')):.3g}", first, len(cases),
                       runs, details)


__all__ = ["GateVerdict", "gate"]
