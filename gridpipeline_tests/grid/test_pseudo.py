"""Pseudo-measurements come from the pipeline's own forecasts, or the network's nominal values."""

from __future__ import annotations

from datetime import datetime

import duckdb
import numpy as np
import pandapower as pp
import pandas as pd
import pytest

from gridpipeline.grid.pseudo import forecast_pseudo_injections, latest_forecast_at


@pytest.fixture
def net():
    n = pp.create_empty_network()
    b = [pp.create_bus(n, 0.4) for _ in range(3)]
    pp.create_load(n, b[0], p_mw=0.2, q_mvar=0.1)
    pp.create_load(n, b[1], p_mw=0.6, q_mvar=0.0)
    pp.create_load(n, b[2], p_mw=0.5, q_mvar=0.25, scaling=2.0)
    pp.create_sgen(n, b[0], p_mw=0.1, sn_mva=0.1, type="PV")
    pp.create_sgen(n, b[1], p_mw=0.3, sn_mva=0.3, type="PV")
    pp.create_sgen(n, b[2], p_mw=1.0, sn_mva=1.0, type="Wind")
    return n


def test_zone_forecast_is_shared_by_nominal_power(net):
    zones = np.array(["A", "A", "B"])
    out = forecast_pseudo_injections(net, zones, pd.Series({"A": 0.4, "B": 3.0, "system": 3.4}), {"pv": 0.2})
    loads = out[out.element_type == "load"].set_index("element_id")
    # zone A: 0.4 MW over nominal 0.2 and 0.6 -> 0.1 and 0.3; Q at each load's power factor
    assert loads.p_mw.tolist() == pytest.approx([0.1, 0.3, 3.0])
    assert loads.q_mvar.tolist() == pytest.approx([0.05, 0.0, 1.5])
    pv = out[out.element_type == "sgen"].set_index("element_id")
    assert pv.p_mw.to_dict() == pytest.approx({0: 0.05, 1: 0.15})  # by rating; wind has no forecast
    assert 2 not in pv.index


def test_no_forecast_leaves_nominal_values(net):
    assert forecast_pseudo_injections(net, np.array(["A", "A", "B"]), None, None) is None
    out = forecast_pseudo_injections(net, np.array(["A", "A", "B"]), pd.Series({"A": 1.0}))
    assert set(out.element_id) == {0, 1}  # zone B has no forecast: its load keeps the nominal value


def test_latest_forecast_at_reads_the_newest_issue_before_the_snapshot(tmp_path):
    con = duckdb.connect(str(tmp_path / "s.duckdb"))
    assert latest_forecast_at(con, datetime(2026, 11, 20, 9, 3)) == (None, None)  # fresh store
    con.execute("CREATE SCHEMA forecast")
    con.execute("CREATE TABLE forecast.demand (issue_time TIMESTAMP, series VARCHAR, valid_time TIMESTAMP, p50 DOUBLE)")
    con.execute("CREATE TABLE forecast.generation (issue_time TIMESTAMP, kind VARCHAR, valid_time TIMESTAMP, p50 DOUBLE)")
    con.execute("""INSERT INTO forecast.demand VALUES
        ('2026-11-20 08:55', 'A', '2026-11-20 09:00', 1.0), ('2026-11-20 09:00', 'A', '2026-11-20 09:00', 2.0),
        ('2026-11-20 09:05', 'A', '2026-11-20 09:05', 3.0)""")  # issued after the snapshot: not seen
    con.execute("INSERT INTO forecast.generation VALUES ('2026-11-20 09:00', 'pv', '2026-11-20 09:00', 0.5)")
    zone, gen = latest_forecast_at(con, datetime(2026, 11, 20, 9, 3))
    assert zone.to_dict() == {"A": 2.0} and gen == {"pv": 0.5}
