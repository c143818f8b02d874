"""Price signals: nodal prices turned into a tariff per zone (or feeder) and step that customers can act on.

A customer sees one price for its zone: the load-weighted mean of its buses' DLMPs
(:func:`zone_prices`). The policy then bounds what is published (:func:`publish_tariff`): a cap and a
floor, and the largest change per hour, so that a signal never jumps faster than customers can follow.
Every bound that bites is reported with the step, the zone and by how much, because the tariff is a
decision and its record must say where it departs from the prices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class TariffPolicy:
    """EUR/MWh: ``cap`` and ``floor`` of the published tariff, ``max_change_per_hour`` between steps of
    ``step_minutes``."""

    cap: float = 500.0
    floor: float = -100.0
    max_change_per_hour: float = 100.0
    step_minutes: float = 5.0
    #: :func:`choose_tariff`: the tariff stays within this share of its mean either way, and the
    #: horizon's peak import is worth this much per MW (the upstream grid's capacity charge, about
    #: 110 EUR/kW a year in German DSO tariffs, per day: a shadow value the tariff is chosen with)
    max_deviation: float = 0.5
    peak_value_eur_mw: float = 300.0

    def __post_init__(self):
        if self.floor > self.cap:
            raise ValueError(f"tariff policy: floor {self.floor} above cap {self.cap}")
        if self.max_change_per_hour <= 0:
            raise ValueError("tariff policy: max_change_per_hour must be positive")


def zone_prices(dlmp: np.ndarray, zone_of_bus: np.ndarray, weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(zones (Z,), prices (T, Z)): the load-weighted mean DLMP of each zone's buses (the plain mean where
    a zone has no load at a step)."""
    dlmp = np.atleast_2d(np.asarray(dlmp, float))
    T, N = dlmp.shape
    zone_of_bus = np.asarray(zone_of_bus)
    zones = np.unique(zone_of_bus)
    w = np.ones((T, N)) if weight is None else np.clip(np.atleast_2d(np.asarray(weight, float)), 0.0, None)
    out = np.zeros((T, len(zones)))
    for k, z in enumerate(zones):
        m = zone_of_bus == z
        ws = w[:, m].sum(axis=1)
        plain = dlmp[:, m].mean(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, k] = np.where(ws > 1e-12, (dlmp[:, m] * w[:, m]).sum(axis=1) / np.where(ws > 1e-12, ws, 1.0), plain)
    return zones, out


def publish_tariff(prices: np.ndarray, policy: TariffPolicy, last: np.ndarray | None = None
                   ) -> tuple[np.ndarray, list[dict]]:
    """(tariff (T, Z), bounds that bit): each step's zone price clipped to [floor, cap], then moved from
    the step before (``last`` (Z,): the tariff in force; none: the first step is free) by at most
    ``max_change_per_hour x step``. Each adjustment is a row: step, zone index, rule, price, published."""
    p = np.atleast_2d(np.asarray(prices, float))
    T, Z = p.shape
    ramp = policy.max_change_per_hour * policy.step_minutes / 60.0
    out = np.zeros((T, Z))
    notes: list[dict] = []
    prev = None if last is None else np.asarray(last, float).copy()
    for t in range(T):
        want = p[t].copy()
        nan = ~np.isfinite(want)
        if nan.any():  # no price: hold the tariff in force (or the floor at the very start)
            want[nan] = prev[nan] if prev is not None else policy.floor
            for z in np.flatnonzero(nan):
                notes.append({"step": t, "zone": int(z), "rule": "no price: held", "price": None,
                              "published": float(want[z])})
        clipped = np.clip(want, policy.floor, policy.cap)
        for z in np.flatnonzero(np.abs(clipped - want) > 1e-9):
            notes.append({"step": t, "zone": int(z), "rule": "cap" if want[z] > policy.cap else "floor",
                          "price": float(want[z]), "published": float(clipped[z])})
        pub = clipped if prev is None else np.clip(clipped, prev - ramp, prev + ramp)
        for z in np.flatnonzero(np.abs(pub - clipped) > 1e-9):
            notes.append({"step": t, "zone": int(z), "rule": "largest change per hour", "price": float(clipped[z]),
                          "published": float(pub[z])})
        out[t] = pub
        prev = pub
    return out, notes


@dataclass(frozen=True)
class TariffChoice:
    """What :func:`choose_tariff` chose: ``tariff`` (T, Z) EUR/MWh, the ``response`` (T, Z) MW it is
    predicted to bring (+ more load), and the figures its record carries."""

    tariff: np.ndarray
    response: np.ndarray
    summary: dict


