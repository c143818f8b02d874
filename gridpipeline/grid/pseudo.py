"""Pseudo-measurements for unobservable areas, from what the pipeline knows: the latest demand and
renewable forecasts, or before any forecast exists, the network model's nominal values.

The estimator weighs them with a large sigma (half the element's rating, see
:func:`gridpipeline.grid.estimation.pseudo_table`), so they only decide what no sensor sees.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PV_TYPES = ("PV", "lv_RES")  # SimBench: LV renewables are rooftop PV
WIND_TYPES = ("Wind",)


def _scaled(table: pd.DataFrame, col: str) -> np.ndarray:
    scaling = table["scaling"].astype(float).fillna(1.0).to_numpy() if "scaling" in table else 1.0
    return table[col].astype(float).fillna(0.0).to_numpy() * scaling


def forecast_pseudo_injections(net, load_zones: np.ndarray, zone_p50: pd.Series | None,
                               gen_p50: dict[str, float] | None = None) -> pd.DataFrame | None:
    """Loads and generators at the forecast instant: each zone's forecast P50 shared over its loads by
    their nominal P (Q at each load's nominal power factor); PV and wind forecasts shared over their
    generators by rating. Elements without a forecast are left out, so they keep their nominal values.

    ``load_zones``: zone of every load in ``net.load`` row order; ``zone_p50``: MW by zone name;
    ``gen_p50``: MW by kind (``pv``, ``wind``). Returns None when nothing is forecast."""
    parts = []
    if zone_p50 is not None and len(zone_p50):
        ld = net.load
        p_nom, q_nom = _scaled(ld, "p_mw"), _scaled(ld, "q_mvar")
        zones = pd.Series(load_zones, index=ld.index)
        zone_nom = pd.Series(p_nom, index=ld.index).groupby(zones).sum()
        fc = zone_p50.reindex(zones.to_numpy()).to_numpy(dtype=float)
        share = p_nom / zone_nom.reindex(zones.to_numpy()).replace(0.0, np.nan).to_numpy()
        p = fc * share
        ok = np.isfinite(p)
        with np.errstate(invalid="ignore", divide="ignore"):
            q = np.where(p_nom != 0, p * q_nom / p_nom, 0.0)
        parts.append(pd.DataFrame({"element_type": "load", "element_id": ld.index.to_numpy()[ok],
                                   "p_mw": p[ok], "q_mvar": q[ok]}))
    for kind, types in (("pv", PV_TYPES), ("wind", WIND_TYPES)):
        mw = (gen_p50 or {}).get(kind)
        if mw is None or not np.isfinite(mw):
            continue
        sg = net.sgen
        sel = sg.type.astype(str).map(lambda t: t.startswith(types)).to_numpy() & sg.in_service.astype(bool).to_numpy()
        rating = np.where(sg.sn_mva.astype(float) > 0, sg.sn_mva.astype(float), _scaled(sg, "p_mw")) \
            if "sn_mva" in sg else _scaled(sg, "p_mw")
        total = rating[sel].sum()
        if total <= 0:
            continue
        parts.append(pd.DataFrame({"element_type": "sgen", "element_id": sg.index.to_numpy()[sel],
                                   "p_mw": mw * rating[sel] / total, "q_mvar": 0.0}))
    if not parts:
        return None
    return pd.concat(parts, ignore_index=True)


def latest_forecast_at(con, ts) -> tuple[pd.Series | None, dict[str, float] | None]:
    """The P50 of the newest demand forecast (per zone and ``system``) and renewable forecast (per kind)
    issued at or before ``ts`` (within a day), for the 5-minute step that holds ``ts``.
    (None, None) where no forecast exists yet (a fresh store): the caller uses nominal values."""
    import duckdb

    t = pd.Timestamp(ts)
    t = (t.tz_convert("UTC").tz_localize(None) if t.tzinfo else t).floor("5min")
    since = t - pd.Timedelta(days=1)
    out: list = []
    for table, key in (("forecast.demand", "series"), ("forecast.generation", "kind")):
        try:
            df = con.execute(
                f"""SELECT {key} AS k, p50 FROM {table}
                    WHERE issue_time = (SELECT max(issue_time) FROM {table} WHERE issue_time <= ? AND issue_time > ?)
                      AND valid_time = ?""", [ts, since, t]).df()
        except duckdb.CatalogException:  # the forecasts have not run on this store yet
            df = pd.DataFrame(columns=["k", "p50"])
        out.append(df.set_index("k").p50.astype(float) if len(df) else None)
    zone, gen = out
    return zone, (gen.to_dict() if gen is not None else None)
