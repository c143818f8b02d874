"""Energy prices from a price source: SMARD-format day-ahead files in a drop folder, read as of a time.

What a utility has: the exchange publishes the prices of delivery day D at 12:00 Europe/Berlin on
D-1. A file's mtime is its arrival, so ``as_of`` sees exactly the days that had arrived by then; a
backfill of last week plans with last week's knowledge.

:func:`price_curve` turns what is known into the series a plan needs, each value labelled:

* ``known``: published;
* ``filled``: missing or NaN inside a published day, taken from the same hour of the last day that
  had it (flagged, never silently);
* ``forecast``: after the last published hour, from the forecaster the caller passes (the dispatch's
  is the LEAR model of ``forecast/prices.py``), else the median of the same hour of day over the last
  seven known days (weekday/weekend kept apart when both occur in them).
"""

from __future__ import annotations

from datetime import datetime
from typing import Callable
from pathlib import Path

import numpy as np
import pandas as pd

TZ = "Europe/Berlin"


class PricesUnavailable(RuntimeError):
    """No price at all is known as of the time asked: nothing to fill or forecast from."""


def read_smard(path: Path) -> pd.Series:
    """One SMARD CSV (``;``, local times with daylight saving, ``-`` missing) -> hourly €/MWh on UTC;
    the first price column is taken. Malformed rows are dropped (and counted by the caller)."""
    df = pd.read_csv(path, sep=";", na_values="-", encoding="utf-8-sig", dtype=str)
    if df.shape[1] < 3:
        raise ValueError(f"{path.name}: not a SMARD price file (expected Date;Time of day;<zone>[€/MWh])")
    local = pd.to_datetime(df.iloc[:, 0] + " " + df.iloc[:, 1], format="%b %d, %Y %I:%M %p", errors="coerce")
    vals = pd.to_numeric(df.iloc[:, 2].str.replace(",", ""), errors="coerce")
    ok = local.notna()
    idx = pd.DatetimeIndex(local[ok]).tz_localize(TZ, ambiguous="infer", nonexistent="shift_forward")
    return pd.Series(vals[ok].to_numpy(dtype=float), index=idx.tz_convert("UTC"), name="price")


class SmardFolder:
    """The drop folder of day files (``*.csv``), as of a time."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def known(self, as_of: datetime | pd.Timestamp, since: pd.Timestamp | None = None) -> tuple[pd.Series, list[str]]:
        """(hourly prices published by ``as_of``, unreadable files with reasons)."""
        cutoff = pd.Timestamp(as_of)
        cutoff = cutoff.tz_localize("UTC") if cutoff.tzinfo is None else cutoff.tz_convert("UTC")
        parts, bad = [], []
        if self.folder.is_dir():
            for p in sorted(self.folder.glob("*.csv")):
                if p.name.startswith(".") or p.is_symlink():
                    continue
                if pd.Timestamp(p.stat().st_mtime, unit="s", tz="UTC") > cutoff:
                    continue
                try:
                    s = read_smard(p)
                except (ValueError, OSError, pd.errors.ParserError) as exc:
                    bad.append(f"{p.name}: {type(exc).__name__}")
                    continue
                if since is not None:
                    s = s[s.index >= since - pd.Timedelta(days=8)]
                parts.append(s)
        if not parts:
            return pd.Series(dtype=float, name="price"), bad
        s = pd.concat(parts)
        return s[~s.index.duplicated(keep="last")].sort_index(), bad


def price_curve(known: pd.Series, start: pd.Timestamp, end: pd.Timestamp, step: pd.Timedelta,
                forecaster: Callable[[pd.Series, pd.DatetimeIndex], pd.Series] | None = None) -> pd.DataFrame:
    """Prices on ``[start, end)`` at ``step``: columns ``price`` (€/MWh) and ``source`` (known, filled,
    forecast). Raises :class:`PricesUnavailable` when nothing at all is known.

    ``forecaster(known, hours)`` forecasts the hours after the last published one (the dispatch passes
    ``forecast.prices.PriceForecaster``); where it returns NaN, or without one, the same-hour median of
    the last week stands in."""
    good = known.dropna()
    if good.empty:
        raise PricesUnavailable("no price has been published yet: nothing to plan with")
    hours = pd.date_range(pd.Timestamp(start).floor("h"), pd.Timestamp(end), freq="h", inclusive="left")
    last_pub = known.index.max()
    price = known.reindex(hours)
    source = pd.Series(np.where(price.notna(), "known", ""), index=hours, dtype=object)
    local = hours.tz_convert(TZ)
    hod = np.asarray(local.hour)
    # filled: a gap inside what was published, from the same hour of the last day that had it
    by_hour = good.groupby(good.index.tz_convert(TZ).hour)
    last_same_hour = {h: g for h, g in by_hour}
    for k in np.nonzero(price.isna().to_numpy() & (hours <= last_pub))[0]:
        g = last_same_hour.get(hod[k])
        prior = g[g.index < hours[k]] if g is not None else None
        if prior is not None and len(prior):
            price.iloc[k], source.iloc[k] = prior.iloc[-1], "filled"
    # forecast: the same hour of day over the last seven known days (weekday or weekend like the target)
    todo = price.isna().to_numpy()
    if forecaster is not None and todo.any():
        model = pd.Series(forecaster(good, hours[todo]), index=hours[todo]).to_numpy(float)
        ok = np.isfinite(model)
        k = np.nonzero(todo)[0][ok]
        price.iloc[k] = model[ok]
        source.iloc[k] = "forecast"
    recent = good[good.index > good.index.max() - pd.Timedelta(days=7)]
    rl = recent.index.tz_convert(TZ)
    weekend = rl.dayofweek >= 5
    for k in np.nonzero(price.isna().to_numpy())[0]:
        same = (rl.hour == hod[k])
        kind = same & (weekend == (local[k].dayofweek >= 5))
        pick = recent[kind] if kind.any() else recent[same] if same.any() else recent
        price.iloc[k], source.iloc[k] = float(np.median(pick)), "forecast"
    out = pd.DataFrame({"price": price.to_numpy(dtype=float), "source": source.to_numpy()}, index=hours)
    steps = pd.date_range(pd.Timestamp(start), pd.Timestamp(end), freq=step, inclusive="left")
    return out.reindex(steps, method="ffill")


__all__ = ["PricesUnavailable", "SmardFolder", "price_curve", "read_smard"]
