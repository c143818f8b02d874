"""Tests of the forecasting library; ``synthetic`` builds small demand series with known structure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def synthetic(
    days: int = 70,
    freq: str = "1h",
    tz: str = "UTC",
    start: str = "2021-01-04",
    seed: int = 0,
) -> pd.DataFrame:
    """Demand driven by local time of day, weekends and temperature (station ``t_good``), plus an
    unrelated station ``t_noise``; columns ``time`` (UTC), ``load``, ``t_good``, ``t_noise``."""
    rng = np.random.default_rng(seed)
    step = pd.Timedelta(freq)
    n = int(days * pd.Timedelta(days=1) / step)
    idx = pd.date_range(pd.Timestamp(start, tz=tz).tz_convert("UTC"), periods=n, freq=step)
    loc = idx.tz_convert(tz)
    hour = (loc.hour + loc.minute / 60.0).to_numpy()
    doy = loc.dayofyear.to_numpy()
    noise = np.cumsum(rng.normal(0, 0.3, n))
    noise -= pd.Series(noise).rolling(int(pd.Timedelta(days=3) / step), min_periods=1).mean().to_numpy()
    temp = 12 + 8 * np.sin(2 * np.pi * (doy - 100) / 365) + 5 * np.sin(2 * np.pi * (hour - 9) / 24) + noise
    weekend = np.asarray(loc.dayofweek >= 5)
    load = (
        1000
        + 250 * np.sin(2 * np.pi * (hour - 8) / 24)
        - 180 * weekend
        + 4.0 * (temp - 16) ** 2
        + rng.normal(0, 15, n)
    )
    return pd.DataFrame(
        {
            "time": idx,
            "load": load,
            "t_good": temp + rng.normal(0, 0.2, n),
            "t_noise": 12 + np.cumsum(rng.normal(0, 0.5, n)) * 0.2,
        }
    )
