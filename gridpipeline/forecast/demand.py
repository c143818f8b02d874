"""Demand forecasting: P10/P50/P90 over a horizon at the native resolution, with a fallback chain.

Pure library (pandas, numpy, LightGBM, optionally Prophet); no dagster. Typical use::

    data = prepare_series(frame, "time", "load", ["t1", "t2"], tz="America/New_York")
    cfg = ForecastConfig(tz="America/New_York", weather_cols=("t1", "t2"), country="US")
    model = fit_demand_model(data[data.index < issue], cfg)           # trains on data before `issue`
    fc = forecast_demand(model, data, issue)                          # time, lead_h, p10, p50, p90, model

``data`` is the regular UTC grid of :func:`~gridpipeline.forecast.features.prepare_series` (column
``y`` plus the weather columns). :func:`forecast_demand` never reads the target at or after the issue
time (it masks it), and reads weather only up to the end of the horizon: the weather over the
horizon is the weather *forecast* (in a backtest, the measured weather stands in for a perfect one).

Models (``ForecastConfig.models``):

* ``lgbm``: one LightGBM model for every lead time, on the target normalised by its mean over the
  7 days before the issue, with lags available at the issue time (same time on the last available
  day and the day before, same time last week and two weeks ago, the last value, the mean/min/max
  of the last 24 h), the lead time, calendar and holidays on local time, and temperature features.
* ``prophet``: Prophet with flat growth, yearly/weekly seasonality, daily seasonality conditioned on
  working days, holidays, temperature regressors (degree hours, smoothed temperature, daily max/min)
  and the same lag regressors (refitted every ``prophet_refit_days``; its fit is the slow part).
* both: combined as ``w * lgbm + (1 - w) * prophet`` with ``w`` minimising the MAE of rolling-origin
  forecasts whose targets lie inside the training span (never after the fit's cut-off).

Quantiles: P10/P90 are P50 plus empirical quantiles of normalised rolling-origin residuals per
lead-time bucket (split-conformal style), from the last ``val_days`` before the cut-off.

Fallback chain, row by row (recorded in the ``model`` column): the model (needs the weather and
the day/week lags) -> ``lgbm_noweather`` (needs the lags) -> ``seasonal_naive`` (same time one week
earlier) -> ``profile`` (mean of the last two weeks by working/non-working day and local time of day).
"""

from __future__ import annotations

import itertools
import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from gridpipeline.forecast.features import (
    DAY,
    HOUR,
    balance_point,
    calendar_features,
    daily_issue_times,
    holiday_dates,
    ols_fit,
    select_stations,
    temperature_features,
    vanilla_design,
)

log = logging.getLogger(__name__)

QUANTILES = (0.1, 0.5, 0.9)
CHAIN = ("lgbm_noweather", "seasonal_naive", "profile")
KNOWN_MODELS = ("lgbm", "prophet")
LOOKBACK = pd.Timedelta(days=16)  # history a single forecast reads before its issue time
MIN_TRAIN_ROWS = 100

# Chosen by rolling-origin CV inside the training spans only (GEFCom2012 2006 and Victoria 2013, i.e.
# before the test years): 63 leaves beat 31 leaves, a 0.1 learning rate and the L1 objective on both.
DEFAULT_LGBM_PARAMS: dict[str, Any] = {
    "objective": "l2",
    "learning_rate": 0.05,
    "num_leaves": 63,
    "min_data_in_leaf": 20,
    "feature_fraction": 0.7,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "max_bin": 127,
    "verbose": -1,
}


@dataclass(frozen=True)
class ForecastConfig:
    """How to fit and issue forecasts.

    ``weather_cols`` are temperature columns (one per weather station; with several, the stations to
    average are learnt by CV inside the training span). ``issue_time`` is the local time of day the
    forecasts are issued (training samples are built for it). ``tz`` drives calendar features and
    issue times; ``country``/``subdiv`` select public holidays (``holidays`` package codes).
    """

    horizon: pd.Timedelta = field(default_factory=lambda: pd.Timedelta(hours=24))
    issue_time: str = "00:00"
    tz: str = "UTC"
    weather_cols: tuple[str, ...] = ()
    country: str | None = None
    subdiv: str | None = None
    models: tuple[str, ...] = ("lgbm", "prophet")
    min_train_days: int = 28
    max_train_days: int | None = 1095
    prophet_train_days: int = 365
    val_days: int = 56
    warmup_folds: int = 2
    station_max_k: int | None = None
    station_reselect_days: int = 91
    lgbm_params: dict[str, Any] = field(default_factory=dict)
    lgbm_rounds: int = 500
    fallback_rounds: int = 150
    prophet_refit_days: int = 28
    n_buckets: int = 4
    prophet_max_rows: int = 6000
    seed: int = 0
    threads: int = 1

    def __post_init__(self):
        object.__setattr__(self, "horizon", pd.Timedelta(self.horizon))
        object.__setattr__(self, "weather_cols", tuple(self.weather_cols))
        object.__setattr__(self, "models", tuple(self.models))
        unknown = [m for m in self.models if m not in KNOWN_MODELS]
        if unknown or not self.models:
            raise ValueError(
                f"unknown model(s) {unknown or self.models}; choose from {', '.join(KNOWN_MODELS)}"
            )
        if self.horizon <= pd.Timedelta(0):
            raise ValueError("horizon must be positive")
        hh, mm = (int(x) for x in self.issue_time.split(":"))
        if not (0 <= hh < 24 and 0 <= mm < 60):
            raise ValueError(f"issue_time must be HH:MM, got {self.issue_time!r}")


