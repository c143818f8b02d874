"""Price signals, the merit order and settlement: bounds that bite are reported, the clearing agrees
with a brute-force reference, and a settlement reconciles to the cent."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridpipeline.market.clearing import award, merit_order
from gridpipeline.market.settlement import cents, imbalance_prices, reconcile, settle
from gridpipeline.market.tariff import TariffPolicy, publish_tariff, zone_prices


def test_zone_prices_weigh_buses_by_load():
    dlmp = np.array([[50.0, 80.0, 80.0, 40.0]])
    zones, p = zone_prices(dlmp, np.array(["a", "a", "b", "b"]), weight=np.array([[1.0, 3.0, 0.0, 0.0]]))
    assert zones.tolist() == ["a", "b"]
    np.testing.assert_allclose(p, [[72.5, 60.0]])  # b has no load: the plain mean


def test_the_tariff_keeps_cap_floor_and_ramp_and_says_where():
    pol = TariffPolicy(cap=300.0, floor=-50.0, max_change_per_hour=120.0, step_minutes=5.0)  # 10 per step
    prices = np.array([[40.0], [3000.0], [3000.0], [-400.0], [np.nan]])
    tar, notes = publish_tariff(prices, pol, last=np.array([35.0]))
    np.testing.assert_allclose(tar[:, 0], [40.0, 50.0, 60.0, 50.0, 50.0])
    rules = [(n["step"], n["rule"]) for n in notes]
    assert (1, "cap") in rules and (1, "largest change per hour") in rules and (3, "floor") in rules
    assert (4, "no price: held") in rules
    assert not [n for n in notes if n["step"] == 0]  # 40 is within 10 of 35: nothing bit
    with pytest.raises(ValueError, match="floor"):
        TariffPolicy(cap=10.0, floor=20.0)


def _reference(offers: pd.DataFrame, bids: pd.DataFrame) -> float:
    """The most that can trade: max over a fine price grid of min(supply at or below, demand at or above)."""
    grid = np.unique(np.concatenate([offers.price, bids.price, offers.price + 1e-3, bids.price - 1e-3]))
    return max(min(offers.mw[offers.price <= p].sum(), bids.mw[bids.price >= p].sum()) for p in grid)


curve = st.lists(st.tuples(st.integers(-50, 200), st.integers(1, 50)), min_size=1, max_size=8).map(
    lambda r: pd.DataFrame(r, columns=["price", "mw"]).astype(float))


@settings(max_examples=200, deadline=None)
@given(curve, curve)
def test_the_merit_order_clears_as_the_sorted_reference_does(offers, bids):
    price, traded = merit_order(offers, bids)
    assert traded == pytest.approx(_reference(offers, bids))
    if price is not None:  # at the price, the accepted steps are exactly those in the money
        assert offers.mw[offers.price < price].sum() <= traded + 1e-9 <= offers.mw[offers.price <= price].sum() + 2e-9
        assert bids.mw[bids.price > price].sum() <= traded + 1e-9 <= bids.mw[bids.price >= price].sum() + 2e-9


def test_a_hand_cleared_auction_and_the_price_taker_award():
    offers = pd.DataFrame({"price": [10.0, 30.0], "mw": [5.0, 5.0]})
    bids = pd.DataFrame({"price": [20.0, 5.0], "mw": [8.0, 10.0]})
    assert merit_order(offers, bids) == (20.0, 5.0)  # the bid at 20 is marginal, partly filled
    assert merit_order(pd.DataFrame({"price": [30.0], "mw": [5.0]}), bids) == (None, 0.0)
    # price-taker: the market clears at the historical price whatever the portfolio offers
    mine_sell = pd.DataFrame({"price": [40.0, 60.0, 90.0], "mw": [1.0, 1.0, 1.0]})
    mine_buy = pd.DataFrame({"price": [20.0, 45.0], "mw": [2.0, 2.0]})
    assert award(mine_sell, mine_buy, 55.0) == (1.0, 0.0)
    assert award(mine_sell, mine_buy, 10.0) == (0.0, 4.0)
    # the rest of the market is deep at that price: adding the portfolio leaves it there
    market_offers = pd.DataFrame({"price": [55.0], "mw": [1e6]})
    market_bids = pd.DataFrame({"price": [55.0], "mw": [1e6]})
    p0, _ = merit_order(market_offers, market_bids)
    p1, _ = merit_order(pd.concat([market_offers, mine_sell]), pd.concat([market_bids, mine_buy]))
    assert p0 == p1 == 55.0


def test_the_imbalance_rule_never_rewards_a_deviation():
    lo, hi = imbalance_prices(np.array([50.0, -20.0, 300.0]))
    np.testing.assert_allclose(lo, [40.0, -30.0, 240.0])
    np.testing.assert_allclose(hi, [60.0, -10.0, 360.0])
    s = settle([1.0, 1.0], [1.5, 0.5], [50.0, 50.0], dt_h=1.0)
    assert s.energy_cents.tolist() == [5000, 5000]
    assert s.imbalance_cents.tolist() == [2000, -3000]  # 0.5 MWh long at 40; 0.5 MWh short at 60


money = st.floats(-500, 3000, allow_nan=False, allow_infinity=False)
mw = st.floats(-20, 20, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(mw, mw, money), min_size=1, max_size=48))
def test_a_settlement_reconciles_to_the_cent(rows):
    pos, act, price = (np.array(c) for c in zip(*rows, strict=True))
    s = settle(pos, act, price, dt_h=5 / 60)
    total = int(s.total_cents.sum())
    assert reconcile(s, total) == 0 and reconcile(s, total + 1) == 1
    assert (s.total_cents == s.energy_cents + s.imbalance_cents).all()
    # each line is its amount rounded once: within half a cent of the exact value
    exact = s.position_mwh * s.price + s.imbalance_mwh * s.imbalance_price
    assert (np.abs(s.total_cents - exact * 100) <= 1.0 + 1e-6).all()
    # keeping to the position is never worse than deviating from it
    kept = settle(pos, pos, price, dt_h=5 / 60)
    exact_dev = s.imbalance_mwh * (s.imbalance_price - s.price)
    assert (exact_dev <= 1e-9).all()
    assert int(kept.imbalance_cents.sum()) == 0


def test_cents_round_half_away_from_zero_and_bad_input_is_refused():
    assert cents(0.005) == 1 and cents(-0.005) == -1 and cents(1.234) == 123
    with pytest.raises(ValueError, match="finite"):
        settle([1.0], [np.nan], [50.0], dt_h=1.0)
    with pytest.raises(ValueError, match="one value per step"):
        settle([1.0, 2.0], [1.0], [50.0], dt_h=1.0)


def test_the_local_market_buys_the_cheapest_relief_and_pays_as_bid():
    from gridpipeline.market.flexmarket import clear_local

    offers = pd.DataFrame({"offer_id": ["a", "b", "c", "d"], "bus": [5, 6, 7, 1], "mw": [1.0, 2.0, 2.0, 5.0],
                           "price": [100.0, 60.0, 90.0, 10.0]})
    sens = pd.Series({5: 1.0, 6: 0.5, 7: 1.0})  # bus 1 sits before the element: no relief
    acc, short = clear_local(2.5, offers, sens, hours=0.5)
    # per MW of relief: b 120, c 90, a 100 -> c whole (2.0), then a for the last 0.5
    assert acc.offer_id.tolist() == ["c", "a"] and short == pytest.approx(0.0)
    assert acc.mw.tolist() == pytest.approx([2.0, 0.5]) and acc.relief_mw.sum() == pytest.approx(2.5)
    assert acc.pay_eur.tolist() == pytest.approx([2.0 * 90 * 0.5, 0.5 * 100 * 0.5])  # each at its own price
    acc2, short2 = clear_local(10.0, offers, sens)
    assert short2 == pytest.approx(10.0 - 1.0 - 1.0 - 2.0)  # everything that helps is bought, the rest is short
    assert "d" not in acc2.offer_id.tolist()
