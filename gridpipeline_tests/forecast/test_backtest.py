"""Rolling-origin backtest on synthetic data: metrics layout, baselines, DST and degenerate series."""

from __future__ import annotations

import pandas as pd
import pytest

from gridpipeline.forecast.backtest import run_backtest
from gridpipeline.forecast.demand import ForecastConfig
from gridpipeline.forecast.features import prepare_series
from gridpipeline_tests.forecast import synthetic

FAST = {
    "models": ("lgbm",),
    "lgbm_rounds": 80,
    "fallback_rounds": 40,
    "lgbm_params": {"learning_rate": 0.15},
    "val_days": 14,
    "warmup_folds": 1,
    "min_train_days": 21,
    "max_train_days": None,
}


def test_backtest_metrics_layout_and_baselines():
    data = prepare_series(synthetic(days=60), "time", "load", ["t_good", "t_noise"])
    cfg = ForecastConfig(weather_cols=("t_good", "t_noise"), **FAST)
    start = pd.Timestamp("2021-02-22", tz="UTC")
    res = run_backtest(data, cfg, start, start + pd.Timedelta(days=5), refit_days=3)
    m = res.metrics
    for key in (
        "mape",
        "rmae",
        "rmse",
        "pinball",
        "coverage_p10_p90",
        "per_day",
        "baselines",
        "n_forecasts",
        "model_usage",
        "train_seconds",
        "predict_seconds",
        "per_horizon",
    ):
        assert key in m
    assert m["n_forecasts"] == 5 and m["refits"] == 2 and m["model_usage"] == {"lgbm": 120}
    assert [d["date"] for d in m["per_day"]] == [f"2021-02-{d}" for d in range(22, 27)]
    assert set(m["per_day"][0]) >= {"date", "mape", "rmae", "rmse", "pinball", "coverage_p10_p90"}
    for name in ("seasonal_naive", "vanilla"):
        assert set(m["baselines"][name]) >= {"mape", "rmae", "rmse", "pinball", "coverage_p10_p90"}
    assert m["baselines"]["seasonal_naive"]["rmae"] == pytest.approx(1.0)
    assert m["mape"] < m["baselines"]["seasonal_naive"]["mape"]
    assert len(res.forecasts) == 120 and res.forecasts["actual"].notna().all()
    assert (res.forecasts["time"] >= res.forecasts["issue_time"]).all()


def test_backtest_across_dst_days():
    tz = "Australia/Melbourne"
    data = prepare_series(
        synthetic(days=45, freq="30min", tz=tz, start="2021-08-25"), "time", "load", ["t_good"], tz=tz
    )
    cfg = ForecastConfig(tz=tz, weather_cols=("t_good",), country="AU", subdiv="VIC", **FAST)
    start = pd.Timestamp("2021-10-02", tz=tz).tz_convert("UTC")
    end = pd.Timestamp("2021-10-05", tz=tz).tz_convert("UTC")  # 71 hours later: the 3rd is a 23-hour day
    res = run_backtest(data, cfg, start, end, refit_days=7)
    assert [d["date"] for d in res.metrics["per_day"]] == ["2021-10-02", "2021-10-03", "2021-10-04"]
    assert res.forecasts.groupby("issue_time").size().tolist() == [48, 48, 48]
    assert res.metrics["mape"] is not None


def test_backtest_zero_series_has_no_mape():
    frame = synthetic(days=40)
    frame["load"] = 0.0
    data = prepare_series(frame, "time", "load", ["t_good"])
    cfg = ForecastConfig(weather_cols=("t_good",), **FAST)
    start = pd.Timestamp("2021-02-05", tz="UTC")
    m = run_backtest(data, cfg, start, start + pd.Timedelta(days=2)).metrics
    assert m["mape"] is None and m["rmae"] is None and m["rmse"] == 0.0
    assert m["per_day"][0]["mape"] is None
    assert m["baselines"]["seasonal_naive"]["mape"] is None


def test_backtest_rejects_an_empty_span():
    data = prepare_series(synthetic(days=30), "time", "load")
    with pytest.raises(ValueError, match="no issue time"):
        run_backtest(
            data,
            ForecastConfig(**FAST),
            pd.Timestamp("2022-01-01", tz="UTC"),
            pd.Timestamp("2022-01-05", tz="UTC"),
        )
