"""The economics stage in Dagster (issue 14): nodal prices and the published tariff of every dispatch plan
(computed by the live dispatcher after the plan: seconds-fast work, runless events), and the real-time
cost of every 5-minute step (a daily partition refreshed through the day)."""

from datetime import UTC, datetime, timedelta

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    AutomationCondition,
    DailyPartitionsDefinition,
    MaterializeResult,
    MonthlyPartitionsDefinition,
    asset,
)
from dagster_duckdb import DuckDBResource

from gridpipeline.base.partitions import START, live_five_minute_partitions
from gridpipeline.sources.resources import NetworkModelResource, SettingsResource
from gridpipeline.store import writer_lock

GROUP = "market"
#: a step warns when its cost departs from the plan's by more than this share of the expected (and 1 EUR)
DEPARTURE_SHARE = 0.2

price_signals = AssetSpec(
    "price_signals", group_name=GROUP, deps=["dispatch_plan"], partitions_def=live_five_minute_partitions,
    description="Distribution locational marginal prices (DLMPs) over every dispatch plan's 24-hour horizon "
    "(LinDistFlow OPF of the network model as a radial feeder, cvxpy + HiGHS; market/dlmp.py), each split into "
    "energy, losses (loss factors around the estimated state), congestion and voltage from the duals, and the "
    "tariff per zone (feeder) chosen with the customers' predicted response (market/tariff.py choose_tariff: the "
    "energy it moves at the zones' prices plus the horizon's peak import, each zone's mean kept at its prices', "
    "within the policy's cap, floor, band and largest change per hour). Computed by the live dispatcher after "
    "the plan, recorded in the decision ledger (kind `price_signal`, automatic by default: "
    "GRIDPIPELINE_DECISION_MODES=price_signal=advisory only records), written to "
    "market.price_signals (per zone and step) and market.nodal_prices (per bus, first hour).")

# today's partition exists (end_offset=1) so the day's steps are priced through the day
cost_days = DailyPartitionsDefinition(start_date=START, timezone="UTC", end_offset=1)


def every(cron: str, tz: str = "UTC", close: str | None = None,
          lookback: timedelta = timedelta(days=2)) -> AutomationCondition:
    """The latest partition at each tick of ``cron``, whatever the parents did: on_cron waits for every
    dependency to update, and some only do in an emergency (shed schedules) or are reported by the
    live workers, so it would never fire. These assets read the stores themselves.

    ``close``: a second cron at whose tick the partition before the latest runs once more. A partition
    reported to date (``end_offset=1``) stops being the latest when its period ends, so its last run
    would otherwise leave out what came after the last tick of ``cron`` (the last minutes of a day).
    ``lookback`` reaches that partition from the latest (2 days for days, 62 for months)."""
    latest = (AutomationCondition.in_latest_time_window()
              & AutomationCondition.cron_tick_passed(cron, tz).since_last_handled())
    label = f"every({cron}, {tz})"
    if close is not None:
        before = (AutomationCondition.in_latest_time_window(lookback) & ~AutomationCondition.in_latest_time_window()
                  & AutomationCondition.cron_tick_passed(close, tz).since_last_handled())
        latest, label = latest | before, f"every({cron}, {tz}; the one before at {close})"
    return (latest & ~AutomationCondition.in_progress()).with_label(label)


