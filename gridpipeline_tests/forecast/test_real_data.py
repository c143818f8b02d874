"""Small backtests on the real shared datasets (skipped when ../shared/data is absent)."""

from __future__ import annotations

import pandas as pd
import pytest

from gridpipeline.forecast.backtest import run_backtest
from gridpipeline.forecast.datasets import load_gefcom_system, load_vic_elec
from gridpipeline.forecast.demand import ForecastConfig
from gridpipeline.forecast.features import prepare_series
from gridpipeline_tests.forecast import SHARED_DATA

needs_data = pytest.mark.skipif(
    not (SHARED_DATA / "vic_elec" / "vic_elec.csv").exists(),
    reason=f"real datasets not found at {SHARED_DATA} (they sit beside the checkout, not in it)",
)
TZ = "Australia/Melbourne"


@needs_data
def test_victoria_four_weeks_beats_seasonal_naive():
    frame = load_vic_elec(SHARED_DATA)
    frame = frame[
        (frame["time"] >= pd.Timestamp("2013-04-01", tz=TZ))
        & (frame["time"] < pd.Timestamp("2013-11-01", tz=TZ))
    ]
    data = prepare_series(frame, "time", "demand", ["temperature"], tz=TZ)
    cfg = ForecastConfig(
        tz=TZ,
        weather_cols=("temperature",),
        country="AU",
        subdiv="VIC",
        models=("lgbm",),
        val_days=28,
        warmup_folds=1,
        lgbm_rounds=300,
        fallback_rounds=100,
    )
    start = pd.Timestamp("2013-10-01", tz=TZ).tz_convert("UTC")
    end = pd.Timestamp("2013-10-29", tz=TZ).tz_convert("UTC")  # 4 weeks of local days (DST starts 6 Oct)
    res = run_backtest(data, cfg, start, end, refit_days=14)
    m = res.metrics
    assert m["n_forecasts"] == 28 and m["model_usage"] == {"lgbm": 28 * 48}
    naive = m["baselines"]["seasonal_naive"]
    assert m["mape"] < naive["mape"] and m["rmae"] < 0.8
    assert m["mape"] < m["baselines"]["vanilla"]["mape"]
    assert 0.5 < m["coverage_p10_p90"] <= 1.0


@needs_data
def test_gefcom_loader_system_total():
    g = load_gefcom_system(SHARED_DATA)
    assert list(g.columns) == ["time", "load", *[f"t{i}" for i in range(1, 12)]]
    assert g["time"].iloc[0] == pd.Timestamp("2004-01-01 00:00") and g["time"].diff().dropna().nunique() == 1
    # The blank weeks are filled from Load_solution.csv; only 2008-06-30 06:00-23:00 is unpublished.
    assert g["load"].isna().sum() == 18 and g[[f"t{i}" for i in range(1, 12)]].notna().all().all()
    assert g.loc[g["time"] == pd.Timestamp("2005-03-06 00:00"), "load"].item() > 1e6  # a filled week
