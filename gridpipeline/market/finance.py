"""Financial impact: what a day cost by component, what it would have cost with no optimisation, and the
market's revenue, DR payments and shed costs; daily and for a month.

**The counterfactual** is the same day re-run through the cost model without the flexibility the
pipeline used, on the same measurements (never the simulator's): per step, the import had no battery
moved (the fleet's measured power added back), nothing been curtailed (the committed curtailment
taken off), no DR event been called (the delivered reduction added back) and no block been shed (the
shed load added back, served at the price instead of costed at the value of lost load), and no market
position held (no imbalance). Losses are held at the estimated ones. Steps where that import would
have exceeded the connection's limit are counted (``counterfactual_over_limit_steps``): without the
flexibility the day would not have been feasible there, and its cost is a lower bound.

Savings = counterfactual cost - actual cost; market revenue = the settlement's energy and imbalance.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gridpipeline.market.costs import COMPONENTS, step_costs

DT_H = 5 / 60


def counterfactual(steps: pd.DataFrame, voll: float, import_max_mw: float | None = None) -> tuple[pd.DataFrame, int]:
    """(cost frame like :func:`costs.step_costs` on ``steps``' index, steps over the import limit)."""
    s = steps
    imp = s.import_mw.where(s.import_mw.notna(), s.plan_import_mw + s.losses_mw.fillna(0.0))
    cf_imp = (imp + s.fleet_mw.fillna(0.0) - s.curtailed_mw.fillna(0.0) + s.dr_mw.fillna(0.0)
              + s.shed_mw.fillna(0.0))
    cf = step_costs(s.price, cf_imp, losses_mw=s.losses_mw.fillna(0.0), voll=voll, dt_h=DT_H)
    cf.index = s.index
    cf.loc[s.price.isna(), [*COMPONENTS, "total"]] = np.nan
    over = int((cf_imp > import_max_mw + 1e-9).sum()) if import_max_mw is not None else 0
    return cf, over


def day_figures(actual: pd.DataFrame, cf: pd.DataFrame, settlement: pd.DataFrame | None, over: int) -> dict:
    """One day's figures: cost per component, counterfactual, savings, market revenue, DR and shed."""
    priced = actual.total.notna()
    out = {f"cost_{c}": round(float(actual.loc[priced, c].sum()), 2) for c in COMPONENTS}
    out["cost_total"] = round(float(actual.total[priced].sum()), 2)
    out["counterfactual_total"] = round(float(cf.total[priced].sum()), 2)
    out["savings"] = round(out["counterfactual_total"] - out["cost_total"], 2)
    out["market_revenue"] = (round(int(settlement.total_cents.sum()) / 100, 2)
                             if settlement is not None and len(settlement) else 0.0)
    out["dr_payments"] = out["cost_demand_response"]
    out["shed_cost"] = out["cost_lost_load"]
    out["steps_priced"] = int(priced.sum())
    out["counterfactual_over_limit_steps"] = over
    return out


def month_figures(daily: pd.DataFrame) -> dict:
    """The month's figures from its days' (``market.financial_daily`` rows): every amount summed, the
    steps counted, and the days with a priced step."""
    from gridpipeline.market.store import FINANCIAL_COLUMNS

    priced = daily[daily.steps_priced > 0] if len(daily) else daily
    out = {c: round(float(priced[c].sum()), 2) if len(priced) else 0.0 for c in FINANCIAL_COLUMNS}
    out["days"] = len(priced)
    return out


def stacked_chart(daily: pd.DataFrame, title: str) -> str:
    """Stacked costs by component per row of ``daily`` (index: a day or an hour), the counterfactual as
    a line, and the cumulative savings beneath: a markdown PNG."""
    import matplotlib.pyplot as plt

    from gridpipeline.base.plots import png_markdown

    x = np.arange(len(daily))
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(10, 5), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    pos = np.zeros(len(daily))
    neg = np.zeros(len(daily))
    for c in COMPONENTS:
        v = daily[f"cost_{c}"].fillna(0.0).to_numpy(float)
        if not np.any(v):
            continue
        a1.bar(x, v, bottom=np.where(v >= 0, pos, neg), label=c)
        pos += np.clip(v, 0, None)
        neg += np.clip(v, None, 0)
    a1.plot(x, daily.counterfactual_total.to_numpy(float), "k_", ms=14, mew=2, label="no optimisation")
    a1.set_ylabel("EUR")
    a1.set_title(title)
    a1.legend(fontsize=7, ncol=4)
    a2.plot(x, daily.savings.cumsum().to_numpy(float), color="green")
    a2.axhline(0, color="grey", lw=0.5)
    a2.set_ylabel("cumulative savings, EUR")
    a2.set_xticks(x[:: max(1, len(x) // 12)])
    a2.set_xticklabels([str(i)[:13] for i in daily.index[:: max(1, len(x) // 12)]], rotation=30, fontsize=7)
    return png_markdown(fig, title)


def write_report(month: str, daily: pd.DataFrame, steps: pd.DataFrame | None, out_dir) -> dict:
    """``report.html`` (figures and plots) and ``daily.csv`` / ``steps.csv`` for ``month`` in ``out_dir``
    (``steps`` None: no ``steps.csv`` written, one already there left as it is)."""
    import html
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    daily.to_csv(out / "daily.csv", index_label="day")
    if steps is not None:
        steps.to_csv(out / "steps.csv", index_label="step_ts")
    tot = daily.sum(numeric_only=True)
    chart = stacked_chart(daily, f"Costs by component, {month}") if len(daily) else "no priced day"
    img = chart[chart.find("(") + 1: chart.rfind(")")] if chart.startswith("!") else ""
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td style='text-align:right'>{v:,.2f}</td></tr>"
                   for k, v in tot.items() if not k.endswith("steps"))
    body = (f"<html><head><meta charset='utf-8'><title>gridpipeline financial report {month}</title></head><body>"
            f"<h1>Financial report, {html.escape(month)}</h1>"
            f"<p>{len(daily)} days with priced steps; {int(tot.get('steps_priced', 0))} five-minute steps. "
            "Savings are against the same days re-run through the cost model with no battery dispatch, no "
            "curtailment, no DR, no shedding and no market position (see market/finance.py).</p>"
            f"<table border='1' cellspacing='0' cellpadding='3'><tr><th>EUR</th><th>month</th></tr>{rows}</table>"
            + (f"<p><img src='{img}'/></p>" if img else "<p>no priced day</p>")
            + daily.to_html(float_format=lambda v: f"{v:,.2f}") + "</body></html>")
    (out / "report.html").write_text(body)
    return {"days": len(daily), "cost_total": round(float(tot.get("cost_total", 0.0)), 2),
            "savings": round(float(tot.get("savings", 0.0)), 2),
            "files": ["report.html", "daily.csv"] + (["steps.csv"] if steps is not None else [])}


def read_settlement(con, start, end) -> pd.DataFrame:
    import duckdb

    try:
        return con.execute("SELECT * FROM market.settlements QUALIFY settled_at = max(settled_at) OVER "
                           "(PARTITION BY delivery_day) ", []).df().pipe(
            lambda d: d[(pd.to_datetime(d.hour) >= pd.Timestamp(start)) & (pd.to_datetime(d.hour) < pd.Timestamp(end))])
    except duckdb.CatalogException:
        return pd.DataFrame()


def day_report(live, main, start, end, degradation: pd.Series, curtail_value: float, voll: float,
               import_max_mw: float | None) -> tuple[dict, pd.DataFrame]:
    """(figures, per-step frame: actual and counterfactual totals) of ``[start, end)`` from the stores."""
    from gridpipeline.market.ledgerbook import price_steps, read_steps

    steps = read_steps(live, main, start, end, degradation)
    actual, _ = price_steps(steps, curtail_value, voll)
    cf, over = counterfactual(steps, voll, import_max_mw)
    fig = day_figures(actual, cf, read_settlement(live, start, end), over)
    per_step = actual[[*COMPONENTS, "total"]].assign(counterfactual_total=cf.total, missing=actual.missing)
    return fig, per_step


def cost_context(net, policy_path) -> dict:
    """What pricing needs from the network model and the load policy: degradation per battery id
    (EUR/MWh), the curtailment value, the value of lost load (the policy's median class value) and the
    connection's import limit (the HV/MV transformers' rating)."""
    from gridpipeline.load.policy import read_policy
    from gridpipeline.storage.planner import CURTAIL_VALUE, fleet_table

    fleet = fleet_table(net)
    tr = net.trafo
    rating = float(pd.to_numeric(tr.sn_mva[tr.vn_hv_kv >= 60], errors="coerce").sum()) if len(tr) else 0.0
    return {"degradation": fleet.set_index(fleet.battery_id.astype(str)).degradation, "curtail_value": CURTAIL_VALUE,
            "voll": float(pd.Series(read_policy(policy_path).voll_eur_mwh).median()),
            "import_max_mw": rating or None}
