"""Day-ahead bids from the plan's marginal values, what the exchange rejects, the price-taker's award,
and the delivery day's calendar (gate closure, daylight-saving days)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gridpipeline.market.bids import (
    awards,
    day_hours,
    dr_blocks,
    dr_position,
    gate_closure,
    hourly_bids,
    next_open_day,
    position,
    validate,
)
from gridpipeline.market.settlement import settle_day


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


class _Contract:
    def __init__(self, load_id, mw=0.1, per_day=2, per_month=8, duration=120, comp=300.0):
        self.name, self.load_id, self.interruptible_mw = f"c{load_id}", load_id, mw
        self.max_per_day, self.max_per_month, self.max_duration_min = per_day, per_month, duration
        self.compensation_eur_mwh, self.notice_min = comp, 15


def test_demand_response_blocks_go_where_the_day_is_dearest_within_the_contract():
    """A 2-hour contract allowed 2 interruptions a day offers two 2-hour blocks at its compensation, for
    the MW the plan counts on, over the two dearest windows that neither overlap nor touch: hours 18-19
    (mean 215), then 8-9 (155), since 16-17 and 20-21 would touch the first. One interruption left this
    month: one block. A contract
    interrupted for less than an hour, or with nothing left, offers nothing; an hour without a price is
    never chosen."""
    hours = pd.date_range("2026-06-17 00:00", periods=24, freq="h")
    price = pd.Series(50.0, index=hours)
    price.iloc[17:21] = [200.0, 220.0, 210.0, 190.0]
    price.iloc[8:10] = [150.0, 160.0]
    b = dr_blocks([_Contract(104)], hours, price, 0.8)
    assert b.price.eq(300.0).all() and b.mw.eq(0.08).all() and b.side.eq("sell").all()
    blocks = b.groupby("block").hour.agg(["min", "count"])
    assert sorted(blocks["min"].dt.hour) == [8, 18] and blocks["count"].eq(2).all()
    one = dr_blocks([_Contract(104)], hours, price, 0.8, left_in_month={"ven-load-104": 1})
    assert sorted(pd.DatetimeIndex(one.hour).hour) == [18, 19]
    assert dr_blocks([_Contract(104, duration=45)], hours, price, 0.8).empty
    assert dr_blocks([_Contract(104)], hours, price, 0.8, left_in_month={"ven-load-104": 0}).empty
    gap = price.copy()
    gap.iloc[18] = np.nan
    got = dr_blocks([_Contract(104, per_day=1)], hours, gap, 0.8)
    assert 18 not in set(pd.DatetimeIndex(got.hour).hour)


def test_demand_response_blocks_keep_each_utc_day_within_the_contracts_daily_limit():
    """A Berlin summer delivery day runs 22:00 UTC to 22:00 UTC, over two UTC days, and the customer's
    VEN counts interruptions per UTC day. A contract allowed one a day whose first UTC day (the 16th)
    already holds one (sold the day before) offers no block starting on the 16th, however dear its
    hours: one block, on the 17th. With the 16th free, it offers one block on each UTC day."""
    hours = day_hours(pd.Timestamp("2026-06-17"))  # 2026-06-16 22:00 .. 2026-06-17 21:00 UTC
    price = pd.Series(50.0, index=hours)
    price.iloc[0:2] = [400.0, 400.0]                 # 22:00-24:00 UTC on the 16th
    price.iloc[12:14] = [200.0, 200.0]               # 10:00-12:00 UTC on the 17th
    c = _Contract(104, per_day=1)
    held = dr_blocks([c], hours, price, 0.8, used_per_day={("ven-load-104", pd.Timestamp("2026-06-16").date()): 1})
    assert sorted(pd.DatetimeIndex(held.hour).strftime("%d %H")) == ["17 10", "17 11"]
    free = dr_blocks([c], hours, price, 0.8)
    assert sorted(pd.DatetimeIndex(free.hour).strftime("%d %H")) == ["16 22", "16 23", "17 10", "17 11"]
    assert free.block.nunique() == 2


def test_demand_response_blocks_keep_each_utc_month_within_the_contracts_monthly_limit():
    """The Berlin winter delivery day of 1 December runs 23:00 UTC on 30 November to 23:00 UTC on 1
    December, so its first hour starts in November for the customer's VEN. A contract whose November is
    used up offers no block at 23:00 UTC on the 30th, however dear; with a November interruption left
    it does, and December's room is its own."""
    hours = day_hours(pd.Timestamp("2026-12-01"))  # 2026-11-30 23:00 .. 2026-12-01 22:00 UTC
    price = pd.Series(50.0, index=hours)
    price.iloc[0:2] = [400.0, 400.0]                 # 23:00 UTC on the 30th, 00:00 UTC on the 1st
    price.iloc[12:14] = [200.0, 200.0]               # 11:00-13:00 UTC on the 1st
    c = _Contract(104, per_day=2, per_month=8)
    ven = "ven-load-104"
    full = dr_blocks([c], hours, price, 0.8, used_per_month={(ven, pd.Period("2026-11", "M")): 8})
    starts = full.groupby("block").hour.min()
    assert len(starts) >= 1 and (pd.DatetimeIndex(starts).month == 12).all()
    assert "30 23" not in set(pd.DatetimeIndex(full.hour).strftime("%d %H"))
    room = dr_blocks([c], hours, price, 0.8, used_per_month={(ven, pd.Period("2026-11", "M")): 7})
    assert pd.DatetimeIndex(room.groupby("block").hour.min()).strftime("%m-%d %H").min() == "11-30 23"
    dec_full = dr_blocks([c], hours, price, 0.8, used_per_month={(ven, pd.Period("2026-12", "M")): 8})
    assert set(pd.DatetimeIndex(dec_full.groupby("block").hour.min()).strftime("%m-%d %H")) == {"11-30 23"}


