"""Replay a period of history through the telemetry job as one run (what a single-run backfill does),
recorded in the Dagster instance so it shows in the UI like any other run."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

from dagster import DagsterInstance

from gridpipeline.common import landing as lz
from gridpipeline.orchestration.runs import wait_for_pool
from gridpipeline.orchestration.sensors import BOOTSTRAP, partition_key
from gridpipeline.settings import get_settings
from gridpipeline.store import connect
from gridpipeline.telemetry.assets import SOURCE_TAG

#: what ingestion and cleaning read before any telemetry: the registry, the dbt seeds, the network
REFERENCE_TABLES = ("telemetry.sensors", "clean.unit_conversions", "clean.kind_limits", "grid.model_versions")


def missing_reference_tables(db_path: Path) -> list[str]:
    """The reference tables the store lacks (all of them for a new or moved store). The Dagster
    instance may remember a bootstrap that wrote another file, so the store itself is asked."""
    if not Path(db_path).exists():
        return list(REFERENCE_TABLES)
    with connect(db_path, read_only=True) as con:
        have = {f"{a}.{b}" for a, b in con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables").fetchall()}
    return [t for t in REFERENCE_TABLES if t not in have]


def replay_range(start: datetime, end: datetime, instance: DagsterInstance | None = None, grid: bool = False,
                 archive: bool = False) -> dict:
    """Telemetry (and with ``grid``, the grid state of every 30-second snapshot) for [start, end); with
    ``archive``, from the historian archive folder instead of the landing zone."""
    from gridpipeline.definitions import defs

    instance = instance or DagsterInstance.get()

    def wait():
        # behind the run queue too: live windows, forecasts and the costs go before a backfill's chunk
        wait_for_pool(instance, echo=lambda m: print(m, file=sys.stderr, flush=True), behind_queue=True)

    windows = lz.windows(start, end)
    if not windows:
        raise ValueError(f"empty range: {start} .. {end}")
    if (any(instance.get_latest_materialization_event(k) is None for k in BOOTSTRAP)
            or missing_reference_tables(get_settings().db_path)):
        wait()
        boot = defs.resolve_job_def("bootstrap_job").execute_in_process(instance=instance, raise_on_error=False)
        if not boot.success:
            return {"success": False, "run_id": boot.run_id, "failed": "bootstrap_job (sensor registry, seeds)"}
    first, last = partition_key(windows[0]), partition_key(windows[-1])
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    if archive:
        tags[SOURCE_TAG] = "archive"
    wait()  # a dead run's slot is freed here, and a live holder is named, rather than spinning inside the run
    result = defs.resolve_job_def("telemetry_job").execute_in_process(
        instance=instance,
        tags=tags,
        raise_on_error=False,
    )
    meta = {}
    for ev in result.get_asset_materialization_events():
        if ev.asset_key.path == ["raw_telemetry"]:
            meta = {k: v.value for k, v in ev.materialization.metadata.items() if not hasattr(v.value, "md_str")}
    out = {"success": result.success, "run_id": result.run_id, "partitions": len(windows),
           "first": first, "last": last, **{k: v for k, v in meta.items() if isinstance(v, (int, float, bool, str))}}
    if grid and result.success:
        wait()
        g = defs.resolve_job_def("grid_state_job").execute_in_process(
            instance=instance,
            tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
            raise_on_error=False,
        )
        out["grid_run_id"] = g.run_id
        out["success"] = g.success
        for ev in g.get_asset_materialization_events():
            if ev.asset_key.path == ["grid_state"]:
                md = ev.materialization.metadata
                out["grid_snapshots"] = md["snapshots"].value
                out["grid_converged"] = md["converged"].value
    return out
