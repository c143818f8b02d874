"""The load-management stage in Dagster: priorities, demand response, shed schedules, the critical-event
responder's table and what it did, restoration and reliability (issue 13)."""

from datetime import UTC, datetime

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    AutomationCondition,
    DailyPartitionsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from dagster_duckdb import DuckDBResource

from gridpipeline.base.partitions import START, live_five_minute_partitions
from gridpipeline.base.plots import md_table
from gridpipeline.sources.resources import NetworkModelResource, SettingsResource
from gridpipeline.store import writer_lock

GROUP = "load"


@asset(
    group_name=GROUP,
    pool="duckdb",
    deps=[AssetKey("grid_model")],
    automation_condition=AutomationCondition.on_missing() | AutomationCondition.on_cron("0 * * * *"),
    check_specs=[AssetCheckSpec("every_load_in_the_registry", asset="load_priorities",
                                description="Warns when the customer registry lacks loads of the network "
                                "(their class then comes from their profile).")],
    description="Switchable blocks (the areas between circuit breakers and load-break switches) with their tier, "
    "the loads and customers each serves, and what protects them, under the load-priority policy "
    "(GRIDPIPELINE_LOAD_POLICY; default data/load_policy.yaml) and the customer registry beside the network "
    "(load.block_priorities, load.block_loads). A bad policy fails with one error naming the entry. Hourly, "
    "or materialise after editing the policy.",
)
def load_priorities(context: AssetExecutionContext, duckdb: DuckDBResource, settings: SettingsResource,
                    network: NetworkModelResource):
    from gridpipeline.load.plots import load_by_feeder_and_tier
    from gridpipeline.load.policy import PolicyError
    from gridpipeline.load.priorities import priorities_for
    from gridpipeline.load.store import ensure_load_schema, write_priorities

    s = settings.get()
    model = network.load()
    try:
        pr = priorities_for(model.net, s.customers, s.load_policy)
    except PolicyError as exc:
        raise Failure(description=f"load policy rejected: {exc}",
                      metadata={"policy": str(s.load_policy), "customers": str(s.customers)}) from exc
    with writer_lock(s.db_path), duckdb.get_connection() as con:
        ensure_load_schema(con)
        write_priorities(con, pr, datetime.now(UTC).replace(tzinfo=None))
    t = pr.table
    by_tier = t.groupby(["tier", "tier_name"]).agg(blocks=("loads", "size"), loads=("loads", "sum"),
                                                   load_mw=("load_mw", "sum"), customers=("customers", "sum"),
                                                   protected_blocks=("protected", "sum")).reset_index()
    prot = t[t.protected].reset_index()
    yield MaterializeResult(metadata={
        "policy": str(s.load_policy), "policy_sha256": pr.policy_sha256[:12], "customers_file": str(s.customers),
        "blocks": len(pr.blocks.table), "blocks_serving_load": len(t),
        "switchable_blocks": int(pr.blocks.table.switchable.sum()),
        "protected_blocks": int(t.protected.sum()), "feeders": int(t.feeder.nunique()),
        "tie_switches": len(pr.blocks.ties), "customers": int(t.customers.sum()),
        "sheddable_mw": round(float(t.load_mw[~t.protected & t.switchable].sum()), 3),
        "interruptible_mw": round(float(t.interruptible_mw.sum()), 3),
        "loads_missing_from_registry": len(pr.missing_from_registry),
        "by_tier": MetadataValue.md(md_table(by_tier)),
        "protected": MetadataValue.md(md_table(prot, ["block_id", "tier", "load_mw", "customers", "protected_by"])),
        "load_by_feeder_and_tier": MetadataValue.md(load_by_feeder_and_tier(t)),
    })
    missing = pr.missing_from_registry
    yield AssetCheckResult(check_name="every_load_in_the_registry", passed=not missing,
                           severity=AssetCheckSeverity.WARN,
                           metadata={"missing": len(missing), "first_missing": MetadataValue.json(list(missing[:20]))})


