"""The validation gate: no setpoint reaches a battery before an AC power flow of the current estimated
state with the setpoints applied shows it does not create or worsen a violation, in the base case and
in the most severe contingencies of the latest N-1 ranking.

A violation is a branch loaded above ``loading_limit`` % or an energised bus outside
``[v_min, v_max]``. The setpoints pass when every branch and bus is within its limit after, or no worse
than before (by ``tol``). When the full setpoints fail, they are scaled back on a common factor in
[0, 1] and the largest factor that passes is kept; a factor of 0 is a rejection. The verdict carries
the numbers: base and after, the worst element, the factor, the cases checked.

The power flows run with power-grid-model (never a home-made solver), as batches: every case before
and at the full setpoints in one batch, and, when the full setpoints fail, every case at every factor
``k / 2**iterations`` in a second one. The factor kept is the largest below which every factor passes:
the answer ``iterations`` halvings of a bisection give when passing is monotone in the factor, and a
safe one when it is not. A net with voltage-controlled generators (which power-grid-model has not) goes
through pandapower, one power flow at a time, by bisection (:func:`_gate_by_bisection`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from gridpipeline.grid.powerflow import run_powerflow

#: PGM's Newton-Raphson settings, as ``run_powerflow``'s
TOLERANCE, MAX_ITERATIONS = 1e-8, 30


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
    """Check setpoints on ``net`` (the current estimated state's injections; see module docstring):
    ``battery_mw`` (storage index -> MW, + discharge), ``curtail_mw`` (sgen index -> MW taken off its
    output), ``reactive_mvar`` (sgen index -> Mvar, + injects), all scaled by one common factor."""
    from gridpipeline.grid.network import sanitize_net, to_pgm
    from gridpipeline.grid.powerflow import choose_engine

    curtail_mw = curtail_mw if curtail_mw is not None else pd.Series(dtype=float)
    sanitize_net(net)
    model = to_pgm(net)  # its scan of unsupported elements serves the choice of engine too
    if choose_engine(net, model)[0] != "pgm":
        return _gate_by_bisection(net, battery_mw, curtail_mw, switch_closed=switch_closed, contingencies=contingencies,
                                  loading_limit=loading_limit, v_min=v_min, v_max=v_max, tol=tol,
                                  iterations=iterations, reactive_mvar=reactive_mvar)
    return _Batches(net, battery_mw, curtail_mw, reactive_mvar, switch_closed, contingencies,
                    (loading_limit, v_min, v_max, tol), model=model).verdict(iterations)


class _Batches:
    """The gate's cases (base, then each contingency) as power-grid-model batches of (case, factor)."""

    def __init__(self, net, battery_mw, curtail_mw, reactive_mvar, switch_closed, contingencies, limits, model=None):
        from power_grid_model import ComponentType

        from gridpipeline.grid.contingency import outage_changes
        from gridpipeline.grid.network import to_pgm
        from gridpipeline.grid.powerflow import branch_index

        self.model = model if model is not None else to_pgm(net)
        self.data = self.model.with_switch_states(switch_closed)
        self.limits = limits
        ids = self.model.ids
        self.cases, self.outages = [None], [[]]
        for c in contingencies:
            c = (str(c[0]), int(c[1]))
            try:
                out = outage_changes(self.model, [c])
            except KeyError:  # an element the model has not (or a kind no outage applies to): nothing to take out
                continue
            self.cases.append(c)
            self.outages.append(out)
        self.branches = [f"{t} {i}" for t, i in branch_index(self.model, self.data)]
        self.buses = [f"bus {i}" for i in self.model.id_index[self.data[ComponentType.node]["id"]]]
        self.n_branches = len(self.branches)
        # the setpoints as PGM injections, W and var: storage is a load (+ consumes), sgen a generator
        bat = battery_mw[battery_mw.index.isin(ids["storage"].index)] if "storage" in ids else battery_mw.iloc[:0]
        self.bat_ids = ids["storage"].reindex(bat.index).to_numpy(int) if len(bat) else np.zeros(0, int)
        self.bat_w = -bat.to_numpy(float) * 1e6
        sg = net.sgen
        cur = curtail_mw[curtail_mw.index.isin(sg.index)]
        self.cur_ids = ids["sgen"].reindex(cur.index).to_numpy(int) if len(cur) else np.zeros(0, int)
        self.cur_made = (sg.p_mw.reindex(cur.index).to_numpy(float) * sg.scaling.reindex(cur.index).fillna(1.0)
                         .to_numpy(float) * 1e6) if len(cur) else np.zeros(0)
        self.cur_w = cur.to_numpy(float) * 1e6
        q = reactive_mvar[reactive_mvar.index.isin(sg.index)] if reactive_mvar is not None else pd.Series(dtype=float)
        self.q_ids = ids["sgen"].reindex(q.index).to_numpy(int) if len(q) else np.zeros(0, int)
        self.q_var = q.to_numpy(float) * 1e6
        self.runs = 0

    def _setpoints(self, scale: float | None) -> list[tuple]:
        """The changes that apply the setpoints at ``scale`` (None: as the state is, before)."""
        from power_grid_model import ComponentType

        if scale is None:
            return []
        ch = [(ComponentType.sym_load, i, {"p_specified": scale * w}) for i, w in zip(self.bat_ids, self.bat_w)]
        made = np.maximum(self.cur_made - scale * self.cur_w, 0.0)
        ch += [(ComponentType.sym_gen, i, {"p_specified": w}) for i, w in zip(self.cur_ids, made)]
        ch += [(ComponentType.sym_gen, i, {"q_specified": scale * v}) for i, v in zip(self.q_ids, self.q_var)]
        return ch

    def run(self, scales: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every case at every one of ``scales``: excess (cases, scales, branches + buses: % beyond the
        loading limit, pu beyond the voltage band, 0 within), the values themselves (% loading, pu) and
        converged (cases, scales)."""
        from gridpipeline.grid.contingency import run_batch

        limit, v_min, v_max, _ = self.limits
        scen = [o + self._setpoints(s) for o in self.outages for s in scales]
        res = run_batch(self.model, self.data, scen, -1, TOLERANCE, MAX_ITERATIONS)
        self.runs += len(scen)
        lo = np.clip(np.nan_to_num(res["loading"], nan=0.0) - limit, 0, None)
        u, en = np.asarray(res["node_u"], float), np.asarray(res["node_en"]).astype(bool)
        vo = np.where(en, np.clip(u - v_max, 0, None) + np.clip(v_min - u, 0, None), 0.0)
        ok = np.ones(len(scen), bool)
        ok[list(res["failed"])] = False
        shape = (len(self.cases), len(scales))
        value = np.hstack([np.asarray(res["loading"], float), u])
        return np.hstack([lo, vo]).reshape(*shape, -1), value.reshape(*shape, -1), ok.reshape(shape)

    def judge(self, before, before_ok, after, value, after_ok) -> tuple[np.ndarray, list]:
        """Per factor: passes in every case; and, where not, the first failing case's worst element
        (the one made worse the most)."""
        tol = self.limits[3]
        n_s = after.shape[1]
        passes, worst = np.ones(n_s, bool), [None] * n_s
        for c in range(len(self.cases)):
            label = "base case" if self.cases[c] is None else f"outage of {self.cases[c][0]} {self.cases[c][1]}"
            prev = before[c] if before_ok[c] else np.zeros_like(before[c])
            worse = after[c] - prev[None, :]
            bad = (after[c] > 0) & (worse > tol)
            for s in range(n_s):
                if not passes[s]:
                    continue
                if not after_ok[c, s]:  # a failure, unless it did not converge before either (nothing to compare)
                    if before_ok[c]:
                        passes[s] = False
                        worst[s] = {"case": label, "element": "-", "why": "power flow does not converge"}
                    continue
                if bad[s].any():
                    j = int(np.argmax(np.where(bad[s], worse[s], -np.inf)))
                    passes[s] = False
                    branch = j < self.n_branches
                    worst[s] = {"case": label, "element": self.branches[j] if branch else self.buses[j - self.n_branches],
                                "excess_before": float(prev[j]), "excess_after": float(after[c, s, j]),
                                "value_after": float(value[c, s, j]), "unit": "% loading" if branch else "pu"}
        return passes, worst

    def verdict(self, iterations: int) -> GateVerdict:
        x, val, ok = self.run([None, 1.0])
        passes, worst = self.judge(x[:, 0], ok[:, 0], x[:, 1:], val[:, 1:], ok[:, 1:])
        if passes[0]:
            return GateVerdict(True, 1.0, "passed: no violation created or worsened", {}, len(self.cases), self.runs, [])
        top = worst[0]
        grid = list(np.arange(1, 2 ** iterations) / 2 ** iterations)
        gx, gval, gok = self.run(grid)
        passes, gworst = self.judge(x[:, 0], ok[:, 0], gx, gval, gok)
        n = int(np.cumprod(passes).sum())  # the largest factor below which every factor passes
        details = [top] + ([gworst[n]] if n < len(grid) and gworst[n] is not None else [])
        if n == 0:
            return GateVerdict(False, 0.0, f"rejected: {top['element']} ({top['case']}) would go from "
                               f"{top.get('excess_before', 0):.3g} to {top.get('excess_after', float('nan')):.3g} "
                               f"beyond its limit even at {grid[0]:.0%} of the setpoints", top, len(self.cases),
                               self.runs, details)
        return GateVerdict(True, float(grid[n - 1]), f"scaled back to {grid[n - 1]:.0%}: at full setpoints "
                           f"{top['element']} ({top['case']}) would exceed its limit by "
                           f"{top.get('excess_after', float('nan')):.3g}", top, len(self.cases), self.runs, details)


def _gate_by_bisection(net, battery_mw: pd.Series, curtail_mw: pd.Series, *, switch_closed=None,
                       contingencies: list[tuple[str, int]] = (), loading_limit: float = 100.0, v_min: float = 0.95,
                       v_max: float = 1.05, tol: float = 1e-3, iterations: int = 6,
                       reactive_mvar: pd.Series | None = None) -> GateVerdict:
    """:func:`gate` one power flow at a time (pandapower, for nets power-grid-model cannot carry)."""
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
