"""Feature engineering for demand forecasting (pure pandas/numpy; no dagster).

Time handling: every frame here is indexed by a regular **UTC** grid; calendar features are computed
on **local** time for a given IANA time zone, so days with 23 or 25 local hours (daylight saving) get
the right hour of day, weekday and holiday flags.

* :func:`prepare_series` -- any (time, target, weather...) frame -> regular UTC grid (gaps -> NaN).
* :func:`calendar_features` -- local hour, weekday, month, day of year, holidays (``holidays`` package,
  configurable country/subdivision) and their neighbours, bridge days, the Christmas period.
* :func:`temperature_features` -- T, T^2, T^3, heating/cooling degree hours, lags, rolling and
  exponentially smoothed means, and daily max/min/mean over the local day and the previous day.
* :func:`balance_point` -- heating/cooling base temperatures learnt from the data (unit-agnostic).
* :func:`select_stations` -- learn which weather stations to use: rank stations by the validation fit
  of Tao Hong's vanilla regression inside the training span, then average the top-k (k chosen by the
  same validation).
* :func:`vanilla_design` -- the design matrix of Tao Hong's vanilla benchmark.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import sparse

HOUR = pd.Timedelta(hours=1)
DAY = pd.Timedelta(days=1)


# --------------------------------------------------------------------------------------------------
# Time handling
# --------------------------------------------------------------------------------------------------
def to_utc(index: pd.DatetimeIndex, tz: str = "UTC") -> pd.DatetimeIndex:
    """A ``DatetimeIndex`` in UTC. Times with an offset are converted; naive times are local time in
    ``tz`` (the repeated hour at the end of daylight saving is inferred from the order, and failing
    that taken as the first occurrence; times that do not exist are shifted forward)."""
    idx = pd.DatetimeIndex(index)
    if idx.tz is not None:
        return idx.tz_convert("UTC")
    try:
        local = idx.tz_localize(tz, ambiguous="infer", nonexistent="shift_forward")
    except Exception:  # noqa: BLE001 - inference fails on unordered or incomplete repeated hours
        local = idx.tz_localize(tz, ambiguous=np.ones(len(idx), dtype=bool), nonexistent="shift_forward")
    return local.tz_convert("UTC")


def _is_datetime(times) -> bool:
    return pd.api.types.is_datetime64_any_dtype(times)


def parse_times(values: pd.Series, tz: str = "UTC") -> pd.DatetimeIndex:
    """Strings or datetimes -> UTC. Mixed offsets are accepted (e.g. ``+11:00`` and ``+10:00``)."""
    if _is_datetime(values):
        return to_utc(pd.DatetimeIndex(values), tz)
    s = pd.Series(values).astype(str)
    has_offset = s.str.contains(r"(?:Z|[+-]\d\d:?\d\d)$", regex=True)
    if has_offset.all():
        return pd.DatetimeIndex(pd.to_datetime(s, utc=True, format="mixed"))
    if has_offset.any():
        raise ValueError("time column mixes values with and without a UTC offset")
    return to_utc(pd.DatetimeIndex(pd.to_datetime(s, format="mixed")), tz)


def infer_step(index: pd.DatetimeIndex) -> pd.Timedelta:
    """The native resolution: the most common spacing between consecutive times."""
    if len(index) < 2:
        raise ValueError("need at least two time stamps to infer the resolution")
    d = pd.Series(np.diff(index.asi8))
    d = d[d > 0]
    if d.empty:
        raise ValueError("all time stamps are equal; cannot infer the resolution")
    return pd.Timedelta(int(d.mode().iloc[0]), unit="ns")


def prepare_series(
    frame: pd.DataFrame,
    time_col: str,
    target_col: str,
    weather_cols: Sequence[str] = (),
    tz: str = "UTC",
    freq: str | pd.Timedelta | None = None,
) -> pd.DataFrame:
    """Tidy frame -> regular UTC grid with columns ``y`` and the weather columns.

    Duplicated times are averaged; missing time steps become NaN rows (gaps). ``freq`` defaults to
    the most common spacing. Raises ``KeyError`` naming any missing column.
    """
    missing = [c for c in [time_col, target_col, *weather_cols] if c not in frame.columns]
    if missing:
        raise KeyError(f"missing column(s): {', '.join(missing)}")
    times = parse_times(frame[time_col], tz)
    data = pd.DataFrame({"y": pd.to_numeric(frame[target_col], errors="coerce").to_numpy()}, index=times)
    for c in weather_cols:
        data[c] = pd.to_numeric(frame[c], errors="coerce").to_numpy()
    data = data[~data.index.isna()]
    data = data.groupby(level=0).mean().sort_index()
    step = pd.Timedelta(freq) if freq is not None else infer_step(data.index)
    start = data.index[0].floor(step) if step <= DAY else data.index[0]
    grid = pd.date_range(start, data.index[-1], freq=step, name="time")
    if not data.index.isin(grid).all():
        data = data.resample(step, origin=start).mean()
    return data.reindex(grid)


def local_index(index: pd.DatetimeIndex, tz: str) -> pd.DatetimeIndex:
    return index.tz_convert(tz)


def daily_issue_times(start: pd.Timestamp, end: pd.Timestamp, issue_time: str, tz: str) -> pd.DatetimeIndex:
    """UTC instants of the daily issue time (local ``HH:MM`` in ``tz``) within [start, end]."""
    hh, mm = (int(x) for x in issue_time.split(":"))
    lo = start.tz_convert(tz).normalize().tz_localize(None) - DAY
    hi = end.tz_convert(tz).normalize().tz_localize(None) + DAY
    days = pd.date_range(lo, hi, freq="D")
    naive = days + pd.Timedelta(hours=hh, minutes=mm)
    local = naive.tz_localize(tz, ambiguous=np.ones(len(naive), dtype=bool), nonexistent="shift_forward")
    utc = local.tz_convert("UTC")
    return utc[(utc >= start) & (utc <= end)]


# --------------------------------------------------------------------------------------------------
# Calendar
# --------------------------------------------------------------------------------------------------
@lru_cache(maxsize=32)
def _holiday_table(country: str, subdiv: str | None, y0: int, y1: int) -> frozenset[date]:
    import holidays

    cal = holidays.country_holidays(country, subdiv=subdiv, years=range(y0, y1 + 1))
    return frozenset(cal.keys())


def holiday_dates(country: str | None, subdiv: str | None, years: Sequence[int]) -> frozenset[date]:
    """Public holidays (dates) for ``country``/``subdiv`` from the ``holidays`` package."""
    if not country:
        return frozenset()
    return _holiday_table(country, subdiv or None, int(min(years)), int(max(years)))


def calendar_features(
    index: pd.DatetimeIndex, tz: str = "UTC", country: str | None = None, subdiv: str | None = None
) -> pd.DataFrame:
    """Calendar features on local time for a UTC index.

    Columns: ``hour`` (local, fractional), ``dow`` (0=Mon), ``month``, ``doy``, ``weekend``,
    ``holiday``, ``holiday_before`` (tomorrow is a holiday), ``holiday_after`` (yesterday was one),
    ``bridge`` (a working day between a holiday and a weekend), ``day_type`` (0 working day,
    1 Saturday, 2 Sunday or holiday), ``xmas`` (days from 25 Dec, clipped to +-10, else 11),
    ``day_hours`` (length of the local day, 23/24/25), ``trend`` (days since 2000-01-01 UTC).
    """
    loc = local_index(index, tz)
    days = loc.tz_localize(None).normalize()
    out = pd.DataFrame(index=index)
    out["hour"] = loc.hour + loc.minute / 60.0
    out["dow"] = loc.dayofweek
    out["month"] = loc.month
    out["doy"] = loc.dayofyear
    out["weekend"] = (loc.dayofweek >= 5).astype(np.int8)
    # Day-level features on the unique local days, then mapped back to the rows.
    udays, inverse = np.unique(days.to_numpy(), return_inverse=True)
    ud = pd.DatetimeIndex(udays)
    years = ud.year if len(ud) else pd.Index([2000])
    hol = holiday_dates(country, subdiv, list(range(int(years.min()) - 1, int(years.max()) + 2)))
    udow = ud.dayofweek.to_numpy()
    if hol:
        hol_days = pd.DatetimeIndex(sorted(hol))
        is_h = ud.isin(hol_days)
        before = (ud + DAY).isin(hol_days)
        after = (ud - DAY).isin(hol_days)
        bridge = (((udow == 0) & before) | ((udow == 4) & after)) & ~is_h
    else:
        is_h = before = after = bridge = np.zeros(len(ud), dtype=bool)
    day_type = np.where(udow == 5, 1, 0)
    day_type = np.where((udow == 6) | is_h, 2, day_type)
    xmas = pd.to_datetime(pd.DataFrame({"year": ud.year, "month": 12, "day": 25})) if len(ud) else ud
    dx = (ud - pd.DatetimeIndex(xmas)).days.to_numpy()
    dx = np.where(dx < -180, dx + 365, dx)
    xmas_feat = np.where(np.abs(dx) <= 10, dx, 11)
    if len(ud):
        start_of_day = ud.tz_localize(tz, ambiguous=True, nonexistent="shift_forward")
        next_day = (ud + DAY).tz_localize(tz, ambiguous=True, nonexistent="shift_forward")
        day_hours = ((next_day - start_of_day) / HOUR).to_numpy()
    else:
        day_hours = np.array([], dtype=float)
    for name, values, dtype in (
        ("holiday", is_h, np.int8),
        ("holiday_before", before, np.int8),
        ("holiday_after", after, np.int8),
        ("bridge", bridge, np.int8),
        ("day_type", day_type, np.int8),
        ("xmas", xmas_feat, np.int8),
        ("day_hours", day_hours, float),
    ):
        out[name] = np.asarray(values, dtype=dtype)[inverse] if len(index) else np.array([], dtype=dtype)
    out["trend"] = (index - pd.Timestamp("2000-01-01", tz="UTC")) / DAY
    return out


# --------------------------------------------------------------------------------------------------
# Weather
# --------------------------------------------------------------------------------------------------
def balance_point(temp: pd.Series, target: pd.Series, bins: int = 20) -> tuple[float, float]:
    """Heating and cooling base temperatures learnt from data, in the temperature's own unit.

    The mean target per temperature quantile bin is lowest around the balance point; the heating
    base is the lower edge and the cooling base the upper edge of the bins within 3 % of the minimum.
    Falls back to the temperature's median when the relation is flat or there is too little data.
    """
    ok = temp.notna() & target.notna()
    t, y = temp[ok], target[ok]
    if len(t) < 10 * bins or t.nunique() < 3:
        m = float(t.median()) if len(t) else 0.0
        return m, m
    q = pd.qcut(t, bins, duplicates="drop")
    means = y.groupby(q, observed=True).mean()
    if means.empty:
        m = float(t.median())
        return m, m
    lo = float(means.min())
    span = float(means.max() - lo)
    if span <= 0:
        m = float(t.median())
        return m, m
    near = means[means <= lo + 0.03 * max(span, abs(lo))]
    heat = float(near.index[0].left) if len(near) else float(t.median())
    cool = float(near.index[-1].right) if len(near) else float(t.median())
    return heat, cool


def _steps(td: pd.Timedelta, step: pd.Timedelta) -> int:
    return max(1, round(td / step))


def temperature_features(
    temp: pd.Series,
    step: pd.Timedelta,
    tz: str = "UTC",
    heat_base: float | None = None,
    cool_base: float | None = None,
    prefix: str = "t",
) -> pd.DataFrame:
    """Temperature features on a regular UTC grid (the index of ``temp``).

    ``t``, ``t2``, ``t3``; heating/cooling degree hours ``hdh``/``cdh`` against the bases (default:
    the median); lags at 1, 2, 3, 6, 12, 24, 48 h; trailing means over 3, 6, 12, 24, 48, 72 and 168 h;
    exponentially smoothed temperature (half-lives 6 h and 24 h); max/min/mean of the local day and of
    the previous local day; degree-hour means over the local day. Column names start with ``prefix``.
    Missing values stay missing (rolling statistics use what is available).
    """
    p = prefix
    t = temp.astype(float)
    if heat_base is None or cool_base is None:
        m = float(t.median()) if t.notna().any() else 0.0
        heat_base = m if heat_base is None else heat_base
        cool_base = m if cool_base is None else cool_base
    out = {}
    out[f"{p}"] = t
    out[f"{p}2"] = t**2
    out[f"{p}3"] = t**3
    hdh = (heat_base - t).clip(lower=0)
    cdh = (t - cool_base).clip(lower=0)
    out[f"{p}_hdh"] = hdh
    out[f"{p}_cdh"] = cdh
    for h in (1, 2, 3, 6, 12, 24, 48):
        out[f"{p}_lag{h}h"] = t.shift(_steps(h * HOUR, step))
    for h in (3, 6, 12, 24, 48, 72, 168):
        n = _steps(h * HOUR, step)
        out[f"{p}_mean{h}h"] = t.rolling(n, min_periods=max(1, n // 2)).mean()
    for hl in (6, 24):
        out[f"{p}_ewm{hl}h"] = t.ewm(halflife=_steps(hl * HOUR, step), ignore_na=True).mean()
    out[f"{p}_hdh_mean24h"] = hdh.rolling(_steps(24 * HOUR, step), min_periods=1).mean()
    out[f"{p}_cdh_mean24h"] = cdh.rolling(_steps(24 * HOUR, step), min_periods=1).mean()
    day = t.index.tz_convert(tz).tz_localize(None).normalize()
    g = t.groupby(day)
    daily = pd.DataFrame({"max": g.max(), "min": g.min(), "mean": g.mean()})
    cur = daily.reindex(day)
    prev = daily.reindex(day - DAY)
    out[f"{p}_daymax"] = cur["max"].to_numpy()
    out[f"{p}_daymin"] = cur["min"].to_numpy()
    out[f"{p}_daymean"] = cur["mean"].to_numpy()
    out[f"{p}_prevdaymax"] = prev["max"].to_numpy()
    out[f"{p}_prevdaymin"] = prev["min"].to_numpy()
    out[f"{p}_prevdaymean"] = prev["mean"].to_numpy()
    out[f"{p}_day_hdh"] = np.clip(heat_base - cur["mean"].to_numpy(), 0, None)
    out[f"{p}_day_cdh"] = np.clip(cur["mean"].to_numpy() - cool_base, 0, None)
    return pd.DataFrame(out, index=t.index)


# --------------------------------------------------------------------------------------------------
# Tao Hong's vanilla benchmark and station selection
# --------------------------------------------------------------------------------------------------
def vanilla_design(
    index: pd.DatetimeIndex, temp: np.ndarray, tz: str, t_center: float, t_scale: float, step: pd.Timedelta
) -> sparse.csr_matrix:
    """Design matrix of Tao Hong's vanilla model:
    ``trend + month + weekday x hour + hour x (T, T^2, T^3) + month x (T, T^2, T^3)``.

    "hour" is the local slot of the day at the native resolution (48 slots for half-hourly data).
    T is standardised with ``t_center``/``t_scale`` for conditioning (the fitted values are the same).
    Returned as a sparse matrix (most entries are one-hot zeros).
    """
    loc = index.tz_convert(tz)
    spd = max(1, round(DAY / step)) if step < DAY else 1
    slot = ((loc.hour * 60 + loc.minute) * spd // (24 * 60)).to_numpy()
    slot = np.clip(slot, 0, spd - 1)
    month = loc.month.to_numpy() - 1
    dow = loc.dayofweek.to_numpy()
    n = len(index)
    z = (np.asarray(temp, dtype=float) - t_center) / (t_scale or 1.0)
    trend = ((index - pd.Timestamp("2000-01-01", tz="UTC")) / DAY).to_numpy() / 3650.0
    # Column blocks: [1, trend] [month 2..12] [weekday x slot, minus the first] [slot x T^p, month x T^p]_p
    n_cols = 2 + 11 + (7 * spd - 1) + 3 * (spd + 12)
    r = np.arange(n)
    rows, cols, vals = [r, r], [np.zeros(n, dtype=int), np.ones(n, dtype=int)], [np.ones(n), trend]
    m_ok = month > 0
    rows.append(r[m_ok]), cols.append(2 + month[m_ok] - 1), vals.append(np.ones(int(m_ok.sum())))
    base = 13
    wh = dow * spd + slot
    w_ok = wh > 0
    rows.append(r[w_ok]), cols.append(base + wh[w_ok] - 1), vals.append(np.ones(int(w_ok.sum())))
    base += 7 * spd - 1
    for power in (1, 2, 3):
        zp = z**power
        rows.append(r), cols.append(base + slot), vals.append(zp)
        base += spd
        rows.append(r), cols.append(base + month), vals.append(zp)
        base += 12
    return sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n_cols)
    )


def ols_fit(x, y: np.ndarray, ridge: float = 1e-6) -> np.ndarray:
    """Least squares through the normal equations with a tiny ridge (for rank-deficient designs,
    e.g. months absent from a short training span). ``x`` may be sparse."""
    xtx = x.T @ x
    xtx = xtx.toarray() if sparse.issparse(xtx) else np.asarray(xtx)
    xtx[np.diag_indices_from(xtx)] += ridge * max(1.0, float(np.mean(np.diag(xtx))))
    return np.linalg.solve(xtx, np.asarray(x.T @ y).ravel())


def select_stations(
    data: pd.DataFrame,
    stations: Sequence[str],
    tz: str,
    step: pd.Timedelta,
    max_k: int | None = None,
    val_fraction: float = 0.25,
    max_val_days: int = 365,
) -> tuple[list[str], dict[str, float]]:
    """Choose the temperature stations to average, by time-series CV inside ``data`` (the training span).

    The vanilla regression is fitted on the earlier part of ``data`` for each station and scored
    (MAPE-like mean absolute error relative to the mean load) on the later part (the last
    ``val_fraction`` of the span, at most ``max_val_days``). Stations are ranked by that score and the
    average of the top-k stations is scored for every k; the best k wins. Returns the chosen
    stations (best first) and the validation score of every candidate (``"top3"`` etc. for averages).
    """
    stations = list(stations)
    if len(stations) <= 1:
        return stations, {}
    ok = data["y"].notna() & data[stations].notna().all(axis=1)
    d = data[ok]
    if len(d) < 200:
        return stations, {}
    n_val = min(int(len(d) * val_fraction), int(max_val_days * DAY / step))
    cut = len(d) - n_val
    fit, val = d.iloc[:cut], d.iloc[cut:]
    y_fit, y_val = fit["y"].to_numpy(), val["y"].to_numpy()
    denom = float(np.mean(np.abs(y_val))) or 1.0

    def score(t_fit: np.ndarray, t_val: np.ndarray) -> float:
        c, s = float(np.mean(t_fit)), float(np.std(t_fit)) or 1.0
        xf = vanilla_design(fit.index, t_fit, tz, c, s, step)
        xv = vanilla_design(val.index, t_val, tz, c, s, step)
        beta = ols_fit(xf, y_fit)
        return float(np.mean(np.abs(y_val - xv @ beta)) / denom)

    scores = {st: score(fit[st].to_numpy(), val[st].to_numpy()) for st in stations}
    ranked = sorted(stations, key=lambda s: scores[s])
    best_k, best = 1, scores[ranked[0]]
    for k in range(2, (max_k or len(ranked)) + 1):
        cols = ranked[:k]
        sc = score(fit[cols].mean(axis=1).to_numpy(), val[cols].mean(axis=1).to_numpy())
        scores[f"top{k}"] = sc
        if sc < best:
            best_k, best = k, sc
    return ranked[:best_k], scores
