"""Forecast assets: weather features, the nightly demand model, 5-minute demand forecasts with
quantiles, live accuracy and consumption anomalies. Thin wiring of ``forecast/`` to DuckDB.

Every 5 minutes ``forecast_schedule`` runs ``forecast_job`` for the window that has just opened;
its start is the issue time. Rows are keyed by issue time (forecasts) or by the evaluated instant
(errors, anomalies) and replaced when a partition re-runs.
"""

import pickle
import time
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AutomationCondition,
    DefaultScheduleStatus,
    MaterializeResult,
    In,
    MetadataValue,
    Nothing,
    OpExecutionContext,
    Out,
    Output,
    RunRequest,
    asset,
    define_asset_job,
    graph_asset,
    in_process_executor,
    op,
    schedule,
)
from dagster_duckdb import DuckDBResource

from gridpipeline.base.partitions import live_five_minute_partitions
from gridpipeline.base.plots import md_table
from gridpipeline.sources.resources import NetworkModelResource, SettingsResource, WeatherSource
from gridpipeline.store import writer_lock

GROUP = "forecast"
MODEL_DIR = "demand"
#: days of measured system demand below which the nightly model is not trained
MIN_MEASURED_DAYS = 10  # deployed.train needs 8 days of lags plus a 2-day holdout

DDL = """
CREATE SCHEMA IF NOT EXISTS forecast;
CREATE TABLE IF NOT EXISTS forecast.weather (
    issue_time TIMESTAMP, valid_time TIMESTAMP, temperature DOUBLE, dew_point DOUBLE, relative_humidity DOUBLE,
    wind_speed_10m DOUBLE, wind_speed_100m DOUBLE, wind_speed_hub DOUBLE, ghi DOUBLE, ghi_clear DOUBLE,
    clear_sky_index DOUBLE, cloud_cover DOUBLE, hdh DOUBLE, cdh DOUBLE, local_hour DOUBLE, weekday INTEGER,
    holiday BOOLEAN, is_dst BOOLEAN, source VARCHAR, stale BOOLEAN, message VARCHAR
);
CREATE TABLE IF NOT EXISTS forecast.models (
    trained_at TIMESTAMP, kind VARCHAR, path VARCHAR, series INTEGER, train_rows BIGINT, train_seconds DOUBLE,
    holdout_mape DOUBLE
);
ALTER TABLE forecast.models ADD COLUMN IF NOT EXISTS trained_until TIMESTAMP;
ALTER TABLE forecast.models ADD COLUMN IF NOT EXISTS version VARCHAR;
CREATE TABLE IF NOT EXISTS forecast.demand (
    issue_time TIMESTAMP, series VARCHAR, valid_time TIMESTAMP, lead_minutes INTEGER, p10 DOUBLE, p50 DOUBLE,
    p90 DOUBLE, model VARCHAR, weather_stale BOOLEAN
);
ALTER TABLE forecast.demand ADD COLUMN IF NOT EXISTS model_version VARCHAR;
CREATE TABLE IF NOT EXISTS forecast.errors (
    issue_time TIMESTAMP, series VARCHAR, valid_time TIMESTAMP, lead_minutes INTEGER, actual DOUBLE, p10 DOUBLE,
    p50 DOUBLE, p90 DOUBLE, naive DOUBLE, model VARCHAR
);
CREATE TABLE IF NOT EXISTS forecast.accuracy (
    window_start TIMESTAMP, series VARCHAR, model VARCHAR, bucket VARCHAR, n INTEGER, mape DOUBLE, rmae DOUBLE,
    rmse DOUBLE, pinball DOUBLE, coverage DOUBLE
);
CREATE TABLE IF NOT EXISTS forecast.generation (
    issue_time TIMESTAMP, kind VARCHAR, valid_time TIMESTAMP, lead_minutes INTEGER, capacity_mw DOUBLE,
    physics_mw DOUBLE, p10 DOUBLE, p50 DOUBLE, p90 DOUBLE, model VARCHAR, weather_stale BOOLEAN
);
CREATE TABLE IF NOT EXISTS forecast.ramps (
    issue_time TIMESTAMP, kind VARCHAR, start TIMESTAMP, "end" TIMESTAMP, direction VARCHAR, magnitude DOUBLE
);
CREATE TABLE IF NOT EXISTS forecast.anomalies (
    window_start TIMESTAMP, series VARCHAR, ts TIMESTAMP, actual DOUBLE, expected DOUBLE, residual DOUBLE,
    robust_z DOUBLE, kind VARCHAR
);
"""