def choose_tariff(price: np.ndarray, weight: np.ndarray, net_import: np.ndarray, policy: TariffPolicy,
                  last: np.ndarray | None = None, import_limit: float | None = None, penalty: float = 1e4,
                  import_margin: np.ndarray | None = None, import_scenarios: np.ndarray | None = None
                  ) -> TariffChoice:
    """The tariff per step and zone that the predicted response makes cheapest, the response treated as
    a flexible resource in a linear programme (co-optimised, not iterated: the response model is linear
    in the tariff, so one LP finds what iterating price -> response -> flows would converge to).

    ``price`` (T, Z): each zone's price (its DLMP, or the energy price), EUR/MWh; ``weight`` (T, Z) or
    (Z,): the MW a zone's responsive customers move per unit of relative price (``sum over classes of
    share x elasticity x class load``, <= 0: a dearer step sheds); ``net_import`` (T,): the substation's
    forecast import without the response.

    The customers answer ``tariff / mean - 1`` (:mod:`market.response`), the mean weighted by the load
    they expect in each step (the world's customers keep their energy over the tariff's window), so the
    tariff keeps each zone's mean, weighted by ``|weight|`` (the responsive load per step; the plain mean
    when it is constant), at its prices' mean weighted the same way (clipped to the policy's floor and
    cap): what customers pay on average is the price of energy, the signal only moves it between steps,
    and the predicted response sums to zero over the horizon (load shifted, not saved). Decision:
    ``tariff[t, z]``, within

    * the policy's floor and cap, and its ``max_deviation`` of the zone's mean either way;
    * the policy's largest change per hour between steps, and from ``last`` (the tariff in force) as far
      as the new horizon's mean allows (beyond it, the first step's extra move is priced at ``penalty``);

    minimising the energy the response moves, at each step's price, plus the policy's ``peak_value_eur_mw`` per MW of the
    horizon's peak import (``net_import`` + the response), plus ``penalty`` per MW over ``import_limit``
    (priced slack: the programme is feasible by construction). A zone whose mean price is not positive
    gets its prices clipped (:func:`publish_tariff`) and no response.

    ``import_margin`` (T,): how far each step's import may turn out above its forecast (the forecast's
    P90 less its P50). The peak is taken over the import plus that margin, so the response does not fill
    an uncertain valley up to the forecast peak, where a forecast error would make it the day's new
    peak; the margin is not counted as load anywhere else.

    ``import_scenarios`` (S, T): equally likely deviations of the import from ``net_import`` (for example
    the last weeks' day-ahead forecast errors at the same hours, which keep how errors hang together
    within a day). The peak is then valued at its mean over the scenarios, the expected daily peak
    (a sample-average programme: one peak variable per scenario): the response lowers the steps likely
    to be the day's peak, in proportion to how likely, and raises only steps that are unlikely to be. A
    margin is the one-scenario case; with both, the scenarios are used."""
    import cvxpy as cp

    p = np.atleast_2d(np.asarray(price, float))
    T, Z = p.shape
    p = np.where(np.isfinite(p), p, np.nanmean(p) if np.isfinite(p).any() else 0.0)
    w = np.broadcast_to(np.asarray(weight, float), (T, Z)).copy()
    base = np.asarray(net_import, float).reshape(T)
    # each step's weight in a zone's mean: its responsive load (|weight|), equal steps where it has none
    W = np.abs(w)
    W = np.where(W.sum(axis=0)[None, :] > 1e-12, W, 1.0)
    mean = np.clip((W * p).sum(axis=0) / W.sum(axis=0), policy.floor, policy.cap)
    live = mean > 1e-6
    fixed, notes = publish_tariff(p, policy, last)
    if not live.any() or T < 2:
        return TariffChoice(fixed, np.zeros((T, Z)), {"status": "fixed", "notes": notes})
    peak_value, max_deviation = policy.peak_value_eur_mw, policy.max_deviation
    if import_scenarios is not None and np.size(import_scenarios):
        dev = np.nan_to_num(np.atleast_2d(np.asarray(import_scenarios, float)).reshape(-1, T))
    else:
        dev = (np.zeros((1, T)) if import_margin is None
               else np.clip(np.nan_to_num(np.asarray(import_margin, float)), 0.0, None).reshape(1, T))
    S = dev.shape[0]
    dt_h = policy.step_minutes / 60.0
    ramp = policy.max_change_per_hour * dt_h
    zl = np.flatnonzero(live)  # the zones whose tariff is chosen; the others keep their clipped prices
    m = mean[zl]
    wl = w[:, zl]
    tau = cp.Variable((T, len(zl)))
    rel = tau @ np.diag(1.0 / m) - 1.0
    resp = cp.multiply(wl, rel)
    peak = cp.Variable(S)  # the horizon's peak import in each scenario
    over = cp.Variable(T, nonneg=True)
    jump = cp.Variable(len(zl), nonneg=True)  # the first step's move from the tariff in force beyond the ramp
    load = base + cp.sum(resp, axis=1)
    lo = np.maximum(policy.floor, m * (1 - max_deviation))
    hi = np.minimum(policy.cap, m * (1 + max_deviation))
    cons = [tau >= np.broadcast_to(lo, (T, len(zl))), tau <= np.broadcast_to(hi, (T, len(zl))),
            cp.sum(cp.multiply(W[:, zl], tau), axis=0) == m * W[:, zl].sum(axis=0), cp.abs(cp.diff(tau, axis=0)) <= ramp,
            np.ones((S, 1)) @ cp.reshape(load, (1, T), order="C") + dev <= cp.reshape(peak, (S, 1), order="C") @ np.ones((1, T))]
    if last is not None:  # soft: a horizon whose mean moved may need a larger first step (priced)
        cons.append(cp.abs(tau[0] - np.asarray(last, float)[zl]) <= ramp + jump)
    if import_limit is not None:
        cons.append(load <= import_limit + over)
    cost = (cp.sum(cp.multiply(p[:, zl] * dt_h, resp)) + peak_value * cp.sum(peak) / S + penalty * dt_h * cp.sum(over)
            + penalty * cp.sum(jump))
    prob = cp.Problem(cp.Minimize(cost), cons)
    try:
        prob.solve(solver=cp.HIGHS)
    except cp.error.SolverError:
        prob = None
    if prob is None or prob.status not in ("optimal", "optimal_inaccurate") or tau.value is None:
        return TariffChoice(fixed, np.zeros((T, Z)), {"status": "fixed: " + (prob.status if prob else "solver"),
                                                     "notes": notes})
    t = fixed.copy()
    t[:, zl] = np.asarray(tau.value, float)
    r = np.zeros((T, Z))
    r[:, zl] = np.asarray(resp.value, float)
    first_jump = float(np.asarray(jump.value).max()) if last is not None and jump.value is not None else 0.0
    return TariffChoice(t, r, {
        "status": "optimal", "peak_before_mw": round(float(base.max()), 4),
        "peak_after_mw": round(float((base + r.sum(axis=1)).max()), 4),
        # the peak the price of the peak was taken over: its mean over the scenarios (or base + margin)
        "expected_peak_before_mw": round(float((base[None, :] + dev).max(axis=1).mean()), 4),
        "expected_peak_after_mw": round(float((base[None, :] + r.sum(axis=1)[None, :] + dev).max(axis=1).mean()), 4),
        "scenarios": S,
        "energy_cost_moved_eur": round(float((p * dt_h * r).sum()), 2),
        "over_limit_mwh": round(float(np.asarray(over.value).sum() * dt_h), 4) if over.value is not None else 0.0,
        "tariff_range": [round(float(t.min()), 2), round(float(t.max()), 2)], "mean": [round(float(x), 2) for x in mean],
        "first_step_beyond_ramp_eur_mwh": round(first_jump, 4), "zones_fixed": int((~live).sum()),
        "peak_value_eur_mw": peak_value, "max_deviation": max_deviation})


