"""Cold-load pickup: the world's model, and the pipeline's calibration from the telemetry of blocks it
restored (it recovers the world's peak and decay without reading them)."""

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from gridpipeline.load.clpu import default, fit, pickup_curves, read, write
from gridpipeline.world import clpu as world_clpu


def _telemetry(block_loads, outages, rng):
    """30-second P readings of loads (load -> normal MW) with outages (start, minutes) of their block,
    drawn with the world's cold-load pickup after each and 1 % noise."""
    ts = pd.date_range("2026-12-01 00:00", "2026-12-01 12:00", freq="30s")
    rows = []
    for load, mw in block_loads.items():
        p = np.full(len(ts), mw)
        for start, minutes in outages:
            off = (ts >= start) & (ts < start + timedelta(minutes=minutes))
            p[off] = 0.0
            dt = (ts - (start + timedelta(minutes=minutes))).total_seconds().to_numpy() / 60.0
            on = dt >= 0
            p[on] *= 1.0 + (world_clpu.peak(minutes) - 1.0) * np.exp(-dt[on] / world_clpu.TAU_MIN)
        p = p * (1 + 0.01 * rng.standard_normal(len(ts)))
        rows.append(pd.DataFrame({"load_id": load, "ts": ts, "mw": np.where(p < 1e-9, 0.0, p)}))
    return pd.concat(rows, ignore_index=True)


def test_the_calibration_recovers_the_worlds_peak_and_decay_from_telemetry_alone(tmp_path):
    rng = np.random.default_rng(3)
    t0 = datetime(2026, 12, 1, 1, 0)
    outages = [(t0, 40), (t0 + timedelta(hours=3), 60), (t0 + timedelta(hours=6), 25), (t0 + timedelta(hours=9), 5)]
    readings = _telemetry({1: 0.3, 2: 0.2}, outages, rng)
    lb = pd.Series({1: 7, 2: 7})
    restored = [(7, s + timedelta(minutes=m, seconds=20)) for s, m in outages]
    curves = pickup_curves(readings, lb, restored)
    assert curves.groupby("restored_at").ngroups == 4
    cal, per = fit(curves)
    assert cal.events == 3  # the 5-minute outage is too short to count
    assert cal.decay_min == pytest.approx(world_clpu.TAU_MIN, rel=0.1)
    peaks = world_clpu.peak(np.array([40.0, 60.0, 25.0]))
    assert cal.factor == pytest.approx(float(np.quantile(peaks, 0.9)), abs=0.05)
    assert per.sort_values("off_min").peak.iloc[-1] == pytest.approx(float(world_clpu.peak(60.0)), abs=0.05)
    write(tmp_path, cal)
    assert read(tmp_path).factor == cal.factor and "fitted on 3" in read(tmp_path).basis


def test_without_enough_restorations_the_literature_value_holds(tmp_path):
    assert read(tmp_path) == default()
    cal, _ = fit(pd.DataFrame(columns=["block", "restored_at", "off_min", "minute", "ratio"]))
    assert cal.factor == 2.0 and cal.events == 0


def test_the_world_draws_more_after_an_outage_and_the_excess_decays():
    import pandapower as pp

    from gridpipeline.settings import PROJECT_ROOT

    net = pp.from_json(str(PROJECT_ROOT / "data" / "sample_grid" / "network.json"))
    cb = net.switch.index[net.switch.type.isin(["CB", "LBS"]) & net.switch.closed.astype(bool)][0]
    c = world_clpu.ColdLoadPickup(net)
    t0 = datetime(2026, 12, 1, 8, 0)
    events = [(t0, int(cb), False), (t0 + timedelta(minutes=60), int(cb), True)]
    times = pd.date_range(t0 + timedelta(minutes=60), periods=4, freq="15min", tz="UTC")
    f = c.factor(times, events)
    hit = np.flatnonzero(f[0] > 1.0)
    assert len(hit) > 0
    assert f[0, hit] == pytest.approx(float(world_clpu.peak(60.0)))
    assert (np.diff(f[:, hit[0]]) < 0).all()  # decays
    assert f[-1, hit[0]] - 1 == pytest.approx((world_clpu.peak(60.0) - 1) * np.exp(-45 / world_clpu.TAU_MIN))
    assert c.factor(times, []) is None


