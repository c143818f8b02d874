"""Telemetry assets: thin wiring of registry, ingestion, dbt cleaning and health to DuckDB."""


import json
from contextlib import contextmanager
from datetime import datetime, timezone

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AutomationCondition,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets
from dagster_duckdb import DuckDBResource

from gridpipeline.base.partitions import five_minute_partitions, hourly_partitions
from gridpipeline.base.plots import availability_by_zone
from gridpipeline.project import dbt_project
from gridpipeline.sources.resources import NetworkModelResource, SettingsResource
from gridpipeline.store import ensure_schema, writer_lock
from gridpipeline.telemetry.health import compute_sensor_health
from gridpipeline.telemetry.ingest import ingest_windows
from gridpipeline.telemetry.registry import build_registry

GROUP = "telemetry"
#: run tag: ``archive`` ingests the historian archive folder (GRIDPIPELINE_ARCHIVE_DIR) instead of the
#: landing zone; same layout, same validation, same quarantine
SOURCE_TAG = "gridpipeline/source"


def _window(context: AssetExecutionContext) -> tuple[datetime, datetime]:
    tw = context.partition_time_window
    return (tw.start.astimezone(timezone.utc).replace(tzinfo=None), tw.end.astimezone(timezone.utc).replace(tzinfo=None))


@contextmanager
def _store(duckdb: DuckDBResource, settings: SettingsResource):
    """A connection to the store under the cross-process writer lock (see store.writer_lock)."""
    with writer_lock(settings.get().db_path), duckdb.get_connection() as con:
        yield con


def _md_table(rows: dict, key: str, value: str) -> MetadataValue:
    lines = [f"| {key} | {value} |", "|---|---:|"] + [f"| {k} | {v:,} |" for k, v in rows.items()]
    return MetadataValue.md("\n".join(lines) if rows else f"_no {key.lower()}s_")


@asset(
    group_name=GROUP,
    pool="duckdb",
    automation_condition=AutomationCondition.on_missing(),
    code_version="registry-v1",
    description="Every sensor on the grid (id, kind, location, unit, sigma, interval), from the network "
    "model by the placement policy. Table telemetry.sensors.",
)
def sensor_registry(context: AssetExecutionContext, duckdb: DuckDBResource, settings: SettingsResource,
                    network: NetworkModelResource):
    model = network.load()
    reg = build_registry(model.net, model.zones)
    with _store(duckdb, settings) as con:
        ensure_schema(con)
        con.execute("BEGIN TRANSACTION")
        con.execute("DELETE FROM telemetry.sensors")
        con.execute("INSERT INTO telemetry.sensors SELECT * FROM reg")
        con.execute("COMMIT")
    return MaterializeResult(metadata={
        "sensors": len(reg),
        "sources": reg.source.nunique(),
        "zones": reg.zone.nunique(),
        "network": str(model.path), "network_sha256": model.sha256[:12],
        "by_kind": _md_table(reg.kind.value_counts().to_dict(), "Kind", "Sensors"),
    })


@asset(
    group_name=GROUP,
    partitions_def=five_minute_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    pool="duckdb",
    deps=[sensor_registry],
    description="Landing-zone files of the window (or, with run tag gridpipeline/source=archive, the historian "
    "archive's), schema- and value-validated. Accepted rows in "
    "telemetry.raw_readings, rejected rows in telemetry.quarantine with a reason, unreadable files "
    "moved to the rejected folder and recorded in telemetry.ingest_files.",
)
def raw_telemetry(context: AssetExecutionContext, duckdb: DuckDBResource, settings: SettingsResource):
    s = settings.get()
    start, end = _window(context)
    archive = context.run.tags.get(SOURCE_TAG) == "archive"
    folder = s.archive if archive else s.landing
    with _store(duckdb, settings) as con:
        ensure_schema(con)
        rep = ingest_windows(con, folder, s.rejected, start, end,
                             future_tolerance_s=s.future_tolerance_s, max_age_days=s.max_age_days)
    summ = rep.summary()
    context.log.info(f"ingested {start}..{end} from {folder}: {json.dumps(summ, default=str)}")
    return MaterializeResult(metadata={
        "source": "historian archive" if archive else "landing zone",
        **{k: v for k, v in summ.items() if v is not None},
        "reconciles": summ["rows_in"] == summ["rows_stored"] + summ["rows_quarantined"],
        "quarantine_reasons": _md_table(rep.reasons, "Reason", "Rows"),
    })


