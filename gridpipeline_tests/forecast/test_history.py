"""History is measurements only: gaps stay gaps; the fallback forecast is labelled."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from gridpipeline.forecast.live import fallback_forecast, history

ISSUE = pd.Timestamp("2026-11-20 12:00", tz="UTC")


def _store(tmp_path, gap=False):
    con = duckdb.connect(str(tmp_path / "s.duckdb"))
    con.execute("CREATE SCHEMA telemetry; CREATE SCHEMA clean")
    con.execute("CREATE TABLE telemetry.sensors AS SELECT * FROM (VALUES (1, 'p_inj', 'load', 'A'), (2, 'p_inj', 'load', 'A'),"
                " (3, 'p_inj', 'load', 'B')) t(sensor_id, kind, element_type, zone)")
    ts = pd.date_range(ISSUE - pd.Timedelta(days=2), ISSUE + pd.Timedelta(hours=1), freq="5min", inclusive="left")
    rows = [(sid, t.tz_localize(None), 1.0 * sid) for t in ts for sid in (1, 2, 3)]
    df = pd.DataFrame(rows, columns=["sensor_id", "ts", "value"])
    if gap:  # zone B silent for an hour, zone A half silent (below the 80 % coverage rule)
        hole = (df.ts >= "2026-11-20 06:00") & (df.ts < "2026-11-20 07:00")
        df = df[~(hole & df.sensor_id.isin([2, 3]))]
    con.register("df", df)
    con.execute("CREATE TABLE clean.clean_telemetry AS SELECT * FROM df")
    return con


def test_history_is_measured_only_and_before_the_issue(tmp_path):
    con = _store(tmp_path, gap=True)
    hist, n = history(con, ISSUE, ["A", "B", "system"], days=3)
    assert hist.index[-1] < ISSUE and len(hist) == 3 * 288
    assert hist.loc[ISSUE - pd.Timedelta(hours=1), "A"] == pytest.approx(3.0)
    assert hist.loc[ISSUE - pd.Timedelta(hours=1), "system"] == pytest.approx(6.0)
    # the first day has no measurements and the silent hour has none either: gaps, never a made-up value
    assert hist.loc[:ISSUE - pd.Timedelta(days=2, minutes=5)].isna().all().all()
    hole = hist.loc["2026-11-20 06:00":"2026-11-20 06:55"]
    assert hole[["A", "B", "system"]].isna().all().all()
    assert n == 2 * 288 - 12


def test_fallback_forecast_is_seasonal_naive_else_nominal(tmp_path):
    hist, _ = history(_store(tmp_path), ISSUE, ["A", "C", "system"], days=8)  # zone C has no meters
    nominal = pd.Series({"A": 10.0, "C": 5.0, "system": 30.0})
    fc = fallback_forecast(hist, nominal, ISSUE)
    assert len(fc) == 3 * 288 and fc.lead.min() == 1
    a = fc[fc.series == "A"].set_index("valid_time")
    # the same time one day earlier was measured (a week earlier was not)
    assert (a.model == "seasonal_naive").all() and a.p50.to_numpy() == pytest.approx(3.0)
    c = fc[fc.series == "C"].set_index("valid_time")
    assert (c.model == "nominal").all() and (c.p50 == 5.0).all() and c.p10.iloc[0] == pytest.approx(4.25)
    assert (fc.p10 <= fc.p50).all() and (fc.p50 <= fc.p90).all()
    assert np.isfinite(fc.p50).all()


def test_a_forecast_uses_the_newest_model_trained_before_its_issue(tmp_path):
    from gridpipeline.forecast.assets import ensure_forecast_schema, model_asof

    con = duckdb.connect(str(tmp_path / "m.duckdb"))
    ensure_forecast_schema(con)
    for until, at, version in [("2026-11-15 02:00", "2026-11-15 02:10", "weekly"),
                               ("2026-11-20 02:00", "2026-11-20 02:10", "next"),
                               ("2026-11-20 02:00", "2026-11-20 03:00", "retrained"),  # same data, trained later
                               ("2026-11-21 02:00", "2026-11-21 02:10", "future")]:
        con.execute("INSERT INTO forecast.models (trained_at, kind, path, trained_until, version) "
                    "VALUES (?, 'demand', ?, ?, ?)", [at, f"/m/{version}", until, version])
    assert model_asof(con, ISSUE) == ("retrained", "/m/retrained")
    assert model_asof(con, pd.Timestamp("2026-11-20 02:00", tz="UTC"))[0] == "retrained"  # data ends at the issue
    assert model_asof(con, pd.Timestamp("2026-11-18", tz="UTC"))[0] == "weekly"
    assert model_asof(con, pd.Timestamp("2026-11-01", tz="UTC")) is None  # before any model: the fallback serves
