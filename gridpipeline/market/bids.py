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

**Demand response** is offered as block orders (:func:`dr_blocks`): each interruptible contract with
interruptions left offers, per block, the MW the plan counts on (contracted x expected delivery) over
consecutive hours no longer than its longest interruption, at its compensation, so a sale never pays
less than the customer is paid. A block is all or nothing (the exchange's block order with a minimum
acceptance ratio of 1): it sells when the clearing prices over its hours average at least its price
(:func:`awards`), so an award is always one interruption the contract allows. The blocks go where the
plan's price curve for the day (known prices, else the forecast) is highest, as many as the contract
allows a day and has left in the month. An awarded block becomes a DR call at delivery (the dispatcher),
and its energy is settled with the fleet's: the position says which part is DR (:func:`dr_position`).
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


def dr_blocks(contracts, hours: pd.DatetimeIndex, price: pd.Series, expected_delivery: float,
              left_in_month: dict[str, int] | None = None,
              used_per_day: dict[tuple[str, object], int] | None = None,
              used_per_month: dict[tuple[str, object], int] | None = None) -> pd.DataFrame:
    """Block offers of the interruptible ``contracts`` (objects with ``name``, ``load_id``,
    ``interruptible_mw``, ``max_per_day``, ``max_per_month``, ``max_duration_min`` and
    ``compensation_eur_mwh``) for the delivery ``hours``: one row per block and hour, ``cluster`` the
    contract's VEN, ``side`` ``sell``, ``mw`` what the plan counts on, ``price`` the compensation and
    ``block`` the block's id. ``price``: EUR/MWh per hour (the plan's curve; a missing hour is never
    chosen). ``left_in_month``: VEN -> interruptions the contract has left in the delivery day's month
    (default: all of ``max_per_month``). ``used_per_day``: (VEN, UTC date) -> interruptions already
    called or sold that day; ``used_per_month``: (VEN, UTC month as a ``pd.Period``) -> the same per
    month. A contract counts its interruptions per UTC day and UTC month of their start, as the
    customer's VEN does, and a delivery day in Europe/Berlin spans two UTC days (and, on the 1st, two
    UTC months): each block's UTC day keeps within ``max_per_day`` and its UTC month within
    ``max_per_month`` with what they already hold. Blocks are chosen greedily, the
    highest mean price first, and never overlap or touch (two blocks side by side would be one
    interruption longer than allowed)."""
    from gridpipeline.common.openadr import contract_ven

    hours = pd.DatetimeIndex(hours)
    p = pd.Series(price).reindex(hours).to_numpy(float)
    utc = hours.tz_convert("UTC").tz_localize(None) if hours.tz is not None else hours
    rows = []
    for c in contracts:
        ven = contract_ven(c.load_id)
        n = int((left_in_month or {}).get(ven, c.max_per_month))
        length = min(max(int(c.max_duration_min // 60), 1), len(hours))
        mw = round(float(c.interruptible_mw) * float(expected_delivery), 4)
        if n <= 0 or mw <= 0 or int(c.max_duration_min) < 60:
            continue  # an interruption shorter than an hour cannot deliver an hourly product
        means = np.array([p[k:k + length].mean() for k in range(len(hours) - length + 1)])
        day = [t.date() for t in utc[:len(means)]]
        month = [pd.Timestamp(t).to_period("M") for t in utc[:len(means)]]
        room = {d: int(c.max_per_day) - int((used_per_day or {}).get((ven, d), 0)) for d in set(day)}
        mroom = {m: int(c.max_per_month) - int((used_per_month or {}).get((ven, m), 0)) for m in set(month)}
        taken = np.zeros(len(hours), bool)
        for _ in range(n):
            free = np.array([np.isfinite(m) and room[day[k]] > 0 and mroom[month[k]] > 0
                             and not taken[max(k - 1, 0):k + length + 1].any() for k, m in enumerate(means)])
            if not free.any():
                break
            k = int(np.flatnonzero(free)[np.argmax(means[free])])
            taken[k:k + length] = True
            room[day[k]] -= 1
            mroom[month[k]] -= 1
            block = f"{ven}@{hours[k]:%Y%m%dT%H}"
            rows += [{"hour": h, "cluster": ven, "side": "sell", "mw": mw, "price": float(c.compensation_eur_mwh),
                      "value_eur_mwh": np.nan, "block": block} for h in hours[k:k + length]]
    return pd.DataFrame(rows, columns=["hour", "cluster", "side", "mw", "price", "value_eur_mwh", "block"])


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
    if "block" in bids:  # a block order is taken whole or sent back whole
        blk = bids["block"]
        hit = set(blk[(reason != "") & blk.notna()])
        reason[(reason == "") & blk.isin(hit)] = "another hour of its block was rejected"
    bad = reason != ""
    return bids[~bad].reset_index(drop=True), bids[bad].assign(reason=reason[bad]).reset_index(drop=True)


def awards(bids: pd.DataFrame, prices: pd.Series) -> pd.DataFrame:
    """Each accepted bid's award at its hour's clearing price (a price-taker: the market clears at the
    published price whatever the portfolio bids; :func:`clearing.award`): ``awarded_mw`` and the
    position it makes, ``position_mw`` (+ sold). An hour without a price awards nothing. Rows with a
    ``block`` are block orders, awarded whole or not at all (:func:`clearing.award_block`)."""
    from gridpipeline.market.clearing import award, award_block

    out = bids.copy()
    price = prices.reindex(pd.DatetimeIndex(out.hour)).to_numpy(float)
    block = out["block"] if "block" in out else pd.Series(None, index=out.index, dtype=object)
    in_block = block.notna().to_numpy()
    won_block = {}
    for b, rows in out[in_block].groupby(block[in_block]):
        k = out.index.get_indexer(rows.index)
        won_block[b] = award_block(rows.side.iloc[0], float(rows.price.iloc[0]), price[k])
    sold, bought = [], []
    for k, b in enumerate(out.itertuples()):
        if in_block[k]:
            won = won_block[block.iloc[k]]
            sold.append(float(b.mw) if won and b.side == "sell" else 0.0)
            bought.append(float(b.mw) if won and b.side == "buy" else 0.0)
            continue
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


def _is_dr(awarded: pd.DataFrame) -> np.ndarray:
    return (awarded["block"].notna() if "block" in awarded else pd.Series(False, index=awarded.index)).to_numpy()


def position(awarded: pd.DataFrame, day_hours: pd.DatetimeIndex) -> pd.Series:
    """The fleet's MW per delivery hour (+ sold), every hour of the day (0 where nothing was awarded):
    what the batteries' plans follow. Demand-response blocks are not in it (:func:`dr_position`)."""
    if not len(awarded):
        return pd.Series(0.0, index=day_hours)
    a = awarded[~_is_dr(awarded)]
    return a.groupby(pd.DatetimeIndex(a.hour)).position_mw.sum().reindex(day_hours, fill_value=0.0)


def dr_position(awarded: pd.DataFrame, day_hours: pd.DatetimeIndex) -> pd.Series:
    """The MW per delivery hour sold as demand response (awarded blocks): delivered by DR calls, not by
    the batteries."""
    if not len(awarded):
        return pd.Series(0.0, index=day_hours)
    a = awarded[_is_dr(awarded)]
    return a.groupby(pd.DatetimeIndex(a.hour)).position_mw.sum().reindex(day_hours, fill_value=0.0)


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
