"""Accuracy tables and anomaly classes on hand-made residuals."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gridpipeline.forecast.live import accuracy_table, bucket_of, detect_anomalies


def _errors(n=300, seed=0):
    rng = np.random.default_rng(seed)
    t = pd.date_range("2026-11-20", periods=n, freq="5min", tz="UTC")
    p50 = 10 + 3 * np.sin(np.arange(n) / 288 * 2 * np.pi)
    actual = p50 + rng.normal(0, 0.1, n)
    return pd.DataFrame({"series": "zone_a", "valid_time": t, "actual": actual, "p50": p50})


def test_anomaly_classes():
    e = _errors()
    ws = e.valid_time.iloc[-24]
    k = len(e) - 20
    e.loc[k, "actual"] += 3.0            # spike
    e.loc[k + 4, "actual"] -= 3.0        # drop
    e.loc[k + 8:k + 14, "actual"] = 9.5  # stuck value while the forecast moves
    found = detect_anomalies(e, ws)
    kinds = dict(zip(found.ts, found.kind))
    assert kinds[e.valid_time[k]] == "spike"
    assert kinds[e.valid_time[k + 4]] == "drop"
    assert "flatline" in {kinds.get(e.valid_time[i]) for i in range(k + 12, k + 15)}
    # clean data: nothing
    assert len(detect_anomalies(_errors(seed=1), ws)) == 0


def test_drift_is_found():
    e = _errors()
    ws = e.valid_time.iloc[-24]
    tail = e.index[-20:]
    e.loc[tail, "actual"] = e.loc[tail, "p50"] + 0.3  # a steady offset: 3 sigma, under the spike limit
    found = detect_anomalies(e, ws)
    assert set(found.kind) == {"drift"}


def test_accuracy_by_bucket_skips_mape_on_zeros():
    e = pd.DataFrame({"series": "s", "model": "global", "lead_minutes": [5, 30, 120, 600, 600],
                      "actual": [10.0, 10.0, 0.0, 10.0, 12.0], "p50": [11.0, 9.0, 1.0, 10.0, 11.0],
                      "p10": 8.0, "p90": 12.0, "naive": [9.0, 9.0, 0.5, 11.0, 10.0]})
    t = accuracy_table(e).set_index("bucket")
    assert list(bucket_of(np.array([5, 60, 61, 360, 1440]))) == ["0-1h", "0-1h", "1-6h", "1-6h", "6-24h"]
    assert np.isclose(t.loc["0-1h", "mape"], 10.0)
    assert t.loc["1-6h", "mape"] is None or np.isnan(t.loc["1-6h", "mape"])  # only a zero actual
    assert t.loc["1-6h", "rmae"] is not None
    assert t.loc["6-24h", "coverage"] == 100.0 or t.loc["6-24h", "coverage"] == 1.0