@asset(
    group_name=GROUP,
    pool="duckdb",
    partitions_def=cost_days,
    deps=[AssetKey("dispatch_plan"), AssetKey("storage_state"), AssetKey("shed_schedule"), AssetKey("dr_events")],
    automation_condition=every("*/15 * * * *", close="5 0 * * *"),
    check_specs=[AssetCheckSpec("cost_departure", asset="grid_costs",
                                description=f"Warns when a step's cost departs from what its plan expected by more "
                                f"than {DEPARTURE_SHARE:.0%} (and 1 EUR), naming the component; warns without a "
                                "priced step.")],
    description="What every 5-minute step of the day cost, by component (market/costs.py, market/ledgerbook.py): "
    "energy at the day-ahead price the plan used, network losses from the state estimate, battery degradation "
    "on the BMS's measured power, curtailed energy at its value, DR payments at the contracts' compensation, "
    "shed energy at the value of lost load, and imbalance against the market position (once there is one); "
    "beside it, the cost the plan in force expected for the step. Rows in market.grid_costs (a re-run replaces "
    "the day's rows). Today's partition refreshes every 15 minutes; past days can be backfilled.",
)
def grid_costs(context: AssetExecutionContext, duckdb: DuckDBResource, settings: SettingsResource,
               network: NetworkModelResource):
    import duckdb as ddb
    import pandas as pd

    from gridpipeline.load.policy import read_policy
    from gridpipeline.market.costs import cost_departures
    from gridpipeline.market.ledgerbook import price_steps, read_steps
    from gridpipeline.market.report import cost_metadata
    from gridpipeline.market.store import cost_rows, write_costs
    from gridpipeline.storage.planner import CURTAIL_VALUE, fleet_table
    from gridpipeline.store import connect

    s = settings.get()
    fleet = fleet_table(network.load().net)
    deg = fleet.set_index(fleet.battery_id.astype(str)).degradation
    voll = float(pd.Series(read_policy(s.load_policy).voll_eur_mwh).median())
    day = pd.Timestamp(context.partition_key)
    start, end = day.to_pydatetime(), (day + pd.Timedelta(days=1)).to_pydatetime()
    now = datetime.now(UTC).replace(tzinfo=None)
    with writer_lock(s.db_path), duckdb.get_connection() as main:
        try:
            with connect(s.live_db_path, read_only=True, timeout_s=20.0) as live:
                steps = read_steps(live, main, start, end, deg)
        except (ddb.IOException, TimeoutError) as exc:
            context.log.warning(f"live store not readable ({exc}): no step priced this time")
            steps = read_steps(main, main, start, end, deg)
    actual, expected = price_steps(steps, CURTAIL_VALUE, voll)
    priced = actual.total.notna().to_numpy()
    deps = cost_departures(actual[priced], expected[priced], share=DEPARTURE_SHARE)
    # departures are positions among the priced steps: back to positions in the day
    pos = [i for i, ok in enumerate(priced) if ok]
    deps = [{**d, "step": pos[d["step"]], "step_ts": str(actual.index[pos[d["step"]]])} for d in deps]
    rows = cost_rows(actual, expected, steps, deps, now)
    with writer_lock(s.db_path), duckdb.get_connection() as con:
        write_costs(con, start, end, rows)
    meta = cost_metadata(actual, expected, deps, DEPARTURE_SHARE)
    meta["voll_eur_mwh"] = voll
    yield MaterializeResult(metadata=meta)
    if not priced.any():
        yield AssetCheckResult(check_name="cost_departure", passed=False, severity=AssetCheckSeverity.WARN,
                               description="no step of the day has a plan to price it yet")
        return
    worst = max(deps, key=lambda d: abs(d["actual_eur"] - d["expected_eur"])) if deps else None
    yield AssetCheckResult(
        check_name="cost_departure", passed=not deps, severity=AssetCheckSeverity.WARN,
        metadata={"departed_steps": len(deps), "steps_priced": int(priced.sum()),
                  "by_component": pd.Series([d["component"] for d in deps]).value_counts().to_dict() if deps else {}},
        description=(f"{len(deps)} of {int(priced.sum())} steps departed; the largest at {worst['step_ts']}: "
                     f"{worst['actual_eur']} EUR against {worst['expected_eur']} expected, mostly {worst['component']} "
                     f"({worst['component_change_eur']:+} EUR)") if worst
        else f"every one of {int(priced.sum())} priced steps within {DEPARTURE_SHARE:.0%} of its plan")


market_bids = AssetSpec(
    "market_bids", group_name=GROUP, deps=["dispatch_plan"],
    description="Day-ahead bids and offers of the flexible portfolio (market/bids.py), one curve step per battery "
    "cluster and delivery hour: the planned discharge offered at v/eta_d + degradation, the planned charge bid at "
    "v*eta_c - degradation, v the dispatch plan's value of stored energy (its energy-balance duals). The live "
    "dispatcher bids the next delivery day whose gate (12:00 Europe/Berlin the day before) is open, once, from a "
    "plan to the end of that day; the exchange's rejections come back with reasons. Demand response is offered "
    "as block orders: each interruptible contract, at its compensation, for the MW the plan counts on, over its "
    "dearest hours no longer than its longest interruption (market.bids.dr_blocks; only with the VTN up and DR "
    "automatic). Ledger kind `market_bid` (GRIDPIPELINE_DECISION_MODES=market_bid=advisory records without "
    "submitting); rows in market.bids.")
