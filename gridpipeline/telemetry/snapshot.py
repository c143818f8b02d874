"""One telemetry snapshot (all readings stamped with one instant), for the 30-second grid loop.

The 5-minute ``raw_telemetry``/``clean_telemetry`` partitions close after their window; the grid loop
cannot wait that long. It reads the latest *export interval* straight from the landing zone (one file
per source, named by the interval start), checks it the way ingestion does (types, known sensor,
unit conversion, impossible and questionable ranges from the ``kind_limits`` seed) and hands back
canonical values with a quality label. The files stay where they are: ingestion still stores every
row and quarantines the bad ones when the window closes. In backfills the cleaned rows of
``clean.clean_telemetry`` are used instead (:func:`clean_snapshot`), with their full quality codes.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from gridpipeline.common import landing as lz
from gridpipeline.settings import PROJECT_ROOT

SEEDS = PROJECT_ROOT / "dbt_project" / "seeds"
SNAPSHOT_COLUMNS = ["sensor_id", "value", "quality", "reason"]


@lru_cache(maxsize=1)
def kind_limits() -> pd.DataFrame:
    return pd.read_csv(SEEDS / "kind_limits.csv").set_index("kind")


@lru_cache(maxsize=1)
def unit_factors() -> dict[tuple[str, str], float]:
    with open(SEEDS / "unit_conversions.csv", newline="") as fh:
        return {(r["from_unit"], r["to_unit"]): float(r["factor"]) for r in csv.DictReader(fh)}


@dataclass
class SnapshotFiles:
    ts: datetime
    files: list[lz.LandingFile]
    sources: set[str]


def snapshot_files(landing: Path, ts: datetime) -> SnapshotFiles:
    """Landing files of the export interval starting at ``ts`` (naive UTC)."""
    files = [f for f in lz.window_files(landing, lz.floor_window(ts)) if f.export_start == ts]
    return SnapshotFiles(ts, files, {f.source for f in files if f.source})


def latest_snapshot(landing: Path, now: datetime, expected_sources: int, grace_s: float = 20.0,
                    lookback: timedelta = timedelta(minutes=10)) -> datetime | None:
    """The newest export interval that is complete: every expected source delivered, or ``grace_s``
    passed since its newest file arrived (a silent RTU must not stall the loop)."""
    for w in sorted(lz.recent_windows(landing, now - lookback), reverse=True):
        by_ts: dict[datetime, list[lz.LandingFile]] = {}
        for f in lz.window_files(landing, w):
            if f.export_start is not None:
                by_ts.setdefault(f.export_start, []).append(f)
        for ts in sorted(by_ts, reverse=True):
            fs = by_ts[ts]
            sources = {f.source for f in fs}
            newest = max(f.arrived_at for f in fs)
            if len(sources) >= expected_sources or (now - newest).total_seconds() >= grace_s:
                return ts
    return None


def _read(f: lz.LandingFile) -> pd.DataFrame:
    if f.fmt == "parquet":
        t = pq.read_table(f.path)
    else:
        t = pacsv.read_csv(f.path, convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
    df = t.to_pandas()
    df["arrived_at"] = f.arrived_at
    return df


def landing_snapshot(landing: Path, ts: datetime, sensors: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Readings of the export interval ``ts`` as (frame, counts).

    frame: sensor_id, value (canonical unit), quality (good/questionable/invalid), reason (why not good).
    One row per known sensor that reported (latest arrival wins). counts: files, unreadable files,
    rows_in, rows_used, rows_rejected (unknown sensor, unparseable, wrong timestamp, unknown unit).
    """
    snap = snapshot_files(landing, ts)
    frames, unreadable = [], 0
    for f in snap.files:
        try:
            frames.append(_read(f))
        except Exception:  # ingestion moves it to rejected/ when the window closes
            unreadable += 1
    counts = {"files": len(snap.files), "unreadable_files": unreadable, "rows_in": 0, "rows_used": 0,
              "rows_rejected": 0}
    if not frames:
        return pd.DataFrame(columns=SNAPSHOT_COLUMNS), counts
    raw = pd.concat(frames, ignore_index=True)
    df, c = label_snapshot(raw, ts, sensors)
    counts.update(c)
    return df, counts


#: RTU clocks jitter: a reading stamped within this many seconds of the snapshot instant belongs to it
TOLERANCE_S = 5.0


