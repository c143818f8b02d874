"""Demand forecasting: a pure library (no dagster) and the ``gridpipeline forecast`` commands.

* :mod:`~gridpipeline.forecast.features` -- regular UTC grid, local-time calendar and holidays,
  temperature features, learnt weather-station selection, Tao Hong's vanilla design.
* :mod:`~gridpipeline.forecast.demand` -- :func:`fit_demand_model` / :func:`forecast_demand`
  (LightGBM + Prophet combined by rolling-origin skill, P10/P50/P90, fallback chain) and the
  baselines (seasonal naive, vanilla).
* :mod:`~gridpipeline.forecast.metrics` -- MAPE, rMAE, RMSE, pinball loss, P10-P90 coverage.
* :mod:`~gridpipeline.forecast.backtest` -- leakage-free rolling-origin backtest.
* :mod:`~gridpipeline.forecast.cli` -- ``forecast_app`` (typer), command ``backtest``.
* :mod:`~gridpipeline.forecast.datasets` -- loaders/exporters for the shared real datasets.
"""

from gridpipeline.forecast.backtest import BacktestResult, run_backtest, summarize
from gridpipeline.forecast.demand import (
    DemandModel,
    ForecastConfig,
    fit_demand_model,
    fit_vanilla,
    forecast_demand,
    forecast_vanilla,
    seasonal_naive_forecast,
)
from gridpipeline.forecast.features import calendar_features, prepare_series, temperature_features

__all__ = [
    "BacktestResult",
    "DemandModel",
    "ForecastConfig",
    "calendar_features",
    "fit_demand_model",
    "fit_vanilla",
    "forecast_demand",
    "forecast_vanilla",
    "prepare_series",
    "run_backtest",
    "seasonal_naive_forecast",
    "summarize",
    "temperature_features",
]
