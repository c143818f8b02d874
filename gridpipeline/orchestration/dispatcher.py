"""The rolling dispatch as a long-lived worker that reports to Dagster (``gridpipeline dispatch serve``,
started by ``gridpipeline dev``).

Why not a Dagster run: a re-plan must reach the batteries within a minute of a cloud front. A sensor
ticks at most every 5 s, a run takes 3-17 s to start, and runs that touch the main store queue behind
its single writer for minutes on a busy machine (``../shared/NOTES.md``). Like the 30-second loop, the
dispatcher is one process that keeps the network model, the fleet and the compiled LP in memory, and:

* every 5 minutes (``schedule``), and at once when the newest 30-second state shows the measured
  renewable output departing from its forecast (``departure``: a cloud front, a wind cut-out), plans
  the next 24 h at 5-minute steps (``storage.planner``) from what the utility has: the BMS readings
  (Modbus), the estimated state (the live store), the forecasts (the main store, read briefly and
  cached), the prices (the price source);
* passes the first step through the validation gate (AC power flow on the estimated state, base case
  and the ten worst N-1 cases, ``storage.gate``);
* records the plan, the gate's verdict and the curtailment in the decision ledger, with inputs,
  objective and breakdown, binding constraints with duals, and the alternatives (doing nothing, the
  rule);
* acts by mode (``decision_modes``, kind ``dispatch``, default ``automatic``): writes the gated
  setpoints and curtailment limits over Modbus and confirms each by reading it back (a
  ``setpoint_write`` record), or waits for an approval (``approve``; approvals come from the
  ``approve_decision`` job or ``gridpipeline decisions approve``, and are executed here after the
  gate passes them again on the state of that moment), or records only (``advisory``); a decision
  that expires unapproved falls back to holding the last approved setpoints while the gate still
  passes them, else idle;
* writes its tables to the live store (``ops.*``; short transactions) and reports materialisations
  of ``storage_state``, ``dispatch_plan``, ``curtailment_plan``, ``vpp_envelope`` and
  ``pending_decisions`` with their metadata and checks (``report_runless_asset_event``).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd

from gridpipeline.common import landing as lz
from gridpipeline.settings import Settings
from gridpipeline.store import connect, writer_lock

log = logging.getLogger(__name__)

HORIZON = timedelta(hours=24)
STEP = timedelta(minutes=5)
#: how often the forecasts and the network model are re-read from the main store
REFRESH = timedelta(minutes=1)
STORE_WAIT_S = 1.0
#: a departure of measured renewable output from its forecast that triggers a re-plan: this share of
#: the kind's installed capacity (a cloud front takes PV down 60 % in 10 minutes; a cut-out takes wind
#: to zero), once per kind until the output is back within half of it
DEPARTURE_SHARE = 0.25
#: at least this long between two out-of-cycle re-plans
REPLAN_GAP = timedelta(seconds=30)
GATE_CONTINGENCIES = 10
#: hours over which the measured-to-forecast ratio of renewable output fades back to the forecast
NOWCAST_HOURS = 2.0

OPS_DDL = """
CREATE SCHEMA IF NOT EXISTS ops;
CREATE TABLE IF NOT EXISTS ops.dispatch_plan (
    plan_id VARCHAR, planned_at TIMESTAMP, step_ts TIMESTAMP, step INTEGER, battery_id VARCHAR, p_mw DOUBLE,
    energy_mwh DOUBLE, soc_percent DOUBLE, vpp VARCHAR
);
CREATE TABLE IF NOT EXISTS ops.dispatch_substation (
    plan_id VARCHAR, planned_at TIMESTAMP, step_ts TIMESTAMP, step INTEGER, net_load_before_mw DOUBLE,
    net_load_after_mw DOUBLE, battery_mw DOUBLE, curtailed_mw DOUBLE, price_eur_mwh DOUBLE, price_label VARCHAR,
    demand_p50_mw DOUBLE
);
CREATE TABLE IF NOT EXISTS ops.curtailment_plan (
    plan_id VARCHAR, planned_at TIMESTAMP, step_start TIMESTAMP, generator_id VARCHAR, curtailed_mw DOUBLE,
    curtailed_mwh DOUBLE, reason VARCHAR, binding_element VARCHAR, dual DOUBLE
);
CREATE TABLE IF NOT EXISTS ops.storage_state (
    read_at TIMESTAMP, battery_id VARCHAR, available BOOLEAN, reason VARCHAR, soc_percent DOUBLE,
    energy_mwh DOUBLE, capacity_mwh DOUBLE, p_measured_mw DOUBLE, setpoint_mw DOUBLE, vpp VARCHAR
);
CREATE TABLE IF NOT EXISTS ops.vpp_envelope (
    plan_id VARCHAR, planned_at TIMESTAMP, vpp VARCHAR, step_ts TIMESTAMP, step INTEGER, p_min_mw DOUBLE,
    p_max_mw DOUBLE, e_min_mwh DOUBLE, e_max_mwh DOUBLE, e_planned_mwh DOUBLE, members INTEGER
);
"""


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


@dataclass
class DispatchStats:
    plans: int = 0
    replans: int = 0
    failed: int = 0
    writes: int = 0
    writes_failed: int = 0
    plan_seconds: list[float] = field(default_factory=list)
    #: (snapshot showing the departure, setpoints confirmed at the batteries), for bench replan
    replan_latency: list[tuple[datetime, datetime]] = field(default_factory=list)


class Dispatcher:
    """See the module docstring. ``client``: a ``sources.bms.BmsClient`` (default: the field's plan)."""

    def __init__(self, settings: Settings, instance=None, report: bool = True, client=None):
        from gridpipeline.ledger.store import Ledger
        from gridpipeline.sources.network import load_network_model
        from gridpipeline.storage.aggregate import FleetPlanner
        from gridpipeline.storage.planner import fleet_table, generator_table

        self.s = settings
        self.instance = instance
        self.report = report and instance is not None
        nm = load_network_model(settings.network)
        self.net, zones, self.network_version = nm.net, nm.zones, nm.sha256[:16]
        self.fleet = fleet_table(self.net)
        self.fleet["feeder"] = zones.reindex(self.fleet.bus).to_numpy()
        self.gens = generator_table(self.net)
        self.gens["zone"] = zones.reindex(self.gens.bus).to_numpy()
        tr = self.net.trafo
        rating = float(pd.to_numeric(tr.sn_mva[tr.vn_hv_kv >= 60], errors="coerce").sum()) if len(tr) else 1e4
        self.import_max = settings.import_limit_mw or rating or 1e4
        self.export_max = settings.export_limit_mw or rating or 1e4
        if client is None:
            from gridpipeline.common.field_map import INVERTER_OFFSET, endpoints
            from gridpipeline.sources.bms import BmsClient

            client = BmsClient(endpoints(self.fleet.battery_id, settings.field_host, settings.field_port),
                               timeout_s=1.0, stale_s=30.0,
                               inverters=endpoints(self.gens.sgen_id, settings.field_host, settings.field_port,
                                                   INVERTER_OFFSET))
        self.client = client
        self.planner = FleetPlanner()
        self.ledger = Ledger(settings.ledger)
        self.mode = settings.mode_for("dispatch", "automatic")
        self.forecasts: dict | None = None
        self.model_version: int | None = None
        self.refreshed_at: datetime | None = None
        self.last_plan_at: datetime | None = None
        self.last_window: datetime | None = None
        self.last_snapshot: datetime | None = None
        self.departed: dict[str, bool] = {}
        self.last_approved: dict | None = None  # {"battery": {id: MW}, "curtail": {id: pct}, "decision": id}
        self.executed: set[str] = set()
        self.stats = DispatchStats()
        self.stop = threading.Event()
        with connect(settings.live_db_path) as con:
            con.execute(OPS_DDL)

    # ------------------------------------------------------------------ inputs
    def refresh(self, now: datetime, force: bool = False) -> None:
        """Re-read the forecasts (newest issue at or before ``now``) from the main store, briefly."""
        if not force and self.refreshed_at is not None and now - self.refreshed_at < REFRESH:
            return
        import duckdb

        try:
            with writer_lock(self.s.db_path, timeout_s=STORE_WAIT_S), \
                    connect(self.s.db_path, read_only=True, timeout_s=STORE_WAIT_S) as con:
                self.forecasts = read_forecasts(con, now)
        except (TimeoutError, duckdb.IOException, duckdb.CatalogException) as exc:
            log.info("dispatcher: main store not readable now (%s); cached forecasts kept", type(exc).__name__)
            return
        self.refreshed_at = now

    def state(self) -> dict | None:
        """The newest estimated state in the live store: snapshot time, injections, switch states."""
        import duckdb

        try:
            with connect(self.s.live_db_path, read_only=True, timeout_s=5.0) as con:
                row = con.execute("SELECT max(snapshot_ts) FROM grid.state_summary WHERE converged").fetchone()
                if not row or row[0] is None:
                    return None
                ts = row[0]
                inj = con.execute("SELECT element_type, element_id, p_mw, q_mvar FROM grid.state_injection "
                                  "WHERE snapshot_ts = ?", [ts]).df()
                sw = con.execute("SELECT switch_id, closed FROM grid.switch_states WHERE snapshot_ts = ?", [ts]).df()
                n1 = con.execute(
                    "SELECT contingency FROM grid.contingencies WHERE snapshot_ts = (SELECT max(snapshot_ts) "
                    "FROM grid.contingencies) ORDER BY rank LIMIT ?", [GATE_CONTINGENCIES]).df()
        except (duckdb.IOException, duckdb.CatalogException, TimeoutError) as exc:
            log.info("dispatcher: live store not readable (%s)", type(exc).__name__)
            return None
        return {"ts": ts, "injections": inj, "switches": sw.set_index("switch_id").closed.astype(bool),
                "contingencies": [c for c in map(_parse_case, n1.contingency) if c] if len(n1) else []}

    def estimated_net(self, st: dict):
        """A copy of the network model with the estimated injections of snapshot ``st``."""
        import copy

        net = copy.deepcopy(self.net)
        inj = st["injections"]
        for table in ("load", "sgen", "storage"):
            part = inj[inj.element_type == table].set_index("element_id")
            if len(part) and table in net and len(net[table]):
                idx = net[table].index.intersection(part.index)
                net[table].loc[idx, "p_mw"] = part.p_mw.reindex(idx).to_numpy()
                net[table].loc[idx, "q_mvar"] = part.q_mvar.reindex(idx).to_numpy()
                if "scaling" in net[table]:
                    net[table].loc[idx, "scaling"] = 1.0
        sw = st["switches"]
        idx = net.switch.index.intersection(sw.index)
        net.switch.loc[idx, "closed"] = sw.reindex(idx).to_numpy()
        return net

    # ------------------------------------------------------------------ one plan
    def plan(self, now: datetime, trigger: str, departure_at: datetime | None = None) -> dict:
        """Plan, gate, record and act; returns a summary."""
        from gridpipeline.storage.gate import gate
        from gridpipeline.storage.planner import PlanInputs, plan_tables, solve_plan, units_now

        t0 = time.perf_counter()
        self.refresh(now)
        flags: list[str] = []
        start = pd.Timestamp(now).floor("5min").tz_localize("UTC")
        times = pd.date_range(start, periods=int(HORIZON / STEP), freq=STEP)
        read_at = utcnow()
        bms = self.client.read_fleet()
        invs = self.client.read_inverters() if getattr(self.client, "inverters", None) else pd.DataFrame()
        units = units_now(self.fleet, bms)
        st = self.state()
        demand, renew, ramps, fc_ref = forecast_frames(self.forecasts, times, st, self.net, flags)
        prices, price_ref = self._prices(now, times, flags)
        limits, gen_now, other_gen = None, None, 0.0
        est_net = None
        if st is not None:
            est_net = self.estimated_net(st)
            other_gen, gen_now = self._generation_now(st)
            limits = self._limits(est_net, units)
        else:
            flags.append("no estimated state: no grid limits, gate on the network model's nominal state")
        p = PlanInputs(times=times, units=units, generators=self.gens, demand=demand, renewables=renew, prices=prices,
                       other_generation_mw=other_gen, ramps=ramps, limits=limits, gen_now_mw=gen_now, flags=flags,
                       import_max_mw=self.import_max, export_max_mw=self.export_max)
        out = solve_plan(p, self.planner)
        t_solve = time.perf_counter() - t0
        first = pd.Series(out.power[0], index=self.fleet.storage_index.to_numpy())  # + discharge
        curt0 = pd.Series(out.curtail[0], index=self.gens.sgen_index.to_numpy()) if len(self.gens) else None
        verdict = gate(est_net if est_net is not None else self.net, first, curt0,
                       contingencies=(st or {}).get("contingencies", []) if est_net is not None else [],
                       loading_limit=self.s.loading_limit_percent, v_min=self.s.v_min_pu, v_max=self.s.v_max_pu)
        tables = plan_tables(p, out.power, out.energy, out.curtail, out.x)
        curt = out.curtailment(times)
        env = vpp_envelopes(units, out, times, bms)
        plan_id = None
        body = self._decision_body(now, trigger, p, out, verdict, fc_ref, price_ref, st, bms, curt, flags)
        from gridpipeline.ledger.store import approval_deadline

        if self.mode == "approve":
            body["expires_at"] = approval_deadline(utcnow(), timedelta(minutes=self.s.approval_timeout_min))
        rec = self.ledger.append("dispatch", body, mode=self.mode, actor="dispatcher")
        plan_id = rec.id
        if len(curt):
            self.ledger.append("curtailment", {"plan": plan_id, "summary": f"{curt.curtailed_mwh.sum():.3f} MWh curtailed "
                                               f"over the horizon by {curt.generator_id.nunique()} generators",
                                               "by_reason_mwh": curt.groupby("reason").curtailed_mwh.sum().round(4).to_dict(),
                                               "first_step_mw": {str(k): round(float(v), 5) for k, v in
                                                                 (curt0[curt0 > 1e-6].items() if curt0 is not None else [])}},
                               mode=self.mode, actor="dispatcher", ref=plan_id)
        setpoints = self._setpoints(out.power[0] * verdict.scale, out.curtail[0] * verdict.scale, units)
        sent = {}
        if self.mode == "automatic" and verdict.passed:
            sent = self.send(plan_id, setpoints)
            self.last_approved = {**setpoints, "decision": plan_id}
        self._write(plan_id, read_at, bms, units, tables, curt, env)
        seconds = time.perf_counter() - t0
        self.stats.plans += 1
        self.stats.plan_seconds.append(seconds)
        if trigger == "departure":
            self.stats.replans += 1
            if departure_at is not None and sent.get("confirmed_at"):
                self.stats.replan_latency.append((departure_at, sent["confirmed_at"]))
        summary = {"plan_id": plan_id, "trigger": trigger, "seconds": round(seconds, 3), "solve_seconds": round(t_solve, 3),
                   "gate": verdict.reason, "passed": verdict.passed, "scale": verdict.scale,
                   "sent": sent.get("confirmed", 0), "flags": flags}
        if self.report:
            self._report(now, plan_id, trigger, p, out, verdict, tables, curt, env, bms, sent, seconds, flags)
        self.last_plan_at = now
        return summary

    def _prices(self, now, times, flags):
        from gridpipeline.sources.prices import PricesUnavailable, SmardFolder, price_curve

        try:
            known, files = SmardFolder(self.s.prices).known(pd.Timestamp(now, tz="UTC"))
            curve = price_curve(known, times[0], times[-1] + STEP, pd.Timedelta(STEP))
            ref = {"files": files[-3:], "known_until": str(known.dropna().index.max()) if len(known.dropna()) else None}
        except PricesUnavailable as exc:
            flags.append(f"no prices ({exc}): planned on a flat price, the plan only serves the grid")
            curve = pd.DataFrame({"price": 0.0, "source": "missing"}, index=times)
            ref = {"files": [], "known_until": None}
        curve = curve.reindex(times).ffill().bfill()
        if curve.price.isna().any():
            flags.append("prices missing for some steps: filled flat")
            curve["price"], curve["source"] = curve.price.fillna(0.0), curve.source.fillna("missing")
        return curve.reset_index(drop=True), ref

    def _generation_now(self, st) -> tuple[float, np.ndarray]:
        inj = st["injections"]
        sg = inj[inj.element_type == "sgen"].set_index("element_id").p_mw
        gen_now = sg.reindex(self.gens.sgen_index).fillna(0.0).to_numpy()
        other = float(sg.drop(index=self.gens.sgen_index, errors="ignore").sum())
        return other, gen_now

    def _limits(self, est_net, units):
        from gridpipeline.grid.network import to_pgm
        from gridpipeline.storage.limits import limit_rows

        try:
            model = to_pgm(est_net)
            zone_of_load = pd.Series("all", index=est_net.load.index)
            rows = limit_rows(model, model.with_switch_states(None), est_net,
                              batteries=list(self.fleet.storage_index), generators=list(self.gens.sgen_index),
                              zone_of_load=zone_of_load, loading_limit=self.s.loading_limit_percent,
                              v_min=self.s.v_min_pu, v_max=self.s.v_max_pu)
            return rows.relevant(units.p_max_mw.to_numpy(float) * units.available.to_numpy(bool))
        except Exception:  # noqa: BLE001 - limits are linearised around a state; without them the gate still guards
            log.exception("dispatcher: grid limit rows failed; planning without them (the gate still checks)")
            return None

    def _setpoints(self, p0: np.ndarray, curt0: np.ndarray, units) -> dict:
        batt = {b: round(float(v), 6) for b, v, ok in zip(units.battery_id, p0, units.available) if ok}
        pct = {}
        for g, c, rating in zip(self.gens.sgen_id, curt0, self.gens.rating_mw):
            if c > 1e-6 and rating > 0:
                pct[g] = None  # computed from availability at send time
        return {"battery": batt, "curtail_mw": {g: float(c) for g, c in zip(self.gens.sgen_id, curt0) if c > 1e-6},
                "curtail": pct}

    # ------------------------------------------------------------------ acting
    def send(self, decision_id: str, setpoints: dict) -> dict:
        """Write every battery setpoint and curtailment limit over Modbus, confirm by read-back, record."""
        results, ok_n, bad = {}, 0, {}
        for b, mw in setpoints["battery"].items():
            ok, detail = self.client.write_setpoint(b, mw)
            results[b] = detail
            ok_n += ok
            if not ok:
                bad[b] = detail
        invs = None
        for g, mw in setpoints.get("curtail_mw", {}).items():
            if invs is None:
                invs = self.client.read_inverters().set_index("sgen_id") if self.client.inverters else pd.DataFrame()
            if g not in getattr(invs, "index", []):
                continue
            avail = float(invs.loc[g, "p_avail_mw"]) if invs.loc[g, "available"] else 0.0
            rating = float(invs.loc[g, "rating_mw"] or 0) or 1e-9
            pct = max(0.0, (avail - mw) / rating * 100)
            ok, detail = self.client.write_limit(g, pct)
            results[g] = detail
            ok_n += ok
            if not ok:
                bad[g] = detail
        # generators no longer curtailed get their limit lifted
        for g in self.gens.sgen_id:
            if g not in setpoints.get("curtail_mw", {}) and g in getattr(self, "_limited", set()):
                self.client.write_limit(g, None)
        self._limited = set(setpoints.get("curtail_mw", {}))
        confirmed_at = utcnow()
        self.stats.writes += ok_n
        self.stats.writes_failed += len(bad)
        self.ledger.append("setpoint_write", {
            "decision": decision_id, "confirmed": ok_n, "failed": bad,
            "summary": f"{ok_n} setpoints confirmed by read-back, {len(bad)} failed",
            "setpoints_mw": setpoints["battery"], "curtail_mw": setpoints.get("curtail_mw", {})},
            mode="automatic", actor="dispatcher", ref=decision_id)
        self.executed.add(decision_id)
        return {"confirmed": ok_n, "failed": len(bad), "confirmed_at": confirmed_at}

    def settle_approvals(self, now: datetime) -> None:
        """Execute approved dispatch decisions (after the gate passes them again), record expiries."""
        from gridpipeline.storage.gate import gate

        st_now = self.state()

        def fallback(rec: dict) -> dict:
            if self.last_approved is None:
                return {"fallback": "idle", "reason": "no approved setpoints to hold"}
            if st_now is not None:
                sp = pd.Series({i: self.last_approved["battery"].get(b, 0.0)
                                for i, b in zip(self.fleet.storage_index, self.fleet.battery_id)})
                v = gate(self.estimated_net(st_now), sp, loading_limit=self.s.loading_limit_percent,
                         v_min=self.s.v_min_pu, v_max=self.s.v_max_pu)
                if not v.passed or v.scale < 1.0:
                    self._idle()
                    return {"fallback": "idle", "reason": f"last approved setpoints fail the gate now: {v.reason}"}
            self.send(self.last_approved["decision"], self.last_approved)
            return {"fallback": "hold_last_approved", "decision_held": self.last_approved["decision"]}

        self.ledger.expire_due(now, fallback=fallback)
        status = self.ledger.status(now)
        todo = status[(status.kind == "dispatch") & (status.state == "approved") & ~status.id.isin(self.executed)]
        for did in todo.id:
            rec = self.ledger.get(did)
            sp = rec["body"].get("setpoints") or {}
            if st_now is not None:
                ser = pd.Series({i: sp.get("battery", {}).get(b, 0.0)
                                 for i, b in zip(self.fleet.storage_index, self.fleet.battery_id)})
                v = gate(self.estimated_net(st_now), ser, loading_limit=self.s.loading_limit_percent,
                         v_min=self.s.v_min_pu, v_max=self.s.v_max_pu)
                if not v.passed:
                    self.ledger.append("gate_verdict", {"decision": did, "summary": f"approved plan fails the gate "
                                                        f"now: {v.reason}", **v.record()}, actor="dispatcher", ref=did)
                    self.executed.add(did)
                    continue
                sp = {"battery": {b: mw * v.scale for b, mw in sp.get("battery", {}).items()},
                      "curtail_mw": {g: mw * v.scale for g, mw in sp.get("curtail_mw", {}).items()}}
            self.send(did, sp)
            self.last_approved = {**sp, "decision": did}

    def _idle(self) -> None:
        for b in self.fleet.battery_id:
            self.client.write_setpoint(b, 0.0)

    # ------------------------------------------------------------------ the record
    def _decision_body(self, now, trigger, p, out, verdict, fc_ref, price_ref, st, bms, curt, flags) -> dict:
        T = len(p.times)
        binding = sorted(out.result.binding, key=lambda b: -abs(b.get("dual", 0)))[:20]
        left_out = p.units.loc[~p.units.available, ["battery_id", "reason"]]
        sp = self._setpoints(out.power[0] * verdict.scale, out.curtail[0] * verdict.scale, p.units)
        return {
            "summary": f"{trigger} plan {p.times[0]:%H:%M}Z: fleet {out.power[0].sum():+.3f} MW now, "
                       f"{out.costs['plan_eur']:.0f} EUR vs {out.costs['do_nothing_eur']:.0f} doing nothing; "
                       f"gate {'passed' if verdict.passed else 'REJECTED'} at scale {verdict.scale:.2f}",
            "trigger": trigger, "horizon": {"start": str(p.times[0]), "steps": T, "step_minutes": 5},
            "inputs": {"forecast": fc_ref, "prices": price_ref,
                       "state_snapshot": str(st["ts"]) if st else None,
                       "network_version": self.network_version,
                       "bms_read": {"units": int(len(bms)), "available": int(p.units.available.sum()),
                                    "left_out": dict(zip(left_out.battery_id, left_out.reason))},
                       "price_labels": p.prices.source.value_counts().to_dict()},
            "decision": {"first_step_mw": sp["battery"], "curtail_first_step_mw": sp["curtail_mw"],
                         "fleet_mw_by_step": [round(float(v), 4) for v in out.power.sum(axis=1)[:36]]},
            "setpoints": sp,
            "objective": {"total_eur": out.costs["plan_eur"], "breakdown": out.costs["lp_breakdown"]},
            "binding_constraints": binding,
            "violations": out.result.violations[:20],
            "alternatives": {"do_nothing_eur": out.costs["do_nothing_eur"], "rule_based_eur": out.costs["rule_based_eur"]},
            "assumptions": out.info, "flags": flags,
            "gate": verdict.record(),
        }

    def _write(self, plan_id, read_at, bms, units, tables, curt, env) -> None:
        now = utcnow()
        ss = units[["battery_id", "available", "reason", "energy_mwh", "capacity_mwh", "vpp"]].copy()
        b = bms.set_index("battery_id") if len(bms) else pd.DataFrame()
        for col in ("soc_percent", "p_measured_mw", "setpoint_mw"):
            ss[col] = b[col].reindex(ss.battery_id).to_numpy() if col in b else np.nan
        ss.insert(0, "read_at", read_at)
        frames = {
            "storage_state": ss[["read_at", "battery_id", "available", "reason", "soc_percent", "energy_mwh",
                                 "capacity_mwh", "p_measured_mw", "setpoint_mw", "vpp"]],
            "dispatch_plan": tables["batteries"].assign(plan_id=plan_id, planned_at=now)[
                ["plan_id", "planned_at", "step_ts", "step", "battery_id", "p_mw", "energy_mwh", "soc_percent", "vpp"]],
            "dispatch_substation": tables["substation"].assign(plan_id=plan_id, planned_at=now)[
                ["plan_id", "planned_at", "step_ts", "step", "net_load_before_mw", "net_load_after_mw", "battery_mw",
                 "curtailed_mw", "price_eur_mwh", "price_label", "demand_p50_mw"]],
            "curtailment_plan": curt.assign(plan_id=plan_id, planned_at=now)[
                ["plan_id", "planned_at", "step_start", "generator_id", "curtailed_mw", "curtailed_mwh", "reason",
                 "binding_element", "dual"]],
            "vpp_envelope": env.assign(plan_id=plan_id, planned_at=now)[
                ["plan_id", "planned_at", "vpp", "step_ts", "step", "p_min_mw", "p_max_mw", "e_min_mwh", "e_max_mwh",
                 "e_planned_mwh", "members"]],
        }
        with connect(self.s.live_db_path, timeout_s=30.0) as con:
            con.execute("BEGIN TRANSACTION")
            try:
                for name, df in frames.items():
                    if len(df):
                        con.register("_df", df)
                        con.execute(f"INSERT INTO ops.{name} SELECT * FROM _df")
                        con.unregister("_df")
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise

    # ------------------------------------------------------------------ Dagster
    def _report(self, now, plan_id, trigger, p, out, verdict, tables, curt, env, bms, sent, seconds, flags) -> None:
        from dagster import AssetCheckEvaluation, AssetCheckSeverity, AssetMaterialization

        from gridpipeline.orchestration.sensors import partition_key
        from gridpipeline.storage.report import dispatch_metadata

        part = partition_key(lz.floor_window(now))
        metas = dispatch_metadata(p, out, verdict, tables, curt, env, bms, sent, seconds, flags, plan_id, trigger)
        for key, meta in metas.items():
            self.instance.report_runless_asset_event(AssetMaterialization(
                asset_key=key, partition=part, metadata={**meta, "source": "dispatcher"}))
        from gridpipeline.storage.report import dispatch_checks

        for asset, name, passed, desc, meta in dispatch_checks(out, verdict, self.ledger):
            self.instance.report_runless_asset_event(AssetCheckEvaluation(
                asset_key=asset, check_name=name, passed=passed,
                severity=AssetCheckSeverity.ERROR if name in ("gate_passed", "ledger_chain_intact")
                else AssetCheckSeverity.WARN, description=desc, metadata=meta))
        self.report_pending(now)

    def report_pending(self, now) -> None:
        if not self.report:
            return
        from dagster import AssetMaterialization

        from gridpipeline.storage.report import pending_metadata

        self.instance.report_runless_asset_event(AssetMaterialization(
            asset_key="pending_decisions", metadata={**pending_metadata(self.ledger, now), "source": "dispatcher"}))

    # ------------------------------------------------------------------ the loop
    def departure(self, now: datetime) -> datetime | None:
        """The snapshot time if the newest state shows a renewable kind departing from its forecast
        by more than ``DEPARTURE_SHARE`` of its capacity (first time per excursion), else None."""
        st = self.state()
        if st is None or st["ts"] == self.last_snapshot or self.forecasts is None:
            return None
        self.last_snapshot = st["ts"]
        inj = st["injections"]
        sg = inj[inj.element_type == "sgen"].set_index("element_id").p_mw
        hit = None
        for kind, fc in (self.forecasts.get("generation") or {}).items():
            on = self.gens.kind == kind
            cap = float(self.gens.rating_mw[on].sum())
            if cap <= 0 or fc is None or fc.empty:
                continue
            measured = float(sg.reindex(self.gens.sgen_index[on]).fillna(0).sum())
            t = pd.Timestamp(st["ts"]).floor("5min")
            row = fc[fc.valid_time == t]
            if row.empty:
                continue
            gap = (float(row.p50.iloc[0]) - measured) / cap
            was = self.departed.get(kind, False)
            if abs(gap) > DEPARTURE_SHARE and not was:
                self.departed[kind] = True
                hit = st["ts"]
                log.info("dispatcher: %s output %.2f MW departs from its forecast %.2f MW (%.0f %% of capacity)",
                         kind, measured, float(row.p50.iloc[0]), 100 * gap)
            elif abs(gap) < DEPARTURE_SHARE / 2:
                self.departed[kind] = False
        return hit

    def run(self, until: datetime | None = None, poll_s: float = 2.0, echo=print) -> DispatchStats:
        while not self.stop.is_set() and (until is None or utcnow() < until):
            now = utcnow()
            try:
                self.refresh(now)
                hit = self.departure(now)
                window = lz.floor_window(now)
                due = self.last_window is None or window > self.last_window
                if hit is not None and (self.last_plan_at is None or now - self.last_plan_at >= REPLAN_GAP):
                    s = self.plan(now, "departure", departure_at=hit)
                    echo(f"dispatcher: re-plan on a departure at {hit:%H:%M:%S}: {json.dumps(s, default=str)}")
                elif due:
                    s = self.plan(now, "schedule")
                    self.last_window = window
                    echo(f"dispatcher: {json.dumps(s, default=str)}")
                self.settle_approvals(now)
            except Exception:  # one failed plan must not stop the next one; it is logged and counted
                self.stats.failed += 1
                log.exception("dispatcher: cycle failed")
                self.last_window = lz.floor_window(now)
            self.stop.wait(poll_s)
        self.client.close()
        return self.stats

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop.set())


