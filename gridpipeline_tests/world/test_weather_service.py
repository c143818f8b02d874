"""The world's weather provider: calibrated forecast errors, determinism, and what it publishes when."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from gridpipeline.common import weather_files as wf
from gridpipeline.settings import PROJECT_ROOT
from gridpipeline.world.model import load_world
from gridpipeline.world.weather_service import CALIBRATION, ERRORS, WeatherService, magnus_rh

UTC = "UTC"
#: About six weeks' worth of runs spread over a year (every 54 h, so all four cycles take turns): the
#: calibration is for the climate, and one month's weather is sunnier or duller than the year's.
INITS = pd.date_range("2026-01-01", "2026-12-31", freq="54h", tz="UTC")


@pytest.fixture(scope="module")
def world():
    return load_world("sample", data_dir=PROJECT_ROOT / "data")


@pytest.fixture(scope="module")
def published(world, tmp_path_factory):
    """The runs of :data:`INITS` written by the service and read back from the files, with the truth
    at their valid times: one frame of (run, lead) rows."""
    d = tmp_path_factory.mktemp("weather")
    svc = WeatherService(world, d, seed=0)
    for init in INITS:
        svc.publish_forecasts(until=wf.available_at(init), since=init)
    runs = wf.list_runs(d)
    assert [r.init_time for r in runs] == list(INITS)
    assert all(r.available_at - r.init_time == pd.Timedelta(hours=3) for r in runs)
    rows = []
    for r in runs:
        f = wf.read_run(r.path)
        o = world.weather_at(f.index)
        rows.append(pd.concat([f.add_prefix("f_"), o.add_prefix("o_")], axis=1).assign(init=r.init_time))
    return pd.concat(rows)


def _bucket_rmse(df: pd.DataFrame, var: str, mask=None) -> tuple[float, float]:
    err = (df[f"f_{var}"] - df[f"o_{var}"]) ** 2
    lead = df.f_lead_hours
    m = np.ones(len(df), bool) if mask is None else mask
    return tuple(float(np.sqrt(err[m & lo].mean())) for lo in ((lead >= 1) & (lead <= 24), (lead >= 25) & (lead <= 48)))


def test_errors_match_the_calibration_by_lead(published):
    t1, t2 = _bucket_rmse(published, "temp_air")
    w1, w2 = _bucket_rmse(published, "wind_speed")
    assert t1 == pytest.approx(CALIBRATION["temp_air"][0], rel=0.12)
    assert t2 == pytest.approx(CALIBRATION["temp_air"][1], rel=0.12)
    assert w1 == pytest.approx(CALIBRATION["wind_speed"][0], rel=0.12)
    assert w2 == pytest.approx(CALIBRATION["wind_speed"][1], rel=0.12)
    import pvlib

    zenith = pvlib.solarposition.get_solarposition(published.index, 36.1, -79.95)["zenith"].to_numpy()
    day = zenith < 90
    g1, g2 = _bucket_rmse(published, "ghi", day)
    lead = published.f_lead_hours
    mean1 = published.o_ghi[day & (lead >= 1) & (lead <= 24)].mean()
    mean2 = published.o_ghi[day & (lead >= 25)].mean()
    assert g1 / mean1 == pytest.approx(CALIBRATION["ghi_relative"][0], rel=0.15)
    assert g2 / mean2 == pytest.approx(CALIBRATION["ghi_relative"][1], rel=0.15)
    # Day 2 is worse than day 1, and the analysis (lead 0) better still.
    assert t2 > 1.4 * t1 and w2 > 1.1 * w1 and g2 / mean2 > g1 / mean1
    t0 = float(np.sqrt(((published.f_temp_air - published.o_temp_air)[lead == 0] ** 2).mean()))
    assert t0 < 0.8 * t1
    # The clipped GHI error stays nearly unbiased (under 5 % of the mean).
    assert abs((published.f_ghi - published.o_ghi)[day].mean()) < 0.05 * published.o_ghi[day].mean()


def test_errors_are_correlated_along_the_lead(published):
    lead = published.f_lead_hours.to_numpy()
    z = ((published.f_temp_air - published.o_temp_air) / ERRORS["temp_air"].sigma(lead)).to_numpy()
    same_run = published.init.to_numpy()[1:] == published.init.to_numpy()[:-1]
    r = np.corrcoef(z[1:][same_run], z[:-1][same_run])[0, 1]
    assert r == pytest.approx(ERRORS["temp_air"].phi, abs=0.05)  # exp(-1/12) = 0.92
    assert 0.8 < np.std(z) < 1.2


def test_forecasts_are_physically_consistent(published):
    import pvlib

    p = published
    night = pvlib.solarposition.get_solarposition(p.index, 36.1, -79.95)["zenith"].to_numpy() > 91
    # No GHI error without sun: the forecast is the truth, which is 0 but for the twilight of TMY3's
    # hour averages interpolated to the instant.
    assert night.any() and np.allclose(p.f_ghi[night], p.o_ghi[night], atol=0.01)
    assert (p.f_ghi[night & (p.o_ghi == 0)] == 0).all() and (p.f_dni[night] == 0).all()
    assert (p.f_ghi >= 0).all() and (p.f_dni >= 0).all() and (p.f_dhi >= 0).all()
    clear = pvlib.clearsky.haurwitz(pvlib.solarposition.get_solarposition(p.index, 36.1, -79.95)["apparent_zenith"])
    assert (p.f_ghi <= np.maximum(1.1 * clear.ghi.fillna(0).to_numpy(), p.o_ghi) + 0.01).all()
    assert (p.f_temp_dew <= p.f_temp_air + 0.01).all()
    rh = magnus_rh(p.f_temp_air.to_numpy(), p.f_temp_dew.to_numpy())
    assert np.allclose(p.f_relative_humidity, np.clip(rh, 0, 100), atol=0.15)
    assert (p.f_wind_speed >= 0).all()
    assert ((p.f_cloud_cover_total >= 0) & (p.f_cloud_cover_total <= 100)).all()
    assert (p.f_cloud_cover_opaque <= p.f_cloud_cover_total + 0.01).all()
    # A sunnier forecast has fewer clouds: the GHI and cloud errors are anticorrelated by day.
    day = ~night & (p.o_ghi > 100)
    r = np.corrcoef((p.f_ghi - p.o_ghi)[day], (p.f_cloud_cover_total - p.o_cloud_cover_total)[day])[0, 1]
    assert r < -0.3


def test_a_run_is_byte_identical_however_publication_is_chunked(world, tmp_path):
    since = pd.Timestamp("2026-05-03 02:00", tz=UTC)
    until = pd.Timestamp("2026-05-05 13:00", tz=UTC)
    WeatherService(world, tmp_path / "once", seed=5).publish_forecasts(until, since=since)
    chunked = WeatherService(world, tmp_path / "chunks", seed=5)
    for cut in ("2026-05-03 09:30", "2026-05-03 10:00", "2026-05-04 17:59", "2026-05-05 13:00"):
        chunked.publish_forecasts(pd.Timestamp(cut, tz=UTC), since=since)
    once = {r.path.name: r.path.read_bytes() for r in wf.list_runs(tmp_path / "once")}
    again = {r.path.name: r.path.read_bytes() for r in wf.list_runs(tmp_path / "chunks")}
    assert len(once) == 9 and once == again  # 05-03 06:00 .. 05-05 06:00
    # A run alone (nothing published before it) is the same file too.
    init = pd.Timestamp("2026-05-04 18:00", tz=UTC)
    alone = WeatherService(world, tmp_path / "alone", seed=5).publish_forecasts(init + pd.Timedelta(hours=3), since=init)
    assert [p.name for p in alone] == [wf.forecast_path(tmp_path, init).name]
    assert alone[0].read_bytes() == once[alone[0].name]
    # Another seed gives another run; publishing again writes nothing.
    other = WeatherService(world, tmp_path / "other", seed=6).forecast_run(init)
    assert not other.equals(WeatherService(world, tmp_path / "x", seed=5).forecast_run(init))
    assert WeatherService(world, tmp_path / "once", seed=5).publish_forecasts(until, since=since) == []


def test_observations_are_the_truth_up_to_now_whatever_the_chunks(world, tmp_path):
    start, until = pd.Timestamp("2026-08-30 21:00", tz=UTC), pd.Timestamp("2026-08-31 04:02", tz=UTC)
    WeatherService(world, tmp_path / "once").publish_observations(start, until)
    live = WeatherService(world, tmp_path / "live")
    cuts = [start + pd.Timedelta(minutes=m) for m in (0, 7, 37, 180, 181, 300)] + [until]
    for b in cuts[1:]:
        live.publish_observations(start, b)  # a live loop: always from the start, up to its clock
    backwards = WeatherService(world, tmp_path / "backwards")
    for a, b in reversed(list(itertools.pairwise(cuts))):
        backwards.publish_observations(a, b)
    files = sorted(p.name for p in (tmp_path / "once" / "observations").glob("*.parquet"))
    assert files == ["20260830.parquet", "20260831.parquet"]
    for name in files:
        ref = (tmp_path / "once" / "observations" / name).read_bytes()
        assert (tmp_path / "live" / "observations" / name).read_bytes() == ref
        assert (tmp_path / "backwards" / "observations" / name).read_bytes() == ref
    obs = wf.read_observations(tmp_path / "once", start, until + pd.Timedelta(days=1))
    assert obs.index[0] == start and obs.index[-1] == pd.Timestamp("2026-08-31 04:00", tz=UTC)  # nothing after now
    assert len(obs) == 85 and (obs.index.to_series().diff().dropna() == pd.Timedelta(minutes=5)).all()
    truth = world.weather_at(obs.index)
    assert np.allclose(obs.temp_air, truth.temp_air, atol=0.006) and np.allclose(obs.ghi, truth.ghi, atol=0.006)


def test_the_pipeline_reads_an_imperfect_forecast_of_the_right_age(world, tmp_path):
    svc = WeatherService(world, tmp_path, seed=0)
    issue = pd.Timestamp("2026-06-10 08:55", tz=UTC)
    svc.publish_forecasts(issue, since=issue - pd.Timedelta(days=1))
    frame, info = wf.read_forecast_asof(tmp_path, issue, pd.Timedelta(hours=24))
    assert info["init_time"] == pd.Timestamp("2026-06-10 00:00", tz=UTC)  # the 06 UTC run comes at 09:00
    truth = world.weather_at(frame.index)
    err = frame.temp_air - truth.temp_air
    assert 0.3 < np.sqrt((err**2).mean()) < 3.0  # a forecast, not the future
    assert (frame.ghi[truth.ghi == 0] < 60).all()


def test_the_scada_simulator_publishes_the_weather_with_its_clock(world, tmp_path):
    from gridpipeline.telemetry.registry import build_registry
    from gridpipeline.world.scada import FaultConfig, ScadaSimulator

    reg = build_registry(world.net, world.zones)
    reg = reg[reg.kind == "v_mag"].head(20)
    start = datetime(2026, 4, 10, 11, 50)
    end = start + timedelta(minutes=10)
    sim = ScadaSimulator(world, reg, tmp_path / "landing", faults=FaultConfig.none(), weather_dir=tmp_path / "wx")
    sim.run(start, end)
    live = ScadaSimulator(world, reg, tmp_path / "landing2", faults=FaultConfig.none(), weather_dir=tmp_path / "wx2")
    live.run_live(start, speed=1e7, until=end)
    for d in ("wx", "wx2"):
        runs = wf.list_runs(tmp_path / d)
        # From a day before start: 04-09 12:00 .. 04-10 06:00 (the 12:00 run is not available until 15:00).
        assert [f"{r.init_time:%d %H}" for r in runs] == ["09 12", "09 18", "10 00", "10 06"]
        obs = wf.read_observations(tmp_path / d, start - timedelta(days=1), end + timedelta(days=1))
        assert list(obs.index.strftime("%H:%M")) == ["11:50", "11:55"]
    frame, info = wf.read_forecast_asof(tmp_path / "wx", start, pd.Timedelta(hours=24))
    assert info["init_time"] == pd.Timestamp("2026-04-10 06:00", tz=UTC) and frame.notna().all().all()
    assert sim.stats.files > 0 and live.stats.files == sim.stats.files


def test_the_scada_simulator_publishes_day_ahead_prices_with_its_clock(world, tmp_path):
    """The exchange beside the weather provider: at 12:00 UTC on 10 April (14:00 Berlin) the prices of
    the 11th are out, those of the 12th are not."""
    from gridpipeline.sources.prices import SmardFolder
    from gridpipeline.telemetry.registry import build_registry
    from gridpipeline.world.scada import FaultConfig, ScadaSimulator

    reg = build_registry(world.net, world.zones)
    reg = reg[reg.kind == "v_mag"].head(5)
    start = datetime(2026, 4, 10, 11, 55)
    sim = ScadaSimulator(world, reg, tmp_path / "landing", faults=FaultConfig.none(), prices_dir=tmp_path / "prices")
    sim.run(start, start + timedelta(minutes=5))
    assert sorted(p.name for p in (tmp_path / "prices").glob("*.csv")) == [
        "day_ahead_20260409.csv", "day_ahead_20260410.csv", "day_ahead_20260411.csv"]
    known, bad = SmardFolder(tmp_path / "prices").known(pd.Timestamp("2026-04-10 12:00", tz=UTC))
    assert not bad and known.index.max() == pd.Timestamp("2026-04-11 21:00", tz=UTC)
