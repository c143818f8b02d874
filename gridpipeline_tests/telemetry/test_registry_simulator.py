"""Sensor registry and SCADA simulator on the sample world."""

from __future__ import annotations

from datetime import datetime

import duckdb
import numpy as np
import pytest

from gridpipeline.common import landing as lz
from gridpipeline.telemetry.registry import KINDS, PlacementPolicy, build_registry
from gridpipeline.world.model import load_world
from gridpipeline.world.scada import FaultConfig, ScadaSimulator, faults_from_string

W = datetime(2026, 11, 20, 12, 0)


@pytest.fixture(scope="module")
def world():
    return load_world("sample")


@pytest.fixture(scope="module")
def registry(world):
    return build_registry(world.net, world.zones)


def test_registry_covers_every_kind_with_sane_attributes(world, registry):
    assert set(registry.kind) == set(KINDS)
    assert registry.sensor_id.is_unique and registry.name.is_unique
    assert (registry.sigma >= 0).all() and (registry.nominal > 0).all() and (registry.interval_s > 0).all()
    # Every MV bus has a voltage sensor; about half the plain LV buses do.
    v = registry[registry.kind == "v_mag"]
    mv = set(world.net.bus.index[world.net.bus.vn_kv >= 1.0])
    assert mv <= set(v.element_id)
    assert (registry.groupby("source").size() <= PlacementPolicy().max_sensors_per_source).all()
    # Deterministic: same net and policy, same ids.
    again = build_registry(world.net, world.zones)
    assert again.equals(registry)


def test_full_policy_adds_sensors_and_keeps_ids_of_fractional_choices(world, registry):
    full = build_registry(world.net, world.zones, PlacementPolicy.full())
    assert len(full) > len(registry)
    assert set(registry[registry.kind == "v_mag"].element_id) <= set(full[full.kind == "v_mag"].element_id)


def test_clean_simulation_reproduces_truth_within_sigma(world, registry, tmp_path):
    sim = ScadaSimulator(world, registry, tmp_path / "landing", faults=FaultConfig.none(), seed=1,
                         truth_path=tmp_path / "truth.duckdb")
    files = sim.simulate_window(W)
    sim.close()
    rows = sum(f.table.num_rows for f in files)
    # Samples on each sensor's own interval grid inside the window (12:00 is on the 15-min grid).
    expected = int(sum(len(range(0, 300, iv)) for iv in registry.interval_s))
    assert rows == expected                          # no faults: every sample delivered exactly once
    for f in files:
        sim.write(f)
    con = duckdb.connect(str(tmp_path / "truth.duckdb"))
    truth = con.execute("SELECT sensor_id, ts, true_value FROM truth_readings").df()
    assert len(truth) == expected
    landed = duckdb.sql(f"SELECT sensor_id, ts::TIMESTAMP AS ts, value FROM read_parquet('{tmp_path}/landing/**/*.parquet')").df()
    m = landed.merge(truth, on=["sensor_id", "ts"]).merge(registry[["sensor_id", "sigma", "kind"]], on="sensor_id")
    z = (m.value - m.true_value) / m.sigma.where(m.sigma > 0)
    analog = m[m.sigma > 0]
    assert abs(z[analog.index].std() - 1.0) < 0.1      # noise has the registry's sigma
    exact = m[m.kind.isin(["switch_status", "energy"])]
    assert np.allclose(exact.value, exact.true_value)
    # Voltages are physical: around nominal.
    v = m[m.kind == "v_mag"].merge(registry[["sensor_id", "nominal"]], on="sensor_id")
    assert v.true_value.div(v.nominal).between(0.9, 1.1).all()


def test_simulation_is_deterministic_and_chunk_independent(world, registry, tmp_path):
    a = ScadaSimulator(world, registry, tmp_path / "a", seed=3)
    b = ScadaSimulator(world, registry, tmp_path / "b", seed=3)
    b.simulate_window(W - lz.WINDOW)                    # a different history before the window
    fa, fb = a.simulate_window(W), b.simulate_window(W)
    assert [f.path.name for f in fa] == [f.path.name for f in fb]
    same = lambda x, y: x.table.to_pandas().equals(y.table.to_pandas())
    assert all(same(x, y) and x.arrival == y.arrival for x, y in zip(fa, fb))
    c = ScadaSimulator(world, registry, tmp_path / "c", seed=4)
    assert not all(same(x, y) for x, y in zip(fa, c.simulate_window(W)))


