"""The operational forecast loop on plain frames: demand history from measurements, the fallback
forecast, accuracy and anomalies. The assets in ``forecast/assets.py`` wire these to DuckDB.

Series are the zones that have loads plus ``system`` (their sum), in MW at 5-minute resolution.
History is what was measured, and only that: P of every metered load from ``clean_telemetry``,
summed per zone and scaled up for the sensors missing in a slot when at least 80 % reported. A slot
with less coverage, or none, stays a gap (NaN); the models skip gaps. A fresh deployment learns from
the historian archive once it has been loaded through ingestion like any other telemetry (``gridpipeline
dev`` does that for the simulated world), so the archive carries the same noise, gaps and quality
codes as live readings.
"""

from __future__ import annotations

import logging

import duckdb
import numpy as np
import pandas as pd

from gridpipeline.forecast.metrics import score

log = logging.getLogger(__name__)

STEP = pd.Timedelta(minutes=5)
HORIZON = pd.Timedelta(hours=24)
BUCKETS = ((0, 60, "0-1h"), (60, 360, "1-6h"), (360, 1440, "6-24h"))
MIN_COVERAGE = 0.8
#: P10/P90 of the fallbacks, relative to their P50: seasonal naive, nominal
NAIVE_BAND = (0.9, 1.1)
NOMINAL_BAND = (0.85, 1.15)


def measured_demand(con, start, end) -> pd.DataFrame:
    """Zone and system demand from clean_telemetry (load P summed per zone and slot)."""
    try:
        df = con.execute(
            """
            WITH expected AS (
                SELECT zone, count(*) AS n FROM telemetry.sensors
                WHERE kind = 'p_inj' AND element_type = 'load' GROUP BY zone
            )
            SELECT c.ts, s.zone, sum(c.value) AS p, count(c.value) AS n_rep, any_value(e.n) AS n_exp
            FROM clean.clean_telemetry c
            JOIN telemetry.sensors s USING (sensor_id)
            JOIN expected e ON e.zone = s.zone
            WHERE s.kind = 'p_inj' AND s.element_type = 'load' AND c.ts >= ? AND c.ts < ?
              AND epoch(c.ts)::BIGINT % 300 = 0
            GROUP BY ALL
            """, [_naive(start), _naive(end)]).df()
    except duckdb.CatalogException as exc:  # a fresh store: no clean_telemetry or registry yet
        log.info("no measured demand yet: %s", exc)
        return pd.DataFrame()
    if not len(df):
        return pd.DataFrame()
    cov = df.n_rep / df.n_exp
    df["p"] = np.where(cov >= MIN_COVERAGE, df.p / cov.clip(lower=1e-9), np.nan)
    wide = df.pivot(index="ts", columns="zone", values="p")
    wide.index = pd.DatetimeIndex(wide.index).tz_localize("UTC")
    wide["system"] = wide.sum(axis=1, min_count=wide.shape[1])
    return wide


