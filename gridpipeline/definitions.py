"""The gridpipeline code location: assembles each domain's assets, checks, jobs and sensors."""

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    Definitions,
    define_asset_job,
    in_process_executor,
)

from gridpipeline.base.partitions import five_minute_partitions, live_five_minute_partitions
from gridpipeline.forecast.assets import (
    demand_model,
    forecast_assets,
    forecast_job,
    forecast_schedule,
    renewable_models,
)
from gridpipeline.grid.assets import grid_assets, grid_model, grid_state_cycle
from gridpipeline.orchestration.resources import build_resources
from gridpipeline.orchestration.sensors import (
    build_grid_state_sensor,
    build_landing_sensor,
    build_run_reaper_sensor,
)
from gridpipeline.load.assets import load_assets
from gridpipeline.market.assets import market_assets
from gridpipeline.storage.assets import storage_assets, storage_jobs
from gridpipeline.telemetry.assets import (
    clean_telemetry_models,
    raw_telemetry,
    sensor_registry,
    telemetry_assets,
    telemetry_checks,
    telemetry_seeds,
)

telemetry_job = define_asset_job(
    "telemetry_job",
    selection=AssetSelection.assets(raw_telemetry, clean_telemetry_models),
    partitions_def=five_minute_partitions,
    executor_def=in_process_executor,
    description="Ingest, validate and clean one 5-minute window (or a range, as one run).",
)
bootstrap_job = define_asset_job(
    "bootstrap_job",
    selection=AssetSelection.assets(sensor_registry, telemetry_seeds, grid_model),
    executor_def=in_process_executor,
    description="Sensor registry, dbt reference seeds and the network model, needed before the first window.",
)
forecast_models_job = define_asset_job(
    "forecast_models_job",
    selection=AssetSelection.assets(demand_model, renewable_models),
    executor_def=in_process_executor,
    description="The first demand and renewable models after a fresh start (then nightly through automation); "
    "until they exist the forecasts serve the profile/physics fallbacks.",
)
grid_state_job = define_asset_job(
    "grid_state_job",
    selection=AssetSelection.assets(grid_state_cycle),
    partitions_def=live_five_minute_partitions,
    executor_def=in_process_executor,
    description="State estimation, bad data, bottlenecks, topology events (and N-1 when due) for the newest "
    "snapshot (tag gridpipeline/snapshot) or, without the tag, for every snapshot of the window.",
)

#: the automation sensor's runs: see below
AUTOMATION_PRIORITY = {"dagster/priority": "4"}

# Dagster's implicit automation sensor starts STOPPED; this one is on from the first start, so the
# declarative conditions (registry on missing, hourly sensor health) act without a click.
automation_sensor = AutomationConditionSensorDefinition(
    "gridpipeline_automation",
    target=AssetSelection.all(),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    # Queued runs go by priority, and the one DuckDB writer slot goes to the highest waiting: live windows
    # (8) and forecasts (5) first, then these (the costs, settlement, reports, the response table), ahead
    # of the history import and backfills (0). At 0 they starved behind the history import's week-long
    # chunks and never ran in a dev session's first hour (the 2026-12-07 dev check).
    run_tags=AUTOMATION_PRIORITY,
)



def build_definitions(settings=None) -> Definitions:
    """The code location, with resources for ``settings`` (default: the environment's)."""
    return Definitions(
        assets=[*telemetry_assets, *grid_assets, *forecast_assets, *storage_assets, *load_assets, *market_assets],
        asset_checks=[*telemetry_checks],
        jobs=[telemetry_job, bootstrap_job, grid_state_job, forecast_job, forecast_models_job, *storage_jobs],
        schedules=[forecast_schedule],
        sensors=[build_landing_sensor(telemetry_job, bootstrap_job, forecast_models_job),
                 build_grid_state_sensor(grid_state_job),
                 build_run_reaper_sensor(),
                 automation_sensor],
        resources=build_resources(settings),
    )


defs = build_definitions()
