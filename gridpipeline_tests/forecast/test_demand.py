"""The forecaster: shape, quantiles, leakage, the fallback chain, DST and degenerate series."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gridpipeline.forecast.demand import ForecastConfig, fit_demand_model, forecast_demand
from gridpipeline.forecast.features import prepare_series
from gridpipeline_tests.forecast import synthetic

FAST = {
    "lgbm_rounds": 80,
    "fallback_rounds": 40,
    "lgbm_params": {"learning_rate": 0.15},
    "val_days": 14,
    "warmup_folds": 1,
    "min_train_days": 21,
    "max_train_days": None,
}


def _cfg(**kw) -> ForecastConfig:
    return ForecastConfig(**{"models": ("lgbm",), "weather_cols": ("t_good", "t_noise"), **FAST, **kw})


@pytest.fixture(scope="module")
def hourly():
    return prepare_series(synthetic(days=70), "time", "load", ["t_good", "t_noise"])


@pytest.fixture(scope="module")
def fitted(hourly):
    issue = pd.Timestamp("2021-03-08", tz="UTC")
    return issue, fit_demand_model(hourly, _cfg(), cutoff=issue)


def test_forecast_shape_quantiles_and_accuracy(hourly, fitted):
    issue, model = fitted
    assert model.stations[0] == "t_good"
    fc = forecast_demand(model, hourly, issue)
    assert list(fc.columns) == ["time", "issue_time", "lead_h", "p10", "p50", "p90", "model"]
    assert len(fc) == 24 and fc["time"].iloc[0] == issue and (fc["model"] == "lgbm").all()
    assert (fc["p10"] <= fc["p50"]).all() and (fc["p50"] <= fc["p90"]).all() and (fc["p90"] > fc["p10"]).any()
    actual = hourly["y"].reindex(pd.DatetimeIndex(fc["time"])).to_numpy()
    assert np.mean(np.abs(fc["p50"] - actual) / actual) < 0.15  # skill over days: see test_backtest
    assert model.quantiles["primary"].shape == (model.config.n_buckets, 2)


def test_no_leakage_target_after_issue_and_weather_after_horizon(hourly):
    issue = pd.Timestamp("2021-03-01", tz="UTC")
    cfg = _cfg()
    altered = hourly.copy()
    altered.loc[altered.index >= issue, "y"] *= 3.0
    altered.loc[altered.index >= issue + cfg.horizon, ["t_good", "t_noise"]] += 25.0
    a = forecast_demand(fit_demand_model(hourly, cfg, cutoff=issue), hourly, issue)
    b = forecast_demand(fit_demand_model(altered, cfg, cutoff=issue), altered, issue)
    pd.testing.assert_frame_equal(a, b)
    # A model fitted earlier, fed the latest lags at a later issue time, is blind to data after it too.
    model = fit_demand_model(hourly, cfg, cutoff=issue)
    later = issue + pd.Timedelta(days=2)
    altered2 = hourly.copy()
    altered2.loc[altered2.index >= later, "y"] = 0.0
    pd.testing.assert_frame_equal(
        forecast_demand(model, hourly, later), forecast_demand(model, altered2, later)
    )


def test_fallback_weather_missing_uses_weather_free_model(hourly, fitted):
    issue, model = fitted
    gappy = hourly.copy()
    hole = (gappy.index >= issue + pd.Timedelta(hours=6)) & (gappy.index < issue + pd.Timedelta(hours=12))
    gappy.loc[hole, ["t_good", "t_noise"]] = np.nan
    fc = forecast_demand(model, gappy, issue)
    assert (fc.loc[fc["lead_h"].between(6, 11.5), "model"] == "lgbm_noweather").all()
    assert (fc.loc[~fc["lead_h"].between(6, 11.5), "model"] == "lgbm").all()
    # Live use: no weather forecast at all (the data end at the issue time).
    fc2 = forecast_demand(model, hourly[hourly.index < issue], issue)
    assert len(fc2) == 24 and (fc2["model"] == "lgbm_noweather").all() and fc2["p50"].notna().all()


def test_fallback_lags_missing_and_short_history(hourly, fitted):
    issue, model = fitted
    gappy = hourly.copy()
    gappy.loc[(gappy.index >= issue - pd.Timedelta(days=1)) & (gappy.index < issue), "y"] = np.nan
    fc = forecast_demand(model, gappy, issue)
    assert (fc["model"] == "seasonal_naive").all()
    # Ten days of history: too little to train; the seasonal naive serves (a week back exists).
    short = hourly[hourly.index >= issue - pd.Timedelta(days=10)]
    m_short = fit_demand_model(short, _cfg(), cutoff=issue)
    assert not m_short.components
    fc_short = forecast_demand(m_short, short, issue)
    assert (fc_short["model"] == "seasonal_naive").all() and (fc_short["p10"] <= fc_short["p90"]).all()
    # Three days: no week-old value, the profile serves.
    tiny = hourly[hourly.index >= issue - pd.Timedelta(days=3)]
    fc_tiny = forecast_demand(None, tiny, issue, _cfg())
    assert (fc_tiny["model"] == "profile").all() and fc_tiny["p50"].notna().all()
    with pytest.raises(ValueError, match="no history"):
        forecast_demand(None, hourly[hourly.index >= issue], issue, _cfg())


def test_dst_days_melbourne_half_hourly():
    tz = "Australia/Melbourne"
    data = prepare_series(
        synthetic(days=50, freq="30min", tz=tz, start="2021-08-20"), "time", "load", ["t_good"], tz=tz
    )
    cfg = _cfg(tz=tz, weather_cols=("t_good",), country="AU", subdiv="VIC")
    issue = pd.Timestamp("2021-10-03", tz=tz).tz_convert("UTC")  # a 23-hour local day
    model = fit_demand_model(data, cfg, cutoff=issue)
    fc = forecast_demand(model, data, issue)
    assert len(fc) == 48 and (fc["model"] == "lgbm").all()
    local = pd.DatetimeIndex(fc["time"]).tz_convert(tz)
    assert local[0].hour == 0 and local[4].hour == 3  # 02:00-03:00 local does not exist that day
    assert local[-1] == pd.Timestamp("2021-10-04 00:30", tz=tz)
    assert np.all(np.diff(pd.DatetimeIndex(fc["time"]).asi8) == 1_800_000_000_000)


def test_flat_and_zero_series():
    frame = synthetic(days=40)
    for value in (0.0, 5.0):
        frame["load"] = value
        data = prepare_series(frame, "time", "load", ["t_good"])
        issue = pd.Timestamp("2021-02-05", tz="UTC")
        model = fit_demand_model(data, _cfg(weather_cols=("t_good",)), cutoff=issue)
        fc = forecast_demand(model, data, issue)
        assert (
            np.allclose(fc["p50"], value) and np.allclose(fc["p10"], value) and np.allclose(fc["p90"], value)
        )


def test_prophet_combination_weights():
    data = prepare_series(synthetic(days=60), "time", "load", ["t_good"])
    issue = pd.Timestamp("2021-02-26", tz="UTC")
    cfg = _cfg(models=("lgbm", "prophet"), weather_cols=("t_good",))
    model = fit_demand_model(data, cfg, cutoff=issue)
    assert set(model.weights) == {"lgbm", "prophet"} and sum(model.weights.values()) == pytest.approx(1.0)
    assert model.residuals["time"].max() < issue  # weights learnt inside the training span
    fc = forecast_demand(model, data, issue)
    assert set(fc["model"]) == {model.primary} and fc["p50"].notna().all()
    # Refit with the previous model: Prophet re-used (younger than prophet_refit_days), residuals rolled on.
    later = issue + pd.Timedelta(days=3)
    model2 = fit_demand_model(data, cfg, cutoff=later, previous=model)
    assert model2.components["prophet"] is model.components["prophet"]
    assert model2.residuals["time"].max() >= issue and model2.residuals["time"].max() < later


def test_config_validation():
    with pytest.raises(ValueError, match="unknown model"):
        ForecastConfig(models=("arima",))
    with pytest.raises(ValueError):
        ForecastConfig(issue_time="25:00")
