"""Shared physics and zones: the same functions on both sides of the wall."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gridpipeline.common.renewables import hub_wind_speed, pv_physics, wind_physics
from gridpipeline.common.zones import compute_zones
from gridpipeline.settings import PROJECT_ROOT


def test_hub_height_wind_follows_the_power_law():
    assert hub_wind_speed(np.array([5.0]))[0] == pytest.approx(5.0 * 10 ** (1 / 7))  # 6.9 m/s at 100 m
    assert hub_wind_speed([4.0], hub_height_m=10.0)[0] == 4.0
    # E-82: next to nothing at 1.4 m/s, about 40 % at 8.3 m/s, rated at 16.7 m/s, off past 25 m/s.
    p = wind_physics(hub_wind_speed(np.array([1.0, 6.0, 12.0, 30.0])), 2.0)
    assert p[0] < 0.002 and 0.6 < p[1] < 1.0 and p[2] == pytest.approx(2.0) and p[3] == 0.0


def test_pv_is_zero_at_night_and_clipped_at_the_rating():
    idx = pd.DatetimeIndex(["2026-06-21 05:00", "2026-06-21 17:20"], tz="UTC")  # night, solar noon
    pv = pv_physics(pd.DataFrame({"ghi": [0.0, 1400.0], "temperature": [20.0, 0.0]}, index=idx), 36.1, -79.95, 1.0)
    assert pv.iloc[0] == 0.0 and pv.iloc[1] == pytest.approx(1.0)


def test_zones_of_the_published_network_file():
    import pandapower as pp

    net = pp.from_json(str(PROJECT_ROOT / "data" / "sample_grid" / "network.json"))
    z = compute_zones(net)
    assert z.index.equals(net.bus.index)
    assert z.value_counts()["LV5.220"] == 110 and set(z.str.extract(r"MV_Feeder(\d+)")[0].dropna()) == {
        str(k) for k in range(1, 10)}
