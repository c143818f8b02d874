"""Tests of the grid world: committed sample data, injections, weather, zones and the truth engine."""

from __future__ import annotations

import copy
import itertools
import json
import warnings

import numpy as np
import pandas as pd
import pytest

from gridpipeline.settings import PROJECT_ROOT
from gridpipeline.world import Injections, TruthEngine, load_world
from gridpipeline.world import build as wb
from gridpipeline.world.model import (
    NOISE_SIGMA,
    as_utc,
    load_noise,
    profile_day,
    profile_position,
    sample_dir,
    year_position,
)

DATA = PROJECT_ROOT / "data"


@pytest.fixture(scope="module")
def world():
    return load_world("sample", data_dir=DATA)


@pytest.fixture(scope="module")
def engine(world):
    return TruthEngine(world.net)


@pytest.fixture(scope="module")
def simbench_net():
    pytest.importorskip("simbench")
    net = wb.load_simbench(wb.WORLD_SPECS["sample"].simbench_code)
    wb.fix_simbench_net(net)
    return net


def _runpp(net, inj: Injections, k: int, switch_closed=None):
    """pandapower power flow of step ``k``, set up like the truth engine (ideal slack, pi trafos)."""
    import pandapower as pp

    net = copy.deepcopy(net)
    for table, p, q in (
        ("load", inj.load_p_mw, inj.load_q_mvar),
        ("sgen", inj.sgen_p_mw, inj.sgen_q_mvar),
        ("storage", inj.storage_p_mw, inj.storage_q_mvar),
    ):
        net[table]["p_mw"] = p[k]
        net[table]["q_mvar"] = q[k]
        net[table]["scaling"] = 1.0
    if switch_closed is not None:
        net.switch["closed"] = switch_closed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net, trafo_model="pi", tolerance_mva=1e-10, calculate_voltage_angles=True, numba=False)
    return net


# ------------------------------------------------------------------------------------------ data & loading
def test_sample_files_exist_and_are_small():
    d = sample_dir(DATA)
    sizes = {
        f: (d / f).stat().st_size
        for f in ("network.json", "profiles.parquet", "weather.parquet", "world.json")
    }
    assert sizes["profiles.parquet"] < 15e6
    assert sum(sizes.values()) < 20e6
    meta = json.loads((d / "world.json").read_text())
    assert meta["simbench_code"] == "1-MVLV-semiurb-5.220-0-sw"
    assert meta["timezone"] == "America/New_York" and "profile_clock_utc_offset_h" not in meta


def test_sample_world_loads_with_expected_sizes(world):
    # how fast it loads is a benchmark's figure, not a test's (a loaded CI machine took 2.6 s)
    w = load_world("sample", data_dir=DATA)
    net = w.net
    assert (len(net.bus), len(net.load), len(net.sgen), len(net.ext_grid)) == (227, 218, 129, 1)
    assert len(net.line) == 230 and len(net.trafo) == 3 and len(net.switch) == 468
    assert set(net.sgen.type) >= {"PV", "Wind_MV", "PV_MV"}
    assert "profiles" not in net
    assert net.load["profile"].notna().all() and net.sgen["profile"].notna().all()
    assert (net.trafo.vector_group == "Dyn5").all()
    st = net.storage[net.storage.type == "battery"]
    assert list(st.name) == ["BESS_1", "BESS_2", "BESS_3", "BESS_4"]
    assert (st.max_e_mwh == 2.0).all() and (st.sn_mva == 1.0).all() and (st.owner == "DSO").all()
    assert (net.bus.vn_kv.loc[st.bus] == 20.0).all() and st.bus.nunique() == 4
    # Spread over four different MV feeders.
    assert w.zones.loc[st.bus].nunique() == 4
    assert w.zones.loc[st.bus].str.startswith("MV_Feeder").all()
    # The VPP: 60 home batteries, 5-10 kW and 10-15 kWh, on LV buses, first at every LV PV site.
    home = net.storage[net.storage.type == "home_battery"]
    assert len(home) == 60 and home.bus.nunique() == 60 and (home.vpp == "VPP_HOME").all()
    assert home.max_p_mw.between(0.005, 0.010).all() and home.max_e_mwh.between(0.010, 0.015).all()
    assert (net.bus.vn_kv.loc[home.bus] == 0.4).all()
    pv_buses = set(net.sgen.bus[(net.sgen.type == "PV") & (net.bus.vn_kv.loc[net.sgen.bus].to_numpy() < 1)])
    assert len(pv_buses) == 9 and pv_buses <= set(home.bus)
    for col in ("eta_charge", "eta_discharge", "soc_min_percent", "soc_max_percent", "degradation_eur_per_mwh"):
        assert net.storage[col].notna().all() and (net.storage[col] > 0).all()
    assert (net.storage.soc_min_percent < net.storage.soc_max_percent).all()
    # Every PV and wind generator is curtailable, with its rating.
    curt = net.sgen[net.sgen.curtailable]
    assert len(curt) == 127 and curt.type.str.startswith(("PV", "lv_RES", "Wind")).all() and (curt.sn_mva > 0).all()