shed_schedule = AssetSpec(
    "shed_schedule", group_name=GROUP, deps=["dispatch_plan", "load_priorities", "dr_events"],
    partitions_def=live_five_minute_partitions,
    description="Which switchable blocks to shed at each 5-minute step of the next two hours, when the dispatch "
    "plan leaves net load above the import limit (an import limit instruction: `gridpipeline load import-limit`): "
    "a mixed-integer program (cvxpy + HiGHS) with tier order, rotation, contracts, minimum on/off times and a "
    "switching budget; protected loads are never shed, and a deficit that needs one escalates to an operator. "
    "Computed by the live dispatcher after the plan (runless events), recorded in the decision ledger (kind "
    "`shed`, with the deficit, the blocks and their cost, and the greedy priority order's cost), and written to "
    "load.shed_schedule and load.shed_steps.")

def _load_power(context, duckdb, s, loads: list[int], since):
    """The loads' active power from the cleaned telemetry since ``since`` (a short read under the
    writer lock); empty, with a warning, when there is none yet."""
    import pandas as pd

    from gridpipeline.load.store import load_power

    if not loads or since is None:
        return pd.DataFrame(columns=["load_id", "ts", "mw"])
    with writer_lock(s.db_path), duckdb.get_connection() as con:
        try:
            return load_power(con, loads, pd.Timestamp(since).to_pydatetime())
        except Exception as exc:  # noqa: BLE001 - no cleaned telemetry yet: nothing measured this time
            context.log.warning(f"telemetry not readable ({exc})")
            return pd.DataFrame(columns=["load_id", "ts", "mw"])


