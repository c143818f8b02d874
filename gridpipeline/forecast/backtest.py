"""Rolling-origin backtest of the demand forecaster against same-run baselines.

For every daily issue time in the test span the forecaster is (re)fitted on the data strictly before
the issue time every ``refit_days`` days; between refits the last fitted model is re-used but always
fed the latest target values available at the issue time. The target is never read at or after the
issue time. **Weather over the horizon is the measured weather, used as a perfect weather forecast**
(the only information from after the issue time that a forecast sees).

Baselines in the same run, on the same issue times:

* ``seasonal_naive``: the value one week earlier;
* ``vanilla``: Tao Hong's vanilla regression (trend + month + weekday x hour + hour x (T, T^2, T^3) +
  month x (T, T^2, T^3)) fitted by OLS on the training span at every refit, with the same
  (learnt) temperature stations as the forecaster.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gridpipeline.forecast import metrics as M
from gridpipeline.forecast.demand import (
    DemandModel,
    ForecastConfig,
    fit_demand_model,
    fit_vanilla,
    forecast_demand,
    forecast_vanilla,
    seasonal_naive_forecast,
)
from gridpipeline.forecast.features import daily_issue_times

NOTE = (
    "Weather over the forecast horizon is the measured weather, used as a perfect weather forecast; "
    "the target is read only before each issue time."
)
METRIC_KEYS = ("mape", "rmae", "rmse", "pinball", "coverage_p10_p90")


@dataclass
class BacktestResult:
    forecasts: pd.DataFrame  # one row per issue and time step
    metrics: dict


def default_span(data: pd.DataFrame, config: ForecastConfig) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Default test span: the last year of the data, but leaving at least ``min_train_days +
    val_days`` of history before the first issue."""
    first, last = data.index[0], data.index[-1]
    start = max(
        first + pd.Timedelta(days=config.min_train_days + config.val_days), last - pd.Timedelta(days=365)
    )
    return start, last + (data.index[1] - data.index[0] if len(data) > 1 else pd.Timedelta(0))


def run_backtest(
    data: pd.DataFrame,
    config: ForecastConfig,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    refit_days: float = 7,
    progress: Callable[[str], None] | None = None,
) -> BacktestResult:
    """Backtest on ``data`` (regular UTC grid from ``prepare_series``) for daily issues at
    ``config.issue_time`` (local) in ``[start, end)`` whose horizon ends within the data.

    Returns every forecast row (``time``, ``issue_time``, ``lead_h``, ``actual``, ``p10``/``p50``/``p90``,
    ``model``, and the baselines as ``naive_*`` and ``vanilla_*``) and the metrics of :func:`summarize`.
    """
    d_start, d_end = default_span(data, config)
    start = d_start if start is None else start
    end = d_end if end is None else end
    step = data.index[1] - data.index[0]
    last_issue = min(end - pd.Timedelta(1, "ns"), data.index[-1] + step - config.horizon)
    issues = daily_issue_times(start, last_issue, config.issue_time, config.tz) if last_issue >= start else []
    if not len(issues):
        raise ValueError(f"no issue time between {start} and {end} with a full horizon inside the data")
    model: DemandModel | None = None
    vanilla = None
    fitted_at = None
    train_s = predict_s = 0.0
    frames = []
    t_all = time.perf_counter()
    refit = pd.Timedelta(days=refit_days)
    weights_log = []
    for i, issue in enumerate(issues):
        if fitted_at is None or issue - fitted_at >= refit:
            t0 = time.perf_counter()
            model = fit_demand_model(data, config, cutoff=issue, previous=model)
            vanilla = fit_vanilla(
                data, model.stations, config.tz, cutoff=issue, max_train_days=config.max_train_days
            )
            train_s += time.perf_counter() - t0
            fitted_at = issue
            weights_log.append(dict(model.weights))
            if progress:
                progress(
                    f"{issue.tz_convert(config.tz):%Y-%m-%d %H:%M} refit {model.fit_seconds:.1f}s "
                    f"stations={model.stations} weights={ {k: round(v, 2) for k, v in model.weights.items()} } "
                    f"[{i}/{len(issues)} issues, {time.perf_counter() - t_all:.0f}s]"
                )
        t0 = time.perf_counter()
        fc = forecast_demand(model, data, issue)
        naive = seasonal_naive_forecast(data, issue, config.horizon, config.val_days)
        van = forecast_vanilla(vanilla, data, issue, config.horizon) if vanilla is not None else None
        predict_s += time.perf_counter() - t0
        fc["actual"] = data["y"].reindex(pd.DatetimeIndex(fc["time"])).to_numpy()
        for q in ("p10", "p50", "p90"):
            fc[f"naive_{q}"] = naive[q].to_numpy()
            fc[f"vanilla_{q}"] = van[q].to_numpy() if van is not None else np.nan
        frames.append(fc)
    forecasts = pd.concat(frames, ignore_index=True)
    out = summarize(forecasts, config.tz)
    out.update(
        {
            "train_seconds": round(train_s, 2),
            "predict_seconds": round(predict_s, 2),
            "total_seconds": round(time.perf_counter() - t_all, 2),
            "refits": len(weights_log),
            "mean_weights": _mean_weights(weights_log),
            "stations": model.stations if model is not None else [],
            "note": NOTE,
        }
    )
    return BacktestResult(forecasts=forecasts, metrics=out)


