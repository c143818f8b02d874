from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gridpipeline.grid.network import (
    NetworkFormatError,
    has_voltage_controlled,
    load_network,
    network_tables,
    parse_matpower,
    save_network,
    to_pgm,
)
from gridpipeline_tests.grid import SAMPLE_JSON, cigre, runpp

CASE9_M = """function mpc = case9
%% MATPOWER Case Format : Version 2
mpc.version = '2';
mpc.baseMVA = 100;
%% bus data
%	bus_i	type	Pd	Qd	Gs	Bs	area	Vm	Va	baseKV	zone	Vmax	Vmin
mpc.bus = [
	1	3	0	0	0	0	1	1	0	345	1	1.1	0.9;
	2	2	0	0	0	0	1	1	0	345	1	1.1	0.9;
	3	2	0	0	0	0	1	1	0	345	1	1.1	0.9;
	4	1	0	0	0	0	1	1	0	345	1	1.1	0.9;
	5	1	90	30	0	0	1	1	0	345	1	1.1	0.9;
	6	1	0	0	0	0	1	1	0	345	1	1.1	0.9;
	7	1	100	35	0	0	1	1	0	345	1	1.1	0.9;
	8	1	0	0	0	0	1	1	0	345	1	1.1	0.9;
	9	1	125	50	0	0	1	1	0	345	1	1.1	0.9;
];
%% generator data
mpc.gen = [
	1	72.3	27.03	300	-300	1	100	1	250	10	0	0	0	0	0	0	0	0	0	0	0;
	2	163	6.54	300	-300	1	100	1	300	10	0	0	0	0	0	0	0	0	0	0	0;
	3	85	-10.95	300	-300	1	100	1	270	10	0	0	0	0	0	0	0	0	0	0	0;
];
%% branch data
mpc.branch = [
	1	4	0	0.0576	0	250	250	250	0	0	1	-360	360;
	4	5	0.017	0.092	0.158	250	250	250	0	0	1	-360	360;
	5	6	0.039	0.17	0.358	150	150	150	0	0	1	-360	360;
	3	6	0	0.0586	0	300	300	300	0	0	1	-360	360;
	6	7	0.0119	0.1008	0.209	150	150	150	0	0	1	-360	360;
	7	8	0.0085	0.072	0.149	250	250	250	0	0	1	-360	360;
	8	2	0	0.0625	0	250	250	250	0	0	1	-360	360;
	8	9	0.032	0.161	0.306	250	250	250	0	0	1	-360	360;
	9	4	0.01	0.085	0.176	250	250	250	0	0	1	-360	360;
];
"""

# MATPOWER's published runpf solution of case9 (3 decimals in its printout)
CASE9_VM = [1.000, 1.000, 1.000, 0.987, 0.975, 1.003, 0.986, 0.996, 0.958]
CASE9_VA = [0.000, 9.669, 4.771, -2.407, -4.017, 1.926, 0.622, 3.799, -4.350]


def test_load_pandapower_json_and_pgm_id_maps():
    net = load_network(SAMPLE_JSON)
    assert len(net.bus) == 227 and len(net.storage) == 64
    assert net.load.const_z_p_percent.notna().all()
    model = to_pgm(net)
    # (table, index) -> PGM id -> (table, index) round trip for every table
    for table in ("bus", "line", "trafo", "load", "sgen", "storage", "ext_grid"):
        ids = model.ids[table]
        t, idx = model.pp_of(ids.to_numpy())
        assert (t == table).all() and (idx == ids.index.to_numpy()).all()
    # storage is a sym_load with pandapower's sign (charging consumes)
    from power_grid_model import ComponentType

    sl = model.input[ComponentType.sym_load]
    row = np.searchsorted(sl["id"], model.ids["storage"].iloc[0])
    assert sl["p_specified"][row] == pytest.approx(net.storage.p_mw.iloc[0] * 1e6)
    assert not model.unsupported and not model.voltage_controlled
    # every closed/open switch is mapped onto a PGM branch side
    assert len(model.switch_map) == len(net.switch)


def test_vector_group_filled_from_shift():
    net = cigre()
    net.trafo["vector_group"] = None
    to_pgm(net)
    assert net.trafo.vector_group.tolist() == ["Dyn1", "Dyn1"]  # shift 30 degrees