def ensure_forecast_schema(con) -> None:
    for stmt in DDL.split(";"):
        if stmt.strip():
            con.execute(stmt)


def _issue(context) -> pd.Timestamp:
    return pd.Timestamp(context.partition_time_window.start).tz_convert("UTC")


def _naive(ts) -> pd.Timestamp:
    return pd.Timestamp(ts).tz_convert("UTC").tz_localize(None)


def _model_path(settings, trained_until: pd.Timestamp) -> Path:
    """Model files are versioned by the end of their training data (UTC)."""
    return settings.home / "models" / MODEL_DIR / f"demand_{trained_until:%Y%m%dT%H%M}Z.joblib"


def _series(network: NetworkModelResource) -> list[str]:
    """The demand series: every zone with loads, and the system."""
    return sorted(set(network.load().load_zones())) + ["system"]


def _deployed_config(settings):
    from gridpipeline.forecast.deployed import deployed_config
    from gridpipeline.forecast.live import STEP

    return deployed_config(STEP, settings.forecast_train_days, settings.forecast_tz, settings.forecast_country)


def model_asof(con, issue: pd.Timestamp) -> tuple[str, str] | None:
    """(version, path) of the newest demand model whose training data ended at or before ``issue``."""
    row = con.execute(
        "SELECT version, path FROM forecast.models WHERE kind = 'demand' AND trained_until <= ? "
        "ORDER BY trained_until DESC, trained_at DESC LIMIT 1", [_naive(issue)]).fetchone()
    return (row[0], row[1]) if row else None


@asset(
    group_name=GROUP,
    pool="duckdb",
    partitions_def=live_five_minute_partitions,
    description="Weather for the next 24 h at 5-minute steps, issued at the window start: temperature, dew point, "
    "humidity, heating/cooling degree hours, hub-height wind, GHI and clear-sky index (pvlib), cloud cover, local "
    "calendar with holidays. Source and staleness per issue (forecast.weather).",
)
def weather_features(context: AssetExecutionContext, duckdb: DuckDBResource, settings: SettingsResource,
                     weather: WeatherSource):
    from gridpipeline.forecast.weather import weather_features as features

    s = settings.get()
    issue = _issue(context)
    with writer_lock(s.db_path), duckdb.get_connection() as con:
        ensure_forecast_schema(con)

        def last_stored(at):
            row = con.execute("SELECT max(issue_time) FROM forecast.weather WHERE issue_time < ? AND NOT stale",
                              [_naive(at)]).fetchone()
            if not row or row[0] is None:
                return None
            df = con.execute("SELECT * FROM forecast.weather WHERE issue_time = ?", [row[0]]).df()
            df.index = pd.DatetimeIndex(df.valid_time).tz_localize("UTC")
            target = pd.date_range(at, at + pd.Timedelta(hours=24), freq="5min", inclusive="left")
            return df.reindex(target)

        frame, source, stale, message = weather.forecast(issue, pd.Timedelta(hours=24), last_stored)
    # features outside the writer: pvlib's clear sky and the calendar take a while
    f = features(frame, s.site_latitude, s.site_longitude, s.forecast_tz, s.forecast_country)
    out = f.reset_index(names="valid_time")
    out["valid_time"] = out.valid_time.dt.tz_convert("UTC").dt.tz_localize(None)
    out.insert(0, "issue_time", _naive(issue))
    out["source"], out["stale"], out["message"] = source, stale, message
    with writer_lock(s.db_path), duckdb.get_connection() as con:
        con.execute("BEGIN TRANSACTION")
        con.execute("DELETE FROM forecast.weather WHERE issue_time = ?", [_naive(issue)])
        con.register("_wx", out)
        con.execute("INSERT INTO forecast.weather BY NAME SELECT * FROM _wx")
        con.unregister("_wx")
        con.execute("COMMIT")
    if stale:
        context.log.warning(f"weather forecast is stale ({source}): {message}")
    has = f.temperature.notna().any()
    return MaterializeResult(metadata={
        "issue_time": str(issue), "source": source, "stale": stale, "steps": len(out),
        "temperature_min_c": float(np.nanmin(f.temperature)) if has else None,
        "temperature_max_c": float(np.nanmax(f.temperature)) if has else None,
        "ghi_max_w_m2": float(np.nanmax(f.ghi)) if f.ghi.notna().any() else None, "message": message or "ok",
    })


