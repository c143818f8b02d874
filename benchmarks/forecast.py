"""``gridpipeline bench forecast``: the global demand model for 1,000 feeders, 24 h ahead.

Feeders: no public data set has a thousand feeders with weather, so they are built from the 20 real
GEFCom2012 zones (US utility, hourly, with temperature): each feeder is one zone's load times a
feeder share (lognormal), plus its own AR(1) noise (3 %) and a small phase shift of its daily shape
(+-1 h blend), 50 feeders per zone. Weather: the mean of the 11 stations.

Timed: ``training_seconds`` is the nightly fit (90 days before 2007-06-01, issues every 6 h, 3
quantile models with weather and 3 without, at most 600k rows each); ``seconds`` is one issue of
1,000 feeders x 24 hourly steps with P10/P50/P90 (what runs every 5 minutes), median of 5.
Accuracy for information: the day-ahead forecasts issued at 00:00 on the 30 days after the training
span, MAPE over all feeders and P10-P90 coverage.

The live configuration (``live_*``): what the 5-minute forecast job runs, ``forecast/deployed.py`` as
configured live: the 20 GEFCom zones plus their sum (21 series, the zones-and-system shape of a
utility's demand forecast) at the live 5-minute step (the hourly data linearly interpolated:
labelled, the shape of the work is what is timed), 288 steps ahead, the global model blended with
Prophet per series. ``live_training_seconds``: ``deployed.train`` on the live window
(``GRIDPIPELINE_FORECAST_TRAIN_DAYS``, 730 days) before 2007-06-01 (the global model, its hold-out
refit and 21 Prophet fits); ``live_seconds``: one issue, ``deployed.predict`` with the Prophet blend,
median of 5.
"""

from __future__ import annotations

import platform
import statistics
import time

import numpy as np
import pandas as pd
import psutil


