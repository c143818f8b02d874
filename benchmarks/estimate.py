"""``gridpipeline bench estimate``: one 30-second cycle on the scale grid.

Untimed set-up: the scale world (SimBench ``1-MVLV-urban-all-0-sw``, 10,458 buses), the full sensor
placement (118,890 sensors: every bus voltage, every line's P/Q/I at both ends, P/Q of every load,
generator and battery, switch states), one simulated 5-minute window (clean data plus one 30-sigma
gross error on a redundant line flow), ingested into a fresh DuckDB store, and the network stored as
``grid_model`` version 1.

Timed:

- ``seconds``: the state estimate of one snapshot (``estimate_state``: measurement mapping and
  power-grid-model's iterative-linear WLS), median of 3 warm runs;
- ``refine_seconds``: the same plus the Gauss-Newton refinement to the exact AC WLS optimum;
- ``cycle_seconds``: the whole loop as the ``grid_state`` asset runs it: read the snapshot from DuckDB,
  label quality, switch states and topology events, estimation with chi-squared/largest-normalised-
  residual bad-data detection (r_N from a selected inverse of the gain matrix, re-estimating after
  each removal), the current-state AC power flow with bottlenecks, and writing every ``grid.*`` table;
- ``run_seconds``: what the live path costs per snapshot on this grid: the live-loop worker's cycle
  (``orchestration/live_loop.py``) from the snapshot complete in the landing zone to its rows
  committed to the live store (median of four snapshots in order, with N-1 running beside them in
  the worker's thread as live); ``worker_start_seconds`` is the one-off start (store read, model
  conversion) the worker pays once, not per snapshot;
- ``peak_memory_gib``: the process's peak resident memory while the cycle runs (sampled every 5 ms);
- ``reference_seconds``: pandapower's stock WLS (``pandapower.estimation.estimate``) on the sample
  MV/LV grid with the same kinds of measurements from the same simulator, in the same run
  (``--reference-scale`` runs it on the scale grid too: about 20 GiB, see shared/NOTES.md).
"""

from __future__ import annotations

import copy
import platform
import shutil
import statistics
import tempfile
import threading
import time
import warnings
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from gridpipeline.settings import PROJECT_ROOT

T0 = datetime(2026, 11, 20, 12, 0)


class _PeakRss:
    def __init__(self, interval: float = 0.005):
        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _run(self, interval):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def _snapshot_setup(world, reg, work: Path, minutes: int = 5):
    from gridpipeline.world.scada import FaultConfig, ScadaSimulator

    sim = ScadaSimulator(world, reg, work / "landing", faults=FaultConfig.none(), seed=11, export_interval_s=60)
    sim.run(T0, T0 + timedelta(minutes=minutes))
    sim.close()


def _pandapower_reference(world, reg, readings: pd.DataFrame) -> tuple[float, bool, int]:
    """pandapower's WLS on ``world``'s net with the snapshot's V, line/trafo P/Q and load/sgen P/Q."""
    import pandapower as pp
    from pandapower.estimation import estimate

    # pandapower 3.3's estimation module still calls np.in1d and np.linalg.linalg, both gone from
    # numpy 2.4: give them back for this reference run only
    if not hasattr(np, "in1d"):
        np.in1d = np.isin
    if not hasattr(np.linalg, "linalg"):
        np.linalg.linalg = np.linalg
    from gridpipeline.grid.topology import energized_buses

    net = copy.deepcopy(world.net)
    # pandapower's WLS gain matrix is singular with buses cut off by open switches: take them out
    en = energized_buses(net)
    net.bus.loc[en.index[~en.to_numpy(dtype=bool)], "in_service"] = False
    pp.runpp(net)  # pandapower's own view of isolated buses (e.g. behind open bus-bus switches)
    net.bus.loc[net.res_bus.index[net.res_bus.vm_pu.isna()], "in_service"] = False
    r = readings.merge(reg, on="sensor_id")
    r = r[r.quality != "invalid"]
    vn = net.bus.vn_kv
    for row in r.itertuples():
        k, et = row.kind, row.element_type
        if et == "bus" and not net.bus.in_service.get(row.element_id, True):
            continue
        if k == "v_mag":
            pp.create_measurement(net, "v", "bus", row.value / vn[row.element_id], row.sigma / vn[row.element_id],
                                  int(row.element_id))
        elif k in ("p_branch", "q_branch") and et in ("line", "trafo"):
            pp.create_measurement(net, "p" if k == "p_branch" else "q", et, row.value, row.sigma, int(row.element_id),
                                  side=row.terminal)
        elif k in ("p_inj", "q_inj") and et in ("load", "sgen"):
            pp.create_measurement(net, "p" if k == "p_inj" else "q", et, row.value, row.sigma, int(row.element_id))
        elif k in ("p_inj", "q_inj") and et == "storage":
            # pandapower has no storage measurements: a battery's own bus takes it as a bus injection
            # (load reference, as a battery's charging power) when nothing else is connected there
            b = int(net.storage.bus[row.element_id])
            if not ((net.load.bus == b).any() or (net.sgen.bus == b).any() or (net.storage.bus == b).sum() > 1):
                pp.create_measurement(net, "p" if k == "p_inj" else "q", "bus", row.value, row.sigma, b)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ok = estimate(net, algorithm="wls", init="flat", zero_injection=None, maximum_iterations=50)
    elapsed = time.perf_counter() - t0
    # estimate() can return True after logging "Estimation failed": judge by its results
    res = net.get("res_bus_est")
    ok = bool(ok) and res is not None and len(res) > 0 and bool(res.vm_pu.notna().any())
    return elapsed, ok, int(len(net.measurement))