flex_market = AssetSpec(
    "flex_market", group_name=GROUP, deps=["price_signals"],
    description="The local flexibility market (market/flexmarket.py), the way GOPACS or NODES run one: for each "
    "line the nodal prices find congested (a binding rating, its congestion dual) and each hour ahead, the MW the "
    "plan's net load takes it over its rating is bought pay-as-bid from the DER owners' offers below the line "
    "(their own prices, posted a day ahead to <home>/flex_offers; bad rows rejected with their reason), cheapest "
    "relief first. Computed by the live dispatcher after each plan's prices; ledger kind `flex_award` (advisory "
    "by default), rows in market.flex_awards.")
market_awards = AssetSpec(
    "market_awards", group_name=GROUP, deps=["market_bids"],
    description="The day-ahead awards once the day's prices are published: a price-taker's, at the real price "
    "(market/clearing.py): an offer at or below it sells, a bid at or above it buys, whatever the volume. The "
    "position per hour (market.positions, with the imbalance spread) is what the dispatch plans then follow: a "
    "deviation costs the spread in the plan's objective. A demand-response block is awarded whole when its hours' "
    "mean price reaches its price, and is not in the fleet's position (market.positions.dr_mw): the dispatcher "
    "calls it over OpenADR before its notice starts (a `dr_event` referring to the award), and never ends it "
    "early. Ledger kind `market_award`; rows in market.awards.")

# the delivery day (Europe/Berlin) is the partition; the last one is the last day that has ended
settlement_days = DailyPartitionsDefinition(start_date=START, timezone="Europe/Berlin")


