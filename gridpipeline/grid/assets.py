"""Grid assets: thin wiring of the network model, the 30-second estimation loop and N-1 to DuckDB.

* ``grid_model``: the network model export stored as a new version when it changes, valid from the
  time the operator says it took effect (run config ``valid_from``; the first version from the start
  of the partitions), with feeders, islands and topologically critical elements.
* ``grid_state`` / ``topology_events`` / ``grid_bottlenecks`` / ``n1_contingency``: one multi-asset,
  5-minute partitions, rows keyed by ``snapshot_ts``. A live run (tag ``gridpipeline/snapshot``, set by
  ``grid_state_sensor`` every 30 s) estimates that one snapshot from the landing zone; a run without
  the tag (backfill, UI) estimates every 30-second snapshot of the window from ``clean_telemetry``.
  ``n1_contingency`` is materialised at the first snapshot of each window (every 5 minutes), on every
  topology event, and once per window in backfills. Each snapshot is estimated on the network version
  valid at its time (a backfill of last month uses last month's network).
"""

import time
from datetime import datetime, timezone
from itertools import groupby

import duckdb as _duckdb
import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    AutomationCondition,
    BackfillPolicy,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
    multi_asset,
)
from dagster_duckdb import DuckDBResource

from gridpipeline.base.partitions import START as PARTITIONS_START
from gridpipeline.base.partitions import live_five_minute_partitions
from gridpipeline.base.plots import md_table
from gridpipeline.grid import store as gstore
from gridpipeline.sources.resources import NetworkModelResource, SettingsResource
from gridpipeline.store import writer_lock

GROUP = "grid"
SNAPSHOT_TAG = "gridpipeline/snapshot"
STEP_S = 30
N1_RELIEF_TOP = 5
DECOMPOSE_ABOVE_BUSES = 2000


def _utc(dt: datetime) -> datetime:
    return dt.astimezone(timezone.utc).replace(tzinfo=None) if dt.tzinfo else dt


class GridModelConfig(Config):
    """When the network took effect. Empty: the first version is valid from the start of the partitions
    (the network the history was recorded on), a changed network from now."""

    valid_from: str | None = None


@asset(
    group_name=GROUP,
    pool="duckdb",
    deps=[AssetKey("sensor_registry")],
    automation_condition=AutomationCondition.on_missing(),
    code_version="grid-model-v2",
    description="The network model (buses, lines, transformers, switches, loads, generators, storage) stored in "
    "DuckDB and versioned by validity time (grid.model_versions), with its topology: feeders as radial trees "
    "from their substations, islands and topologically critical elements. Re-materialise after changing the "
    "network, with run config valid_from saying when the change took effect: the 30-second loop and backfills "
    "use the version valid at each snapshot's time.",
)
def grid_model(context: AssetExecutionContext, config: GridModelConfig, duckdb: DuckDBResource,
               settings: SettingsResource, network: NetworkModelResource):
    from gridpipeline.grid.topology import critical_elements, feeders, islands, tie_switches

    model = network.load()
    net = model.net
    fd = feeders(net)
    crit = critical_elements(net)
    isl = islands(net)
    ties = tie_switches(net)
    extra = {"feeders": fd, "critical_elements": crit,
             "islands": isl.assign(buses=[list(map(int, b)) for b in isl.buses])}
    with writer_lock(settings.get().db_path), duckdb.get_connection() as con:
        gstore.ensure_grid_schema(con)
        first = con.execute("SELECT count(*) FROM grid.model_versions").fetchone()[0] == 0
        valid_from = _valid_from(config.valid_from, first)
        version, created = gstore.save_model_version(con, net, valid_from, f"file:{model.path}", extra)
    top = crit.sort_values("load_mw_cut_off", ascending=False).head(10)
    md = ["| element | kind | buses cut off | load cut off (MW) |", "|---|---|---:|---:|"] + [
        f"| {r.element_type} {r.element_id} | {r.kind} | {r.buses_cut_off} | {r.load_mw_cut_off:.3f} |"
        for r in top.itertuples()]
    return MaterializeResult(metadata={
        "version": version, "new_version": created, "valid_from": str(valid_from) if created else "unchanged",
        "network": str(model.path), "sha256": model.sha256[:12],
        "buses": len(net.bus), "lines": len(net.line), "trafos": len(net.trafo), "switches": len(net.switch),
        "loads": len(net.load), "sgens": len(net.sgen), "storage": len(net.storage),
        "feeders": int(fd.feeder.nunique()) if len(fd) else 0, "islands": len(isl),
        "tie_switches": len(ties), "critical_elements": len(crit),
        "most_critical": MetadataValue.md("\n".join(md)),
    })


