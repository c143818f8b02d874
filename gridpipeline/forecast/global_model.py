"""One LightGBM model for many demand series (feeders, zones, the system), with P10/P50/P90.

The per-series ensemble in ``demand.py`` (Prophet + LightGBM, weights by backtest skill) is what the
day-ahead backtests score; it costs seconds to minutes per series. The operational loop has to
forecast every feeder every 5 minutes, so it uses one *global* model over all series: each sample is
(series, issue time, lead) with scale-free features,

* the lead (steps ahead) and the calendar of the target time (time of day, weekday, holiday,
  season), in the grid's local time so DST shifts the daily shape correctly;
* the series' own history relative to its scale (mean of the last 7 days before issue): the last
  observation, the same time one day and one week before the target, the last day's mean, and
  those seasonal values moved by today's departure from them at the issue time;
* weather at the target time (the forecast of it when issued live), plus heating/cooling degrees;
* the series id as a categorical feature,

and the target is the value divided by the scale. Three LightGBM models (quantile loss at 0.1, 0.5
and 0.9) give the quantiles; quantile boosting tends to draw the band too narrow, so the last
``calib_days`` of the span are held out and the band is widened by split-conformal calibration
(per lead bucket) to hold ``target_coverage`` of the outcomes. A second set without weather
features serves when the weather is missing. The fallback chain per row: ``global`` -> ``global_noweather`` -> ``seasonal_naive`` ->
``profile``; the ``model`` column says which served each value.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from gridpipeline.forecast.features import holiday_dates

QUANTILES = (0.1, 0.5, 0.9)


@dataclass(frozen=True)
class GlobalConfig:
    step: pd.Timedelta = pd.Timedelta(hours=1)
    horizon: pd.Timedelta = pd.Timedelta(hours=24)
    weather_cols: tuple[str, ...] = ()
    tz: str = "UTC"
    country: str | None = None
    subdiv: str | None = None     # holiday subdivision (e.g. VIC)
    issue_stride: pd.Timedelta = pd.Timedelta(hours=6)
    train_days: int = 90
    max_rows: int = 600_000
    rounds: int = 200
    learning_rate: float = 0.08
    num_leaves: int = 63
    balance_point: float = 18.0   # degrees for heating/cooling degrees (units of the weather column)
    calib_days: int = 7           # last days of the span held out to calibrate the P10-P90 band
    target_coverage: float = 0.8  # P10-P90 should hold 80 % of the outcomes
    calib_buckets: int = 4        # lead buckets with their own band correction
    #: LightGBM's threads. 1: on a busy machine OpenMP threads that compete with another process spin
    #: (forecast.deployed); 0 (all cores) only on a quiet one, as ``bench forecast`` runs
    threads: int = 1
    seed: int = 0
    # Richer inputs (the deployed configuration turns them on; the defaults keep the original set):
    # thermal inertia of the temperature (trailing means, the local day's max/min/mean, yesterday's),
    # its change against the lag day, the day type of the target and of its lag days, neighbours of
    # holidays, and the day-before-yesterday lag.
    rich_features: bool = False
    noweather_rounds: int | None = None  # rounds of the weather-free fallback models (default: rounds)
    band_rounds: int | None = None       # at most this many rounds for the P10/P90 models
    median_on_all: bool = False          # the P50 model learns from the calibration days too
    min_data_in_leaf: int = 50
    feature_fraction: float = 0.9
    scale_days: int = 7                  # the series' scale: its mean over this many days before issue

    @property
    def h_steps(self) -> int:
        return int(self.horizon / self.step)

    @property
    def day_steps(self) -> int:
        return int(pd.Timedelta(days=1) / self.step)


@dataclass
class GlobalModel:
    config: GlobalConfig
    series: list[str]
    models: dict[str, list[Any]] = field(default_factory=dict)  # "weather"/"noweather" -> [q10, q50, q90]
    calibration: dict[str, np.ndarray] = field(default_factory=dict)  # variant -> band widening per lead bucket
    features: dict[str, list[str]] = field(default_factory=dict)
    train_seconds: float = 0.0
    train_rows: int = 0


def _calendar(times: pd.DatetimeIndex, cfg: GlobalConfig) -> pd.DataFrame:
    local = times.tz_convert(cfg.tz) if times.tz is not None else times.tz_localize("UTC").tz_convert(cfg.tz)
    years = sorted(set(local.year))
    hol = holiday_dates(cfg.country, cfg.subdiv, [years[0] - 1, years[-1] + 1]) if cfg.country and len(years) else frozenset()
    doy = local.dayofyear.to_numpy()
    out = pd.DataFrame({
        "tod": (local.hour * 60 + local.minute).to_numpy() / 1440.0,
        "dow": local.dayofweek.to_numpy(),
        "holiday": np.array([d in hol for d in local.date], dtype=np.int8),
        "doy_sin": np.sin(2 * np.pi * doy / 365.25),
        "doy_cos": np.cos(2 * np.pi * doy / 365.25),
    })
    if cfg.rich_features:
        day = pd.DatetimeIndex(local.tz_localize(None).normalize())
        hol_idx = pd.DatetimeIndex(sorted(hol)) if hol else pd.DatetimeIndex([])
        is_h = out["holiday"].to_numpy().astype(bool)
        dow = out["dow"].to_numpy()
        out["day_type"] = np.where((dow == 6) | is_h, 2, np.where(dow == 5, 1, 0)).astype(np.int8)
        out["holiday_before"] = day.isin(hol_idx + pd.Timedelta(days=-1)).astype(np.int8)  # tomorrow is one
        out["holiday_after"] = day.isin(hol_idx + pd.Timedelta(days=1)).astype(np.int8)   # yesterday was one
        xmas = pd.DatetimeIndex(pd.to_datetime(pd.DataFrame({"year": day.year, "month": 12, "day": 25})))
        dx = np.asarray((day - xmas).days)
        dx = np.where(dx < -180, dx + 365, dx)
        out["xmas"] = np.where(np.abs(dx) <= 10, dx, 11).astype(np.int8)
    out.attrs["times"] = times
    return out


#: temperature features of the rich set, per grid time (trailing windows in hours)
_TEMP_MEANS = (3, 6, 24, 72)


def _temperature_table(t: np.ndarray, times: pd.DatetimeIndex, cfg: GlobalConfig) -> pd.DataFrame:
    """Thermal-inertia features of the first weather column on the grid: trailing means, exponential
    smoothing, and the local day's max/min/mean with yesterday's. Missing values stay missing; the
    windows use what they have."""
    ts = pd.Series(t, index=times)
    out = {}
    for h in _TEMP_MEANS:
        n = max(1, int(pd.Timedelta(hours=h) / cfg.step))
        out[f"t_mean{h}h"] = ts.rolling(n, min_periods=max(1, n // 3)).mean().to_numpy()
    out["t_ewm12h"] = ts.ewm(halflife=max(1, int(pd.Timedelta(hours=12) / cfg.step)), ignore_na=True).mean().to_numpy()
    day = times.tz_convert(cfg.tz).tz_localize(None).normalize()
    g = ts.groupby(day)
    daily = pd.DataFrame({"max": g.max(), "min": g.min(), "mean": g.mean()})
    cur, prev = daily.reindex(day), daily.reindex(day - pd.Timedelta(days=1))
    out["t_daymax"], out["t_daymin"], out["t_daymean"] = (cur[c].to_numpy() for c in ("max", "min", "mean"))
    out["t_prevdaymax"], out["t_prevdaymean"] = prev["max"].to_numpy(), prev["mean"].to_numpy()
    return pd.DataFrame(out)


def _design(y: np.ndarray, weather: np.ndarray | None, cal: pd.DataFrame, issues: np.ndarray, cfg: GlobalConfig,
            with_weather: bool) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows for every (issue, lead, series): features, target index, series index, scale, issue index."""
    T, S = y.shape
    H, D = cfg.h_steps, cfg.day_steps
    csum = np.vstack([np.zeros((1, S)), np.nancumsum(y, axis=0)])
    ccount = np.vstack([np.zeros((1, S)), np.cumsum(np.isfinite(y), axis=0)])

    def window_mean(end: np.ndarray, width: int) -> np.ndarray:
        lo = np.clip(end - width, 0, T)
        n = ccount[end] - ccount[lo]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, (csum[end] - csum[lo]) / np.maximum(n, 1), np.nan)

    scale = window_mean(issues, cfg.scale_days * D)     # (I, S)
    scale = np.where(np.abs(scale) > 1e-9, np.abs(scale), np.nan)
    last_day = window_mean(issues, D) / scale
    last = y[np.clip(issues - 1, 0, T - 1)] / scale      # (I, S)
    leads = np.arange(1, H + 1)
    tgt = issues[:, None] + leads[None, :] - 1          # (I, H)
    I = len(issues)

    def lag(k: int) -> np.ndarray:
        idx = tgt - k
        ok = (idx >= 0) & (idx < T)
        v = y[np.clip(idx, 0, T - 1)]                    # (I, H, S)
        return np.where(ok[:, :, None], v, np.nan) / scale[:, None, :]

    y_day, y_week = lag(D), lag(7 * D)
    # the seasonal value moved by today's departure from it at the issue: persistence at short
    # leads, seasonality later (a tree cannot draw the identity through y_last on its own)
    last_d = y[np.clip(issues - 1 - D, 0, T - 1)] / scale
    last_w = y[np.clip(issues - 1 - 7 * D, 0, T - 1)] / scale
    adj_day = y_day + (last - last_d)[:, None, :]
    adj_week = y_week + (last - last_w)[:, None, :]
    n = I * H * S
    cols = {
        "lead": np.broadcast_to(leads[None, :, None], (I, H, S)).reshape(n),
        "series": np.broadcast_to(np.arange(S)[None, None, :], (I, H, S)).reshape(n),
        "y_last": np.broadcast_to(last[:, None, :], (I, H, S)).reshape(n),
        "y_last_day": np.broadcast_to(last_day[:, None, :], (I, H, S)).reshape(n),
        "y_day": y_day.reshape(n),
        "y_week": y_week.reshape(n),
        "adj_day": adj_day.reshape(n),
        "adj_week": adj_week.reshape(n),
    }
    if cfg.rich_features:
        cols["y_day2"] = lag(2 * D).reshape(n)
        lo_hi = _window_min_max(y, issues, D)
        cols["y_min_day"] = np.broadcast_to((lo_hi[0] / scale)[:, None, :], (I, H, S)).reshape(n)
        cols["y_max_day"] = np.broadcast_to((lo_hi[1] / scale)[:, None, :], (I, H, S)).reshape(n)
    tg = np.broadcast_to(tgt[:, :, None], (I, H, S)).reshape(n)
    tg_c = np.clip(tg, 0, len(cal) - 1)
    for c in cal.columns:
        cols[c] = cal[c].to_numpy()[tg_c]
    if cfg.rich_features:
        dt = cal["day_type"].to_numpy()
        cols["day_type_lagday"] = dt[np.clip(tg - D, 0, len(cal) - 1)]
        cols["day_type_lagday2"] = dt[np.clip(tg - 2 * D, 0, len(cal) - 1)]
    if with_weather and weather is not None:
        for k, name in enumerate(cfg.weather_cols):
            w = weather[tg_c, k]
            cols[f"w_{name}"] = w
            if k == 0:
                cols["hdd"] = np.maximum(cfg.balance_point - w, 0)
                cols["cdd"] = np.maximum(w - cfg.balance_point, 0)
                if cfg.rich_features:
                    times = cal.attrs.get("times")
                    tt = _temperature_table(weather[:, 0], times, cfg)
                    for c in tt.columns:
                        cols[c] = tt[c].to_numpy()[tg_c]
                    back = np.clip(tg - D, 0, len(cal) - 1)
                    # the change since the lag day, against which y_day is measured
                    cols["t_minus_lagday"] = w - weather[back, 0]
                    cols["t_daymean_minus_lagday"] = cols["t_daymean"] - tt["t_daymean"].to_numpy()[back]
    X = pd.DataFrame(cols)
    X["series"] = X["series"].astype(pd.CategoricalDtype(range(S)))
    sidx = cols["series"]
    sc = np.broadcast_to(scale[:, None, :], (I, H, S)).reshape(n)
    iidx = np.broadcast_to(np.arange(I)[:, None, None], (I, H, S)).reshape(n)
    return X, tg, sidx, sc, iidx


