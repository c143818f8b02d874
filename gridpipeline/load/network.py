"""Network rows for the shed schedule: what shedding each block relieves on the elements the grid state
says are overloaded now (``grid_bottlenecks``) or would be after the worst outage (``n1_contingency``).

Row ``k`` of the shed problem reads ``sum_b S[k, b] * net_mw[b, t] * shed[b, t] >= relief[k, t]``:

* **an actual overload** (a branch of ``grid.bottlenecks`` above its limit): shedding a block fed
  through it (``overload.fed_through``: radial feeders) takes its net load off the branch one for
  one, so ``S = 1`` for those blocks and the relief is the excess in MW over the limit
  (``(loading - limit) / 100 * rating``), scaled over the horizon by the demand forecast against
  the demand now (the pipeline has no per-branch forecast);
* **an N-1 overload** (``grid.contingency_relief`` of the newest screening: the loads whose
  reduction relieves the branch most loaded under the outage, with their sensitivity in % per MW):
  ``S[k, b]`` is the relief in % per MW of the block's net load, ``sum_l s_l p_l / net_b`` over the
  block's loads in the table, and the relief is the loading over the limit in %.

Pure functions; the dispatcher reads the two tables from the live store and passes the rows to
``schedule.from_plan``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from gridpipeline.load.overload import element_rating_mva, fed_through


@dataclass
class NetworkRows:
    sensitivity: np.ndarray  # (K, B) over the problem's block ids
    relief: np.ndarray  # (K, T)
    labels: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def network_rows(net, blocks, block_ids: np.ndarray, net_mw: np.ndarray, demand_mw: np.ndarray,
                 bottlenecks: pd.DataFrame | None, relief: pd.DataFrame | None,
                 load_p: pd.Series | None = None, limit_pct: float = 100.0) -> NetworkRows | None:
    """The rows for ``block_ids`` (B) over ``len(demand_mw)`` steps; ``net_mw`` (B, T) the blocks' net
    load; ``load_p`` the estimated load of each load id now (for N-1 rows). None when nothing is
    overloaded."""
    pos = {int(b): k for k, b in enumerate(block_ids)}
    B, T = len(block_ids), len(demand_mw)
    scale = np.asarray(demand_mw, float) / max(float(demand_mw[0]), 1e-9) if T else np.ones(0)
    S, R, labels = [], [], []
    if bottlenecks is not None and len(bottlenecks):
        over = bottlenecks[(bottlenecks.quantity == "loading_percent") & (bottlenecks.value > bottlenecks["limit"])
                           & bottlenecks.element_type.isin(["line", "trafo"])]
        for r in over.itertuples(index=False):
            el = (str(r.element_type), int(r.element_id))
            try:
                rating = element_rating_mva(net, el)
            except (KeyError, ValueError):
                continue
            row = np.zeros(B)
            for b in fed_through(blocks, net, el):
                if b in pos:
                    row[pos[b]] = 1.0
            if not row.any():
                continue
            need = max(float(r.value) - float(r.limit), 0.0) / 100.0 * rating
            S.append(row)
            R.append(np.clip(need * scale - 0.0, 0.0, None))
            labels.append(f"overload {el[0]} {el[1]}: {float(r.value):.1f} % > {float(r.limit):.0f} %")
    if relief is not None and len(relief):
        lb = blocks.load_block(net)
        rl = relief[(relief.element_type == "load") & (relief.sensitivity_pct_per_mw > 0)]
        for (cont, target), g in rl.groupby(["contingency", "target"]):
            over = float(g.target_loading_percent.iloc[0]) - limit_pct
            if over <= 0:
                continue
            row = np.zeros(B)
            for r in g.itertuples(index=False):
                b = lb.get(int(r.element_id))
                if b is None or pd.isna(b) or int(b) not in pos:
                    continue
                p = float(load_p.get(int(r.element_id), r.p_mw)) if load_p is not None else float(r.p_mw)
                k = pos[int(b)]
                row[k] += float(r.sensitivity_pct_per_mw) * max(p, 0.0)
            # per MW of the block's net load now; a block that draws little or exports now is left out
            # (its coefficient would explode, and shedding an exporting block relieves nothing)
            netnow = net_mw[:, 0] if net_mw.size else np.zeros(B)
            ok = (row > 0) & (netnow > 0.01)
            row = np.where(ok, row / np.where(ok, netnow, 1.0), 0.0)
            if not row.any():
                continue
            S.append(row)
            R.append(np.clip(over * scale, 0.0, None))
            labels.append(f"N-1 {cont}: {target} at {float(g.target_loading_percent.iloc[0]):.1f} %")
    if not S:
        return None
    return NetworkRows(np.vstack(S), np.vstack(R), labels)


__all__ = ["NetworkRows", "network_rows"]
