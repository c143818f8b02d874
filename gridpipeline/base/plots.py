"""Small PNG charts embedded in asset metadata (markdown with a data URI), so an operator sees the
shape of a partition in the Dagster UI before reading its numbers."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")  # no display in the run worker
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def png_markdown(fig, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f"![{alt}](data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()})"


def availability_by_zone(health: pd.DataFrame, threshold: float) -> str:
    """Bar chart of reading availability per zone (``health``: zone, expected, received)."""
    by_zone = health.groupby("zone")[["expected", "received"]].sum()
    share = (by_zone.received / by_zone.expected.where(by_zone.expected > 0)).fillna(0.0).sort_values()
    fig, ax = plt.subplots(figsize=(6, 0.25 * len(share) + 1))
    colors = ["#c0392b" if v < threshold else "#27ae60" for v in share]
    ax.barh(share.index, share.values * 100, color=colors)
    ax.axvline(threshold * 100, color="black", linestyle="--", linewidth=1)
    ax.set_xlim(0, 100)
    ax.set_xlabel("readings received, % of expected")
    ax.set_title("Sensor availability by zone")
    return png_markdown(fig, "availability by zone")


def md_table(df, cols=None, limit: int = 20, empty: str = "_none_") -> str:
    """A DataFrame as a markdown table for asset metadata (floats to 4 significant digits)."""
    if df is None or not len(df):
        return empty
    cols = [c for c in (cols or list(df.columns)) if c in df.columns]
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for r in df.head(limit)[cols].itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v).replace("|", "/")[:80]
                                       for v in r) + " |")
    return "\n".join(lines)
