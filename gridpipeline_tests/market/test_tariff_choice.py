"""choose_tariff: the response-aware tariff LP on cases solved by hand."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from gridpipeline.market.response import predicted_response, response_weight
from gridpipeline.market.tariff import TariffPolicy, choose_tariff, error_scenarios

HOURLY = TariffPolicy(cap=500.0, floor=-100.0, max_change_per_hour=100.0, step_minutes=60.0, peak_value_eur_mw=0.0)


def test_two_steps_by_hand():
    # prices 10 and 30, mean 20; the customers move 1 MW per unit of relative price (weight -1). With
    # tariff 20 -/+ d the energy moved costs 10*(d/20) - 30*(d/20) = -d: d as large as the band allows
    # (50 % of 20 = 10), so the tariff is 10 and 30 and 0.5 MW moves from the dear step to the cheap one
    c = choose_tariff(np.array([[10.0], [30.0]]), np.array([-1.0]), np.array([5.0, 5.0]), HOURLY)
    assert c.summary["status"] == "optimal"
    np.testing.assert_allclose(c.tariff[:, 0], [10.0, 30.0], atol=1e-6)
    np.testing.assert_allclose(c.response[:, 0], [0.5, -0.5], atol=1e-6)
    assert c.summary["energy_cost_moved_eur"] == pytest.approx(-10.0, abs=1e-6)


def test_peak_value_outweighs_the_spread():
    # the same case with the peak valued at 40 EUR/MW: moving d costs -d + 40 * (5 + d/20) - 200 = +d,
    # so nothing moves; at 10 EUR/MW it still pays (-d + d/2)
    c = choose_tariff(np.array([[10.0], [30.0]]), np.array([-1.0]), np.array([5.0, 5.0]), replace(HOURLY, peak_value_eur_mw=40.0))
    np.testing.assert_allclose(c.tariff[:, 0], [20.0, 20.0], atol=1e-6)
    np.testing.assert_allclose(c.response, 0.0, atol=1e-6)
    c = choose_tariff(np.array([[10.0], [30.0]]), np.array([-1.0]), np.array([5.0, 5.0]), replace(HOURLY, peak_value_eur_mw=10.0))
    np.testing.assert_allclose(c.tariff[:, 0], [10.0, 30.0], atol=1e-6)


def test_the_ramp_binds_and_the_peak_is_flattened():
    # a flat price: only the peak counts. Import 4 then 6 MW; the tariff rises where the import is high,
    # but at most 5 EUR/MWh from one hour to the next: 17.5 and 22.5, 0.125 MW moved
    slow = TariffPolicy(cap=500.0, floor=-100.0, max_change_per_hour=5.0, step_minutes=60.0, peak_value_eur_mw=100.0)
    c = choose_tariff(np.array([[20.0], [20.0]]), np.array([-1.0]), np.array([4.0, 6.0]), slow)
    np.testing.assert_allclose(c.tariff[:, 0], [17.5, 22.5], atol=1e-6)
    assert c.summary["peak_after_mw"] == pytest.approx(5.875, abs=1e-6)


def test_response_matches_the_prediction_and_an_import_limit_is_soft():
    rng = np.random.default_rng(3)
    T, Z = 24, 2
    price = 40 + 20 * np.sin(np.arange(T) / 24 * 2 * np.pi)[:, None] + rng.normal(0, 2, (T, Z))
    import pandas as pd

    by = pd.DataFrame({"A": [2.0, 1.0], "B": [0.5, 3.0]}, index=["residential", "commercial"])
    terms = {"residential": {"share": 0.15, "elasticity": -0.2}, "commercial": {"share": 0.1, "elasticity": -0.1}}
    w = response_weight(by, ["A", "B"], terms)
    imp = 8 + 3 * np.cos(np.arange(T) / 24 * 2 * np.pi)
    c = choose_tariff(price, w, imp, replace(HOURLY, peak_value_eur_mw=50.0), import_limit=10.5)
    # what the LP counted on is what the published tariff is predicted to bring (same model, same mean)
    np.testing.assert_allclose(c.response, predicted_response(c.tariff, ["A", "B"], by, terms), atol=1e-6)
    np.testing.assert_allclose(c.tariff.mean(axis=0), price.mean(axis=0), atol=1e-6)
    assert c.summary["peak_after_mw"] < c.summary["peak_before_mw"]
    assert c.summary["over_limit_mwh"] > 0  # the response cannot take 11 MW under 10.5: slack, not a failure


def test_a_zone_without_a_positive_mean_keeps_its_clipped_prices_and_the_other_is_still_chosen():
    c = choose_tariff(np.array([[-20.0, 10.0], [-10.0, 30.0]]), np.array([-1.0, -1.0]), np.array([5.0, 5.0]), HOURLY)
    assert c.summary["status"] == "optimal" and c.summary["zones_fixed"] == 1
    np.testing.assert_allclose(c.tariff[:, 0], [-20.0, -10.0], atol=1e-6)
    np.testing.assert_allclose(c.response[:, 0], 0.0, atol=1e-9)
    np.testing.assert_allclose(c.tariff[:, 1], [10.0, 30.0], atol=1e-6)  # as the two-step case by hand


def test_a_tariff_in_force_far_from_the_new_mean_is_left_as_far_as_the_ramp_allows_then_priced():
    """In force 60; the new horizon's two steps must average 20 and differ by at most 5 EUR/MWh: the
    first step gets as close to 60 as that allows, 22.5 (then 17.5), and its move of 37.5 is 32.5 beyond
    the ramp, priced, instead of the whole choice failing."""
    slow = TariffPolicy(cap=500.0, floor=-100.0, max_change_per_hour=5.0, step_minutes=60.0, peak_value_eur_mw=0.0)
    c = choose_tariff(np.array([[10.0], [30.0]]), np.array([-1.0]), np.array([5.0, 5.0]), slow, last=np.array([60.0]))
    assert c.summary["status"] == "optimal"
    assert c.tariff[0, 0] == pytest.approx(22.5) and c.tariff[1, 0] == pytest.approx(17.5)
    assert c.summary["first_step_beyond_ramp_eur_mwh"] == pytest.approx(32.5)


def test_with_a_responsive_load_that_varies_the_response_keeps_the_energy():
    """Prices 10 and 30; the responsive load is 1 MW in the cheap hour and 3 in the dear one (weights -1
    and -3). The tariff keeps its load-weighted mean at the prices' ((10 + 3 x 30) / 4 = 25), as the
    customers judge it, so what the dear hour sheds the cheap one takes: the predicted response sums to
    zero. By hand: tariff 25 - 3d and 25 + d (weighted mean 25), moved 3d/25 MW each way, energy cost
    (10 - 30) x 3d / 25; the band (50 % of 25) caps 25 - 3d at 12.5: d = 25/6, tariff 12.5 and 29.17,
    0.5 MW moved."""
    c = choose_tariff(np.array([[10.0], [30.0]]), np.array([[-1.0], [-3.0]]), np.array([5.0, 5.0]), HOURLY)
    assert c.summary["status"] == "optimal" and c.summary["mean"] == [25.0]
    np.testing.assert_allclose(c.tariff[:, 0], [12.5, 25 + 25 / 6], atol=1e-6)
    np.testing.assert_allclose(c.response[:, 0], [0.5, -0.5], atol=1e-6)
    assert c.response.sum() == pytest.approx(0.0, abs=1e-9)


def test_an_uncertain_valley_is_not_filled_up_to_the_forecast_peak():
    """A flat price (no energy to gain), the peak at 100 EUR/MW, the import forecast 5, 3 and 5 MW, and
    the customers moving 1 MW per unit of relative price. Shifting x MW out of each outer hour into the
    middle gives a peak of max(5 - x, 3 + 2x); the band (50 % of 20) stops the middle hour at 10 EUR/MWh,
    a 0.5 MW addition: x = 0.25, peak 4.75, the valley filled to 3.5. With the middle hour's import
    uncertain by 1.5 MW (its P90 at 4.5), the peak counts 4.5 + 2x there: x = 1/6, the valley only
    filled to 3.33 and the tariff 23.33, 13.33, 23.33."""
    pol = replace(HOURLY, peak_value_eur_mw=100.0)
    price, imp = np.full((3, 1), 20.0), np.array([5.0, 3.0, 5.0])
    plain = choose_tariff(price, np.array([-1.0]), imp, pol)
    np.testing.assert_allclose(plain.response[:, 0], [-0.25, 0.5, -0.25], atol=1e-6)
    assert plain.summary["peak_after_mw"] == pytest.approx(4.75, abs=1e-6)
    safe = choose_tariff(price, np.array([-1.0]), imp, pol, import_margin=np.array([0.0, 1.5, 0.0]))
    np.testing.assert_allclose(safe.response[:, 0], [-1 / 6, 1 / 3, -1 / 6], atol=1e-6)
    np.testing.assert_allclose(safe.tariff[:, 0], [20 + 10 / 3, 20 - 20 / 3, 20 + 10 / 3], atol=1e-6)


def test_the_peak_is_lowered_where_it_is_likely_to_be():
    """A flat price, the import forecast 5, 5 and 3 MW, and three equally likely error days: two in which
    the first hour comes out 1 MW higher, one in which the second does. The forecast alone would shave
    both peak hours by 0.25 MW into the valley; the expected peak over the scenarios is
    (2 (6 + r0) + (6 + r1)) / 3 with r0 + r1 = -r2 >= -0.5 (the band): lowest at r0 = -0.5, r1 = 0, the
    valley taking 0.5 MW. The expected peak falls from 6 to 17/3 MW; the tariff is 75, 50, 25 EUR/MWh."""
    pol = replace(HOURLY, peak_value_eur_mw=100.0)
    price, imp = np.full((3, 1), 50.0), np.array([5.0, 5.0, 3.0])
    plain = choose_tariff(price, np.array([-1.0]), imp, pol)
    np.testing.assert_allclose(plain.response[:, 0], [-0.25, -0.25, 0.5], atol=1e-6)
    dev = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    c = choose_tariff(price, np.array([-1.0]), imp, pol, import_scenarios=dev)
    assert c.summary["status"] == "optimal" and c.summary["scenarios"] == 3
    np.testing.assert_allclose(c.response[:, 0], [-0.5, 0.0, 0.5], atol=1e-6)
    np.testing.assert_allclose(c.tariff[:, 0], [75.0, 50.0, 25.0], atol=1e-6)
    assert c.summary["expected_peak_before_mw"] == pytest.approx(6.0)
    assert c.summary["expected_peak_after_mw"] == pytest.approx(17 / 3, abs=1e-4)
    # the forecast-only response does worse over the same scenarios: (2 x 5.75 + 5.75) / 3
    assert (imp + plain.response[:, 0] + dev).max(axis=1).mean() == pytest.approx(5.75, abs=1e-6)


def test_error_scenarios_are_past_days_laid_by_local_time_of_day():
    """Hourly errors over ten days in January (Berlin = UTC + 1), each day's error its day number plus
    the local hour / 100: the scenarios for the eleventh day are the last days, hour by hour, in local
    time; the day still running is left out; too little history gives None."""
    t = pd.date_range("2018-01-01 00:00", "2018-01-10 23:00", freq="h", tz="Europe/Berlin").tz_convert("UTC")
    loc = t.tz_convert("Europe/Berlin")
    err = pd.Series(loc.day + loc.hour / 100.0, index=t)
    steps = pd.date_range("2018-01-11 00:00", periods=24, freq="h", tz="Europe/Berlin").tz_convert("UTC")
    s = error_scenarios(err, steps, days=4, min_days=3)
    assert s.shape == (4, 24)
    np.testing.assert_allclose(s[:, 5], [7.05, 8.05, 9.05, 10.05])
    running = error_scenarios(err, steps - pd.Timedelta(days=1), days=28, min_days=3)  # the 10th not over
    assert running.shape == (9, 24) and running[-1, 0] == pytest.approx(9.0)
    assert error_scenarios(err, steps, min_days=11) is None
    assert error_scenarios(pd.Series(dtype=float), steps) is None


def test_error_scenarios_over_a_clock_change():
    """25 March 2018 has no 02:00 in Berlin: its 23 hours still count (the hour filled from its
    neighbours), and a 24-hour day after it gets all 24 values."""
    t = pd.date_range("2018-03-20 00:00", "2018-03-26 23:00", freq="h", tz="Europe/Berlin").tz_convert("UTC")
    loc = t.tz_convert("Europe/Berlin")
    err = pd.Series(loc.hour.astype(float), index=t)
    steps = pd.date_range("2018-03-27 00:00", periods=24, freq="h", tz="Europe/Berlin").tz_convert("UTC")
    s = error_scenarios(err, steps, min_days=1)
    assert s.shape == (7, 24)
    np.testing.assert_allclose(s[5], np.arange(24.0))  # the 25th: 02:00 filled between 1 and 3
    dst = pd.date_range("2018-03-25 00:00", periods=23, freq="h", tz="Europe/Berlin").tz_convert("UTC")
    assert error_scenarios(err[err.index < dst[0]], dst, min_days=1).shape == (5, 23)