@op(ins={"clean_telemetry": In(Nothing)}, out=Out(dict),
    description="Trains the demand models outside the DuckDB pool: a short locked read of the history, then "
    "LightGBM and Prophet with no lock and no pool slot held, then the model file.")
def train_demand_model(context: OpExecutionContext, duckdb: DuckDBResource, settings: SettingsResource,
                       network: NetworkModelResource, weather: WeatherSource) -> dict:
    import joblib

    from gridpipeline.forecast import deployed
    from gridpipeline.forecast.live import STEP, history

    s = settings.get()
    cfg = _deployed_config(s)
    cutoff = pd.Timestamp.now(tz="UTC").floor(STEP)
    series = _series(network)
    days = s.forecast_train_days + 9
    with writer_lock(s.db_path), duckdb.get_connection() as con:  # a short read; training runs outside the lock
        hist, n_slots = history(con, cutoff, series, days=days)
    wx = weather.observations(hist.index[0], cutoff)[["temperature"]]
    coverage = n_slots / max(len(hist), 1)
    measured_days = hist["system"].notna().sum() * STEP / pd.Timedelta(days=1)
    if measured_days < MIN_MEASURED_DAYS:
        # too little to learn from: the forecasts keep serving the labelled fallback until the next try
        context.log.warning(f"only {measured_days:.2f} days of measured system demand before {cutoff}; "
                            f"a model needs {MIN_MEASURED_DAYS}: not trained")
        return {"row": None, "metadata": {"trained": False, "measured_days": round(float(measured_days), 2),
                                          "needs_days": MIN_MEASURED_DAYS, "trained_until": str(cutoff)}}
    context.log.info(f"training on {n_slots} measured slots of {len(hist)} ({coverage:.0%}) before {cutoff}")
    t0 = time.perf_counter()
    bundle = deployed.train(hist, wx, cfg, cutoff, s.forecast_tz, s.forecast_country)
    seconds = time.perf_counter() - t0
    version = f"demand@{cutoff:%Y-%m-%dT%H:%MZ}"
    path = _model_path(s, cutoff)
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(bundle, path)
    report = bundle.get("report", {}) if isinstance(bundle, dict) else {}
    row = [pd.Timestamp.now(tz="UTC").tz_localize(None), str(path), len(series), report.get("train_rows"), seconds,
           report.get("holdout_mape"), _naive(cutoff), version]
    return {"row": row, "metadata": {
        "trained": True, "version": version, "trained_until": str(cutoff), "series": len(series),
        "measured_slots": n_slots, "history_coverage": round(coverage, 3),
        "train_seconds": round(seconds, 1), "path": str(path),
        **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in report.items()
           if isinstance(v, (int, float, str))},
    }}


@op(pool="duckdb", description="Registers a trained demand model in forecast.models (the only step of "
    "demand_model that holds the DuckDB pool slot).")
def register_demand_model(context: OpExecutionContext, duckdb: DuckDBResource, settings: SettingsResource,
                          trained: dict):
    if trained["row"] is not None:
        with writer_lock(settings.get().db_path), duckdb.get_connection() as con:
            ensure_forecast_schema(con)
            con.execute("INSERT INTO forecast.models BY NAME SELECT ? AS trained_at, 'demand' AS kind, ? AS path, "
                        "? AS series, ? AS train_rows, ? AS train_seconds, ? AS holdout_mape, ? AS trained_until, "
                        "? AS version", trained["row"])
    return Output(None, metadata=trained["metadata"])


@graph_asset(
    group_name=GROUP,
    ins={"clean_telemetry": AssetIn(AssetKey("clean_telemetry"), dagster_type=Nothing)},
    automation_condition=AutomationCondition.on_cron("0 2 * * 0") | AutomationCondition.on_missing(),
    description="The demand models for every zone and the system, retrained weekly (Sundays 02:00 UTC) on "
    "GRIDPIPELINE_FORECAST_TRAIN_DAYS of measured demand (clean_telemetry; gaps stay gaps) and observed weather: "
    "the deployed path of forecast/deployed.py. Each model file is versioned by the end of its training data "
    "(forecast.models.trained_until, GRIDPIPELINE_HOME/models/demand/); a forecast uses the newest model trained "
    "before its issue time. Training (train_demand_model) holds no pool slot; only the registration "
    "(register_demand_model) takes the duckdb pool, so ingestion never queues behind a training run.",
)
def demand_model(clean_telemetry):
    return register_demand_model(train_demand_model(clean_telemetry))


