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

from collections.abc import Callable
from datetime import datetime
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


#: the exchange's harmonised day-ahead limits (EUR/MWh): a price outside them is flagged as implausible
PRICE_MIN, PRICE_MAX = -500.0, 4000.0
#: a price above this is flagged as a spike (kept: a real spike is what the batteries are for)
PRICE_SPIKE = 1000.0


def price_notes(s: pd.Series, name: str) -> list[str]:
    """What is doubtful in one file's prices, each note naming the file: spikes (kept), prices outside
    the exchange's limits (kept, flagged), every price below 1 EUR/MWh in magnitude (EUR/kWh sent as
    EUR/MWh?), hours missing between its first and last hour."""
    notes = []
    good = s.dropna()
    if good.empty:
        return [f"{name}: no price in the file"]
    hi = good[good > PRICE_SPIKE]
    if len(hi):
        notes.append(f"{name}: {len(hi)} hour(s) above {PRICE_SPIKE:g} EUR/MWh (max {hi.max():g} at "
                     f"{hi.idxmax():%Y-%m-%d %H:%M}Z): a spike, kept")
    out = good[(good < PRICE_MIN) | (good > PRICE_MAX)]
    if len(out):
        notes.append(f"{name}: {len(out)} price(s) outside the exchange's limits [{PRICE_MIN:g}, {PRICE_MAX:g}] "
                     "EUR/MWh: kept, check the unit")
    if len(good) >= 12 and good.abs().max() < 1.0:
        notes.append(f"{name}: every price below 1 EUR/MWh in magnitude: EUR/kWh sent as EUR/MWh? not converted "
                     "(the file does not say), check the source")
    full = pd.date_range(s.index.min(), s.index.max(), freq="h")
    missing = len(full.difference(s.index)) + int(s.isna().sum())
    if missing:
        notes.append(f"{name}: {missing} hour(s) without a price")
    return notes


def read_price_file(path: Path) -> tuple[pd.Series, list[str]]:
    """One day file of the price source, by its suffix: ``.csv`` SMARD, ``.xml`` an ENTSO-E publication
    document. Returns hourly EUR/MWh on UTC and the notes on it (``price_notes``, and the reader's own:
    a unit converted, positions without a price, duplicates). Raises ``ValueError`` (or
    ``entsoe.EntsoeError``, a ``ValueError``) for a file that cannot be prices."""
    path = Path(path)
    if path.suffix.lower() == ".xml":
        from gridpipeline.sources.entsoe import read_entsoe

        doc = read_entsoe(path.read_bytes())
        s, notes = doc.prices, [f"{path.name}: {f}" for f in doc.flags]
    else:
        s = read_smard(path)
        notes = []
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            head = fh.readline()  # the header names the unit
        if "kwh" in head.lower():
            s = s * 1000.0
            notes.append(f"{path.name}: prices per kWh converted to EUR/MWh (x1000)")
        dup = int(s.index.duplicated().sum())
        if dup:
            notes.append(f"{path.name}: {dup} hour(s) listed twice: the later row kept")
            s = s[~s.index.duplicated(keep="last")]
    return s, notes + price_notes(s, path.name)


class SmardFolder:
    """The drop folder of day files, as of a time: SMARD CSV (``*.csv``) and ENTSO-E publication
    documents (``*.xml``), side by side. A file is parsed once, and again only when its size or
    modification time changes (the live plan asks every 5 minutes)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        # a parsed day file, or why it could not be, by name; kept while its size and mtime stay
        self._parsed: dict[str, tuple[tuple[int, int], tuple[pd.Series, list[str]] | str]] = {}

    def _read(self, p: Path, st) -> tuple[pd.Series, list[str]] | str:
        key = (st.st_mtime_ns, st.st_size)
        hit = self._parsed.get(p.name)
        if hit is not None and hit[0] == key:
            return hit[1]
        try:
            out: tuple[pd.Series, list[str]] | str = read_price_file(p)
        except (ValueError, OSError, pd.errors.ParserError) as exc:
            out = f"{p.name}: unreadable ({type(exc).__name__}: {str(exc)[:200]})"
        self._parsed[p.name] = (key, out)
        return out

    def known(self, as_of: datetime | pd.Timestamp, since: pd.Timestamp | None = None) -> tuple[pd.Series, list[str]]:
        """(hourly prices published by ``as_of``, notes: unreadable files with reasons, and flagged
        values of the files read). Where two files price the same hour, the later file's (by name)
        wins."""
        cutoff = pd.Timestamp(as_of)
        cutoff = cutoff.tz_localize("UTC") if cutoff.tzinfo is None else cutoff.tz_convert("UTC")
        parts, bad = [], []
        if self.folder.is_dir():
            files = sorted([*self.folder.glob("*.csv"), *self.folder.glob("*.xml")], key=lambda q: q.name)
            for p in files:
                if p.name.startswith(".") or p.is_symlink():
                    continue
                st = p.stat()
                if pd.Timestamp(st.st_mtime, unit="s", tz="UTC") > cutoff:
                    continue
                got = self._read(p, st)
                if isinstance(got, str):
                    bad.append(got)
                    continue
                s, notes = got
                bad.extend(notes)
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