@asset(
    group_name=GROUP,
    pool="duckdb",
    deps=[AssetKey("dispatch_plan"), AssetKey("load_priorities")],
    automation_condition=(AutomationCondition.missing() | AutomationCondition.cron_tick_passed("*/15 * * * *"))
    & ~AutomationCondition.in_progress(),
    check_specs=[AssetCheckSpec("dr_delivered", asset="dr_events",
                                description="Warns when a customer who opted in delivered under half of what the "
                                "plan counted on, or a VEN did not answer; warns without measured events.")],
    description="Demand-response events over OpenADR 2.0b: who the live dispatcher called before any involuntary "
    "shed (interruptible contracts, cheapest first, where the notice allows; ledger kind `dr_event`), who opted in "
    "or out or never answered (`dr_response`), and, once an event has ended, the reduction delivered against a "
    "baseline from the customer's own cleaned telemetry (good readings): high 5 of 10 prior weekdays with a same-day adjustment when ten "
    "are there, else the hour before (NAESB meter before); with the payment it earns. Intervals the grid itself cut the "
    "load (a shed, an under-frequency stage, a trip, from the ledger) count neither as delivery nor in the baseline, "
    "and are not paid. Rows in load.dr_events; "
    "every 15 minutes.",
)
def dr_events(context: AssetExecutionContext, duckdb: DuckDBResource, settings: SettingsResource,
              network: NetworkModelResource):
    import pandas as pd

    from gridpipeline.ledger.store import Ledger
    from gridpipeline.load.dr import event_rows
    from gridpipeline.load.priorities import priorities_for
    from gridpipeline.load.reliability import customer_interruptions, interruptions_from_records, loads_table
    from gridpipeline.load.store import ensure_load_schema, write_dr_events

    s = settings.get()
    led = Ledger(s.ledger)
    evs, resp = led.records(kind="dr_event"), led.records(kind="dr_response")
    now = datetime.now(UTC).replace(tzinfo=None)
    loads = sorted({int(c["load_id"]) for r in evs for c in r["body"].get("calls", [])})
    first = min((pd.Timestamp(c["start"]) for r in evs for c in r["body"].get("calls", [])), default=None)
    since = None if first is None else first - pd.Timedelta(days=30)
    readings = _load_power(context, duckdb, s, loads, since)
    # the involuntary interruptions of the called loads: not DR delivery, and not paid as such
    outages = None
    if loads:
        net = network.load().net
        pr = priorities_for(net, s.customers, s.load_policy)
        recs = [r for k in ("critical_response", "restoration", "outage", "shed_switching")
                for r in led.records(kind=k, since=None if since is None else since.to_pydatetime())]
        ci = customer_interruptions(interruptions_from_records(recs, now), loads_table(pr, net), pr.blocks.descendants)
        ci = ci[ci.load_id.isin(loads)]
        outages = pd.DataFrame({"load_id": ci.load_id.astype(int), "start": pd.to_datetime(ci.start),
                                "end": pd.to_datetime(ci.start) + pd.to_timedelta(ci.minutes.astype(float), unit="min")})
    rows = event_rows(evs, resp, readings, now, outages, led.records(kind="dr_end"))
    with writer_lock(s.db_path), duckdb.get_connection() as con:
        ensure_load_schema(con)
        write_dr_events(con, rows.assign(computed_at=now))
    measured = rows[rows.status == "measured"]
    opted_in = rows[rows.opt == "optIn"]
    short = measured[(measured.opt == "optIn") & (measured.delivered_mw < 0.5 * measured.expected_mw)]
    silent = rows[rows.opt == "no answer"]
    show = ["start", "ven_id", "contract", "opt", "status", "mw", "expected_mw", "baseline", "baseline_mw",
            "measured_mw", "delivered_mw", "payment_eur", "interrupted_min"]
    yield MaterializeResult(metadata={
        "calls": len(rows), "opted_in": len(opted_in), "opted_out": int((rows.opt == "optOut").sum()),
        "no_answer": len(silent), "pending": int((rows.opt == "pending").sum()), "measured": len(measured),
        "contracted_mw_called": round(float(rows.mw.sum()), 4) if len(rows) else 0.0,
        "expected_mw_opted_in": round(float(opted_in.expected_mw.sum()), 4) if len(opted_in) else 0.0,
        "delivered_mw_measured": round(float(measured.delivered_mw.sum()), 4) if len(measured) else 0.0,
        "delivered_vs_expected": round(float(measured.delivered_mw.sum() / measured.expected_mw.sum()), 3)
        if len(measured) and measured.expected_mw.sum() > 0 else None,
        "payments_eur": round(float(rows.payment_eur.sum()), 2) if len(rows) else 0.0,
        "interrupted_by_the_grid": int((rows.interrupted_min.fillna(0) > 0).sum()) if len(rows) else 0,
        "price_events": len(led.records(kind="dr_price")),
        "events": MetadataValue.md(md_table(rows.sort_values("start", ascending=False), show, limit=30)
                                   if len(rows) else "no demand-response events yet"),
    })
    if not len(measured) and not len(silent):
        yield AssetCheckResult(check_name="dr_delivered", passed=False, severity=AssetCheckSeverity.WARN,
                               description="no measured demand-response event yet", metadata={"calls": len(rows)})
    else:
        yield AssetCheckResult(
            check_name="dr_delivered", passed=short.empty and silent.empty, severity=AssetCheckSeverity.WARN,
            description=f"{len(short)} under-delivered, {len(silent)} without an answer, of {len(rows)} calls",
            metadata={"under_delivered": MetadataValue.json(short.event_id.tolist()),
                      "no_answer": MetadataValue.json(silent.ven_id.tolist())})


