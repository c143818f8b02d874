"""One plan, the same whoever asks: the live dispatcher (acting) and the ``dispatch_plan`` asset's
backfills (recomputing, never acting). :class:`PlanEngine` keeps the network model, the fleet and the
compiled LP; :meth:`PlanEngine.run` takes what the utility knows at one instant (BMS readings, an
estimated state, forecasts, the price folder) and returns the plan, the gate's verdict, the tables
and the ledger body. Reading those inputs and acting on the result is the caller's business."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pandas as pd

from gridpipeline.storage.inputs import (
    HORIZON,
    STEP,
    estimated_net,
    forecast_frames,
    import_limit_steps,
    vpp_envelopes,
    without_planned_batteries,
)

log = logging.getLogger(__name__)

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
    curtailed_mwh DOUBLE, reason VARCHAR, binding_element VARCHAR, dual DOUBLE, "group" VARCHAR
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
OPS_TABLES = ("storage_state", "dispatch_plan", "dispatch_substation", "curtailment_plan", "vpp_envelope")


@dataclass
class PlanRun:
    """One plan with everything the record, the tables and the operator need."""

    p: object                      # planner.PlanInputs
    out: object                    # planner.PlanOutcome
    verdict: object                # gate.GateVerdict
    tables: dict
    curtailment: pd.DataFrame
    envelope: pd.DataFrame
    bms: pd.DataFrame
    setpoints: dict
    body: dict
    seconds: float
    flags: list = field(default_factory=list)


class PlanEngine:
    """The network model, the fleet, the generators and the compiled LP of one deployment."""

    def __init__(self, net, zones: pd.Series, network_version: str, prices_dir, *, loading_limit: float = 100.0,
                 v_min: float = 0.95, v_max: float = 1.05, import_limit: float | None = None,
                 export_limit: float | None = None):
        from gridpipeline.storage.aggregate import FleetPlanner
        from gridpipeline.storage.planner import fleet_table, generator_table

        self.net, self.network_version, self.prices_dir = net, network_version, prices_dir
        self.loading_limit, self.v_min, self.v_max = loading_limit, v_min, v_max
        self.fleet = fleet_table(net)
        self.fleet["feeder"] = zones.reindex(self.fleet.bus).to_numpy()
        self.gens = generator_table(net)
        self.gens["zone"] = zones.reindex(self.gens.bus).to_numpy()
        tr = net.trafo
        rating = float(pd.to_numeric(tr.sn_mva[tr.vn_hv_kv >= 60], errors="coerce").sum()) if len(tr) else 0.0
        self.import_max = import_limit or rating or 1e4
        self.export_max = export_limit or rating or 1e4
        self.planner = FleetPlanner()
        #: feeder -> (MW more injection, MW more consumption) its head can carry, from the last limit rows
        self.headroom: dict[str, tuple[float, float]] = {}

    def run(self, now: datetime, trigger: str, bms: pd.DataFrame, st: dict | None, forecasts: dict | None,
            held: dict | None = None, import_limit: dict | None = None, position: pd.DataFrame | None = None,
            horizon: pd.Timedelta | None = None, planner=None, step: timedelta | None = None) -> PlanRun:
        """One plan. ``held``: battery id -> (MW, decision id) of units an operator's VPP setpoint holds:
        they are left out of the plan (with the reason), their power is taken as given in the net load,
        and their setpoints are sent again with the plan's (the BMS watchdog would drop them).
        ``import_limit``: an import limit instruction in force or announced (``inputs.active_import_limit``):
        over its steps the plan keeps the lower of it and the deployment's limit. ``position``: the fleet's
        market position (``hour``, ``position_mw`` + sold, ``spread_eur_mwh``: what a deviation costs), read
        from the store; the plan follows it unless deviating pays more than the spread. ``horizon``,
        ``planner`` and ``step``: a longer plan on its own model (the market bids' hourly plan to the end of
        the delivery day, from the hour ``now`` is in)."""
        from gridpipeline.storage.gate import gate
        from gridpipeline.storage.planner import PlanInputs, plan_tables, solve_plan, units_now

        t0 = time.perf_counter()
        flags: list[str] = []
        step = step or STEP
        start = pd.Timestamp(now).floor(step).tz_localize("UTC")
        times = pd.date_range(start, periods=int((horizon or HORIZON) / step), freq=step)
        units = units_now(self.fleet, bms)
        held = {b: v for b, v in (held or {}).items() if b in set(units.battery_id)}
        if held:
            on = units.battery_id.isin(list(held))
            units.loc[on, "reason"] = [f"held by operator VPP setpoint {held[b][1]}" for b in units.battery_id[on]]
            units.loc[on, "available"] = False
            flags.append(f"{len(held)} units held by an operator's VPP setpoint: left out of the plan")
        demand, renew, ramps, fc_ref = forecast_frames(forecasts, times, st, self.net, flags)
        prices, price_ref = self._prices(now, times, flags)
        limits, other_gen, est_net, zone_delta = None, 0.0, None, None
        if st is not None:
            est_net = estimated_net(self.net, st)
            other_gen = self._other_generation(st)
            limits = self.limit_rows_for(est_net, units)
            # the rows' base follows the demand forecast's change from its first step (one zone: the
            # system); its change, not its level, so a forecast biased against the estimate moves nothing
            d50 = demand.p50.to_numpy(float)
            zone_delta = (d50 - d50[0])[:, None]
        else:
            flags.append("no estimated state: no grid limits, gate on the network model's nominal state")
        other_gen += sum(float(mw) for mw, _ in held.values())  # the held units' injection, as given
        import_max = import_limit_steps(times, self.import_max, import_limit)
        if import_limit is not None and (import_max < self.import_max).any():
            flags.append(f"import limited to {import_limit['mw']:g} MW on {int((import_max < self.import_max).sum())} "
                         f"steps by instruction {import_limit['id']}")
        p = PlanInputs(times=times, units=units, generators=self.gens, demand=demand, renewables=renew, prices=prices,
                       other_generation_mw=other_gen, ramps=ramps, limits=limits, flags=flags,
                       zone_delta_mw=zone_delta, import_max_mw=import_max, export_max_mw=self.export_max,
                       terminal_value=self._terminal_value(times))
        if position is not None and len(position):
            pos = position.assign(hour=pd.to_datetime(position.hour).dt.tz_localize(None)).set_index("hour")
            hours = times.tz_convert("UTC").tz_localize(None).floor("h")
            p.position_mw = pos.position_mw.reindex(hours).to_numpy(float)
            p.position_spread = pos.spread_eur_mwh.reindex(hours).to_numpy(float)
            if np.isfinite(p.position_mw).any():
                flags.append(f"market position on {int(np.isfinite(p.position_mw).sum())} steps: followed unless a "
                             "deviation pays more than its imbalance spread")
        out = solve_plan(p, planner or self.planner)
        first = pd.Series(out.power[0], index=self.fleet.storage_index.to_numpy())  # + discharge
        for b, (mw, _) in held.items():  # the gate sees the held units at their setpoints
            first.iloc[int(np.flatnonzero(self.fleet.battery_id.to_numpy() == b)[0])] = float(mw)
        curt0 = pd.Series(out.curtail[0], index=self.gens.sgen_index.to_numpy()) if len(self.gens) else None
        q0 = None
        if out.reactive is not None and len(self.gens) and np.abs(out.reactive[0]).max(initial=0) > 1e-4:
            q0 = pd.Series(out.reactive[0], index=self.gens.sgen_index.to_numpy())
            q0 = q0[q0.abs() > 1e-4]
        verdict = gate(est_net if est_net is not None else self.net, first, curt0,
                       contingencies=(st or {}).get("contingencies", []) if est_net is not None else [],
                       loading_limit=self.loading_limit, v_min=self.v_min, v_max=self.v_max, reactive_mvar=q0)
        tables = plan_tables(p, out.power, out.energy, out.curtail, out.x)
        curt = out.curtailment(times)
        env = vpp_envelopes(units, out, times, bms, self.headroom if st is not None else None)
        sp = self._setpoints(out.power[0] * verdict.scale, out.curtail[0] * verdict.scale, units)
        sp["battery"].update({b: round(float(mw), 6) for b, (mw, _) in held.items()})
        if out.reactive is not None and len(self.gens):
            sp["reactive_mvar"] = {g: round(float(q) * verdict.scale, 6) for g, q in
                                   zip(self.gens.sgen_id, out.reactive[0]) if abs(q) > 1e-4 and verdict.scale > 0}
        body = self._decision_body(now, trigger, p, out, verdict, fc_ref, price_ref, st, bms, curt, flags)
        body["setpoints"], body["decision"]["first_step_mw"] = sp, sp["battery"]  # with the held units'
        body["vpp"] = {"feeder_headroom_mw": {f: {"injection": u, "consumption": d} for f, (u, d) in self.headroom.items()}
                       if st is not None else {},
                       "feeder_capped": sorted({f for c in env.get("feeder_capped", pd.Series(dtype=str)) for f in
                                                str(c).split()}),
                       "held": {b: {"mw": mw, "decision": did} for b, (mw, did) in held.items()}}
        return PlanRun(p, out, verdict, tables, curt, env, bms, sp, body, time.perf_counter() - t0, flags)

    def _prices(self, now, times, flags):
        from gridpipeline.sources.prices import PricesUnavailable, SmardFolder, price_curve

        try:
            if getattr(self, "_smard", None) is None:
                self._smard = SmardFolder(self.prices_dir)  # parses each day file once
            known, notes = self._smard.known(pd.Timestamp(now, tz="UTC"))
            self._known = known
            if getattr(self, "_price_model", None) is None:
                from gridpipeline.forecast.prices import PriceForecaster

                self._price_model = PriceForecaster()  # re-calibrated once a day, when a day is published
            step = times[1] - times[0] if len(times) > 1 else pd.Timedelta(STEP)
            curve = price_curve(known, times[0], times[-1] + step, pd.Timedelta(step), self._price_model)
            ref = {"price_notes": notes[-3:], "known_until": str(known.dropna().index.max()) if len(known.dropna()) else None}
        except PricesUnavailable as exc:
            self._known = None
            flags.append(f"no prices ({exc}): planned on a flat price, the plan only serves the grid")
            curve = pd.DataFrame({"price": 0.0, "source": "missing"}, index=times)
            ref = {"price_notes": [], "known_until": None}
        curve = curve.reindex(times).ffill().bfill()
        if curve.price.isna().any():
            flags.append("prices missing for some steps: filled flat")
            curve["price"], curve["source"] = curve.price.fillna(0.0), curve.source.fillna("missing")
        return curve.reset_index(drop=True), ref

    def _terminal_value(self, times: pd.DatetimeIndex) -> float | None:
        """The value of a MWh left in the fleet at the plan's end, learnt from the published prices
        (storage.value); None (the planner takes the horizon's median) without two days of them."""
        from gridpipeline.storage.value import TerminalValues

        known = getattr(self, "_known", None)
        if known is None or not len(self.fleet):
            return None
        if getattr(self, "_tv", None) is None:
            self._tv = TerminalValues(self.fleet)
        step = times[1] - times[0] if len(times) > 1 else pd.Timedelta(STEP)
        try:
            return self._tv.at(known, times[-1] + step)
        except Exception:  # the hindsight LP failed: the median stands in, logged
            log.exception("dispatch: the learnt terminal value failed; the horizon's median stands in")
            return None

    def _other_generation(self, st) -> float:
        """MW the generators the plan does not curtail make in the estimated state."""
        inj = st["injections"]
        sg = inj[inj.element_type == "sgen"].set_index("element_id").p_mw
        return float(sg.drop(index=self.gens.sgen_index, errors="ignore").sum())

    def limit_rows_for(self, est_net, units):
        """The limit rows around ``est_net`` that the fleet can bind (None when they fail); refreshes
        :attr:`headroom` (per feeder head) from all of them on the way.

        The rows' base is the state without the power of the batteries the plan decides (``units`` that
        are available): the LP adds their power to it, so the power they have now must not be in it too.
        Units left out of the plan (held by an operator, not answering) keep their estimated injection."""
        from gridpipeline.grid.network import to_pgm
        from gridpipeline.storage.limits import limit_rows

        try:
            est_net = without_planned_batteries(est_net, self.fleet.storage_index.to_numpy()[
                units.available.to_numpy(bool)])
            model = to_pgm(est_net)
            zone_of_load = pd.Series("all", index=est_net.load.index)
            rows = limit_rows(model, model.with_switch_states(None), est_net,
                              batteries=list(self.fleet.storage_index), generators=list(self.gens.sgen_index),
                              zone_of_load=zone_of_load, loading_limit=self.loading_limit,
                              v_min=self.v_min, v_max=self.v_max)
            from gridpipeline.storage.limits import feeder_headroom, feeder_heads

            self.headroom = feeder_headroom(rows, self.fleet.feeder.to_numpy(), feeder_heads(est_net))
            return rows.relevant(units.p_max_mw.to_numpy(float) * units.available.to_numpy(bool))
        except Exception:
            log.exception("plan: grid limit rows failed; planning without them (the gate still checks)")
            return None

    def _setpoints(self, p0: np.ndarray, curt0: np.ndarray, units) -> dict:
        batt = {b: round(float(v), 6) for b, v, ok in zip(units.battery_id, p0, units.available) if ok}
        pct = {}
        for g, c, rating in zip(self.gens.sgen_id, curt0, self.gens.rating_mw):
            if c > 1e-6 and rating > 0:
                pct[g] = None  # computed from availability at send time
        return {"battery": batt, "curtail_mw": {g: float(c) for g, c in zip(self.gens.sgen_id, curt0) if c > 1e-6},
                "curtail": pct}

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
                       "bms_read": {"units": len(bms), "available": int(p.units.available.sum()),
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



def ops_frames(plan_id: str, planned_at: datetime, read_at: datetime, run: PlanRun) -> dict[str, pd.DataFrame]:
    """The plan's rows for the ``ops.*`` tables."""
    bms, units, tables, curt, env, now = run.bms, run.p.units, run.tables, run.curtailment, run.envelope, planned_at
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
             "binding_element", "dual", "group"]],
        "vpp_envelope": env.assign(plan_id=plan_id, planned_at=now)[
            ["plan_id", "planned_at", "vpp", "step_ts", "step", "p_min_mw", "p_max_mw", "e_min_mwh", "e_max_mwh",
             "e_planned_mwh", "members"]],
    }
    return frames


def write_ops(con: duckdb.DuckDBPyConnection, frames: dict[str, pd.DataFrame], replace_where: tuple[str, list] | None = None
              ) -> None:
    """Insert the frames into ``ops.*`` in one transaction; ``replace_where`` (SQL condition on
    ``planned_at``/``read_at``, params) deletes the rows they replace first (a re-run partition)."""
    from gridpipeline.store.writers import replace_rows

    con.execute(OPS_DDL)
    deletes = []
    if replace_where is not None:
        col = {name: "read_at" if name == "storage_state" else "planned_at" for name in frames}
        deletes = [(f"DELETE FROM ops.{name} WHERE {col[name]} {replace_where[0]}", replace_where[1]) for name in frames]
    replace_rows(con, deletes, [(f"ops.{name}", df) for name, df in frames.items()])


__all__ = ["OPS_DDL", "OPS_TABLES", "PlanEngine", "PlanRun", "ops_frames", "write_ops"]
