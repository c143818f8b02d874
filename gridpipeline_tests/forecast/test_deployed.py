"""The deployed demand path: trained only on history before its cut-off (so a backfill gives the same
forecast whether or not later data exists), gaps stay gaps, every row labelled, and the backtest's
``live`` mode scores exactly this path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gridpipeline.forecast import deployed

STEP = pd.Timedelta(minutes=30)


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(1)
    idx = pd.date_range("2026-03-01", periods=48 * 45, freq=STEP, tz="UTC")
    hour = idx.hour.to_numpy() + idx.minute.to_numpy() / 60
    temp = 12 + 7 * np.sin(2 * np.pi * (hour - 9) / 24) + np.cumsum(rng.normal(0, 0.05, len(idx)))
    base = 1 + 0.35 * np.sin(2 * np.pi * (hour - 13) / 24) + 0.04 * np.maximum(16 - temp, 0)
    hist = pd.DataFrame({"north": 40 * base * (1 + rng.normal(0, 0.015, len(idx))),
                         "south": 25 * base * (1 + rng.normal(0, 0.015, len(idx)))}, index=idx)
    hist["system"] = hist.north + hist.south
    hist.iloc[48 * 20:48 * 21] = np.nan  # a day the telemetry never reached the store: a gap, not a fill
    wx = pd.DataFrame({"temperature": temp}, index=idx)
    cfg = deployed.with_train_days(deployed.deployed_config(STEP, 28, "UTC", None), 28)
    cutoff = idx[48 * 40]
    return hist, wx, cfg, cutoff


def _fallback(hist, issue, series):
    times = pd.date_range(issue, issue + pd.Timedelta(hours=24), freq=STEP, inclusive="left")
    return pd.concat([pd.DataFrame({"series": s, "valid_time": times, "lead": np.arange(1, len(times) + 1),
                                    "p10": 0.9, "p50": 1.0, "p90": 1.1, "model": "nominal"}) for s in series],
                     ignore_index=True)


def test_a_backfill_is_the_same_whether_or_not_later_data_exists(world):
    hist, wx, cfg, cutoff = world
    issue = cutoff + pd.Timedelta(hours=3)
    # "now": the store also holds the days after the backfilled issue, and a later weather record
    late = deployed.train(hist, wx, cfg, cutoff, "UTC", None, prophet=False)
    then = deployed.train(hist[hist.index < cutoff], wx[wx.index < cutoff], cfg, cutoff, "UTC", None, prophet=False)
    wx_fc = wx.reindex(pd.date_range(issue, issue + pd.Timedelta(hours=24), freq=STEP, inclusive="left"))
    a = deployed.predict(late, hist, wx_fc, issue)
    b = deployed.predict(then, hist[hist.index < issue], wx_fc, issue)
    pd.testing.assert_frame_equal(a, b)
    assert late["trained_until"] == cutoff and late["report"]["measured_share"] < 1.0  # the gap stayed a gap


def test_deployed_forecast_is_accurate_labelled_and_falls_back(world):
    hist, wx, cfg, cutoff = world
    bundle = deployed.train(hist, wx, cfg, cutoff, "UTC", None)
    assert set(bundle["prophet"]) == {"north", "south", "system"} and bundle["weights"]
    issue = cutoff + pd.Timedelta(hours=2)
    times = pd.date_range(issue, issue + pd.Timedelta(hours=24), freq=STEP, inclusive="left")
    fc = deployed.predict(bundle, hist[hist.index < issue], wx.reindex(times), issue)
    assert set(fc.model) <= {"global", "global+prophet"} and len(fc) == 3 * len(times)
    assert (fc.p10 <= fc.p50).all() and (fc.p50 <= fc.p90).all()
    act = hist.system.reindex(times).to_numpy()
    p50 = fc[fc.series == "system"].set_index("valid_time").p50.reindex(times).to_numpy()
    assert np.mean(np.abs(p50 - act) / act) < 0.04
    # no weather forecast: the weather-free model; a zone the model never saw: the caller's fallback
    fb = _fallback(hist, issue, ["north", "south", "system", "east"])
    fc2 = deployed.predict(bundle, hist[hist.index < issue], None, issue, fallback=fb)
    assert set(fc2[fc2.series != "east"].model) == {"global_noweather"}
    assert set(fc2[fc2.series == "east"].model) == {"nominal"}
    # no history before the issue at all: every row is the labelled fallback, none unlabelled
    empty = hist.iloc[:0]
    fc3 = deployed.predict(bundle, empty, None, issue, fallback=fb)
    assert set(fc3.model) == {"nominal"} and fc3.p50.notna().all()
    # a degraded model hands over to the next link
    fc4 = deployed.predict(bundle, hist[hist.index < issue], wx.reindex(times), issue, disabled={"global"})
    assert set(fc4.model) == {"global_noweather"}


def test_backtest_live_scores_the_deployed_path(world, monkeypatch):
    from gridpipeline.forecast import backtest
    from gridpipeline.forecast.demand import ForecastConfig

    hist, wx, _, _ = world
    data = pd.DataFrame({"y": hist.system, "temperature": wx.temperature})
    calls = []
    real = deployed.train
    monkeypatch.setattr(deployed, "train", lambda *a, **k: calls.append(a[3]) or real(*a, **k))
    cfg = ForecastConfig(tz="UTC", weather_cols=("temperature",), val_days=14)
    res = backtest.run_backtest_live(data, cfg, 21, start=hist.index[48 * 36], end=hist.index[48 * 43],
                                     prophet=False)
    m = res.metrics
    assert m["n_forecasts"] == 7 and m["refits"] == 1 and len(calls) == 1  # weekly, as live
    assert set(m["model_usage"]) <= {"global", "global+prophet"}
    assert m["mape"] < 4.0 and m["baselines"]["vanilla"]["mape"] is not None
    assert "deployed path" in m["note"]


def test_serving_sees_the_temperature_history_training_saw(world):
    """Training reads trailing temperature means, yesterday's extremes and the change since the lag
    day from the observed weather; serving must too. With the station's observations before the issue
    and the forecast after it, the forecast is what it is when the whole weather series is known (as in
    training); with the horizon's forecast alone those features were missing at serving time only."""
    hist, wx, cfg, cutoff = world
    bundle = deployed.train(hist[hist.index < cutoff], wx[wx.index < cutoff], cfg, cutoff, "UTC", None, prophet=False)
    issue = cutoff + pd.Timedelta(hours=5)
    horizon = wx[(wx.index >= issue) & (wx.index < issue + pd.Timedelta(hours=24))]
    as_trained = deployed.predict(bundle, hist[hist.index < issue], wx, issue)
    served = deployed.predict(bundle, hist[hist.index < issue], horizon, issue, observed=wx[wx.index < issue])
    horizon_only = deployed.predict(bundle, hist[hist.index < issue], horizon, issue)
    assert np.allclose(served.p50.to_numpy(), as_trained.p50.to_numpy())
    assert not np.allclose(horizon_only.p50.to_numpy(), as_trained.p50.to_numpy())
    # the 28-day scale is read from 28 days of history at serving time too
    from gridpipeline.forecast.global_model import lookback_days

    assert lookback_days(bundle["global"].config) >= cfg.scale_days + 1
