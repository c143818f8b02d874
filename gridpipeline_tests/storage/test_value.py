"""The value of stored energy at a plan's end, learnt with hindsight from the published prices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gridpipeline.storage.value import hindsight_values, terminal_value


def _days(n: int) -> pd.Series:
    """``n`` days of a cheap night (20 EUR/MWh, 00-06 UTC), a dear evening (150, 17-20) and 60 between."""
    t = pd.date_range("2018-03-01", periods=24 * n, freq="h", tz="UTC")
    h = t.hour
    return pd.Series(np.where(h < 6, 20.0, np.where((h >= 17) & (h < 20), 150.0, 60.0)), index=t)


def test_a_two_hour_hand_case():
    """Prices 10 then 100, a battery half full of 1 MWh, lossless, no wear, power not binding: it fills
    in hour 0 and empties in hour 1. A MWh more at the start of hour 0 spares buying one at 10 (the
    battery fills in it); one more at the start of hour 1 is sold in it at 100 (it empties with power
    to spare)."""
    v = hindsight_values(pd.Series([10.0, 100.0]), 1.0, 10.0, 1.0, 1.0, 0.0)
    assert v.tolist() == pytest.approx([10.0, 100.0], abs=1e-6)


def test_energy_left_in_the_evening_is_worth_what_the_evening_pays_and_at_night_what_the_night_costs():
    """Over a fortnight of the same day, a battery of 2 MWh and 1 MW (95 % each way, 5 EUR/MWh of wear):
    a plan ending at 17:00 or 18:00 leaves energy the evening would have sold, worth 150 x 0.95 - 5 = 137.5
    per MWh stored; one ending at 03:00 leaves energy the night would have bought, 20 / 0.95 + 5 = 26.05.
    Under two days of prices: no value (the planner's median stands in)."""
    p = _days(15)
    kw = {"e_max": 2.0, "p_max": 1.0, "eta_c": 0.95, "eta_d": 0.95, "degradation": 5.0}
    assert terminal_value(p, pd.Timestamp("2018-03-16 18:00", tz="UTC"), **kw) == pytest.approx(137.5, abs=0.5)
    # ending right when the evening starts: still the evening's value, not the afternoon's
    assert terminal_value(p, pd.Timestamp("2018-03-16 17:00", tz="UTC"), **kw) == pytest.approx(137.5, abs=0.5)
    assert terminal_value(p, pd.Timestamp("2018-03-16 03:00", tz="UTC"), **kw) == pytest.approx(26.05, abs=0.5)
    assert terminal_value(p.iloc[:30], pd.Timestamp("2018-03-02 16:00", tz="UTC"), **kw) is None


def test_the_fleet_s_values_are_the_one_battery_s_and_re_solved_once_a_day():
    """A fleet of two batteries is one battery of their capacity and power, capacity-weighted efficiencies
    and wear; the hindsight LP is solved once per published day, whatever the hours asked."""
    from gridpipeline.storage.value import TerminalValues

    fleet = pd.DataFrame({"capacity_mwh": [1.5, 0.5], "p_max_mw": [0.6, 0.4], "eta_c": [0.95, 0.95],
                          "eta_d": [0.95, 0.95], "degradation": [4.0, 8.0]})
    tv, p = TerminalValues(fleet), _days(15)
    for h in ("17:00", "18:00", "03:00", "12:00"):
        end = pd.Timestamp(f"2018-03-16 {h}", tz="UTC")
        assert tv.at(p, end) == pytest.approx(terminal_value(p, end, 2.0, 1.0, 0.95, 0.95, 5.0), abs=1e-6)
    key = tv._key
    tv.at(p.iloc[:-1], pd.Timestamp("2018-03-16 18:00", tz="UTC"))
    assert tv._key != key  # one hour less published: re-solved


def _cycles(days: int, mw: float, buy_hour: int = 0, sell_hour: int = 12) -> tuple[pd.Series, pd.Series]:
    """``days`` of prices at 10 EUR/MWh 00-12 UTC and 100 after, and a record that buys ``mw`` for one
    hour at ``buy_hour`` and sells it at ``sell_hour`` each day (+ discharge)."""
    t = pd.date_range("2018-03-01", periods=24 * days, freq="h", tz="UTC")
    prices = pd.Series(np.where(t.hour < 12, 10.0, 100.0), index=t)
    power = pd.Series(np.where(t.hour == buy_hour, -mw, np.where(t.hour == sell_hour, mw, 0.0)), index=t)
    return prices, power


def test_the_realised_share_by_hand():
    """Three days of 10 EUR/MWh mornings and 100 afternoons, one lossless battery of 1 MWh and 1 MW with
    5 EUR/MWh of wear. Hindsight buys 1 MWh in a morning and sells it in the afternoon, each day:
    3 x (100 - 10 - 2 x 5) = 240 EUR. A record that did the same realised all of it; half the power,
    3 x (50 - 5 - 2 x 2.5) = 120, half of it; nothing, nothing; buying dear and selling cheap, less than
    nothing (clipped at 0). Under two days of record: no share."""
    from gridpipeline.storage.value import realised_share

    kw = {"e_max": 1.0, "p_max": 1.0, "eta_c": 1.0, "eta_d": 1.0, "degradation": 5.0}
    for mw, share in ((1.0, 1.0), (0.5, 0.5), (0.0, 0.0)):
        prices, power = _cycles(3, mw)
        assert realised_share(prices, power, **kw) == pytest.approx(share, abs=1e-6)
    prices, power = _cycles(3, 1.0, buy_hour=12, sell_hour=13)  # bought and sold at 100: the wear lost
    assert realised_share(prices, power, **kw) == 0.0
    prices, power = _cycles(1, 1.0)
    assert realised_share(prices, power, **kw) is None


def test_the_learnt_value_is_the_hindsight_value_times_the_fleet_s_realised_share():
    """``TerminalValues.learnt``: the hindsight value at the plan's end times the share the fleet's own
    record realised; without a record (or under two days of it), the hindsight value as it is."""
    from gridpipeline.storage.value import TerminalValues

    fleet = pd.DataFrame({"capacity_mwh": [2.0], "p_max_mw": [1.0], "eta_c": [0.95], "eta_d": [0.95],
                          "degradation": [5.0]})
    tv, p = TerminalValues(fleet), _days(15)
    end = pd.Timestamp("2018-03-16 18:00", tz="UTC")
    h = p.index.hour
    record = pd.Series(np.where(h < 2, -0.5, np.where(h == 18, 0.9, 0.0)), index=p.index)  # half the night, most of one evening hour
    value, share = tv.learnt(p, end, record)
    assert 0.0 < share < 1.0
    assert value == pytest.approx(tv.at(p, end) * share, abs=1e-9)
    assert tv.learnt(p, end, None) == (tv.at(p, end), None)
    assert tv.learnt(p, end, record.iloc[:30]) == (tv.at(p, end), None)  # 30 hours of record: too short
