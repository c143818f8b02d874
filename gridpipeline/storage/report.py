"""What the operator sees of a plan: asset metadata with the key figures and plots (SOC trajectories,
net load at the substation before and after, prices known and forecast, curtailment per generator,
the gate's verdict), and the plan's checks. Pure: frames in, metadata and check verdicts out."""

from __future__ import annotations

import numpy as np
import pandas as pd
from dagster import MetadataValue

from gridpipeline.base.plots import md_table, plt, png_markdown


def _soc_plot(tables) -> str:
    b = tables["batteries"]
    fig, ax = plt.subplots(figsize=(7, 2.8))
    mv = b[b.vpp == ""]
    for bid, g in mv.groupby("battery_id"):
        ax.plot(g.step_ts, g.soc_percent, lw=1.2, label=bid)
    home = b[b.vpp != ""]
    if len(home):
        q = home.groupby("step_ts").soc_percent.quantile([0.1, 0.5, 0.9]).unstack()
        ax.fill_between(q.index, q[0.1], q[0.9], alpha=0.25, color="grey", label="home batteries P10-P90")
        ax.plot(q.index, q[0.5], color="grey", lw=1, label="home batteries median")
    ax.set_ylabel("SOC %")
    ax.set_ylim(0, 100)
    ax.set_title("Planned state of charge, next 24 h")
    ax.legend(fontsize=6, ncol=3, loc="upper left")
    fig.autofmt_xdate()
    return png_markdown(fig, "SOC trajectories")


def _net_load_plot(tables) -> str:
    s = tables["substation"]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7, 3.8), sharex=True, height_ratios=[2, 1])
    ax.plot(s.step_ts, s.net_load_before_mw, lw=1, label="before dispatch")
    ax.plot(s.step_ts, s.net_load_after_mw, lw=1.2, label="after dispatch")
    ax.axhline(0, color="black", lw=0.5)
    ax.set_ylabel("MW import")
    ax.set_title("Net load at the substation")
    ax.legend(fontsize=7)
    for label, color in (("known", "#2c7fb8"), ("filled", "#fdae61"), ("forecast", "#d7191c"), ("missing", "grey")):
        m = s.price_label == label
        if m.any():
            ax2.scatter(s.step_ts[m], s.price_eur_mwh[m], s=3, color=color, label=f"price {label}")
    ax2.set_ylabel("EUR/MWh")
    ax2.legend(fontsize=6, ncol=3)
    fig.autofmt_xdate()
    return png_markdown(fig, "net load and prices")


def _curtail_plot(curt: pd.DataFrame) -> str:
    by = curt.groupby(["generator_id", "reason"]).curtailed_mwh.sum().unstack(fill_value=0)
    by = by.loc[by.sum(axis=1).sort_values(ascending=False).index[:15]]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(by) + 1.2))
    by.plot.barh(stacked=True, ax=ax)
    ax.set_xlabel("MWh curtailed over the horizon")
    ax.set_title("Curtailment per generator, by reason")
    ax.legend(fontsize=6)
    return png_markdown(fig, "curtailment")


