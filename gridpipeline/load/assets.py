"""The load-management stage in Dagster: priorities now; demand response, shedding, the critical-event
responder's table and restoration follow (issue 13)."""

from datetime import UTC, datetime

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    AutomationCondition,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from dagster_duckdb import DuckDBResource

from gridpipeline.base.partitions import live_five_minute_partitions
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
    "shed_schedule", group_name=GROUP, deps=["dispatch_plan", "load_priorities"],
    partitions_def=live_five_minute_partitions,
    description="Which switchable blocks to shed at each 5-minute step of the next two hours, when the dispatch "
    "plan leaves net load above the import limit (an import limit instruction: `gridpipeline load import-limit`): "
    "a mixed-integer program (cvxpy + HiGHS) with tier order, rotation, contracts, minimum on/off times and a "
    "switching budget; protected loads are never shed, and a deficit that needs one escalates to an operator. "
    "Computed by the live dispatcher after the plan (runless events), recorded in the decision ledger (kind "
    "`shed`, with the deficit, the blocks and their cost, and the greedy priority order's cost), and written to "
    "load.shed_schedule and load.shed_steps.")

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

load_assets = [load_priorities, shed_schedule, response_table, critical_responses]
