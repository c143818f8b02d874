"""Demand and generation forecasting: a pure library (no dagster), its thin assets, and the
``gridpipeline forecast`` commands.

* :mod:`~gridpipeline.forecast.deployed` -- the one demand-forecasting path: the live loop and
  ``forecast backtest --models live`` both train and predict through it.
* :mod:`~gridpipeline.forecast.live` -- measured history, the labelled fallback, accuracy, anomalies.
* :mod:`~gridpipeline.forecast.generation` -- the grid's PV and wind forecast from a weather forecast.
* :mod:`~gridpipeline.forecast.features`, :mod:`~gridpipeline.forecast.weather` -- calendar, temperature
  and weather features.
* :mod:`~gridpipeline.forecast.metrics` -- MAPE, rMAE, RMSE, pinball loss, P10-P90 coverage.
* :mod:`~gridpipeline.forecast.backtest` -- leakage-free rolling-origin backtest on real data.

The package imports nothing on its own: importing one module (say, the 5-minute loop's) does not pull
in LightGBM, Prophet and the backtests.
"""