def test_every_bus_has_a_zone(world):
    z = world.zones
    assert z.index.equals(world.net.bus.index)
    assert z.notna().all() and not z.isin(["nan", "None", ""]).any()
    expected = {"HV", "MV_Substation", "LV5.220"} | {f"MV_Feeder{k}" for k in range(1, 10)}
    assert set(z) == expected
    assert (world.net.bus.vn_kv[z == "LV5.220"] == 0.4).all()
    assert (world.net.bus.vn_kv[z == "HV"] == 110.0).all()
    assert (z == "LV5.220").sum() == 110


# ------------------------------------------------------------------------------------------ injections
def test_injections_shapes_and_storage_schedule(world):
    times = pd.date_range("2026-06-15", periods=2880, freq="30s", tz="UTC")
    inj = world.injections_at(times)
    n = len(times)
    assert inj.load_p_mw.shape == (n, 218) and inj.load_q_mvar.shape == (n, 218)
    assert inj.sgen_p_mw.shape == (n, 129) and inj.storage_p_mw.shape == (n, 64)
    assert np.array_equal(inj.load_index, world.net.load.index.to_numpy())
    assert np.isfinite(inj.load_p_mw).all() and (inj.load_p_mw > 0).all()
    assert (inj.sgen_p_mw >= -1e-4).all()  # SimBench wind profiles dip to -1e-5 (standby consumption)
    # Greensboro solar time is UTC - 5.33 h: charging 15:20-19:20 UTC, discharging 22:20-02:20 UTC.
    solar = (times.hour + times.minute / 60 - 79.95 / 15) % 24
    p = inj.storage_p_mw
    half = 0.5 * world.net.storage.max_p_mw.to_numpy()  # half of each rating (1 MW MV, 5-10 kW homes)
    assert np.allclose(p[(solar >= 10) & (solar < 14)], half)
    assert np.allclose(p[(solar >= 17) & (solar < 21)], -half)
    assert np.allclose(p[(solar < 10) | ((solar >= 14) & (solar < 17)) | (solar >= 21)], 0.0)
    # Energy balance over the day: charged energy equals discharged energy.
    assert abs(p.sum(axis=0)).max() < 1e-9


def test_injections_deterministic_and_chunk_independent(world):
    times = pd.date_range("2026-03-10 08:00:07", periods=600, freq="30s", tz="UTC")
    full = world.injections_at(times)
    again = world.injections_at(times)
    assert np.array_equal(full.load_p_mw, again.load_p_mw)
    # Chunks of odd sizes, in reverse order.
    bounds = [0, 1, 8, 50, 51, 333, 600]
    parts = {a: world.injections_at(times[a:b]) for a, b in itertools.pairwise(bounds)}
    for f in ("load_p_mw", "load_q_mvar", "sgen_p_mw", "storage_p_mw"):
        glued = np.vstack([getattr(parts[a], f) for a in bounds[:-1]])
        assert np.array_equal(glued, getattr(full, f)), f
    taken = full.take(slice(50, 333))
    assert taken.times.equals(full.times[50:333])
    assert np.array_equal(taken.load_p_mw, np.vstack([parts[50].load_p_mw, parts[51].load_p_mw]))
    assert np.array_equal(full.take(np.arange(600) % 2 == 0).storage_p_mw, full.storage_p_mw[::2])
    # A sparse subset (other noise code path) gives the same values as the dense run.
    sub = world.injections_at(times[::37])
    assert np.array_equal(sub.load_p_mw, full.load_p_mw[::37])
    shuffled = np.random.default_rng(1).permutation(len(times))
    assert np.array_equal(world.injections_at(times[shuffled]).load_q_mvar, full.load_q_mvar[shuffled])