LIVE_NOTE = (
    "Scores the deployed path (forecast/deployed.py): the global LightGBM + Prophet blend with the live "
    "configuration, training window and nightly refit. " + NOTE
)


def run_backtest_live(
    data: pd.DataFrame,
    config: ForecastConfig,
    train_days: int,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    refit: pd.Timedelta | None = None,
    progress: Callable[[str], None] | None = None,
    prophet: bool = True,
) -> BacktestResult:
    """Backtest of exactly what runs live: :func:`deployed.train` on the last ``train_days`` (+ a week
    of lags) before each refit, every ``refit`` (default: weekly, as ``demand_model``), and
    :func:`deployed.predict` at every daily issue, with the seasonal naive as the labelled fallback.
    The temperature is the mean of ``config.weather_cols`` (one column live). Same rows, metrics and
    same-run baselines (seasonal naive, vanilla refitted at the same cadence) as :func:`run_backtest`."""
    from gridpipeline.forecast import deployed

    if not config.weather_cols:
        raise ValueError("the deployed path needs a temperature column (--weather-cols)")
    refit = deployed.REFIT if refit is None else pd.Timedelta(refit)
    step = data.index[1] - data.index[0]
    # a year of history before the first issue at least; a longer window uses what there is, as a
    # young deployment does (deployed.train starts at the first measurement)
    d_start, d_end = data.index[0] + pd.Timedelta(days=min(train_days, 365) + 10), data.index[-1] + step
    start = max(d_start, start) if start is not None else max(d_start, d_end - pd.Timedelta(days=365))
    end = d_end if end is None else end
    last_issue = min(end - pd.Timedelta(1, "ns"), data.index[-1] + step - config.horizon)
    issues = daily_issue_times(start, last_issue, config.issue_time, config.tz) if last_issue >= start else []
    if not len(issues):
        raise ValueError(f"no issue time between {start} and {end} with a full horizon inside the data")
    cfg = deployed.deployed_config(step, train_days, config.tz, config.country, config.subdiv, config.horizon,
                                  threads=config.threads)
    hist = data[["y"]].rename(columns={"y": "system"})
    temp = data[list(config.weather_cols)].mean(axis=1).rename("temperature").to_frame()
    stations = list(config.weather_cols)
    bundle = vanilla = fitted_at = None
    train_s = predict_s = 0.0
    frames, reports = [], []
    t_all = time.perf_counter()
    for i, issue in enumerate(issues):
        if fitted_at is None or issue - fitted_at >= refit:
            t0 = time.perf_counter()
            bundle = deployed.train(hist[hist.index < issue], temp, cfg, issue, config.tz, config.country,
                                    prophet=prophet)
            vanilla = fit_vanilla(data, stations, config.tz, cutoff=issue, max_train_days=config.max_train_days)
            train_s += time.perf_counter() - t0
            fitted_at = issue
            reports.append(bundle["report"])
            if progress and (len(reports) % 10 == 1):
                progress(f"{issue.tz_convert(config.tz):%Y-%m-%d %H:%M} refit {bundle['report']['train_seconds']:.1f}s "
                         f"holdout MAPE {bundle['report']['holdout_mape']:.2f} % "
                         f"[{i}/{len(issues)} issues, {time.perf_counter() - t_all:.0f}s]")
        t0 = time.perf_counter()
        naive = seasonal_naive_forecast(data, issue, config.horizon, config.val_days)
        times = pd.DatetimeIndex(naive["time"])
        fallback = pd.DataFrame({"series": "system", "valid_time": times, "lead": np.arange(1, len(times) + 1),
                                 "p10": naive["p10"].to_numpy(), "p50": naive["p50"].to_numpy(),
                                 "p90": naive["p90"].to_numpy(), "model": "seasonal_naive"})
        # the measured temperature over the horizon stands in for the weather forecast (ex-post protocol)
        fc = deployed.predict(bundle, hist, temp.reindex(times), issue, fallback=fallback,
                              observed=temp[temp.index < issue])
        fc = fc[fc.series == "system"].set_index("valid_time").reindex(times)
        van = forecast_vanilla(vanilla, data, issue, config.horizon) if vanilla is not None else None
        predict_s += time.perf_counter() - t0
        out = pd.DataFrame({"time": times, "issue_time": issue, "lead_h": (times - issue) / pd.Timedelta(hours=1)
                            + step / pd.Timedelta(hours=1),
                            "p10": fc.p10.to_numpy(), "p50": fc.p50.to_numpy(), "p90": fc.p90.to_numpy(),
                            "model": fc.model.to_numpy()})
        out["actual"] = data["y"].reindex(times).to_numpy()
        for q in ("p10", "p50", "p90"):
            out[f"naive_{q}"] = naive[q].to_numpy()
            out[f"vanilla_{q}"] = van[q].to_numpy() if van is not None else np.nan
        frames.append(out)
    forecasts = pd.concat(frames, ignore_index=True)
    metrics = summarize(forecasts, config.tz)
    metrics.update({
        "train_seconds": round(train_s, 2), "predict_seconds": round(predict_s, 2),
        "total_seconds": round(time.perf_counter() - t_all, 2), "refits": len(reports),
        "train_days": int(train_days), "refit": str(refit),
        "mean_holdout_mape": round(float(np.nanmean([r["holdout_mape"] for r in reports])), 4),
        "stations": stations, "note": LIVE_NOTE,
    })
    return BacktestResult(forecasts=forecasts, metrics=metrics)


