"""Day-ahead bids from the plan's marginal values, what the exchange rejects, the price-taker's award,
and the delivery day's calendar (gate closure, daylight-saving days)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gridpipeline.market.bids import (
    awards,
    day_hours,
    gate_closure,
    hourly_bids,
    next_open_day,
    position,
    validate,
)


def test_offer_and_bid_prices_from_the_value_of_stored_energy_by_hand():
    """Two clusters over two hours of 5-minute steps. Cluster A (eta_c 0.9, eta_d 0.8, 10 EUR/MWh wear)
    discharges 1 MW in hour 0 with stored energy worth 40: it offers 1 MW at 40 / 0.8 + 10 = 60. It
    charges 2 MW in hour 1 with energy worth 30: it bids 2 MW at 30 x 0.9 - 10 = 17. Cluster B does
    nothing: no bid."""
    times = pd.date_range("2026-06-17 00:00", periods=24, freq="5min")
    value = np.column_stack([np.r_[np.full(12, 40.0), np.full(12, 30.0)], np.full(24, 50.0)])
    power = np.column_stack([np.r_[np.full(12, 1.0), np.full(12, -2.0)], np.zeros(24)])
    b = hourly_bids(times, value, power, [0.9, 0.95], [0.8, 0.95], [10.0, 20.0], ["A", "B"],
                    pd.DatetimeIndex(["2026-06-17 00:00", "2026-06-17 01:00", "2026-06-17 02:00"]))
    assert b[["cluster", "side", "mw", "price"]].to_dict("records") == [
        {"cluster": "A", "side": "sell", "mw": 1.0, "price": 60.0},
        {"cluster": "A", "side": "buy", "mw": 2.0, "price": 17.0}]


def test_the_exchange_rejects_what_it_cannot_take_with_reasons():
    hours = day_hours(pd.Timestamp("2026-06-17"))
    bids = pd.DataFrame({"hour": [hours[0], hours[1], hours[2], hours[3], hours[0] - pd.Timedelta(hours=1), hours[4]],
                         "cluster": "A", "side": ["sell", "buy", "sell", "sell", "sell", "hold"],
                         "mw": [1.0, 1.0, -1.0, 1.0, 1.0, 1.0],
                         "price": [50.0, 5000.0, 40.0, np.nan, 40.0, 40.0]})
    ok, bad = validate(bids, hours)
    assert len(ok) == 1 and ok.price.iloc[0] == 50.0
    assert list(bad.reason) == ["price outside the exchange's limits (-500 to 4000 EUR/MWh)",
                                "quantity not a positive number", "price not a number",
                                "hour outside the delivery day", "side neither buy nor sell"]


def test_a_price_taker_is_awarded_what_is_in_the_money_and_cannot_move_the_price():
    hours = day_hours(pd.Timestamp("2026-06-17"))
    bids = pd.DataFrame({"hour": [hours[0], hours[0], hours[1], hours[1]], "cluster": ["A", "B", "A", "B"],
                         "side": ["sell", "sell", "buy", "buy"], "mw": [1.0, 2.0, 1.5, 0.5],
                         "price": [40.0, 60.0, 30.0, 10.0]})
    prices = pd.Series([50.0, 20.0], index=hours[:2])
    aw = awards(bids, prices)
    assert aw.awarded_mw.tolist() == [1.0, 0.0, 1.5, 0.0]
    pos = position(aw, hours)
    assert pos.iloc[0] == 1.0 and pos.iloc[1] == -1.5 and (pos.iloc[2:] == 0).all()
    # ten times the volume: same price, same hours in the money (the portfolio cannot move the price)
    big = awards(bids.assign(mw=bids.mw * 10), prices)
    assert big.clearing_price.tolist() == aw.clearing_price.tolist()
    assert (big.awarded_mw > 0).tolist() == (aw.awarded_mw > 0).tolist()
    # an hour without a published price awards nothing
    assert awards(bids, prices.iloc[:1]).awarded_mw.tolist() == [1.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize(("now", "day"), [
    ("2026-06-15 09:59", "2026-06-16"),   # 11:59 Berlin (CEST): tomorrow's gate still open
    ("2026-06-15 10:00", "2026-06-17"),   # noon Berlin: closed, the next is the day after
    ("2026-12-15 10:59", "2026-12-16"),   # 11:59 Berlin (CET)
    ("2026-12-15 11:00", "2026-12-17"),
])
def test_the_next_open_gate(now, day):
    assert next_open_day(pd.Timestamp(now)) == pd.Timestamp(day)
    assert gate_closure(pd.Timestamp(day)) > pd.Timestamp(now, tz="UTC")


def test_delivery_days_across_daylight_saving():
    assert len(day_hours(pd.Timestamp("2026-03-29"))) == 23
    assert len(day_hours(pd.Timestamp("2026-10-25"))) == 25
    h = day_hours(pd.Timestamp("2026-06-17"))
    assert len(h) == 24 and h[0] == pd.Timestamp("2026-06-16 22:00")
