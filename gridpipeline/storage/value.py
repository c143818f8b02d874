"""The value of stored energy at the end of a plan's horizon, learnt from the prices already published.

A rolling plan sees 24 hours; what the energy it leaves in the fleet is worth depends on the prices
after them, which it does not know. The median of the horizon's prices (the planner's default) is a
guess that ignores when the horizon ends: energy held at 06:00, before the morning peak, is worth more
than energy held at 14:00, after it.

:func:`hindsight_values` runs the fleet as one battery over the last ``days`` of published prices with
hindsight (a small LP: the arbitrage the fleet could have made) and reads the value of a MWh stored at
the end of each hour from the duals of its energy balance, the same quantity the dispatch's own duals
give (``market.bids``). :func:`terminal_value` averages that value over the recent days at the hour of
day the horizon ends (the last day left out: a hindsight LP's own end leaves its energy worthless). It
uses nothing but prices already published, the way water values are learnt from past inflows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: days of published prices the value is learnt from (and averaged over, less the last)
DAYS = 14
#: days of the fleet's own executed record its realised share is learnt from (:func:`realised_share`)
SHARE_DAYS = 28


def hindsight_values(prices: pd.Series, e_max: float, p_max: float, eta_c: float, eta_d: float,
                     degradation: float) -> pd.Series:
    """EUR per MWh for each step of ``prices`` (hourly, EUR/MWh): what a MWh more in the battery at the
    step's start is worth, its own trade included, for one battery of ``e_max`` MWh and ``p_max`` MW
    trading them with hindsight, starting half full and free to end. The energy balance's dual (cvxpy's
    sign for ``e[t+1] == e[t] + ...`` in a minimisation is the value itself)."""
    import cvxpy as cp

    p = prices.to_numpy(float)
    T = len(p)
    if T == 0 or e_max <= 0 or p_max <= 0:
        return pd.Series(np.nan, index=prices.index)
    c, d = cp.Variable(T, nonneg=True), cp.Variable(T, nonneg=True)
    e = cp.Variable(T + 1)
    bal = e[1:] == e[:-1] + eta_c * c - d / eta_d
    cons = [bal, e[0] == 0.5 * e_max, e >= 0, e <= e_max, c <= p_max, d <= p_max]
    cp.Problem(cp.Minimize(p @ (c - d) + degradation * cp.sum(c + d)), cons).solve(solver=cp.HIGHS)
    if bal.dual_value is None:
        return pd.Series(np.nan, index=prices.index)
    return pd.Series(np.asarray(bal.dual_value, float), index=prices.index)


def terminal_value(prices: pd.Series, end: pd.Timestamp, e_max: float, p_max: float, eta_c: float,
                   eta_d: float, degradation: float, days: int = DAYS) -> float | None:
    """EUR/MWh a MWh left in the fleet at ``end`` (the time the horizon ends) is worth: the mean
    hindsight value (:func:`hindsight_values`) of the hour that starts at ``end``'s time of day, over
    the ``days`` before the last published day (``prices``: hourly, published only). None when fewer
    than two days are known.

    Which hour: the balance of hour ``t`` links the energy at its start to the energy at its end, and
    its dual is what a MWh more at its start is worth, the hour's own trade included (the hand case
    in the tests: a MWh more at the start of a 100 EUR/MWh hour sells in it). A MWh left when the
    horizon ends is one more at the start of the hour that follows."""
    s = prices.dropna().sort_index()
    if s.empty:
        return None
    s = s[s.index > s.index.max() - pd.Timedelta(days=days + 1)]
    if (s.index.max() - s.index.min()) < pd.Timedelta(days=2):
        return None
    v = hindsight_values(s, e_max, p_max, eta_c, eta_d, degradation)
    v = v[v.index <= v.index.max() - pd.Timedelta(days=1)]  # the hindsight's own end is worthless
    hour = pd.Timestamp(end).floor("h").hour  # the hour that starts when the horizon ends
    at = v[pd.DatetimeIndex(v.index).hour == hour].dropna()
    return float(at.mean()) if len(at) else None


def realised_share(prices: pd.Series, power: pd.Series, e_max: float, p_max: float, eta_c: float,
                   eta_d: float, degradation: float) -> float | None:
    """The share of the hindsight trader's profit the fleet realised over its own record: ``power`` the
    fleet's executed MW per hour (+ discharge; its own history), ``prices`` the published EUR/MWh of
    the same hours, the fleet as one battery (the parameters of :func:`hindsight_values`).

    The realised profit is what the executed hours earned (the price times the energy sold less the
    energy bought, less the degradation of the throughput). The hindsight profit is the best the same
    battery could have earned over the same hours, ending with at least the energy the record ended
    with (its start free): the record is one of its schedules, so the share is at most one. None when
    the record is under two days or had nothing to earn (the hindsight profit under 1 EUR); clipped at 0.
    """
    import cvxpy as cp

    df = pd.DataFrame({"price": prices, "power": power}).dropna()
    if df.empty or (df.index.max() - df.index.min()) < pd.Timedelta(days=2) or e_max <= 0 or p_max <= 0:
        return None
    p, x = df.price.to_numpy(float), df.power.to_numpy(float)
    d, c = np.clip(x, 0, None), np.clip(-x, 0, None)
    realised = float(p @ (d - c) - degradation * (c + d).sum())
    net = float((eta_c * c - d / eta_d).sum())          # the record's change of stored energy (MWh)
    T = len(p)
    cv, dv, e = cp.Variable(T, nonneg=True), cp.Variable(T, nonneg=True), cp.Variable(T + 1)
    cons = [e[1:] == e[:-1] + eta_c * cv - dv / eta_d, e >= 0, e <= e_max, cv <= p_max, dv <= p_max,
            e[T] - e[0] >= min(net, e_max)]
    prob = cp.Problem(cp.Maximize(p @ (dv - cv) - degradation * cp.sum(cv + dv)), cons)
    prob.solve(solver=cp.HIGHS)
    if prob.value is None or not np.isfinite(prob.value) or prob.value < 1.0:
        return None
    return float(min(max(realised / prob.value, 0.0), 1.0))


def _utc(series: pd.Series) -> pd.Series:
    """``series`` without gaps, in time order, its naive times taken as UTC."""
    s = series.dropna().sort_index()
    if s.index.tz is None:
        s.index = s.index.tz_localize("UTC")
    return s


class TerminalValues:
    """:func:`terminal_value` for a fleet (``fleet_table`` rows: capacity, power, efficiencies and
    degradation; the fleet as one battery, capacity-weighted), its hindsight LP re-solved only when
    a new day of prices is published."""

    def __init__(self, fleet: pd.DataFrame, days: int = DAYS, share_days: int = SHARE_DAYS):
        cap = fleet.capacity_mwh.to_numpy(float)
        w = cap / cap.sum() if cap.sum() > 0 else np.full(len(cap), 1.0 / max(len(cap), 1))
        self.params = (float(cap.sum()), float(fleet.p_max_mw.to_numpy(float).sum()),
                       float(w @ fleet.eta_c.to_numpy(float)), float(w @ fleet.eta_d.to_numpy(float)),
                       float(w @ fleet.degradation.to_numpy(float)))
        self.days, self.share_days = days, share_days
        self._key, self._values = None, pd.Series(dtype=float)
        self._share_key, self._share = None, None

    def at(self, known: pd.Series, end) -> float | None:
        """The value of a MWh left at ``end`` from the prices ``known`` (published only); None with under
        two days of them."""
        s = _utc(known)
        if s.empty:
            return None
        s = s[s.index > s.index.max() - pd.Timedelta(days=self.days + 1)]
        if (s.index.max() - s.index.min()) < pd.Timedelta(days=2):
            return None
        if self._key != s.index.max():
            v = hindsight_values(s, *self.params)
            self._values, self._key = v[v.index <= v.index.max() - pd.Timedelta(days=1)], s.index.max()
        end = pd.Timestamp(end)
        end = end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
        hour = end.floor("h").hour  # the hour that starts when the horizon ends (terminal_value)
        at = self._values[pd.DatetimeIndex(self._values.index).tz_convert("UTC").hour == hour].dropna()
        return float(at.mean()) if len(at) else None

    def share(self, known: pd.Series, power: pd.Series) -> float | None:
        """:func:`realised_share` of the fleet's record ``power`` (MW per hour, + discharge) over its last
        ``share_days``, at the published prices ``known``; re-learnt once a day (None: too short a record)."""
        x = _utc(power)
        if x.empty:
            return None
        day = x.index.max().floor("D")
        if self._share_key != day:
            x = x[x.index > x.index.max() - pd.Timedelta(days=self.share_days)]
            s = _utc(known)
            hourly = x.resample("1h").mean().dropna()
            self._share = realised_share(s.reindex(hourly.index), hourly, *self.params)
            self._share_key = day
        return self._share

    def learnt(self, known: pd.Series, end, power: pd.Series | None) -> tuple[float | None, float | None]:
        """The value of a MWh left at ``end`` to this fleet: the hindsight value (:meth:`at`) times the
        share of the hindsight profit the fleet realised over its own record (:meth:`share`; 1 without a
        record). A MWh held for later is sold later by the same fleet, on forecasts, and a trader that
        realises a share of what hindsight earns values what it holds at that share of hindsight's
        value. Returns (value, share)."""
        v = self.at(known, end)
        sh = self.share(known, power) if power is not None and len(power) else None
        if v is None or sh is None:
            return v, sh
        return v * sh, sh


__all__ = ["DAYS", "SHARE_DAYS", "TerminalValues", "hindsight_values", "realised_share", "terminal_value"]
