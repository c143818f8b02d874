"""Snapshots take each sensor's latest reading within the jitter tolerance of the instant."""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from gridpipeline.telemetry.snapshot import label_snapshot

TS = datetime(2026, 11, 20, 10, 0, 30)
SENSORS = pd.DataFrame({"sensor_id": [1, 2, 3], "kind": ["v_mag"] * 3, "unit": ["kV"] * 3, "nominal": [20.0] * 3})


def test_jittered_readings_count_and_the_latest_within_tolerance_wins():
    raw = pd.DataFrame({
        "sensor_id": [1, 1, 2, 3],
        "ts": ["2026-11-20T10:00:29.2Z", "2026-11-20T10:00:31.5Z",   # sensor 1: two samples, both close
               "2026-11-20T10:00:30Z",                               # sensor 2: on the dot
               "2026-11-20T10:00:50Z"],                              # sensor 3: the next interval's sample
        "value": [20.1, 20.2, 19.9, 20.5], "unit": ["kV"] * 4,
        "arrived_at": pd.Timestamp("2026-11-20 10:00:40")})
    df, counts = label_snapshot(raw, TS, SENSORS)
    got = df.set_index("sensor_id").value.to_dict()
    assert got == {1: 20.2, 2: 19.9}
    assert counts["rows_used"] == 2 and counts["rows_rejected"] == 1  # sensor 3: outside the tolerance
    exact, _ = label_snapshot(raw, TS, SENSORS, tolerance_s=0.0)
    assert set(exact.sensor_id) == {2}
