"""The global multi-series model: learns a weather-driven daily shape, never looks past the issue
time, keeps quantiles ordered, and falls back along its chain when inputs go missing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gridpipeline.forecast.global_model import GlobalConfig, fit_global, forecast_global


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    idx = pd.date_range("2026-01-01", periods=24 * 120, freq="h", tz="UTC")
    hour = idx.hour.to_numpy()
    temp = 10 + 8 * np.sin(2 * np.pi * (hour - 9) / 24) + rng.normal(0, 2, len(idx)).cumsum() * 0.05
    base = 1 + 0.4 * np.sin(2 * np.pi * (hour - 12) / 24) + 0.03 * np.maximum(15 - temp, 0)
    y = pd.DataFrame({f"s{k}": (k + 1) * base * (1 + rng.normal(0, 0.02, len(idx))) for k in range(6)}, index=idx)
    w = pd.DataFrame({"temperature": temp}, index=idx)
    cfg = GlobalConfig(weather_cols=("temperature",), train_days=60, rounds=80, max_rows=60_000, balance_point=15.0)
    model = fit_global(y, w, cfg, end=idx[24 * 100])
    return y, w, model, idx


def test_forecast_is_accurate_and_ordered(data):
    y, w, model, idx = data
    issue = idx[24 * 105]
    fc = forecast_global(model, y, w, issue)
    assert len(fc) == 6 * 24 and set(fc.model) == {"global"}
    assert (fc.p10 <= fc.p50).all() and (fc.p50 <= fc.p90).all()
    act = y.stack().rename("actual")
    act.index.names = ["valid_time", "series"]
    m = fc.join(act, on=["valid_time", "series"])
    mape = np.mean(np.abs(m.actual - m.p50) / m.actual)
    assert mape < 0.05


def test_no_look_ahead(data):
    y, w, model, idx = data
    issue = idx[24 * 105]
    poisoned = y.copy()
    poisoned[poisoned.index >= issue] = 1e6
    a = forecast_global(model, y, w, issue)
    b = forecast_global(model, poisoned, w, issue)
    assert np.allclose(a.p50, b.p50)


def test_fallback_chain(data):
    y, w, model, idx = data
    issue = idx[24 * 105]
    no_weather = forecast_global(model, y, None, issue)
    assert set(no_weather.model) == {"global_noweather"}
    # a series without a week of history: seasonal naive from yesterday, or the profile
    short = y.copy()
    short.loc[short.index < issue - pd.Timedelta(hours=30), "s0"] = np.nan
    short.loc[:, "s1"] = np.nan
    prof = y.shift(24 * 7)
    fc = forecast_global(model, short, w, issue, profile=prof)
    by = fc.groupby("series").model.agg(lambda s: set(s))
    assert by["s1"] == {"profile"}
    assert by["s0"] <= {"seasonal_naive", "global"}
    assert by["s2"] == {"global"}
    assert fc[["p10", "p50", "p90"]].notna().all().all()


def test_band_is_calibrated(data):
    y, w, model, idx = data
    frames = [forecast_global(model, y, w, idx[24 * d]) for d in range(101, 115)]
    fc = pd.concat(frames, ignore_index=True)
    act = y.stack().rename("actual")
    act.index.names = ["valid_time", "series"]
    m = fc.join(act, on=["valid_time", "series"]).dropna(subset=["actual"])
    cover = np.mean((m.actual >= m.p10) & (m.actual <= m.p90))
    assert 0.65 <= cover <= 0.95, cover
    assert (model.calibration["weather"] != 0).any()


def test_a_long_span_samples_issues_before_building_rows(data, monkeypatch):
    """With a row budget far below what the span offers, issues are sampled before the design is
    built (memory bounded), every calibration issue is kept, and the model is still accurate."""
    import gridpipeline.forecast.global_model as G

    y, w, _, idx = data
    built = []
    real = G._design

    def counting(Y, W, cal, issues, cfg, with_weather):
        built.append(len(issues) * cfg.h_steps * Y.shape[1])
        return real(Y, W, cal, issues, cfg, with_weather)

    monkeypatch.setattr(G, "_design", counting)
    cfg = GlobalConfig(weather_cols=("temperature",), train_days=60, rounds=80, max_rows=3_000, balance_point=15.0,
                       issue_stride=pd.Timedelta(hours=1))
    model = fit_global(y, w, cfg, end=idx[24 * 100])
    assert max(built) <= 2 * 3_000 + 7 * 24 * 24 * 6  # the budget plus the calibration issues
    assert 0 < model.train_rows <= 3_000
    fc = forecast_global(model, y, w, idx[24 * 105])
    act = y.stack().rename("actual")
    act.index.names = ["valid_time", "series"]
    m = fc.join(act, on=["valid_time", "series"])
    assert np.mean(np.abs(m.actual - m.p50) / m.actual) < 0.08