def error_scenarios(errors: pd.Series, steps: pd.DatetimeIndex, days: int = 28, min_days: int = 7,
                    tz: str = "Europe/Berlin") -> np.ndarray | None:
    """(S, T): the last ``days`` whole days of the import's forecast errors (measured - forecast, MW;
    ``errors`` indexed by UTC time), each laid on ``steps`` by local time of day, for
    :func:`choose_tariff`'s ``import_scenarios``. A past day counts when it covers at least 90 % of the
    steps' times of day (a clock change's missing hour is filled from its neighbours); only days that
    end before ``steps`` begin. None when fewer than ``min_days`` count: too little history to say
    where the peak may fall."""
    e = pd.Series(errors, dtype=float).dropna()
    if e.empty or not len(steps):
        return None
    idx = pd.DatetimeIndex(e.index)
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    e.index = idx.tz_convert(tz)
    st = pd.DatetimeIndex(steps)
    st = (st.tz_localize("UTC") if st.tz is None else st.tz_convert("UTC")).tz_convert(tz)
    tod = st.hour * 60 + st.minute
    first = st[0].normalize()
    out = []
    for day, g in e[e.index < first].groupby(e.index[e.index < first].normalize()):
        by = g.groupby(g.index.hour * 60 + g.index.minute).first()
        if by.index.isin(tod).sum() < 0.9 * len(np.unique(tod)):
            continue
        out.append(by.reindex(sorted(set(by.index) | set(tod))).interpolate(limit_direction="both").reindex(tod)
                   .to_numpy(float))
    out = out[-days:]
    return np.vstack(out) if len(out) >= min_days else None
