"""Each snapshot is estimated on the network version valid at its time; gaps are flagged."""

from __future__ import annotations

from datetime import datetime

import duckdb
import pandapower as pp
import pytest

from gridpipeline.grid import store as gstore
from gridpipeline.grid.assets import _valid_from


def _net(extra_load: bool):
    n = pp.create_empty_network()
    b0, b1 = pp.create_bus(n, 20.0), pp.create_bus(n, 20.0)
    pp.create_ext_grid(n, b0)
    pp.create_line(n, b0, b1, 1.0, "NA2XS2Y 1x95 RM/25 12/20 kV")
    pp.create_load(n, b1, p_mw=1.0)
    if extra_load:
        pp.create_load(n, b1, p_mw=0.5)
    return n


def test_model_at_picks_the_version_valid_at_the_snapshot(tmp_path):
    con = duckdb.connect(str(tmp_path / "s.duckdb"))
    with pytest.raises(duckdb.CatalogException):  # a reader never creates tables
        gstore.model_at(con, datetime(2026, 11, 1))
    gstore.ensure_grid_schema(con)
    assert gstore.model_at(con, datetime(2026, 11, 1)) is None
    v1, _ = gstore.save_model_version(con, _net(False), datetime(2026, 10, 1), "test")
    v2, _ = gstore.save_model_version(con, _net(True), datetime(2026, 11, 15), "test")
    assert (v1, v2) == (1, 2)
    version, _, js, note = gstore.model_at(con, datetime(2026, 11, 1))
    assert version == 1 and note is None and len(gstore.net_from_json(js).load) == 1
    version, _, js, note = gstore.model_at(con, datetime(2026, 11, 20))
    assert version == 2 and note is None and len(gstore.net_from_json(js).load) == 2
    # before the first version: the earliest serves, flagged
    version, _, _, note = gstore.model_at(con, datetime(2026, 9, 1))
    assert version == 1 and "no network version valid" in note


def test_model_at_flags_a_gap_and_uses_the_nearest_earlier_version(tmp_path):
    con = duckdb.connect(str(tmp_path / "s.duckdb"))
    gstore.save_model_version(con, _net(False), datetime(2026, 10, 1), "test")
    gstore.save_model_version(con, _net(True), datetime(2026, 11, 15), "test")
    con.execute("UPDATE grid.model_versions SET valid_to = '2026-11-01' WHERE version = 1")  # a gap until 11-15
    version, _, _, note = gstore.model_at(con, datetime(2026, 11, 5))
    assert version == 1 and "nearest earlier version 1" in note


def test_valid_from_is_a_validity_time_not_the_wall_clock():
    assert _valid_from("2026-11-15T06:00:00+01:00", first=False) == datetime(2026, 11, 15, 5, 0)
    from gridpipeline.base.partitions import START

    assert _valid_from(None, first=True) == datetime.fromisoformat(START)
    assert _valid_from(None, first=False) > datetime(2026, 12, 1)
