"""Asset metadata for shed schedules: the key figures first, then the blocks and the chart."""

from __future__ import annotations

import pandas as pd
from dagster import MetadataValue

from gridpipeline.base.plots import md_table


def shed_metadata(dec, decision_id: str) -> dict:
    from gridpipeline.load.plots import shed_profile

    p, r, b = dec.problem, dec.result, dec.body
    greedy_mw = (p.net_mw * dec.greedy).sum(axis=0)
    blocks = pd.DataFrame(b["blocks"])
    return {
        "decision": decision_id, "mode": dec.mode, "escalated": bool(b["escalated"]),
        "summary": b["summary"],
        "deficit_max_mw": round(float(p.deficit_mw.max()), 4),
        "shed_max_mw": round(float(r.shed_mw.max()), 4),
        "unserved_max_mw": round(float(r.unserved_deficit_mw.max()), 4),
        "blocks_shed": len(blocks), "cost_eur": b["cost_eur"],
        "greedy_cost_eur": b["counterfactual"]["cost_eur"], "saving_vs_greedy_eur": b["counterfactual"]["saving_eur"],
        "solver_status": r.status, "gap": None if r.gap is None else round(float(r.gap), 5),
        "solve_seconds": round(r.seconds, 3),
        "rules_given_way": MetadataValue.json(b["rules_given_way"]),
        "blocks": MetadataValue.md(md_table(blocks, limit=30)),
        "profile": MetadataValue.md(shed_profile(dec.times, p.deficit_mw, r.shed_mw, greedy_mw,
                                                 list(r.unserved_deficit_mw))),
    }