def test_the_asset_fits_on_the_ledgers_restorations_and_the_telemetry_and_writes_what_the_responder_reads(
        tmp_path, monkeypatch):
    import duckdb
    from dagster import materialize
    from dagster_duckdb import DuckDBResource

    from gridpipeline.ledger.store import Ledger
    from gridpipeline.load.assets import clpu_calibration
    from gridpipeline.load.blocks import switchable_blocks
    from gridpipeline.settings import get_settings, reset_settings
    from gridpipeline.sources.network import load_network_model
    from gridpipeline.sources.resources import NetworkModelResource, SettingsResource
    from gridpipeline.store import ensure_schema

    monkeypatch.setenv("GRIDPIPELINE_HOME", str(tmp_path))
    monkeypatch.setenv("GRIDPIPELINE_DUCKDB_PATH", str(tmp_path / "store.duckdb"))
    reset_settings()
    s = get_settings()
    net = load_network_model(s.network).net
    lb = switchable_blocks(net).load_block(net)
    block = int(lb.value_counts().index[0])
    loads = [int(i) for i in lb[lb == block].index]
    t0 = datetime(2026, 12, 1, 1, 0)
    outages = [(t0, 40), (t0 + timedelta(hours=3), 60), (t0 + timedelta(hours=6), 25)]
    readings = _telemetry({i: 0.1 for i in loads}, outages, np.random.default_rng(5))
    led = Ledger(s.ledger)
    for st, m in outages:
        led.append("restoration", {"restored": [block]}, mode="automatic", actor="responder",
                   created_at=st + timedelta(minutes=m))
    with duckdb.connect(str(s.db_path)) as con:
        ensure_schema(con)
        sensors = pd.DataFrame({"sensor_id": range(1, len(loads) + 1), "name": [f"P:{i}" for i in loads], "kind": "p_inj",
                                "element_type": "load", "element_id": loads, "terminal": None, "bus": 0, "zone": "z",
                                "source": "RTU", "unit": "MW", "nominal": 1.0, "sigma": 0.01, "interval_s": 30})
        con.execute("INSERT INTO telemetry.sensors SELECT * FROM sensors")
        sid = dict(zip(loads, sensors.sensor_id))
        clean = pd.DataFrame({"sensor_id": readings.load_id.map(sid), "ts": readings.ts, "value": readings.mw,
                              "quality": "good"})
        con.execute("CREATE SCHEMA IF NOT EXISTS clean")
        con.execute("CREATE TABLE clean.clean_telemetry AS SELECT * FROM clean")
    res = {"duckdb": DuckDBResource(database=str(s.db_path)), "settings": SettingsResource.from_settings(s),
           "network": NetworkModelResource(path=str(s.network))}
    out = materialize([clpu_calibration], resources=res)
    assert out.success
    meta = out.get_asset_materialization_events()[0].materialization.metadata
    assert meta["events_used"].value == 3
    assert meta["decay_min"].value == pytest.approx(world_clpu.TAU_MIN, rel=0.1)
    (check,) = out.get_asset_check_evaluations()
    assert check.passed
    assert read(s.home).events == 3


def test_the_worlds_timeline_grows_with_new_switch_events_as_a_rebuild_would_have_it():
    """The outstation asks every 0.1 s: new events extend the timeline from where it stood (a rebuild per
    new event cost a connectivity search per event ever recorded), and the result is the rebuild's."""
    import pandapower as pp

    from gridpipeline.settings import PROJECT_ROOT

    net = pp.from_json(str(PROJECT_ROOT / "data" / "sample_grid" / "network.json"))
    cbs = net.switch.index[net.switch.type.isin(["CB", "LBS"]) & net.switch.closed.astype(bool)][:6]
    t0 = datetime(2026, 12, 1, 8, 0)
    events = []
    for k in range(40):
        sw = int(cbs[k % len(cbs)])
        events.append((t0 + timedelta(minutes=3 * k), sw, (k // len(cbs)) % 2 == 1))
    growing = world_clpu.ColdLoadPickup(net)
    for n in range(1, len(events) + 1):
        growing._timeline(events[:n])
    fresh = world_clpu.ColdLoadPickup(net)._timeline(events)
    got = growing._timeline(events)
    assert len(got) == len(fresh) > 0
    for (l1, a1, m1), (l2, a2, m2) in zip(got, fresh):
        assert a1 == a2 and l1.tolist() == l2.tolist() and m1 == pytest.approx(m2)
    # an event out of order (earlier than the last one) rebuilds from the start, to the same result
    late = sorted([*events, (t0 + timedelta(minutes=1), int(cbs[0]), False)])
    assert len(growing._timeline(late)) == len(world_clpu.ColdLoadPickup(net)._timeline(late))
