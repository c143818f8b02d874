"""One pass of the 30-second grid loop, on plain frames (no Dagster, no DuckDB).

snapshot readings + sensor registry + network ->
  switch states and topology events -> WLS state estimate with bad-data detection ->
  AC power flow of the estimated injections -> bottlenecks (with contributing injections).

Every step degrades instead of raising: conflicting or invalid switch readings keep the previous
state and are reported as events; an unobservable area gets pseudo-measurements; a failed estimate
falls back to the last good state (flagged); a failed power flow leaves the bottleneck list to the
estimate's own loadings. ``CycleResult.summary`` says which of these happened.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd

from gridpipeline.grid.bad_data import detect_bad_data
from gridpipeline.grid.estimation import SE_KINDS, EstimationResult
from gridpipeline.grid.network import PgmModel
from gridpipeline.grid.powerflow import PowerFlowResult, bottlenecks, run_powerflow
from gridpipeline.grid.topology import diff_topology, events_frame, normalize_switch_states


@dataclass
class CycleConfig:
    loading_threshold: float = 80.0   # % : a branch above this is a bottleneck
    v_min: float = 0.95
    v_max: float = 1.05
    rn_threshold: float = 3.0         # |r_N| above this is suspect
    alpha: float = 0.01               # chi-squared / family-wise level
    max_removals: int = 10
    normalized_residuals: bool = True
    contributors: int = 3


@dataclass
class CycleResult:
    snapshot_ts: datetime
    summary: dict
    buses: pd.DataFrame
    branches: pd.DataFrame
    appliances: pd.DataFrame
    bad_data: pd.DataFrame
    bottlenecks: pd.DataFrame
    events: pd.DataFrame
    switch_states: pd.Series
    dropped: pd.DataFrame
    estimate: EstimationResult | None = field(default=None, repr=False)
    timings: dict = field(default_factory=dict)


def measurements_from_snapshot(registry: pd.DataFrame, readings: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(state-estimation measurement table, switch readings) from a snapshot.

    readings: sensor_id, value (canonical unit), quality. Measurements carry the registry's element,
    terminal, kind and sigma (the sensor's accuracy); ``i_branch`` rows are passed on so that the
    estimator lists them as dropped with its reason. Switch readings: switch, value."""
    reg = registry.set_index("sensor_id")
    r = readings[readings.sensor_id.isin(reg.index)]
    m = reg.loc[r.sensor_id.to_numpy(), ["kind", "element_type", "element_id", "terminal", "sigma"]].reset_index()
    m["value"] = r.value.to_numpy(dtype=float)
    m["quality"] = r.quality.to_numpy() if "quality" in r.columns else "good"
    sw = m[m.kind == "switch_status"]
    switches = pd.DataFrame({"switch": sw.element_id.astype(np.int64).to_numpy(),
                             "value": np.where(sw.quality.to_numpy() == "invalid", np.nan, sw.value.to_numpy())})
    meas = m[m.kind.isin((*SE_KINDS, "i_branch"))].copy()
    meas["terminal"] = meas.terminal.where(meas.terminal.notna(), None)
    meas.index = meas.sensor_id.to_numpy()  # unique row labels for the bad-data report
    meas.index.name = None
    return meas, switches


def _apply_injections(net, apps: pd.DataFrame) -> None:
    """Write estimated appliance powers into ``net`` (scaling 1), for the current-state power flow."""
    for table in ("load", "sgen", "storage"):
        a = apps[apps.element_type == table]
        if not len(a) or table not in net or not len(net[table]):
            continue
        idx = a.element_id.to_numpy()
        keep = np.isin(idx, net[table].index)
        net[table].loc[idx[keep], "p_mw"] = a.p_mw.to_numpy()[keep]
        net[table].loc[idx[keep], "q_mvar"] = a.q_mvar.to_numpy()[keep]
        net[table].loc[idx[keep], "scaling"] = 1.0