# ---------------------------------------------------------------------- helpers (pure)
def _parse_case(text: str) -> tuple[str, int] | None:
    """'line 12' / 'trafo:0' -> ('line', 12); N-2 or unreadable cases are skipped (None)."""
    t = str(text).replace(":", " ").split()
    if len(t) == 2 and t[1].isdigit():
        return (t[0], int(t[1]))
    return None


def read_forecasts(con, now: datetime) -> dict:
    """The newest demand (system) and generation (per kind) forecasts issued at or before ``now``
    (within a day), with their issue times and model versions, and the ramp events ahead."""
    import duckdb

    since = now - timedelta(days=1)
    out = {"demand": None, "generation": {}, "ramps": 0, "ref": {}}
    try:
        d = con.execute("""SELECT issue_time, valid_time, p10, p50, p90, model, model_version FROM forecast.demand
                           WHERE series = 'system' AND issue_time = (SELECT max(issue_time) FROM forecast.demand
                           WHERE issue_time <= ? AND issue_time > ?)""", [now, since]).df()
        if len(d):
            out["demand"] = d
            out["ref"]["demand"] = {"issue_time": str(d.issue_time.iloc[0]), "model": str(d.model.iloc[0]),
                                    "model_version": str(d.model_version.iloc[0])}
    except duckdb.CatalogException:
        pass
    try:
        g = con.execute("""SELECT issue_time, kind, valid_time, capacity_mw, p10, p50, p90, model FROM forecast.generation
                           WHERE issue_time = (SELECT max(issue_time) FROM forecast.generation
                           WHERE issue_time <= ? AND issue_time > ?)""", [now, since]).df()
        for kind, part in g.groupby("kind"):
            out["generation"][kind] = part.reset_index(drop=True)
        if len(g):
            out["ref"]["generation"] = {"issue_time": str(g.issue_time.iloc[0]), "model": str(g.model.iloc[0])}
            r = con.execute("""SELECT count(*) FROM forecast.ramps WHERE issue_time = ? AND start >= ?
                               AND start < ?""", [g.issue_time.iloc[0], now, now + HORIZON]).fetchone()
            out["ramps"] = int(r[0]) if r else 0
    except duckdb.CatalogException:
        pass
    return out


