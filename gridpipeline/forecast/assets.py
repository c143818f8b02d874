"""Forecast assets: weather features, the nightly demand model, 5-minute demand forecasts with
quantiles, live accuracy and consumption anomalies. Thin wiring of ``forecast/`` to DuckDB.

Every 5 minutes ``forecast_schedule`` runs ``forecast_job`` for the window that has just opened;
its start is the issue time. Rows are keyed by issue time (forecasts) or by the evaluated instant
(errors, anomalies) and replaced when a partition re-runs.
"""

import time
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AutomationCondition,
    ConfigurableResource,
    DefaultScheduleStatus,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    asset,
    define_asset_job,
    in_process_executor,
    schedule,
)
from dagster_duckdb import DuckDBResource

from gridpipeline.orchestration.partitions import live_five_minute_partitions
from gridpipeline.orchestration.plots import md_table
from gridpipeline.orchestration.resources import GridWorldResource
from gridpipeline.store import writer_lock

GROUP = "forecast"
MODEL_FILE = "demand_global.joblib"

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
CREATE TABLE IF NOT EXISTS forecast.demand (
    issue_time TIMESTAMP, series VARCHAR, valid_time TIMESTAMP, lead_minutes INTEGER, p10 DOUBLE, p50 DOUBLE,
    p90 DOUBLE, model VARCHAR, weather_stale BOOLEAN
);
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


class WeatherSource(ConfigurableResource):
    """Weather forecasts: the world's weather file (default) or an Open-Meteo-style API. When the API
    fails, the last stored forecast serves, flagged stale; without one, the file (also flagged)."""

    mode: str = "file"
    base_url: str = "https://api.open-meteo.com"
    timeout_s: float = 10.0
    retries: int = 3

    def forecast(self, world, issue: pd.Timestamp, horizon: pd.Timedelta, last_stored=None):
        """(frame, source, stale, message)."""
        from gridpipeline.forecast.weather import FileWeatherFeed, OpenMeteoClient, WeatherUnavailable

        file_feed = FileWeatherFeed(world)
        if self.mode == "file":
            return file_feed.forecast(issue, horizon), "file", False, ""
        loc = world.meta["location"]
        client = OpenMeteoClient(self.base_url, loc["latitude"], loc["longitude"], self.timeout_s, self.retries)
        try:
            return client.forecast(issue, horizon), "open_meteo", False, ""
        except WeatherUnavailable as exc:
            prev = last_stored(issue) if last_stored else None
            if prev is not None and len(prev):
                return prev, "open_meteo (last forecast)", True, str(exc)
            return file_feed.forecast(issue, horizon), "file (API unavailable)", True, str(exc)


def _issue(context) -> pd.Timestamp:
    return pd.Timestamp(context.partition_time_window.start).tz_convert("UTC")


def _naive(ts) -> pd.Timestamp:
    return pd.Timestamp(ts).tz_convert("UTC").tz_localize(None)


def _model_path(settings) -> Path:
    return settings.home / "models" / MODEL_FILE