def _mean_weights(logs: list[dict]) -> dict[str, float]:
    keys = sorted({k for w in logs for k in w})
    return {k: round(float(np.mean([w.get(k, 0.0) for w in logs])), 3) for k in keys}


def _metrics(frame: pd.DataFrame, prefix: str) -> dict:
    s = M.score(
        frame["actual"],
        frame[f"{prefix}p50"],
        frame[f"{prefix}p10"],
        frame[f"{prefix}p90"],
        naive=frame["naive_p50"],
    )
    return {k: (round(s[k], 6) if isinstance(s[k], float) else s[k]) for k in (*METRIC_KEYS, "mae", "n")}


def summarize(forecasts: pd.DataFrame, tz: str = "UTC") -> dict:
    """Metrics of a backtest's forecast rows: overall, ``per_day`` (local date of the issue),
    ``per_horizon`` (lead-time buckets), ``baselines`` and ``model_usage``."""
    f = forecasts
    out: dict = dict(_metrics(f, ""))
    issue_day = pd.DatetimeIndex(f["issue_time"]).tz_convert(tz).strftime("%Y-%m-%d")
    out["per_day"] = [
        {"date": day, **{k: v for k, v in _metrics(part, "").items() if k != "mae"}}
        for day, part in f.groupby(issue_day, sort=True)
    ]
    horizon_h = float(f["lead_h"].max()) + float(np.diff(np.unique(f["lead_h"]))[:1].sum() or 1.0)
    edges = [0, 6, 12, 18, 24] if horizon_h <= 24 else list(np.linspace(0, np.ceil(horizon_h / 6) * 6, 5))
    buckets = M.horizon_buckets(f["lead_h"], edges)
    out["per_horizon"] = [
        {"bucket": b, **_metrics(part, "")} for b, part in f.groupby(buckets.to_numpy(), sort=False)
    ]
    baselines = {"seasonal_naive": _metrics(f, "naive_")}
    if f["vanilla_p50"].notna().any():
        baselines["vanilla"] = _metrics(f, "vanilla_")
    else:
        baselines["vanilla"] = {k: None for k in (*METRIC_KEYS, "mae")} | {
            "n": 0,
            "skipped": "no weather columns",
        }
    out["baselines"] = baselines
    v = baselines["vanilla"].get("mape")
    out["mape_ratio_to_vanilla"] = round(out["mape"] / v, 4) if out["mape"] is not None and v else None
    out["n_forecasts"] = int(f["issue_time"].nunique())
    out["n_rows"] = len(f)
    usage = Counter(f["model"])
    out["model_usage"] = {k: int(v) for k, v in sorted(usage.items())}
    out["units"] = {
        "mape": "percent",
        "coverage_p10_p90": "fraction",
        "rmse": "target unit",
        "pinball": "target unit",
        "rmae": "MAE / seasonal-naive MAE",
    }
    return out


__all__ = ["LIVE_NOTE", "NOTE", "BacktestResult", "default_span", "run_backtest", "run_backtest_live", "summarize"]
