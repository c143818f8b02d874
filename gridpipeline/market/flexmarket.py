"""The local flexibility market: the operator buys congestion relief from flexible assets, pay-as-bid.

The way GOPACS or NODES run it: the operator posts a need (``need_mw`` of relief on an element for a
period), DER owners offer (``mw`` at ``price`` EUR/MWh, at a bus), and each offer relieves the element
by ``mw x sensitivity`` (on a radial feeder: 1 behind the element, 0 elsewhere). Offers are taken in
order of their price per MW of relief, the last one in part when it may be split (an indivisible one
is taken whole, and may buy more than the need), until the need is met; each accepted offer is paid its
own price (pay-as-bid). What cannot be bought is the shortfall, and says so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def clear_local(need_mw: float, offers: pd.DataFrame, sensitivity: pd.Series, hours: float = 1.0) -> tuple[pd.DataFrame, float]:
    """(accepted offers: offer_id, bus, mw, relief_mw, price, pay_eur; shortfall MW of relief).
    ``offers``: offer_id, bus, mw (> 0), price (EUR/MWh), and optionally ``divisible`` (default True);
    ``sensitivity``: relief per MW by bus (missing: 0, the offer does not help)."""
    cols = ["offer_id", "bus", "mw", "relief_mw", "price", "pay_eur"]
    if need_mw <= 1e-9 or offers is None or not len(offers):
        return pd.DataFrame(columns=cols), max(float(need_mw), 0.0)
    o = offers.copy()
    if (o.mw <= 0).any() or not np.isfinite(o.price).all():
        raise ValueError("an offer with no quantity or no price")
    o["sens"] = sensitivity.reindex(o.bus).fillna(0.0).to_numpy()
    o = o[o.sens > 1e-9]
    if "divisible" not in o:
        o["divisible"] = True
    o["per_relief"] = o.price / o.sens
    o = o.sort_values(["per_relief", "offer_id"], kind="stable")
    left = float(need_mw)
    rows = []
    for r in o.itertuples():
        if left <= 1e-9:
            break
        full = r.mw * r.sens
        if full <= left + 1e-9 or not r.divisible:
            take = r.mw
        else:
            take = left / r.sens
        relief = take * r.sens
        left -= relief
        rows.append({"offer_id": r.offer_id, "bus": r.bus, "mw": take, "relief_mw": relief, "price": r.price,
                     "pay_eur": take * r.price * hours})
    return pd.DataFrame(rows, columns=cols), max(left, 0.0)