def _valid_from(value: str | None, first: bool) -> datetime:
    """The validity start of a new network version (UTC, naive): as configured, else the start of the
    partitions for the first version and now for later ones."""
    if value:
        return _utc(datetime.fromisoformat(value))
    if first:
        return datetime.fromisoformat(PARTITIONS_START)
    return datetime.now(timezone.utc).replace(tzinfo=None)


# --------------------------------------------------------------------------- the 30-second loop
class ModelCache:
    """Network, PGM model, load zones and a scratch copy per model version, kept for the life of the
    process (a backfill crossing a network change holds both versions)."""

    MAX_VERSIONS = 3
    entries: dict[tuple[int, str], tuple] = {}

    @classmethod
    def at(cls, con, ts: datetime) -> tuple[tuple, str | None] | None:
        """((version, net, pgm model, work net, load zones), note) for the version valid at ``ts``."""
        import copy

        from gridpipeline.common.zones import compute_zones
        from gridpipeline.grid.network import to_pgm

        found = gstore.model_at(con, ts)
        if found is None:
            return None
        version, sha, js, note = found
        key = (version, sha)
        if key not in cls.entries:
            net = gstore.net_from_json(js)
            zones = compute_zones(net).reindex(net.load.bus).fillna("unzoned").astype(str).to_numpy()
            if len(cls.entries) >= cls.MAX_VERSIONS:
                cls.entries.pop(next(iter(cls.entries)))
            cls.entries[key] = (version, net, to_pgm(net), copy.deepcopy(net), zones)
        return cls.entries[key], note


def _snapshots_for_run(context, con, settings, ws: datetime, we: datetime) -> list[tuple[datetime, str]]:
    from gridpipeline.telemetry.snapshot import clean_snapshot_times

    tag = context.run.tags.get(SNAPSHOT_TAG)
    if tag:
        return [(datetime.fromisoformat(tag), "landing")]
    try:
        times = clean_snapshot_times(con, ws, we, STEP_S)
    except _duckdb.CatalogException as exc:
        context.log.info(f"clean_telemetry not built yet ({exc}); reading the landing zone")
        times = []
    if times:
        return [(t, "clean_telemetry") for t in times]
    # not cleaned yet: whatever export intervals the landing zone holds for the window
    from gridpipeline.common import landing as lz

    starts = sorted({f.export_start for f in lz.window_files(settings.landing, ws) if f.export_start is not None})
    return [(t, "landing") for t in starts if ws <= t < we]