def forecast_frames(fc: dict | None, times: pd.DatetimeIndex, st: dict | None, net, flags: list[str]):
    """(demand, renewables per kind, ramps, reference) on the plan's steps. Missing forecasts are filled
    by persistence of the estimated state (flagged); missing steps of a forecast likewise."""
    naive = times.tz_convert("UTC").tz_localize(None)
    fc = fc or {}
    inj = st["injections"] if st else None
    d = fc.get("demand")
    if d is not None and len(d):
        dd = d.set_index("valid_time")[["p10", "p50", "p90"]].astype(float)
        dd = dd[~dd.index.duplicated()].reindex(naive)
        if dd.p50.isna().any():
            flags.append(f"demand forecast covers {int(dd.p50.notna().sum())} of {len(naive)} steps: the rest by persistence")
        demand = dd.ffill().bfill()
    else:
        demand = None
    if demand is None or demand.p50.isna().all():
        now_load = float(inj[inj.element_type == "load"].p_mw.sum()) if inj is not None else \
            float(pd.to_numeric(net.load.p_mw).sum())
        flags.append("no demand forecast: persistence of the estimated load, with a +-5 % band")
        demand = pd.DataFrame({"p50": now_load, "p10": 0.95 * now_load, "p90": 1.05 * now_load}, index=naive)
    renew = {}
    gens = fc.get("generation") or {}
    for kind in ("pv", "wind"):
        g = gens.get(kind)
        if g is not None and len(g):
            gg = g.set_index("valid_time")[["p10", "p50", "p90", "capacity_mw"]].astype(float)
            gg = gg[~gg.index.duplicated()].reindex(naive).ffill().bfill()
            renew[kind] = gg.reset_index(drop=True)
    # nowcast: the first hours follow what is measured now. The ratio of the estimated output to the
    # forecast for this step scales the forecast, fading back to the forecast over NOWCAST_HOURS (a
    # cloud front or a cut-out persists for a while; the forecast knows nothing of it yet)
    if inj is not None and renew:
        sg = inj[inj.element_type == "sgen"].set_index("element_id").p_mw
        types = net.sgen.type.astype(str)
        masks = {"pv": types.str.startswith(("PV", "lv_RES")), "wind": types.str.startswith("Wind")}
        for kind, g in renew.items():
            now_mw = float(sg.reindex(net.sgen.index[masks[kind]]).fillna(0).sum())
            f0 = float(g.p50.iloc[0])
            cap = float(g.capacity_mw.max()) if "capacity_mw" in g else 0.0
            if f0 > 0.02 * max(cap, 1e-9):
                ratio = min(max(now_mw / f0, 0.0), 2.0)
                fade = np.clip(1.0 - np.arange(len(g)) * (5 / 60) / NOWCAST_HOURS, 0.0, 1.0)
                k = 1.0 + (ratio - 1.0) * fade
                for q in ("p10", "p50", "p90"):
                    g[q] = g[q] * k
                if abs(ratio - 1.0) > 0.1:
                    flags.append(f"{kind}: measured {now_mw:.2f} MW against {f0:.2f} MW forecast now; "
                                 f"the next {NOWCAST_HOURS:g} h follow the measurement")
    if not gens:
        flags.append("no renewable forecast: persistence of the estimated output")
        if inj is not None and "curtailable" in net.sgen:
            sg = inj[inj.element_type == "sgen"].set_index("element_id").p_mw
            types = net.sgen.type.astype(str)
            for kind, m in (("pv", types.str.startswith(("PV", "lv_RES"))), ("wind", types.str.startswith("Wind"))):
                mw = float(sg.reindex(net.sgen.index[m]).fillna(0).sum())
                renew[kind] = pd.DataFrame({"p10": 0.7 * mw, "p50": mw, "p90": min(1.3 * mw, mw + 1),
                                            "capacity_mw": float(net.sgen.sn_mva[m].sum())}, index=range(len(naive)))
    return demand.reset_index(drop=True), renew, int(fc.get("ramps", 0)), fc.get("ref", {})


