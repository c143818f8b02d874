"""Day-ahead bids and offers of the flexible portfolio, from the dispatch optimisation's marginal values.

The dispatch LP's energy-balance duals are the value of a MWh stored in each battery cluster at the
end of each step (:func:`stored_energy_value`). A cluster with value ``v`` (EUR/MWh stored), charge and
discharge efficiencies ``eta_c``/``eta_d`` and degradation ``deg`` (EUR/MWh of throughput):

* sells (discharges) a MW when the price pays for the stored energy it uses and the wear:
  ``price >= v / eta_d + deg``;
* buys (charges) a MW when the energy it stores is worth more than the price and the wear:
  ``price <= v * eta_c - deg``.

Each delivery hour gets, per cluster, one offer at the first price and one bid at the second, for the
power the plan schedules in that hour (so an award never asks more of the fleet than a plan found
feasible; the energy coupling between hours stays in the plan, which re-optimises around the award).
The hour's value is the mean of its steps'. The market rejects what an exchange would (:func:`validate`):
a price outside the harmonised limits, a non-finite or non-positive quantity, an hour outside the
delivery day.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: the harmonised day-ahead limits (SDAC, EUR/MWh) a bid must lie within
PRICE_MIN, PRICE_MAX = -500.0, 4000.0


def stored_energy_value(result) -> np.ndarray:
    """(T, C) EUR per MWh stored at the end of each step in each cluster, from the dispatch result's
    energy-balance duals (cvxpy's sign for ``e[t+1] == e[t] + ...`` in a minimisation: the value itself;
    pinned by a hand-solved test)."""
    d = result.duals.get("energy_balance")
    if d is None:
        raise ValueError("the dispatch result has no energy-balance duals (not solved to optimality)")
    return np.asarray(d, float)


def hourly_bids(times: pd.DatetimeIndex, value: np.ndarray, power: np.ndarray, eta_c, eta_d, deg,
                clusters: list[str], hours: pd.DatetimeIndex) -> pd.DataFrame:
    """One offer (side ``sell``) or bid (``buy``) per cluster and delivery hour in ``hours`` that the plan
    covers: ``hour`` (UTC), ``cluster``, ``side``, ``mw`` (> 0: the planned power in the hour) and ``price``.
    ``value`` and ``power`` (+ discharge) are (T, C) on the plan's ``times``."""
    t = pd.DatetimeIndex(times)
    hour_of = t.floor("h")
    v = pd.DataFrame(value, index=hour_of).groupby(level=0).mean()
    p = pd.DataFrame(power, index=hour_of).groupby(level=0).mean()
    eta_c, eta_d, deg = (np.broadcast_to(np.asarray(a, float), (value.shape[1],)) for a in (eta_c, eta_d, deg))
    rows = []
    for h in pd.DatetimeIndex(hours):
        if h not in v.index:
            continue
        for c in range(value.shape[1]):
            mw = float(p.loc[h, c])
            if abs(mw) < 1e-4:
                continue
            vh = float(v.loc[h, c])
            if mw > 0:
                rows.append({"hour": h, "cluster": clusters[c], "side": "sell", "mw": round(mw, 4),
                             "price": round(vh / eta_d[c] + deg[c], 2), "value_eur_mwh": round(vh, 2)})
            else:
                rows.append({"hour": h, "cluster": clusters[c], "side": "buy", "mw": round(-mw, 4),
                             "price": round(vh * eta_c[c] - deg[c], 2), "value_eur_mwh": round(vh, 2)})
    return pd.DataFrame(rows, columns=["hour", "cluster", "side", "mw", "price", "value_eur_mwh"])


def validate(bids: pd.DataFrame, day_hours: pd.DatetimeIndex) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(accepted, rejected with ``reason``): what the exchange takes and what it sends back."""
    reason = pd.Series("", index=bids.index, dtype=object)
    price = pd.to_numeric(bids.price, errors="coerce")
    mw = pd.to_numeric(bids.mw, errors="coerce")
    reason[~np.isfinite(price)] = "price not a number"
    reason[(reason == "") & ((price < PRICE_MIN) | (price > PRICE_MAX))] = \
        f"price outside the exchange's limits ({PRICE_MIN:g} to {PRICE_MAX:g} EUR/MWh)"
    reason[(reason == "") & ~(np.isfinite(mw) & (mw > 0))] = "quantity not a positive number"
    reason[(reason == "") & ~bids.side.isin(["buy", "sell"])] = "side neither buy nor sell"
    reason[(reason == "") & ~pd.DatetimeIndex(bids.hour).isin(day_hours)] = "hour outside the delivery day"
    bad = reason != ""
    return bids[~bad].reset_index(drop=True), bids[bad].assign(reason=reason[bad]).reset_index(drop=True)


def awards(bids: pd.DataFrame, prices: pd.Series) -> pd.DataFrame:
    """Each accepted bid's award at its hour's clearing price (a price-taker: the market clears at the
    published price whatever the portfolio bids; :func:`clearing.award`): ``awarded_mw`` and the
    position it makes, ``position_mw`` (+ sold). An hour without a price awards nothing."""
    from gridpipeline.market.clearing import award

    out = bids.copy()
    price = prices.reindex(pd.DatetimeIndex(out.hour)).to_numpy(float)
    sold, bought = [], []
    for k, b in enumerate(out.itertuples()):
        if not np.isfinite(price[k]):
            sold.append(0.0)
            bought.append(0.0)
            continue
        one = pd.DataFrame({"price": [b.price], "mw": [b.mw]})
        s, bb = award(one if b.side == "sell" else None, one if b.side == "buy" else None, float(price[k]))
        sold.append(s)
        bought.append(bb)
    out["clearing_price"] = price
    out["awarded_mw"] = np.asarray(sold) + np.asarray(bought)
    out["position_mw"] = np.asarray(sold) - np.asarray(bought)
    return out


def position(awarded: pd.DataFrame, day_hours: pd.DatetimeIndex) -> pd.Series:
    """MW per delivery hour (+ sold), every hour of the day (0 where nothing was awarded)."""
    if not len(awarded):
        return pd.Series(0.0, index=day_hours)
    return awarded.groupby(pd.DatetimeIndex(awarded.hour)).position_mw.sum().reindex(day_hours, fill_value=0.0)


#: the day-ahead auction's gate closes at noon (Europe/Berlin) on the day before delivery
TZ, GATE_HOUR = "Europe/Berlin", 12


def gate_closure(day) -> pd.Timestamp:
    """UTC time the gate for delivery ``day`` (a date, Europe/Berlin) closes."""
    d = pd.Timestamp(day).tz_localize(TZ) - pd.Timedelta(days=1) + pd.Timedelta(hours=GATE_HOUR)
    return d.tz_convert("UTC")


def next_open_day(now) -> pd.Timestamp:
    """The earliest delivery day (a naive date, Europe/Berlin) whose gate is still open at ``now`` (UTC)."""
    t = pd.Timestamp(now)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    day = t.tz_convert(TZ).normalize().tz_localize(None) + pd.Timedelta(days=1)
    while gate_closure(day) <= t:
        day += pd.Timedelta(days=1)
    return day


def day_hours(day) -> pd.DatetimeIndex:
    """The delivery day's hours as naive UTC starts (23, 24 or 25 of them)."""
    start = pd.Timestamp(day).tz_localize(TZ)
    end = (pd.Timestamp(day) + pd.Timedelta(days=1)).tz_localize(TZ)
    return pd.date_range(start.tz_convert("UTC"), end.tz_convert("UTC"), freq="h", inclusive="left").tz_localize(None)
