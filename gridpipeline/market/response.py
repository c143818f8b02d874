"""What the price-responsive customers are predicted to do with a published tariff, and how far the
measured response went: the elasticity model the tariff is chosen with, and its check.

Each price-responsive class (the load policy's ``demand_response.price_responsive``: a share of the
class's load and its elasticity) moves its load by ``share x elasticity x (tariff / mean - 1)`` of
itself, the mean taken over the published horizon and weighted by the load the customers expect in
each step (the world's customers judge it so): a tariff above its mean sheds, below it adds, and over
the horizon the energy stays the same (load shifting, not saving). Per zone and step, with ``shape_t``
the responsive load at step t relative to now (the demand forecast's; 1 throughout without one):

    response_mw[t, z] = sum_c share_c x elasticity_c x load_c,z x shape_t x (tariff[t, z] / mean_z - 1)
    mean_z = sum_t shape_t x tariff[t, z] / sum_t shape_t

:func:`elasticity_estimate` re-estimates a class's elasticity by least squares from what was measured:
the relative change of the zone's responsive load against the relative price signal.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def class_zone_load(loads: pd.DataFrame, load_mw: pd.Series, zone_of_load: pd.Series) -> pd.DataFrame:
    """MW per (class, zone) now: ``loads`` (load_id, class), ``load_mw`` by load id (the estimated state),
    ``zone_of_load`` by load id."""
    df = pd.DataFrame({"cls": loads.set_index("load_id")["class"]})
    df["mw"] = load_mw.reindex(df.index).fillna(0.0)
    df["zone"] = zone_of_load.reindex(df.index).astype(str)
    return df.groupby(["cls", "zone"]).mw.sum().unstack(fill_value=0.0)


def predicted_response(tariff: np.ndarray, zones, by_class_zone: pd.DataFrame, terms: dict,
                       shape: np.ndarray | None = None) -> np.ndarray:
    """(T, Z) MW the responsive customers are predicted to add (+) or shed (-) under ``tariff`` (T, Z)
    EUR/MWh; ``terms``: class -> {share, elasticity}; ``shape`` (T,): the responsive load per step
    relative to now (see the module docstring; None: constant). Sums to zero over the horizon."""
    tariff = np.asarray(tariff, float)
    s = np.ones(len(tariff)) if shape is None else np.clip(np.asarray(shape, float)[:len(tariff)], 0.0, None)
    if s.sum() <= 0:
        s = np.ones(len(tariff))
    mean = (s[:, None] * tariff).sum(axis=0) / s.sum()
    rel = np.divide(tariff, mean, out=np.ones_like(tariff), where=mean > 0) - 1.0
    return rel * s[:, None] * response_weight(by_class_zone, zones, terms)[None, :]


def class_of(programme: str, term: dict) -> str:
    """The customer class a price-responsive programme answers for: its ``of`` (EV charging and flexible
    heat are shares of the households' load), else its own name (a whole class's programme)."""
    return str(term.get("of", programme))


def response_weight(by_class_zone: pd.DataFrame, zones, terms: dict) -> np.ndarray:
    """(Z,) MW each zone's responsive customers move per unit of relative price ``tariff/mean - 1``:
    ``sum over classes of share x elasticity x class load`` (<= 0 for the usual negative elasticities),
    the weight :func:`market.tariff.choose_tariff` chooses the tariff with."""
    out = np.zeros(len(zones))
    for name, t in terms.items():
        cls = class_of(name, t)
        if cls not in by_class_zone.index:
            continue
        load = by_class_zone.loc[cls].reindex([str(z) for z in zones]).fillna(0.0).to_numpy(float)
        out += float(t["share"]) * float(t["elasticity"]) * load
    return out


def elasticity_estimate(rel_price: np.ndarray, rel_load_change: np.ndarray, share: float) -> tuple[float | None, int]:
    """(elasticity, points) from paired relative price signals ``tariff/mean - 1`` and measured relative
    load changes of a class's load (against its baseline): the least-squares slope through the origin,
    divided by the responsive share. None with fewer than 12 points or no price variation."""
    x = np.asarray(rel_price, float)
    y = np.asarray(rel_load_change, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 12 or float(x @ x) < 1e-9 or share <= 0:
        return None, len(x)
    return float((x @ y) / (x @ x)) / share, len(x)


def published_signal(signals: pd.DataFrame, published: set) -> pd.DataFrame:
    """Per 5-minute step and zone, the relative price signal in force, ``tariff / mean - 1``, from
    ``market.price_signals`` rows (decision_id, planned_at, step_ts, step, zone, tariff, and optionally
    load_shape) of the decisions in ``published`` (the ones sent to the customers): each step takes the
    newest decision's first step, the mean over that decision's horizon weighted by its ``load_shape``
    (the responsive load it expected, as the customers weigh it; equal weights where it is missing)."""
    if not len(signals):
        return pd.DataFrame(columns=["step_ts", "zone", "rel_price"])
    s = signals[signals.decision_id.isin(published)]
    if not len(s):
        return pd.DataFrame(columns=["step_ts", "zone", "rel_price"])
    w = pd.to_numeric(s["load_shape"], errors="coerce") if "load_shape" in s else pd.Series(1.0, index=s.index)
    w = w.where(np.isfinite(w) & (w >= 0), 1.0)
    s = s.assign(_w=w, _wt=w * s.tariff)
    g = s.groupby(["decision_id", "zone"])
    mean = g._wt.transform("sum") / g._w.transform("sum")
    s = s.assign(rel_price=s.tariff / mean.where(mean > 0) - 1.0)
    first = s[s.step == 0].sort_values("planned_at").groupby(["step_ts", "zone"]).tail(1)
    return first[["step_ts", "zone", "rel_price"]].reset_index(drop=True)


def response_points(readings: pd.DataFrame, loads: pd.DataFrame, signal: pd.DataFrame,
                    baseline_days: int = 7) -> pd.DataFrame:
    """Paired (relative price, relative load change) per class, zone and 5-minute step: the class's
    measured load in the zone (``readings``: load_id, ts, mw; ``loads``: load_id, class, zone) against
    its baseline, the mean of the same time of day over the ``baseline_days`` before (steps where every
    load of the group reported, so a missing reading never reads as a response)."""
    if not len(readings) or not len(signal):
        return pd.DataFrame(columns=["cls", "zone", "step_ts", "rel_price", "rel_change"])
    r = readings.merge(loads.rename(columns={"class": "cls"}), on="load_id")
    r["step_ts"] = pd.to_datetime(r.ts).dt.floor("5min")
    per = r.groupby(["cls", "zone", "step_ts", "load_id"]).mw.mean().reset_index()
    agg = per.groupby(["cls", "zone", "step_ts"]).agg(mw=("mw", "sum"), n=("load_id", "nunique")).reset_index()
    full = agg.groupby(["cls", "zone"]).n.transform("max")
    agg = agg[agg.n == full]
    agg["tod"] = agg.step_ts - agg.step_ts.dt.normalize()
    out = []
    for (cls, zone), g in agg.groupby(["cls", "zone"]):
        g = g.set_index("step_ts").sort_index()
        sig = signal[signal.zone.astype(str) == str(zone)].set_index("step_ts").rel_price
        for ts, rel in sig.items():
            if ts not in g.index:
                continue
            prior = g[(g.index < ts.normalize()) & (g.index >= ts.normalize() - pd.Timedelta(days=baseline_days))
                      & (g.tod == g.loc[ts, "tod"])]
            if len(prior) < 2:
                continue
            base = float(prior.mw.mean())
            if base > 0:
                out.append({"cls": cls, "zone": zone, "step_ts": ts, "rel_price": float(rel),
                            "rel_change": float(g.loc[ts, "mw"]) / base - 1.0})
    return pd.DataFrame(out, columns=["cls", "zone", "step_ts", "rel_price", "rel_change"])


#: a measured elasticity replaces the policy's once it rests on a day of 5-minute points
LEARN_MIN_POINTS = 288


def elasticity_table(points: pd.DataFrame, terms: dict) -> pd.DataFrame:
    """Per programme of ``terms``: share, the assumed and the measured elasticity (None: too few points or
    no price variation) and the number of points (:func:`response_points`, by class).

    A class's measured load answers every programme on it at once (the households' own, EV charging,
    flexible heat): the slope measured is ``sum of share x elasticity`` over them. Each programme's
    estimate is its assumed elasticity scaled by the measured slope over the assumed one, so a class
    answering half as strongly as assumed halves each of its programmes (one signal cannot tell them
    apart); a class with one programme gets ``slope / share``."""
    rows = []
    assumed = {}
    for name, t in terms.items():
        c = class_of(name, t)
        assumed[c] = assumed.get(c, 0.0) + float(t["share"]) * float(t["elasticity"])
    for name, t in terms.items():
        c = class_of(name, t)
        p = points[points.cls == c]
        slope, n = elasticity_estimate(p.rel_price, p.rel_change, 1.0)
        est = None
        if slope is not None and abs(assumed[c]) > 1e-12:
            est = float(t["elasticity"]) * slope / assumed[c]
        elif slope is not None and float(t["share"]) > 0:
            est = slope / float(t["share"])
        rows.append({"cls": name, "share": float(t["share"]), "elasticity_assumed": float(t["elasticity"]),
                     "elasticity_measured": est, "points": n})
    return pd.DataFrame(rows, columns=["cls", "share", "elasticity_assumed", "elasticity_measured", "points"])


def learned(table: pd.DataFrame, day) -> dict:
    """The measured elasticities worth using: class -> {share, elasticity, points, day}."""
    ok = table[table.elasticity_measured.notna() & (table.points >= LEARN_MIN_POINTS)]
    return {r.cls: {"share": r.share, "elasticity": float(r.elasticity_measured), "points": int(r.points),
                    "day": str(day)} for r in ok.itertuples()}
