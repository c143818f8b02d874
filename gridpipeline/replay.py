"""Replay a period of history through the telemetry job as one run (what a single-run backfill does),
recorded in the Dagster instance so it shows in the UI like any other run."""

from __future__ import annotations

from datetime import datetime

from dagster import DagsterInstance

from gridpipeline.common import landing as lz
from gridpipeline.orchestration.sensors import BOOTSTRAP, partition_key
from gridpipeline.telemetry.assets import SOURCE_TAG


def replay_range(start: datetime, end: datetime, instance: DagsterInstance | None = None, grid: bool = False,
                 archive: bool = False) -> dict:
    """Telemetry (and with ``grid``, the grid state of every 30-second snapshot) for [start, end); with
    ``archive``, from the historian archive folder instead of the landing zone."""
    from gridpipeline.definitions import defs

    instance = instance or DagsterInstance.get()
    windows = lz.windows(start, end)
    if not windows:
        raise ValueError(f"empty range: {start} .. {end}")
    if any(instance.get_latest_materialization_event(k) is None for k in BOOTSTRAP):
        boot = defs.resolve_job_def("bootstrap_job").execute_in_process(instance=instance, raise_on_error=False)
        if not boot.success:
            return {"success": False, "run_id": boot.run_id, "failed": "bootstrap_job (sensor registry, seeds)"}
    first, last = partition_key(windows[0]), partition_key(windows[-1])
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    if archive:
        tags[SOURCE_TAG] = "archive"
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
