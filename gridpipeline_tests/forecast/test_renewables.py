"""Renewables: physics sanity, intermittency measures, and the learnt corrections on real data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gridpipeline.forecast.datasets import shared_data_dir
from gridpipeline.forecast.renewables import (
    load_gefcom_wind,
    pv_backtest,
    pv_physics,
    ramp_events,
    variability_index,
    wind_backtest,
    wind_physics,
)


def test_pv_physics_follows_the_sun():
    idx = pd.date_range("2026-06-21 00:00", periods=96, freq="15min", tz="UTC")
    import pvlib

    cs = pvlib.location.Location(36.1, -79.95).get_clearsky(idx)
    pv = pv_physics(pd.DataFrame({"ghi": cs.ghi, "temperature": 25.0}, index=idx), 36.1, -79.95, 2.0)
    night = cs.ghi.to_numpy() == 0
    assert (pv.to_numpy()[night] == 0).all()
    assert 1.2 < pv.max() <= 2.0
    peak_hour_local = (pv.idxmax() - pd.Timedelta(hours=4)).hour  # EDT
    assert 11 <= peak_hour_local <= 14


def test_wind_power_curve():
    p = wind_physics(np.array([0, 3, 8, 13, 20, 30]), 10.0)
    assert p[0] == 0 and p[-1] == 0  # below cut-in, above cut-out
    assert np.all(np.diff(p[:5]) >= 0) and p[4] == pytest.approx(10.0, rel=0.02)


def test_ramps_and_variability():
    idx = pd.date_range("2026-06-21", periods=40, freq="5min", tz="UTC")
    s = pd.Series(np.r_[np.full(10, 1.0), np.linspace(1, 5, 5), np.full(15, 5.0), np.linspace(5, 0.5, 5), np.full(5, 0.5)],
                  index=idx)
    ev = ramp_events(s, capacity=10.0, threshold=0.1, window=3)
    assert list(ev.direction) == ["up", "down"]
    assert ev.magnitude.iloc[0] > 3 and ev.magnitude.iloc[1] < -3
    clear = pd.Series(np.linspace(0, 800, 40), index=idx)
    assert variability_index(clear, clear, 5) == pytest.approx(1.0)
    noisy = clear + np.where(np.arange(40) % 2, 200, -200)
    assert variability_index(noisy, clear, 5) > 5


@pytest.fixture(scope="module")
def pv_trained():
    return pv_backtest(return_model=True)


def test_pv_correction_beats_physics_on_measured_pv(pv_trained):
    r = pv_trained
    assert r["test_rows"] > 1000
    assert r["corrected"]["nmae"] < r["physics"]["nmae"]


def test_the_pv_correction_reads_the_sun_of_the_site_it_forecasts(pv_trained):
    """The correction is learnt at Golden (UTC-7). At a site 15 h east, the same weather at the same
    local solar time gets the same forecast: its clock feature is the site's solar time, not the UTC
    hour (which made it see night at a far-east noon, and put Greensboro's noon two hours off)."""
    from gridpipeline.forecast.generation import generation_forecast

    model = pv_trained["model"]
    idx = pd.date_range("2026-12-05 12:00", periods=72, freq="5min", tz="UTC")  # about noon at -80
    import pvlib

    cs = pvlib.location.Location(36.1, -79.95).get_clearsky(idx)
    wx = pd.DataFrame({"ghi": 0.7 * cs.ghi.to_numpy(), "temperature": 10.0,
                       "clear_sky_index": 0.7}, index=idx)
    home, _, _ = generation_forecast(wx, 36.1, -79.95, {"pv": 10.0}, {"pv": model})
    moved = wx.set_axis(idx - pd.Timedelta(hours=15))
    east, _, _ = generation_forecast(moved, 36.1, -79.95 + 225.0, {"pv": 10.0}, {"pv": model})
    assert home.p50.max() > 3.0
    # the sun's declination moves a little in 15 h: the physics and elevation differ by under 1 %
    np.testing.assert_allclose(east.p50.to_numpy(), home.p50.to_numpy(), atol=0.2)


@pytest.mark.skipif(not (shared_data_dir() / "gefcom2012" / "wind").exists(),
                    reason="GEFCom2012 wind data not found beside the checkout (../shared/data)")
def test_wind_correction_beats_physics_and_climatology():
    r = wind_backtest(load_gefcom_wind())
    assert r["corrected"]["nmae"] < r["physics"]["nmae"] < r["climatology"]["nmae"]
    assert 0.7 <= r["corrected"]["coverage_p10_p90"] <= 0.9


def test_generation_rows_store_forecast_and_measured_ramps_on_a_fresh_store(tmp_path):
    """What failed every scheduled forecast_job on a fresh start (`ConversionException: Could not convert
    'datetime' to TIMESTAMP WITH TIME ZONE` at the forecast.ramps insert): forecast ramps on the weather's
    UTC index and measured ramps from the first 24 h of telemetry, stored together in a new store."""
    import duckdb

    from gridpipeline.forecast.assets import ensure_forecast_schema
    from gridpipeline.forecast.generation import (
        generation_forecast,
        generation_rows,
        measured_ramps,
        write_generation,
    )
    from gridpipeline.forecast.weather import weather_features as features

    issue = pd.Timestamp("2026-06-21 00:00", tz="UTC")
    idx = pd.date_range(issue, periods=288, freq="5min")
    hour = np.asarray(idx.hour + idx.minute / 60)
    ghi = np.clip(900 * np.sin((hour - 4) / 16 * np.pi), 0, None)  # a clear day at ~52 N: sunrise/sunset ramps
    raw = pd.DataFrame({"temperature": 18.0, "dew_point": 10.0, "wind_speed_10m": np.linspace(2, 14, 288),
                        "cloud_cover": 0.0, "ghi": ghi}, index=idx)
    wx = features(raw, 52.0, 10.0, "Europe/Berlin")
    out, rp, _ = generation_forecast(wx, 52.0, 10.0, {"pv": 5.0, "wind": 4.0}, {"pv": None, "wind": None})
    assert len(rp) >= 1 and pd.DatetimeIndex(rp.start).tz is not None  # forecast ramps: tz-aware UTC
    # the last 24 h measured, on the telemetry's UTC index: a cloud edge takes PV from 4.5 to 0.5 MW
    past = idx - pd.Timedelta(days=1)
    pv = np.clip(5.0 * np.sin((hour - 4) / 16 * np.pi), 0, None)
    pv[150:160] = 0.5
    measured = pd.DataFrame({"gen:pv": pv}, index=past)
    mr, meta = measured_ramps(measured, {"pv": 5.0})
    assert meta["pv_measured_ramps_24h"] >= 1
    ramps = pd.concat([rp, mr], ignore_index=True)
    rows, ramp_rows = generation_rows(out, ramps, issue, stale=False)
    with duckdb.connect(str(tmp_path / "store.duckdb")) as con:
        ensure_forecast_schema(con)
        write_generation(con, issue, rows, ramp_rows)
        write_generation(con, issue, rows, ramp_rows)  # a re-run replaces the issue's rows
        n, kinds, t = con.execute("SELECT count(*), count(DISTINCT kind), min(start) FROM forecast.ramps").fetchone()
        types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                                 "WHERE table_name = 'ramps'").fetchall())
        gen = con.execute("SELECT count(*), min(lead_minutes), max(lead_minutes) FROM forecast.generation").fetchone()
    assert n == len(ramps) and kinds >= 2
    assert past[0].tz_localize(None) <= pd.Timestamp(t) < issue.tz_localize(None)  # the measured ramp, naive UTC
    assert types["start"] == "TIMESTAMP" and types["end"] == "TIMESTAMP"
    assert gen == (2 * 288, 5, 288 * 5)
