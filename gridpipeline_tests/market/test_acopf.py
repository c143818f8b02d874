"""The DLMPs against pandapower's AC OPF marginal prices on the sample grid: uncongested, and with a
congested line whose downstream prices separate."""

from __future__ import annotations

import pandapower as pp
import pytest

from gridpipeline.market.crosscheck import acopf_crosscheck
from gridpipeline.market.network import radial_feeder
from gridpipeline.settings import PROJECT_ROOT

NET = PROJECT_ROOT / "data" / "sample_grid" / "network.json"


@pytest.fixture(scope="module")
def net():
    return pp.from_json(str(NET))


def test_the_sample_grid_is_one_radial_feeder_with_its_parallel_transformers_merged(net):
    f, bus_map, notes = radial_feeder(net)
    assert notes == []  # the one loop is the two HV/MV transformers behind closed couplers: one branch
    assert f.n == len(net.bus) - 2 and bus_map.notna().all()
    assert any("||" in n for n in f.line_names)


def test_uncongested_prices_match_the_ac_opf_within_a_quarter_euro(net):
    r = acopf_crosscheck(net, price=50.0)
    assert r["max_abs_error"] < 0.25  # measured 0.22 EUR/MWh; prices 49.0-51.9 (the losses)
    assert r["prices"].acopf.max() - r["prices"].acopf.min() > 2.0  # the losses do separate the buses
    assert r["binding"] == []


def test_a_congested_line_separates_the_same_buses_in_both(net):
    r = acopf_crosscheck(net, price=50.0, congest_line=14, share=0.8)  # an LV line of the sample grid
    assert r["separated"][0] == r["separated"][1] > 10  # the same 37 buses behind it at about 80
    assert r["max_abs_error"] < 0.5  # measured 0.40 EUR/MWh
    assert [b["constraint"] for b in r["binding"]] == ["rating"]
    assert r["prices"].acopf.max() > 79 and r["prices"].dlmp.max() > 79
