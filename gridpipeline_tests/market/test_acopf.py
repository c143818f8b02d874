"""The DLMPs against pandapower's AC OPF marginal prices on the sample grid: uncongested, with a line
congested by import whose downstream prices separate upwards, and with one congested by export whose
downstream prices fall to the curtailment's value."""

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


def test_a_line_congested_by_export_prices_the_curtailment_in_both(net):
    """A 1 MW PV plant at the far end of the same LV line, curtailable at 30 EUR/MWh, reverses its flow;
    the line is rated at 80 % of that export. Both sides curtail the plant and price the 37 buses behind
    the line at about -30 (a MW more consumed there spares a MW curtailed), 80 below the rest."""
    r = acopf_crosscheck(net, price=50.0, congest_line=14, share=0.8, export_mw=1.0, curtail_cost=30.0)
    assert [b["constraint"] for b in r["binding"]] == ["rating"] and r["binding"][0]["dual_eur_mwh"] < -60
    assert r["separated"][0] == r["separated"][1] > 10
    behind = r["prices"][r["prices"].acopf < 0]
    assert len(behind) == r["separated"][0] and (behind.dlmp < -29).all() and (behind.acopf < -29).all()
    assert r["max_abs_error"] < 1.0  # measured 0.88 EUR/MWh (the loss factors, taken before the curtailment)
    ours, theirs = r["curtailed_mw"]
    assert 0 < theirs < 1.0 and ours == pytest.approx(theirs, abs=0.1)  # measured 0.22 and 0.15 MW