def test_load_noise_statistics():
    ids = np.arange(300)
    times = pd.date_range("2026-01-05", periods=2000, freq="30s", tz="UTC")
    x = load_noise(ids, times)
    assert 0.8 * NOISE_SIGMA < x.std() < 1.2 * NOISE_SIGMA
    assert abs(x.mean()) < 0.1 * NOISE_SIGMA
    lag1 = np.corrcoef(x[1:].ravel(), x[:-1].ravel())[0, 1]
    assert 0.7 < lag1 < 0.85  # exp(-30 s / 120 s) = 0.78
    # Between 30-s grid points the noise is interpolated linearly.
    t = pd.DatetimeIndex(["2026-01-05 00:00:00", "2026-01-05 00:00:10", "2026-01-05 00:00:30"], tz="UTC")
    y = load_noise(ids, t)
    assert np.allclose(y[1], y[0] + (y[2] - y[0]) / 3, atol=1e-15)


def test_2026_dates_map_onto_the_profile_year(world):
    # 2026 began on a Thursday, 2016 on a Friday: every 2026 date maps to the 2016 day of year before
    # it, which has its weekday. 2026-03-01 05:00 UTC is Sunday Mar 1 00:00 EST -> Sunday 2016-02-28.
    t = pd.DatetimeIndex(
        [
            "2026-03-01 05:00",
            "2026-03-01 05:07:30",
            "2026-01-01 04:52:30",  # Wed 2025-12-31 23:52:30 EST: 2025 shifts by -2 -> 2016-12-28 (Wed)
            "2028-02-29 05:00",  # a Tuesday of a leap year -> Tue 2016-03-01 (shift +1)
            "2026-12-31 12:00",  # Thu 07:00 EST -> Thu 2016-12-29
            "2026-07-04 16:00",  # Sat 12:00 EDT -> Sat 2016-07-02
        ],
        tz="UTC",
    )
    pos = profile_position(t, "America/New_York")
    expected = [58 * 96, 58 * 96 + 0.5, 362 * 96 + 95.5, 60 * 96, 363 * 96 + 28, 183 * 96 + 48]
    assert np.allclose(pos, expected)
    inj = world.injections_at(t)
    prof = world.profiles
    net = world.net
    noise = 1.0 + load_noise(net.load.index.to_numpy(), t)
    base = inj.load_p_mw / noise
    for j in (0, 17, 150, 217):
        col = prof[f"load/{net.load.profile.iloc[j]}/pload"].to_numpy(dtype=float)
        p_mw = net.load.p_mw.iloc[j]
        assert base[0, j] == pytest.approx(col[58 * 96] * p_mw, rel=1e-12)
        assert base[1, j] == pytest.approx((col[58 * 96] + col[58 * 96 + 1]) / 2 * p_mw, rel=1e-12)
        assert base[2, j] == pytest.approx((col[362 * 96 + 95] + col[363 * 96]) / 2 * p_mw, rel=1e-12)
        assert base[3, j] == pytest.approx(col[60 * 96] * p_mw, rel=1e-12)
        assert base[5, j] == pytest.approx(col[183 * 96 + 48] * p_mw, rel=1e-12)
    # The last quarter-hour of 2016 interpolates towards its first row (the axis wraps).
    last = world.profile_factors(pd.DatetimeIndex(["2022-01-01 04:52:30"], tz="UTC"))  # Fri 23:52:30 EST
    assert profile_position(pd.DatetimeIndex(["2022-01-01 04:52:30"], tz="UTC"))[0] == pytest.approx(364 * 96 + 95.5)
    name = f"load/{net.load.profile.iloc[0]}/pload"
    col = prof[name].to_numpy(dtype=float)
    j = [c for c in prof.columns if c != "step"].index(name)
    assert last[0, j] == pytest.approx((col[364 * 96 + 95] + col[364 * 96 + 96]) / 2)
    # Times given in another time zone are the same instants.
    t_ny = t.tz_convert("America/New_York")
    assert np.array_equal(world.injections_at(t_ny).load_p_mw, inj.load_p_mw)
    assert as_utc(t_ny).equals(t)
    # The weather keeps its UTC month/day mapping.
    assert np.allclose(year_position(t[:1], 0.0), [(31 + 29) * 96 + 20])