def _plot_system(fc: pd.DataFrame) -> str:
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = fc[fc.series == "system"]
    fig, ax = plt.subplots(figsize=(7, 2.6), dpi=90)
    ax.fill_between(s.valid_time, s.p10, s.p90, alpha=0.3, label="P10-P90")
    ax.plot(s.valid_time, s.p50, lw=1.2, label="P50")
    ax.set_ylabel("MW")
    ax.set_title("System demand, next 24 h")
    ax.legend(loc="upper right", fontsize=7)
    fig.autofmt_xdate()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return f"![system demand](data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()})"


@op(ins={"weather_features": In(Nothing), "demand_model": In(Nothing), "clean_telemetry": In(Nothing)},
    out=Out(dict), description="Predicts the demand forecast outside the DuckDB pool: a short locked read of "
    "everything as of the issue time, then the models with no lock and no pool slot held.")
def predict_demand(context: OpExecutionContext, duckdb: DuckDBResource, settings: SettingsResource,
                   network: NetworkModelResource, weather: WeatherSource) -> dict:
    import joblib

    from gridpipeline.forecast import deployed
    from gridpipeline.forecast.global_model import lookback_days
    from gridpipeline.forecast.live import fallback_forecast, history

    s = settings.get()
    issue = _issue(context)
    series = _series(network)
    nominal = network.load().nominal_zone_demand()
    with writer_lock(s.db_path), duckdb.get_connection() as con:  # everything it reads is as of the issue time
        ensure_forecast_schema(con)
        hist, n_measured = history(con, issue, series)
        wx = con.execute("SELECT valid_time, temperature, stale FROM forecast.weather WHERE issue_time = ?",
                         [_naive(issue)]).df()
        found = model_asof(con, issue)
        degraded = con.execute(
            "SELECT model, avg(mape) FROM forecast.accuracy WHERE window_start = (SELECT max(window_start) "
            "FROM forecast.accuracy WHERE window_start <= ?) AND series = 'system' AND mape IS NOT NULL "
            "GROUP BY model HAVING avg(mape) > ?", [_naive(issue), s.forecast_degraded_mape]).fetchall()
    weather_stale = bool(wx.stale.any()) if len(wx) else True
    forecast_wx = None
    if len(wx) and wx.temperature.notna().any():
        forecast_wx = wx.set_index(pd.DatetimeIndex(wx.valid_time).tz_localize("UTC"))[["temperature"]]
    observed = None
    if forecast_wx is not None:  # the station's observations before the issue, as the model learnt with
        try:
            observed = weather.observations(issue - pd.Timedelta(days=lookback_days(_deployed_config(s))), issue)
            observed.index = pd.DatetimeIndex(observed.index).tz_convert("UTC") if observed.index.tz else \
                pd.DatetimeIndex(observed.index).tz_localize("UTC")
        except (OSError, ValueError, KeyError) as exc:
            context.log.warning(f"no weather observations before {issue} ({exc}): temperature history missing")
    disabled = {m for m, _ in degraded if m in ("global", "global_noweather")}
    if "global+prophet" in {m for m, _ in degraded}:
        disabled.add("prophet")
    bundle = None
    if found is not None:
        try:
            bundle = joblib.load(found[1])
        except (OSError, EOFError, ValueError, KeyError, pickle.UnpicklingError) as exc:  # missing or corrupt file
            context.log.warning(f"model {found[0]} at {found[1]} cannot be read ({exc}): serving the fallback")
    fallback = fallback_forecast(hist, nominal, issue)
    if bundle is None:
        context.log.warning(f"no demand model trained before {issue}: serving the labelled fallback")
        fc, model_version = fallback, None
    else:
        if disabled:
            context.log.warning(f"degraded model(s) {sorted(disabled)} hand over to the next in the chain")
        fc = deployed.predict(bundle, hist, forecast_wx, issue, fallback=fallback, disabled=disabled,
                              observed=observed)
        model_version = found[0]
    out = pd.DataFrame({
        "issue_time": _naive(issue), "series": fc.series.astype(str),
        "valid_time": pd.DatetimeIndex(fc.valid_time).tz_convert("UTC").tz_localize(None),
        "lead_minutes": (fc["lead"].to_numpy() * 5).astype(int), "p10": fc.p10, "p50": fc.p50, "p90": fc.p90,
        "model": fc.model, "weather_stale": weather_stale, "model_version": model_version,
    })
    sysf = fc[fc.series == "system"]
    return {"issue": issue, "rows": out, "metadata": {
        "issue_time": str(issue), "series": int(fc.series.nunique()), "rows": len(out),
        "served_by": MetadataValue.json(fc.model.value_counts().to_dict()),
        "measured_history_slots": n_measured, "weather_stale": weather_stale,
        "model_version": model_version or "none (fallback)",
        "degraded_models_skipped": ", ".join(sorted(disabled)) or "none",
        "system_p50_next_hour_mw": float(sysf.p50.head(12).mean()) if len(sysf) else None,
        "system_peak_p90_mw": float(sysf.p90.max()) if len(sysf) else None,
        "system_forecast": MetadataValue.md(_plot_system(fc)) if len(sysf) else "no system series",
    }}