def feeders_from_gefcom(n: int = 1000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    from gridpipeline.forecast.datasets import load_gefcom_zones

    zones, temps = load_gefcom_zones()
    zones = zones.interpolate(limit=6).ffill().bfill()
    rng = np.random.default_rng(seed)
    z = zones.to_numpy(dtype=float)
    T, Z = z.shape
    cols, out = [], np.empty((T, n))
    for k in range(n):
        zi = k % Z
        share = rng.lognormal(-4.0, 0.5)
        shift = rng.uniform(-1, 1)
        base = z[:, zi]
        shifted = np.roll(base, 1 if shift > 0 else -1)
        blend = (1 - abs(shift)) * base + abs(shift) * shifted
        e = np.empty(T)
        e[0] = 0.0
        eps = rng.normal(0, 0.03 * np.sqrt(1 - 0.8 ** 2), T)
        for t in range(1, T):
            e[t] = 0.8 * e[t - 1] + eps[t]
        out[:, k] = share * blend * (1 + e)
        cols.append(f"feeder_{k:04d}")
    idx = zones.index.tz_localize("UTC")
    y = pd.DataFrame(out, index=idx, columns=cols)
    weather = pd.DataFrame({"temperature": temps.mean(axis=1).to_numpy()}, index=temps.index.tz_localize("UTC"))
    return y, weather


def run(feeders: int = 1000, **_) -> dict:
    from gridpipeline.forecast.datasets import shared_data_dir
    from gridpipeline.forecast.global_model import GlobalConfig, fit_global, forecast_global

    if not (shared_data_dir() / "gefcom2012" / "load" / "Load_history.csv").exists():
        raise SystemExit("bench forecast needs ../shared/data/gefcom2012 (see its README)")
    y, weather = feeders_from_gefcom(feeders)
    # all cores: a benchmark runs on a quiet machine (the recorded figures are with LightGBM's default)
    cfg = GlobalConfig(weather_cols=("temperature",), tz="America/New_York", country="US", balance_point=62.0,
                       threads=0)
    train_end = pd.Timestamp("2007-06-01 04:00", tz="UTC")  # 00:00 local
    model = fit_global(y, weather, cfg, end=train_end)
    issue = train_end + pd.Timedelta(days=3)
    forecast_global(model, y, weather, issue)  # warm-up
    ts = []
    for _ in range(5):
        t0 = time.perf_counter()
        fc = forecast_global(model, y, weather, issue)
        ts.append(time.perf_counter() - t0)
    # day-ahead accuracy over 30 issues after the training span
    frames = [forecast_global(model, y, weather, train_end + pd.Timedelta(days=d)) for d in range(30)]
    allf = pd.concat(frames, ignore_index=True)
    act = y.stack().rename("actual")
    act.index.names = ["valid_time", "series"]
    allf = allf.join(act, on=["valid_time", "series"])
    ok = allf.actual.notna() & (allf.actual.abs() > 0)
    a, p50 = allf.actual[ok].to_numpy(), allf.p50[ok].to_numpy()
    mape = float(np.mean(np.abs(a - p50) / np.abs(a)) * 100)
    # same rows, seasonal naive (the value one week earlier) for context
    wk = y.shift(7 * 24).stack().rename("week_before")
    wk.index.names = ["valid_time", "series"]
    nv = allf[ok].join(wk, on=["valid_time", "series"]).week_before.to_numpy()
    naive_mape = float(np.nanmean(np.abs(a - nv) / np.abs(a)) * 100)
    cov = float(np.mean((a >= allf.p10[ok]) & (a <= allf.p90[ok])) * 100)
    live = _live_configuration()
    return {
        **live,
        "benchmark": "forecast",
        "feeders": int(y.shape[1]),
        "horizon_steps": cfg.h_steps,
        "rows_per_issue": int(len(fc)),
        "seconds": round(statistics.median(ts), 3),
        "training_seconds": round(model.train_seconds, 1),
        "training_rows": int(model.train_rows),
        "served_by": fc.model.value_counts().to_dict(),
        "mape_day_ahead_30d": round(mape, 2),
        "coverage_p10_p90_30d": round(cov, 1),
        "seasonal_naive_mape_30d": round(naive_mape, 2),
        "data": "GEFCom2012 zones x 50 synthetic feeders each (share, AR(1) noise, phase)",
        "machine": f"{platform.machine()} {psutil.cpu_count()} cpu {round(psutil.virtual_memory().total / 2**30)} GiB",
    }


def _live_configuration() -> dict:
    from gridpipeline.forecast import deployed
    from gridpipeline.forecast.datasets import load_gefcom_zones
    from gridpipeline.settings import Settings

    zones, temps = load_gefcom_zones()
    zones = zones.interpolate(limit=6).ffill().bfill()
    zones.columns = [f"zone_{c}" for c in zones.columns]
    zones["system"] = zones.sum(axis=1)
    idx = zones.index.tz_localize("UTC")
    step = pd.Timedelta(minutes=5)
    fine = pd.date_range(idx[0], idx[-1], freq=step)
    y = pd.DataFrame(zones.to_numpy(), index=idx, columns=zones.columns).reindex(fine).interpolate(limit=12)
    temp = pd.DataFrame({"temperature": temps.mean(axis=1).to_numpy()}, index=temps.index.tz_localize("UTC"))
    temp = temp.reindex(fine).interpolate(limit=12)
    train_days = Settings().forecast_train_days
    cfg = deployed.deployed_config(step, train_days, "America/New_York", "US")
    cutoff = pd.Timestamp("2007-06-01 04:00", tz="UTC")
    t0 = time.perf_counter()
    bundle = deployed.train(y[y.index < cutoff], temp, cfg, cutoff, "America/New_York", "US")
    train_s = time.perf_counter() - t0
    issue = cutoff + pd.Timedelta(days=3)
    horizon = pd.date_range(issue, issue + cfg.horizon, freq=step, inclusive="left")
    wx = temp.reindex(horizon)
    hist = y[y.index < issue]
    fc = deployed.predict(bundle, hist, wx, issue)  # warm-up
    ts = []
    for _ in range(5):
        t0 = time.perf_counter()
        fc = deployed.predict(bundle, hist, wx, issue)
        ts.append(time.perf_counter() - t0)
    return {
        "live_series": int(y.shape[1]),
        "live_horizon_steps": int(cfg.h_steps),
        "live_rows_per_issue": int(len(fc)),
        "live_seconds": round(statistics.median(ts), 3),
        "live_training_seconds": round(train_s, 1),
        "live_train_days": int(train_days),
        "live_served_by": fc.model.value_counts().to_dict(),
    }
