"""The 30-second grid loop as a long-lived worker that reports to Dagster.

A Dagster run per snapshot pays a process start, imports, a cold network-model cache and a queue slot
behind the single DuckDB writer every 30 s: on two busy cores that gave one estimate about every
57 s. The loop is seconds-fast work, so it runs as one process (``gridpipeline loop``, started by
``gridpipeline dev``) that:

* keeps the network model (power-grid-model, converted once per version), the registry and the
  latest forecasts in memory, refreshed every few minutes through short read-only visits to the
  store (skipped, with the cached copy kept, while a writer holds the store);
* estimates **every** complete 30-second snapshot in the landing zone in order (a late loop catches
  up within ``LOOKBACK``), with the same ``run_cycle`` as the ``grid_state_job`` backfills;
* writes its rows to its own DuckDB file (``GRIDPIPELINE_LIVE_DUCKDB_PATH``, default
  ``<home>/live.duckdb``; the ``grid.*`` tables of the main store's layout) in one short transaction
  per snapshot, opened and closed around the write so other processes can read it in between. The
  main store's single writer is never waited for: a day's backfill or a nightly training can hold it
  for minutes without delaying the operator's view;
* runs N-1 beside the loop in a thread (once per 5-minute window and on topology events) on its own
  copy of the network, so a screening never delays the next snapshot;
* reports each snapshot to Dagster with ``report_runless_asset_event``: materialisations of
  ``grid_state``, ``topology_events``, ``grid_bottlenecks`` (and ``n1_contingency``) with the same
  metadata a run gives, and the four ``grid_state`` checks.

Backfills (``grid_state_job`` over a range, ``replay --grid``) still run as Dagster runs on the main
store, from ``clean_telemetry``.
"""

from __future__ import annotations

import copy
import logging
import os
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pandas as pd
from dagster import AssetCheckEvaluation, AssetKey, AssetMaterialization, DagsterInstance

from gridpipeline.common import landing as lz
from gridpipeline.grid import store as gstore
from gridpipeline.settings import Settings
from gridpipeline.store import connect, writer_lock

log = logging.getLogger(__name__)

#: how far back a (re)started loop looks for snapshots it has not estimated
LOOKBACK = timedelta(minutes=10)
#: how often the registry, network version and forecasts are re-read from the main store
REFRESH = timedelta(minutes=1)
#: how long a visit to the main store may wait for a writer before the cached copy is used
STORE_WAIT_S = 1.0


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


#: the export interval of the live RTU files (one file per source per 30 s)
INTERVAL = timedelta(seconds=30)


def ready_snapshots(landing: Path, now: datetime, after: datetime | None, expected_sources: int, grace_s: float,
                    lookback: timedelta = LOOKBACK) -> list[datetime]:
    """Every export interval after ``after`` (and within ``lookback``) that is complete: each expected
    source delivered, or ``grace_s`` passed since the interval closed (a deadline: a silent RTU costs
    the loop at most ``grace_s``; a file later than that still reaches ingestion and backfills).
    Stops at the first incomplete one, so snapshots are estimated in order."""
    since = max(now - lookback, after or now - lookback)
    by_ts: dict[datetime, list[lz.LandingFile]] = {}
    for w in lz.recent_windows(landing, since):
        for f in lz.window_files(landing, w):
            if f.export_start is not None and (after is None or f.export_start > after) and f.export_start >= since:
                by_ts.setdefault(f.export_start, []).append(f)
    out = []
    for ts in sorted(by_ts):
        fs = by_ts[ts]
        complete = len({f.source for f in fs}) >= expected_sources
        if not complete and now < ts + INTERVAL + timedelta(seconds=grace_s):
            break
        out.append(ts)
    return out


def expected_sources(landing: Path, now: datetime) -> int:
    """Sources that delivered in the last two windows: the set a complete snapshot waits for."""
    windows = lz.recent_windows(landing, now - timedelta(minutes=10))
    return max((len({f.source for f in lz.window_files(landing, w) if f.source}) for w in windows[-2:]), default=0)


@dataclass
class LoopStats:
    estimated: int = 0
    failed: int = 0
    n1_runs: int = 0
    store_busy: int = 0
    last_snapshot: datetime | None = None
    lags_s: list[float] = field(default_factory=list)


def _lower_priority(nice: int = 10) -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (OSError, AttributeError):  # not Linux, or not allowed: N-1 just shares the core
        pass