@asset(
    group_name=GROUP,
    pool="duckdb",
    partitions_def=settlement_days,
    # the BMS reads and DR events it settles are read from the stores; only the award is a declared
    # dependency (the others are partitioned by UTC windows, a delivery day is a Berlin day)
    deps=[AssetKey("market_awards")],
    automation_condition=every("40 * * * *", "Europe/Berlin"),
    check_specs=[AssetCheckSpec("settlement_reconciles", asset="market_settlement", blocking=True,
                                description="Fails when the day's settlement lines do not sum, to the cent, to the "
                                "ledger's settlement record, or its energy does not match the award's revenue.")],
    description="Settlement of a delivery day (market/settlement.py): the position at the clearing price, the "
    "deviation of the fleet's metered power (BMS reads) from it at a two-price imbalance price (short pays price + "
    "spread, long is paid price - spread, spread = max(10 EUR/MWh, 20 % of |price|)); demand response sold as "
    "blocks adds to the position and its calls' measured delivery to the actual; and the DR events' payments "
    "as their contracts say (load.dr_events), in integer cents, line by line. Ledger kind `settlement`; rows in "
    "market.settlements (a re-run replaces the day's rows and appends a new record). Hourly, for the last day ended.",
)
def market_settlement(context: AssetExecutionContext, duckdb: DuckDBResource, settings: SettingsResource):
    import duckdb as ddb
    import pandas as pd

    from gridpipeline.ledger.store import Ledger
    from gridpipeline.market.bids import day_hours
    from gridpipeline.market.settlement import reconciliation, settle_day, settlement_record
    from gridpipeline.market.store import (
        read_day_for_settlement,
        read_sold_dr_events,
        sold_dr_by_hour,
        write_market,
    )
    from gridpipeline.store import connect

    s = settings.get()
    day = pd.Timestamp(context.partition_key)
    hours = day_hours(day)
    now = datetime.now(UTC).replace(tzinfo=None)
    try:
        with connect(s.live_db_path, read_only=True, timeout_s=20.0) as live:
            frame = read_day_for_settlement(live, hours)
    except (ddb.IOException, TimeoutError) as exc:
        context.log.warning(f"live store not readable ({exc})")
        frame = None
    with writer_lock(s.db_path), duckdb.get_connection() as main:
        try:
            dr = main.execute("SELECT event_id, contract, load_id, delivered_mwh, compensation_eur_mwh, payment_eur "
                              "FROM load.dr_events WHERE status = 'measured' AND start >= ? AND start < ?",
                              [hours[0].to_pydatetime(), (hours[-1] + pd.Timedelta(hours=1)).to_pydatetime()]).df()
        except ddb.CatalogException:
            dr = pd.DataFrame(columns=["event_id", "payment_eur"])
        if frame is not None:  # what the calls delivering sold DR blocks did (load.dr_events is the main store's)
            frame = frame.join(sold_dr_by_hour(read_sold_dr_events(main, hours), hours))
    if frame is None or frame.position_mw.isna().all():
        yield MaterializeResult(metadata={"day": str(day.date()), "settled": False,
                                          "reason": "no award for the day: nothing to settle"})
        yield AssetCheckResult(check_name="settlement_reconciles", passed=False, severity=AssetCheckSeverity.WARN,
                               description=f"no award for {day.date()}: nothing settled, nothing to reconcile")
        return
    frame["position_mw"] = frame.position_mw.fillna(0.0)
    lines, flags = settle_day(frame)
    led = Ledger(s.ledger)
    awards = {r["id"]: r for r in led.records(kind="market_award") if r["body"].get("delivery_day") == str(day.date())}
    award_id = frame.award.dropna().iloc[-1] if frame.award.notna().any() else None
    award_cents = awards[award_id]["body"]["decision"]["revenue_cents"] if award_id in awards else None
    body = settlement_record(day.date(), lines, flags, dr.payment_eur.fillna(0.0) if len(dr) else [], award_id)
    total, dr_cents = body["decision"]["total_cents"], body["decision"]["dr_payment_cents"]
    rec = led.append("settlement", body, mode="automatic", actor="market", ref=award_id)
    rows = lines.rename(columns={"step": "hour"}).assign(delivery_day=day.date(), decision_id=rec.id, settled_at=now)[
        ["delivery_day", "decision_id", "settled_at", "hour", "position_mwh", "actual_mwh", "price", "imbalance_mwh",
         "imbalance_price", "energy_cents", "imbalance_cents", "total_cents"]]
    with connect(s.live_db_path, timeout_s=30.0) as live:
        write_market(live, day.date(), "settlements", rows)
        stored = live.execute("SELECT total_cents FROM market.settlements WHERE delivery_day = ?", [day.date()]).df()
    # against the record as the ledger holds it (read back), not the one in memory
    (held,) = [r for r in led.records(kind="settlement", since=now - pd.Timedelta(minutes=1)) if r["id"] == rec.id]
    ok, diff, award_diff = reconciliation(stored, held["body"]["decision"]["total_cents"], lines, award_cents)
    yield MaterializeResult(metadata={
        "day": str(day.date()), "settled": True, "decision": rec.id, "energy_eur": int(lines.energy_cents.sum()) / 100,
        "imbalance_eur": int(lines.imbalance_cents.sum()) / 100, "total_eur": total / 100,
        "dr_payments_eur": int(dr_cents) / 100, "hours_flagged": len(flags),
        "imbalance_mwh": round(float(lines.imbalance_mwh.abs().sum()), 4)})
    yield AssetCheckResult(
        check_name="settlement_reconciles", passed=ok,
        metadata={"lines_minus_record_cents": int(diff),
                  "energy_minus_award_cents": None if award_diff is None else int(award_diff)},
        description="lines, ledger record and award agree to the cent" if ok else
        f"does not reconcile: lines - record {diff} cents, energy - award {award_diff} cents")


