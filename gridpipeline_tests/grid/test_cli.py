from __future__ import annotations

import json

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from gridpipeline.grid.cli import grid_app
from gridpipeline_tests.grid import SAMPLE_JSON, cigre, noisy, runpp, true_measurements

runner = CliRunner()


def test_powerflow_command(tmp_path):
    out = tmp_path / "pf"
    r = runner.invoke(grid_app, ["powerflow", "--network", str(SAMPLE_JSON), "--out", str(out)])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    assert s["engine"] == "pgm" and s["converged"] and s["n_buses"] == 227
    buses = pd.read_parquet(out / "buses.parquet")
    assert len(buses) == 227 and buses.u_pu.between(0.9, 1.1).all()
    assert len(pd.read_parquet(out / "branches.parquet")) == 233


def test_estimate_command_with_csv(tmp_path):
    import pandapower as pp

    net = cigre()
    runpp(net)
    path = tmp_path / "cigre.json"
    pp.to_json(net, str(path))
    meas = noisy(true_measurements(net), np.random.default_rng(5)).drop(columns=["true"])
    meas = meas.rename(columns={"element_type": "element"})
    meas.loc[3, "value"] += 30 * meas.loc[3, "sigma"]  # one bad voltage reading
    csv = tmp_path / "m.csv"
    meas.to_csv(csv, index=False)
    out = tmp_path / "se"
    r = runner.invoke(grid_app, ["estimate", "--network", str(path), "--measurements", str(csv), "--out", str(out)])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    assert s["converged"] and s["bad_data_removed"] == 1 and s["chi2_final"]["alarm"] is False
    sus = pd.read_parquet(out / "suspects.parquet")
    assert (sus[sus.action == "removed"].row == 3).all()
    assert len(pd.read_parquet(out / "measurements.parquet")) > 100


def test_bad_network_file_exit_code(tmp_path):
    bad = tmp_path / "x.m"
    bad.write_text("nothing here")
    r = runner.invoke(grid_app, ["powerflow", "--network", str(bad), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "baseMVA" in r.output