@op(pool="duckdb", description="Replaces the issue's rows of forecast.demand in one transaction (the only "
    "step of demand_forecast that holds the DuckDB pool slot).")
def store_demand_forecast(context: OpExecutionContext, duckdb: DuckDBResource, settings: SettingsResource,
                          predicted: dict):
    out, issue = predicted["rows"], predicted["issue"]
    with writer_lock(settings.get().db_path), duckdb.get_connection() as con:
        con.execute("BEGIN TRANSACTION")
        con.execute("DELETE FROM forecast.demand WHERE issue_time = ?", [_naive(issue)])
        con.register("_fc", out)
        con.execute("INSERT INTO forecast.demand BY NAME SELECT * FROM _fc")
        con.unregister("_fc")
        con.execute("COMMIT")
    return Output(None, metadata=predicted["metadata"])


@graph_asset(
    group_name=GROUP,
    partitions_def=live_five_minute_partitions,
    ins={"weather_features": AssetIn(AssetKey("weather_features"), dagster_type=Nothing),
         "demand_model": AssetIn(AssetKey("demand_model"), dagster_type=Nothing),
         "clean_telemetry": AssetIn(AssetKey("clean_telemetry"), dagster_type=Nothing)},
    description="Demand forecasts for every zone and the system: 24 h at 5-minute steps with P10/P50/P90, issued "
    "every 5 minutes from measured load (clean_telemetry, readings before the issue time) with the newest model "
    "trained before the issue time (model_version on every row). Each row records the model that served it "
    "(global+prophet, the two blended by skill -> global -> global_noweather -> seasonal_naive -> nominal); a model "
    "whose rolling error passed GRIDPIPELINE_FORECAST_DEGRADED_MAPE is skipped (forecast.demand). The prediction "
    "(predict_demand) holds no pool slot; only the write (store_demand_forecast) takes the duckdb pool.",
)
def demand_forecast(weather_features, demand_model, clean_telemetry):
    return store_demand_forecast(predict_demand(weather_features=weather_features, demand_model=demand_model,
                                                clean_telemetry=clean_telemetry))


