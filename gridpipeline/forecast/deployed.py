"""The deployed demand forecast: the one path that runs in production and that ``forecast backtest
--models live`` scores.

* **Models.** The global LightGBM model of ``global_model`` (every series in one model; lags of the
  day and week, calendar and holidays on local time, temperature with heating/cooling degrees and its
  thermal inertia) with Prophet per series beside it (``prophet_live``), blended by skill per series
  and lead bucket on a two-day hold-out before the cut-off.
* **Training.** ``train`` fits on the history before ``cutoff`` only: ``train_days`` of it (the live
  setting ``GRIDPIPELINE_FORECAST_TRAIN_DAYS``), gaps stay gaps (rows that need a missing value are
  skipped). Live it runs weekly (``demand_model``, :data:`REFIT`); the backtest refits on the same cadence.
* **Serving.** ``predict`` runs the chain row by row and labels every row with the link that served
  it: ``global+prophet`` -> ``global`` (no Prophet weight or no weather) -> ``global_noweather`` ->
  ``seasonal_naive`` -> the caller's labelled ``fallback`` (live: the network's nominal demand).

The configuration lives in :func:`deployed_config`, used by both the live assets and the backtest,
so the two cannot drift apart.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pandas as pd

from gridpipeline.forecast.global_model import GlobalConfig, forecast_global
from gridpipeline.forecast.prophet_live import combine, train_demand_models

#: the live loop retrains weekly (``demand_model``, Sundays 02:00 UTC, and whenever no model exists);
#: the backtest refits on the same cadence. Between refits every forecast still reads the latest lags.
REFIT = pd.Timedelta(days=7)
HORIZON = pd.Timedelta(hours=24)


def deployed_config(step: pd.Timedelta, train_days: int, tz: str, country: str | None,
                    subdiv: str | None = None, horizon: pd.Timedelta = HORIZON, threads: int = 1) -> GlobalConfig:
    """The global model's configuration at any native step (5 min live, 30 min or 1 h in backtests).

    Issues every 3 h cover every lead; a quarter of the span (at most a week) calibrates the band;
    400 rounds for the median (150 for the band, 120 for the weather-free fallback); the richer
    temperature and day-type features on. Chosen on Victoria April 2014 with weekly refits: a 28-day
    window gave 5.30 % MAPE, 365 days 3.21 % at 120 rounds and 3.08 % at 400. The series' scale is its
    28-day mean, not 7: after a heatwave week a 7-day scale carried the heat into the next cool days
    (Victoria 13 Jan - 23 Feb 2014: 6.36 % -> 6.25 %; with a 730-day window 5.79 %). On the whole of
    Victoria 2014 (weekly refits): 365 days and a 7-day scale 3.06 %, 730 days and a 28-day scale 2.97 %,
    both before serving saw the observed temperature history; after that fix (6baadca) 2.47 %.

    LightGBM runs on one thread: live it shares two cores with the 30-second loop, and OpenMP threads
    that compete with another busy process spin (a weekly refit took 908 s instead of 21 s)."""
    step = pd.Timedelta(step)
    return GlobalConfig(step=step, horizon=pd.Timedelta(horizon), weather_cols=("temperature",), tz=tz,
                        country=country, subdiv=subdiv, train_days=int(train_days),
                        issue_stride=pd.Timedelta(hours=3), max_rows=250_000, rounds=400, band_rounds=150,
                        noweather_rounds=120, balance_point=18.0,
                        calib_days=max(1, min(7, int(train_days) // 4)), rich_features=True,
                        scale_days=28, threads=int(threads))


def train(hist: pd.DataFrame, weather: pd.DataFrame, cfg: GlobalConfig, cutoff: pd.Timestamp, tz: str,
          country: str | None, prophet: bool = True) -> dict:
    """Fit the deployed bundle on ``hist`` (wide, UTC index at ``cfg.step``, NaN = no measurement) and
    observed ``weather`` (a ``temperature`` column) strictly before ``cutoff``.

    Returns {"global", "prophet", "weights", "step", "trained_until", "report"}; the report has the
    hold-out MAPEs (%), the training rows and seconds."""
    t0 = time.perf_counter()
    cutoff = pd.Timestamp(cutoff)
    start = cutoff - pd.Timedelta(days=cfg.train_days + 8)  # the first week only feeds the lags
    hist = hist[(hist.index >= start) & (hist.index < cutoff)]
    hist = hist.reindex(pd.date_range(start.ceil(cfg.step), cutoff, freq=cfg.step, inclusive="left"))
    first = hist.notna().any(axis=1)
    if not first.any():
        raise ValueError(f"no measured demand in the {cfg.train_days + 8} days before {cutoff}")
    hist = hist.loc[first.idxmax():]  # a young deployment: the window starts at its first measurement
    temp = weather[["temperature"]].reindex(pd.date_range(hist.index[0], cutoff + cfg.horizon, freq=cfg.step,
                                                          inclusive="left"))
    temp = temp[temp.index < cutoff]  # observations only reach the cut-off
    bundle, report = train_demand_models(hist, temp, cfg, cutoff, tz, country, prophet=prophet)
    report = {**report, "train_rows": int(bundle["global"].train_rows),
              "train_seconds": round(time.perf_counter() - t0, 2),
              "measured_share": round(float(np.isfinite(hist.to_numpy(dtype=float)).mean()), 4)}
    return {**bundle, "step": cfg.step, "trained_until": cutoff, "report": report}


def predict(bundle: dict, hist: pd.DataFrame, weather: pd.DataFrame | None, issue: pd.Timestamp,
            fallback: pd.DataFrame | None = None, disabled: set[str] | frozenset[str] = frozenset(),
            observed: pd.DataFrame | None = None) -> pd.DataFrame:
    """Forecast every series after ``issue`` with the deployed chain (only history before ``issue``).

    ``weather``: the weather forecast over the horizon (``temperature``) or None; ``observed``: the
    observed weather before the issue (the temperature features of training read it: without it
    they would be missing at serving time only); ``fallback``: a long
    frame (series, valid_time, lead, p10, p50, p90, model) serving the rows and series the chain cannot;
    ``disabled``: links skipped because their rolling error degraded ("global", "global_noweather",
    "prophet"). Returns the long frame with ``model`` per row."""
    model = bundle["global"]
    weather = with_observed(weather, observed, issue)
    fc = forecast_global(model, hist, weather, issue, disabled=disabled)
    if "prophet" not in disabled and "global" not in disabled:
        fc = combine(fc, bundle.get("prophet", {}), bundle.get("weights", {}), weather,
                     step=bundle.get("step", model.config.step))
    if fallback is None or not len(fallback):
        return fc
    fb = fallback.set_index(["series", "valid_time"])
    missing = fc.model.to_numpy() == "none"
    if missing.any():
        keys = pd.MultiIndex.from_arrays([fc.series[missing], pd.DatetimeIndex(fc.valid_time[missing])])
        sub = fb.reindex(keys)
        for c in ("p10", "p50", "p90", "model"):
            fc.loc[missing, c] = sub[c].to_numpy()
    extra = fallback[~fallback.series.isin(set(model.series))]  # series the model never saw (a new zone)
    return pd.concat([fc, extra[fc.columns]], ignore_index=True) if len(extra) else fc


def with_observed(forecast: pd.DataFrame | None, observed: pd.DataFrame | None, issue: pd.Timestamp
                  ) -> pd.DataFrame | None:
    """Observed ``temperature`` before ``issue`` followed by the forecast from ``issue`` on. Without a
    forecast, None: the weather-free models serve (the observations alone cannot cover the horizon)."""
    if forecast is None or not len(forecast) or observed is None or not len(observed):
        return forecast
    before = observed.loc[observed.index < issue, ["temperature"]]
    after = forecast.loc[forecast.index >= issue, ["temperature"]]
    return pd.concat([before, after]).sort_index()


def with_train_days(cfg: GlobalConfig, days: int) -> GlobalConfig:
    return replace(cfg, train_days=int(days), calib_days=max(1, min(7, int(days) // 4)))


__all__ = ["HORIZON", "REFIT", "deployed_config", "predict", "train", "with_observed", "with_train_days"]