def measured_generation(con, net, start, end, kinds: dict[str, tuple[str, ...]]) -> pd.DataFrame:
    """Measured output (MW) per generation kind (e.g. pv, wind) from clean_telemetry's generator P,
    scaled up for missing sensors when at least 80 % reported; columns ``gen:<kind>``."""
    sg = net.sgen
    rows = []
    for kind, types in kinds.items():
        sel = sg.index[sg.type.astype(str).map(lambda t: any(t.startswith(x) for x in types))]
        rows += [(int(i), kind) for i in sel]
    if not rows:
        return pd.DataFrame()
    con.register("_gen_kind", pd.DataFrame(rows, columns=["element_id", "kind"]))
    try:
        df = con.execute(
            """
            WITH s AS (
                SELECT t.sensor_id, k.kind FROM telemetry.sensors t JOIN _gen_kind k USING (element_id)
                WHERE t.kind = 'p_inj' AND t.element_type = 'sgen'
            ), expected AS (SELECT kind, count(*) AS n FROM s GROUP BY kind)
            SELECT c.ts, s.kind, sum(c.value) AS p, count(c.value) AS n_rep, any_value(e.n) AS n_exp
            FROM clean.clean_telemetry c JOIN s USING (sensor_id) JOIN expected e USING (kind)
            WHERE c.ts >= ? AND c.ts < ? AND epoch(c.ts)::BIGINT % 300 = 0
            GROUP BY ALL""", [_naive(start), _naive(end)]).df()
    except duckdb.CatalogException as exc:
        log.info("no measured generation yet: %s", exc)
        return pd.DataFrame()
    finally:
        con.unregister("_gen_kind")
    if not len(df):
        return pd.DataFrame()
    cov = df.n_rep / df.n_exp
    df["p"] = np.where(cov >= MIN_COVERAGE, df.p / cov.clip(lower=1e-9), np.nan)
    wide = df.pivot(index="ts", columns="kind", values="p")
    wide.columns = [f"gen:{c}" for c in wide.columns]
    wide.index = pd.DatetimeIndex(wide.index).tz_localize("UTC")
    return wide


def _naive(ts) -> pd.Timestamp:
    t = pd.Timestamp(ts)
    return t.tz_convert("UTC").tz_localize(None) if t.tzinfo else t


def history(con, issue: pd.Timestamp, series: list[str], days: int = 8) -> tuple[pd.DataFrame, int]:
    """Measured demand of ``series`` in the ``days`` before ``issue`` on the 5-minute grid, gaps as NaN.
    Only readings timestamped before ``issue`` are used (late arrivals included).
    Returns (frame, number of slots with any measurement)."""
    times = pd.date_range(issue - pd.Timedelta(days=days), issue, freq=STEP, inclusive="left")
    meas = measured_demand(con, times[0], issue) if con is not None else pd.DataFrame()
    hist = meas.reindex(index=times, columns=series) if len(meas) else pd.DataFrame(np.nan, index=times, columns=series)
    return hist.astype(float), int(hist.notna().any(axis=1).sum())


def fallback_forecast(hist: pd.DataFrame, nominal: pd.Series, issue: pd.Timestamp,
                      horizon: pd.Timedelta = HORIZON, step: pd.Timedelta = STEP) -> pd.DataFrame:
    """The forecast when no model trained before ``issue`` exists: per series and step, the value one
    week earlier, else one day earlier (``seasonal_naive``), else the network's nominal demand
    (``nominal``). Long frame: series, valid_time, lead, p10, p50, p90, model."""
    times = pd.date_range(issue, issue + horizon, freq=step, inclusive="left")
    frames = []
    for series in hist.columns:
        y = hist[series]
        week = y.reindex(times - pd.Timedelta(days=7)).to_numpy(dtype=float)
        day = y.reindex(times - pd.Timedelta(days=1)).to_numpy(dtype=float)
        naive = np.where(np.isfinite(week), week, day)
        nom = float(nominal.get(series, np.nan))
        use_naive = np.isfinite(naive)
        p50 = np.where(use_naive, naive, nom)
        lo = np.where(use_naive, NAIVE_BAND[0], NOMINAL_BAND[0])
        hi = np.where(use_naive, NAIVE_BAND[1], NOMINAL_BAND[1])
        frames.append(pd.DataFrame({"series": series, "valid_time": times, "lead": np.arange(1, len(times) + 1),
                                    "p10": p50 * lo, "p50": p50, "p90": p50 * hi,
                                    "model": np.where(use_naive, "seasonal_naive", "nominal")}))
    return pd.concat(frames, ignore_index=True)


def actual_demand(con, start, end) -> pd.DataFrame:
    """What the grid did in [start, end): measurements, else nothing."""
    return measured_demand(con, start, end) if con is not None else pd.DataFrame()


def bucket_of(lead_minutes: np.ndarray) -> np.ndarray:
    out = np.full(len(lead_minutes), "", dtype=object)
    for lo, hi, name in BUCKETS:
        out[(lead_minutes > lo) & (lead_minutes <= hi)] = name
    return out


