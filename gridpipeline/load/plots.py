"""Charts of the load domain for asset metadata."""

from __future__ import annotations

import pandas as pd

from gridpipeline.base.plots import plt, png_markdown


def load_by_feeder_and_tier(table: pd.DataFrame) -> str:
    """Stacked bars: MW of load per feeder by tier (protected MW hatched apart), so an operator sees
    where the sheddable load is."""
    t = table.assign(feeder=table.feeder.astype("object").where(table.feeder.notna(), "substation").astype(str),
                     kind=[f"tier {r.tier}" + (" protected" if r.protected else "") for r in table.itertuples()])
    pv = t.pivot_table(index="feeder", columns="kind", values="load_mw", aggfunc="sum", fill_value=0.0)
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(pv) + 1.5))
    left = pd.Series(0.0, index=pv.index)
    for col in sorted(pv.columns):
        ax.barh(pv.index, pv[col], left=left, label=col, hatch="//" if "protected" in col else None)
        left += pv[col]
    ax.set_xlabel("load at rating, MW")
    ax.set_ylabel("feeder (head block)")
    ax.set_title("Load per feeder by tier")
    ax.legend(fontsize=7, loc="lower right")
    return png_markdown(fig, "load per feeder by tier")


def shed_profile(times, deficit, shed, greedy, unserved) -> str:
    """Deficit against what the schedule and the greedy order shed per step, with what is left
    unserved, so an operator sees the schedule cover the deficit."""
    fig, ax = plt.subplots(figsize=(7, 2.6))
    x = pd.DatetimeIndex(times)
    ax.step(x, deficit, where="post", color="black", label="deficit")
    ax.step(x, shed, where="post", label="shed (schedule)")
    ax.step(x, greedy, where="post", linestyle="--", label="shed (greedy order)")
    if max(unserved, default=0) > 0:
        ax.fill_between(x, 0, unserved, step="post", color="red", alpha=0.3, label="unserved")
    ax.set_ylabel("MW")
    ax.set_title("Shed schedule: net load shed per 5-minute step")
    ax.legend(fontsize=7)
    fig.autofmt_xdate()
    return png_markdown(fig, "shed schedule")


def reliability_month(daily_saidi: pd.Series, med_threshold: float | None, by_feeder: pd.DataFrame) -> str:
    """Left: the month's daily system SAIDI with the major-event-day threshold; right: the
    month-to-date SAIDI per feeder, so an operator sees which days and feeders drove the figures."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 2.8))
    x = pd.DatetimeIndex(daily_saidi.index)
    a1.bar(x, daily_saidi.to_numpy(), width=0.8)
    if med_threshold is not None:
        a1.axhline(med_threshold, color="red", linestyle="--", label=f"T_MED {med_threshold:.2f} min")
        a1.legend(fontsize=7)
    a1.set_ylabel("SAIDI, min")
    a1.set_title("Daily system SAIDI (sustained)")
    a1.tick_params(axis="x", labelrotation=45, labelsize=7)
    f = by_feeder.sort_values("saidi")
    a2.barh(f.key.astype(str), f.saidi.to_numpy())
    a2.set_xlabel("SAIDI month to date, min")
    a2.set_title("Per feeder")
    a2.tick_params(axis="y", labelsize=6)
    fig.tight_layout()
    return png_markdown(fig, "reliability month")
