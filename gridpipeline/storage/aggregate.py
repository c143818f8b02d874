"""The fast path for large fleets: aggregate, solve, disaggregate.

Batteries that sit on the same feeder (so they move every grid limit alike) and share their
efficiencies and degradation cost are one *cluster*. The LP of :mod:`gridpipeline.storage.dispatch`
runs on one virtual battery per cluster (energy bounds, powers, initial and target energy summed;
sensitivities capacity-weighted), which is a few dozen units instead of a thousand. Each cluster's
planned power is then split onto its members step by step with the VPP rule of
:func:`gridpipeline.storage.vpp.disaggregate` (headroom-proportional, water-filling within each
member's power and energy), rolling each member's energy forward, so every member's limits hold;
what the members cannot deliver is reported as a shortfall per cluster and step.

The aggregate is exact when the members of a cluster hold the same share of their energy range, and
the headroom rule keeps them close to that; ``bench dispatch`` measures the objective gap against the
monolithic LP on the same 100-battery instance.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gridpipeline.storage.dispatch import DispatchInputs, DispatchModel, DispatchResult, Fleet
from gridpipeline.storage.vpp import water_fill


@dataclass
class FleetPlan:
    power: np.ndarray           # (T, N) MW per member, + discharge
    energy: np.ndarray          # (T+1, N) MWh per member
    aggregate: DispatchResult   # the cluster-level LP result
    clusters: np.ndarray        # (N,) cluster of each member
    shortfall: np.ndarray       # (T, C) MW the members could not deliver
    seconds: dict


def clusters_of(feeder: np.ndarray, eta_c: np.ndarray, eta_d: np.ndarray, degradation: np.ndarray) -> np.ndarray:
    """Cluster index per battery: same feeder, efficiencies (to 0.1 %) and degradation cost (to 0.1 €)."""
    key = pd.DataFrame({"f": feeder, "c": np.round(eta_c, 3), "d": np.round(eta_d, 3), "g": np.round(degradation, 1)})
    return key.groupby(list(key.columns), sort=True).ngroup().to_numpy()


def aggregate_inputs(x: DispatchInputs, cl: np.ndarray, C: int) -> DispatchInputs:
    def s(v):
        return np.bincount(cl, weights=np.asarray(v, float), minlength=C)

    cap = np.asarray(x.e_max, float)
    w = cap / np.maximum(s(cap)[cl], 1e-12)  # capacity weights within a cluster
    sens = None
    if x.sens_battery is not None and np.size(x.sens_battery):
        sb = np.asarray(x.sens_battery, float)
        sens = np.stack([np.bincount(cl, weights=sb[k] * w, minlength=C) for k in range(sb.shape[0])])
    first = np.array([np.nonzero(cl == c)[0][0] for c in range(C)])
    deg = np.asarray(x.degradation, float)[first]
    return DispatchInputs(
        dt_h=x.dt_h, price_buy=x.price_buy, price_sell=x.price_sell, net_load=x.net_load,
        soc0=s(x.soc0), e_min=s(x.e_min), e_max=s(x.e_max), p_charge_max=s(x.p_charge_max),
        p_discharge_max=s(x.p_discharge_max), degradation=deg, e_target=s(x.e_target),
        terminal_value=x.terminal_value, surplus_value=x.surplus_value, gen_avail=x.gen_avail, curtail_value=x.curtail_value,
        import_max=x.import_max, export_max=x.export_max, limit_base=x.limit_base, limit_lower=x.limit_lower,
        limit_upper=x.limit_upper, sens_battery=sens, sens_generator=x.sens_generator, limit_names=x.limit_names,
        q_max=x.q_max, sens_generator_q=x.sens_generator_q, var_value=x.var_value, position=x.position,
        position_spread=x.position_spread)


class FleetPlanner:
    """Keeps the aggregate model between solves (DPP re-solve) as long as the clusters stay the same."""

    def __init__(self):
        self._model: DispatchModel | None = None
        self._key = None

    def plan(self, fleet: Fleet, x: DispatchInputs, feeder: np.ndarray, generators: tuple = ()) -> FleetPlan:
        t0 = time.perf_counter()
        eta_c, eta_d = np.asarray(fleet.eta_c, float), np.asarray(fleet.eta_d, float)
        cl = clusters_of(np.asarray(feeder), eta_c, eta_d, np.asarray(x.degradation, float))
        C = int(cl.max()) + 1
        first = np.array([np.nonzero(cl == c)[0][0] for c in range(C)])
        agg_fleet = Fleet(tuple(f"cluster {c}" for c in range(C)), eta_c=eta_c[first], eta_d=eta_d[first],
                          generator_ids=fleet.generator_ids)
        K = 0 if x.limit_base is None else np.asarray(x.limit_base).shape[1]
        T = len(x.price_buy)
        ax = aggregate_inputs(x, cl, C)
        # the limit rows' sensitivities are constants of the model (sparse): a new set of rows (a new
        # state to linearise around) builds a new model; new prices, SOC and bounds re-solve it (DPP)
        sens_key = None
        if K:
            sens_key = (hash(np.asarray(ax.sens_battery, float).round(9).tobytes()),
                        hash(np.asarray(ax.sens_generator, float).round(9).tobytes()) if ax.sens_generator is not None
                        else None,
                        hash(np.asarray(ax.sens_generator_q, float).round(9).tobytes())
                        if ax.sens_generator_q is not None else None)
        key = (tuple(cl), T, K, tuple(eta_c[first]), tuple(eta_d[first]), fleet.generator_ids, sens_key)
        if self._model is None or self._key != key:
            self._model = DispatchModel(agg_fleet, T, limit_rows=K, sens_battery=ax.sens_battery if K else None,
                                        sens_generator=ax.sens_generator if K else None,
                                        sens_generator_q=ax.sens_generator_q if K else None)
            self._key = key
        t1 = time.perf_counter()
        agg = self._model.solve(ax)
        t2 = time.perf_counter()
        power, energy, shortfall = _disaggregate(agg, x, cl, C, eta_c, eta_d)
        return FleetPlan(power, energy, agg, cl, shortfall,
                         {"build": t1 - t0, "solve": t2 - t1, "disaggregate": time.perf_counter() - t2,
                          "clusters": C})


def _disaggregate(agg: DispatchResult, x: DispatchInputs, cl: np.ndarray, C: int, eta_c, eta_d):
    T, N, dt = len(x.price_buy), len(cl), x.dt_h
    e = np.zeros((T + 1, N))
    e[0] = np.asarray(x.soc0, float)
    e_min, e_max = np.asarray(x.e_min, float), np.asarray(x.e_max, float)
    pc, pd_ = np.asarray(x.p_charge_max, float), np.asarray(x.p_discharge_max, float)
    power = np.zeros((T, N))
    short = np.zeros((T, C))
    members = [np.nonzero(cl == c)[0] for c in range(C)]
    target = agg.battery_power
    for t in range(T):
        above = np.clip(e[t] - e_min, 0, None)
        below = np.clip(e_max - e[t], 0, None)
        cap_d = np.minimum(pd_, above * eta_d / dt)
        cap_c = np.minimum(pc, below / (eta_c * dt))
        for c, idx in enumerate(members):
            p = target[t, c]
            if abs(p) < 1e-12:
                continue
            if p > 0:
                share = water_fill(p, cap_d[idx], above[idx])
            else:
                share = -water_fill(-p, cap_c[idx], below[idx])
            power[t, idx] = share
            short[t, c] = p - share.sum()
        p = power[t]
        e[t + 1] = e[t] + dt * (eta_c * np.clip(-p, 0, None) - np.clip(p, 0, None) / eta_d)
    return power, e, short


def member_cost(power: np.ndarray, energy: np.ndarray, x: DispatchInputs) -> float:
    """The plan's cost with the members' schedules, the objective both paths are compared on: energy
    bought minus sold for the net load plus the fleet, every member's degradation, and the shortfall
    below each member's terminal target at ``terminal_value`` (less the surplus above it at ``surplus_value``)."""
    net = np.asarray(x.net_load, float) - power.sum(axis=1)
    cost = x.dt_h * (np.clip(net, 0, None) @ np.asarray(x.price_buy) - np.clip(-net, 0, None) @ np.asarray(x.price_sell))
    cost += x.dt_h * (np.abs(power) @ np.asarray(x.degradation, float)).sum()
    gap = np.asarray(x.e_target, float) - energy[-1]
    cost += x.terminal_value * np.clip(gap, 0, None).sum()
    cost -= min(x.surplus_value or 0.0, x.terminal_value) * np.clip(-gap, 0, None).sum()
    return float(cost)


__all__ = ["FleetPlan", "FleetPlanner", "aggregate_inputs", "clusters_of", "member_cost"]
