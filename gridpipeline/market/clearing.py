"""Market clearing: a uniform-price merit order, and the price-taker's award at a known clearing price.

Curves are step curves, one row per step: ``price`` (EUR/MWh) and ``mw`` (> 0). An offer sells ``mw`` at
any clearing price at or above its price; a bid buys ``mw`` at any clearing price at or below its price.

:func:`merit_order` clears offers against bids: the clearing price is the lowest price at which what is
offered at or below it covers what is bid at or above it, and the traded volume is the smaller of the
two there. On the wholesale day-ahead market the portfolio is a price-taker: the market clears at the
real historical price whatever the portfolio bids, so :func:`award` takes that price and returns what
each of the portfolio's steps wins (an offer in the money sells, a bid in the money buys).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _curve(c: pd.DataFrame | None) -> tuple[np.ndarray, np.ndarray]:
    if c is None or len(c) == 0:
        return np.zeros(0), np.zeros(0)
    p = np.asarray(c["price"], float)
    q = np.asarray(c["mw"], float)
    if (q < 0).any() or not np.isfinite(p).all() or not np.isfinite(q).all():
        raise ValueError("a curve step with a negative or non-finite quantity or price")
    return p, q


def merit_order(offers: pd.DataFrame, bids: pd.DataFrame) -> tuple[float | None, float]:
    """(clearing price, traded MW) of a uniform-price auction; (None, 0) when nothing trades (the cheapest
    offer above the dearest bid). A price clears when what must be sold there (offers below it, and
    up to all offers at it) can meet what must be bought (bids above it, up to all bids at it): the
    marginal step, an offer or a bid, is the one partly accepted. Where a range of prices clears, the
    lowest is taken; the volume is the most that can trade at it."""
    po, qo = _curve(offers)
    pb, qb = _curve(bids)
    if not len(po) or not len(pb):
        return None, 0.0
    for p in np.unique(np.concatenate([po, pb])):  # ascending: the first price that clears
        s_lo, s_hi = qo[po < p].sum(), qo[po <= p].sum()
        d_lo, d_hi = qb[pb > p].sum(), qb[pb >= p].sum()
        if max(s_lo, d_lo) <= min(s_hi, d_hi) + 1e-12:
            traded = float(min(s_hi, d_hi))
            return (float(p), traded) if traded > 1e-12 else (None, 0.0)
    return None, 0.0


def award(offers: pd.DataFrame | None, bids: pd.DataFrame | None, price: float) -> tuple[float, float]:
    """(sold MW, bought MW) of a price-taker's offers and bids at a clearing ``price``."""
    po, qo = _curve(offers)
    pb, qb = _curve(bids)
    return float(qo[po <= price].sum()), float(qb[pb >= price].sum())


def award_block(side: str, price: float, clearing: np.ndarray) -> bool:
    """Whether a price-taker's block order (one price, the same MW in each of its hours, all or nothing)
    is accepted at the hours' ``clearing`` prices: a sell block when their mean is at least its price,
    a buy block when it is at most (the exchange's rule for a block with a minimum acceptance ratio of
    1, whose volume weights are equal here). An hour without a clearing price rejects the block."""
    c = np.asarray(clearing, float)
    if not len(c) or not np.isfinite(c).all():
        return False
    m = float(c.mean())
    return m >= price if side == "sell" else m <= price