def vpp_envelopes(units: pd.DataFrame, out, times: pd.DatetimeIndex, bms: pd.DataFrame) -> pd.DataFrame:
    """Per VPP and step: the aggregate P range and energy bounds the members can give around the plan
    (each member's power limits, and its energy limits from its planned energy at that step)."""
    rows = []
    dt = out.x.dt_h
    naive = times.tz_convert("UTC").tz_localize(None)
    for vpp, idx in units.groupby("vpp").groups.items():
        if not vpp:
            continue
        j = np.asarray([units.index.get_loc(i) for i in idx])
        avail = units.available.to_numpy(bool)[j]
        e = out.energy[:-1, j]
        lo, hi = out.x.e_min[j], out.x.e_max[j]
        pmax = units.p_max_mw.to_numpy(float)[j] * avail
        eta_c, eta_d = units.eta_c.to_numpy(float)[j], units.eta_d.to_numpy(float)[j]
        p_dis = np.minimum(pmax[None, :], np.clip(e - lo[None, :], 0, None) * eta_d[None, :] / dt)
        p_ch = np.minimum(pmax[None, :], np.clip(hi[None, :] - e, 0, None) / (eta_c[None, :] * dt))
        for t in range(len(times)):
            rows.append({"vpp": vpp, "step_ts": naive[t], "step": t, "p_min_mw": -float(p_ch[t].sum()),
                         "p_max_mw": float(p_dis[t].sum()), "e_min_mwh": float(lo[avail].sum()),
                         "e_max_mwh": float(hi[avail].sum()), "e_planned_mwh": float(e[t][avail].sum()),
                         "members": int(avail.sum())})
    return pd.DataFrame(rows, columns=["vpp", "step_ts", "step", "p_min_mw", "p_max_mw", "e_min_mwh", "e_max_mwh",
                                       "e_planned_mwh", "members"])


__all__ = ["Dispatcher", "forecast_frames", "read_forecasts", "vpp_envelopes"]
