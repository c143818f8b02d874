"""Rolling-horizon dispatch of batteries and curtailable generators: one linear program over the
horizon, built once per fleet shape and re-solved with new parameters (cvxpy DPP, HiGHS).

Arrays, not loops (the PyPSA/linopy way): every quantity is a matrix indexed by step and unit, and
every constraint is written once over the index.

* decisions: charge ``c`` and discharge ``d`` (T x N, MW), stored energy ``e`` (T+1 x N, MWh),
  curtailment ``curt`` (T x G, MW), grid import ``imp`` and export ``exp`` (T, MW);
* balance at the substation: ``imp - exp = net_load - (avail - curt) + c - d`` summed over units;
* energy: ``e[t+1] = e[t] + dt (eta_c c[t] - d[t] / eta_d)``;
* grid limits: rows of linear sensitivities around the estimated state (branch flows, bus voltages),
  ``lower <= base + (d - c) S_bat' - curt S_gen' <= upper``;
* reactive power ``q`` (T x G, Mvar) of the curtailable generators' inverters, within
  ``sqrt(S^2 - P^2)``, moving the limit rows through their own sensitivities; priced at a token
  ``VAR_VALUE``, far below a curtailed MWh, so where a voltage binds it is used before curtailment;
* objective: energy bought minus sold, degradation per MWh of throughput, the value of curtailed
  energy, a shortfall below the terminal energy target priced at ``terminal_value`` (and a surplus
  above it credited at ``surplus_value``, at most as much), and penalties.

**Never infeasible.** Everything that can be impossible (energy bounds, import/export limits, grid
limits, the terminal target) is soft, with a priced slack; doing nothing (c = d = curt = 0) is
always a solution. A slack in use is a flagged violation in the result, not an exception.

**No simultaneous charge and discharge.** The LP may find it profitable to charge and discharge one
battery in the same step (burning energy in its losses at negative prices). After each solve, the
cells where both are positive keep only the larger direction (the other's bound becomes 0, a
parameter) and the model is re-solved, warm, until no cell does: the plan is the optimum under that
restriction, and every limit still holds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import cvxpy as cp
import numpy as np
import pandas as pd

#: €/MWh (or €/MW per step) for slack in use: far above any price, so a slack is a last resort
PENALTY = {"energy": 10_000.0, "grid": 5_000.0, "limit": 5_000.0}
#: €/Mvarh for an inverter's reactive power: a token cost (losses, wear) so the LP gives reactive power
#: only where a limit needs it, and far below a curtailed MWh's value, so it is used first
VAR_VALUE = 0.5
TOL = 1e-6
#: HiGHS's warm start through cvxpy made re-solves with new prices 30x slower (100 batteries x 288
#: steps: 60 s warm, 2.0 s cold, first solve 1.6 s; measured 2026-12-04). The re-solve still reuses the
#: compiled DPP problem (no re-canonicalisation), which is where the time of a re-build goes.
WARM = False
#: HiGHS without presolve and without scaling, for a model of at most ``SMALL_FLEET`` battery columns
#: (clusters). On the live plan of the sample world (5 clusters, 14 generator groups, 123-140 dense
#: grid-limit rows x 288 steps) presolve took most of the solve and removed little, and the model is
#: scaled by construction (MW, MWh, EUR/MWh x h): five live states, 2026-12-07, took 4.0-5.7 s with
#: the defaults and 1.1-1.3 s with these, the same objective to 1e-15 (relative). On the 1,000-battery
#: benchmark (133 clusters, 82 sparse rows) presolve is what makes it fast: without it the re-solve took
#: 38 s instead of 4, so larger models keep HiGHS's defaults. So do long horizons: the backtest's
#: perfect-foresight LP (5 clusters x 8,760 hourly steps, 109 rows) took 287 s with these options and
#: 112 s with the defaults (quiet machine, 2026-12-07); its hourly 24-step plans are faster with them.
SMALL_HIGHS_OPTIONS = {"presolve": "off", "simplex_scale_strategy": 0}
SMALL_FLEET = 16
SMALL_STEPS = 288


@dataclass(frozen=True)
class Fleet:
    """Constant per-unit data of the batteries (N) and curtailable generators (G)."""

    battery_ids: tuple
    eta_c: np.ndarray           # charge efficiency (0, 1]
    eta_d: np.ndarray           # discharge efficiency (0, 1]
    generator_ids: tuple = ()

    @property
    def n(self) -> int:
        return len(self.battery_ids)

    @property
    def g(self) -> int:
        return len(self.generator_ids)


@dataclass
class DispatchInputs:
    """What changes between solves. Shapes: T steps, N batteries, G generators, K limit rows."""

    dt_h: float
    price_buy: np.ndarray        # (T,) €/MWh
    price_sell: np.ndarray       # (T,) €/MWh
    net_load: np.ndarray         # (T,) MW at the substation, demand minus generation that cannot be curtailed
    soc0: np.ndarray             # (N,) MWh measured
    e_min: np.ndarray            # (N,) MWh, incl. reserves and headroom
    e_max: np.ndarray            # (N,) MWh
    p_charge_max: np.ndarray     # (N,) MW (0 for an unavailable unit)
    p_discharge_max: np.ndarray  # (N,) MW
    degradation: np.ndarray      # (N,) €/MWh of throughput
    e_target: np.ndarray         # (N,) MWh at the end of the horizon
    terminal_value: float        # €/MWh of shortfall below the target
    #: €/MWh credited for energy above the target at the end (at most ``terminal_value``; 0: worthless)
    surplus_value: float = 0.0
    gen_avail: np.ndarray | None = None   # (T, G) MW forecast output of curtailable generators
    curtail_value: np.ndarray | None = None  # (G,) €/MWh lost per MWh curtailed
    import_max: np.ndarray | None = None   # (T,) MW
    export_max: np.ndarray | None = None   # (T,) MW
    limit_base: np.ndarray | None = None   # (T, K) without any action
    limit_lower: np.ndarray | None = None  # (K,)
    limit_upper: np.ndarray | None = None  # (K,)
    sens_battery: np.ndarray | None = None  # (K, N) d row / d injection (MW)
    sens_generator: np.ndarray | None = None  # (K, G)
    limit_names: tuple = ()
    q_max: np.ndarray | None = None        # (T, G) Mvar each generator's inverter may give either way
    sens_generator_q: np.ndarray | None = None  # (K, G) d row / d reactive injection (Mvar)
    var_value: float = VAR_VALUE           # €/Mvarh
    #: (T,) MW the fleet sold (+) or bought (-) on the day-ahead market for each step (the award, read
    #: from the store); NaN or None: no position. A deviation costs ``position_spread`` (T,) €/MWh
    #: either way, on top of the energy price: the two-price imbalance rule, as a plan sees it
    position: np.ndarray | None = None
    position_spread: np.ndarray | None = None


@dataclass
class DispatchResult:
    charge: np.ndarray          # (T, N) MW
    discharge: np.ndarray       # (T, N) MW
    energy: np.ndarray          # (T+1, N) MWh
    curtail: np.ndarray         # (T, G) MW
    grid_import: np.ndarray     # (T,) MW
    grid_export: np.ndarray     # (T,) MW
    objective: float
    breakdown: dict[str, float]
    violations: list[dict]      # slack in use: kind, where, step, amount
    binding: list[dict]         # binding constraints with their duals
    status: str
    seconds: float
    solves: int
    duals: dict[str, np.ndarray] = field(default_factory=dict)
    #: (N,) MWh below the terminal target: a priced choice (stored energy valued at terminal_value), not a violation
    terminal_shortfall: np.ndarray | None = None
    reactive: np.ndarray | None = None  # (T, G) Mvar asked of each generator's inverter (+ injects)

    @property
    def battery_power(self) -> np.ndarray:
        """(T, N) MW, positive = discharge (injection into the grid)."""
        return self.discharge - self.charge

    @property
    def feasible_without_slack(self) -> bool:
        return not self.violations


def _z(x, shape) -> np.ndarray:
    return np.zeros(shape) if x is None else np.asarray(x, dtype=float).reshape(shape)


class DispatchModel:
    """The LP for one fleet and horizon shape; :meth:`solve` sets the parameters and re-solves."""

    def __init__(self, fleet: Fleet, steps: int, limit_rows: int = 0, sens_battery=None, sens_generator=None,
                 sens_generator_q=None):
        """``sens_battery`` (K, N) / ``sens_generator`` (K, G): the limit rows' sensitivities as
        constants of the model (sparse: a row's tiny entries dropped, see :func:`sparse_rows`), so the
        constraint matrix holds T x nnz entries instead of a dense parameter product of T x K x N (which
        on 133 clusters x 10,000 rows ran out of 24 GiB). Without them they are DPP parameters,
        re-set on every solve (small K only)."""
        T, N, G, K = steps, fleet.n, fleet.g, limit_rows
        self.fleet, self.T, self.K = fleet, T, K
        self.highs_options = dict(SMALL_HIGHS_OPTIONS) if N <= SMALL_FLEET and T <= SMALL_STEPS else {}
        self.const_sens = sens_battery is not None
        P = {k: cp.Parameter(shape, **kw, name=k) for k, shape, kw in [
            ("price_buy_dt", T, {}), ("price_sell_dt", T, {}), ("net_load", T, {}), ("soc0", N, {}),
            ("e_min", N, {}), ("e_max", N, {}), ("c_max", (T, N), {"nonneg": True}),
            ("d_max", (T, N), {"nonneg": True}), ("deg_dt", N, {"nonneg": True}), ("e_target", N, {}),
            ("terminal_value", (), {"nonneg": True}), ("surplus_value", (), {"nonneg": True}), ("avail", (T, max(G, 1)), {"nonneg": True}),
            ("curt_value_dt", max(G, 1), {"nonneg": True}), ("imp_max", T, {"nonneg": True}),
            ("exp_max", T, {"nonneg": True}), ("dt", (), {"nonneg": True}),
            ("lim_base", (T, max(K, 1)), {}), ("lim_lo", max(K, 1), {}), ("lim_hi", max(K, 1), {}),
            ("sens_b", (max(K, 1), N), {}), ("sens_g", (max(K, 1), max(G, 1)), {}),
            ("sens_gq", (max(K, 1), max(G, 1)), {}), ("q_max", (T, max(G, 1)), {"nonneg": True}),
            ("var_value_dt", (), {"nonneg": True}), ("position", T, {}), ("pos_spread_dt", T, {"nonneg": True})]}
        self.p = P
        c = cp.Variable((T, N), nonneg=True, name="charge")
        d = cp.Variable((T, N), nonneg=True, name="discharge")
        e = cp.Variable((T + 1, N), name="energy")
        curt = cp.Variable((T, max(G, 1)), nonneg=True, name="curtail")
        qp = cp.Variable((T, max(G, 1)), nonneg=True, name="var_inject")
        qn = cp.Variable((T, max(G, 1)), nonneg=True, name="var_absorb")
        imp = cp.Variable(T, nonneg=True, name="import")
        exp = cp.Variable(T, nonneg=True, name="export")
        s_lo = cp.Variable((T + 1, N), nonneg=True)
        s_hi = cp.Variable((T + 1, N), nonneg=True)
        s_term = cp.Variable(N, nonneg=True)
        s_sur = cp.Variable(N, nonneg=True)
        s_imp = cp.Variable(T, nonneg=True)
        s_exp = cp.Variable(T, nonneg=True)
        s_lim_lo = cp.Variable((T, max(K, 1)), nonneg=True)
        s_lim_hi = cp.Variable((T, max(K, 1)), nonneg=True)
        pos_long = cp.Variable(T, nonneg=True)   # the fleet delivers more than its market position
        pos_short = cp.Variable(T, nonneg=True)
        self.v = dict(pos_long=pos_long, pos_short=pos_short, c=c, d=d, e=e, curt=curt, qp=qp, qn=qn, imp=imp, exp=exp, s_lo=s_lo, s_hi=s_hi, s_term=s_term, s_sur=s_sur,
                      s_imp=s_imp, s_exp=s_exp, s_lim_lo=s_lim_lo, s_lim_hi=s_lim_hi)
        eta_c = np.asarray(fleet.eta_c, dtype=float)
        inv_eta_d = 1.0 / np.asarray(fleet.eta_d, dtype=float)
        ones_t = np.ones((T, 1))
        gen_out = cp.sum(P["avail"] - curt, axis=1) if G else 0
        cons = {
            "energy_start": e[0] == P["soc0"],
            # eta as constants of the fleet: (T, N) elementwise products with a broadcast row
            "energy_balance": e[1:] == e[:-1] + P["dt"] * (cp.multiply(c, ones_t @ eta_c[None, :])
                                                            - cp.multiply(d, ones_t @ inv_eta_d[None, :])),
            "energy_min": e + s_lo >= np.ones((T + 1, 1)) @ cp.reshape(P["e_min"], (1, N), order="C"),
            "energy_max": e - s_hi <= np.ones((T + 1, 1)) @ cp.reshape(P["e_max"], (1, N), order="C"),
            # the end of the horizon: below the target short by s_term, above it by s_sur
            "terminal": e[T] + s_term - s_sur == P["e_target"],
            "charge_max": c <= P["c_max"],
            "discharge_max": d <= P["d_max"],
            "balance": imp - exp == P["net_load"] - gen_out + cp.sum(c, axis=1) - cp.sum(d, axis=1),
            "import_max": imp - s_imp <= P["imp_max"],
            "export_max": exp - s_exp <= P["exp_max"],
            "position": cp.sum(d - c, axis=1) - P["position"] == pos_long - pos_short,
        }
        if G:
            cons["curtail_max"] = curt <= P["avail"]
        else:
            cons["curtail_max"] = curt == 0
        cons["reactive_max"] = qp + qn <= P["q_max"]  # |Q| within sqrt(S^2 - P^2)
        if K and self.const_sens:
            sb = sparse_rows(np.asarray(sens_battery, float).reshape(K, N))
            flow = P["lim_base"] + (d - c) @ sb.T
            if G and sens_generator is not None:
                flow = flow - curt @ sparse_rows(np.asarray(sens_generator, float).reshape(K, G)).T
            if G and sens_generator_q is not None and np.abs(sens_generator_q).max(initial=0) > 0:
                flow = flow + (qp - qn) @ sparse_rows(np.asarray(sens_generator_q, float).reshape(K, G)).T
        if K and not self.const_sens:
            flow = P["lim_base"] + (d - c) @ P["sens_b"].T - (curt @ P["sens_g"].T if G else 0)
            if G:
                flow = flow + (qp - qn) @ P["sens_gq"].T
        if K:
            cons["limit_upper"] = flow - s_lim_hi <= np.ones((T, 1)) @ cp.reshape(P["lim_hi"], (1, K), order="C")
            cons["limit_lower"] = flow + s_lim_lo >= np.ones((T, 1)) @ cp.reshape(P["lim_lo"], (1, K), order="C")
        else:
            cons["limit_upper"] = s_lim_hi == 0
            cons["limit_lower"] = s_lim_lo == 0
        self.cons = cons
        terms = {
            "energy": P["price_buy_dt"] @ imp - P["price_sell_dt"] @ exp,
            "degradation": cp.sum(c + d, axis=0) @ P["deg_dt"],
            "curtailment": cp.sum(curt, axis=0) @ P["curt_value_dt"],
            "reactive": P["var_value_dt"] * cp.sum(qp + qn),
            "imbalance": P["pos_spread_dt"] @ (pos_long + pos_short),
            "terminal_shortfall": P["terminal_value"] * cp.sum(s_term),
            "terminal_surplus": -P["surplus_value"] * cp.sum(s_sur),
            "penalty_energy": PENALTY["energy"] * (cp.sum(s_lo) + cp.sum(s_hi)),
            "penalty_grid": PENALTY["grid"] * P["dt"] * (cp.sum(s_imp) + cp.sum(s_exp)),
            "penalty_limits": PENALTY["limit"] * P["dt"] * (cp.sum(s_lim_lo) + cp.sum(s_lim_hi)),
        }
        self.terms = terms
        self.problem = cp.Problem(cp.Minimize(sum(terms.values())), list(cons.values()))
        assert self.problem.is_dcp(dpp=True)

    # ------------------------------------------------------------------ solving
    def _set(self, x: DispatchInputs) -> None:
        T, N, G, K = self.T, self.fleet.n, self.fleet.g, self.K
        P = self.p
        big = 1e6
        P["dt"].value = float(x.dt_h)
        P["price_buy_dt"].value = _z(x.price_buy, T) * x.dt_h   # products of parameters are not DPP
        P["price_sell_dt"].value = _z(x.price_sell, T) * x.dt_h
        P["net_load"].value = _z(x.net_load, T)
        P["soc0"].value = _z(x.soc0, N)
        P["e_min"].value = _z(x.e_min, N)
        P["e_max"].value = _z(x.e_max, N)
        P["c_max"].value = np.broadcast_to(_z(x.p_charge_max, N), (T, N)).copy()
        P["d_max"].value = np.broadcast_to(_z(x.p_discharge_max, N), (T, N)).copy()
        P["deg_dt"].value = _z(x.degradation, N) * x.dt_h
        P["e_target"].value = _z(x.e_target, N)
        P["terminal_value"].value = max(float(x.terminal_value), 0.0)
        # concave value of stored energy (a surplus never worth more than a shortfall costs): an LP
        P["surplus_value"].value = min(max(float(x.surplus_value or 0.0), 0.0), P["terminal_value"].value)
        P["avail"].value = np.clip(_z(x.gen_avail, (T, G)), 0, None) if G else np.zeros((T, 1))
        P["curt_value_dt"].value = (_z(x.curtail_value, G) * x.dt_h) if G else np.zeros(1)
        P["imp_max"].value = np.full(T, big) if x.import_max is None else _z(x.import_max, T)
        P["exp_max"].value = np.full(T, big) if x.export_max is None else _z(x.export_max, T)
        # reactive power only where there are limit rows to serve (without them it has no use)
        P["q_max"].value = (np.clip(_z(x.q_max, (T, G)), 0, None) if (G and K and x.q_max is not None)
                            else np.zeros((T, max(G, 1))))
        P["var_value_dt"].value = max(float(x.var_value), 0.0) * x.dt_h
        pos = np.full(T, np.nan) if x.position is None else np.asarray(x.position, float).reshape(T)
        spread = np.zeros(T) if x.position_spread is None else np.asarray(x.position_spread, float).reshape(T)
        held = np.isfinite(pos) & np.isfinite(spread)
        P["position"].value = np.where(held, pos, 0.0)
        P["pos_spread_dt"].value = np.where(held, np.clip(spread, 0, None), 0.0) * x.dt_h
        if K:
            P["lim_base"].value = _z(x.limit_base, (T, K))
            P["lim_lo"].value = _z(x.limit_lower, K)
            P["lim_hi"].value = _z(x.limit_upper, K)
            if self.const_sens:
                P["sens_b"].value = np.zeros((max(K, 1), N))
                P["sens_g"].value = np.zeros((max(K, 1), max(G, 1)))
                P["sens_gq"].value = np.zeros((max(K, 1), max(G, 1)))
            else:
                P["sens_b"].value = _z(x.sens_battery, (K, N))
                P["sens_g"].value = _z(x.sens_generator, (K, G)) if G else np.zeros((K, 1))
                P["sens_gq"].value = _z(x.sens_generator_q, (K, G)) if G else np.zeros((K, 1))
        else:
            for k, shape in (("lim_base", (T, 1)), ("lim_lo", 1), ("lim_hi", 1), ("sens_b", (1, N)),
                             ("sens_g", (1, max(G, 1))), ("sens_gq", (1, max(G, 1)))):
                P[k].value = np.zeros(shape)

    def solve(self, x: DispatchInputs, max_rounds: int = 5) -> DispatchResult:
        t0 = time.perf_counter()
        self._set(x)
        v, P = self.v, self.p
        solves = 0
        for _ in range(max_rounds):
            self.problem.solve(solver=cp.HIGHS, warm_start=WARM, highs_options=dict(self.highs_options))
            solves += 1
            if self.problem.status not in ("optimal", "optimal_inaccurate"):
                raise RuntimeError(f"dispatch LP {self.problem.status}: the model should be feasible by "
                                   "construction; this is a defect")
            both = (v["c"].value > TOL) & (v["d"].value > TOL)
            if not both.any():
                break
            keep_charge = v["c"].value * self.fleet.eta_c[None, :] >= v["d"].value / self.fleet.eta_d[None, :]
            cm, dm = P["c_max"].value.copy(), P["d_max"].value.copy()
            dm[both & keep_charge] = 0.0
            cm[both & ~keep_charge] = 0.0
            P["c_max"].value, P["d_max"].value = cm, dm
        return self._result(x, time.perf_counter() - t0, solves)

    def _result(self, x: DispatchInputs, seconds: float, solves: int) -> DispatchResult:
        v, G, K = self.v, self.fleet.g, self.K
        val = lambda k: np.asarray(v[k].value, dtype=float)
        clean = lambda a: np.where(np.abs(a) < TOL, 0.0, a)
        breakdown = {k: float(t.value) for k, t in self.terms.items()}
        violations = []
        for name, key, where in (("energy below minimum", "s_lo", "battery"), ("energy above maximum", "s_hi", "battery"),
                                 ("import limit", "s_imp", "substation"), ("export limit", "s_exp", "substation"),
                                 ("grid limit (upper)", "s_lim_hi", "limit"), ("grid limit (lower)", "s_lim_lo", "limit")):
            a = val(key)
            if key.startswith("s_lim") and not K:
                continue
            for idx in zip(*np.nonzero(a > 1e-5)):
                rec = {"kind": name, "amount": float(a[idx])}
                if a.ndim == 2:
                    rec["step"], j = int(idx[0]), int(idx[1])
                    rec["where"] = (self.fleet.battery_ids[j] if where == "battery" else
                                    (x.limit_names[j] if j < len(x.limit_names) else f"row {j}"))
                elif where == "substation":
                    rec["step"], rec["where"] = int(idx[0]), "substation"
                else:
                    rec["where"] = self.fleet.battery_ids[int(idx[0])]
                violations.append(rec)
        duals = {k: np.asarray(self.cons[k].dual_value)
                 for k in ("import_max", "export_max", "balance", "energy_balance")
                 if self.cons[k].dual_value is not None}
        binding = []
        for k in ("import_max", "export_max"):
            dv = duals.get(k)
            if dv is not None:
                for t in np.nonzero(np.abs(dv) > 1e-6)[0]:
                    binding.append({"constraint": k.replace("_max", " limit"), "where": "substation", "step": int(t),
                                    "dual": float(dv[t])})
        if K:
            for k in ("limit_upper", "limit_lower"):
                dv = self.cons[k].dual_value
                if dv is None:
                    continue
                dv = np.asarray(dv)
                duals[k] = dv
                for t, j in zip(*np.nonzero(np.abs(dv) > 1e-6)):
                    binding.append({"constraint": k.replace("limit_", "grid limit "),
                                    "where": x.limit_names[j] if j < len(x.limit_names) else f"row {j}",
                                    "step": int(t), "dual": float(dv[t, j])})
        return DispatchResult(
            charge=clean(val("c")), discharge=clean(val("d")), energy=val("e"),
            curtail=clean(val("curt"))[:, :G] if G else np.zeros((self.T, 0)),
            grid_import=clean(val("imp")), grid_export=clean(val("exp")),
            objective=float(self.problem.value), breakdown=breakdown, violations=violations, binding=binding,
            status=self.problem.status, seconds=seconds, solves=solves, duals=duals,
            terminal_shortfall=clean(val("s_term")),
            reactive=(clean(val("qp") - val("qn"))[:, :G] if G else np.zeros((self.T, 0))))


def sparse_rows(s: np.ndarray, rel: float = 1e-3):
    """A sensitivity matrix as scipy CSR with each row's entries below ``rel`` of its largest dropped:
    an LV transformer or bus moves with its own feeder's batteries, not with the far ones'."""
    import scipy.sparse as sp

    s = np.asarray(s, float)
    if s.size == 0:
        return sp.csr_matrix(s)
    big = np.abs(s).max(axis=1, keepdims=True)
    return sp.csr_matrix(np.where(np.abs(s) >= rel * np.maximum(big, 1e-15), s, 0.0))


def plan_frame(result: DispatchResult, fleet: Fleet, start: pd.Timestamp, step: pd.Timedelta) -> pd.DataFrame:
    """The plan per battery and step, long: step_start, battery_id, charge/discharge/power MW, energy MWh
    at the end of the step."""
    T, N = result.charge.shape
    times = pd.date_range(start, periods=T, freq=step)
    return pd.DataFrame({
        "step_start": np.repeat(times, N), "battery_id": np.tile(np.asarray(fleet.battery_ids, dtype=object), T),
        "charge_mw": result.charge.reshape(-1), "discharge_mw": result.discharge.reshape(-1),
        "power_mw": result.battery_power.reshape(-1), "energy_mwh": result.energy[1:].reshape(-1),
    })


__all__ = ["PENALTY", "DispatchInputs", "DispatchModel", "DispatchResult", "Fleet", "plan_frame", "sparse_rows"]
