"""Settlement: energy at the clearing price, imbalance at a simulated imbalance price, to the cent.

Sign convention: MW positive = the portfolio delivers to the market (sells, or buys less); a position is
what the market awarded, the actual what the meters measured. Money positive = paid to the portfolio.

**The imbalance rule (two-price, stated):** the deviation ``actual - position`` is settled at

* ``price_long = price - spread`` when the portfolio delivered more than its position (it is paid less
  than the market for the surplus),
* ``price_short = price + spread`` when it delivered less (it pays more than the market for the
  shortfall),

with ``spread = max(IMBALANCE_MIN_SPREAD, IMBALANCE_SHARE x |price|)``. A deviation is never worth more
than keeping to the position, which is what an imbalance price is for. Real balancing prices (reBAP in
Germany) depend on the whole control area; none is in the data here, so the rule stands in for it.

Every line is rounded to the cent once, half away from zero, and every total is a sum of those cents:
the totals reconcile with the lines (and with the ledger's records of them) exactly, as integers.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pandas as pd

IMBALANCE_MIN_SPREAD = 10.0  # EUR/MWh
IMBALANCE_SHARE = 0.2


def cents(eur: float) -> int:
    """EUR -> integer cents, half away from zero (a settlement's rounding, applied once per line)."""
    return int(Decimal(repr(float(eur))).scaleb(2).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def imbalance_prices(price: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(price_long, price_short) EUR/MWh for each step's clearing ``price``."""
    p = np.asarray(price, float)
    spread = np.maximum(IMBALANCE_MIN_SPREAD, IMBALANCE_SHARE * np.abs(p))
    return p - spread, p + spread


def settle(position_mw, actual_mw, price, dt_h: float, times=None) -> pd.DataFrame:
    """One row per step: position and actual MWh, the clearing and imbalance prices, and the energy,
    imbalance and total amounts in integer cents (``*_cents``)."""
    pos = np.asarray(position_mw, float) * dt_h
    act = np.asarray(actual_mw, float) * dt_h
    p = np.asarray(price, float)
    if not (len(pos) == len(act) == len(p)):
        raise ValueError("position, actual and price must have one value per step")
    if not (np.isfinite(pos).all() and np.isfinite(act).all() and np.isfinite(p).all()):
        raise ValueError("a settlement needs a finite position, actual and price at every step")
    lo, hi = imbalance_prices(p)
    dev = act - pos
    ip = np.where(dev >= 0, lo, hi)
    energy = [cents(e) for e in pos * p]
    imb = [cents(e) for e in dev * ip]
    out = pd.DataFrame({"step": np.arange(len(p)) if times is None else np.asarray(times),
                        "position_mwh": pos, "actual_mwh": act, "price": p, "imbalance_mwh": dev,
                        "imbalance_price": ip, "energy_cents": energy, "imbalance_cents": imb})
    out["total_cents"] = out.energy_cents + out.imbalance_cents
    return out


def reconcile(lines: pd.DataFrame, recorded_total_cents: int) -> int:
    """The recorded total minus the lines' sum, in cents (0: reconciled)."""
    return int(recorded_total_cents) - int(lines.total_cents.sum())


def settle_day(day: pd.DataFrame, dt_h: float = 1.0) -> tuple[pd.DataFrame, list[str]]:
    """The delivery day's lines (:func:`settle`) from :func:`store.read_day_for_settlement`'s frame, and
    the flags. An hour's actual is the metered fleet power; without a BMS read in the hour the plans'
    committed power stands in, and without either the position (no deviation): flagged by hour (an hour
    with neither and no position is an idle hour, not a flag)."""
    actual = day.metered_mw.copy()
    flags = []
    for h in day.index[actual.isna() & day.planned_mw.notna()]:
        flags.append(f"{h}: no BMS read, the plans' committed power stands in for the meter")
    actual = actual.fillna(day.planned_mw)
    for h in day.index[actual.isna() & (day.position_mw.fillna(0.0) != 0)]:
        flags.append(f"{h}: neither a BMS read nor a plan, settled at the position (no deviation)")
    actual = actual.fillna(day.position_mw)
    lines = settle(day.position_mw.to_numpy(float), actual.to_numpy(float), day.clearing_price.to_numpy(float), dt_h,
                   times=day.index)
    return lines, flags
