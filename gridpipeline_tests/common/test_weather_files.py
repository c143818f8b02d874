"""The weather provider's drop folder: names, availability, as-of reads and observations."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from gridpipeline.common import weather_files as wf

INIT = pd.Timestamp("2026-11-20 06:00", tz="UTC")


def _run(init: pd.Timestamp, offset: float = 0.0) -> pd.DataFrame:
    """A synthetic run: temp_air = hours since init + offset (so interpolation is checkable), ghi = 100."""
    valid = wf.run_valid_times(init)
    hours = (valid - init) / pd.Timedelta(hours=1)
    return pd.DataFrame({"temp_air": hours + offset, "ghi": 100.0}, index=valid)


def test_run_names_carry_init_and_availability(tmp_path):
    path = wf.forecast_path(tmp_path, INIT)
    assert path == tmp_path / "forecasts" / "nwp_20261120T0600Z_avail_20261120T0900Z.parquet"
    assert wf.parse_run_name(path.name) == (INIT, INIT + pd.Timedelta(hours=3))
    assert wf.parse_run_name(".nwp_20261120T0600Z_avail_20261120T0900Z.parquet.x1.tmp") is None
    assert wf.parse_run_name("nwp_20261340T0600Z_avail_20261120T0900Z.parquet") is None  # month 13
    # Naive times are UTC; other zones are converted.
    assert wf.forecast_path(tmp_path, pd.Timestamp("2026-11-20 01:00", tz="America/New_York")) == path
    assert wf.available_at(INIT.tz_localize(None).to_pydatetime()) == pd.Timestamp("2026-11-20 09:00", tz="UTC")


def test_run_inits_are_the_six_hour_cycles_available_by_then():
    inits = wf.run_inits(pd.Timestamp("2026-11-19 05:00"), pd.Timestamp("2026-11-20 08:59"))
    assert [f"{t:%d %H}" for t in inits] == ["19 06", "19 12", "19 18", "20 00"]
    assert list(wf.run_inits("2026-11-19 06:00", "2026-11-20 09:00"))[-1] == INIT  # available exactly then
    assert len(wf.run_inits("2026-11-20 07:00", "2026-11-20 09:00")) == 0


def test_a_run_is_written_atomically_with_its_columns(tmp_path):
    path = wf.write_forecast_run(tmp_path, INIT, _run(INIT))
    assert [p.name for p in (tmp_path / "forecasts").iterdir()] == [path.name]  # no tmp file left
    assert os.stat(path).st_mtime == pd.Timestamp("2026-11-20 09:00", tz="UTC").timestamp()
    run = wf.read_run(path)
    assert len(run) == 49 and run.index[0] == INIT and run.index[-1] == INIT + pd.Timedelta(hours=48)
    assert list(run.lead_hours) == list(range(49))
    assert list(run.columns) == ["lead_hours", "ghi", "temp_air"]  # VARIABLES order
    with pytest.raises(ValueError, match="49 hourly valid times"):
        wf.write_forecast_run(tmp_path, INIT, _run(INIT).iloc[:-1])
    with pytest.raises(ValueError, match="unknown weather columns"):
        wf.write_forecast_run(tmp_path, INIT, _run(INIT).rename(columns={"ghi": "sunshine"}))


def test_forecast_as_of_uses_the_newest_run_available_then_and_interpolates(tmp_path):
    previous = INIT - pd.Timedelta(hours=6)
    wf.write_forecast_run(tmp_path, previous, _run(previous, offset=100.0))
    wf.write_forecast_run(tmp_path, INIT, _run(INIT, offset=0.0))
    horizon = pd.Timedelta(hours=24)
    # 08:59: the 06 UTC run exists on disk but is not available until 09:00, so the 00 UTC run serves.
    frame, info = wf.read_forecast_asof(tmp_path, pd.Timestamp("2026-11-20 08:59", tz="UTC"), horizon)
    assert info["init_time"] == previous and info["avail"] == previous + pd.Timedelta(hours=3)
    assert info["age"] == pd.Timedelta(hours=8, minutes=59)
    assert frame.temp_air.iloc[0] == pytest.approx(100.0 + 8 + 59 / 60)
    # 09:00 sharp: the new run. Every 5-minute value lies on the line between its hourly values.
    frame, info = wf.read_forecast_asof(tmp_path, pd.Timestamp("2026-11-20 09:00", tz="UTC"), horizon)
    assert info["init_time"] == INIT and info["source"] == "nwp_file"
    assert len(frame) == 288 and frame.index[0] == pd.Timestamp("2026-11-20 09:00", tz="UTC")
    assert str(frame.index.tz) == "UTC" and frame.index.freq == pd.Timedelta(minutes=5)
    hours = (frame.index - INIT) / pd.Timedelta(hours=1)
    assert np.allclose(frame.temp_air.to_numpy(), hours, atol=1e-9)
    assert (frame.ghi == 100.0).all()
    # A naive issue time is UTC.
    same, _ = wf.read_forecast_asof(tmp_path, pd.Timestamp("2026-11-20 09:00"), horizon, step="15min")
    assert np.allclose(same.temp_air.to_numpy(), frame.temp_air.to_numpy()[::3])


def test_no_forecast_is_a_clear_error(tmp_path):
    with pytest.raises(wf.NoForecastAvailable, match="no NWP run .* was available at 2026-11-20 09:00Z"):
        wf.read_forecast_asof(tmp_path, INIT + pd.Timedelta(hours=3), pd.Timedelta(hours=24))
    wf.write_forecast_run(tmp_path, INIT, _run(INIT))
    with pytest.raises(wf.NoForecastAvailable, match="was available"):  # the only run comes later
        wf.read_forecast_asof(tmp_path, INIT + pd.Timedelta(hours=2), pd.Timedelta(hours=24))
    # 30 h after init the run still covers 18 h, not 24.
    with pytest.raises(wf.NoForecastAvailable, match="not the horizon to 2026-11-22 11:55Z"):
        wf.read_forecast_asof(tmp_path, INIT + pd.Timedelta(hours=30), pd.Timedelta(hours=24))
    frame, _ = wf.read_forecast_asof(tmp_path, INIT + pd.Timedelta(hours=30), pd.Timedelta(hours=18),
                                     step="5min")
    assert frame.notna().all().all() and frame.index[-1] == INIT + pd.Timedelta(hours=47, minutes=55)


def test_an_unreadable_newest_run_falls_back_to_the_one_before(tmp_path):
    previous = INIT - pd.Timedelta(hours=6)
    wf.write_forecast_run(tmp_path, previous, _run(previous, offset=100.0))
    wf.forecast_path(tmp_path, INIT).write_bytes(b"PAR1 not really")
    frame, info = wf.read_forecast_asof(tmp_path, INIT + pd.Timedelta(hours=4), pd.Timedelta(hours=12))
    assert info["init_time"] == previous and frame.temp_air.iloc[0] == pytest.approx(110.0)


def test_observations_merge_per_day_and_never_change_once_written(tmp_path):
    t = pd.date_range("2026-11-20 23:30", periods=12, freq="5min", tz="UTC")  # crosses midnight
    obs = pd.DataFrame({"temp_air": np.arange(12.0), "wind_speed": 2.0}, index=t)
    written = wf.write_observations(tmp_path, obs.iloc[:4])
    assert [p.name for p in written] == ["20261120.parquet"]
    written = wf.write_observations(tmp_path, obs.iloc[2:])  # overlaps two published rows
    assert [p.name for p in written] == ["20261120.parquet", "20261121.parquet"]
    back = wf.read_observations(tmp_path, t[0], t[-1] + pd.Timedelta(minutes=5))
    assert back.index.equals(t.rename("time")) and list(back.temp_air) == list(range(12))
    # Re-publishing changes nothing and rewrites nothing, even with other values.
    day2 = wf.observation_path(tmp_path, t[-1])
    before = day2.read_bytes()
    assert wf.write_observations(tmp_path, obs.iloc[6:].assign(temp_air=-99.0)) == []
    assert day2.read_bytes() == before
    # Only what exists: a window reaching past the newest observation stops there.
    part = wf.read_observations(tmp_path, "2026-11-21 00:00", "2026-11-22 00:00")
    assert len(part) == 6 and part.index.max() == t[-1]
    empty = wf.read_observations(tmp_path, "2026-11-25", "2026-11-26")
    assert empty.empty and str(empty.index.tz) == "UTC" and "temp_air" in empty.columns
    with pytest.raises(ValueError, match="5-minute grid"):
        wf.write_observations(tmp_path, obs.set_axis(t + pd.Timedelta(minutes=1)))