@dataclass
class Component:
    """One fitted model of the ensemble."""

    kind: str  # "lgbm" or "prophet"
    weather: bool
    booster: Any = None
    features: list[str] = field(default_factory=list)
    prophet: Any = None
    regressors: list[str] = field(default_factory=list)
    fitted_at: pd.Timestamp | None = None


@dataclass
class DemandModel:
    """A fitted forecaster; pass it to :func:`forecast_demand`."""

    config: ForecastConfig
    step: pd.Timedelta
    cutoff: pd.Timestamp  # trained on data strictly before this instant (UTC)
    stations: list[str] = field(default_factory=list)
    station_scores: dict[str, float] = field(default_factory=dict)
    stations_selected_at: pd.Timestamp | None = None
    heat_base: float = 0.0
    cool_base: float = 0.0
    components: dict[str, Component] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    residuals: pd.DataFrame | None = None  # rolling-origin forecasts inside the training span
    quantiles: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (n_buckets, 2) of q10/q90
    fit_seconds: float = 0.0
    calibration: str = "none"  # "rolling-origin", or "in-sample" when the history is too short
    issued: dict = field(default_factory=dict, repr=False)  # issue time -> component forecasts made

    @property
    def primary(self) -> str:
        """Name recorded in the ``model`` column when the full model serves a row."""
        used = [k for k, w in self.weights.items() if w > 0]
        if len(used) > 1:
            return "combined"
        return used[0] if used else "seasonal_naive"


# --------------------------------------------------------------------------------------------------
# Helpers on the regular grid
# --------------------------------------------------------------------------------------------------
def _step(data: pd.DataFrame) -> pd.Timedelta:
    if data.index.freq is not None:
        return pd.Timedelta(data.index.freq)
    d = np.diff(data.index.asi8[:1000])
    return pd.Timedelta(int(np.median(d)), unit="ns")


def _steps_per_day(step: pd.Timedelta) -> int:
    return max(1, round(DAY / step))


def _take(arr: np.ndarray, pos: np.ndarray) -> np.ndarray:
    ok = (pos >= 0) & (pos < len(arr))
    out = np.full(len(pos), np.nan)
    out[ok] = arr[pos[ok]]
    return out


