"""Prophet beside the global model: fit, predict, skill weights, and the blend of the P50."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gridpipeline.forecast.prophet_live import combine, fit_prophet, predict_prophet, skill_weights


def test_skill_weights_favour_the_better_model():
    w = skill_weights({"global": np.array([0.1, -0.1]), "prophet": np.array([0.2, -0.2])})
    assert np.isclose(w["global"] + w["prophet"], 1.0) and np.isclose(w["global"], 0.8)
    assert skill_weights({"global": np.array([0.1]), "prophet": np.array([np.nan])})["prophet"] == 0.0


def test_prophet_learns_temperature_and_blends():
    idx = pd.date_range("2026-01-01", periods=24 * 21, freq="h", tz="UTC")
    rng = np.random.default_rng(0)
    temp = pd.Series(5 + 10 * rng.random(len(idx)), index=idx)
    y = pd.Series(10 + 0.5 * np.maximum(18 - temp, 0) + np.sin(2 * np.pi * idx.hour / 24), index=idx)
    m = fit_prophet(y[:-24], temp, "UTC")
    pred = predict_prophet(m, idx[-24:], temp[-24:].to_numpy())
    assert np.mean(np.abs(pred - y[-24:].to_numpy())) < 0.5
    fc = pd.DataFrame({"series": "s", "valid_time": idx[-24:], "lead": np.arange(1, 25), "p10": y[-24:].to_numpy() - 1,
                       "p50": y[-24:].to_numpy(), "p90": y[-24:].to_numpy() + 1, "model": "global"})
    out = combine(fc, {"s": m}, {"global": 0.5, "prophet": 0.5}, pd.DataFrame({"temperature": temp}))
    assert set(out.model) == {"global+prophet"}
    assert np.allclose(out.p90 - out.p10, 2.0)  # the band moves with the blended P50
    assert np.allclose(out.p50, 0.5 * fc.p50 + 0.5 * pred)
    # without weather Prophet stays out
    assert set(combine(fc, {"s": m}, {"prophet": 0.5}, None).model) == {"global"}
