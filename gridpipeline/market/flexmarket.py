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


# ------------------------------------------------------------------ the operator's side
OFFER_COLUMNS = ("offer_id", "owner", "bus", "direction", "mw", "price_eur_mwh", "valid_from", "valid_to")
#: the direction of relief an offer gives: ``up`` (more injection or less load) relieves a line carrying
#: load into its area (import), ``down`` (less injection) one carrying generation out of it (export)
RELIEVES = {"import": "up", "export": "down"}


def read_offers(folder, hours) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(valid offers, rejected rows with ``reason``) posted for the UTC days of ``hours`` (naive UTC) in
    ``folder`` (``offers-YYYY-MM-DD.csv``). A file that cannot be read is one rejected row naming it; a
    row missing a field, with a direction other than up/down, a non-positive quantity, a price that is
    not a number in [-500, 10000] EUR/MWh or no valid time window is rejected with its reason. Nothing
    is dropped silently. :func:`offer_days` says which days had a file."""
    from pathlib import Path

    days = sorted({pd.Timestamp(h).normalize() for h in hours})
    good, bad = [], []
    for d in days:
        f = Path(folder) / f"offers-{d:%Y-%m-%d}.csv"
        if not f.exists():
            continue
        try:
            o = pd.read_csv(f)
        except (OSError, ValueError) as exc:
            bad.append(pd.DataFrame([{"offer_id": None, "reason": f"{f.name} not readable: {exc}"}]))
            continue
        missing = [c for c in OFFER_COLUMNS if c not in o]
        if missing:
            bad.append(pd.DataFrame([{"offer_id": None, "reason": f"{f.name}: no column {', '.join(missing)}"}]))
            continue
        reason = pd.Series("", index=o.index, dtype=object)
        mw = pd.to_numeric(o.mw, errors="coerce")
        price = pd.to_numeric(o.price_eur_mwh, errors="coerce")
        bus = pd.to_numeric(o.bus, errors="coerce")
        reason[o[list(OFFER_COLUMNS)].isna().any(axis=1)] = "a field is empty"
        reason[(reason == "") & ~o.direction.isin(["up", "down"])] = "direction neither up nor down"
        reason[(reason == "") & ~(mw > 0)] = "quantity not a positive number"
        reason[(reason == "") & ~((price >= -500) & (price <= 10_000))] = "price not a number in [-500, 10000] EUR/MWh"
        reason[(reason == "") & bus.isna()] = "bus not a number"
        vf = pd.to_datetime(o.valid_from, errors="coerce", utc=True).dt.tz_localize(None)
        vt = pd.to_datetime(o.valid_to, errors="coerce", utc=True).dt.tz_localize(None)
        reason[(reason == "") & (vf.isna() | vt.isna() | (vt <= vf))] = "validity not a time window"
        ok = reason == ""
        v = o[ok].assign(mw=mw[ok], price=price[ok], bus=bus[ok].astype(int), valid_from=vf[ok], valid_to=vt[ok])
        good.append(v)
        if (~ok).any():
            bad.append(o[~ok].assign(reason=reason[~ok]))
    offers = pd.concat(good, ignore_index=True) if good else pd.DataFrame(columns=[*OFFER_COLUMNS, "price"])
    if "divisible" not in offers:
        offers["divisible"] = True
    offers["divisible"] = offers.divisible.fillna(True).astype(bool)
    rejected = pd.concat(bad, ignore_index=True) if bad else pd.DataFrame(columns=["offer_id", "reason"])
    return offers, rejected


def offer_days(folder, hours) -> set:
    """The UTC days of ``hours`` whose offers file has been posted (a need in a day without one cannot be
    cleared yet: it waits for the owners' file rather than being recorded as unmet)."""
    from pathlib import Path

    return {pd.Timestamp(h).normalize() for h in hours
            if (Path(folder) / f"offers-{pd.Timestamp(h):%Y-%m-%d}.csv").exists()}


def congestion_needs(feeder, net_load: np.ndarray, net_q: np.ndarray | None, binding: list[dict], times) -> pd.DataFrame:
    """The relief to buy: per line whose rating the nodal prices found binding (its congestion dual) and
    per hour, the MW by which the plan's net load (T, N) would take it over its rating, and the direction
    (``import`` into the line's area, ``export`` out of it). Columns: element, bus (feeder index below
    the line), hour, direction, need_mw, dual_eur_mwh."""
    cols = ["element", "bus", "hour", "direction", "need_mw", "dual_eur_mwh"]
    rating = [b for b in binding if b.get("constraint") == "rating"]
    if not rating:
        return pd.DataFrame(columns=cols)
    names = list(feeder.line_names or [f"line to {b}" for b in feeder.bus_ids])
    index = {n: k for k, n in reversed(list(enumerate(names)))}
    L = feeder.subtree()
    p = np.atleast_2d(np.asarray(net_load, float))
    q = np.zeros_like(p) if net_q is None else np.atleast_2d(np.asarray(net_q, float))
    flow, qflow = (L @ p.T).T, (L @ q.T).T
    smax = np.asarray(feeder.s_max, float)
    t = pd.DatetimeIndex(times)
    rows = []
    for el in sorted({b["element"] for b in rating}):
        j = index.get(el)
        if j is None or not np.isfinite(smax[j]):
            continue
        dual = max(abs(float(b.get("dual_eur_mwh", 0.0))) for b in rating if b["element"] == el)
        plim = np.sqrt(np.clip(smax[j] ** 2 - qflow[:, j] ** 2, 0.0, None))
        over = np.abs(flow[:, j]) - plim
        for h, g in pd.DataFrame({"over": over, "flow": flow[:, j]}, index=t).groupby(t.floor("h")):
            k = int(np.argmax(g.over.to_numpy()))
            if g.over.iloc[k] > 1e-6:
                rows.append({"element": el, "bus": j, "hour": h, "direction": "import" if g.flow.iloc[k] > 0 else "export",
                             "need_mw": round(float(g.over.iloc[k]), 4), "dual_eur_mwh": round(dual, 4)})
    return pd.DataFrame(rows, columns=cols)


def clear_needs(needs: pd.DataFrame, offers: pd.DataFrame, feeder, bus_map: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(awards: one row per accepted offer and need, with ``element``, ``hour``, offer_id, owner, bus, mw,
    relief_mw, price, pay_eur; per need: the bought relief and the shortfall). Needs are cleared largest
    dual first, each hour's offers used once: an offer relieves a need when its bus lies below the line
    (``bus_map``: network bus -> feeder index), it gives the relief's direction and its validity covers
    the hour; pay-as-bid (:func:`clear_local`)."""
    L = feeder.subtree().tocsr()
    award_cols = ["element", "hour", "offer_id", "owner", "bus", "mw", "relief_mw", "price", "pay_eur"]
    awards, per_need = [], []
    left: dict[tuple, float] = {}
    fidx = bus_map.reindex(offers.bus.to_numpy()).to_numpy() if len(offers) else np.zeros(0)
    for n in needs.sort_values(["dual_eur_mwh", "need_mw"], ascending=False).itertuples():
        below = set(L[n.bus].indices)
        h = pd.Timestamp(n.hour)
        ok = ((offers.direction == RELIEVES[n.direction]).to_numpy()
              & (pd.to_datetime(offers.valid_from) <= h).to_numpy() & (pd.to_datetime(offers.valid_to) > h).to_numpy()
              & np.array([np.isfinite(f) and int(f) in below for f in fidx], dtype=bool)) if len(offers) \
            else np.zeros(0, bool)
        o = offers[ok].copy()
        if len(o):
            o["mw"] = [left.get((n.hour, i), m) for i, m in zip(o.offer_id, o.mw, strict=True)]
            o = o[o.mw > 1e-9]
        acc, short = clear_local(float(n.need_mw), o[["offer_id", "bus", "mw", "price", "divisible"]] if len(o) else None,
                                 pd.Series(1.0, index=o.bus.unique()) if len(o) else pd.Series(dtype=float))
        for a in acc.itertuples():
            left[(n.hour, a.offer_id)] = float(o.set_index("offer_id").mw[a.offer_id]) - a.mw
            awards.append({"element": n.element, "hour": n.hour, "offer_id": a.offer_id,
                           "owner": o.set_index("offer_id").owner[a.offer_id], "bus": a.bus, "mw": round(a.mw, 4),
                           "relief_mw": round(a.relief_mw, 4), "price": a.price, "pay_eur": round(a.pay_eur, 2)})
        per_need.append({"element": n.element, "hour": n.hour, "direction": n.direction, "need_mw": n.need_mw,
                         "bought_mw": round(float(acc.relief_mw.sum()) if len(acc) else 0.0, 4),
                         "shortfall_mw": round(short, 4), "offers_able": len(o), "dual_eur_mwh": n.dual_eur_mwh})
    return pd.DataFrame(awards, columns=award_cols), pd.DataFrame(per_need)