def label_snapshot(raw: pd.DataFrame, ts: datetime, sensors: pd.DataFrame,
                   tolerance_s: float = TOLERANCE_S) -> tuple[pd.DataFrame, dict]:
    """Raw rows (sensor_id, ts, value, unit, arrived_at; any types) -> canonical values with quality.

    A sensor's reading is the latest one stamped within ``tolerance_s`` of ``ts`` (then the latest
    arrival): a clock a second off still counts, the next interval's sample does not."""
    counts = {"rows_in": len(raw)}

    def col(name):
        return raw[name] if name in raw.columns else pd.Series(None, index=raw.index, dtype=object)

    sid = pd.to_numeric(col("sensor_id"), errors="coerce")
    val = pd.to_numeric(col("value"), errors="coerce")
    t = pd.to_datetime(col("ts"), errors="coerce", utc=True, format="ISO8601").dt.tz_localize(None)
    if "arrived_at" not in raw.columns:
        raw = raw.assign(arrived_at=pd.NaT)
    unit = raw["unit"].astype("string") if "unit" in raw.columns else pd.Series(pd.NA, index=raw.index, dtype="string")
    s = sensors.set_index("sensor_id")
    off = (t - pd.Timestamp(ts)).dt.total_seconds().abs()
    ok = sid.notna() & sid.isin(s.index) & (off <= tolerance_s)
    df = pd.DataFrame({"sensor_id": sid[ok].astype(np.int64), "raw": val[ok], "unit_in": unit[ok],
                       "t": t[ok], "arrived_at": raw.loc[ok, "arrived_at"]})
    df = df.sort_values(["t", "arrived_at"]).drop_duplicates("sensor_id", keep="last")
    meta = s.loc[df.sensor_id, ["kind", "unit", "nominal"]].reset_index(drop=True)
    df = df.reset_index(drop=True).join(meta)
    factors = unit_factors()
    same = df.unit_in.isna() | (df.unit_in == df.unit)
    fac = np.ones(len(df))
    other = np.flatnonzero(~same.to_numpy(dtype=bool))
    fac[other] = [factors.get((str(a), str(b)), np.nan) for a, b in zip(df.unit_in.iloc[other], df.unit.iloc[other])]
    df["value"] = df.raw.to_numpy(dtype=float) * fac
    lim = kind_limits().reindex(df.kind)
    scale = np.where(lim.scale.to_numpy() == "absolute", 1.0, df.nominal.replace(0, np.nan).to_numpy())
    x = df.value.to_numpy() / scale
    reason = np.full(len(df), "", dtype=object)
    invalid = ~np.isfinite(df.value.to_numpy()) | (x < lim.inv_lo.to_numpy()) | (x > lim.inv_hi.to_numpy())
    reason[invalid] = "invalid value or range"
    reason[np.isnan(fac)] = "unknown unit"
    quest = ~invalid & ((x < lim.q_lo.to_numpy()) | (x > lim.q_hi.to_numpy()))
    reason[quest] = "questionable range"
    df["quality"] = np.where(invalid, "invalid", np.where(quest, "questionable", "good"))
    df["reason"] = reason
    counts["rows_used"] = int(len(df))
    counts["rows_rejected"] = int(counts["rows_in"] - ok.sum())
    return df[SNAPSHOT_COLUMNS], counts


def db_snapshot(con, ts: datetime, sensors: pd.DataFrame) -> pd.DataFrame:
    """The stored raw readings of instant ``ts`` (``telemetry.raw_readings``), labelled like a landing
    snapshot: what the loop reads once a window has been ingested."""
    raw = con.execute("SELECT sensor_id, ts, value, unit, arrived_at FROM telemetry.raw_readings WHERE ts = ?",
                      [ts]).df()
    return label_snapshot(raw, ts, sensors)[0]


def clean_snapshot(con, ts: datetime) -> pd.DataFrame:
    """The cleaned readings of instant ``ts`` from ``clean.clean_telemetry`` (backfills)."""
    return con.execute(
        "SELECT sensor_id, value, quality, "
        "CASE WHEN quality = 'good' THEN '' ELSE 'quality bits ' || quality_bits END AS reason "
        "FROM clean.clean_telemetry WHERE ts = ?", [ts]).df()


def clean_snapshot_times(con, start: datetime, end: datetime, step_s: int = 30) -> list[datetime]:
    """Instants in [start, end) on the ``step_s`` grid that clean_telemetry holds rows for."""
    rows = con.execute(
        "SELECT DISTINCT ts FROM clean.clean_telemetry WHERE ts >= ? AND ts < ? "
        "AND epoch(ts)::BIGINT % ? = 0 ORDER BY ts", [start, end, step_s]).fetchall()
    return [r[0] for r in rows]