@asset(
    group_name=GROUP,
    deps=[AssetKey("load_priorities"), AssetKey("grid_state"), AssetKey("storage_state")],
    # every 5 minutes whatever its inputs did: on_cron waits for every dependency to update, and grid_state
    # and storage_state are reported per partition by the live workers, so it would never fire
    automation_condition=(AutomationCondition.missing() | AutomationCondition.cron_tick_passed("*/5 * * * *"))
    & ~AutomationCondition.in_progress(),
    description="What the critical-event responder does at each under-frequency stage (ENTSO-E NC ER: 49.0 to "
    "48.0 Hz, 7.5 % of the load per stage): the blocks to open in order, the merit list for a deficit in MW and "
    "the next-best blocks when a switch fails, and the batteries to discharge. Built on the newest estimated "
    "state's net load per block and the newest BMS read; refreshed every 5 minutes into the file the responder "
    "reads (<home>/load/response_table.json). The responder falls back to the policy order on rated load when "
    "the table is older than 15 minutes, and says so.",
)
def response_table(context: AssetExecutionContext, settings: SettingsResource, network: NetworkModelResource):
    import duckdb

    from gridpipeline.ledger.store import Ledger
    from gridpipeline.load.priorities import priorities_for
    from gridpipeline.load.response import (
        battery_power,
        block_net_load,
        build_table,
        last_out_from_records,
        table_blocks,
        write_table,
    )
    from gridpipeline.storage.inputs import state_at
    from gridpipeline.storage.planner import fleet_table
    from gridpipeline.store import connect

    s = settings.get()
    net = network.load().net
    pr = priorities_for(net, s.customers, s.load_policy)
    st, storage = None, None
    try:
        with connect(s.live_db_path, read_only=True, timeout_s=20.0) as con:
            st = state_at(con, contingencies=0)
            try:
                storage = con.execute("SELECT * FROM ops.storage_state WHERE read_at = "
                                      "(SELECT max(read_at) FROM ops.storage_state)").df()
            except duckdb.CatalogException:
                storage = None
    except (duckdb.IOException, TimeoutError) as exc:
        context.log.warning(f"live store not readable ({exc}); the table uses rated load")
    load_by_block = block_net_load(pr, net, st["injections"]) if st is not None else None
    blocks, basis = table_blocks(pr, net, load_by_block)
    led = Ledger(s.ledger)
    recs = led.records(kind="shed") + led.records(kind="critical_response")
    now = datetime.now(UTC).replace(tzinfo=None)
    table = build_table(blocks, battery_power(fleet_table(net), storage), now, basis, last_out_from_records(recs))
    write_table(s, table)
    stages = table.stages.assign(blocks=[", ".join(map(str, b)) for b in table.stages.blocks])
    return MaterializeResult(metadata={
        "basis": basis, "state_at": str(st["ts"]) if st is not None else "none: rated load",
        "load_mw": table.load_mw, "sheddable_blocks": len(table.order),
        "sheddable_mw": round(float(table.order.mw.sum()), 4),
        "staged_mw": round(float(table.stages.mw.sum()), 4),
        "batteries": len(table.batteries), "battery_mw": round(sum(table.batteries.values()), 4),
        "stages": MetadataValue.md(md_table(stages, ["stage", "threshold_hz", "share", "target_mw", "mw", "blocks"])),
        "merit_order": MetadataValue.md(md_table(table.order, limit=30)),
    })


critical_responses = AssetSpec(
    "critical_responses", group_name=GROUP, deps=["response_table"],
    description="What the critical-event responder (`gridpipeline responder`, started by `dev`) did: each "
    "under-frequency stage acted, with the reading that triggered it and when it left the outstation, the "
    "switch commands (select-before-operate over IEC 104) with their confirmations and replacements, the "
    "batteries, the table used (or the fallback) and the latency; each is a critical_response ledger record. "
    "Reported as runless events; readings not acted on (bad quality, NaN, spikes) are reported as observations.")

restoration_plan = AssetSpec(
    "restoration_plan", group_name=GROUP, deps=["critical_responses"],
    description="How the critical-event responder restores the blocks an event left out, once the frequency has "
    "stayed above 49.8 Hz for a minute: stages highest tier first, each stage's pickup (cold-load pickup, 2x the "
    "pre-outage load) within the margin of the first under-frequency stage, and each stage checked by an AC power "
    "flow before it is executed (split, or a block held for an operator, when it would create or worsen a voltage "
    "or loading violation). Each stage is a restoration ledger record, reported here as a runless event.")