def test_fault_spec_parsing_names_unknown_settings():
    assert faults_from_string("none").gap_rate == 0
    assert faults_from_string("gap_rate=0.5").gap_rate == 0.5
    with pytest.raises(ValueError, match="unknown fault setting 'gap'"):
        faults_from_string("gap=0.5")


def test_windows_ingested_side_by_side_store_what_one_at_a_time_stores(world, registry, tmp_path):
    """Backfills ingest windows on two cursors at once: same rows, quarantine and file records as one
    window after the other, with every simulator fault in the data."""
    import shutil
    from datetime import timedelta

    from gridpipeline.store import connect, ensure_schema
    from gridpipeline.telemetry.ingest import ingest_windows

    sim = ScadaSimulator(world, registry, tmp_path / "landing", faults=FaultConfig(), seed=3, export_interval_s=60)
    end = W + timedelta(minutes=15)
    sim.run(W, end)
    shutil.copytree(tmp_path / "landing", tmp_path / "landing2")
    out = {}
    for workers, landing, rejected in ((1, "landing", "rejected"), (2, "landing2", "rejected2")):
        with connect(tmp_path / f"s{workers}.duckdb") as con:
            ensure_schema(con)
            con.execute("INSERT INTO telemetry.sensors SELECT * FROM registry")
            rep = ingest_windows(con, tmp_path / landing, tmp_path / rejected, W, end,
                                 now=end + timedelta(minutes=30), workers=workers)
            out[workers] = (
                rep.summary(), [w.window_start for w in rep.windows],
                con.execute("SELECT * FROM telemetry.raw_readings ORDER BY ALL").fetchall(),
                con.execute("SELECT * EXCLUDE (file_path) FROM telemetry.quarantine ORDER BY ALL").fetchall(),
                con.execute("SELECT * EXCLUDE (file_path) FROM telemetry.ingest_files ORDER BY ALL").fetchall(),
            )
    s1 = out[1][0]
    assert s1["rows_quarantined"] > 0 and s1["rows_in"] == s1["rows_stored"] + s1["rows_quarantined"]
    assert out[2][1] == [W, W + timedelta(minutes=5), W + timedelta(minutes=10)]
    assert out[1] == out[2]


def test_read_only_pass_reads_every_row_ingest_counts(world, registry, tmp_path):
    """The benchmark's read-only floor reads the same rows the ingest counts in, corrupt files included."""
    import shutil
    from datetime import timedelta

    from gridpipeline.store import connect, ensure_schema
    from gridpipeline.telemetry.ingest import ingest_windows, read_windows

    sim = ScadaSimulator(world, registry, tmp_path / "landing", faults=FaultConfig(corrupt_rate=0.2), seed=5,
                         export_interval_s=60)
    end = W + timedelta(minutes=10)
    sim.run(W, end)
    shutil.copytree(tmp_path / "landing", tmp_path / "landing2")
    with connect(tmp_path / "s.duckdb") as con:
        ensure_schema(con)
        con.execute("INSERT INTO telemetry.sensors SELECT * FROM registry")
        read_first = read_windows(con, tmp_path / "landing2", tmp_path / "rejected2", W, end)
        rep = ingest_windows(con, tmp_path / "landing", tmp_path / "rejected", W, end, now=end + timedelta(minutes=30))
        read_after = read_windows(con, tmp_path / "landing", tmp_path / "rejected", W, end)
        assert con.execute("SELECT count(*) FROM telemetry.raw_readings").fetchone()[0] == rep.summary()["rows_stored"]
    assert rep.summary()["files_rejected"] > 0
    assert read_first == read_after == rep.summary()["rows_in"] > 0
    assert sorted(p.name for p in (tmp_path / "rejected2").rglob("*") if p.is_file()) == \
        sorted(p.name for p in (tmp_path / "rejected").rglob("*") if p.is_file())