@asset(
    group_name=GROUP,
    pool="duckdb",
    partitions_def=live_five_minute_partitions,
    deps=[demand_forecast, AssetKey("renewable_forecast")],
    check_specs=[AssetCheckSpec("forecast_error_within_limits", asset="forecast_accuracy",
                                description="Warns above GRIDPIPELINE_FORECAST_MAPE_WARN and fails above "
                                "GRIDPIPELINE_FORECAST_MAPE_FAIL (rolling 24 h system MAPE per model).")],
    description="Live accuracy: every demand, PV and wind forecast value whose time has a measurement is matched "
    "(forecast.errors; generation as series gen:pv / gen:wind), then MAPE, rMAE (against the value one day "
    "earlier), RMSE, pinball loss and P10-P90 coverage over the last 24 h by series, model and horizon bucket "
    "(forecast.accuracy).",
)
def forecast_accuracy(context: AssetExecutionContext, duckdb: DuckDBResource, settings: SettingsResource,
                      network: NetworkModelResource):
    from gridpipeline.forecast.generation import KINDS
    from gridpipeline.forecast.live import accuracy_table, measured_demand, measured_generation

    settings = settings.get()
    issue = _issue(context)
    ws = _naive(issue)
    with writer_lock(settings.db_path), duckdb.get_connection() as con:
        ensure_forecast_schema(con)
        start = issue - pd.Timedelta(hours=2)
        meas = measured_demand(con, start - pd.Timedelta(days=1), issue)
        matched = 0
        if len(meas):
            act = meas.stack().rename("actual").reset_index()
            act.columns = ["valid_time", "series", "actual"]
            act["valid_time"] = act.valid_time.dt.tz_convert("UTC").dt.tz_localize(None)
            day_before = act.assign(valid_time=act.valid_time + pd.Timedelta(days=1)).rename(columns={"actual": "naive"})
            act = act.merge(day_before, on=["valid_time", "series"], how="left")
            act = act[act.valid_time >= _naive(start)]
            con.register("_act", act)
            con.execute("BEGIN TRANSACTION")
            con.execute("DELETE FROM forecast.errors WHERE valid_time >= ? AND valid_time < ? AND series NOT LIKE 'gen:%'",
                        [_naive(start), ws])
            matched = con.execute(
                """INSERT INTO forecast.errors
                   SELECT d.issue_time, d.series, d.valid_time, d.lead_minutes, a.actual, d.p10, d.p50, d.p90,
                          a.naive, d.model
                   FROM forecast.demand d JOIN _act a USING (valid_time, series)
                   WHERE d.valid_time >= ? AND d.valid_time < ?""", [_naive(start), ws]).fetchone()[0]
            con.execute("COMMIT")
            con.unregister("_act")
        # generation: the PV and wind forecasts against measured generator output
        gen = measured_generation(con, network.load().net, start, issue, KINDS)
        if len(gen):
            ga = gen.stack().rename("actual").reset_index()
            ga.columns = ["valid_time", "series", "actual"]
            ga["valid_time"] = ga.valid_time.dt.tz_convert("UTC").dt.tz_localize(None)
            con.register("_gact", ga)
            con.execute("BEGIN TRANSACTION")
            con.execute("DELETE FROM forecast.errors WHERE valid_time >= ? AND valid_time < ? AND series LIKE 'gen:%'",
                        [_naive(start), ws])
            matched += con.execute(
                """INSERT INTO forecast.errors
                   SELECT g.issue_time, 'gen:' || g.kind, g.valid_time, g.lead_minutes, a.actual, g.p10, g.p50, g.p90,
                          NULL, g.model
                   FROM forecast.generation g JOIN _gact a ON a.valid_time = g.valid_time AND a.series = 'gen:' || g.kind
                   WHERE g.valid_time >= ? AND g.valid_time < ?""", [_naive(start), ws]).fetchone()[0]
            con.execute("COMMIT")
            con.unregister("_gact")
        errors = con.execute("SELECT * FROM forecast.errors WHERE valid_time >= ? AND valid_time < ?",
                             [ws - pd.Timedelta(days=1), ws]).df()
        table = accuracy_table(errors)
        table.insert(0, "window_start", ws)
        con.execute("BEGIN TRANSACTION")
        con.execute("DELETE FROM forecast.accuracy WHERE window_start = ?", [ws])
        if len(table):
            con.register("_acc", table)
            con.execute("INSERT INTO forecast.accuracy BY NAME SELECT * FROM _acc")
            con.unregister("_acc")
        con.execute("COMMIT")
    sys_rows = table[table.series == "system"] if len(table) else table
    worst = worst_model_mape(sys_rows)
    yield MaterializeResult(metadata={
        "matched_this_run": int(matched), "errors_24h": len(errors),
        "system_mape_24h": None if worst is None else round(worst[1], 3),
        "table": MetadataValue.md(md_table(sys_rows, empty="_no actuals yet_")),
    })
    if worst is None:  # a check without data warns, and never passes
        yield AssetCheckResult(check_name="forecast_error_within_limits", passed=False,
                               severity=AssetCheckSeverity.WARN,
                               metadata={"detail": "no system forecast has a measured actual with a MAPE yet"})
    else:
        model, mape = worst
        sev = AssetCheckSeverity.ERROR if mape > settings.forecast_mape_fail else AssetCheckSeverity.WARN
        yield AssetCheckResult(check_name="forecast_error_within_limits", passed=mape <= settings.forecast_mape_warn,
                               severity=sev, metadata={"worst_model": model, "system_mape_24h": round(mape, 3),
                                                       "warn_above": settings.forecast_mape_warn,
                                                       "fail_above": settings.forecast_mape_fail})


def worst_model_mape(rows: pd.DataFrame) -> tuple[str, float] | None:
    """The model with the highest count-weighted MAPE over ``rows`` (series, model, bucket, n, mape),
    counting only rows that have a MAPE: a missing MAPE (all actuals zero) is no evidence of accuracy."""
    if not len(rows):
        return None
    r = rows[rows.mape.notna() & (rows.n > 0)]
    if not len(r):
        return None
    per_model = r.groupby("model").apply(lambda g: np.average(g.mape, weights=g.n), include_groups=False)
    return str(per_model.idxmax()), float(per_model.max())


