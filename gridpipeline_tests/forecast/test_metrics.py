"""Metrics on hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from gridpipeline.forecast import metrics as M


def test_mape_skips_zero_actuals_and_is_none_when_all_zero():
    # |100-110|/100 = 10 %, |200-180|/200 = 10 %, the zero actual is skipped.
    assert M.mape([100, 200, 0], [110, 180, 5]) == pytest.approx(10.0)
    assert M.mape([0, 0, 0], [1, 2, 3]) is None
    assert M.mape([], []) is None


def test_rmse_mae_and_nan_rows_left_out():
    assert M.rmse([1, 2, 3], [1, 2, 5]) == pytest.approx(math.sqrt(4 / 3))
    assert M.mae([1, 2, 3], [1, 2, 5]) == pytest.approx(2 / 3)
    assert M.rmse([1, np.nan, 3], [1, 2, 5]) == pytest.approx(math.sqrt(2))


def test_rmae_relative_to_naive():
    # MAE forecast = 1/3, MAE naive = 1.
    assert M.rmae([1, 2, 3], [1, 2, 4], [2, 3, 4]) == pytest.approx(1 / 3)
    assert M.rmae([1, 1], [1, 2], [1, 1]) is None  # naive perfect: undefined


def test_pinball_mean_over_quantiles():
    # actual 10: q0.1 at 8 -> 0.1*2 = 0.2; q0.5 at 10 -> 0; q0.9 at 11 -> 0.1*1 = 0.1; mean 0.1.
    assert M.pinball([10], {0.1: [8], 0.5: [10], 0.9: [11]}) == pytest.approx(0.1)
    # Two rows: actual 0 and 4 with every quantile at 2 -> q0.5 loss 1 on both; q0.1: (0.9*2 + 0.1*2)/2 = 1.
    assert M.pinball([0, 4], {0.1: [2, 2], 0.5: [2, 2], 0.9: [2, 2]}) == pytest.approx(1.0)


def test_coverage():
    assert M.coverage([1, 5, 10], [0, 6, 9], [2, 7, 11]) == pytest.approx(2 / 3)


def test_score_and_buckets():
    s = M.score([100, 200], [110, 180], p10=[90, 170], p90=[120, 210], naive=[120, 220])
    assert s["mape"] == pytest.approx(10.0)
    assert s["rmae"] == pytest.approx(15 / 20)
    assert s["coverage_p10_p90"] == 1.0
    assert s["n"] == 2
    b = M.horizon_buckets(pd.Series([0, 5.5, 6, 23.5, 30]), [0, 6, 12, 18, 24])
    assert list(b) == ["0-6h", "0-6h", "6-12h", "18-24h", ">24h"]
    frame = pd.DataFrame(
        {
            "actual": [1.0, 2, 3, 4],
            "p50": [1.0, 2, 3, 5],
            "naive_p50": [2.0, 3, 4, 5],
            "g": ["a", "a", "b", "b"],
        }
    )
    per = M.score_by(frame, "g", key="bucket")
    assert [p["bucket"] for p in per] == ["a", "b"]
    assert per[0]["mape"] == 0.0 and per[1]["mape"] == pytest.approx(12.5)