def dispatch_metadata(run, sent: dict, seconds: float, plan_id: str, trigger: str) -> dict:
    """Metadata per asset key: storage_state, dispatch_plan, curtailment_plan, vpp_envelope, for one
    ``cycle.PlanRun``."""
    p, out, verdict, tables, curt, env, flags = (run.p, run.out, run.verdict, run.tables, run.curtailment,
                                                 run.envelope, run.flags)
    units = p.units
    left = units.loc[~units.available, ["battery_id", "reason"]]
    k = out.costs
    plan = {
        "plan_id": plan_id, "trigger": trigger, "planned_steps": len(p.times), "first_step": str(p.times[0]),
        "fleet_mw_first_step": float(round(out.power[0].sum(), 4)),
        "cost_plan_eur": k["plan_eur"], "cost_do_nothing_eur": k["do_nothing_eur"],
        "cost_rule_based_eur": k["rule_based_eur"],
        "saving_vs_do_nothing_eur": round(k["do_nothing_eur"] - k["plan_eur"], 2),
        "feasible_without_slack": not out.result.violations,
        "violations": len(out.result.violations),
        "gate_passed": verdict.passed, "gate_scale": float(verdict.scale), "gate_verdict": verdict.reason,
        "gate_cases": verdict.cases, "setpoints_confirmed": int(sent.get("confirmed", 0)),
        "setpoints_failed": int(sent.get("failed", 0)), "plan_seconds": round(seconds, 3),
        "headroom_deficit_mwh": out.info["headroom_deficit_mwh"], "headroom_surplus_mwh": out.info["headroom_surplus_mwh"],
        "headroom_sized_mwh": MetadataValue.json({"deficit": out.info.get("headroom_quantile_deficit_mwh"),
                                                  "surplus": out.info.get("headroom_quantile_surplus_mwh")}),
        "headroom_held_because": MetadataValue.md("\n".join(
            f"- {k}: {v}" for k, v in (out.info.get("headroom_held_because") or {}).items()) or "_none_"),
        "prices_known_steps": int((p.prices.source == "known").sum()),
        "prices_forecast_steps": int((p.prices.source != "known").sum()),
        "flags": MetadataValue.md("\n".join(f"- {f}" for f in flags) or "_none_"),
        "soc_trajectories": MetadataValue.md(_soc_plot(tables)),
        "net_load_and_prices": MetadataValue.md(_net_load_plot(tables)),
        "binding_constraints": MetadataValue.md(md_table(pd.DataFrame(out.result.binding[:20]))),
        "objective_breakdown": MetadataValue.json(k["lp_breakdown"]),
    }
    state = {
        "units": len(units), "available": int(units.available.sum()), "unavailable": int((~units.available).sum()),
        "fleet_energy_mwh": float(round(np.nansum(units.energy_mwh[units.available]), 4)),
        "fleet_capacity_mwh": float(round(units.capacity_mwh.sum(), 4)),
        "left_out": MetadataValue.md(md_table(left, empty="_every unit available_")),
    }
    cmeta = {"curtailed_mwh": float(round(curt.curtailed_mwh.sum(), 4)) if len(curt) else 0.0,
             "generators": int(curt.generator_id.nunique()) if len(curt) else 0}
    if len(curt):
        cmeta["by_reason_mwh"] = MetadataValue.json(curt.groupby("reason").curtailed_mwh.sum().round(4).to_dict())
        cmeta["curtailment"] = MetadataValue.md(_curtail_plot(curt))
        cmeta["first_rows"] = MetadataValue.md(md_table(curt.sort_values("step_start"), limit=15))
    emeta = {}
    for vpp, g in env.groupby("vpp"):
        first = g.iloc[0]
        emeta[f"{vpp}_p_min_mw"] = float(round(first.p_min_mw, 5))
        emeta[f"{vpp}_p_max_mw"] = float(round(first.p_max_mw, 5))
        emeta[f"{vpp}_e_now_mwh"] = float(round(first.e_planned_mwh, 5))
        emeta[f"{vpp}_members"] = int(first.members)
    emeta["envelope"] = MetadataValue.md(md_table(env.iloc[::12], limit=24))
    return {"dispatch_plan": plan, "storage_state": state, "curtailment_plan": cmeta, "vpp_envelope": emeta}


def dispatch_checks(out, verdict, ledger) -> list[tuple[str, str, bool, str, dict]]:
    """(asset, check, passed, description, metadata) for one plan."""
    v = out.result.violations
    e, lo = out.energy, out.x.e_min
    soc_ok = bool(((e >= -1e-6) & (e <= np.asarray(out.x.e_max)[None, :] + 1e-6)).all())
    worst_low = float(np.min(e - np.asarray(lo)[None, :])) if e.size else 0.0
    rep = ledger.verify()
    return [
        ("dispatch_plan", "plan_feasible_without_slack", not v,
         "no priced slack in use" if not v else f"{len(v)} slack(s) in use: " +
         "; ".join(f"{x['kind']} at {x.get('where')}" for x in v[:5]), {"violations": len(v)}),
        ("dispatch_plan", "soc_within_limits", soc_ok,
         "every planned SOC within the unit's limits" if soc_ok else "a planned SOC leaves its limits",
         {"min_margin_to_e_min_mwh": round(worst_low, 6)}),
        ("dispatch_plan", "gate_passed", bool(verdict.passed), verdict.reason,
         {"scale": float(verdict.scale), "cases": verdict.cases}),
        ("dispatch_plan", "ledger_chain_intact", bool(rep.ok), rep.summary(),
         {"records": int(getattr(rep, "records", 0))}),
    ]


def pending_metadata(ledger, now) -> dict:
    from datetime import timedelta

    st = ledger.status(now, since=now - timedelta(days=1))  # a wait expires in minutes; the day's decisions
    pend = st[st.state.isin(["pending", "expiring"])]
    recent = st.tail(15).iloc[::-1]
    return {"pending": len(pend),
            "pending_decisions": MetadataValue.md(md_table(pend[["id", "kind", "created_at", "expires_at", "summary"]],
                                                           empty="_nothing waits for approval_")),
            "recent_decisions": MetadataValue.md(md_table(recent[["id", "kind", "mode", "state", "settled_by", "summary"]])),
            "how_to_approve": "Launchpad of approve_decision: ops: approve_decision: config: {decision_id, operator}; "
                              "or `uv run gridpipeline decisions approve ID --operator NAME`"}


__all__ = ["dispatch_checks", "dispatch_metadata", "pending_metadata"]