def _window_stats(y: np.ndarray, end: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max of ``y[end - width : end]`` (NaN ignored) for each ``end``."""
    s = pd.Series(y)
    r = s.rolling(width, min_periods=max(1, width // 4))
    mean, mn, mx = r.mean().to_numpy(), r.min().to_numpy(), r.max().to_numpy()
    idx = end - 1
    return _take(mean, idx), _take(mn, idx), _take(mx, idx)


def _temperature(data: pd.DataFrame, stations: list[str]) -> pd.Series | None:
    if not stations:
        return None
    return data[stations].mean(axis=1, skipna=True)


def _issue_positions(index: pd.DatetimeIndex, issues: pd.DatetimeIndex) -> np.ndarray:
    return np.searchsorted(index.asi8, issues.asi8, side="left")


def _scale(mean7d: np.ndarray) -> np.ndarray:
    s = np.abs(mean7d)
    return np.where(np.isfinite(s) & (s > 0), s, np.nan)


# --------------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------------
def _design(
    model: DemandModel,
    data: pd.DataFrame,
    rows: np.ndarray,
    issues: np.ndarray,
    cal: pd.DataFrame | None = None,
    tfeat: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Features for (row, issue) position pairs on ``data``'s grid; only ``y`` before each issue is read."""
    cfg = model.config
    spd = _steps_per_day(model.step)
    y = data["y"].to_numpy(dtype=float)
    lead = rows - issues
    mean7d, _, _ = _window_stats(y, issues, 7 * spd)
    scale = _scale(mean7d)
    dsteps = spd * (lead // spd + 1)
    wsteps = 7 * spd * (lead // (7 * spd) + 1)
    mean24, min24, max24 = _window_stats(y, issues, spd)
    f: dict[str, np.ndarray] = {
        "lead_h": lead * (model.step / HOUR),
        "scale": scale,
        "lag_day": _take(y, rows - dsteps) / scale,
        "lag_day2": _take(y, rows - dsteps - spd) / scale,
        "lag_week": _take(y, rows - wsteps) / scale,
        "lag_week2": _take(y, rows - wsteps - 7 * spd) / scale,
        "y_last": _take(y, issues - 1) / scale,
        "mean24": mean24 / scale,
        "min24": min24 / scale,
        "max24": max24 / scale,
    }
    if cal is None:
        cal = calendar_features(data.index, cfg.tz, cfg.country, cfg.subdiv)
    for c in (
        "hour",
        "dow",
        "month",
        "doy",
        "holiday",
        "holiday_before",
        "holiday_after",
        "bridge",
        "day_type",
        "xmas",
        "day_hours",
    ):
        f[c] = cal[c].to_numpy()[rows]
    f["lagday_type"] = _take(cal["day_type"].to_numpy().astype(float), rows - dsteps)
    f["lagday_holiday"] = _take(cal["holiday"].to_numpy().astype(float), rows - dsteps)
    frame = pd.DataFrame(f)
    if model.stations:
        if tfeat is None:
            tfeat = temperature_features(
                _temperature(data, model.stations), model.step, cfg.tz, model.heat_base, model.cool_base
            )
        tf = tfeat.iloc[rows].reset_index(drop=True)
        tv = tfeat["t"].to_numpy()
        tf["t_lagday"] = _take(tv, rows - dsteps)
        tf["t_daymean_lagday"] = _take(tfeat["t_daymean"].to_numpy(), rows - dsteps)
        tf["t_minus_lagday"] = tf["t"] - tf["t_lagday"]
        tf["t_daymean_minus_lagday"] = tf["t_daymean"] - tf["t_daymean_lagday"]
        frame = pd.concat([frame, tf], axis=1)
    return frame


def _is_weather_feature(name: str) -> bool:
    return name == "t" or name.startswith("t_") or name in ("t2", "t3")


# Monotone transforms of other columns: the same splits for a tree, so left out of LightGBM (they stay
# in the feature frame for the linear models: Prophet's regressors, the vanilla benchmark).
TREE_REDUNDANT = ("scale", "t2", "t3", "t_hdh", "t_cdh", "t_day_hdh", "t_day_cdh")


def _feature_lists(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """LightGBM features with weather, and without (the weather-free fallback)."""
    cols = [c for c in frame.columns if c not in TREE_REDUNDANT]
    return cols, [c for c in cols if not _is_weather_feature(c)]


def _training_pairs(model: DemandModel, data: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(row, issue) position pairs for every daily issue in ``data`` and every lead in the horizon."""
    cfg = model.config
    spd = _steps_per_day(model.step)
    h_steps = max(1, round(cfg.horizon / model.step))
    issues = daily_issue_times(data.index[0], data.index[-1], cfg.issue_time, cfg.tz)
    ipos = np.unique(_issue_positions(data.index, issues))
    ipos = ipos[(ipos >= 7 * spd) & (ipos < len(data))]
    if not len(ipos):
        return np.array([], dtype=int), np.array([], dtype=int)
    rows_l, iss_l = [], []
    for k in range(int(np.ceil(h_steps / spd)) + 1):
        pos = np.arange(len(data))
        j = np.searchsorted(ipos, pos, side="right") - 1 - k
        ok = j >= 0
        lead = pos[ok] - ipos[j[ok]]
        keep = (lead >= 0) & (lead < h_steps)
        rows_l.append(pos[ok][keep])
        iss_l.append(ipos[j[ok]][keep])
    rows, iss = np.concatenate(rows_l), np.concatenate(iss_l)
    has_y = np.isfinite(data["y"].to_numpy()[rows])
    return rows[has_y], iss[has_y]


# --------------------------------------------------------------------------------------------------
# Component fitting
# --------------------------------------------------------------------------------------------------
def _fit_lgbm(
    x: pd.DataFrame, target: np.ndarray, features: list[str], cfg: ForecastConfig, weather: bool, rounds: int
) -> Component:
    import lightgbm as lgb

    params = {**DEFAULT_LGBM_PARAMS, **cfg.lgbm_params, "num_threads": cfg.threads, "seed": cfg.seed}
    ok = np.isfinite(target)
    ds = lgb.Dataset(x.loc[ok, features].to_numpy(dtype=np.float32), label=target[ok], free_raw_data=True)
    booster = lgb.train(params, ds, num_boost_round=rounds)
    return Component(kind="lgbm", weather=weather, booster=booster, features=features)


PROPHET_WEATHER = (
    "t_hdh",
    "t_cdh",
    "t_mean24h",
    "t_hdh_mean24h",
    "t_cdh_mean24h",
    "t_ewm6h",
    "t_daymax",
    "t_daymin",
)
PROPHET_LAGS = ("lag_day", "lag_week", "mean24")


def _prophet_frame(
    model: DemandModel, data: pd.DataFrame, rows: np.ndarray, x: pd.DataFrame, weather: bool
) -> pd.DataFrame:
    """Prophet's frame for design rows ``x`` (``rows`` on ``data``): local time as ``ds``, working-day
    flags for the conditional daily seasonality, lag regressors (in target units) and, with weather,
    degree hours (also restricted to daytime) and smoothed temperatures."""
    loc = data.index[rows].tz_convert(model.config.tz).tz_localize(None)
    df = pd.DataFrame({"ds": loc})
    working = (x["day_type"].to_numpy() == 0).astype(float)
    df["working"] = working
    df["nonworking"] = 1.0 - working
    scale = x["scale"].to_numpy()
    for c in PROPHET_LAGS:
        df[c] = x[c].to_numpy() * scale
    if weather:
        hour = x["hour"].to_numpy()
        daytime = ((hour >= 8) & (hour < 21)).astype(float)
        for c in PROPHET_WEATHER:
            df[c] = x[c].to_numpy()
        df["t_hdh_day"] = df["t_hdh"] * daytime
        df["t_cdh_day"] = df["t_cdh"] * daytime
    return df


def _fit_prophet(model: DemandModel, data: pd.DataFrame, rows: np.ndarray, x: pd.DataFrame) -> Component:
    """Prophet with flat growth (the lags carry the level), yearly (with a year of data), weekly and
    working-day/non-working-day daily seasonality, holidays, lag and temperature regressors."""
    from prophet import Prophet

    for name in ("cmdstanpy", "prophet", "prophet.plot"):
        logging.getLogger(name).setLevel(logging.WARNING)
    cfg = model.config
    weather = bool(model.stations)
    keep = data.index[rows] >= data.index[-1] - pd.Timedelta(days=cfg.prophet_train_days)
    rows, x = rows[keep], x[keep].reset_index(drop=True)
    df = _prophet_frame(model, data, rows, x, weather)
    df["y"] = data["y"].to_numpy()[rows]
    df = df.dropna()
    if len(df) > cfg.prophet_max_rows:  # Prophet's cost grows with rows; a random subsample keeps every hour
        keep = np.random.default_rng(cfg.seed).choice(len(df), cfg.prophet_max_rows, replace=False)
        df = df.iloc[np.sort(keep)]
    regs = [c for c in df.columns if c not in ("ds", "y", "working", "nonworking")]
    hol = holiday_dates(
        cfg.country, cfg.subdiv, list(range(int(df["ds"].dt.year.min()) - 1, int(df["ds"].dt.year.max()) + 3))
    )
    holidays_df = (
        pd.DataFrame(
            {"holiday": "holiday", "ds": pd.to_datetime(sorted(hol)), "lower_window": -1, "upper_window": 1}
        )
        if hol
        else None
    )
    m = Prophet(
        growth="flat",
        yearly_seasonality=False,
        weekly_seasonality=False,
        daily_seasonality=False,
        holidays=holidays_df,
        uncertainty_samples=0,
    )
    if (df["ds"].iloc[-1] - df["ds"].iloc[0]) >= pd.Timedelta(days=360):
        m.add_seasonality("yearly", period=365.25, fourier_order=6)
    m.add_seasonality("weekly", period=7, fourier_order=3)
    if model.step < DAY:
        m.add_seasonality("daily_working", period=1, fourier_order=6, condition_name="working")
        m.add_seasonality("daily_nonworking", period=1, fourier_order=6, condition_name="nonworking")
    for r in regs:
        m.add_regressor(r)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.fit(df)
    return Component(kind="prophet", weather=weather, prophet=m, regressors=regs, fitted_at=model.cutoff)


def _fit_components(
    model: DemandModel, hist: pd.DataFrame, previous: DemandModel | None = None
) -> dict[str, Component]:
    """Fit every configured component on ``hist`` (already cut at the model's cut-off). Prophet is
    re-used from ``previous`` while it is younger than ``prophet_refit_days``."""
    cfg = model.config
    if cfg.max_train_days:
        hist = hist[hist.index >= hist.index[-1] - pd.Timedelta(days=cfg.max_train_days) - LOOKBACK]
    cal = calendar_features(hist.index, cfg.tz, cfg.country, cfg.subdiv)
    tfeat = None
    if model.stations:
        tfeat = temperature_features(
            _temperature(hist, model.stations), model.step, cfg.tz, model.heat_base, model.cool_base
        )
    rows, iss = _training_pairs(model, hist)
    x = _design(model, hist, rows, iss, cal, tfeat)
    target = hist["y"].to_numpy()[rows] / x["scale"].to_numpy()
    full, noweather = _feature_lists(x)
    comps: dict[str, Component] = {}
    if np.isfinite(target).sum() < MIN_TRAIN_ROWS:  # e.g. an all-zero series has no scale to learn on
        return comps
    if "lgbm" in cfg.models:
        comps["lgbm"] = _fit_lgbm(x, target, full, cfg, weather=bool(model.stations), rounds=cfg.lgbm_rounds)
    if model.stations:
        comps["lgbm_noweather"] = _fit_lgbm(
            x, target, noweather, cfg, weather=False, rounds=cfg.fallback_rounds
        )
    if "prophet" in cfg.models:
        old = previous.components.get("prophet") if previous is not None else None
        if (
            old is not None
            and old.fitted_at is not None
            and old.weather == bool(model.stations)
            and previous.stations == model.stations
            and model.cutoff - old.fitted_at < pd.Timedelta(days=cfg.prophet_refit_days)
        ):
            comps["prophet"] = old
        else:
            comps["prophet"] = _fit_prophet(model, hist, rows, x)
    for c in comps.values():
        c.fitted_at = c.fitted_at or model.cutoff
    return comps


# --------------------------------------------------------------------------------------------------
# Prediction of every component for one issue
# --------------------------------------------------------------------------------------------------
def _horizon_frame(
    data: pd.DataFrame, issue: pd.Timestamp, step: pd.Timedelta, horizon: pd.Timedelta
) -> pd.DataFrame:
    """``data`` from ``issue - LOOKBACK`` to the end of the horizon on a regular grid, target masked
    from the issue time on; weather after the horizon is dropped."""
    end = issue + horizon
    start = issue - LOOKBACK
    part = data[(data.index >= start) & (data.index < end)]
    grid_start = (
        data.index[0] + ((start - data.index[0]) // step) * step if start > data.index[0] else data.index[0]
    )
    if len(part) and part.index[0] < grid_start:
        grid_start = part.index[0]
    grid = pd.date_range(grid_start, end - pd.Timedelta(1, "ns"), freq=step, name=data.index.name)
    part = part.reindex(grid)
    part.loc[part.index >= issue, "y"] = np.nan
    return part


def _predict_components(
    model: DemandModel | None,
    data: pd.DataFrame,
    issue: pd.Timestamp,
    cfg: ForecastConfig,
    step: pd.Timedelta,
) -> pd.DataFrame:
    """Per-row predictions of every component (NaN where unavailable) for one issue time."""
    part = _horizon_frame(data, issue, step, cfg.horizon)
    spd = _steps_per_day(step)
    ipos = int(np.searchsorted(part.index.asi8, issue.value, side="left"))
    rows = np.arange(ipos, len(part))
    iss = np.full(len(rows), ipos)
    y = part["y"].to_numpy()
    out = pd.DataFrame({"time": part.index[rows], "lead_steps": rows - ipos})
    mean7d, _, _ = _window_stats(y, iss, 7 * spd)
    out["scale"] = _scale(mean7d)
    lead = rows - iss
    wsteps = 7 * spd * (lead // (7 * spd) + 1)
    out["seasonal_naive"] = _take(y, rows - wsteps)
    cal = calendar_features(part.index, cfg.tz, cfg.country, cfg.subdiv)
    out["profile"] = _profile(part, ipos, rows, cal)
    if model is None or not model.components:
        return out
    tfeat = None
    if model.stations:
        tfeat = temperature_features(
            _temperature(part, model.stations), step, cfg.tz, model.heat_base, model.cool_base
        )
    x = _design(model, part, rows, iss, cal, tfeat)
    scale = x["scale"].to_numpy()
    lag_ok = np.isfinite(x["lag_day"].to_numpy()) & np.isfinite(x["lag_week"].to_numpy()) & np.isfinite(scale)
    weather_ok = np.isfinite(x["t"].to_numpy()) if model.stations else np.ones(len(rows), dtype=bool)
    for name, comp in model.components.items():
        pred = np.full(len(rows), np.nan)
        if comp.kind == "lgbm":
            ok = lag_ok & (weather_ok if comp.weather else True)
            if ok.any():
                pred[ok] = (
                    comp.booster.predict(x.loc[ok, comp.features].to_numpy(dtype=np.float32)) * scale[ok]
                )
        else:
            df = _prophet_frame(model, part, rows, x, comp.weather)
            ok = (
                lag_ok
                & (weather_ok if comp.weather else True)
                & df[comp.regressors].notna().all(axis=1).to_numpy()
            )
            if ok.any():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    pred[ok] = comp.prophet.predict(df[ok].reset_index(drop=True))["yhat"].to_numpy()
        out[name] = pred
    return out


def _profile(part: pd.DataFrame, ipos: int, rows: np.ndarray, cal: pd.DataFrame) -> np.ndarray:
    """Mean of the history before the issue (the lookback, about two weeks) by (working/non-working
    day, local time of day); by time of day alone, or the overall mean, where that is empty."""
    y = part["y"].iloc[:ipos]
    if y.notna().sum() == 0:
        return np.full(len(rows), np.nan)
    kind = np.minimum(cal["day_type"].to_numpy(), 1)
    hour = cal["hour"].to_numpy()
    by_both = y.groupby([kind[:ipos], hour[:ipos]]).mean()
    by_hour = y.groupby(hour[:ipos]).mean()
    overall = float(y.mean())
    v1 = by_both.reindex(pd.MultiIndex.from_arrays([kind[rows], hour[rows]])).to_numpy()
    v2 = by_hour.reindex(hour[rows]).to_numpy()
    return np.where(np.isfinite(v1), v1, np.where(np.isfinite(v2), v2, overall))


# --------------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------------
def _bucket(lead_steps: np.ndarray, h_steps: int, n_buckets: int) -> np.ndarray:
    return np.minimum((np.asarray(lead_steps) * n_buckets) // max(h_steps, 1), n_buckets - 1)


def _quantile_table(res: pd.DataFrame, pred: np.ndarray, h_steps: int, n_buckets: int) -> np.ndarray | None:
    """(n_buckets, 2) table of the 10 % and 90 % quantiles of normalised residuals."""
    r = (res["y"].to_numpy() - pred) / res["scale"].to_numpy()
    ok = np.isfinite(r)
    if ok.sum() < 20:
        return None
    b = _bucket(res["lead_steps"].to_numpy(), h_steps, n_buckets)
    pooled = np.quantile(r[ok], [0.1, 0.9])
    table = np.tile(pooled, (n_buckets, 1))
    for k in range(n_buckets):
        sel = ok & (b == k)
        if sel.sum() >= 30:
            table[k] = np.quantile(r[sel], [0.1, 0.9])
    return table


def _combine(frame: pd.DataFrame, weights: dict[str, float]) -> np.ndarray:
    out = np.zeros(len(frame))
    for k, w in weights.items():
        if w > 0:
            out = out + w * frame[k].to_numpy()
    return out


def _choose_weights(res: pd.DataFrame, models: list[str]) -> dict[str, float]:
    """Convex weights minimising the normalised MAE of rolling-origin forecasts (grid of 0.05)."""
    if len(models) == 1:
        return {models[0]: 1.0}
    a, b = models
    sub = res[[a, b, "y", "scale"]].dropna()
    if len(sub) < 20:
        return {a: 0.5, b: 0.5}
    best_w, best = 1.0, np.inf
    for w in np.linspace(0, 1, 21):
        err = np.mean(np.abs(sub["y"] - w * sub[a] - (1 - w) * sub[b]) / sub["scale"])
        if err < best - 1e-12:
            best_w, best = float(w), err
    return {a: best_w, b: 1.0 - best_w}


def _rolling_forecasts(
    model: DemandModel, data: pd.DataFrame, start: pd.Timestamp, cutoff: pd.Timestamp
) -> pd.DataFrame:
    """Component forecasts of ``model`` for every daily issue in [start, cutoff - horizon], with
    actuals; every target lies before ``cutoff``."""
    cfg = model.config
    issues = daily_issue_times(start, cutoff - cfg.horizon, cfg.issue_time, cfg.tz)
    frames = []
    for issue in issues:
        fc = model.issued.get(issue)
        if fc is None:
            fc = _predict_components(model, data, issue, cfg, model.step)
        fc = fc.copy()
        fc["issue"] = issue
        frames.append(fc)
    if not frames:
        return pd.DataFrame()
    res = pd.concat(frames, ignore_index=True)
    res = res[res["time"] < cutoff]
    res["y"] = data["y"].reindex(pd.DatetimeIndex(res["time"])).to_numpy()
    return res


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------
def fit_demand_model(
    data: pd.DataFrame,
    config: ForecastConfig,
    cutoff: pd.Timestamp | None = None,
    previous: DemandModel | None = None,
) -> DemandModel:
    """Fit the forecaster on ``data`` strictly before ``cutoff`` (default: after the last row).

    With too little history (fewer than ``min_train_days`` days with a target) the model has no
    components and forecasts fall back to the seasonal naive / profile. The combination weights and
    quantiles come from rolling-origin forecasts over the last ``val_days`` before the cut-off: the
    ones ``previous`` (the model of the last refit) makes for the days since its own cut-off, kept
    in a rolling buffer, or else ``warmup_folds`` extra fits on earlier cut-offs.
    """
    t0 = time.perf_counter()
    cfg = config
    missing = [c for c in ("y", *cfg.weather_cols) if c not in data.columns]
    if missing:
        raise KeyError(f"missing column(s): {', '.join(missing)}")
    step = _step(data)
    if cutoff is None:
        cutoff = data.index[-1] + step
    hist = data[data.index < cutoff]
    model = DemandModel(config=cfg, step=step, cutoff=cutoff)
    n_days = hist["y"].notna().sum() * step / DAY if len(hist) else 0.0
    if n_days < cfg.min_train_days:
        model.fit_seconds = time.perf_counter() - t0
        return model
    # Weather stations: learnt by CV inside the training span; re-used between refits for a while.
    if cfg.weather_cols:
        usable = [c for c in cfg.weather_cols if hist[c].notna().any()]
        if (
            previous is not None
            and previous.stations
            and previous.stations_selected_at is not None
            and cutoff - previous.stations_selected_at < pd.Timedelta(days=cfg.station_reselect_days)
            and all(s in usable for s in previous.stations)
        ):
            model.stations, model.station_scores = previous.stations, previous.station_scores
            model.stations_selected_at = previous.stations_selected_at
        elif usable:
            model.stations, model.station_scores = select_stations(
                hist, usable, cfg.tz, step, cfg.station_max_k
            )
            model.stations_selected_at = cutoff
        if model.stations:
            model.heat_base, model.cool_base = balance_point(_temperature(hist, model.stations), hist["y"])
    model.components = _fit_components(model, hist, previous)

    # Rolling-origin residuals inside the training span.
    val_start = cutoff - pd.Timedelta(days=cfg.val_days)
    parts = []
    if (
        previous is not None
        and previous.components
        and previous.residuals is not None
        and previous.cutoff < cutoff
    ):
        parts.append(previous.residuals)
        parts.append(_rolling_forecasts(previous, hist, previous.cutoff, cutoff))
    else:
        folds = max(1, cfg.warmup_folds)
        edges = [val_start + (cutoff - val_start) * i / folds for i in range(folds + 1)]
        for a, b in itertools.pairwise(edges):
            fold = DemandModel(
                config=cfg,
                step=step,
                cutoff=a,
                stations=model.stations,
                heat_base=model.heat_base,
                cool_base=model.cool_base,
            )
            fold_hist = hist[hist.index < a]
            if fold_hist["y"].notna().sum() * step / DAY < cfg.min_train_days:
                continue
            fold.components = _fit_components(fold, fold_hist)
            parts.append(_rolling_forecasts(fold, hist[hist.index < b], a, b))
    parts = [p for p in parts if p is not None and len(p)]
    model.calibration = "rolling-origin"
    if not parts and model.components:
        # History too short for a validation fold: in-sample forecasts of the final model (optimistic).
        first = max(val_start, hist.index[0] + pd.Timedelta(days=8))
        parts = [_rolling_forecasts(model, hist, first, cutoff)]
        model.calibration = "in-sample"
    parts = [p for p in parts if p is not None and len(p)]
    res = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if len(res):
        res = res[(res["time"] >= val_start) & (res["time"] < cutoff)].reset_index(drop=True)
    model.residuals = res
    _calibrate(model)
    model.fit_seconds = time.perf_counter() - t0
    return model


def _calibrate(model: DemandModel) -> None:
    cfg = model.config
    res = model.residuals
    h_steps = max(1, round(cfg.horizon / model.step))
    mains = [m for m in cfg.models if m in model.components]
    if res is None or not len(res) or any(m not in res for m in mains):
        model.weights = {m: 1.0 / len(mains) for m in mains}
        return
    model.weights = _choose_weights(res, mains)
    tables = {"primary": _quantile_table(res, _combine(res, model.weights), h_steps, cfg.n_buckets)}
    for name in CHAIN:
        if name in res:
            tables[name] = _quantile_table(res, res[name].to_numpy(), h_steps, cfg.n_buckets)
    model.quantiles = {k: v for k, v in tables.items() if v is not None}


def _fallback_quantiles(
    data: pd.DataFrame, issue: pd.Timestamp, cfg: ForecastConfig, step: pd.Timedelta, name: str
) -> np.ndarray | None:
    """Residual quantiles of the seasonal naive/profile over the history before ``issue`` (used when
    the model has no rolling-origin residuals for them)."""
    spd = _steps_per_day(step)
    hist = data[(data.index < issue) & (data.index >= issue - pd.Timedelta(days=cfg.val_days) - LOOKBACK)]
    y = hist["y"].to_numpy()
    if name == "seasonal_naive":
        pred = _take(y, np.arange(len(y)) - 7 * spd)
    else:
        pred = np.full(len(y), np.nanmean(y) if np.isfinite(y).any() else np.nan)
        cal = calendar_features(hist.index, cfg.tz, cfg.country, cfg.subdiv)
        prof = (
            pd.Series(y)
            .groupby([np.minimum(cal["day_type"].to_numpy(), 1), cal["hour"].to_numpy()])
            .transform("mean")
        )
        pred = np.where(np.isfinite(prof.to_numpy()), prof.to_numpy(), pred)
    scale = np.nanmean(np.abs(y)) if np.isfinite(y).any() else np.nan
    if not np.isfinite(scale) or scale == 0:
        scale = 1.0
    r = (y - pred) / scale
    r = r[np.isfinite(r)]
    if len(r) < 10:
        return None
    return np.tile(np.quantile(r, [0.1, 0.9]), (cfg.n_buckets, 1))


def forecast_demand(
    model: DemandModel | None,
    data: pd.DataFrame,
    issue_time: pd.Timestamp,
    config: ForecastConfig | None = None,
) -> pd.DataFrame:
    """P10/P50/P90 for every time step in ``[issue_time, issue_time + horizon)``.

    ``data`` is the regular UTC grid (``y`` plus weather columns); the target is read only before
    ``issue_time`` and the weather only up to the end of the horizon. Missing rows are allowed (the
    horizon is always complete). Returns columns ``time`` (UTC), ``issue_time``, ``lead_h``, ``p10``,
    ``p50``, ``p90`` and ``model`` (which model of the fallback chain served the row).
    ``model=None`` forecasts with the seasonal naive / profile only (``config`` is then required).
    """
    cfg = model.config if model is not None else config
    if cfg is None:
        raise ValueError("forecast_demand needs a fitted model or a ForecastConfig")
    issue = pd.Timestamp(issue_time)
    issue = issue.tz_localize("UTC") if issue.tzinfo is None else issue.tz_convert("UTC")
    step = model.step if model is not None else _step(data)
    if model is not None and issue < model.cutoff:
        raise ValueError(f"issue time {issue} is before the model's training cut-off {model.cutoff}")
    comp = _predict_components(model, data, issue, cfg, step)
    if model is not None and model.components:
        # Remembered so that the next refit scores these forecasts as issued (rolling-origin residuals).
        model.issued[issue] = comp
    h_steps = max(1, round(cfg.horizon / step))
    bucket = _bucket(comp["lead_steps"].to_numpy(), h_steps, cfg.n_buckets)
    n = len(comp)
    p50 = np.full(n, np.nan)
    lo = np.full(n, np.nan)
    hi = np.full(n, np.nan)
    served = np.full(n, "", dtype=object)
    scale = comp["scale"].to_numpy()
    fallback_scale = (
        np.nanmean(np.abs(data.loc[data.index < issue, "y"].to_numpy()[-7 * _steps_per_day(step) :]))
        if (data.index < issue).any()
        else np.nan
    )
    scale = np.where(
        np.isfinite(scale),
        scale,
        fallback_scale if np.isfinite(fallback_scale) and fallback_scale > 0 else 1.0,
    )

    chain: list[tuple[str, np.ndarray, np.ndarray | None]] = []
    if model is not None and model.components and model.weights:
        cols = [k for k, w in model.weights.items() if w > 0]
        if all(c in comp for c in cols):
            pred = _combine(comp, model.weights)
            pred = np.where(np.all(np.isfinite(comp[cols].to_numpy()), axis=1), pred, np.nan)
            chain.append((model.primary, pred, model.quantiles.get("primary")))
    if model is not None and "lgbm_noweather" in comp:
        chain.append(
            ("lgbm_noweather", comp["lgbm_noweather"].to_numpy(), model.quantiles.get("lgbm_noweather"))
        )
    for name in ("seasonal_naive", "profile"):
        q = model.quantiles.get(name) if model is not None else None
        if q is None:
            q = _fallback_quantiles(data, issue, cfg, step, name)
        chain.append((name, comp[name].to_numpy(), q))
    for name, pred, q in chain:
        take = (served == "") & np.isfinite(pred)
        if not take.any():
            continue
        served[take] = name
        p50[take] = pred[take]
        if q is not None:
            lo[take] = pred[take] + q[bucket[take], 0] * scale[take]
            hi[take] = pred[take] + q[bucket[take], 1] * scale[take]
        else:
            lo[take] = hi[take] = pred[take]
    if (served == "").any():
        raise ValueError("no history before the issue time: cannot forecast")
    return pd.DataFrame(
        {
            "time": comp["time"].to_numpy(),
            "issue_time": issue,
            "lead_h": comp["lead_steps"].to_numpy() * (step / HOUR),
            "p10": np.minimum(lo, p50),
            "p50": p50,
            "p90": np.maximum(hi, p50),
            "model": served,
        }
    )


# --------------------------------------------------------------------------------------------------
# Baselines (used by the backtest)
# --------------------------------------------------------------------------------------------------
@dataclass
class VanillaModel:
    """Tao Hong's vanilla benchmark fitted by OLS, with empirical residual quantiles."""

    beta: np.ndarray
    t_center: float
    t_scale: float
    stations: list[str]
    step: pd.Timedelta
    tz: str
    q10: float
    q90: float


def fit_vanilla(
    data: pd.DataFrame,
    stations: list[str],
    tz: str,
    cutoff: pd.Timestamp | None = None,
    max_train_days: int | None = 1095,
    val_days: int = 56,
) -> VanillaModel | None:
    """OLS fit of ``trend + month + weekday x hour + hour x (T, T^2, T^3) + month x (T, T^2, T^3)`` on the
    data before ``cutoff``, with T the mean of ``stations``; ``None`` without weather or data."""
    if not stations:
        return None
    step = _step(data)
    hist = data[data.index < cutoff] if cutoff is not None else data
    if max_train_days:
        hist = hist[hist.index >= hist.index[-1] - pd.Timedelta(days=max_train_days)]
    t = _temperature(hist, stations).to_numpy()
    y = hist["y"].to_numpy()
    ok = np.isfinite(t) & np.isfinite(y)
    if ok.sum() < 200:
        return None
    idx = hist.index[ok]
    c, s = float(np.mean(t[ok])), float(np.std(t[ok])) or 1.0
    x = vanilla_design(idx, t[ok], tz, c, s, step)
    beta = ols_fit(x, y[ok])
    resid = y[ok] - x @ beta
    recent = idx >= idx[-1] - pd.Timedelta(days=val_days)
    q10, q90 = np.quantile(resid[recent], [0.1, 0.9])
    return VanillaModel(
        beta=beta,
        t_center=c,
        t_scale=s,
        stations=list(stations),
        step=step,
        tz=tz,
        q10=float(q10),
        q90=float(q90),
    )


def forecast_vanilla(
    model: VanillaModel, data: pd.DataFrame, issue_time: pd.Timestamp, horizon: pd.Timedelta
) -> pd.DataFrame:
    """Vanilla forecast for ``[issue_time, issue_time + horizon)``; columns ``time``, ``p10``, ``p50``, ``p90``."""
    times = pd.date_range(issue_time, issue_time + horizon - pd.Timedelta(1, "ns"), freq=model.step)
    t = _temperature(data.reindex(times), model.stations).to_numpy()
    x = vanilla_design(
        times, np.nan_to_num(t, nan=model.t_center), model.tz, model.t_center, model.t_scale, model.step
    )
    p50 = np.where(np.isfinite(t), x @ model.beta, np.nan)
    return pd.DataFrame({"time": times, "p10": p50 + model.q10, "p50": p50, "p90": p50 + model.q90})


def seasonal_naive_forecast(
    data: pd.DataFrame, issue_time: pd.Timestamp, horizon: pd.Timedelta, val_days: int = 56
) -> pd.DataFrame:
    """Same time one week earlier (further back for horizons beyond a week), with P10/P90 from the
    empirical quantiles of its errors over the ``val_days`` before the issue."""
    step = _step(data)
    spd = _steps_per_day(step)
    times = pd.date_range(issue_time, issue_time + horizon - pd.Timedelta(1, "ns"), freq=step)
    lead = np.arange(len(times))
    week = 7 * spd * (lead // (7 * spd) + 1)
    y = data["y"]
    past = y.reindex(times - week * step).to_numpy()
    hist = y[(y.index < issue_time) & (y.index >= issue_time - pd.Timedelta(days=val_days))]
    err = (hist - y.reindex(hist.index - 7 * DAY).to_numpy()).dropna()
    q10, q90 = np.quantile(err, [0.1, 0.9]) if len(err) >= 10 else (0.0, 0.0)
    return pd.DataFrame({"time": times, "p10": past + q10, "p50": past, "p90": past + q90})
