"""The day-ahead price forecast beyond the published prices (forecast/prices.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gridpipeline.forecast.prices import MIN_TRAIN_DAYS, PriceForecaster, daily_matrix, to_hours
from gridpipeline.sources.prices import price_curve


def _synthetic(days: int, seed: int = 0) -> pd.Series:
    """A daily shape (two peaks), a weekend dip, and a level that wanders day to day (AR(1)): the next
    day looks like the last one, not like the week's median."""
    rng = np.random.default_rng(seed)
    hours = pd.date_range("2018-01-01", periods=24 * days, freq="h", tz="Europe/Berlin")
    h = np.asarray(hours.hour)
    shape = 10 * np.exp(-((h - 8) ** 2) / 6) + 15 * np.exp(-((h - 19) ** 2) / 6)
    level = np.zeros(days)
    for d in range(1, days):
        level[d] = 0.85 * level[d - 1] + rng.normal(0, 8)
    day = np.arange(len(hours)) // 24
    weekend = np.asarray(hours.dayofweek >= 5)
    p = 40 + level[day] + shape - 12 * weekend + rng.normal(0, 1.5, len(hours))
    return pd.Series(p, index=hours.tz_convert("UTC"), name="price")


def test_daily_matrix_keeps_23_and_25_hour_days_on_24_local_hours():
    s = pd.Series(1.0, index=pd.date_range("2018-03-24", "2018-03-27", freq="h", tz="Europe/Berlin",
                                           inclusive="left").tz_convert("UTC"))
    m = daily_matrix(s)
    assert m.shape == (3, 24) and not m.isna().any().any()
    back = to_hours(m, s.index)
    assert back.notna().all()


def test_the_model_beats_last_weeks_median_on_a_wandering_level():
    s = _synthetic(120)
    fc = PriceForecaster()
    err_model, err_median = [], []
    for d in range(90, 119, 3):
        start = s.index[0] + pd.Timedelta(days=d)
        known = s[s.index < start]
        hours = pd.date_range(start, periods=24, freq="h")
        curve = price_curve(known, hours[0], hours[-1] + pd.Timedelta("1h"), pd.Timedelta("1h"), fc)
        plain = price_curve(known, hours[0], hours[-1] + pd.Timedelta("1h"), pd.Timedelta("1h"))
        assert (curve.source == "forecast").all()
        truth = s.reindex(hours).to_numpy()
        err_model.append(np.abs(curve.price.to_numpy() - truth).mean())
        err_median.append(np.abs(plain.price.to_numpy() - truth).mean())
    # the level's day-to-day step is N(0, 8) around an AR(1) of 0.85: the last day carries most of it
    assert np.mean(err_model) < 0.75 * np.mean(err_median)
    assert np.mean(err_model) < 8.0


def test_with_too_little_history_last_weeks_median_stands_in():
    s = _synthetic(MIN_TRAIN_DAYS)  # fewer training days than needed once the lags are taken
    start = s.index[-1] + pd.Timedelta("1h")
    with_model = price_curve(s, start, start + pd.Timedelta(days=1), pd.Timedelta("1h"), PriceForecaster())
    without = price_curve(s, start, start + pd.Timedelta(days=1), pd.Timedelta("1h"))
    assert with_model.price.to_numpy() == pytest.approx(without.price.to_numpy())
    assert (with_model.source == "forecast").all()


def test_two_days_ahead_is_forecast_recursively_and_published_hours_are_kept():
    s = _synthetic(100)
    known = s[s.index < s.index[0] + pd.Timedelta(days=90)]
    start = known.index[-1] - pd.Timedelta(hours=11)   # the last 12 published hours, then 48 forecast
    curve = price_curve(known, start, start + pd.Timedelta(hours=60), pd.Timedelta("1h"), PriceForecaster())
    assert (curve.source.iloc[:12] == "known").all() and (curve.source.iloc[12:] == "forecast").all()
    assert curve.price.iloc[:12].to_numpy() == pytest.approx(known.iloc[-12:].to_numpy())
    assert curve.price.notna().all()
    truth = s.reindex(curve.index[12:]).to_numpy()
    assert np.abs(curve.price.iloc[12:].to_numpy() - truth).mean() < 12.0