@asset(
    group_name=GROUP,
    pool="duckdb",
    partitions_def=live_five_minute_partitions,
    deps=[forecast_accuracy],
    check_specs=[AssetCheckSpec("no_consumption_anomalies", asset="consumption_anomalies",
                                description="Warns when a zone or the system shows a spike, drop, flatline or drift "
                                "in the last hour.")],
    description="Unusual consumption per zone and for the system in the last hour: residual against the forecast, "
    "robust z-score over the trailing day, classed spike / drop / flatline / drift (forecast.anomalies).",
)
def consumption_anomalies(context: AssetExecutionContext, duckdb: DuckDBResource, settings: SettingsResource):
    from gridpipeline.forecast.live import detect_anomalies

    settings = settings.get()
    issue = _issue(context)
    ws = _naive(issue)
    hour = ws - pd.Timedelta(hours=1)
    with writer_lock(settings.db_path), duckdb.get_connection() as con:
        ensure_forecast_schema(con)
        # the shortest-lead forecast of each instant
        errors = con.execute(
            """SELECT series, valid_time, actual, p50 FROM forecast.errors
               WHERE valid_time >= ? AND valid_time < ?
               QUALIFY row_number() OVER (PARTITION BY series, valid_time ORDER BY lead_minutes) = 1""",
            [ws - pd.Timedelta(days=1), ws]).df()
        found = detect_anomalies(errors, hour) if len(errors) else detect_anomalies(
            pd.DataFrame(columns=["series", "valid_time", "actual", "p50"]), hour)
        found.insert(0, "window_start", ws)
        con.execute("BEGIN TRANSACTION")
        con.execute("DELETE FROM forecast.anomalies WHERE window_start = ?", [ws])
        if len(found):
            con.register("_an", found)
            con.execute("INSERT INTO forecast.anomalies BY NAME SELECT * FROM _an")
            con.unregister("_an")
        con.execute("COMMIT")
    counts = found.kind.value_counts().to_dict() if len(found) else {}
    yield MaterializeResult(metadata={
        "anomalies_last_hour": len(found), "by_kind": MetadataValue.json(counts),
        "instants_checked": int((errors.valid_time >= hour).sum()) if len(errors) else 0,
        "table": MetadataValue.md(md_table(found.drop(columns=["window_start"]))),
    })
    checked = int((errors.valid_time >= hour).sum()) if len(errors) else 0
    yield AssetCheckResult(check_name="no_consumption_anomalies", passed=checked > 0 and not len(found),
                           severity=AssetCheckSeverity.WARN,
                           metadata={"by_kind": MetadataValue.json(counts), "instants_checked": checked,
                                     "detail": "ok" if checked else "no forecast with a measured actual in the last "
                                     "hour: nothing to check"})


@asset(
    group_name=GROUP,
    automation_condition=AutomationCondition.on_cron("30 2 * * *") | AutomationCondition.on_missing(),
    description="Learnt corrections of the PV and wind physics (LightGBM P10/P50/P90 of output/rating): PV from "
    "pvanalytics' measured SERF East array, wind from the GEFCom2012 farms when ../shared/data holds them "
    "(otherwise wind stays physics-only). Files under GRIDPIPELINE_HOME/models.",
)
def renewable_models(context: AssetExecutionContext, settings: SettingsResource):
    import joblib

    from gridpipeline.forecast.datasets import shared_data_dir
    from gridpipeline.forecast.renewables import load_gefcom_wind, pv_backtest, wind_backtest

    out = settings.get().home / "models"
    out.mkdir(parents=True, exist_ok=True)
    meta = {}
    pv = pv_backtest(train_frac=0.6, return_model=True)
    joblib.dump(pv.pop("model"), out / "pv_correction.joblib")
    meta["pv_nmae_physics"] = round(pv["physics"]["nmae"], 4)
    meta["pv_nmae_corrected"] = round(pv["corrected"]["nmae"], 4)
    if (shared_data_dir() / "gefcom2012" / "wind").exists():
        wind = wind_backtest(load_gefcom_wind(), return_model=True)
        joblib.dump(wind.pop("model"), out / "wind_correction.joblib")
        meta["wind_nmae_physics"] = round(wind["physics"]["nmae"], 4)
        meta["wind_nmae_corrected"] = round(wind["corrected"]["nmae"], 4)
    else:
        context.log.warning("GEFCom2012 wind data not found: wind forecasts stay physics-only")
        meta["wind"] = "physics only (no training data)"
    return MaterializeResult(metadata=meta)


