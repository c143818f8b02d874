"""`gridpipeline dispatch plan` on a user's own files: a bad unit is left out with its reason, the
plan is written as Parquet and JSON, gated on the given network."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from gridpipeline.cli import app
from gridpipeline.settings import PROJECT_ROOT


def test_dispatch_plan_from_files(tmp_path):
    bats = pd.DataFrame({"battery_id": ["a", "b", "bad"], "capacity_mwh": [2.0, 1.0, 1.0], "p_max_mw": [1.0, 0.5, 0.5],
                         "soc_percent": [50.0, 80.0, 150.0], "eta_charge": 0.95, "eta_discharge": 0.95,
                         "degradation_eur_per_mwh": 10.0, "bus": [355, 446, 367]})
    bats.to_csv(tmp_path / "b.csv", index=False)
    t = pd.date_range("2018-06-01", periods=288, freq="5min", tz="UTC")
    d = 20 + 5 * np.sin(np.arange(288) / 288 * 2 * np.pi)
    pd.DataFrame({"valid_time": t, "demand_p10": d * 0.95, "demand_p50": d, "demand_p90": d * 1.05}
                 ).to_csv(tmp_path / "f.csv", index=False)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["dispatch", "plan", "--batteries", str(tmp_path / "b.csv"), "--forecast",
                                 str(tmp_path / "f.csv"), "--prices", str(PROJECT_ROOT / "data/prices/de_day_ahead_2018.csv"),
                                 "--network", str(PROJECT_ROOT / "data/sample_grid/network.json"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert summary["batteries"] == 3 and summary["cost_plan_eur"] < summary["cost_do_nothing_eur"]
    assert summary["gate"].startswith("passed")
    plan = pd.read_parquet(out / "batteries.parquet")
    assert len(plan) == 288 * 3 and (plan[plan.battery_id == "bad"].p_mw == 0).all()
    dec = json.loads((out / "decision.json").read_text())
    assert dec["units_left_out"] == [{"battery_id": "bad", "reason": "out of range: SOC or capacity"}]
    assert dec["price_labels"] == {"known": 288}