def accuracy_table(errors: pd.DataFrame) -> pd.DataFrame:
    """Metrics per series, model and horizon bucket from matched (forecast, actual) rows: n, MAPE (not
    on zeros), rMAE against the one-day-before value, RMSE, pinball loss and P10-P90 coverage."""
    rows = []
    if not len(errors):
        return pd.DataFrame(columns=["series", "model", "bucket", "n", "mape", "rmae", "rmse", "pinball", "coverage"])
    e = errors.assign(bucket=bucket_of(errors.lead_minutes.to_numpy()))
    for (series, model, bucket), g in e.groupby(["series", "model", "bucket"]):
        sc = score(g.actual.to_numpy(), g.p50.to_numpy(), g.p10.to_numpy(), g.p90.to_numpy(),
                   naive=g.naive.to_numpy() if "naive" in g else None)
        rows.append({"series": series, "model": model, "bucket": bucket, "n": len(g), "mape": sc.get("mape"),
                     "rmae": sc.get("rmae"), "rmse": sc.get("rmse"), "pinball": sc.get("pinball"),
                     "coverage": sc.get("coverage_p10_p90")})
    return pd.DataFrame(rows)


def detect_anomalies(errors: pd.DataFrame, window_start, z_limit: float = 4.0, drift_limit: float = 2.0,
                     flat_steps: int = 6) -> pd.DataFrame:
    """Unusual consumption in [window_start, ...) from the residual against the forecast.

    ``errors``: series, valid_time, actual, p50 over a trailing day (the context) and the window.
    The residual's robust z-score uses the trailing day's median and MAD per series (seasonal
    context: the forecast already carries the daily and weekly shape). Classes: ``spike`` (z above
    +z_limit), ``drop`` (below -z_limit), ``flatline`` (the same actual for ``flat_steps`` slots while
    the forecast moves, or zero while more than 10 % of the expected value is forecast), ``drift``
    (the mean z of the last hour beyond ``drift_limit``)."""
    out = []
    ws = pd.Timestamp(window_start)
    for series, g in errors.sort_values("valid_time").groupby("series"):
        r = (g.actual - g.p50).to_numpy()
        ctx = g.valid_time < ws
        base = r[ctx.to_numpy()] if ctx.sum() >= 12 else r
        med = np.nanmedian(base)
        mad = np.nanmedian(np.abs(base - med)) * 1.4826
        scale = max(mad, 1e-3 * max(np.nanmean(np.abs(g.p50)), 1e-9))
        z = (r - med) / scale
        act = g.actual.to_numpy()
        p50 = g.p50.to_numpy()
        zs = pd.Series(z)
        hour_mean = zs.rolling(12, min_periods=6).mean().to_numpy()
        same = pd.Series(act).diff().abs().lt(1e-9).astype(int).rolling(flat_steps - 1, min_periods=flat_steps - 1).sum()
        moving = pd.Series(p50).diff().abs().rolling(flat_steps - 1, min_periods=flat_steps - 1).sum() > 1e-6
        for k in np.flatnonzero((g.valid_time >= ws).to_numpy()):
            kind = None
            if (same.iloc[k] >= flat_steps - 1 and moving.iloc[k]) or (act[k] == 0 and p50[k] > 0.1 * abs(np.nanmean(p50))):
                kind = "flatline"
            elif z[k] > z_limit:
                kind = "spike"
            elif z[k] < -z_limit:
                kind = "drop"
            elif np.isfinite(hour_mean[k]) and abs(hour_mean[k]) > drift_limit:
                kind = "drift"
            if kind:
                out.append({"series": series, "ts": g.valid_time.iloc[k], "actual": act[k], "expected": p50[k],
                            "residual": r[k], "robust_z": z[k], "kind": kind})
    return pd.DataFrame(out, columns=["series", "ts", "actual", "expected", "residual", "robust_z", "kind"])
