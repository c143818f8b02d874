"""``gridpipeline forecast backtest`` through the typer app (CliRunner)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from gridpipeline.forecast.cli import forecast_app
from gridpipeline_tests.forecast import synthetic

runner = CliRunner()


@pytest.fixture(scope="module")
def csv_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fc") / "series.csv"
    frame = synthetic(days=50)
    frame["time"] = frame["time"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    frame.to_csv(path, index=False)
    return path


def _args(csv_file, out, *extra):
    return [
        "backtest",
        "--data",
        str(csv_file),
        "--time-col",
        "time",
        "--target-col",
        "load",
        "--out",
        str(out),
        *extra,
    ]


def test_missing_columns_are_named(csv_file, tmp_path):
    res = runner.invoke(
        forecast_app, _args(csv_file, tmp_path / "m.json", "--weather-cols", "t_good,nope,gone")
    )
    assert res.exit_code == 2
    assert "'nope'" in res.output and "'gone'" in res.output and "--weather-cols" in res.output
    assert "Traceback" not in res.output and isinstance(res.exception, SystemExit)
    res = runner.invoke(
        forecast_app,
        [
            "backtest",
            "--data",
            str(csv_file),
            "--time-col",
            "when",
            "--target-col",
            "load",
            "--out",
            str(tmp_path / "m.json"),
        ],
    )
    assert res.exit_code == 2 and "'when' (--time-col)" in res.output


def test_bad_inputs_exit_2(csv_file, tmp_path):
    out = tmp_path / "m.json"
    cases = [
        (
            [
                "backtest",
                "--data",
                str(tmp_path / "none.csv"),
                "--time-col",
                "t",
                "--target-col",
                "y",
                "--out",
                str(out),
            ],
            "file not found",
        ),
        (_args(csv_file, out, "--tz", "Mars/Olympus"), "unknown time zone"),
        (_args(csv_file, out, "--models", "arima"), "unknown model"),
        (_args(csv_file, out, "--horizon", "soon"), "--horizon"),
        (
            _args(csv_file, out, "--weather-cols", "t_good", "--start", "2021-02-10", "--end", "2021-02-01"),
            "--start must be before --end",
        ),
        (_args(csv_file, out, "--weather-cols", "t_good", "--start", "2030-01-01", "--end", "2030-02-01"),
         "no issue time"),
        (_args(csv_file, out), "the deployed path needs a temperature column"),
    ]
    for args, message in cases:
        res = runner.invoke(forecast_app, args)
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output, (message, res.output)
    assert not out.exists()


def test_backtest_writes_metrics_json(csv_file, tmp_path):
    out = tmp_path / "metrics.json"
    rows = tmp_path / "rows.csv"
    res = runner.invoke(
        forecast_app,
        _args(
            csv_file,
            out,
            "--weather-cols",
            "t_good,t_noise",
            "--models",
            "lgbm",
            "--start",
            "2021-02-16",
            "--end",
            "2021-02-19",
            "--refit-days",
            "7",
            "--forecasts-out",
            str(rows),
            "--quiet",
        ),
    )
    assert res.exit_code == 0, res.output
    m = json.loads(out.read_text())
    for key in (
        "mape",
        "rmae",
        "rmse",
        "pinball",
        "coverage_p10_p90",
        "n_forecasts",
        "model_usage",
        "train_seconds",
        "predict_seconds",
    ):
        assert key in m
    assert m["n_forecasts"] == 3 and len(m["per_day"]) == 3 and m["per_day"][0]["date"] == "2021-02-16"
    assert set(m["baselines"]) == {"seasonal_naive", "vanilla"}
    assert m["config"]["models"] == ["lgbm"] and m["config"]["freq"] == "0 days 01:00:00"
    assert json.loads(res.output.strip().splitlines()[-1])["n_forecasts"] == 3
    assert rows.exists()