def run(reference_scale: bool = False, keep: bool = False, **_) -> dict:
    from gridpipeline.grid import store as gstore
    from gridpipeline.grid.cycle import measurements_from_snapshot, run_cycle
    from gridpipeline.grid.estimation import estimate_state
    from gridpipeline.grid.network import to_pgm
    from gridpipeline.store import connect, ensure_schema
    from gridpipeline.telemetry.ingest import ingest_windows
    from gridpipeline.telemetry.registry import PlacementPolicy, build_registry
    from gridpipeline.telemetry.snapshot import db_snapshot, landing_snapshot
    from gridpipeline.world.model import load_world

    work = Path(tempfile.mkdtemp(prefix="bench-estimate-", dir=PROJECT_ROOT / "var" if (PROJECT_ROOT / "var").exists() else None))
    try:
        world = load_world("scale", cache_dir=PROJECT_ROOT / "var" / "worlds" / "scale")
        reg = build_registry(world.net, world.zones, PlacementPolicy.full())
        _snapshot_setup(world, reg, work)
        ts = T0 + timedelta(minutes=2)
        db = work / "bench.duckdb"
        with connect(db) as con:
            ensure_schema(con)
            con.execute("INSERT INTO telemetry.sensors SELECT * FROM reg")
            ingest_windows(con, work / "landing", work / "rejected", T0, T0 + timedelta(minutes=5),
                           now=T0 + timedelta(minutes=30))
            version, _ = gstore.save_model_version(con, world.net, T0, "world:scale")
            # one gross error (30 sigma) on a line flow measured at both ends: bad data to find
            mv = reg[(reg.kind == "p_branch") & (reg.element_type == "line") & (reg.nominal > 1.0)]
            bad = mv.iloc[len(mv) // 3]
            con.execute("UPDATE telemetry.raw_readings SET value = value + ? WHERE sensor_id = ? AND ts = ?",
                        [30 * float(bad.sigma), int(bad.sensor_id), ts])
        net = world.net
        model = to_pgm(net)
        work_net = copy.deepcopy(net)

        # estimation only (warm, median of 3)
        readings, _ = landing_snapshot(work / "landing", ts, reg)
        meas, _sw = measurements_from_snapshot(reg, readings)
        estimate_state(model, meas, refine=False, normalized_residuals=False)
        est_t, ref_t = [], []
        for _ in range(3):
            t0 = time.perf_counter()
            est = estimate_state(model, meas, refine=False, normalized_residuals=False)
            est_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            estimate_state(model, meas, refine=True, normalized_residuals=False)
            ref_t.append(time.perf_counter() - t0)

        # the whole cycle, as the asset runs it
        with connect(db) as con, _PeakRss() as mem:
            gstore.ensure_grid_schema(con)
            t0 = time.perf_counter()
            snap = db_snapshot(con, ts, reg)
            t_read = time.perf_counter() - t0
            res = run_cycle(net, model, reg, snap, ts, prev_switch_states=gstore.previous_switch_states(con, ts),
                            last_good=gstore.last_good_state(con, ts), work_net=work_net)
            t1 = time.perf_counter()
            gstore.write_cycle(con, res, T0, version, "raw_telemetry", len(snap))
            t_write = time.perf_counter() - t1
            cycle = time.perf_counter() - t0
        removed = res.bad_data[res.bad_data.action == "removed"]

        # run_seconds: what the live path pays per snapshot, from the snapshot complete in the landing
        # zone to its rows committed: the live-loop worker's cycle (landing read, quality labels,
        # estimate with bad data, power flow and bottlenecks, commit to the live store). The worker
        # starts once (store read, model conversion: worker_start_seconds) and stays warm.
        from gridpipeline.orchestration.live_loop import GridLoop
        from gridpipeline.settings import Settings

        live_settings = Settings(home=work, duckdb_path=db, landing_dir=work / "landing",
                                 live_duckdb_path=work / "live.duckdb", world="scale")
        t0 = time.perf_counter()
        worker = GridLoop(live_settings, None, report=False)
        worker.refresh(ts, force=True)
        worker_start = time.perf_counter() - t0
        run_t = []
        for k in range(1, 5):  # four snapshots of the window, in order, as the loop meets them
            t0 = time.perf_counter()
            worker.estimate(T0 + timedelta(minutes=k))
            run_t.append(time.perf_counter() - t0)
        worker.n1.shutdown(wait=True)

        # same-run reference: pandapower's WLS on the sample grid, same measurement kinds
        sample = load_world("sample")
        sreg = build_registry(sample.net, sample.zones)
        _snapshot_setup(sample, sreg, work / "sample")
        sread, _ = landing_snapshot(work / "sample" / "landing", ts, sreg)
        ref_s, ref_ok, ref_m = _pandapower_reference(sample, sreg, sread)
        ours_sample = estimate_state(to_pgm(sample.net), measurements_from_snapshot(sreg, sread)[0],
                                     refine=False, normalized_residuals=False)
        out = {
            "benchmark": "estimate",
            "grid": "1-MVLV-urban-all-0-sw",
            "buses": int(len(net.bus)),
            "sensors": int(len(snap)),
            "measured_values": int(len(est.measurements)),
            "dof": int(est.dof),
            "seconds": round(statistics.median(est_t), 4),
            "pgm_seconds": round(est.pgm_s, 4),
            "refine_seconds": round(statistics.median(ref_t), 4),
            "run_seconds": round(statistics.median(run_t), 3),
            "run_seconds_max": round(max(run_t), 3),
            "worker_start_seconds": round(worker_start, 3),
            "cycle_seconds": round(cycle, 3),
            "cycle_read_seconds": round(t_read, 3),
            "cycle_estimation_bad_data_seconds": round(res.timings["estimation_s"], 3),
            "cycle_powerflow_bottlenecks_seconds": round(res.timings["powerflow_bottlenecks_s"], 3),
            "cycle_write_seconds": round(t_write, 3),
            "estimations_in_cycle": int(res.summary["estimations_run"]),
            "gross_error_removed": bool(int(bad.sensor_id) in set(removed.sensor_id.astype(int))),
            "converged": bool(res.summary["converged"]),
            "peak_memory_gib": round(mem.peak / 2**30, 3),
            "reference_seconds": round(ref_s, 3),
            "reference_grid": f"sample ({len(sample.net.bus)} buses, pandapower WLS, {ref_m} measurements"
                              f"{'' if ref_ok else ', did not converge'})",
            "ours_on_reference_grid_seconds": round(ours_sample.elapsed_s, 4),
            "machine": f"{platform.machine()} {psutil.cpu_count()} cpu {round(psutil.virtual_memory().total / 2**30)} GiB",
        }
        if reference_scale:
            ref_scale_s, ok, m = _pandapower_reference(world, reg, readings)
            out["reference_scale_seconds"] = round(ref_scale_s, 2)
            out["reference_scale_converged"] = ok
        return out
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


__all__ = ["run"]