@asset(
    group_name=GROUP,
    pool="duckdb",
    deps=[AssetKey("restoration_plan"), AssetKey("load_priorities")],
    automation_condition=AutomationCondition.on_missing() | AutomationCondition.on_cron("20 * * * *"),
    check_specs=[AssetCheckSpec("clpu_calibrated", asset="clpu_calibration",
                                description="Warns while the cold-load pickup is the literature's, not fitted on "
                                "at least three restorations of this grid.")],
    description="Cold-load pickup calibrated from the pipeline's own history: for every block a restoration "
    "closed again, its loads' 30-second telemetry gives the level before the outage and the pickup over the "
    "next hour; the excess is fitted to (peak - 1) exp(-t / tau). The 90th percentile of the peaks of outages "
    "of 10 minutes or more and the common tau size the responder's restoration stages (<home>/load/clpu.json); "
    "the literature's 2.0 and 20 minutes hold until three such restorations exist. Hourly.",
)
def clpu_calibration(context: AssetExecutionContext, duckdb: DuckDBResource, settings: SettingsResource,
                     network: NetworkModelResource):
    import pandas as pd

    from gridpipeline.ledger.store import Ledger
    from gridpipeline.load.blocks import switchable_blocks
    from gridpipeline.load.clpu import fit, pickup_curves, read, restorations_from_records, write

    s = settings.get()
    net = network.load().net
    blocks = switchable_blocks(net)
    lb = blocks.load_block(net)
    restored = restorations_from_records(Ledger(s.ledger).records(kind="restoration"))
    loads = sorted(int(i) for i in lb[lb.isin({b for b, _ in restored})].index)
    first = pd.Timestamp(min(at for _, at in restored)) - pd.Timedelta(hours=6) if restored else None
    readings = _load_power(context, duckdb, s, loads, first)
    now = datetime.now(UTC).replace(tzinfo=None)
    curves = pickup_curves(readings, lb, restored)
    cal, per = fit(curves, now)
    before = read(s.home)
    if cal.events:
        write(s.home, cal)
    yield MaterializeResult(metadata={
        "factor": cal.factor, "decay_min": cal.decay_min, "events_used": cal.events, "basis": cal.basis,
        "restorations_in_ledger": len(restored), "restorations_with_telemetry": int(curves.restored_at.nunique())
        if len(curves) else 0, "previous_factor": before.factor,
        "events": MetadataValue.md(md_table(per.sort_values("restored_at", ascending=False), limit=30)
                                   if len(per) else "no restoration with telemetry yet"),
    })
    yield AssetCheckResult(check_name="clpu_calibrated", passed=cal.events > 0, severity=AssetCheckSeverity.WARN,
                           description=cal.basis)


# today's partition exists (end_offset=1) so the month-to-date figures refresh hourly through the day
daily_partitions = DailyPartitionsDefinition(start_date=START, timezone="UTC", end_offset=1)


