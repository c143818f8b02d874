"""Asset metadata for nodal prices and price signals: the key figures first, then the charts."""

from __future__ import annotations

import numpy as np
import pandas as pd
from dagster import MetadataValue

from gridpipeline.base.plots import md_table, png_markdown


def _chart(times, sig) -> str:
    import matplotlib.pyplot as plt

    x = pd.DatetimeIndex(times)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 2.8))
    d = sig.dlmp
    a1.fill_between(x, d.price.min(axis=1), d.price.max(axis=1), alpha=0.3, step="post", label="bus range")
    a1.step(x, d.energy[:, 0], where="post", color="black", label="energy price")
    a1.set_ylabel("EUR/MWh")
    a1.set_title("Nodal prices over the horizon")
    a1.legend(fontsize=7)
    for k, z in enumerate(sig.zones):
        a2.step(x, sig.tariff[:, k], where="post", label=str(z))
    a2.set_title("Published tariff per zone")
    if len(sig.zones) <= 8:
        a2.legend(fontsize=6)
    fig.autofmt_xdate()
    return png_markdown(fig, "nodal prices and tariff")


def signal_metadata(decision_id: str, summary: dict, times, sig) -> dict:
    first = pd.DataFrame({"zone": sig.zones.astype(str), "price_now": sig.zone_price[0], "tariff_now": sig.tariff[0],
                          "tariff_mean_24h": sig.tariff.mean(axis=0), "tariff_max_24h": sig.tariff.max(axis=0)})
    return {"decision": decision_id, "summary": summary.get("text", ""),
            "price_min_eur_mwh": summary["price_range_eur_mwh"][0], "price_max_eur_mwh": summary["price_range_eur_mwh"][1],
            "largest_spread_eur_mwh": summary["largest_spread_eur_mwh"], "binding_limits": summary["binding_count"],
            "tariff_bounds_bit": summary["tariff_bounds_bit"], "unserved_mw_max": summary["unserved_mw_max"],
            "zones": MetadataValue.md(md_table(first, limit=30)),
            "binding": MetadataValue.json(summary["binding"][:10]),
            "chart": MetadataValue.md(_chart(times, sig)),
            "loss_factor_range": [round(float(np.min(sig.loss_factor)), 5), round(float(np.max(sig.loss_factor)), 5)]}


def cost_chart(actual: pd.DataFrame, expected: pd.DataFrame) -> str:
    """Stacked cost per step by component, with the plan's expected total over it."""
    import matplotlib.pyplot as plt

    from gridpipeline.market.costs import COMPONENTS

    x = pd.DatetimeIndex(actual.index)
    fig, ax = plt.subplots(figsize=(10, 3))
    pos = np.zeros(len(x))
    neg = np.zeros(len(x))
    for c in COMPONENTS:
        v = actual[c].fillna(0.0).to_numpy(float)
        if not np.any(v):
            continue
        base = np.where(v >= 0, pos, neg)
        ax.bar(x, v, bottom=base, width=4 / 1440, align="edge", label=c)
        pos += np.clip(v, 0, None)
        neg += np.clip(v, None, 0)
    ax.step(x, expected.total.to_numpy(float), where="post", color="black", lw=1, label="plan expected")
    ax.set_ylabel("EUR per 5 min")
    ax.set_title("Cost per step by component")
    ax.legend(fontsize=7, ncol=4)
    fig.autofmt_xdate()
    return png_markdown(fig, "cost per step")


def cost_metadata(actual: pd.DataFrame, expected: pd.DataFrame, departures: list[dict], share: float) -> dict:
    from gridpipeline.market.costs import COMPONENTS

    priced = actual.total.notna()
    by = pd.DataFrame({"component": list(COMPONENTS),
                       "eur": [round(float(actual.loc[priced, c].sum()), 2) for c in COMPONENTS],
                       "expected_eur": [round(float(expected.loc[priced, c].sum()), 2) for c in COMPONENTS]})
    last = actual[priced].tail(1)
    return {"steps": len(actual), "steps_priced": int(priced.sum()),
            "cost_eur": round(float(actual.total[priced].sum()), 2),
            "expected_eur": round(float(expected.total[priced].sum()), 2),
            "last_step": str(last.index[0]) if len(last) else None,
            "last_step_eur": round(float(last.total.iloc[0]), 2) if len(last) else None,
            "departures": len(departures), "departure_share": share,
            "by_component": MetadataValue.md(md_table(by)),
            "departed_steps": MetadataValue.md(md_table(pd.DataFrame(departures), limit=20) if departures
                                               else "none"),
            "chart": MetadataValue.md(cost_chart(actual[priced], expected[priced]) if priced.any() else "no step priced")}