@asset_check(asset=raw_telemetry, blocking=True, partitions_def=five_minute_partitions, description="Rows in = stored + quarantined, per file.")
def raw_telemetry_reconciles(context, duckdb: DuckDBResource, settings: SettingsResource) -> AssetCheckResult:
    start, end = _window(context)
    with _store(duckdb, settings) as con:
        bad = con.execute(
            """SELECT count(*), coalesce(sum(rows_in), 0), coalesce(sum(rows_stored), 0),
                      coalesce(sum(rows_quarantined), 0)
               FROM telemetry.ingest_files
               WHERE status = 'ok' AND ($s IS NULL OR (window_start >= $s AND window_start < $e))
                 AND rows_in <> rows_stored + rows_quarantined""", {"s": start, "e": end}).fetchone()
        rejected = con.execute(
            "SELECT count(*) FROM telemetry.ingest_files WHERE status = 'rejected' "
            "AND ($s IS NULL OR (window_start >= $s AND window_start < $e))", {"s": start, "e": end}).fetchone()[0]
    return AssetCheckResult(passed=bad[0] == 0, metadata={"files_not_reconciling": bad[0], "files_rejected": rejected})


@asset_check(asset=raw_telemetry, partitions_def=five_minute_partitions, description="Warns when more than 5 % of the window's rows are quarantined.")
def raw_telemetry_quarantine_rate(context, duckdb: DuckDBResource, settings: SettingsResource) -> AssetCheckResult:
    start, end = _window(context)
    with _store(duckdb, settings) as con:
        stored = con.execute("SELECT count(*) FROM telemetry.raw_readings WHERE ts >= ? AND ts < ?", [start, end]).fetchone()[0]
        quarantined = con.execute("SELECT count(*) FROM telemetry.quarantine WHERE window_start >= ? AND window_start < ?",
                                  [start, end]).fetchone()[0]
    share = quarantined / (stored + quarantined) if stored + quarantined else 0.0
    return AssetCheckResult(passed=share <= 0.05, severity=AssetCheckSeverity.WARN,
                            metadata={"quarantined_share": share, "stored": stored, "quarantined": quarantined})


class TelemetryTranslator(DagsterDbtTranslator):
    """dbt sources map onto the Python assets that write them; models keep their names."""

    SOURCES = {"raw_readings": AssetKey("raw_telemetry"), "sensors": AssetKey("sensor_registry")}

    def get_asset_key(self, dbt_resource_props):
        if dbt_resource_props["resource_type"] == "source" and dbt_resource_props["name"] in self.SOURCES:
            return self.SOURCES[dbt_resource_props["name"]]
        return AssetKey(dbt_resource_props["name"])

    def get_group_name(self, dbt_resource_props):
        return GROUP


def dbt_window_vars(start: datetime, end: datetime, settings) -> dict:
    """The --vars every partitioned dbt invocation gets (pure, unit-tested)."""
    return {
        "window_start": f"{start:%Y-%m-%d %H:%M:%S}",
        "window_end": f"{end:%Y-%m-%d %H:%M:%S}",
        "late_after_s": settings.late_after_s,
        "max_interp_gap_s": settings.max_interp_gap_s,
        "stuck_samples": settings.stuck_samples,
    }


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    select="resource_type:seed",
    dagster_dbt_translator=TelemetryTranslator(),
    pool="duckdb",
    name="telemetry_seeds",
)
def telemetry_seeds(context: AssetExecutionContext, dbt: DbtCliResource, settings: SettingsResource):
    """Reference tables the cleaning uses (unit conversions, plausibility limits per kind)."""
    with writer_lock(settings.get().db_path):
        yield from dbt.cli(["seed"], context=context).stream()


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    select="resource_type:model",
    dagster_dbt_translator=TelemetryTranslator(),
    partitions_def=five_minute_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    pool="duckdb",
    name="clean_telemetry_models",
)
def clean_telemetry_models(context: AssetExecutionContext, dbt: DbtCliResource, settings: SettingsResource):
    """Deduplicated, unit-normalised, range/rate/stuck/spike/drift-checked and gap-filled readings
    with a quality code on every value; re-running a window replaces exactly its rows."""
    start, end = _window(context)
    vars_ = dbt_window_vars(start, end, settings.get())
    with writer_lock(settings.get().db_path):
        yield from dbt.cli(["build", "--vars", json.dumps(vars_)], context=context).stream()