@asset(
    group_name=GROUP,
    pool="duckdb",
    partitions_def=daily_partitions,
    deps=[AssetKey("critical_responses"), AssetKey("restoration_plan"), AssetKey("load_priorities")],
    automation_condition=AutomationCondition.on_cron("5 * * * *"),
    check_specs=[AssetCheckSpec("blocks_left_out", asset="reliability_report",
                                description="Warns when blocks opened by the pipeline have not been restored.")],
    description="Reliability indices (IEEE 1366) for the day and the month to date, for the system, each class "
    "and each feeder: SAIFI, SAIDI, CAIDI (sustained interruptions, over 5 minutes), MAIFI (momentary) and "
    "energy not supplied, counted in customers from the customer registry. Interruptions are the pipeline's own "
    "switching records in the ledger (critical responses and restorations; a block cuts the blocks fed through "
    "it). Major event days by the 2.5 beta method over the whole history; the month is reported with and "
    "without them. Rows in load.reliability; today's partition refreshes hourly, past days can be backfilled.",
)
def reliability_report(context: AssetExecutionContext, duckdb: DuckDBResource, settings: SettingsResource,
                       network: NetworkModelResource):
    import pandas as pd

    from gridpipeline.ledger.store import Ledger
    from gridpipeline.load.plots import reliability_month
    from gridpipeline.load.priorities import priorities_for
    from gridpipeline.load.reliability import (
        customer_interruptions,
        interruptions_from_records,
        loads_table,
        report,
        report_rows,
    )
    from gridpipeline.load.store import write_reliability

    s = settings.get()
    net = network.load().net
    pr = priorities_for(net, s.customers, s.load_policy)
    day = pd.Timestamp(context.partition_key)
    now = datetime.now(UTC).replace(tzinfo=None)
    end = min(now, (day + pd.Timedelta(days=1)).to_pydatetime())
    led = Ledger(s.ledger)
    recs = [r for k in ("critical_response", "restoration", "outage", "shed_switching") for r in led.records(kind=k)
            if pd.Timestamp(r["created_at"]).tz_localize(None) < end]
    intr = interruptions_from_records(recs, end)
    loads = loads_table(pr, net)
    ci = customer_interruptions(intr, loads, pr.blocks.descendants)
    month_days = pd.date_range(day.to_period("M").start_time, day, freq="D")
    daily, med, month_all, month_wo = report(ci, loads, month_days)
    rows = report_rows(day, daily[daily.day == day], month_all, month_wo, now)
    with writer_lock(s.db_path), duckdb.get_connection() as con:
        write_reliability(con, day.date(), rows)
    sysd = daily[(daily.scope == "system") & (daily.day == day)].iloc[0]
    sysm = month_all[month_all.scope == "system"].iloc[0]
    sysw = month_wo[month_wo.scope == "system"].iloc[0]
    daily_saidi = daily[daily.scope == "system"].set_index("day").saidi
    still_out = intr[intr.still_out] if len(intr) else intr
    fmt = ["scope", "key", "customers_served", "customers_interrupted", "saifi", "saidi", "caidi", "maifi", "ens_mwh"]
    yield MaterializeResult(metadata={
        "day": str(day.date()), "interruptions_today": int((pd.to_datetime(intr.start).dt.normalize() == day).sum())
        if len(intr) else 0,
        "saifi_day": round(float(sysd.saifi), 6), "saidi_day_min": round(float(sysd.saidi), 4),
        "caidi_day_min": None if pd.isna(sysd.caidi) else round(float(sysd.caidi), 2),
        "maifi_day": round(float(sysd.maifi), 6), "ens_day_mwh": round(float(sysd.ens_mwh), 4),
        "saidi_month_min": round(float(sysm.saidi), 4), "saifi_month": round(float(sysm.saifi), 6),
        "saidi_month_without_med_min": round(float(sysw.saidi), 4), "ens_month_mwh": round(float(sysm.ens_mwh), 4),
        "customers_served": int(sysm.customers_served),
        "med_threshold_min": None if med.threshold_min is None else round(med.threshold_min, 4),
        "med_days_used": med.days_used, "med_reliable": med.reliable,
        "major_event_days": MetadataValue.json([str(pd.Timestamp(d).date()) for d in med.days]),
        "by_class_month": MetadataValue.md(md_table(month_all[month_all.scope == "class"], fmt)),
        "by_feeder_month": MetadataValue.md(md_table(month_all[month_all.scope == "feeder"]
                                                     .sort_values("saidi", ascending=False), fmt, limit=30)),
        "plot": MetadataValue.md(reliability_month(daily_saidi, med.threshold_min,
                                                   month_all[month_all.scope == "feeder"])),
        "blocks_still_out": len(still_out),
    })
    yield AssetCheckResult(
        check_name="blocks_left_out", passed=len(still_out) == 0, severity=AssetCheckSeverity.WARN,
        metadata={"blocks": MetadataValue.json([int(b) for b in still_out.block_id]) if len(still_out) else "[]"},
        description=f"{len(still_out)} blocks opened by the pipeline and not restored" if len(still_out)
        else "every block the pipeline opened has been restored")


load_assets = [load_priorities, dr_events, shed_schedule, response_table, critical_responses, restoration_plan,
               reliability_report, clpu_calibration]