def _series_config(settings):
    from gridpipeline.forecast.global_model import GlobalConfig
    from gridpipeline.forecast.live import HORIZON, STEP

    return GlobalConfig(step=STEP, horizon=HORIZON, weather_cols=("temperature",), tz=settings.forecast_tz,
                        country=settings.forecast_country, train_days=settings.forecast_train_days,
                        issue_stride=pd.Timedelta(hours=3), max_rows=250_000, rounds=120, balance_point=18.0,
                        # a quarter of the span (at most a week) calibrates the band; the rest trains
                        calib_days=max(1, min(7, settings.forecast_train_days // 4)))


@asset(
    group_name=GROUP,
    pool="duckdb",
    partitions_def=live_five_minute_partitions,
    description="Weather for the next 24 h at 5-minute steps, issued at the window start: temperature, dew point, "
    "humidity, heating/cooling degree hours, hub-height wind, GHI and clear-sky index (pvlib), cloud cover, local "
    "calendar with holidays. Source and staleness per issue (forecast.weather).",
)
def weather_features(context: AssetExecutionContext, duckdb: DuckDBResource, world: GridWorldResource,
                     weather: WeatherSource):
    from gridpipeline.forecast.weather import weather_features as features

    settings = world.settings()
    issue = _issue(context)
    w = world.load()
    loc = w.meta["location"]
    with writer_lock(settings.db_path), duckdb.get_connection() as con:
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

        frame, source, stale, message = weather.forecast(w, issue, pd.Timedelta(hours=24), last_stored)
        f = features(frame, loc["latitude"], loc["longitude"], settings.forecast_tz, settings.forecast_country)
        out = f.reset_index(names="valid_time")
        out["valid_time"] = out.valid_time.dt.tz_convert("UTC").dt.tz_localize(None)
        out.insert(0, "issue_time", _naive(issue))
        out["source"], out["stale"], out["message"] = source, stale, message
        con.execute("BEGIN TRANSACTION")
        con.execute("DELETE FROM forecast.weather WHERE issue_time = ?", [_naive(issue)])
        con.register("_wx", out)
        con.execute("INSERT INTO forecast.weather BY NAME SELECT * FROM _wx")
        con.unregister("_wx")
        con.execute("COMMIT")
    if stale:
        context.log.warning(f"weather forecast is stale ({source}): {message}")
    return MaterializeResult(metadata={
        "issue_time": str(issue), "source": source, "stale": stale, "steps": len(out),
        "temperature_min_c": float(np.nanmin(f.temperature)), "temperature_max_c": float(np.nanmax(f.temperature)),
        "ghi_max_w_m2": float(np.nanmax(f.ghi)), "message": message or "ok",
    })


@asset(
    group_name=GROUP,
    pool="duckdb",
    automation_condition=AutomationCondition.on_cron("0 2 * * *") | AutomationCondition.on_missing(),
    description="The demand models for every zone and the system, retrained nightly on "
    "GRIDPIPELINE_FORECAST_TRAIN_DAYS of history: the global LightGBM model (P10/P50/P90, with and without "
    "weather) and one Prophet model per series with temperature regressors, weighted by their skill on the last "
    "day before the cut-off (forecast.models, the model file under GRIDPIPELINE_HOME/models).",
)
def demand_model(context: AssetExecutionContext, duckdb: DuckDBResource, world: GridWorldResource):
    import joblib

    from gridpipeline.forecast.live import STEP, archive_demand
    from gridpipeline.forecast.prophet_live import train_demand_models
    from gridpipeline.forecast.weather import FileWeatherFeed

    settings = world.settings()
    w = world.load()
    cfg = _series_config(settings)
    now = pd.Timestamp.now(tz="UTC").floor("5min")
    start = now - pd.Timedelta(days=cfg.train_days + 9)
    times = pd.date_range(start, now, freq=STEP, inclusive="left")
    hist = archive_demand(w, times)
    wx = FileWeatherFeed(w).observations(start, now)
    t0 = time.perf_counter()
    bundle, report = train_demand_models(hist, wx, cfg, now, settings.forecast_tz, settings.forecast_country)
    model, weights = bundle["global"], bundle["weights"]
    holdout_mape, prophet_mape = report["holdout_mape"], report["holdout_mape_prophet"]
    path = _model_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(bundle, path)
    with writer_lock(settings.db_path), duckdb.get_connection() as con:
        ensure_forecast_schema(con)
        con.execute("INSERT INTO forecast.models VALUES (?, 'demand_global', ?, ?, ?, ?, ?)",
                    [_naive(now), str(path), len(model.series), model.train_rows, model.train_seconds, holdout_mape])
    return MaterializeResult(metadata={
        "series": len(model.series), "train_rows": model.train_rows,
        "train_seconds": round(time.perf_counter() - t0, 1), "holdout_day_mape": round(holdout_mape, 2),
        "holdout_day_mape_prophet": round(prophet_mape, 2),
        "prophet_weight_by_horizon": MetadataValue.json({sname: {b: round(w["prophet"], 3) for b, w in wb.items()}
                                                         for sname, wb in weights.items()}),
        "trained_until": str(now), "path": str(path),
    })


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


@asset(
    group_name=GROUP,
    pool="duckdb",
    partitions_def=live_five_minute_partitions,
    deps=[weather_features, demand_model, AssetKey("clean_telemetry")],
    description="Demand forecasts for every zone and the system: 24 h at 5-minute steps with P10/P50/P90, issued "
    "every 5 minutes from measured load (clean_telemetry) and the historian archive before it. Each row records "
    "the model that served it (global+prophet, the two blended by skill -> global -> global_noweather -> "
    "seasonal_naive -> profile); a model whose rolling error passed GRIDPIPELINE_FORECAST_DEGRADED_MAPE is "
    "skipped (forecast.demand).",
)
def demand_forecast(context: AssetExecutionContext, duckdb: DuckDBResource, world: GridWorldResource):
    import joblib

    from gridpipeline.forecast.global_model import forecast_global
    from gridpipeline.forecast.live import HORIZON, STEP, history, profile_demand
    from gridpipeline.forecast.prophet_live import combine

    settings = world.settings()
    issue = _issue(context)
    w = world.load()
    path = _model_path(settings)
    bundle = joblib.load(path) if path.exists() else None
    if bundle is not None and not isinstance(bundle, dict):  # a model file from before Prophet joined
        bundle = {"global": bundle, "prophet": {}, "weights": {}}
    model = bundle["global"] if bundle else None
    with writer_lock(settings.db_path), duckdb.get_connection() as con:
        ensure_forecast_schema(con)
        hist, n_measured = history(w, con, issue)
        wx = con.execute("SELECT valid_time, temperature, stale FROM forecast.weather WHERE issue_time = ?",
                         [_naive(issue)]).df()
        weather_stale = bool(wx.stale.any()) if len(wx) else True
        weather = None
        if len(wx):
            weather = wx.set_index(pd.DatetimeIndex(wx.valid_time).tz_localize("UTC"))[["temperature"]]
        degraded = con.execute(
            "SELECT model, avg(mape) FROM forecast.accuracy WHERE window_start = (SELECT max(window_start) "
            "FROM forecast.accuracy) AND series = 'system' AND mape IS NOT NULL GROUP BY model HAVING avg(mape) > ?",
            [settings.forecast_degraded_mape]).fetchall()
        disabled = {m for m, _ in degraded if m in ("global", "global_noweather")}
        if "global+prophet" in {m for m, _ in degraded}:
            disabled.add("prophet")
        times = pd.date_range(issue, issue + HORIZON, freq=STEP, inclusive="left")
        prof = profile_demand(w, times)
        if model is None:
            context.log.warning(f"no demand model at {path}: serving the profile fallback")
            long = prof.stack().rename("p50").reset_index()
            long.columns = ["valid_time", "series", "p50"]
            long["lead"] = ((long.valid_time - issue) / STEP).astype(int) + 1
            long["p10"], long["p90"], long["model"] = long.p50 * 0.85, long.p50 * 1.15, "profile"
            fc = long
        else:
            if disabled:
                context.log.warning(f"degraded model(s) {sorted(disabled)} hand over to the next in the chain")
            fc = forecast_global(model, hist, weather, issue, profile=prof, disabled=disabled)
            if "prophet" not in disabled and "global" not in disabled:
                fc = combine(fc, bundle.get("prophet", {}), bundle.get("weights", {}), weather)
        out = pd.DataFrame({
            "issue_time": _naive(issue), "series": fc.series.astype(str),
            "valid_time": pd.DatetimeIndex(fc.valid_time).tz_convert("UTC").tz_localize(None),
            "lead_minutes": (fc["lead"].to_numpy() * 5).astype(int), "p10": fc.p10, "p50": fc.p50, "p90": fc.p90,
            "model": fc.model, "weather_stale": weather_stale,
        })
        con.execute("BEGIN TRANSACTION")
        con.execute("DELETE FROM forecast.demand WHERE issue_time = ?", [_naive(issue)])
        con.register("_fc", out)
        con.execute("INSERT INTO forecast.demand SELECT * FROM _fc")
        con.unregister("_fc")
        con.execute("COMMIT")
    sysf = fc[fc.series == "system"]
    return MaterializeResult(metadata={
        "issue_time": str(issue), "series": int(fc.series.nunique()), "rows": len(out),
        "served_by": MetadataValue.json(fc.model.value_counts().to_dict()),
        "measured_history_slots": n_measured, "weather_stale": weather_stale,
        "degraded_models_skipped": ", ".join(sorted(disabled)) or "none",
        "system_p50_next_hour_mw": float(sysf.p50.head(12).mean()) if len(sysf) else None,
        "system_peak_p90_mw": float(sysf.p90.max()) if len(sysf) else None,
        "system_forecast": MetadataValue.md(_plot_system(fc)) if len(sysf) else "no system series",
    })


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
def forecast_accuracy(context: AssetExecutionContext, duckdb: DuckDBResource, world: GridWorldResource):
    from gridpipeline.forecast.live import accuracy_table, measured_demand, measured_generation

    settings = world.settings()
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
        gen = measured_generation(con, world.load().net, start, issue, {"pv": PV_TYPES, "wind": WIND_TYPES})
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
    worst = None
    if len(sys_rows) and sys_rows.mape.notna().any():
        per_model = sys_rows.groupby("model").apply(
            lambda g: np.average(g.mape.fillna(0), weights=g.n), include_groups=False)
        worst = (per_model.idxmax(), float(per_model.max()))
    yield MaterializeResult(metadata={
        "matched_this_run": int(matched), "errors_24h": len(errors),
        "system_mape_24h": None if worst is None else round(worst[1], 3),
        "table": MetadataValue.md(md_table(sys_rows, empty="_no actuals yet_")),
    })
    if worst is None:
        yield AssetCheckResult(check_name="forecast_error_within_limits", passed=True,
                               metadata={"detail": "no forecast has a measured actual yet"})
    else:
        model, mape = worst
        sev = AssetCheckSeverity.ERROR if mape > settings.forecast_mape_fail else AssetCheckSeverity.WARN
        yield AssetCheckResult(check_name="forecast_error_within_limits", passed=mape <= settings.forecast_mape_warn,
                               severity=sev, metadata={"worst_model": model, "system_mape_24h": round(mape, 3),
                                                       "warn_above": settings.forecast_mape_warn,
                                                       "fail_above": settings.forecast_mape_fail})


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
def consumption_anomalies(context: AssetExecutionContext, duckdb: DuckDBResource, world: GridWorldResource):
    from gridpipeline.forecast.live import detect_anomalies

    settings = world.settings()
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
    yield AssetCheckResult(check_name="no_consumption_anomalies", passed=not len(found),
                           severity=AssetCheckSeverity.WARN, metadata={"by_kind": MetadataValue.json(counts)})


PV_TYPES = ("PV", "lv_RES")  # SimBench: LV renewables are rooftop PV
WIND_TYPES = ("Wind",)


def _capacity(net, types) -> float:
    sg = net.sgen[net.sgen.in_service.astype(bool)]
    sel = sg.type.astype(str).map(lambda t: any(t.startswith(x) for x in types))
    rating = sg.sn_mva.where(sg.sn_mva > 0, sg.p_mw) if "sn_mva" in sg else sg.p_mw
    return float(rating[sel].sum())


@asset(
    group_name=GROUP,
    automation_condition=AutomationCondition.on_cron("30 2 * * *") | AutomationCondition.on_missing(),
    description="Learnt corrections of the PV and wind physics (LightGBM P10/P50/P90 of output/rating): PV from "
    "pvanalytics' measured SERF East array, wind from the GEFCom2012 farms when ../shared/data holds them "
    "(otherwise wind stays physics-only). Files under GRIDPIPELINE_HOME/models.",
)
def renewable_models(context: AssetExecutionContext, world: GridWorldResource):
    import joblib

    from gridpipeline.forecast.datasets import shared_data_dir
    from gridpipeline.forecast.renewables import load_gefcom_wind, pv_backtest, wind_backtest

    settings = world.settings()
    out = settings.home / "models"
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
def renewable_forecast(context: AssetExecutionContext, duckdb: DuckDBResource, world: GridWorldResource):
    import joblib

    from gridpipeline.forecast.renewables import (
        pv_features,
        pv_physics,
        ramp_events,
        variability_index,
        wind_features,
        wind_physics,
    )

    settings = world.settings()
    issue = _issue(context)
    w = world.load()
    loc = w.meta["location"]
    models = settings.home / "models"
    with writer_lock(settings.db_path), duckdb.get_connection() as con:
        ensure_forecast_schema(con)
        wx = con.execute("SELECT * FROM forecast.weather WHERE issue_time = ? ORDER BY valid_time",
                         [_naive(issue)]).df()
        if not len(wx):
            raise RuntimeError(f"no weather forecast for {issue}: materialise weather_features first")
        wx.index = pd.DatetimeIndex(wx.valid_time).tz_localize("UTC")
        stale = bool(wx.stale.any())
        lead = ((wx.index - issue) / pd.Timedelta(minutes=5)).astype(int).to_numpy() + 1
        frames, ramps, meta = [], [], {"issue_time": str(issue), "weather_stale": stale}
        for kind, types in (("pv", PV_TYPES), ("wind", WIND_TYPES)):
            cap = _capacity(w.net, types)
            if cap <= 0:
                continue
            if kind == "pv":
                phys = pv_physics(wx, loc["latitude"], loc["longitude"], cap).to_numpy()
                X = pv_features(wx, loc["latitude"], loc["longitude"], phys / cap)
                path = models / "pv_correction.joblib"
            else:
                phys = wind_physics(wx.wind_speed_hub.to_numpy(), cap)
                X = wind_features(wx.wind_speed_hub.to_numpy(), None, wx.index, phys / cap)
                X["farm"] = 0
                path = models / "wind_correction.joblib"
            if path.exists():
                q = joblib.load(path).predict(X) * cap
                if kind == "pv":  # no output without sun, whatever the model says
                    q[(X.elevation <= 0).to_numpy()] = 0.0
                label = "corrected"
            else:
                q = np.column_stack([phys * 0.8, phys, np.minimum(phys * 1.2, cap)])
                label = "physics"
            frames.append(pd.DataFrame({
                "issue_time": _naive(issue), "kind": kind, "valid_time": wx.valid_time.to_numpy(),
                "lead_minutes": lead * 5, "capacity_mw": cap, "physics_mw": phys, "p10": q[:, 0], "p50": q[:, 1],
                "p90": q[:, 2], "model": label, "weather_stale": stale}))
            ev = ramp_events(pd.Series(q[:, 1], index=wx.valid_time), cap, threshold=0.1, window=6)
            ramps.append(ev.assign(issue_time=_naive(issue), kind=kind))
            meta[f"{kind}_capacity_mw"] = round(cap, 3)
            meta[f"{kind}_p50_peak_mw"] = round(float(q[:, 1].max()), 3)
            meta[f"{kind}_energy_24h_mwh"] = round(float(q[:, 1].sum() * 5 / 60), 2)
            meta[f"{kind}_model"] = label
            meta[f"{kind}_ramps"] = len(ev)
        meta["irradiance_variability_index"] = variability_index(wx.ghi, wx.ghi_clear, 5.0)
        # the same measures on what happened: the last 24 h of measured output and observed irradiance
        from gridpipeline.forecast.live import measured_generation
        from gridpipeline.forecast.weather import FileWeatherFeed, weather_features as _features

        day = issue - pd.Timedelta(days=1)
        meas = measured_generation(con, w.net, day, issue, {"pv": PV_TYPES, "wind": WIND_TYPES})
        for kind in ("pv", "wind"):
            col = f"gen:{kind}"
            cap = meta.get(f"{kind}_capacity_mw")
            if len(meas) and col in meas and cap and meas[col].notna().sum() > 12:
                ev = ramp_events(meas[col].dropna(), cap, threshold=0.1, window=6)
                meta[f"{kind}_measured_ramps_24h"] = len(ev)
                ramps.append(ev.assign(issue_time=_naive(issue), kind=f"{kind} (measured)"))
            else:
                meta[f"{kind}_measured_ramps_24h"] = "no measurements yet"
        obs = FileWeatherFeed(w).observations(day, issue)
        of = _features(obs, loc["latitude"], loc["longitude"], settings.forecast_tz)
        meta["irradiance_variability_index_observed_24h"] = variability_index(of.ghi, of.ghi_clear, 5.0)
        out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        rp = pd.concat(ramps, ignore_index=True) if ramps else pd.DataFrame()
        con.execute("BEGIN TRANSACTION")
        con.execute("DELETE FROM forecast.generation WHERE issue_time = ?", [_naive(issue)])
        con.execute("DELETE FROM forecast.ramps WHERE issue_time = ?", [_naive(issue)])
        if len(out):
            con.register("_gen", out)
            con.execute("INSERT INTO forecast.generation BY NAME SELECT * FROM _gen")
            con.unregister("_gen")
        if len(rp):
            con.register("_rp", rp)
            con.execute("INSERT INTO forecast.ramps BY NAME SELECT * FROM _rp")
            con.unregister("_rp")
        con.execute("COMMIT")
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


__all__ = ["WeatherSource", "forecast_assets", "forecast_job", "forecast_schedule"]