@asset(
    group_name=GROUP,
    pool="duckdb",
    partitions_def=cost_days,
    deps=[AssetKey("grid_costs")],  # and the settlements (by Berlin delivery day), read by hour
    automation_condition=every("50 * * * *", close="20 0 * * *"),
    check_specs=[AssetCheckSpec("optimisation_saves", asset="financial_report",
                                description="Warns when the day cost more than the same day with no optimisation, "
                                "or when nothing was priced.")],
    description="The day's financial impact (market/finance.py): costs by component, the same day re-run through "
    "the cost model with no battery dispatch, curtailment, DR, shedding or market position (on the same "
    "measurements, never the simulator's), the savings, the market revenue (settlement), DR payments and shed "
    "costs; with the stacked costs and the month's cumulative savings. Rows in market.financial_daily. "
    "`gridpipeline report --month YYYY-MM --out DIR` writes a month as HTML and CSV.",
)
def financial_report(context: AssetExecutionContext, duckdb: DuckDBResource, settings: SettingsResource,
                     network: NetworkModelResource):
    import duckdb as ddb
    import pandas as pd
    from dagster import MetadataValue

    from gridpipeline.base.plots import md_table
    from gridpipeline.market.finance import cost_context, day_report, stacked_chart
    from gridpipeline.market.store import write_financial
    from gridpipeline.store import connect

    s = settings.get()
    ctx = cost_context(network.load().net, s.load_policy)
    day = pd.Timestamp(context.partition_key)
    start, end = day.to_pydatetime(), (day + pd.Timedelta(days=1)).to_pydatetime()
    with writer_lock(s.db_path), duckdb.get_connection() as main:
        try:
            with connect(s.live_db_path, read_only=True, timeout_s=20.0) as live:
                fig, per_step = day_report(live, main, start, end, ctx["degradation"], ctx["curtail_value"],
                                           ctx["voll"], ctx["import_max_mw"])
        except (ddb.IOException, TimeoutError) as exc:
            context.log.warning(f"live store not readable ({exc})")
            fig, per_step = day_report(main, main, start, end, ctx["degradation"], ctx["curtail_value"],
                                       ctx["voll"], ctx["import_max_mw"])
    now = datetime.now(UTC).replace(tzinfo=None)
    with writer_lock(s.db_path), duckdb.get_connection() as con:
        month = write_financial(con, day.date(), fig, now)
    month = month.set_index("day")
    hourly = per_step.resample("h").sum(min_count=1).dropna(how="all", subset=["total"])
    hourly_fig = pd.DataFrame({f"cost_{c}": hourly[c] for c in hourly.columns if c not in
                               ("total", "counterfactual_total", "missing")})
    hourly_fig["counterfactual_total"] = hourly.counterfactual_total
    hourly_fig["savings"] = hourly.counterfactual_total - hourly.total
    meta = {k: v for k, v in fig.items()}
    meta["day"] = str(day.date())
    if fig["steps_priced"]:
        meta["chart_day"] = MetadataValue.md(stacked_chart(hourly_fig, f"Costs by component per hour, {day.date()}"))
    if len(month):
        meta["chart_month"] = MetadataValue.md(stacked_chart(month, f"Month to date, {day:%Y-%m}"))
        meta["month_to_date"] = MetadataValue.md(md_table(month.reset_index()[
            ["day", "cost_total", "counterfactual_total", "savings", "market_revenue", "dr_payments", "shed_cost"]]))
    yield MaterializeResult(metadata=meta)
    if not fig["steps_priced"]:
        yield AssetCheckResult(check_name="optimisation_saves", passed=False, severity=AssetCheckSeverity.WARN,
                               description="no step of the day priced yet")
        return
    yield AssetCheckResult(
        check_name="optimisation_saves", passed=fig["savings"] >= 0, severity=AssetCheckSeverity.WARN,
        metadata={"savings_eur": fig["savings"], "counterfactual_over_limit_steps": fig["counterfactual_over_limit_steps"]},
        description=f"saved {fig['savings']:.2f} EUR against no optimisation" if fig["savings"] >= 0 else
        f"cost {-fig['savings']:.2f} EUR more than no optimisation")


# the current month exists (end_offset=1): it is reported to date every day
cost_months = MonthlyPartitionsDefinition(start_date=f"{str(START)[:7]}-01", timezone="UTC", end_offset=1)