@multi_asset(
    specs=[
        AssetSpec("grid_state", group_name=GROUP, deps=[grid_model, AssetKey("sensor_registry"),
                                                        AssetKey("clean_telemetry")],
                  description="Estimated state per 30-second snapshot (AC WLS with power-grid-model, sigma from the "
                  "sensor registry inflated by quality): bus voltages, branch flows and loading, losses, J(x), "
                  "dof, max |r_N|, bad-data verdicts and the estimation time. Tables grid.state_*, grid.bad_data."),
        AssetSpec("topology_events", group_name=GROUP, deps=["grid_state"],
                  description="Switch status changes, islands that form or merge, areas losing or regaining supply, and "
                  "conflicting/invalid switch telemetry, per snapshot (grid.topology_events, grid.switch_states)."),
        AssetSpec("grid_bottlenecks", group_name=GROUP, deps=["grid_state"],
                  description="Branches above the loading threshold and buses outside the voltage band in the current "
                  "state (AC power flow of the estimated injections), ranked by margin, each with the injections "
                  "that contribute most (grid.bottlenecks)."),
        AssetSpec("n1_contingency", group_name=GROUP, deps=["grid_state"], skippable=True,
                  description="N-1 of every line, transformer and generator on the current state, with restoration "
                  "through tie switches: convergence, max loading, voltage range, violations, load lost, severity "
                  "rank; plus relieving injections for the most severe (grid.contingencies, grid.contingency_relief)."),
    ],
    check_specs=[
        AssetCheckSpec("estimate_converged", asset="grid_state",
                       description="Fails when a snapshot fell back to the last good state or a power flow."),
        AssetCheckSpec("voltage_within_limits", asset="grid_state",
                       description="Warns when an energised bus is outside the voltage band."),
        AssetCheckSpec("loading_within_limits", asset="grid_state",
                       description="Warns when a branch is loaded above the loading limit (GRIDPIPELINE_LOADING_LIMIT_PERCENT, 100 %)."),
        AssetCheckSpec("residuals_consistent", asset="grid_state",
                       description="Warns when the chi-squared test still alarms after bad-data removal."),
    ],
    partitions_def=live_five_minute_partitions,
    # an hour per run: a day's backfill is 24 runs, so the live windows' short writes (higher priority)
    # take the pool slot between them instead of queueing behind the whole day
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=12),
    pool="duckdb",
    can_subset=False,
)
def grid_state_cycle(context: AssetExecutionContext, duckdb: DuckDBResource, settings: SettingsResource):
    from gridpipeline.common.landing import floor_window
    from gridpipeline.grid.contingency import assess_contingencies, n1_trigger
    from gridpipeline.grid.cycle import CycleConfig, run_cycle
    from gridpipeline.grid.pseudo import forecast_pseudo_injections, latest_forecast_at
    from gridpipeline.telemetry.snapshot import clean_snapshot, landing_snapshot

    s = settings.get()
    tw = context.partition_time_window
    ws, we = _utc(tw.start), _utc(tw.end)
    cfg = CycleConfig(v_min=s.v_min_pu, v_max=s.v_max_pu, loading_threshold=s.loading_warn_percent)
    live = bool(context.run.tags.get(SNAPSHOT_TAG))
    n2 = s.n2_list()
    results, n1_rows, timings, notes = [], None, [], []
    with writer_lock(s.db_path), duckdb.get_connection() as con:  # a short read: what to estimate
        gstore.ensure_grid_schema(con)
        registry = con.execute("SELECT * FROM telemetry.sensors").df()
        snaps = _snapshots_for_run(context, con, s, ws, we)
        n1_windows = {floor_window(r[0]) for r in con.execute(
            "SELECT DISTINCT snapshot_ts FROM grid.contingencies WHERE snapshot_ts >= ? AND snapshot_ts < ?",
            [ws, we]).fetchall()}
    if not snaps:
        context.log.warning(f"no telemetry snapshot for window {ws:%Y-%m-%d %H:%M}; nothing estimated")
    prev = last_good = None  # carried in memory from one snapshot to the next; the store only for the first
    # one window at a time: read its inputs under the writer lock, estimate with no lock held, then
    # commit the window's snapshots in one short locked write (a day's backfill holds the lock in
    # 288 short bursts, never while it computes)
    for _, chunk in groupby(snaps, key=lambda t: floor_window(t[0])):
        chunk = list(chunk)
        inputs = []
        with writer_lock(s.db_path), duckdb.get_connection() as con:
            for ts, source in chunk:
                t0 = time.perf_counter()
                found = ModelCache.at(con, ts)
                if found is None:
                    raise RuntimeError("no network model in the store: materialise grid_model first")
                if source == "landing":
                    readings, _ = landing_snapshot(s.landing, ts, registry)
                else:
                    readings = clean_snapshot(con, ts)
                if prev is None and not results and not inputs:
                    prev = gstore.previous_switch_states(con, ts)
                    last_good = gstore.last_good_state(con, ts)
                inputs.append((ts, source, found, readings, latest_forecast_at(con, ts), time.perf_counter() - t0))
        done = []
        for ts, source, found, readings, (zone_p50, gen_p50), t_read in inputs:
            (version, net, model, work_net, load_zones), note = found
            if note:
                notes.append(note)
                context.log.warning(note)
            pseudo = forecast_pseudo_injections(net, load_zones, zone_p50, gen_p50)
            res = run_cycle(net, model, registry, readings, ts, prev_switch_states=prev, last_good=last_good,
                            pseudo_injections=pseudo, config=cfg, work_net=work_net)
            res.summary["pseudo_source"] = "forecast" if pseudo is not None else "nominal"
            if note:
                res.summary["message"] = "; ".join(m for m in (note, res.summary.get("message")) if m)
            prev = res.switch_states
            if res.summary["converged"]:
                last_good = res.buses
            n1 = None
            w = floor_window(ts)
            last_in_window = ts == chunk[-1][0]
            trigger = n1_trigger(len(res.events), w in n1_windows, live, last_in_window, res.summary["converged"])
            if trigger is not None:
                known = [c for c in n2 if all(t in work_net and i_ in work_net[t].index for t, i_ in c)]
                if len(known) < len(n2):
                    context.log.warning(f"N-2 cases with elements not in the network are skipped: "
                                        f"{[c for c in n2 if c not in known]}")
                t2 = time.perf_counter()
                table, relief_df = assess_contingencies(work_net, res.switch_states, known, loading_limit=s.loading_limit_percent,
                                                        v_min=cfg.v_min, v_max=cfg.v_max, relief_top=N1_RELIEF_TOP,
                                                        decompose_above_buses=DECOMPOSE_ABOVE_BUSES)
                n1 = (ts, table, relief_df, trigger, time.perf_counter() - t2)
                n1_windows.add(w)
            done.append((res, version, source, len(readings), t_read, n1))
        with writer_lock(s.db_path), duckdb.get_connection() as con:
            for res, version, source, n_readings, t_read, n1 in done:
                t1 = time.perf_counter()
                gstore.write_cycle(con, res, floor_window(res.snapshot_ts), version, source, n_readings)
                if n1 is not None:
                    gstore.write_contingencies(con, n1[0], n1[1], n1[2], n1[3])
                    n1_rows = n1
                results.append(res)
                timings.append({"read_s": t_read, "write_s": time.perf_counter() - t1, **res.timings})
    latest = results[-1] if results else None

    yield from state_outputs(results, timings, latest, live, notes)
    if n1_rows is not None:
        yield n1_output(*n1_rows)
    yield from state_checks(results, cfg, s.loading_limit_percent)