# The latest hour runs once all its 5-minute windows are clean (eager alone would skip an hour that
# was already complete when the deployment started), and again whenever one of them is re-cleaned.
HOURLY_WHEN_COMPLETE = (
    AutomationCondition.eager()
    | (
        AutomationCondition.in_latest_time_window()
        & AutomationCondition.missing()
        & ~AutomationCondition.any_deps_missing()
        & ~AutomationCondition.any_deps_in_progress()
        & ~AutomationCondition.in_progress()
        & ~AutomationCondition.execution_failed()
    )
).with_label("hourly_when_complete")


@asset(
    group_name=GROUP,
    partitions_def=hourly_partitions,
    pool="duckdb",
    deps=[AssetKey("clean_telemetry")],
    automation_condition=HOURLY_WHEN_COMPLETE,
    description="Per sensor and hour: expected vs received readings, availability, latency, last seen.",
)
def sensor_health(context: AssetExecutionContext, duckdb: DuckDBResource, settings: SettingsResource):
    start, end = _window(context)
    with _store(duckdb, settings) as con:
        ensure_schema(con)
        summ = compute_sensor_health(con, start, end)
        worst = con.execute(
            """SELECT s.name, h.availability, h.status FROM telemetry.sensor_health h
               JOIN telemetry.sensors s USING (sensor_id)
               WHERE hour_start >= ? AND hour_start < ? ORDER BY availability, s.name LIMIT 10""",
            [start, end]).df()
        per_zone = con.execute(
            """SELECT s.zone, h.expected, h.received FROM telemetry.sensor_health h
               JOIN telemetry.sensors s USING (sensor_id) WHERE hour_start >= ? AND hour_start < ?""",
            [start, end]).df()
    return MaterializeResult(metadata={
        **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in summ.items() if v is not None},
        "availability_by_zone": MetadataValue.md(availability_by_zone(per_zone, settings.get().coverage_warn)),
        "worst_sensors": MetadataValue.md(worst.to_markdown(index=False) if len(worst) else "_none_"),
    })


@asset_check(asset=sensor_health, partitions_def=hourly_partitions, description="Warns when reading coverage falls below GRIDPIPELINE_COVERAGE_WARN.")
def sensor_coverage(context, duckdb: DuckDBResource, settings: SettingsResource) -> AssetCheckResult:
    threshold = settings.get().coverage_warn
    start, end = _window(context)
    with _store(duckdb, settings) as con:
        expected, received, silent = con.execute(
            """SELECT coalesce(sum(expected), 0), coalesce(sum(received), 0), count(*) FILTER (WHERE status = 'silent')
               FROM telemetry.sensor_health WHERE hour_start >= ? AND hour_start < ?""", [start, end]).fetchone()
    coverage = received / expected if expected else 0.0
    return AssetCheckResult(passed=coverage >= threshold, severity=AssetCheckSeverity.WARN,
                            metadata={"coverage": coverage, "threshold": threshold, "silent_sensors": silent})


telemetry_assets = [sensor_registry, raw_telemetry, telemetry_seeds, clean_telemetry_models, sensor_health]
telemetry_checks = [raw_telemetry_reconciles, raw_telemetry_quarantine_rate, sensor_coverage]