@asset(
    group_name=GROUP,
    pool="duckdb",
    partitions_def=cost_months,
    deps=[AssetKey("financial_report")],
    # 23:55, after the day's last daily report (:50); the month just ended once more on the 1st at 00:35,
    # after its last day's closing report (00:20)
    automation_condition=every("55 23 * * *", close="35 0 1 * *", lookback=timedelta(days=62)),
    check_specs=[AssetCheckSpec("month_saves", asset="financial_report_monthly",
                                description="Warns when the month cost more than the same days with no "
                                "optimisation, or when no day of it was reported.")],
    description="The month's financial impact, from the daily reports (market.financial_daily): costs by "
    "component, the counterfactual and the savings, market revenue, DR payments and shed costs, with the "
    "stacked daily costs and the cumulative savings. A row in market.financial_monthly, and the filing copy "
    "(report.html, daily.csv) under <home>/reports/YYYY-MM/; `gridpipeline report --month` adds the 5-minute "
    "steps. The current month is reported to date every night at 23:55 UTC.",
)
def financial_report_monthly(context: AssetExecutionContext, duckdb: DuckDBResource, settings: SettingsResource):
    import pandas as pd
    from dagster import MetadataValue

    from gridpipeline.base.plots import md_table
    from gridpipeline.market.finance import month_figures, stacked_chart, write_report
    from gridpipeline.market.store import read_financial_month, write_financial_month

    s = settings.get()
    first = pd.Timestamp(context.partition_key)
    last = first + pd.offsets.MonthEnd(0)
    month = f"{first:%Y-%m}"
    with writer_lock(s.db_path), duckdb.get_connection() as con:
        daily = read_financial_month(con, first.date(), last.date())
    fig = month_figures(daily)
    now = datetime.now(UTC).replace(tzinfo=None)
    with writer_lock(s.db_path), duckdb.get_connection() as con:
        write_financial_month(con, month, fig, now)
    days = daily[daily.steps_priced > 0].set_index("day") if len(daily) else daily
    out_dir = s.home / "reports" / month
    filed = write_report(month, days.drop(columns=["computed_at"], errors="ignore"), None, out_dir)
    meta = {**fig, "month": month, "filed_to": str(out_dir), "files": filed["files"]}
    if len(days):
        meta["chart_month"] = MetadataValue.md(stacked_chart(days, f"Costs by component per day, {month}"))
        meta["days_table"] = MetadataValue.md(md_table(days.reset_index()[
            ["day", "cost_total", "counterfactual_total", "savings", "market_revenue", "dr_payments", "shed_cost"]]))
    yield MaterializeResult(metadata=meta)
    if not fig["days"]:
        yield AssetCheckResult(check_name="month_saves", passed=False, severity=AssetCheckSeverity.WARN,
                               description=f"no day of {month} has been reported yet")
        return
    yield AssetCheckResult(
        check_name="month_saves", passed=fig["savings"] >= 0, severity=AssetCheckSeverity.WARN,
        metadata={"savings_eur": fig["savings"], "days": fig["days"]},
        description=(f"{month}: saved {fig['savings']:.2f} EUR over {fig['days']} days against no optimisation"
                     if fig["savings"] >= 0 else f"{month}: cost {-fig['savings']:.2f} EUR more than no optimisation"))


ELASTICITY_FILE = "elasticities.json"


