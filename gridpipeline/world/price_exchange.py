"""The world's power exchange: day-ahead prices published the way EPEX/SMARD publish them.

The prices for delivery day D (Europe/Berlin) become known at 12:00 Europe/Berlin on D-1, when the
auction clears. The exchange writes one SMARD-format CSV per delivery day into its drop folder
(``day_ahead_<YYYYMMDD>.csv``: ``Date;Time of day;Germany/Luxembourg[€/MWh]``, local times with
daylight saving, ``-`` for a missing value), with the file's mtime at its publication time, so a
pipeline reading as of a time sees exactly what had been published then.

The prices are the real 2018 German day-ahead series (``data/prices/de_day_ahead_2018.csv``, SMARD,
CC BY 4.0) moved onto the simulated dates by whole weeks, so weekdays and weekends keep their shape:
an hour of 2026 takes the 2018 hour 52 x k weeks earlier that falls in 2018.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from gridpipeline.settings import PROJECT_ROOT

REFERENCE = PROJECT_ROOT / "data" / "prices" / "de_day_ahead_2018.csv"
TZ = "Europe/Berlin"
COLUMN = "Germany/Luxembourg[€/MWh]"
PUBLISH_HOUR = 12  # local time on the day before delivery
WEEK = pd.Timedelta(days=7)
REF_START = pd.Timestamp("2018-01-01", tz=TZ).tz_convert("UTC")


def load_reference(path: Path = REFERENCE) -> pd.Series:
    """The reference year: hourly €/MWh on a UTC index."""
    df = pd.read_csv(path, parse_dates=["utc_start"])
    idx = pd.DatetimeIndex(df.utc_start)
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    return pd.Series(df.price_eur_mwh.to_numpy(dtype=float), index=idx, name="price")


def mapped_prices(start: pd.Timestamp, end: pd.Timestamp, ref: pd.Series) -> pd.Series:
    """Hourly prices for ``[start, end)`` (UTC), each hour the reference hour a whole number of weeks
    away that lies in the reference year."""
    hours = pd.date_range(pd.Timestamp(start).floor("h"), pd.Timestamp(end), freq="h", inclusive="left")
    span = (ref.index[-1] - REF_START) // WEEK * WEEK  # whole weeks inside the reference year
    back = ((hours - REF_START) // WEEK) * WEEK
    src = hours - back
    over = src > REF_START + span
    src = src.where(~over, src - span)  # wraps inside the year, weekday kept
    vals = ref.reindex(src).to_numpy()
    return pd.Series(vals, index=hours, name="price")


def publication_time(day: pd.Timestamp) -> pd.Timestamp:
    """When the prices of local delivery ``day`` are published (UTC)."""
    d = pd.Timestamp(day.date(), tz=TZ) - pd.Timedelta(days=1)
    return (d + pd.Timedelta(hours=PUBLISH_HOUR)).tz_convert("UTC")


def smard_text(prices: pd.Series) -> str:
    """SMARD CSV of hourly ``prices`` (UTC index): local times with daylight saving, '-' when missing."""
    local = prices.index.tz_convert(TZ)
    lines = [f"Date;Time of day;{COLUMN}"]
    for t, v in zip(local, prices.to_numpy()):
        lines.append(f"{t.strftime('%b')} {t.day}, {t.year};{t.strftime('%I:%M %p').lstrip('0')};"
                     f"{'-' if not np.isfinite(v) else round(float(v), 2)}")
    return "\n".join(lines) + "\n"


class PriceExchange:
    """Writes the day files published up to a simulated ``now`` into ``out_dir``."""

    def __init__(self, out_dir: Path, ref: pd.Series | None = None):
        self.out = Path(out_dir)
        self.ref = ref if ref is not None else load_reference()

    def path(self, day: pd.Timestamp) -> Path:
        return self.out / f"day_ahead_{day:%Y%m%d}.csv"

    def publish(self, since: datetime, now: datetime) -> list[Path]:
        """Every delivery day from ``since``'s (local) day whose prices are published by ``now`` (naive
        UTC); a file already there is left alone. Returns the files written."""
        now_ts = pd.Timestamp(now, tz="UTC")
        day = pd.Timestamp(pd.Timestamp(since, tz="UTC").tz_convert(TZ).date())
        written = []
        self.out.mkdir(parents=True, exist_ok=True)
        while publication_time(day) <= now_ts:
            p = self.path(day)
            if not p.exists():
                start = pd.Timestamp(day, tz=TZ).tz_convert("UTC")
                end = pd.Timestamp(day + pd.Timedelta(days=1), tz=TZ).tz_convert("UTC")  # 23 or 25 h on DST days
                tmp = p.with_name(f".{p.name}.tmp")
                tmp.write_text(smard_text(mapped_prices(start, end, self.ref)), encoding="utf-8")
                ts = publication_time(day).timestamp()
                os.utime(tmp, (ts, ts))
                os.replace(tmp, p)
                written.append(p)
            day = day + pd.Timedelta(days=1)
        return written


def build_reference(src: Path, out: Path = REFERENCE) -> Path:
    """``data/prices/de_day_ahead_2018.csv`` from SMARD's 2018 download (Germany/Luxembourg, filled from
    Germany/Austria/Luxembourg before the October 2018 zone split), in UTC."""
    df = pd.read_csv(src, sep=";", na_values="-", encoding="utf-8-sig")
    local = pd.to_datetime(df["Date"] + " " + df["Time of day"], format="%b %d, %Y %I:%M %p")
    utc = pd.DatetimeIndex(local).tz_localize(TZ, ambiguous="infer").tz_convert("UTC")
    de = df[COLUMN].fillna(df["Germany/Austria/Luxembourg[€/MWh]"])
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"utc_start": utc.strftime("%Y-%m-%dT%H:%MZ"), "price_eur_mwh": de.round(2)}).to_csv(out, index=False)
    return out


__all__ = ["PriceExchange", "build_reference", "load_reference", "mapped_prices", "publication_time", "smard_text"]