def test_matpower_m_parse_and_published_solution(tmp_path):
    path = tmp_path / "case9.m"
    path.write_text(CASE9_M)
    net = load_network(path)
    assert len(net.bus) == 9 and has_voltage_controlled(net)
    runpp(net)
    assert np.allclose(net.res_bus.vm_pu.to_numpy(), CASE9_VM, atol=6e-4)
    assert np.allclose(net.res_bus.va_degree.to_numpy(), CASE9_VA, atol=6e-4)
    # same data through pandapower's own case9 JSON: identical to 1e-6 pu
    ref = load_network("case9")
    runpp(ref)
    assert np.abs(net.res_bus.vm_pu.to_numpy() - ref.res_bus.vm_pu.to_numpy()).max() < 1e-6


def test_matpower_roundtrip_export(tmp_path):
    net = load_network("case14")
    runpp(net)
    v0 = net.res_bus.vm_pu.to_numpy().copy()
    out = save_network(net, tmp_path / "c14.m")
    back = load_network(out)
    runpp(back)
    assert np.abs(back.res_bus.vm_pu.to_numpy() - v0).max() < 1e-6


@pytest.mark.parametrize(
    "content, match",
    [
        ("mpc.bus = [1 3 0 0 0 0 1 1 0 345 1 1.1 0.9;];", "baseMVA"),
        ("function mpc = c\nmpc.baseMVA = 100;\nmpc.bus = [1 3 0 0 0 0 1 1 0 345 1 1.1 0.9;\n 2 1 0 0];\n"
         "mpc.gen=[1 0 0 0 0 1 100 1 0 0];\nmpc.branch=[1 2 0 0.1 0 0 0 0 0 0 1];", "different lengths"),
        ("function mpc = c\nmpc.baseMVA = 100;\nmpc.bus = [1 3 0 0 0 0 1 1 0 345 1 1.1 0.9;];\n"
         "mpc.gen=[1 0 0 0 0 1 100 1 0 0];\nmpc.branch=[1 7 0 0.1 0 0 0 0 0 0 1];", "unknown bus"),
        ("function mpc = c\nmpc.baseMVA = 100;\nmpc.bus = [1 3 0 0 0 0 1 1 0 345 1 1.1 0.9;];\n"
         "mpc.gen=[1 0 0 0 0 1 100 1 0 0];", "branch"),
        ("function mpc = c\nmpc.baseMVA = 100;\nmpc.bus = [1 3 x 0 0 0 1 1 0 345 1 1.1 0.9;];", "not a number"),
    ],
)
def test_malformed_matpower(tmp_path, content, match):
    p = tmp_path / "bad.m"
    p.write_text(content)
    with pytest.raises(NetworkFormatError, match=match):
        load_network(p)


def test_malformed_sources(tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    with pytest.raises(NetworkFormatError, match="pandapower JSON"):
        load_network(bad_json)
    other = tmp_path / "other.json"
    other.write_text('{"a": 1}')
    with pytest.raises(NetworkFormatError):
        load_network(other)
    with pytest.raises(NetworkFormatError, match="not found"):
        load_network(tmp_path / "missing.json")
    with pytest.raises(NetworkFormatError, match="cannot interpret"):
        load_network("no such grid")
    xlsx = tmp_path / "grid.xlsx"
    xlsx.write_bytes(b"PK")
    with pytest.raises(NetworkFormatError, match="SimBench code such as 1-MV-semiurb--0-sw"):
        load_network(xlsx)  # the message names every accepted source, as the README does
    with pytest.raises(NetworkFormatError):
        parse_matpower("")


def test_network_tables_are_typed():
    net = load_network(SAMPLE_JSON)
    t = network_tables(net)
    assert {"buses", "lines", "trafos", "switches", "loads", "sgens", "storage", "ext_grids"} <= set(t)
    assert t["buses"].columns[0] == "bus_id" and len(t["buses"]) == len(net.bus)
    assert t["lines"].from_bus.dtype == np.int64 and t["switches"].closed.dtype == bool
    assert str(t["buses"]["name"].dtype) == "string"
    for df in t.values():
        # every column is a storable scalar type
        assert all(df[c].dtype != object for c in df.columns), df.dtypes
    assert isinstance(t["loads"], pd.DataFrame)