def run_cycle(
    net,
    model: PgmModel,
    registry: pd.DataFrame,
    readings: pd.DataFrame,
    snapshot_ts: datetime,
    *,
    prev_switch_states: pd.Series | None = None,
    last_good: EstimationResult | pd.DataFrame | None = None,
    pseudo_injections: pd.DataFrame | None = None,
    config: CycleConfig | None = None,
    work_net=None,
) -> CycleResult:
    """Topology, estimation with bad-data detection, power flow and bottlenecks for one snapshot.

    ``net``/``model``: the network model in force (``model = to_pgm(net)``). ``work_net``: a copy of
    ``net`` the current-state power flow may overwrite (made here if not given). ``prev_switch_states``:
    the previous snapshot's switch states (default: the model's normal states)."""
    cfg = config or CycleConfig()
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    meas, switches = measurements_from_snapshot(registry, readings)
    prev = prev_switch_states if prev_switch_states is not None else net.switch.closed.astype(bool)
    prev = prev.reindex(net.switch.index).fillna(net.switch.closed.astype(bool)).astype(bool)
    closed, _ = normalize_switch_states(switches[switches.value.notna()], net, baseline=prev)
    events = events_frame(diff_topology(prev, switches[switches.value.notna()], net))
    missing_sw = int(len(net.switch) - switches.switch.nunique())
    timings["topology_s"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    bd = detect_bad_data(model, meas, switch_closed=closed, threshold=cfg.rn_threshold, alpha=cfg.alpha,
                         max_removals=cfg.max_removals, last_good=last_good, pseudo_injections=pseudo_injections)
    est = bd.estimate
    timings["estimation_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    pf_msg = ""
    pf: PowerFlowResult | None = None
    wnet = None
    if est.converged and len(est.appliances):
        wnet = work_net if work_net is not None else copy.deepcopy(net)
        _apply_injections(wnet, est.appliances)
        pf = run_powerflow(wnet, switch_closed=closed)
        if not pf.converged:
            pf_msg = f"current-state power flow failed: {pf.message}"
    if pf is not None and pf.converged:
        bn = bottlenecks(pf, wnet, cfg.loading_threshold, cfg.v_min, cfg.v_max, top_n=cfg.contributors)
    else:
        bn = bottlenecks(PowerFlowResult("estimate", est.converged, est.buses, est.branches, est.appliances,
                                         est.losses_mw, pd.DataFrame(), 0.0), net,
                         cfg.loading_threshold, cfg.v_min, cfg.v_max)
    timings["powerflow_bottlenecks_s"] = time.perf_counter() - t2

    sus = bd.suspects.copy()
    n_bad = int((sus.action == "removed").sum()) if len(sus) else 0
    chi = bd.chi2_final or {}
    en = est.buses[est.buses.energized] if len(est.buses) else est.buses
    summary = {
        "snapshot_ts": snapshot_ts,
        "converged": bool(est.converged),
        "fallback": est.fallback,
        "algorithm": est.algorithm,
        "observable": bool(est.observable),
        "J": _f(est.J), "dof": int(est.dof), "chi2_threshold": _f(chi.get("threshold")),
        "chi2_alarm_initial": bool((bd.chi2_initial or {}).get("alarm", False)),
        "max_abs_rn": _f(est.max_abs_rn),
        "n_measurements": int(len(est.measurements)), "n_pseudo": int(len(est.pseudo)),
        "n_dropped": int(len(est.dropped)), "n_bad_removed": n_bad, "n_suspects": int(len(sus)),
        "losses_mw": _f(est.losses_mw),
        "u_pu_min": _f(en.u_pu.min()) if len(en) else None, "u_pu_max": _f(en.u_pu.max()) if len(en) else None,
        "max_loading_percent": _f(est.branches.loading_percent.max()) if len(est.branches) else None,
        "n_bottlenecks": int(len(bn)), "n_topology_events": int(len(events)),
        "switches_missing": missing_sw, "estimations_run": int(bd.iterations),
        "estimation_seconds": round(timings["estimation_s"], 4),
        "message": "; ".join(x for x in (est.message, pf_msg) if x),
    }
    timings["cycle_s"] = time.perf_counter() - t0
    summary["cycle_seconds"] = round(timings["cycle_s"], 4)
    if len(bn):
        bn = bn.copy()
        bn["contributors"] = [json.dumps(c, default=_json_default) for c in bn.contributors]
    if len(events):
        events = events.copy()
        events["buses"] = [json.dumps([int(b) for b in bs]) for bs in events.buses]
    return CycleResult(snapshot_ts, summary, est.buses, est.branches, est.appliances, sus, bn, events, closed,
                       est.dropped, est, timings)


def _f(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    return str(o)
