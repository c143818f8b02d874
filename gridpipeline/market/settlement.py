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
    with neither and no position is an idle hour, not a flag). Demand response sold as blocks adds to
    the position (``dr_mw``) and its calls' delivery to the actual: measured, else the expected MW of a
    call not measured yet (flagged); a block not delivered is a shortfall like any other."""
    actual = day.metered_mw.copy()
    flags = []
    dr_pos = day.dr_mw.fillna(0.0) if "dr_mw" in day else pd.Series(0.0, index=day.index)
    dr_act = day.dr_delivered_mw.fillna(0.0) if "dr_delivered_mw" in day else pd.Series(0.0, index=day.index)
    if "dr_unmeasured_mw" in day:
        for h in day.index[day.dr_unmeasured_mw.fillna(0.0) > 0]:
            flags.append(f"{h}: a sold DR call not measured yet, its expected MW stands in")
        dr_act = dr_act + day.dr_unmeasured_mw.fillna(0.0)
    for h in day.index[actual.isna() & day.planned_mw.notna()]:
        flags.append(f"{h}: no BMS read, the plans' committed power stands in for the meter")
    actual = actual.fillna(day.planned_mw)
    for h in day.index[actual.isna() & (day.position_mw.fillna(0.0) != 0)]:
        flags.append(f"{h}: neither a BMS read nor a plan, settled at the position (no deviation)")
    actual = actual.fillna(day.position_mw)
    lines = settle((day.position_mw + dr_pos).to_numpy(float), (actual + dr_act).to_numpy(float),
                   day.clearing_price.to_numpy(float), dt_h, times=day.index)
    return lines, flags


RULE = ("energy at the clearing price; deviation (metered - position) at price - spread when long, price + spread "
        "when short; each line rounded to the cent once, half away from zero")


def settlement_record(day, lines: pd.DataFrame, flags: list[str], dr_payments_eur, award_id: str | None) -> dict:
    """The ``settlement`` ledger record's body for delivery ``day``: the lines' totals in cents, the DR
    payments (each rounded to the cent once), the award it settles and the flags."""
    dr_cents = [cents(v) for v in dr_payments_eur]
    total = int(lines.total_cents.sum())
    return {"summary": f"settlement of {day}: energy {lines.energy_cents.sum() / 100:.2f} EUR, imbalance "
                       f"{lines.imbalance_cents.sum() / 100:.2f} EUR, DR payments {sum(dr_cents) / 100:.2f} EUR",
            "delivery_day": str(day), "award": award_id, "rule": RULE,
            "decision": {"lines": len(lines), "energy_cents": int(lines.energy_cents.sum()),
                         "imbalance_cents": int(lines.imbalance_cents.sum()), "total_cents": total,
                         "dr_payment_cents": int(sum(dr_cents)), "dr_events": len(dr_cents)},
            "flags": flags}


def reconciliation(stored: pd.DataFrame, recorded_total_cents: int, lines: pd.DataFrame,
                   award_cents: int | None) -> tuple[bool, int, int | None]:
    """(reconciled, stored lines minus the record in cents, energy minus the award's revenue in cents or
    None without an award record): the blocking check's verdict."""
    diff = reconcile(stored, recorded_total_cents)
    award_diff = None if award_cents is None else int(lines.energy_cents.sum()) - int(award_cents)
    return diff == 0 and award_diff in (None, 0), diff, award_diff
