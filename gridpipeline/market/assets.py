"""The economics stage in Dagster (issue 14): nodal prices and the published tariff of every dispatch plan
(computed by the live dispatcher after the plan: seconds-fast work, runless events), and the real-time
cost of every 5-minute step (a daily partition refreshed through the day)."""

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
    MaterializeResult,
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
    "tariff per zone (feeder) published from them under the policy's cap, floor and largest change per hour "
    "(market/tariff.py). Computed by the live dispatcher after the plan, recorded in the decision ledger (kind "
    "`price_signal`, advisory by default: GRIDPIPELINE_DECISION_MODES=price_signal=...), written to "
    "market.price_signals (per zone and step) and market.nodal_prices (per bus, first hour).")

# today's partition exists (end_offset=1) so the day's steps are priced through the day
cost_days = DailyPartitionsDefinition(start_date=START, timezone="UTC", end_offset=1)


@asset(
    group_name=GROUP,
    pool="duckdb",
    partitions_def=cost_days,
    deps=[AssetKey("dispatch_plan"), AssetKey("storage_state"), AssetKey("shed_schedule"), AssetKey("dr_events")],
    automation_condition=AutomationCondition.on_cron("*/15 * * * *"),
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


market_assets = [price_signals, grid_costs]
