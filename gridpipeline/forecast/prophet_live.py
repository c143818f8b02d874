"""Prophet with weather regressors beside the global model in the 5-minute loop, combined by skill.

One Prophet model per series, fit nightly on hourly means of the history: weekly seasonality, daily
seasonality conditional on working / non-working days, public holidays, and temperature with
heating/cooling degrees as regressors. The nightly job scores both models on the last day before
its cut-off (the global model from its own fit without that day), and the weights, per series and
horizon bucket (0-1 h, 1-6 h, 6-24 h), are the inverse mean squared errors: the lags make the global
model much better at short leads and on smooth series, Prophet's smoothing can win on noisy ones. Live, the combined P50 is ``w_global * global + w_prophet * prophet``
and the global model's P10/P90 band moves with it; the row's model reads ``global+prophet``. Without
a weather forecast Prophet is not used (its regressors need it), and the chain continues as before.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd

from gridpipeline.forecast.features import holiday_dates


def _frame(times: pd.DatetimeIndex, temperature: np.ndarray, tz: str, country: str | None, base_c: float):
    local = times.tz_convert(tz)
    hol = holiday_dates(country, None, sorted(set(local.year))) if country else frozenset()
    working = np.array([(d.weekday() < 5) and (d not in hol) for d in local.date], dtype=float)
    t = np.asarray(temperature, dtype=float)
    return pd.DataFrame({"ds": local.tz_localize(None), "working": working, "nonworking": 1 - working,
                         "temp": t, "hdh": np.maximum(base_c - t, 0), "cdh": np.maximum(t - base_c, 0)})


def fit_prophet(y: pd.Series, temperature: pd.Series, tz: str, country: str | None = None, base_c: float = 18.0):
    """Fit one series (UTC index, any step; fit on hourly means)."""
    from prophet import Prophet

    for name in ("cmdstanpy", "prophet", "prophet.plot"):
        logging.getLogger(name).setLevel(logging.WARNING)
    hourly = y.resample("1h").mean()
    temp = temperature.reindex(y.index).resample("1h").mean().reindex(hourly.index).interpolate().bfill().ffill()
    df = _frame(hourly.index, temp.to_numpy(), tz, country, base_c)
    df["y"] = hourly.to_numpy()
    df = df.dropna(subset=["y"])
    years = sorted(set(df.ds.dt.year))
    hol = holiday_dates(country, None, list(range(years[0], years[-1] + 2))) if country else frozenset()
    holidays = pd.DataFrame({"holiday": "holiday", "ds": pd.to_datetime(sorted(hol))}) if hol else None
    m = Prophet(growth="flat", yearly_seasonality=False, weekly_seasonality=False, daily_seasonality=False,
                holidays=holidays, uncertainty_samples=0)
    m.add_seasonality("weekly", period=7, fourier_order=3)
    m.add_seasonality("daily_working", period=1, fourier_order=6, condition_name="working")
    m.add_seasonality("daily_nonworking", period=1, fourier_order=6, condition_name="nonworking")
    for r in ("temp", "hdh", "cdh"):
        m.add_regressor(r)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.fit(df)
    m._gp_meta = {"tz": tz, "country": country, "base_c": base_c}
    return m


def predict_prophet(m, times: pd.DatetimeIndex, temperature: np.ndarray) -> np.ndarray:
    meta = m._gp_meta
    df = _frame(times, temperature, meta["tz"], meta["country"], meta["base_c"])
    return m.predict(df)["yhat"].to_numpy()


def skill_weights(errors: dict[str, np.ndarray]) -> dict[str, float]:
    """Inverse mean squared (scaled) error weights, summing to 1; a model without errors gets 0."""
    inv = {k: 1.0 / max(float(np.nanmean(np.square(e))), 1e-12) for k, e in errors.items()
           if e is not None and np.isfinite(e).any()}
    total = sum(inv.values())
    return {k: (inv.get(k, 0.0) / total if total else 0.0) for k in errors}


def combine(fc: pd.DataFrame, prophet: dict, weights: dict, weather: pd.DataFrame | None,
            step: pd.Timedelta = pd.Timedelta(minutes=5)) -> pd.DataFrame:
    """Blend Prophet into the rows the global (weather) model served. ``weights``: {"global": w, "prophet": w}
    or, per series and horizon bucket of ``live.BUCKETS``, {series: {bucket: {"global": w, "prophet": w}}}."""
    from gridpipeline.forecast.live import bucket_of

    if weather is None or not prophet or not weights:
        return fc
    b = bucket_of(fc["lead"].to_numpy() * (pd.Timedelta(step) / pd.Timedelta(minutes=1)))
    if "prophet" in weights:  # one weight for everything
        wp_rows = np.full(len(fc), float(weights["prophet"]))
    else:  # per series and horizon bucket: {series: {bucket: {"global": w, "prophet": w}}}
        wp_rows = np.array([weights.get(sr, {}).get(x, {}).get("prophet", 0.0)
                            for sr, x in zip(fc.series.to_numpy(), b)])
    if not (wp_rows > 0).any():
        return fc
    out = fc.copy()
    vt = pd.DatetimeIndex(out.valid_time)
    temp = weather["temperature"].reindex(vt).to_numpy(dtype=float)
    for series, m in prophet.items():
        rows = np.flatnonzero((out.series.to_numpy() == series) & (out.model.to_numpy() == "global"))
        if not len(rows) or not np.isfinite(temp[rows]).all():
            continue
        pp = predict_prophet(m, vt[rows], temp[rows])
        p50 = out.p50.to_numpy()[rows]
        wp = wp_rows[rows]
        new = (1 - wp) * p50 + wp * pp
        shift = new - p50
        for c in ("p10", "p50", "p90"):
            out.loc[out.index[rows], c] = out[c].to_numpy()[rows] + shift
        out.loc[out.index[rows], "model"] = "global+prophet"
    return out


#: the blend's hold-out before the cut-off, and the spacing of the issues scored on it
HOLDOUT = pd.Timedelta(days=2)
HOLDOUT_EVERY = pd.Timedelta(hours=6)


def train_demand_models(hist: pd.DataFrame, weather: pd.DataFrame, cfg, now: pd.Timestamp, tz: str,
                        country: str | None, prophet: bool = True) -> tuple[dict, dict]:
    """The nightly demand models: (bundle, report).

    Both models are fit on the history before a hold-out of the last two days and scored on four
    issues 6 h apart over their full horizons; the weights are per series and horizon bucket. Then both
    are refit on all history. bundle: {"global": GlobalModel, "prophet": {series: model},
    "weights": {series: {bucket: {"global": w, "prophet": w}}}}; report: hold-out MAPEs (%)."""
    from gridpipeline.forecast.global_model import fit_global, forecast_global
    from gridpipeline.forecast.live import bucket_of

    # held out: the last HOLDOUT; issues every HOLDOUT_EVERY score both models over full horizons
    holdout = now - HOLDOUT
    model = fit_global(hist, weather, cfg, end=holdout)
    n_issues = max(1, int((HOLDOUT - cfg.horizon) / HOLDOUT_EVERY))
    fc = pd.concat([forecast_global(model, hist, weather, holdout + k * HOLDOUT_EVERY) for k in range(n_issues)],
                   ignore_index=True)
    act = hist.stack().rename("actual")
    act.index.names = ["valid_time", "series"]
    m = fc.join(act, on=["valid_time", "series"])
    scale = m.groupby("series").actual.transform(lambda a: a.abs().mean()).clip(lower=1e-9)
    holdout_mape = float(np.nanmean(np.abs(m.actual - m.p50) / m.actual.abs().clip(lower=1e-9)) * 100)
    if not prophet:
        model = fit_global(hist, weather, cfg, end=now)
        return {"global": model, "prophet": {}, "weights": {}}, {"holdout_mape": holdout_mape}
    # Prophet per series on the same cut-off; weights by skill on the held-out issues
    temp = weather["temperature"]
    before = hist[hist.index < holdout]
    pp = np.full(len(m), np.nan)
    for series in hist.columns:
        rows = np.flatnonzero(m.series.to_numpy() == series)
        pm = fit_prophet(before[series], temp, tz, country)
        vt = pd.DatetimeIndex(m.valid_time.to_numpy()[rows])
        pp[rows] = predict_prophet(pm, vt, temp.reindex(vt).to_numpy())
    # skill per series and horizon bucket: the lags make the global model strong at short leads and on
    # smooth series, Prophet's smoothing may win on noisy ones
    bucket = bucket_of(m["lead"].to_numpy() * (cfg.step / pd.Timedelta(minutes=1)))
    eg = ((m.actual - m.p50) / scale).to_numpy()
    ep = (m.actual.to_numpy() - pp) / scale.to_numpy()
    ser = m.series.to_numpy()
    weights = {sname: {b: skill_weights({"global": eg[(ser == sname) & (bucket == b)],
                                         "prophet": ep[(ser == sname) & (bucket == b)]})
                       for b in sorted(set(bucket))} for sname in hist.columns}
    prophet_mape = float(np.nanmean(np.abs(m.actual - pp) / m.actual.abs().clip(lower=1e-9)) * 100)
    model = fit_global(hist, weather, cfg, end=now)
    fitted = {series: fit_prophet(hist[series], temp, tz, country) for series in hist.columns}
    return ({"global": model, "prophet": fitted, "weights": weights},
            {"holdout_mape": holdout_mape, "holdout_mape_prophet": prophet_mape})
