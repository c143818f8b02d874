"""The gridpipeline code location: assembles each domain's assets, checks, jobs and sensors."""

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    Definitions,
    define_asset_job,
    in_process_executor,
)

from gridpipeline.orchestration.partitions import five_minute_partitions
from gridpipeline.orchestration.resources import build_resources
from gridpipeline.orchestration.sensors import build_landing_sensor
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
    selection=AssetSelection.assets(sensor_registry, telemetry_seeds),
    executor_def=in_process_executor,
    description="Sensor registry and dbt reference seeds, needed before the first window.",
)

# Dagster's implicit automation sensor starts STOPPED; this one is on from the first start, so the
# declarative conditions (registry on missing, hourly sensor health) act without a click.
automation_sensor = AutomationConditionSensorDefinition(
    "gridpipeline_automation",
    target=AssetSelection.all(),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
)

defs = Definitions(
    assets=[*telemetry_assets],
    asset_checks=[*telemetry_checks],
    jobs=[telemetry_job, bootstrap_job],
    sensors=[build_landing_sensor(telemetry_job, bootstrap_job), automation_sensor],
    resources=build_resources(),
)