@asset(
    group_name=GROUP,
    pool="duckdb",
    partitions_def=live_five_minute_partitions,
    deps=[weather_features, renewable_models],
    description="PV and wind output of the grid's generators for the next 24 h at 5-minute steps, P10/P50/P90: "
    "pvlib / power-curve physics from the weather forecast, corrected by the learnt models (model column: "
    "corrected or physics). Intermittency, forecast and measured: ramp events (forecast output; measured output "
    "of the last 24 h) and the irradiance variability index (forecast; observed last 24 h) "
    "(forecast.generation, forecast.ramps).",
)
def renewable_forecast(context: AssetExecutionContext, duckdb: DuckDBResource, settings: SettingsResource,
                       network: NetworkModelResource, weather: WeatherSource):
    import joblib

    from gridpipeline.forecast.generation import (KINDS, generation_forecast, generation_rows, measured_ramps,
                                                  write_generation)
    from gridpipeline.forecast.live import measured_generation
    from gridpipeline.forecast.renewables import variability_index
    from gridpipeline.forecast.weather import weather_features as features

    s = settings.get()
    issue = _issue(context)
    model = network.load()
    capacity = {kind: model.capacity_mw(types) for kind, types in KINDS.items()}
    day = issue - pd.Timedelta(days=1)
    with writer_lock(s.db_path), duckdb.get_connection() as con:
        ensure_forecast_schema(con)
        wx = con.execute("SELECT * FROM forecast.weather WHERE issue_time = ? ORDER BY valid_time",
                         [_naive(issue)]).df()
        meas = measured_generation(con, model.net, day, issue, KINDS)
    if not len(wx):
        raise RuntimeError(f"no weather forecast for {issue}: materialise weather_features first")
    wx.index = pd.DatetimeIndex(wx.valid_time).tz_localize("UTC")
    stale = bool(wx.stale.any())
    corrections = {}
    for kind in KINDS:
        path = s.home / "models" / f"{kind}_correction.joblib"
        corrections[kind] = joblib.load(path) if path.exists() else None
    out, rp, meta = generation_forecast(wx, s.site_latitude, s.site_longitude, capacity, corrections)
    meta.update({"issue_time": str(issue), "weather_stale": stale})
    meta["irradiance_variability_index"] = variability_index(wx.ghi, wx.ghi_clear, 5.0)
    # the same measures on what happened: the last 24 h of measured output and observed irradiance
    mr, mmeta = measured_ramps(meas, capacity)
    meta.update(mmeta)
    obs = weather.observations(day, issue)
    of = features(obs, s.site_latitude, s.site_longitude, s.forecast_tz)
    meta["irradiance_variability_index_observed_24h"] = variability_index(of.ghi, of.ghi_clear, 5.0)
    rp = pd.concat([x for x in (rp, mr) if len(x)], ignore_index=True) if len(rp) or len(mr) else pd.DataFrame()
    out, rp = generation_rows(out, rp, issue, stale)
    with writer_lock(s.db_path), duckdb.get_connection() as con:
        write_generation(con, issue, out, rp)
    meta["ramp_events"] = MetadataValue.md(md_table(rp, ["kind", "start", "end", "direction", "magnitude"]))
    return MaterializeResult(metadata=meta)


forecast_assets = [weather_features, demand_model, demand_forecast, forecast_accuracy, consumption_anomalies,
                   renewable_models, renewable_forecast]

forecast_job = define_asset_job(
    "forecast_job",
    selection=[weather_features, demand_forecast, forecast_accuracy, consumption_anomalies, renewable_forecast],
    partitions_def=live_five_minute_partitions,
    executor_def=in_process_executor,
    description="Weather, demand forecasts, live accuracy and anomalies for the window that has just opened.",
)


@schedule(job=forecast_job, cron_schedule="*/5 * * * *", execution_timezone="UTC",
          default_status=DefaultScheduleStatus.RUNNING,
          description="Issues the forecasts every 5 minutes, for the window that starts at the tick.")
def forecast_schedule(context):
    t = pd.Timestamp(context.scheduled_execution_time).tz_convert("UTC").floor("5min")
    key = f"{t:%Y-%m-%d-%H:%M}"
    return RunRequest(run_key=f"forecast:{key}", partition_key=key, tags={"dagster/priority": "5"})


__all__ = ["forecast_assets", "forecast_job", "forecast_schedule", "model_asof"]