class GridLoop:
    """One process, one snapshot at a time; see the module docstring."""

    def __init__(self, settings: Settings, instance: DagsterInstance | None = None, report: bool = True):
        from gridpipeline.grid.cycle import CycleConfig

        self.s = settings
        self.instance = instance
        self.report = report and instance is not None
        self.cfg = CycleConfig(v_min=settings.v_min_pu, v_max=settings.v_max_pu,
                               loading_threshold=settings.loading_warn_percent)
        self.live_path = settings.live_db_path
        self.registry: pd.DataFrame | None = None
        self.model = None            # (version, net, pgm model, work net, load zones)
        self.model_note: str | None = None
        self.n1_net = None           # the N-1 thread's own copy of the network
        self.forecast: tuple = (None, None)
        self.refreshed_at: datetime | None = None
        self.n1_windows: set[datetime] = set()
        # N-1 runs beside the estimates at a lower CPU priority (Linux threads have their own nice value)
        self.n1 = ThreadPoolExecutor(max_workers=1, thread_name_prefix="n1", initializer=_lower_priority)
        self.n1_future: Future | None = None
        self.stats = LoopStats()
        self.stop = threading.Event()
        self.last_done = self._last_estimated()
        #: (switch states, last converged bus state) of the newest committed snapshot, kept in memory
        self.carried: tuple | None = None

    # ------------------------------------------------------------------ the store
    def _last_estimated(self) -> datetime | None:
        """The newest snapshot in the live store (created here on the first start)."""
        with connect(self.live_path) as con:
            gstore.ensure_grid_schema(con)
            row = con.execute("SELECT max(snapshot_ts) FROM grid.state_summary").fetchone()
        return row[0] if row else None

    def refresh(self, now: datetime, force: bool = False) -> bool:
        """Re-read registry, network version and forecasts from the main store, if it can be read within
        ``STORE_WAIT_S``; otherwise keep the cached copies (True when the cache is fresh)."""
        from gridpipeline.grid.assets import ModelCache
        from gridpipeline.grid.pseudo import latest_forecast_at

        if not force and self.refreshed_at is not None and now - self.refreshed_at < REFRESH:
            return True
        try:
            # every process that opens the main store holds its writer lock (DuckDB refuses a writer
            # while another process has the file open, even read-only), but only asks for it briefly
            with writer_lock(self.s.db_path, timeout_s=STORE_WAIT_S), \
                    connect(self.s.db_path, read_only=True, timeout_s=STORE_WAIT_S) as con:
                self.registry = con.execute("SELECT * FROM telemetry.sensors").df()
                found = ModelCache.at(con, now)
                try:
                    self.forecast = latest_forecast_at(con, now)
                except duckdb.CatalogException:
                    self.forecast = (None, None)
        except (TimeoutError, duckdb.IOException, duckdb.CatalogException) as exc:
            self.stats.store_busy += 1
            log.info("main store not readable now (%s); using the cached registry, network and forecast",
                     type(exc).__name__)
            return False
        if found is not None:
            entry, self.model_note = found
            if self.model is None or self.model[0] != entry[0]:
                self.n1_net = copy.deepcopy(entry[1])
            self.model = entry
        self.refreshed_at = now
        return True

    # ------------------------------------------------------------------ one snapshot
    def estimate(self, ts: datetime) -> dict:
        """Estimate snapshot ``ts`` from the landing zone, commit it to the live store, report it."""
        from gridpipeline.grid.contingency import n1_trigger
        from gridpipeline.grid.cycle import run_cycle
        from gridpipeline.grid.pseudo import forecast_pseudo_injections
        from gridpipeline.telemetry.snapshot import landing_snapshot

        t0 = time.perf_counter()
        version, net, model, work_net, load_zones = self.model
        readings, counts = landing_snapshot(self.s.landing, ts, self.registry)
        if self.carried is None:  # the first snapshot after a start: from the live store, then in memory
            with connect(self.live_path) as con:
                self.carried = (gstore.previous_switch_states(con, ts), gstore.last_good_state(con, ts))
        prev, last_good = self.carried
        t_read = time.perf_counter() - t0
        zone_p50, gen_p50 = self.forecast
        pseudo = forecast_pseudo_injections(net, load_zones, zone_p50, gen_p50)
        res = run_cycle(net, model, self.registry, readings, ts, prev_switch_states=prev, last_good=last_good,
                        pseudo_injections=pseudo, config=self.cfg, work_net=work_net)
        res.summary["pseudo_source"] = "forecast" if pseudo is not None else "nominal"
        if self.model_note:
            res.summary["message"] = "; ".join(m for m in (self.model_note, res.summary.get("message")) if m)
        t1 = time.perf_counter()
        with connect(self.live_path) as con:
            gstore.ensure_grid_schema(con)
            gstore.write_cycle(con, res, lz.floor_window(ts), version, "landing", len(readings))
        committed = utcnow()
        self.carried = (res.switch_states, res.buses if res.summary["converged"] else last_good)
        t_write = time.perf_counter() - t1
        lag = (committed - ts).total_seconds()
        self.stats.estimated += 1
        self.stats.last_snapshot = ts
        self.stats.lags_s.append(lag)
        timing = {"read_s": t_read, "write_s": t_write, **res.timings}
        w = lz.floor_window(ts)
        trigger = n1_trigger(len(res.events), w in self.n1_windows, True, True, res.summary["converged"])
        if trigger is not None and (self.n1_future is None or self.n1_future.done()):
            self.n1_windows.add(w)
            self.n1_future = self.n1.submit(self._n1, ts, res.switch_states.copy(), trigger)
        if self.report:
            self._report(res, timing, w, counts)
        return {"snapshot": ts, "lag_s": lag, "cycle_s": time.perf_counter() - t0,
                "converged": bool(res.summary["converged"]), "readings": len(readings)}

    def _n1(self, ts: datetime, switch_states: pd.Series, trigger: str) -> None:
        from gridpipeline.grid.assets import DECOMPOSE_ABOVE_BUSES, N1_RELIEF_TOP, n1_output
        from gridpipeline.grid.contingency import assess_contingencies

        t0 = time.perf_counter()
        n2 = [c for c in self.s.n2_list() if all(t in self.n1_net and i in self.n1_net[t].index for t, i in c)]
        table, relief = assess_contingencies(self.n1_net, switch_states, n2, loading_limit=self.s.loading_limit_percent,
                                             v_min=self.cfg.v_min, v_max=self.cfg.v_max, relief_top=N1_RELIEF_TOP,
                                             decompose_above_buses=DECOMPOSE_ABOVE_BUSES)
        with connect(self.live_path) as con:
            gstore.write_contingencies(con, ts, table, relief, trigger)
        self.stats.n1_runs += 1
        if self.report:
            r = n1_output(ts, table, relief, trigger, time.perf_counter() - t0)
            self._materialize("n1_contingency", lz.floor_window(ts), r.metadata)

    # ------------------------------------------------------------------ Dagster
    def _materialize(self, key: str, window: datetime, metadata: dict) -> None:
        from gridpipeline.orchestration.sensors import partition_key

        self.instance.report_runless_asset_event(AssetMaterialization(
            asset_key=key, partition=partition_key(window), metadata={**metadata, "source": "live loop"}))

    def _report(self, res, timing: dict, window: datetime, counts: dict) -> None:
        from gridpipeline.grid.assets import state_checks, state_outputs

        for out in state_outputs([res], [timing], res, True):
            meta = dict(out.metadata or {})
            if out.asset_key == AssetKey("grid_state"):
                meta.update({"snapshot_files": counts.get("files", 0), "rows_used": counts.get("rows_used", 0),
                             "lag_seconds": round(self.stats.lags_s[-1], 3)})
            self._materialize(out.asset_key.to_user_string(), window, meta)
        for chk in state_checks([res], self.cfg, self.s.loading_limit_percent):
            self.instance.report_runless_asset_event(AssetCheckEvaluation(
                asset_key=AssetKey("grid_state"), check_name=chk.check_name, passed=chk.passed,
                severity=chk.severity, metadata=chk.metadata or {}))

    # ------------------------------------------------------------------ the loop
    def ready(self) -> bool:
        """Bootstrap done: registry and network model in the main store."""
        return self.refresh(utcnow(), force=self.model is None) and self.model is not None and self.registry is not None

    def run(self, until: datetime | None = None, poll_s: float = 0.5, echo=print) -> LoopStats:
        """Estimate snapshots as they complete until stopped (SIGINT/SIGTERM) or ``until``."""
        said_waiting = False
        while not self.stop.is_set() and (until is None or utcnow() < until):
            now = utcnow()
            if self.model is None and not self.ready():
                if not said_waiting:
                    echo("grid loop: waiting for the bootstrap (sensor registry and network model in the store)")
                    said_waiting = True
                self.stop.wait(5.0)
                continue
            self.refresh(now)
            expected = expected_sources(self.s.landing, now)
            todo = ready_snapshots(self.s.landing, now, self.last_done, expected, self.s.snapshot_grace_s) \
                if expected else []
            for ts in todo:
                if self.stop.is_set():
                    break
                try:
                    self.estimate(ts)
                except Exception:  # one bad snapshot must not stop the operator's view; it is logged
                    self.stats.failed += 1
                    log.exception("grid loop: snapshot %s failed", ts)
                self.last_done = ts
            self.stop.wait(poll_s)
        self.n1.shutdown(wait=True)
        return self.stats

    def install_signal_handlers(self) -> None:
        def _stop(signum, frame):
            self.stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)


__all__ = ["GridLoop", "LoopStats", "expected_sources", "ready_snapshots"]