def test_profile_days_keep_the_weekday_and_the_season():
    days = pd.date_range("2019-01-01", "2032-12-31", freq="D")
    d = profile_day(days.dayofyear.to_numpy() - 1, days.dayofweek.to_numpy())
    on_2016 = pd.Timestamp("2016-01-01") + pd.to_timedelta(d, unit="D")
    assert (on_2016.dayofweek == days.dayofweek).all()  # every date gets its own weekday's shape
    assert d.min() >= 0 and d.max() <= 365
    shift = d - (days.dayofyear.to_numpy() - 1)
    wrapped = np.abs(shift) > 3  # moved by 52 weeks back into 2016: only in the first/last days of a year
    assert (np.abs(shift[~wrapped]) <= 3).all()
    assert wrapped.any() and (np.abs(np.abs(shift[wrapped]) - 364) <= 3).all()
    assert (days[wrapped].dayofyear.isin([1, 2, 3]) | (days[wrapped].dayofyear >= 363)).all()
    # The shift is one number per calendar year, so consecutive dates of a year are consecutive days.
    per_year = pd.Series(shift[~wrapped]).groupby(days[~wrapped].year).nunique()
    assert (per_year == 1).all()
    friday = pd.Timestamp("2026-11-20")  # a Friday -> Friday 2016-11-18
    assert profile_day(np.array([friday.dayofyear - 1]), np.array([friday.dayofweek]))[0] == 322


