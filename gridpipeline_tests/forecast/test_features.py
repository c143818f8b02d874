"""Calendar (DST, holidays), series preparation, temperature features and station selection."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gridpipeline.forecast.features import (
    balance_point,
    calendar_features,
    daily_issue_times,
    prepare_series,
    select_stations,
    temperature_features,
)
from gridpipeline_tests.forecast import synthetic

MEL = "Australia/Melbourne"


def test_calendar_on_local_time_across_dst():
    idx = pd.date_range("2021-10-02 12:00", "2021-10-04 12:00", freq="30min", tz="UTC")
    cal = calendar_features(idx, MEL, "AU", "VIC")
    loc = idx.tz_convert(MEL)
    dst_day = loc.normalize().tz_localize(None) == pd.Timestamp("2021-10-03")
    assert set(cal.loc[dst_day, "day_hours"]) == {23.0}
    assert (cal.loc[dst_day].shape[0]) == 46  # 23 local hours of half-hours
    assert 2.0 not in set(cal.loc[dst_day, "hour"])  # 02:00 does not exist that day
    back = pd.date_range("2021-04-03 12:00", "2021-04-05 12:00", freq="1h", tz="UTC")
    cal_b = calendar_features(back, MEL)
    day_b = back.tz_convert(MEL).normalize().tz_localize(None) == pd.Timestamp("2021-04-04")
    assert set(cal_b.loc[day_b, "day_hours"]) == {25.0} and day_b.sum() == 25
    assert (cal_b.loc[day_b, "hour"] == 2.0).sum() == 2  # the repeated hour


def test_holidays_configurable():
    idx = pd.date_range("2007-07-03", "2007-07-06", freq="1h", tz="UTC")
    us = calendar_features(idx, "UTC", "US")
    day = idx.normalize()
    assert (us.loc[day == pd.Timestamp("2007-07-04", tz="UTC"), "holiday"] == 1).all()
    assert (us.loc[day == pd.Timestamp("2007-07-03", tz="UTC"), "holiday_before"] == 1).all()
    assert (us.loc[day == pd.Timestamp("2007-07-05", tz="UTC"), "holiday_after"] == 1).all()
    assert calendar_features(idx, "UTC")["holiday"].sum() == 0  # no country, no holidays
    cup = pd.date_range("2013-11-04 13:00", periods=24, freq="1h", tz="UTC")  # 2013-11-05 local
    assert (calendar_features(cup, MEL, "AU", "VIC")["holiday"] == 1).all()  # Melbourne Cup day


def test_daily_issue_times_follow_local_midnight():
    issues = daily_issue_times(
        pd.Timestamp("2021-10-01", tz="UTC"), pd.Timestamp("2021-10-05", tz="UTC"), "00:00", MEL
    )
    local = issues.tz_convert(MEL)
    assert (local.hour == 0).all() and (local.minute == 0).all()
    assert list(np.diff(issues.asi8) // 3_600_000_000_000) == [24, 23, 24]


def test_prepare_series_gaps_duplicates_and_naive_local_dst():
    times = [
        "2021-04-04 01:00",
        "2021-04-04 02:00",
        "2021-04-04 02:00",
        "2021-04-04 03:00",
        "2021-04-04 05:00",
    ]
    frame = pd.DataFrame({"ts": times, "y": [1.0, 2, 3, 4, 6], "t": [10, 11, 12, 13, 15]})
    s = prepare_series(frame, "ts", "y", ["t"], tz=MEL)
    assert s.index.tz is not None and str(s.index.tz) == "UTC"
    # The repeated local 02:00 maps to two UTC hours; 04:00 is a gap.
    assert len(s) == 6 and s["y"].isna().sum() == 1
    assert list(s["y"].dropna()) == [1.0, 2, 3, 4, 6]
    with pytest.raises(KeyError, match="nope"):
        prepare_series(frame, "ts", "y", ["nope"])
    offs = pd.DataFrame({"ts": ["2021-01-01T00:00:00+11:00", "2021-01-01T01:00:00+11:00"], "y": [1, 2]})
    assert prepare_series(offs, "ts", "y").index[0] == pd.Timestamp("2020-12-31 13:00", tz="UTC")


def test_temperature_features_and_balance_point():
    idx = pd.date_range("2021-01-01", periods=96, freq="1h", tz="UTC")
    t = pd.Series(np.arange(96, dtype=float), index=idx)
    f = temperature_features(t, pd.Timedelta("1h"), "UTC", heat_base=10, cool_base=20)
    assert f["t2"].iloc[3] == 9 and f["t3"].iloc[3] == 27
    assert f["t_hdh"].iloc[4] == 6 and f["t_cdh"].iloc[4] == 0 and f["t_cdh"].iloc[25] == 5
    assert f["t_lag24h"].iloc[30] == 6 and np.isnan(f["t_lag24h"].iloc[5])
    assert f["t_daymax"].iloc[30] == 47 and f["t_prevdaymean"].iloc[30] == pytest.approx(11.5)
    rng = np.random.default_rng(0)
    temp = pd.Series(rng.uniform(-5, 35, 5000))
    load = pd.Series(100 + 3 * np.clip(12 - temp, 0, None) + 5 * np.clip(temp - 22, 0, None))
    heat, cool = balance_point(temp, load)
    assert 9 <= heat <= 14 and 20 <= cool <= 24


def test_select_stations_prefers_the_informative_one():
    frame = synthetic(days=120)
    data = prepare_series(frame, "time", "load", ["t_good", "t_noise"])
    chosen, scores = select_stations(data, ["t_noise", "t_good"], "UTC", pd.Timedelta("1h"))
    assert chosen[0] == "t_good"
    assert scores["t_good"] < scores["t_noise"]


def test_domain_logic_does_not_import_dagster():
    import subprocess
    import sys

    code = (
        "import sys, gridpipeline.forecast, gridpipeline.forecast.cli, gridpipeline.forecast.datasets; "
        "sys.exit(1 if 'dagster' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False, capture_output=True).returncode == 0