def _window_min_max(y: np.ndarray, ends: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of ``y[end - width : end]`` (NaN ignored) per end and series: (len(ends), S) each."""
    r = pd.DataFrame(y).rolling(width, min_periods=max(1, width // 4))
    mn, mx = r.min().to_numpy(), r.max().to_numpy()
    idx = ends - 1
    ok = (idx >= 0)[:, None]
    idx = np.clip(idx, 0, len(y) - 1)
    return np.where(ok, mn[idx], np.nan), np.where(ok, mx[idx], np.nan)


def _as_arrays(y: pd.DataFrame, weather: pd.DataFrame | None, cfg: GlobalConfig):
    w = None
    if cfg.weather_cols and weather is not None:
        w = weather.reindex(y.index)[list(cfg.weather_cols)].to_numpy(dtype=float)
    return y.to_numpy(dtype=float), w


def _lead_bucket(lead: np.ndarray, cfg: GlobalConfig) -> np.ndarray:
    return np.minimum((lead - 1) * cfg.calib_buckets // max(cfg.h_steps, 1), cfg.calib_buckets - 1)


def fit_global(y: pd.DataFrame, weather: pd.DataFrame | None, config: GlobalConfig, end: pd.Timestamp | None = None
               ) -> GlobalModel:
    """Fit on ``y`` (regular UTC index x one column per series) up to ``end`` (default: all)."""
    import lightgbm as lgb

    t0 = time.perf_counter()
    cfg = config
    if end is not None:
        y = y[y.index < end]
    y = y.iloc[-(cfg.train_days + 8) * cfg.day_steps:]
    Y, W = _as_arrays(y, weather, cfg)
    cal = _calendar(y.index, cfg)
    stride = max(1, int(cfg.issue_stride / cfg.step))
    first = 7 * cfg.day_steps + 1
    issues = np.arange(first, len(y) - cfg.h_steps + 1, stride)
    if not len(issues):
        raise ValueError(f"need at least {first + cfg.h_steps} steps of history to fit, got {len(y)}")
    model = GlobalModel(cfg, [str(c) for c in y.columns])
    rng = np.random.default_rng(cfg.seed)
    variants = ["weather", "noweather"] if W is not None else ["noweather"]
    # split conformal: the issues whose targets fall in the last calib_days calibrate the band
    calib_issue = issues >= len(y) - cfg.calib_days * cfg.day_steps - cfg.h_steps if cfg.calib_days else \
        np.zeros(len(issues), bool)
    if calib_issue.all():
        calib_issue[:] = False
    # Issues every issue_stride cover all leads sparsely; the first hour of leads, where the last
    # observation dominates, gets issues at every step so the trees see enough of it.
    short_h = min(cfg.h_steps, max(1, int(pd.Timedelta(hours=1) / cfg.step)))
    short_cfg = dataclasses.replace(cfg, horizon=short_h * cfg.step)
    dense = np.arange(first, len(y) - short_h + 1)
    # The rows are subsampled to max_rows anyway; sample the issues first (twice what the rows need,
    # every calibration issue kept) so the design never holds more: two years at the live 5-minute
    # step over a handful of zones would otherwise build ~25M rows (several GiB) to keep 250k.
    S = max(1, Y.shape[1])
    budget = 2 * cfg.max_rows // (cfg.h_steps * S)
    if len(issues) > budget:
        pick = np.flatnonzero(~calib_issue)
        keep = calib_issue.copy()
        keep[np.sort(rng.choice(pick, min(len(pick), max(1, budget - int(calib_issue.sum()))), replace=False))] = True
        issues, calib_issue = issues[keep], calib_issue[keep]
    d_budget = cfg.max_rows // (short_h * S)
    if len(dense) > d_budget:
        dense = np.sort(rng.choice(dense, d_budget, replace=False))
    dense_cal = dense >= len(y) - cfg.calib_days * cfg.day_steps - short_h if cfg.calib_days else \
        np.zeros(len(dense), bool)
    for variant in variants:
        X, tg, _, sc, iidx = _design(Y, W, cal, issues, cfg, variant == "weather")
        in_cal = calib_issue[iidx]
        if short_h < cfg.h_steps and len(dense):
            Xd, tgd, _, scd, iidd = _design(Y, W, cal, dense, short_cfg, variant == "weather")
            X = pd.concat([X, Xd], ignore_index=True)
            X["series"] = X["series"].astype(pd.CategoricalDtype(range(Y.shape[1])))
            tg, sc, in_cal = np.r_[tg, tgd], np.r_[sc, scd], np.r_[in_cal, dense_cal[iidd]]
        target = Y[tg, X["series"].cat.codes.to_numpy()] / sc
        ok = np.isfinite(target) & np.isfinite(sc)
        rows = np.flatnonzero(ok & ~in_cal)
        if len(rows) > cfg.max_rows:
            rows = np.sort(rng.choice(rows, cfg.max_rows, replace=False))
        # the median may learn from the calibration days too (the most recent ones): only the band's
        # models must not have seen them
        rows50 = np.flatnonzero(ok) if cfg.median_on_all else rows
        if len(rows50) > cfg.max_rows:
            rows50 = np.sort(rng.choice(rows50, cfg.max_rows, replace=False))
        model.features[variant] = list(X.columns)
        fitted = []
        for q in QUANTILES:
            # P50 by squared error: quantile boosting moves its leaves slowly and, at these round counts,
            # left even the 5-minute-ahead median far from the last observation; P10/P90 by quantile loss,
            # their band then calibrated (below)
            objective = {"objective": "regression"} if q == 0.5 else {"objective": "quantile", "alpha": q}
            params = {**objective, "learning_rate": cfg.learning_rate,
                      "num_leaves": cfg.num_leaves, "min_data_in_leaf": cfg.min_data_in_leaf,
                      "feature_fraction": cfg.feature_fraction,
                      "bagging_fraction": 0.8, "bagging_freq": 1, "verbose": -1, "seed": cfg.seed,
                      "num_threads": cfg.threads}
            rounds = cfg.rounds if variant == "weather" or cfg.noweather_rounds is None else cfg.noweather_rounds
            if q != 0.5 and cfg.band_rounds is not None:
                rounds = min(rounds, cfg.band_rounds)
            r = rows50 if q == 0.5 else rows
            fitted.append(lgb.train(params, lgb.Dataset(X.iloc[r], target[r], categorical_feature=["series"]),
                                    num_boost_round=rounds))
        model.models[variant] = fitted
        model.train_rows = max(model.train_rows, len(rows))
        crows = np.flatnonzero(ok & in_cal)
        if len(crows) > cfg.max_rows // 2:
            crows = np.sort(rng.choice(crows, cfg.max_rows // 2, replace=False))
        corr = np.zeros(cfg.calib_buckets)
        if len(crows):
            Xc = X.iloc[crows]
            lo, hi = fitted[0].predict(Xc), fitted[2].predict(Xc)
            score = np.maximum(lo - target[crows], target[crows] - hi)
            b = _lead_bucket(Xc["lead"].to_numpy(), cfg)
            for k in range(cfg.calib_buckets):
                sk = score[b == k]
                if len(sk) >= 20:
                    level = min(1.0, np.ceil((len(sk) + 1) * cfg.target_coverage) / len(sk))
                    corr[k] = float(np.quantile(sk, level))
        model.calibration[variant] = corr
    model.train_seconds = time.perf_counter() - t0
    return model


def _widen(model: GlobalModel, variant: str, pred: np.ndarray, lead: np.ndarray) -> np.ndarray:
    """Apply the conformal band correction (scale-free units) of the lead's bucket."""
    corr = getattr(model, "calibration", {}).get(variant)  # models saved before calibration: uncorrected
    if corr is None or not len(pred):
        return pred
    c = corr[_lead_bucket(lead, model.config)]
    out = pred.copy()
    out[:, 0] -= c
    out[:, 2] += c
    return out


def lookback_days(cfg: GlobalConfig) -> int:
    """Days of history before an issue that the features read (lags of a week, the scale window)."""
    return max(8, int(cfg.scale_days) + 1)


def forecast_global(model: GlobalModel, y: pd.DataFrame, weather: pd.DataFrame | None, issue_time: pd.Timestamp,
                    profile: pd.DataFrame | None = None, disabled: frozenset[str] | set[str] = frozenset()
                    ) -> pd.DataFrame:
    """Forecasts for every series over the horizon after ``issue_time`` (only data before it is used).

    ``y``: history (same layout as for fitting; more series than fitted are forecast by the fallbacks
    only); ``weather``: the observed weather before the issue and the weather forecast after it (the
    temperature features read both: trailing means, yesterday's extremes, the change since the lag
    day), may miss rows or be None;
    ``profile``: optional expected values (same columns) for the last fallback; ``disabled``: links
    of the chain to skip (a degraded model hands over to the next). Returns a long frame:
    series, valid_time, lead, p10, p50, p90, model."""
    cfg = model.config
    # as much history as the features read in training: the lags (a week and a step) and the scale
    times = pd.date_range(issue_time - lookback_days(cfg) * pd.Timedelta(days=1), issue_time + cfg.horizon,
                          freq=cfg.step, inclusive="left")
    y = y.reindex(columns=model.series).reindex(times)
    y[y.index >= issue_time] = np.nan  # never look at the future
    Y = y.to_numpy(dtype=float)
    W = None
    if cfg.weather_cols and weather is not None:
        W = weather.reindex(times).reindex(columns=list(cfg.weather_cols)).to_numpy(dtype=float)
    cal = _calendar(times, cfg)
    p = int(np.searchsorted(times, issue_time))
    issues = np.array([p])
    X, tg, sidx, sc, _ = _design(Y, W, cal, issues, cfg, False)
    out = np.full((len(X), 3), np.nan)
    label = np.full(len(X), "none", dtype=object)
    lags_ok = np.isfinite(sc) & np.isfinite(X["y_day"].to_numpy())
    if "weather" in model.models and W is not None and "global" not in disabled:
        Xw, *_ = _design(Y, W, cal, issues, cfg, True)
        wcols = [c for c in Xw.columns if c.startswith("w_")]
        w_ok = np.isfinite(Xw[wcols].to_numpy()).all(axis=1) & lags_ok
        if w_ok.any():
            pred = np.column_stack([m.predict(Xw[model.features["weather"]][w_ok]) for m in model.models["weather"]])
            out[w_ok] = _widen(model, "weather", pred, Xw["lead"].to_numpy()[w_ok]) * sc[w_ok, None]
            label[w_ok] = "global"
    need = (label == "none") & lags_ok
    if need.any() and "noweather" in model.models and "global_noweather" not in disabled:
        pred = np.column_stack([m.predict(X[model.features["noweather"]][need]) for m in model.models["noweather"]])
        out[need] = _widen(model, "noweather", pred, X["lead"].to_numpy()[need]) * sc[need, None]
        label[need] = "global_noweather"
    # seasonal naive: last week's value, else yesterday's
    need = label == "none"
    if need.any():
        wk = Y[np.clip(tg - 7 * cfg.day_steps, 0, len(Y) - 1), sidx]
        dy = Y[np.clip(tg - cfg.day_steps, 0, len(Y) - 1), sidx]
        naive = np.where(np.isfinite(wk), wk, dy)
        ok = need & np.isfinite(naive)
        out[ok] = naive[ok, None] * np.array([0.9, 1.0, 1.1])[None, :]
        label[ok] = "seasonal_naive"
    need = label == "none"
    if need.any() and profile is not None:
        prof = profile.reindex(times).reindex(columns=model.series).to_numpy(dtype=float)
        pv = prof[np.clip(tg, 0, len(prof) - 1), sidx]
        ok = need & np.isfinite(pv)
        out[ok] = pv[ok, None] * np.array([0.85, 1.0, 1.15])[None, :]
        label[ok] = "profile"
    out = np.sort(out, axis=1)  # quantiles never cross
    lead = X["lead"].to_numpy()
    return pd.DataFrame({
        "series": np.asarray(model.series, dtype=object)[sidx],
        "valid_time": times[np.clip(tg, 0, len(times) - 1)],
        "lead": lead,
        "p10": out[:, 0], "p50": out[:, 1], "p90": out[:, 2],
        "model": label,
    })