def test_daylight_saving_time_moves_the_profiles_with_the_wall_clock(world):
    t = pd.DatetimeIndex(
        [
            "2026-03-08 06:00",  # Sun 01:00 EST, the night clocks go forward
            "2026-03-08 07:00",  # Sun 03:00 EDT: 02:00-03:00 does not exist
            "2026-11-01 05:00",  # Sun 01:00 EDT, the night clocks go back
            "2026-11-01 06:00",  # Sun 01:00 EST, the same wall-clock hour again
            "2026-01-14 17:00",  # Wed 12:00 EST
            "2026-07-15 16:00",  # Wed 12:00 EDT
        ],
        tz="UTC",
    )
    hour = (profile_position(t) % 96) / 4
    assert np.allclose(hour, [1, 3, 1, 1, 12, 12])
    f = world.profile_factors(t)
    assert np.array_equal(f[2], f[3])  # the repeated hour repeats the profile
    assert not np.array_equal(f[0], f[1])
    # Noon local, winter and summer, is noon on the profile (13:00 EST would be the old fixed clock).
    days = (profile_position(t[4:]) // 96).astype(int)
    assert list(days) == [12, 194]  # Wed 2016-01-13 and Wed 2016-07-13


@pytest.mark.parametrize("monday", ["2026-03-09", "2026-07-13", "2026-11-16"])
def test_a_week_of_load_has_its_real_weekend(world, monday):
    """The two days of least load are the real Saturday and Sunday, clearly below the working days
    (SimBench's profiles have weekends); a month/day mapping put 2016's weekend on other 2026 days."""
    local = pd.date_range(monday, periods=7 * 96, freq="15min", tz="America/New_York")
    inj = world.injections_at(local)
    total = pd.Series(inj.load_p_mw.sum(axis=1), index=local)
    daily = total.groupby(local.dayofweek).mean()
    assert set(daily.nsmallest(2).index) == {5, 6}
    assert daily[[5, 6]].mean() < 0.93 * daily[[0, 1, 2, 3, 4]].mean()


def test_weather_at(world):
    t = pd.DatetimeIndex(["2026-06-21 05:00", "2026-06-21 17:30", "2026-01-15 17:30"], tz="UTC")
    w = world.weather_at(t)
    assert w.index.equals(t)
    assert {
        "ghi",
        "dni",
        "dhi",
        "temp_air",
        "temp_dew",
        "relative_humidity",
        "wind_speed",
        "pressure",
        "cloud_cover_total",
        "cloud_cover_opaque",
    } <= set(w.columns)
    assert w.ghi.iloc[0] == 0.0  # local midnight
    assert w.ghi.iloc[1] > w.ghi.iloc[2] > 0  # near solar noon, summer above winter
    assert w.temp_air.iloc[1] > w.temp_air.iloc[2]
    assert 900 < w.pressure.min() and w.pressure.max() < 1100
    assert ((w.cloud_cover_total >= 0) & (w.cloud_cover_total <= 100)).all()


# ------------------------------------------------------------------------------------------ truth engine
def test_truth_engine_matches_pandapower(world, engine):
    # Night (batteries idle), morning, and mid-day with batteries charging.
    times = pd.DatetimeIndex(["2026-01-20 03:00", "2026-05-02 13:00", "2026-07-01 17:00"], tz="UTC")
    inj = world.injections_at(times)
    assert (inj.storage_p_mw[2] > 0).all()
    st = engine.solve(inj)
    assert st.converged.all()
    assert np.array_equal(st.bus_index, world.net.bus.index.to_numpy())
    for k in range(len(times)):
        ref = _runpp(world.net, inj, k)
        assert np.max(np.abs(st.bus_u_pu[k] - ref.res_bus.vm_pu.to_numpy())) < 1e-6
        assert np.max(np.abs(np.degrees(st.bus_u_angle_rad[k]) - ref.res_bus.va_degree.to_numpy())) < 1e-4
        assert np.allclose(st.bus_u_kv[k], ref.res_bus.vm_pu * ref.bus.vn_kv, atol=1e-6)
        assert np.allclose(st.line_p_from_mw[k], ref.res_line.p_from_mw, atol=1e-6)
        assert np.allclose(st.line_q_to_mvar[k], ref.res_line.q_to_mvar, atol=1e-6)
        assert np.allclose(st.line_i_from_ka[k], ref.res_line.i_from_ka, atol=1e-7)
        assert np.allclose(st.line_loading_percent[k], ref.res_line.loading_percent, atol=1e-4)
        assert np.allclose(st.trafo_p_hv_mw[k], ref.res_trafo.p_hv_mw, atol=1e-5)
        assert np.allclose(st.trafo_q_lv_mvar[k], ref.res_trafo.q_lv_mvar, atol=1e-5)
        assert np.allclose(st.trafo_i_lv_ka[k], ref.res_trafo.i_lv_ka, atol=1e-6)
        assert np.allclose(st.trafo_loading_percent[k], ref.res_trafo.loading_percent, atol=1e-3)
        assert np.allclose(st.load_p_mw[k], ref.res_load.p_mw, atol=1e-9)
        assert np.allclose(st.sgen_q_mvar[k], ref.res_sgen.q_mvar, atol=1e-9)
        assert np.allclose(st.storage_p_mw[k], ref.res_storage.p_mw, atol=1e-9)
        assert np.allclose(st.ext_grid_p_mw[k], ref.res_ext_grid.p_mw, atol=1e-6)
        assert np.allclose(st.ext_grid_q_mvar[k], ref.res_ext_grid.q_mvar, atol=1e-6)


def test_a_day_solves_in_one_batch(world, engine):
    # its speed is a benchmark's figure, not a test's
    times = pd.date_range("2026-06-15", periods=2880, freq="30s", tz="UTC")
    inj = world.injections_at(times)
    st = engine.solve(inj)
    assert st.converged.all() and st.bus_u_pu.shape == (2880, 227)
    assert np.nanmin(st.bus_u_pu) > 0.9 and np.nanmax(st.bus_u_pu) < 1.1


def test_opening_switches_changes_the_state(world, engine):
    net = world.net
    times = pd.DatetimeIndex(["2026-04-01 16:00"] * 3, tz="UTC")
    inj = world.injections_at(times)
    closed = np.tile(net.switch.closed.to_numpy(dtype=bool), (3, 1))
    # A closed MV line switch whose line carries power: open it in step 1.
    base = engine.solve(inj)
    pos = {i: k for k, i in enumerate(net.line.index)}
    mv = net.switch[
        (net.switch.et == "l")
        & net.switch.closed
        & (net.bus.vn_kv.reindex(net.switch.bus).to_numpy() == 20.0)
    ]
    flows = np.array([abs(base.line_p_from_mw[0, pos[e]]) for e in mv.element])
    sw = mv.index[int(np.argmax(flows))]
    line = pos[net.switch.element.loc[sw]]
    k_sw = net.switch.index.get_loc(sw)
    closed[1, k_sw] = False
    # Step 2: open the MV bus coupler (a bus-bus switch, a PGM link).
    coupler = net.switch.index[
        (net.switch.et == "b") & (net.bus.vn_kv.reindex(net.switch.bus).to_numpy() == 20.0)
    ]
    closed[2, net.switch.index.get_loc(coupler[0])] = False
    st = engine.solve(inj, switch_closed=closed)
    assert st.converged.all()
    assert abs(base.line_p_from_mw[0, line]) > 0.05
    assert abs(st.line_p_from_mw[0, line] - base.line_p_from_mw[0, line]) < 1e-12
    # an open line carries nothing but the milliwatts of charging losses at its energised end
    assert abs(st.line_p_from_mw[1, line]) < 1e-6 and abs(st.line_i_to_ka[1, line]) < 1e-9
    assert np.nanmax(np.abs(st.bus_u_pu[1] - st.bus_u_pu[0])) > 1e-4
    assert (
        np.nanmax(np.abs(st.trafo_p_hv_mw[2] - st.trafo_p_hv_mw[0])) > 0.1
    )  # each trafo feeds its own busbar
    # pandapower agrees on the switched topologies.
    for k in (1, 2):
        ref = _runpp(net, inj, k, switch_closed=closed[k])
        ok = ref.res_bus.vm_pu.notna().to_numpy()
        assert np.array_equal(ok, np.isfinite(st.bus_u_pu[k]))
        assert np.max(np.abs(st.bus_u_pu[k][ok] - ref.res_bus.vm_pu.to_numpy()[ok])) < 1e-6


def test_non_convergence_is_reported_per_step(world, engine):
    times = pd.date_range("2026-06-15 12:00", periods=3, freq="30s", tz="UTC")
    inj = world.injections_at(times)
    p = inj.load_p_mw.copy()
    p[1] *= 500.0  # collapses the voltage
    bad = Injections(**{**inj.__dict__, "load_p_mw": p})
    st = engine.solve(bad)
    assert list(st.converged) == [True, False, True]
    assert np.isnan(st.bus_u_pu[1]).all() and np.isnan(st.line_p_from_mw[1]).all()
    assert np.isfinite(st.bus_u_pu[[0, 2]]).all()


def test_empty_batch(world, engine):
    st = engine.solve(world.injections_at(pd.DatetimeIndex([], tz="UTC")))
    assert len(st) == 0 and st.bus_u_pu.shape == (0, 227)


# ------------------------------------------------------------------------------------------ vs SimBench
def test_stored_profiles_reproduce_simbench(world, simbench_net):
    import simbench as sb

    abs_sb = sb.get_absolute_values(simbench_net, True)
    steps = np.array([0, 1, 4000, 17_000, 35_135])
    for table, field, elems in (
        ("load", "p_mw", [0, 5, 120, 217]),
        ("load", "q_mvar", [0, 5, 120, 217]),
        ("sgen", "p_mw", [0, 9, 119, 128]),
    ):
        ref = abs_sb[(table, field)].to_numpy()[np.ix_(steps, elems)]
        mine = wb.absolute_values(world.net, world.profiles, table, field, steps)[:, elems]
        assert np.max(np.abs(mine - ref)) < 1e-4


def test_build_is_reproducible(world, simbench_net):
    # Profiles and battery placement from a fresh SimBench net equal the committed ones.
    fresh = wb.profiles_frame(simbench_net)
    assert list(fresh.columns) == list(world.profiles.columns)
    assert np.array_equal(
        fresh.drop(columns="step").to_numpy(), world.profiles.drop(columns="step").to_numpy()
    )
    assert wb.choose_storage_buses(simbench_net, 4) == world.net.storage.bus.tolist()[:4]
    assert wb.choose_home_battery_buses(simbench_net, 60) == world.net.storage.bus.tolist()[4:]
    # Weather from pvlib's TMY3 file equals the committed weather.
    weather, station = wb.weather_frame()
    assert station["latitude"] == 36.1 and station["tmy3_utc_offset_h"] == -5.0
    pd.testing.assert_frame_equal(weather, world.weather, check_dtype=False)


def test_energy_registers_run_on_across_new_year(world, tmp_path):
    """Years map onto the profile year differently (weekdays, leap days), so their energies differ;
    the kWh registers must still run on smoothly at New Year instead of jumping by years of that
    difference."""
    from datetime import datetime, timedelta

    from gridpipeline.telemetry.registry import build_registry
    from gridpipeline.world.scada import ScadaSimulator

    reg = build_registry(world.net, world.zones)
    reg = pd.concat([reg[reg.kind == "energy"], reg[reg.kind == "v_mag"].head(1)])  # one fast sensor sets the step
    sim = ScadaSimulator(world, reg, tmp_path / "landing")
    e = (reg.kind == "energy").to_numpy()
    first = datetime(2028, 12, 31, 23, 15)  # a leap year into a common year: the largest difference
    values = np.vstack([sim.true_values(first + k * timedelta(minutes=15))[1][0, e] for k in range(4)])
    steps = np.diff(values, axis=0)  # kWh per quarter-hour: 23:15-23:30, 23:30-23:45 (Dec 31), 23:45-00:00
    big = steps[0] > 1.0  # loads of 4 kW and more, where rounding to 0.01 kWh does not matter
    assert big.sum() > 50 and (steps >= 0).all()
    # Over the New Year quarter-hour a register grows like over the one before: the old per-year
    # base would have moved it by up to ~9 x 0.6 % of a year's energy, thousands of quarter-hours.
    ratio = steps[2, big] / steps[1, big]
    assert 0.5 < ratio.min() and ratio.max() < 2.0


def test_a_moved_world_shows_at_t_what_the_unmoved_one_shows_at_t_plus_the_shift(world):
    """A world moved 15 h east (for a benchmark that needs the sun while it is night at the sample's
    place): weather, PV, wind and the wall-clock load at UTC t are the unmoved world's at t + 15 h,
    in winter (the moved zone has no daylight saving time, America/New_York has none in January)."""
    moved = load_world("sample", data_dir=DATA, shift_h=15)
    assert moved.meta["timezone"] == "Etc/GMT-10" and moved.meta["location"]["utc_offset_h"] == 10.0
    assert moved.meta["location"]["longitude"] == pytest.approx(-79.95 + 225.0)
    t = pd.date_range("2027-01-12 00:00", periods=48, freq="30min", tz="UTC")
    t_h = t + pd.Timedelta(hours=15)
    pd.testing.assert_frame_equal(moved.weather_at(t).reset_index(drop=True),
                                  world.weather_at(t_h).reset_index(drop=True))
    a, b = moved.injections_at(t), world.injections_at(t_h)
    # the sun's position moves with the longitude up to its change of declination in 15 h
    np.testing.assert_allclose(a.sgen_p_mw, b.sgen_p_mw, atol=0.01 * max(1.0, b.sgen_p_mw.max()))
    assert b.sgen_p_mw.max() > 0.5
    # the loads follow the same wall clock (the noise is keyed by the UTC instant, so compare expectations)
    np.testing.assert_allclose(moved.expected_load_p_mw(t), world.expected_load_p_mw(t_h), rtol=1e-9)
    np.testing.assert_allclose(a.storage_p_mw, b.storage_p_mw)
    # no shift: the world as committed
    assert load_world("sample", data_dir=DATA, shift_h=0).meta["timezone"] == "America/New_York"