def test_a_block_is_awarded_whole_on_its_mean_price_or_not_at_all():
    """A block at 300 over hours priced 400 and 250 (mean 325) sells both hours, the cheap one too; over
    310 and 250 (mean 280) it sells neither; an hour without a price rejects it. Its MW is demand
    response: in ``dr_position``, never in the fleet's position."""
    hours = day_hours(pd.Timestamp("2026-06-17"))
    blk = pd.DataFrame({"hour": hours[17:19], "cluster": "ven-load-104", "side": "sell", "mw": 0.08, "price": 300.0,
                        "block": "b1"})
    fleet = pd.DataFrame({"hour": [hours[17]], "cluster": ["A"], "side": ["sell"], "mw": [1.0], "price": [40.0],
                          "block": [None]})
    bids = pd.concat([fleet, blk], ignore_index=True)
    prices = pd.Series(0.0, index=hours)
    prices[hours[17]], prices[hours[18]] = 400.0, 250.0
    aw = awards(bids, prices)
    assert aw.awarded_mw.tolist() == [1.0, 0.08, 0.08]
    assert position(aw, hours)[hours[17]] == 1.0 and position(aw, hours)[hours[18]] == 0.0
    assert dr_position(aw, hours)[hours[17:19]].tolist() == [0.08, 0.08] and dr_position(aw, hours).sum() == 0.16
    prices[hours[17]] = 310.0
    assert awards(bids, prices).awarded_mw.tolist() == [1.0, 0.0, 0.0]
    assert awards(bids, prices.drop(hours[18])).awarded_mw.tolist() == [1.0, 0.0, 0.0]
    # one bad hour sends the whole block back
    bad = bids.copy()
    bad.loc[2, "mw"] = -1.0
    ok, rejected = validate(bad, hours)
    assert list(ok.cluster) == ["A"] and set(rejected.reason) == {
        "quantity not a positive number", "another hour of its block was rejected"}


def test_sold_demand_response_is_settled_with_the_position_on_what_its_calls_delivered():
    """Hour 0: the fleet holds 1 MW and the DR block 0.08 MW, measured delivering 0.05: short by 0.03 at
    price + spread. Hour 1: the call is not measured yet, its expected 0.08 stands in (flagged)."""
    hours = pd.date_range("2026-06-17 15:00", periods=2, freq="h")
    day = pd.DataFrame({"position_mw": [1.0, 1.0], "clearing_price": [100.0, 100.0], "metered_mw": [1.0, 1.0],
                        "planned_mw": [1.0, 1.0], "dr_mw": [0.08, 0.08], "dr_delivered_mw": [0.05, 0.0],
                        "dr_unmeasured_mw": [0.0, 0.08]}, index=hours)
    lines, flags = settle_day(day)
    assert lines.position_mwh.tolist() == pytest.approx([1.08, 1.08])
    assert lines.actual_mwh.tolist() == pytest.approx([1.05, 1.08])
    assert lines.imbalance_cents.tolist() == [-360, 0]  # -0.03 MWh x (100 + 20)
    assert lines.energy_cents.tolist() == [10800, 10800]
    assert flags == [f"{hours[1]}: a sold DR call not measured yet, its expected MW stands in"]


def test_what_sold_dr_calls_delivered_per_hour_by_their_status():
    """A measured call counts what it delivered over the hours it covers (a half hour: half); one still
    scheduled or active its expected MW, to be measured; one refused, or ended without a measurement,
    nothing (its shortfall is the portfolio's)."""
    from gridpipeline.market.store import sold_dr_by_hour

    hours = pd.date_range("2026-06-17 15:00", periods=3, freq="h")
    ev = pd.DataFrame({"start": pd.to_datetime(["2026-06-17 15:00", "2026-06-17 16:30", "2026-06-17 17:00",
                                                "2026-06-17 15:00"]),
                       "end": pd.to_datetime(["2026-06-17 16:00", "2026-06-17 17:00", "2026-06-17 18:00",
                                              "2026-06-17 16:00"]),
                       "status": ["measured", "active", "refused", "ended, not measurable"],
                       "expected_mw": [0.08, 0.12, 0.1, 0.05], "delivered_mw": [0.06, np.nan, np.nan, np.nan]})
    got = sold_dr_by_hour(ev, hours)
    assert got.dr_delivered_mw.tolist() == pytest.approx([0.06, 0.0, 0.0])
    assert got.dr_unmeasured_mw.tolist() == pytest.approx([0.0, 0.06, 0.0])