def state_outputs(results, timings, latest, live, notes=()):
    n = len(results)
    s = latest.summary if latest else {}
    meta = {
        "network_version_notes": "; ".join(sorted(set(notes))) or "every snapshot had a valid network version",
        "snapshots": n, "mode": "live (latest snapshot)" if live else "window (every snapshot)",
        "latest_snapshot": str(s.get("snapshot_ts")) if s else "none",
        "converged": sum(r.summary["converged"] for r in results),
        "fallbacks": sum(r.summary["fallback"] is not None for r in results),
    }
    if latest is not None:
        meta.update({
            "J": _num(s.get("J")), "dof": s.get("dof", 0), "chi2_threshold": _num(s.get("chi2_threshold")),
            "max_abs_rn": _num(s.get("max_abs_rn")), "losses_mw": _num(s.get("losses_mw")),
            "u_pu_min": _num(s.get("u_pu_min")), "u_pu_max": _num(s.get("u_pu_max")),
            "max_loading_percent": _num(s.get("max_loading_percent")),
            "measurements": s.get("n_measurements", 0), "pseudo_measurements": s.get("n_pseudo", 0),
            "pseudo_from": s.get("pseudo_source", "nominal"),
            "bad_data_removed": s.get("n_bad_removed", 0),
            "estimation_seconds": _num(s.get("estimation_seconds")),
            "cycle_seconds": _num(max(t["cycle_s"] + t["read_s"] + t["write_s"] for t in timings)),
            "bad_data": MetadataValue.md(_md(latest.bad_data, ["sensor_id", "kind", "element_type", "element_id",
                                                               "terminal", "value", "r_n", "action"], "bad data")),
            "most_loaded": MetadataValue.md(_md(latest.branches.sort_values("loading_percent", ascending=False).head(8),
                                                ["element_type", "element_id", "loading_percent", "p_from_mw"], "branches")),
        })
        if s.get("message"):
            meta["message"] = s["message"]
    yield MaterializeResult(asset_key="grid_state", metadata=meta)
    ev = pd.concat([r.events.assign(snapshot_ts=r.snapshot_ts) for r in results if len(r.events)], ignore_index=True) \
        if any(len(r.events) for r in results) else pd.DataFrame()
    yield MaterializeResult(asset_key="topology_events", metadata={
        "events": len(ev), "snapshots": n,
        "open_switches": int((~latest.switch_states).sum()) if latest is not None else 0,
        "events_table": MetadataValue.md(_md(ev, ["snapshot_ts", "kind", "element_type", "element_id", "load_mw", "detail"],
                                             "topology events")),
    })
    bn = latest.bottlenecks if latest is not None else pd.DataFrame()
    yield MaterializeResult(asset_key="grid_bottlenecks", metadata={
        "bottlenecks": len(bn),
        "worst_margin": _num(bn.margin_rel.min()) if len(bn) else None,
        "ranking": MetadataValue.md(_md(bn, ["rank", "element_type", "element_id", "quantity", "value", "limit",
                                             "margin", "contributors"], "bottlenecks")),
    })


