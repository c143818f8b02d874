"""Forecast accuracy metrics (pure numpy/pandas).

Conventions: ``mape`` is in percent and skips rows whose actual is zero (``None`` when every actual
is zero or nothing is left); ``rmae`` is the MAE divided by the seasonal-naive MAE over the same
rows (``None`` when the naive MAE is zero); ``rmse`` is in the target's units; ``pinball`` is the
mean pinball (quantile) loss over the P10/P50/P90 columns, in the target's units;
``coverage_p10_p90`` is the fraction (0..1) of actuals inside [P10, P90]. Rows whose actual or
forecast is missing are left out of each metric.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

QUANTILE_COLUMNS = {0.1: "p10", 0.5: "p50", 0.9: "p90"}


def _arrays(*arrays) -> tuple[np.ndarray, ...]:
    out = tuple(np.asarray(a, dtype=float).ravel() for a in arrays)
    n = {len(a) for a in out}
    if len(n) > 1:
        raise ValueError(f"arrays of different lengths: {[len(a) for a in out]}")
    mask = np.ones(len(out[0]), dtype=bool)
    for a in out:
        mask &= np.isfinite(a)
    return tuple(a[mask] for a in out)


def _clean(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def mape(actual, forecast) -> float | None:
    """Mean absolute percentage error in percent, over rows with a non-zero actual."""
    a, f = _arrays(actual, forecast)
    nz = a != 0
    if not nz.any():
        return None
    return _clean(100.0 * np.mean(np.abs((a[nz] - f[nz]) / a[nz])))


def mae(actual, forecast) -> float | None:
    a, f = _arrays(actual, forecast)
    return _clean(np.mean(np.abs(a - f))) if len(a) else None


def rmse(actual, forecast) -> float | None:
    a, f = _arrays(actual, forecast)
    return _clean(np.sqrt(np.mean((a - f) ** 2))) if len(a) else None


def rmae(actual, forecast, naive) -> float | None:
    """MAE of ``forecast`` relative to the MAE of ``naive`` (rows where all three are known)."""
    a, f, n = _arrays(actual, forecast, naive)
    if not len(a):
        return None
    denom = np.mean(np.abs(a - n))
    if denom == 0:
        return None
    return _clean(np.mean(np.abs(a - f)) / denom)


def pinball(actual, quantiles: Mapping[float, Iterable[float]]) -> float | None:
    """Mean pinball loss over the given quantile levels (``{0.1: p10, 0.5: p50, 0.9: p90}``).

    For level q and error e = actual - forecast the loss is ``max(q e, (q - 1) e)``; the result is the
    mean over rows where the actual and every quantile are known, averaged over the levels.
    """
    levels = sorted(quantiles)
    if not levels:
        raise ValueError("pinball needs at least one quantile")
    cols = _arrays(actual, *(quantiles[q] for q in levels))
    a = cols[0]
    if not len(a):
        return None
    losses = []
    for q, f in zip(levels, cols[1:]):
        e = a - f
        losses.append(np.mean(np.maximum(q * e, (q - 1.0) * e)))
    return _clean(float(np.mean(losses)))


def coverage(actual, lower, upper) -> float | None:
    """Fraction of actuals within [lower, upper]."""
    a, lo, hi = _arrays(actual, lower, upper)
    if not len(a):
        return None
    return _clean(np.mean((a >= lo) & (a <= hi)))


def score(actual, p50, p10=None, p90=None, naive=None) -> dict[str, float | int | None]:
    """All metrics for one forecast: ``mape``, ``rmae`` (needs ``naive``), ``rmse``, ``mae``,
    ``pinball`` and ``coverage_p10_p90`` (need ``p10`` and ``p90``), and ``n`` (rows scored)."""
    a = np.asarray(actual, dtype=float)
    f = np.asarray(p50, dtype=float)
    out: dict[str, float | int | None] = {
        "mape": mape(a, f),
        "rmae": rmae(a, f, naive) if naive is not None else None,
        "rmse": rmse(a, f),
        "mae": mae(a, f),
        "pinball": None,
        "coverage_p10_p90": None,
        "n": int(np.sum(np.isfinite(a) & np.isfinite(f))),
    }
    if p10 is not None and p90 is not None:
        out["pinball"] = pinball(a, {0.1: p10, 0.5: f, 0.9: p90})
        out["coverage_p10_p90"] = coverage(a, p10, p90)
    return out


def score_frame(
    frame: pd.DataFrame, prefix: str = "", actual: str = "actual", naive: str | None = "naive_p50"
):
    """:func:`score` on a frame with columns ``{prefix}p10``, ``{prefix}p50``, ``{prefix}p90``."""
    p10 = frame.get(f"{prefix}p10")
    p90 = frame.get(f"{prefix}p90")
    return score(
        frame[actual],
        frame[f"{prefix}p50"],
        p10=p10,
        p90=p90,
        naive=frame[naive] if naive is not None and naive in frame else None,
    )


def horizon_buckets(
    lead: pd.Series | np.ndarray, edges_hours: Iterable[float] = (0, 6, 12, 18, 24)
) -> pd.Series:
    """Label lead times (``Timedelta`` or hours) with buckets such as ``"0-6h"``; beyond the last
    edge the label is ``">{last}h"``."""
    lead = pd.Series(lead)
    hours = (
        lead.dt.total_seconds() / 3600.0 if pd.api.types.is_timedelta64_dtype(lead) else lead.astype(float)
    )
    edges = list(edges_hours)
    labels = [f"{edges[i]:g}-{edges[i + 1]:g}h" for i in range(len(edges) - 1)]
    out = pd.cut(hours, bins=edges, labels=labels, right=False, include_lowest=True).astype(object)
    out[hours >= edges[-1]] = f">{edges[-1]:g}h"
    return out


def score_by(
    frame: pd.DataFrame, by: pd.Series | str, prefix: str = "", key: str = "group", **kw
) -> list[dict]:
    """:func:`score_frame` per group; a list of dicts ``{key: group, **metrics}`` in group order."""
    groups = frame.groupby(by if isinstance(by, str) else by.to_numpy(), sort=True)
    out = []
    for name, part in groups:
        out.append(
            {
                key: name if not hasattr(name, "isoformat") else name.isoformat(),
                **score_frame(part, prefix, **kw),
            }
        )
    return out