@asset(
    group_name=GROUP,
    pool="duckdb",
    partitions_def=cost_days,
    deps=[AssetKey("price_signals")],
    automation_condition=every("55 * * * *", close="25 0 * * *"),
    check_specs=[AssetCheckSpec("elasticity_tracks", asset="price_response",
                                description="Warns when a class's measured elasticity is more than half its assumed "
                                "value away from it, or when there is too little published signal to measure it.")],
    description="How the price-responsive customers answered the published tariff (market/response.py): per "
    "class, the measured load of each zone against its baseline (the same time of day over the 7 days before, "
    "cleaned telemetry, good readings), paired with the relative tariff in force (tariff / horizon mean - 1, "
    "from the plans whose signals were published), and the elasticity re-estimated by least squares. The "
    "dispatcher's predicted response uses the estimate once it rests on a day of points "
    "(<home>/elasticities.json); until then the load policy's. Rows in market.price_response.",
)
def price_response(context: AssetExecutionContext, duckdb: DuckDBResource, settings: SettingsResource,
                   network: NetworkModelResource):
    import json

    import duckdb as ddb
    import pandas as pd
    from dagster import MetadataValue

    from gridpipeline.base.plots import md_table
    from gridpipeline.ledger.store import Ledger
    from gridpipeline.load.priorities import priorities_for
    from gridpipeline.load.store import load_power
    from gridpipeline.market.response import elasticity_table, learned, published_signal, response_points
    from gridpipeline.store import connect

    s = settings.get()
    nm = network.load()
    pr = priorities_for(nm.net, s.customers, s.load_policy)
    terms = pr.policy.demand_response.get("price_responsive") or {}
    day = pd.Timestamp(context.partition_key)
    start, end = day.to_pydatetime(), (day + pd.Timedelta(days=1)).to_pydatetime()
    published = {r["id"] for r in Ledger(s.ledger).records(kind="price_signal", since=start - pd.Timedelta(days=1))
                 if r["mode"] == "automatic"}
    try:
        with connect(s.live_db_path, read_only=True, timeout_s=20.0) as live:
            sig = live.execute("SELECT decision_id, planned_at, step_ts, step, zone, tariff, load_shape "
                               "FROM market.price_signals "
                               "WHERE planned_at >= ? AND planned_at < ?", [start - pd.Timedelta(days=1), end]).df()
    except (ddb.IOException, ddb.CatalogException, TimeoutError) as exc:
        context.log.warning(f"no price signals readable ({exc})")
        sig = pd.DataFrame()
    signal = published_signal(sig, published)
    signal = signal[(pd.to_datetime(signal.step_ts) >= start) & (pd.to_datetime(signal.step_ts) < end)] \
        if len(signal) else signal
    from gridpipeline.market.response import class_of

    loads = pr.loads[pr.loads["class"].isin({class_of(n, t) for n, t in terms.items()})][["load_id", "class"]].copy()
    loads["zone"] = [str(nm.zones.get(b)) for b in nm.net.load.bus.reindex(loads.load_id).to_numpy()]
    readings = pd.DataFrame(columns=["load_id", "ts", "mw"])
    if len(signal) and len(loads):
        with writer_lock(s.db_path), duckdb.get_connection() as con:
            try:
                readings = load_power(con, [int(i) for i in loads.load_id], start - pd.Timedelta(days=7))
            except ddb.CatalogException:
                context.log.warning("no cleaned telemetry yet")
    readings = readings[pd.to_datetime(readings.ts) < end] if len(readings) else readings
    pts = response_points(readings, loads, signal)
    est = elasticity_table(pts, terms)
    table = est.assign(day=day.date(), computed_at=datetime.now(UTC).replace(tzinfo=None))[
        ["day", "cls", "share", "elasticity_assumed", "elasticity_measured", "points", "computed_at"]]
    with writer_lock(s.db_path), duckdb.get_connection() as con:
        from gridpipeline.store.writers import replace_rows

        con.execute("CREATE SCHEMA IF NOT EXISTS market; CREATE TABLE IF NOT EXISTS market.price_response (day DATE, "
                    "cls VARCHAR, share DOUBLE, elasticity_assumed DOUBLE, elasticity_measured DOUBLE, points INTEGER, "
                    "computed_at TIMESTAMP)")
        replace_rows(con, [("DELETE FROM market.price_response WHERE day = ?", [day.date()])],
                     [("market.price_response", table)] if len(table) else [])
    new = learned(est, day.date())
    if new:
        path = s.home / ELASTICITY_FILE
        old = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**old, **new}, indent=1))
    rows = est.to_dict("records")
    yield MaterializeResult(metadata={
        "day": str(day.date()), "published_decisions": len(published), "signal_steps": len(signal),
        "points": len(pts), "classes": MetadataValue.md(md_table(table[["cls", "share", "elasticity_assumed",
                                                                        "elasticity_measured", "points"]]
                                                                 if len(table) else table)),
        "learned": MetadataValue.json(new)})
    off = [r for r in rows if pd.notna(r["elasticity_measured"])
           and abs(r["elasticity_measured"] - r["elasticity_assumed"]) > 0.5 * abs(r["elasticity_assumed"])]
    none = [r["cls"] for r in rows if pd.isna(r["elasticity_measured"])]
    yield AssetCheckResult(
        check_name="elasticity_tracks", passed=bool(rows) and not off and not none, severity=AssetCheckSeverity.WARN,
        metadata={"off": [r["cls"] for r in off], "not_measured": none},
        description=("no price-responsive class in the policy" if not rows else
                     f"too little published signal to measure {', '.join(none)}" if none else
                     "measured elasticities off the assumed: " + ", ".join(
                         f"{r['cls']} {r['elasticity_measured']:.3f} vs {r['elasticity_assumed']:.3f}" for r in off)
                     if off else "every class within half its assumed elasticity"))


market_assets = [price_signals, flex_market, market_bids, market_awards, grid_costs, market_settlement, financial_report,
                 financial_report_monthly, price_response]