def n1_output(ts, table, relief, trigger, seconds):
    return MaterializeResult(asset_key="n1_contingency", metadata={
        "snapshot": str(ts), "trigger": trigger, "contingencies": len(table), "seconds": round(seconds, 3),
        "not_converged": int((~table.converged).sum()),
        "with_overload": int((table.n_overloads > 0).sum()),
        "with_voltage_violation": int((table.n_voltage_violations > 0).sum()),
        "losing_load": int((table.load_lost_mw > 0).sum()),
        "restorable_via_ties": int((table.get("load_restored_mw", pd.Series(dtype=float)) > 0).sum()),
        "relief_rows": 0 if relief is None else len(relief),
        "ranking": MetadataValue.md(_md(table.head(10), ["rank", "contingency", "converged", "max_loading_percent",
                                                         "min_u_pu", "load_lost_mw", "load_restored_mw", "severity"],
                                        "contingencies")),
    })


def state_checks(results, cfg, loading_limit: float = 100.0):
    if not results:  # a check without data warns, and never passes
        for name in ("estimate_converged", "voltage_within_limits", "loading_within_limits", "residuals_consistent"):
            yield AssetCheckResult(asset_key="grid_state", check_name=name, passed=False,
                                   severity=AssetCheckSeverity.WARN,
                                   metadata={"detail": "no snapshot was estimated in this run"})
        return
    bad = [r for r in results if not r.summary["converged"] or r.summary["fallback"]]
    yield AssetCheckResult(asset_key="grid_state", check_name="estimate_converged", passed=not bad,
                           severity=AssetCheckSeverity.ERROR,
                           metadata={"snapshots": len(results), "fallbacks": len(bad),
                                     "detail": "; ".join(f"{r.snapshot_ts}: {r.summary['fallback']} {r.summary['message']}"
                                                         for r in bad)[:2000] or "all converged"})
    lo = min((r.summary["u_pu_min"] for r in results if r.summary["u_pu_min"] is not None), default=None)
    hi = max((r.summary["u_pu_max"] for r in results if r.summary["u_pu_max"] is not None), default=None)
    # no voltage in any result: nothing was checked, so it warns
    ok_v = lo is not None and hi is not None and lo >= cfg.v_min and hi <= cfg.v_max
    yield AssetCheckResult(asset_key="grid_state", check_name="voltage_within_limits", passed=ok_v,
                           severity=AssetCheckSeverity.WARN,
                           metadata={"u_pu_min": _num(lo), "u_pu_max": _num(hi), "band": f"[{cfg.v_min}, {cfg.v_max}]"})
    mx = max((r.summary["max_loading_percent"] for r in results if r.summary["max_loading_percent"] is not None), default=None)
    yield AssetCheckResult(asset_key="grid_state", check_name="loading_within_limits",
                           passed=mx is not None and mx <= loading_limit, severity=AssetCheckSeverity.WARN,
                           metadata={"max_loading_percent": _num(mx), "limit_percent": loading_limit})
    alarms = [r for r in results if r.summary["J"] is not None and r.summary["chi2_threshold"] is not None
              and r.summary["J"] > r.summary["chi2_threshold"]]
    yield AssetCheckResult(asset_key="grid_state", check_name="residuals_consistent", passed=not alarms,
                           severity=AssetCheckSeverity.WARN,
                           metadata={"snapshots_alarming": len(alarms),
                                     "bad_data_removed": sum(r.summary["n_bad_removed"] for r in results)})


def _num(x):
    if x is None:
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return round(x, 6) if np.isfinite(x) else None


def _md(df: pd.DataFrame, cols: list[str], what: str, limit: int = 15) -> str:
    return md_table(df, cols, limit=limit, empty=f"_no {what}_")


grid_assets = [grid_model, grid_state_cycle]
__all__ = ["SNAPSHOT_TAG", "grid_assets", "grid_model", "grid_state_cycle"]
