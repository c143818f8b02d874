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

load_assets = [load_priorities, shed_schedule]
