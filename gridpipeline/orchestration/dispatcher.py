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
* leaves out of its plans the members an operator's VPP setpoint holds (``vpp_command``), taking
  their power as given and sending their setpoints again with its own;
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
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from gridpipeline.common import landing as lz
from gridpipeline.settings import Settings
from gridpipeline.storage.cycle import OPS_DDL, PlanEngine, ops_frames, write_ops
from gridpipeline.storage.inputs import estimated_net, read_forecasts, state_at
from gridpipeline.store import connect, writer_lock

log = logging.getLogger(__name__)

#: how often the forecasts and the network model are re-read from the main store
REFRESH = timedelta(minutes=1)
STORE_WAIT_S = 1.0
#: after a busy store, wait this long before knocking again
RETRY = timedelta(seconds=15)
#: a departure of measured renewable output from its forecast that triggers a re-plan: this share of
#: the kind's installed capacity (a cloud front takes PV down 60 % in 10 minutes; a cut-out takes wind
#: to zero), once per kind until the output is back within half of it
DEPARTURE_SHARE = 0.25
#: a DR block sold on the day-ahead market is called this long before its contract's notice starts
SOLD_DR_LEAD = timedelta(minutes=20)
#: and looked for this often between plans (dr_tick), so a failing plan does not let a notice pass
SOLD_DR_CHECK = timedelta(minutes=1)
#: the drop from the recent high that is a departure without a forecast (a cloud front: -60 % in 10 min)
DROP_SHARE = 0.5
DROP_WINDOW = timedelta(minutes=10)
DROP_MIN_SHARE = 0.05
#: at least this long between two out-of-cycle re-plans. Departures come at most once per 30-second
#: snapshot and each test fires once per excursion (pv/wind x forecast/drop), so this only spaces a
#: burst; 30 s made the next snapshot's departure wait for the gap when the plan before it had started
#: a few seconds late (up to 30 s in the bench's quiet run of 2026-12-07)
REPLAN_GAP = timedelta(seconds=15)
GATE_CONTINGENCIES = 10
#: snapshots judged per look for a departure (2 minutes: a dispatcher busy planning catches up)
SNAPSHOTS_PER_LOOK = 4

def network_inputs(con, st: dict) -> dict:
    """The overloads of the snapshot ``st`` (grid.bottlenecks), the newest N-1 relief table at or before
    it (grid.contingency_relief, within 15 minutes) and the estimated load of each load."""
    import duckdb

    out = {"bottlenecks": None, "relief": None}
    try:
        out["bottlenecks"] = con.execute("SELECT * FROM grid.bottlenecks WHERE snapshot_ts = ?", [st["ts"]]).df()
        out["relief"] = con.execute(
            "SELECT * FROM grid.contingency_relief WHERE snapshot_ts = (SELECT max(snapshot_ts) FROM "
            "grid.contingency_relief WHERE snapshot_ts <= ? AND snapshot_ts > ?)",
            [st["ts"], st["ts"] - timedelta(minutes=15)]).df()
    except duckdb.CatalogException:  # no N-1 screening stored yet: no network rows from it
        log.debug("dispatcher: grid.bottlenecks or grid.contingency_relief not there yet")
    inj = st["injections"]
    out["load_p"] = inj[inj.element_type == "load"].set_index("element_id").p_mw
    return out


def _demand_shape(p50: np.ndarray) -> np.ndarray | None:
    """The responsive load per step relative to now, from the demand forecast's P50 (None when it has no
    positive first step: the tariff is then chosen against a constant load)."""
    p50 = np.asarray(p50, float)
    if not len(p50) or not np.isfinite(p50).all() or p50[0] <= 0:
        return None
    return np.clip(p50 / p50[0], 0.0, None)


def _import_margin(demand: pd.DataFrame, renewables: dict) -> np.ndarray | None:
    """MW the import may come out above its forecast per step: the demand's P90 less its P50 and the
    renewables' P50 less their P10 (None without the quantiles)."""
    try:
        m = (demand.p90 - demand.p50).to_numpy(float)
        for r in renewables.values():
            m = m + (r.p50 - r.p10).to_numpy(float)
    except (AttributeError, KeyError, ValueError):
        return None
    return np.clip(np.nan_to_num(m), 0.0, None)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


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

    def __init__(self, settings: Settings, instance=None, report: bool = True, client=None, vtn=None):
        from gridpipeline.ledger.store import Ledger
        from gridpipeline.sources.network import load_network_model

        self.s = settings
        self.instance = instance
        self.report = report and instance is not None
        nm = load_network_model(settings.network)
        self.net = nm.net
        self.zones = nm.zones
        self.engine = PlanEngine(nm.net, nm.zones, nm.sha256[:16], settings.prices,
                                 loading_limit=settings.loading_limit_percent, v_min=settings.v_min_pu,
                                 v_max=settings.v_max_pu, import_limit=settings.import_limit_mw,
                                 export_limit=settings.export_limit_mw)
        self.fleet, self.gens = self.engine.fleet, self.engine.gens
        if client is None:
            from gridpipeline.common.field_map import INVERTER_OFFSET, endpoints
            from gridpipeline.sources.bms import BmsClient

            client = BmsClient(endpoints(self.fleet.battery_id, settings.field_host, settings.field_port),
                               timeout_s=1.0, stale_s=30.0,
                               inverters=endpoints(self.gens.sgen_id, settings.field_host, settings.field_port,
                                                   INVERTER_OFFSET))
        self.client = client
        self.ledger = Ledger(settings.ledger)
        self.mode = settings.mode_for("dispatch", "automatic")
        self.forecasts: dict | None = None
        self.model_version: int | None = None
        self.refreshed_at: datetime | None = None
        self.tried_at: datetime | None = None
        self.store_busy = 0
        self.last_plan_at: datetime | None = None
        self.last_window: datetime | None = None
        self.last_snapshot: datetime | None = None
        self.departed: dict[str, bool] = {}
        #: a departure seen but not yet planned for (the last re-plan was under REPLAN_GAP ago):
        #: (its snapshot, what departed); it is planned for as soon as the gap has passed, never dropped
        self.pending: tuple[datetime, list[dict]] | None = None
        self.recent: dict[str, list] = {}
        #: per kind, the P50 MW the plan in force counts on, by step start (its forecast with the nowcast
        #: of the output measured when it was made): a drop is news only when it goes below this
        self.counted_on: dict[str, pd.Series] = {}
        self.last_approved: dict | None = None  # {"battery": {id: MW}, "curtail": {id: pct}, "decision": id}
        self.executed: set[str] = set()
        self.stats = DispatchStats()
        self.stop = threading.Event()
        #: the OpenADR VTN (orchestration.vtn.Vtn, started by the caller); None: no demand response
        self.vtn = vtn
        self.dr_events: dict[str, str] = {}  # event id -> the dr_event decision that called it
        self.tou_days: set = set()
        #: the price model's radial feeder (market.network.radial_feeder), built on first use
        self._feeder = None
        self.last_tariff = None  # the tariff in force per zone (the ramp limit starts from it)
        self._bid_planner = None  # the market bids' longer plan keeps its own model (another horizon)
        #: the HTTP price source's feed into the price folder (settings.price_url); None: files only
        self.price_feed = None
        if settings.price_url:
            from gridpipeline.sources.price_http import EntsoeApi, PriceFeed

            self.price_feed = PriceFeed(EntsoeApi(settings.price_url, token=settings.price_token or "",
                                                  zone=settings.price_zone, timeout_s=10.0, retries=2),
                                        settings.prices).start()
        with connect(settings.live_db_path) as con:
            con.execute(OPS_DDL)

    # ------------------------------------------------------------------ inputs
    def refresh(self, now: datetime, force: bool = False) -> None:
        """Re-read the forecasts (newest issue at or before ``now``) from the main store, briefly."""
        if not force and self.refreshed_at is not None and now - self.refreshed_at < REFRESH:
            return
        if not force and self.tried_at is not None and now - self.tried_at < RETRY:
            return  # the store was busy a moment ago: do not knock on its writer lock every poll
        self.tried_at = now
        import duckdb

        try:
            with writer_lock(self.s.db_path, timeout_s=STORE_WAIT_S), \
                    connect(self.s.db_path, read_only=True, timeout_s=STORE_WAIT_S) as con:
                self.forecasts = read_forecasts(con, now)
        except (TimeoutError, duckdb.IOException, duckdb.CatalogException) as exc:
            self.store_busy += 1
            (log.info if self.store_busy == 1 or self.store_busy % 20 == 0 else log.debug)(
                "dispatcher: main store not readable now (%s, %d times); cached forecasts kept", type(exc).__name__,
                self.store_busy)
            return
        self.refreshed_at = now

    def state(self) -> dict | None:
        """The newest estimated state in the live store: snapshot time, injections, switch states, and
        (``network``) the overloads at that snapshot and the newest N-1 relief table, for the shed
        schedule's network rows."""
        import duckdb

        try:
            with connect(self.s.live_db_path, read_only=True, timeout_s=5.0) as con:
                st = state_at(con, contingencies=GATE_CONTINGENCIES)
                if st is not None:
                    st["network"] = network_inputs(con, st)
                return st
        except (duckdb.IOException, TimeoutError) as exc:
            log.info("dispatcher: live store not readable (%s)", type(exc).__name__)
            return None

    def estimated_net(self, st: dict):
        return estimated_net(self.net, st)

    # ------------------------------------------------------------------ one plan
    def plan(self, now: datetime, trigger: str, departure_at: datetime | None = None,
             departures: list[dict] | None = None, economics: bool = True) -> dict:
        """Plan, gate, record and act; returns a summary. ``economics``: also price the plan (nodal
        prices, tariff, flexibility market) and take the day-ahead market step. The loop leaves them to
        the next scheduled plan (at most 5 minutes on) after a departure re-plan: they took 3 s, and up to
        two minutes under load, during which the next snapshot's departure waited behind them."""
        from gridpipeline.ledger.store import approval_deadline

        t0 = time.perf_counter()
        self._plan_started = time.monotonic()  # the DR notice counts the time the plan itself takes
        self.refresh(now)
        read_at = utcnow()
        bms = self.client.read_fleet()
        st = self.state()
        held = self.holds(now)
        limit = self.import_instruction(now)
        run = self.engine.run(now, trigger, bms, st, self.forecasts, held=held, import_limit=limit,
                              position=self.position(now))
        self.counted_on = {k: pd.Series(v.p50.to_numpy(float), index=run.p.times.tz_convert(None))
                           for k, v in (run.p.renewables or {}).items() if "p50" in v}
        body = run.body
        if self.price_feed is not None and self.price_feed.status["down_since"]:
            run.flags.append(f"price source down since {self.price_feed.status['down_since']}: the last known "
                             "prices serve, forecast beyond")
            body.setdefault("inputs", {})["price_feed"] = self.price_feed.status.get("last")
        if departure_at is not None:
            body["departure_snapshot"] = str(departure_at)
            body["departures"] = departures or []
        if self.mode == "approve":
            body["expires_at"] = approval_deadline(utcnow(), timedelta(minutes=self.s.approval_timeout_min))
        plan_id = self.ledger.append("dispatch", body, mode=self.mode, actor="dispatcher").id
        curt = run.curtailment
        if len(curt):
            first = curt[curt.step_start == curt.step_start.min()]
            self.ledger.append("curtailment", {
                "plan": plan_id, "summary": f"{curt.curtailed_mwh.sum():.3f} MWh curtailed over the horizon by "
                                            f"{curt.generator_id.nunique()} generators",
                "by_reason_mwh": curt.groupby("reason").curtailed_mwh.sum().round(4).to_dict(),
                "first_step": first[["generator_id", "curtailed_mw", "reason", "binding_element", "dual"]
                                    ].to_dict("records")}, mode=self.mode, actor="dispatcher", ref=plan_id)
        sent = {}
        if self.mode == "automatic" and run.verdict.passed:
            sent = self.send(plan_id, run.setpoints)
            self.last_approved = {**run.setpoints, "decision": plan_id}
        with connect(self.s.live_db_path, timeout_s=30.0) as con:
            write_ops(con, ops_frames(plan_id, utcnow(), read_at, run))
        try:  # sold DR blocks due are called before the shed schedule counts what is in force
            self.deliver_sold_dr(now)
        except Exception:
            log.exception("dispatcher: delivering sold DR blocks failed")
        shed = self.shed(now, run, plan_id, limit, None if st is None else st.get("network"))
        signal = None
        if economics:
            signal = self.price_signals(now, run, plan_id, st)
            self.market(now, bms, st)
        seconds = time.perf_counter() - t0
        self.stats.plans += 1
        self.stats.plan_seconds.append(seconds)
        if trigger == "departure":
            self.stats.replans += 1
            if departure_at is not None and sent.get("confirmed_at"):
                self.stats.replan_latency.append((departure_at, sent["confirmed_at"]))
        v = run.verdict
        summary = {"plan_id": plan_id, "trigger": trigger, "seconds": round(seconds, 3),
                   "plan_seconds": round(run.seconds, 3), "gate": v.reason, "passed": v.passed, "scale": v.scale,
                   "sent": sent.get("confirmed", 0), "flags": run.flags,
                   "shed": None if shed is None else {"decision": shed[0], "summary": shed[1]},
                   "price_signal": signal}
        self.last_plan_at = now
        if self.report:  # the plan is recorded and acted on already: a reporting failure is only logged
            try:
                self._report(now, plan_id, trigger, run, sent, seconds)
            except Exception:
                log.exception("dispatcher: reporting plan %s to Dagster failed", plan_id)
        return summary

    def holds(self, now: datetime) -> dict:
        """Members held by an operator's VPP setpoint now (``gridpipeline dispatch vpp-setpoint``)."""
        from gridpipeline.storage.vpp import active_holds, responder_holds

        try:
            # the critical-event responder's holds win over an operator's (a frequency event is on)
            return {**active_holds(self.ledger.records(kind="vpp_setpoint", since=now - timedelta(days=2)), now),
                    **responder_holds(self.ledger.records(kind="critical_response", since=now - timedelta(hours=2)),
                                      now)}
        except Exception:  # noqa: BLE001 - a ledger busy for longer than its lock wait: plan without holds
            log.exception("dispatcher: reading VPP holds from the ledger failed; planning without them")
            return {}

    def import_instruction(self, now: datetime) -> dict | None:
        """The import limit instruction in force or announced (``gridpipeline load import-limit``)."""
        from gridpipeline.storage.inputs import active_import_limit

        try:
            return active_import_limit(self.ledger.records(kind="import_limit", since=now - timedelta(days=7)), now)
        except Exception:  # noqa: BLE001 - a busy ledger: plan with the deployment's limit
            log.exception("dispatcher: reading import limit instructions from the ledger failed")
            return None

    # ------------------------------------------------------------------ load shedding
    def priorities(self):
        """The blocks and their priorities under the load policy, re-read when the policy or the
        customer registry changes; None (logged once per change) when the policy is rejected."""
        from gridpipeline.load.policy import PolicyError
        from gridpipeline.load.priorities import priorities_for

        key = tuple(p.stat().st_mtime if p.exists() else 0.0 for p in (self.s.load_policy, self.s.customers))
        if getattr(self, "_prio_key", None) != key:
            self._prio_key = key
            try:
                self._prio = priorities_for(self.net, self.s.customers, self.s.load_policy)
            except PolicyError as exc:
                log.error("dispatcher: load policy rejected, no shed schedules until it is fixed: %s", exc)
                self._prio = None
        return self._prio

    def shed(self, now: datetime, run, plan_id: str, limit: dict | None, network: dict | None = None
             ) -> tuple[str, str] | None:
        """When the plan leaves net load above the import limit, the shed schedule for it: solved,
        recorded in the ledger (kind ``shed``, referring to the plan), written to ``load.shed_*`` and
        reported as ``shed_schedule``. Returns (decision id, summary) or None. A failure here is
        logged and never stops the dispatch."""
        from gridpipeline.load.dr import ven_id
        from gridpipeline.load.schedule import from_plan, history_from_ledger, plan_deficit
        from gridpipeline.load.store import write_shed

        try:
            pr = self.priorities()
            if pr is None:
                return None
            history = history_from_ledger(self.ledger, now)
            lb = pr.blocks.load_block(self.net)
            block_of = {ven_id(c): lb.get(c.load_id) for c in pr.policy.contracts}

            def count_dr(ven_counts: dict[str, int], into: dict[int, int]) -> None:
                # a DR call is one of the contract's interruptions: the shed schedule's limits count it
                for v, n in ven_counts.items():
                    b = block_of.get(v)
                    if b is not None and not pd.isna(b):
                        into[int(b)] = into.get(int(b), 0) + int(n)

            drh = self.dr_history(now)
            count_dr(drh.today, history.today)
            count_dr(drh.month, history.month)

            def demand_response(d):
                left, called = self.call_dr(now, d, pr.policy, plan_id)
                new = {}
                for c in called:
                    new[c["ven_id"]] = new.get(c["ven_id"], 0) + 1
                count_dr(new, history.today)
                count_dr(new, history.month)
                return left, called

            # close-out first: events no longer needed end now, and stop counting as in force
            self.close_out_dr(now, plan_deficit(run.tables["substation"], run.p.import_max_mw), plan_id)
            dec = from_plan(pr, self.net, run.tables["substation"], run.p.renewables, run.p.import_max_mw,
                            history, mode=self.s.mode_for("shed", "approve"),
                            inputs={"plan": plan_id, "import_instruction": None if limit is None else
                                    {k: str(v) for k, v in limit.items()}},
                            demand_response=demand_response, network=network)
            if dec is None:
                return None
            body = {**dec.body, "commands": "the responder switches the blocks of each step over IEC 104 once the "
                                            "schedule is automatic or approved (shed_switching records)"}
            if dec.mode == "approve":
                from gridpipeline.ledger.store import approval_deadline

                body["expires_at"] = approval_deadline(utcnow(), timedelta(minutes=self.s.approval_timeout_min))
            rec = self.ledger.append("shed", body, mode=dec.mode, actor="dispatcher", ref=plan_id)
            with connect(self.s.live_db_path, timeout_s=30.0) as con:
                write_shed(con, rec.id, now, dec)
            if self.report:
                self._report_shed(now, rec.id, dec)
            return rec.id, dec.body["summary"]
        except Exception:
            log.exception("dispatcher: the shed schedule for plan %s failed", plan_id)
            return None

    # ------------------------------------------------------------------ price signals
    def price_signals(self, now: datetime, run, plan_id: str, st: dict | None) -> str | None:
        """Nodal prices over the plan's horizon and the tariff per zone (market.signals): recorded in the
        ledger (kind ``price_signal``, referring to the plan; advisory unless the decision modes say
        otherwise), written to ``market.*`` and reported as ``price_signals``. Returns the decision id,
        or None. A failure here is logged and never stops the dispatch."""
        from gridpipeline.market.network import radial_feeder
        from gridpipeline.market.signals import signals_for_plan
        from gridpipeline.market.store import signal_frames, write_signals
        from gridpipeline.market.tariff import TariffPolicy
        from gridpipeline.storage.planner import CURTAIL_VALUE

        try:
            if self._feeder is None:
                self._feeder = radial_feeder(self.net, v_min=self.s.v_min_pu, v_max=self.s.v_max_pu)
            feeder, bus_map, notes = self._feeder
            est = self.estimated_net(st) if st is not None else self.net
            zone = np.array([str(self.zones.get(b, "substation")) if b in self.zones.index else "substation"
                             for b in feeder.bus_ids])
            p = run.p
            policy = TariffPolicy()
            terms, source, by = self._response_terms(st)
            weight = None
            if by is not None:
                from gridpipeline.market.response import response_weight

                zs = sorted(set(zone))
                weight = dict(zip(zs, response_weight(by, zs, terms), strict=True))
            sig = signals_for_plan(
                feeder, bus_map, est, zone, p.demand.p50.to_numpy(float),
                {k: v.p50.to_numpy(float) for k, v in p.renewables.items()}, p.prices.price.to_numpy(float), policy,
                self.last_tariff, response_weight=weight, response_shape=_demand_shape(p.demand.p50.to_numpy(float)),
                import_margin=_import_margin(p.demand, p.renewables),
                import_scenarios=self._import_scenarios(now, p.times),
                battery_bus=self.engine.fleet.bus.to_numpy(),
                battery_mw=run.out.power, gen_bus=p.generators.bus.to_numpy(), curtailed_mw=run.out.curtail,
                curtail_value=CURTAIL_VALUE)
            times = p.times
            summary = sig.summary(feeder, times)
            mode = self.s.mode_for("price_signal", "automatic")
            text = (f"tariff for {len(sig.zones)} zones over {len(times)} steps: now "
                    f"{', '.join(f'{z} {v:.1f}' for z, v in zip(sig.zones, sig.tariff[0], strict=True))} EUR/MWh; "
                    f"nodal prices {summary['price_range_eur_mwh'][0]:.1f}-{summary['price_range_eur_mwh'][1]:.1f}, "
                    f"{summary['binding_count']} binding limits")
            body = {"summary": text, "plan": plan_id,
                    "inputs": {"plan": plan_id, "state_snapshot": str(st["ts"]) if st else None,
                               "network_version": self.engine.network_version, "price_labels":
                               p.prices.source.value_counts().to_dict(), "feeder_notes": notes},
                    "decision": {"zones": [str(z) for z in sig.zones],
                                 "tariff_first_hour": {str(z): [round(float(v), 2) for v in sig.tariff[:12, k]]
                                                       for k, z in enumerate(sig.zones)}},
                    "prices": summary, "policy": {"cap": policy.cap, "floor": policy.floor,
                                                  "max_change_per_hour": policy.max_change_per_hour,
                                                  "max_deviation": policy.max_deviation,
                                                  "peak_value_eur_mw": policy.peak_value_eur_mw},
                    "tariff_rule": ("chosen with the predicted response (market.tariff.choose_tariff: the energy it "
                                    "moves at the zones' prices plus the horizon's peak import)"
                                    if sig.choice is not None and sig.choice.summary["status"] == "optimal"
                                    else "the zones' prices within the policy's bounds"),
                    "alternatives": {"flat_energy_price_now": round(float(p.prices.price.iloc[0]), 2)},
                    "publishing": f"recorded only (mode {mode}): the aggregators keep the static time-of-use "
                                  "tariff; GRIDPIPELINE_DECISION_MODES=price_signal=automatic publishes"}
            body["response"] = self._predicted_response(sig, terms, source, by)
            if mode == "automatic":
                body["publishing"] = self._publish_tariff(now, times, sig)
            rec = self.ledger.append("price_signal", body, mode=mode, actor="dispatcher", ref=plan_id)
            self.last_tariff = sig.tariff[0]
            self.flex_market(now, sig, feeder, bus_map, times, rec.id)
            with connect(self.s.live_db_path, timeout_s=30.0) as con:
                write_signals(con, signal_frames(rec.id, plan_id, now, times, feeder, sig))
            if self.report:
                self._report_signals(now, rec.id, {**summary, "text": text}, times, sig)
            return rec.id
        except Exception:
            log.exception("dispatcher: the price signals for plan %s failed", plan_id)
            return None

    # ------------------------------------------------------------------ local flexibility market
    def flex_market(self, now: datetime, sig, feeder, bus_map, times, signal_id: str) -> str | None:
        """Congestion relief bought on the local flexibility market (market/flexmarket.py): for every line
        the nodal prices found binding and every whole hour ahead, the MW the plan's net load takes it over
        its rating, bought pay-as-bid from the DER owners' offers below the line (the platform's file drop,
        ``<home>/flex_offers``), once per line and hour. Ledger kind ``flex_award`` (mode ``flex_award``,
        advisory by default: the awards are recorded for the operator; automatic posts them to the owners,
        who deliver them, ``world.flexowners``),
        rows in ``market.flex_awards``, reported as ``flex_market``. A failure is logged and never stops
        the dispatch."""
        from gridpipeline.market.flexmarket import clear_needs, congestion_needs, offer_days, read_offers

        try:
            t = pd.DatetimeIndex(times)
            t = t.tz_convert("UTC").tz_localize(None) if t.tz is not None else t
            needs = congestion_needs(feeder, sig.net_load, sig.net_q, sig.dlmp.binding, t)
            if not len(needs):
                return None
            first = pd.Timestamp(now).floor("h") + pd.Timedelta(hours=1)
            done = getattr(self, "_flex_cleared", None)
            if done is None:  # what was bought before a restart is not bought again
                done = set()
                try:
                    with connect(self.s.live_db_path, read_only=True, timeout_s=5.0) as con:
                        got = con.execute("SELECT DISTINCT element, hour FROM market.flex_awards WHERE hour >= ?",
                                          [first.to_pydatetime()]).fetchall()
                    done = {(e, pd.Timestamp(h)) for e, h in got}
                except Exception:  # noqa: BLE001 - no table yet, or the store busy: nothing bought to skip
                    pass
            # from the next whole hour, once per line and hour, and only hours whose offers are posted
            posted = offer_days(self.s.flex_offers, needs.hour.unique())
            needs = needs[(needs.hour >= first) & needs.hour.dt.normalize().isin(posted)
                          & ~pd.Series(list(zip(needs.element, needs.hour)), index=needs.index).isin(done)]
            if not len(needs):
                return None
            offers, rejected = read_offers(self.s.flex_offers, needs.hour.unique())
            awards, per_need = clear_needs(needs, offers, feeder, bus_map)
            mode = self.s.mode_for("flex_award", "advisory")
            pay = float(awards.pay_eur.sum()) if len(awards) else 0.0
            short = float(per_need.shortfall_mw.max()) if len(per_need) else 0.0
            text = (f"local flexibility: {len(needs)} line-hours of congestion ({needs.need_mw.max():.3f} MW at most); "
                    f"{len(awards)} offers accepted for {pay:.2f} EUR, largest shortfall {short:.3f} MW; "
                    + ("sent" if mode == "automatic" else f"{mode}: recorded for the operator"))
            body = {"summary": text, "signal": signal_id,
                    "inputs": {"price_signal": signal_id, "offers": len(offers), "offer_days":
                               sorted({str(pd.Timestamp(h).date()) for h in needs.hour}),
                               "rejected_offers": rejected.astype(str).to_dict("records")[:50],
                               "network_version": self.engine.network_version},
                    "rule": "per line and hour, largest congestion dual first: the owners' offers below the line in "
                            "the relieving direction (up: less load or more output, for a line carrying load in; down: "
                            "less output, for one carrying export out), cheapest per MW of relief first, the last one "
                            "in part; each paid its own price (pay-as-bid); an offer serves once per hour",
                    "binding_constraints": per_need.astype({"hour": str}).to_dict("records"),
                    "decision": {"awards": awards.astype({"hour": str}).to_dict("records")},
                    "objective": {"pay_eur": round(pay, 2)},
                    "alternatives": {"no purchase": "the plan's congestion stays priced in the nodal prices' "
                                                    "congestion component; the gate scales back setpoints that "
                                                    "would overload the line"}}
            if mode == "automatic" and len(awards):  # the platform's answer to the owners
                body["activation"] = self._post_flex_awards(awards)
            rec = self.ledger.append("flex_award", body, mode=mode, actor="dispatcher", ref=signal_id)
            self._flex_cleared = done | set(zip(needs.element, needs.hour))
            rows = awards.assign(decision_id=rec.id, decided_at=now, status="awarded" if mode == "automatic" else mode)
            if len(rows):
                with connect(self.s.live_db_path, timeout_s=30.0) as con:
                    con.execute("CREATE SCHEMA IF NOT EXISTS market; CREATE TABLE IF NOT EXISTS market.flex_awards "
                                "(decision_id VARCHAR, decided_at TIMESTAMP, element VARCHAR, hour TIMESTAMP, "
                                "offer_id VARCHAR, owner VARCHAR, bus BIGINT, mw DOUBLE, relief_mw DOUBLE, price DOUBLE, "
                                "pay_eur DOUBLE, status VARCHAR)")
                    con.register("_fa", rows[["decision_id", "decided_at", "element", "hour", "offer_id", "owner", "bus",
                                              "mw", "relief_mw", "price", "pay_eur", "status"]])
                    con.execute("INSERT INTO market.flex_awards SELECT * FROM _fa")
            log.info("dispatcher: %s", text)
            self._report_market("flex_market", {"decision": rec.id, "summary": text, "mode": mode,
                                                "line_hours": len(needs), "accepted": len(awards),
                                                "pay_eur": round(pay, 2), "shortfall_mw": round(short, 4),
                                                "needs": per_need.astype({"hour": str}),
                                                "awards": awards.astype({"hour": str})})
            return rec.id
        except Exception:
            log.exception("dispatcher: the local flexibility market failed")
            return None

    def _post_flex_awards(self, awards: pd.DataFrame) -> str:
        """The accepted offers to the platform's drop (``awards/awards-<stamp>.csv``), where the owners read
        what to deliver; returns what was posted."""
        import uuid

        folder = self.s.flex_offers / "awards"
        folder.mkdir(parents=True, exist_ok=True)
        f = folder / f"awards-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}.csv"
        tmp = f.with_suffix(".tmp")
        awards[["offer_id", "owner", "hour", "mw", "price"]].to_csv(tmp, index=False)
        tmp.rename(f)
        return f"posted to the owners: {f.name}"

    # ------------------------------------------------------------------ day-ahead market
    def position(self, now: datetime):
        """The fleet's market position over the next 25 hours (``market.positions``), or None."""
        import duckdb

        from gridpipeline.market.store import read_position

        start = pd.Timestamp(now).floor("h").to_pydatetime()
        try:
            with connect(self.s.live_db_path, read_only=True, timeout_s=5.0) as con:
                pos = read_position(con, start, start + timedelta(hours=25))
        except (duckdb.IOException, TimeoutError):
            return None
        return pos if len(pos) else None

    def market(self, now: datetime, bms, st) -> None:
        """The day-ahead market (market/bids.py): the bids for the next delivery day whose gate is open,
        from a plan to the end of that day (ledger kind ``market_bid``; mode ``market_bid``, automatic by
        default: anything else records the bids without submitting them), and the awards of the days
        bid once their prices are published (``market_award``): the position the plans then follow.
        A failure is logged and never stops the dispatch."""
        try:
            self._bid(now, bms, st)
            self._award(now)
        except Exception:
            log.exception("dispatcher: the day-ahead market step failed")

    def _bid(self, now: datetime, bms, st) -> str | None:
        from gridpipeline.market.bids import (
            day_hours,
            gate_closure,
            hourly_bids,
            next_open_day,
            stored_energy_value,
            validate,
        )
        from gridpipeline.market.store import market_days, write_market
        from gridpipeline.storage.aggregate import FleetPlanner

        day = next_open_day(now)
        with connect(self.s.live_db_path, timeout_s=30.0) as con:
            if day.date() in market_days(con, "bids"):
                return None
        hours = day_hours(day)
        # hourly steps: the product is hourly, and 37 h at 5 minutes held the dispatcher for ~40 s a day
        start = pd.Timestamp(now).floor("h")
        horizon = pd.Timestamp(hours[-1]) + pd.Timedelta(hours=1) - start
        self._bid_planner = self._bid_planner or FleetPlanner()
        run = self.engine.run(now, "market_bids", bms, st, self.forecasts, horizon=horizon, planner=self._bid_planner,
                              step=timedelta(hours=1))
        out = run.out
        times = run.p.times.tz_convert("UTC").tz_localize(None)
        bids = hourly_bids(times, stored_energy_value(out.result), out.result.battery_power, out.agg_fleet.eta_c,
                           out.agg_fleet.eta_d, out.agg_x.degradation, list(out.agg_fleet.battery_ids), hours)
        try:
            dr, no_dr = self._dr_offers(now, day, hours, run)
        except Exception as exc:  # the batteries bid without DR rather than not at all
            log.exception("dispatcher: DR offers for %s failed; bidding without them", day.date())
            dr, no_dr = pd.DataFrame(), f"no DR offered: {type(exc).__name__}: {exc}"
        if len(dr):
            bids = pd.concat([bids, dr], ignore_index=True) if len(bids) else dr
        ok, rejected = validate(bids, hours)
        mode = self.s.mode_for("market_bid", "automatic")
        is_dr = ok.block.notna() if "block" in ok else pd.Series(False, index=ok.index)
        in_day = pd.DatetimeIndex(times).floor("h").isin(hours)
        labels = run.p.prices.source[in_day].value_counts().to_dict()
        text = (f"day-ahead bids for {day.date()}: {int(((ok.side == 'sell') & ~is_dr).sum())} offers "
                f"({ok.mw[(ok.side == 'sell') & ~is_dr].sum():.2f} MW-h), {int((ok.side == 'buy').sum())} bids "
                f"({ok.mw[ok.side == 'buy'].sum():.2f} MW-h), {ok.block[is_dr].nunique() if len(dr) else 0} "
                f"demand-response blocks ({ok.mw[is_dr].sum():.2f} MW-h), {len(rejected)} rejected; "
                + ("submitted" if mode == "automatic" else f"not submitted ({mode})"))
        body = {"summary": text, "delivery_day": str(day.date()), "gate_closure_utc": str(gate_closure(day)),
                "inputs": {"plan_steps": len(times), "plan_step": "1 h", "plan_seconds": round(run.seconds, 2),
                           "state_snapshot": str(st["ts"]) if st else None,
                           "prices_for_the_day": labels, "flags": run.flags[-6:],
                           "network_version": self.engine.network_version},
                "rule": "per cluster and hour: offer the planned discharge at v/eta_d + degradation, bid the planned "
                        "charge at v*eta_c - degradation, v the plan's value of stored energy (energy-balance dual); "
                        "per interruptible contract: block offers of the MW the plan counts on at its compensation, "
                        "no longer than its longest interruption, as many as it allows a day and has left in the "
                        "month, where the day's price curve is highest (market.bids.dr_blocks)",
                "demand_response": no_dr or {"blocks": int(ok.block[is_dr].nunique()) if len(dr) else 0,
                                             "price_curve": "the plan's hourly mean price (known, else forecast)"},
                "decision": {"bids": ok.astype({"hour": str}).to_dict("records")},
                "rejected": rejected.astype({"hour": str}).to_dict("records"),
                "objective": {k: round(v, 2) for k, v in out.result.breakdown.items()},
                "alternatives": {"no bids": "no position: the fleet trades against the grid's import at the "
                                            "day-ahead price, as before the market stage"}}
        rec = self.ledger.append("market_bid", body, mode=mode, actor="dispatcher")
        status = "accepted" if mode == "automatic" else f"not submitted ({mode})"
        rows = pd.concat([ok.assign(status=status, reason=None), rejected], ignore_index=True)
        if not len(rows):  # the day is bid all the same (nothing worth offering): once, on the record
            rows = pd.DataFrame([{"hour": hours[0], "cluster": None, "side": None, "mw": 0.0, "price": None,
                                  "value_eur_mwh": None, "status": "nothing to offer",
                                  "reason": "the plan schedules no battery power in the delivery day"}])
        if "block" not in rows:
            rows["block"] = None
        rows = rows.assign(delivery_day=day.date(), decision_id=rec.id, submitted_at=now)[
            ["delivery_day", "decision_id", "submitted_at", "hour", "cluster", "side", "mw", "price", "value_eur_mwh",
             "status", "reason", "block"]]
        with connect(self.s.live_db_path, timeout_s=30.0) as con:
            write_market(con, day.date(), "bids", rows)
        log.info("dispatcher: %s", text)
        self._report_market("market_bids", {
            "decision": rec.id, "summary": text, "delivery_day": str(day.date()), "mode": mode,
            "offers": int(((ok.side == "sell") & ~is_dr).sum()), "bids": int((ok.side == "buy").sum()), "rejected": len(rejected),
            "offered_mwh": round(float(ok.mw[(ok.side == "sell") & ~is_dr].sum()), 4),
            "bid_mwh": round(float(ok.mw[ok.side == "buy"].sum()), 4), "prices_for_the_day": labels,
            "dr_blocks": int(ok.block[is_dr].nunique()) if len(dr) else 0, "dr_offers_note": no_dr or "",
            "curve": rows[["hour", "cluster", "side", "mw", "price", "block", "status", "reason"]]
            .astype({"hour": str})})
        return rec.id

    def _dr_offers(self, now: datetime, day, hours: pd.DatetimeIndex, run) -> tuple[pd.DataFrame, str | None]:
        """The interruptible contracts' block offers for delivery ``day`` (market.bids.dr_blocks) on the
        bid plan's hourly price curve, or (empty, why none): DR is sold only where it can be delivered
        without anyone's approval (a VTN, DR mode automatic, a load policy)."""
        from gridpipeline.market.bids import dr_blocks

        none = pd.DataFrame(columns=["hour", "cluster", "side", "mw", "price", "value_eur_mwh", "block"])
        mode = self.s.mode_for("dr", "automatic")
        if self.vtn is None:
            return none, "no DR offered: no VTN to deliver it"
        if mode != "automatic":
            return none, f"no DR offered: DR mode {mode} (a sale needs a delivery no one has to approve)"
        pr = self.priorities()
        if pr is None:
            return none, "no DR offered: no load policy"
        times = run.p.times.tz_convert("UTC").tz_localize(None)
        price = pd.Series(run.p.prices.price.to_numpy(float), index=times).groupby(times.floor("h")).mean()
        per_month, per_day = self._dr_used(now)
        return dr_blocks(pr.policy.contracts, hours, price, pr.policy.demand_response["expected_delivery"],
                         used_per_day=per_day, used_per_month=per_month), None

    def _dr_used(self, now: datetime) -> tuple[dict, dict]:
        """Interruptions each contract has used or owes, ``({(VEN, month): n}, {(VEN, UTC date): n})`` by
        the month and UTC day they start in: the events called and not refused, and the blocks sold on
        the day-ahead market and not called yet (held as :meth:`_reserve_sold` holds them). Raises when
        the sold blocks cannot be read: an offer must not sell what is already owed."""
        hist = self.dr_history(now)
        self._reserve_sold(hist, now, strict=True)
        per_month: dict = {}
        per_day: dict = {}
        for e in hist.events:
            if e["opt"] in ("optOut", "no answer", "not sent"):
                continue
            start = pd.Timestamp(e["start"])
            start = start.tz_convert("UTC").tz_localize(None) if start.tzinfo is not None else start
            per_month[(e["ven_id"], start.to_period("M"))] = per_month.get((e["ven_id"], start.to_period("M")), 0) + 1
            per_day[(e["ven_id"], start.date())] = per_day.get((e["ven_id"], start.date()), 0) + 1
        return per_month, per_day

    def _sold_blocks_called(self, now: datetime) -> set[str]:
        """The sold DR blocks already acted on (a ``dr_event`` record naming the block, sent or not)."""
        return {r["body"]["block"] for r in self.ledger.records(kind="dr_event", since=now - timedelta(days=3))
                if r["body"].get("block")}

    def _reserve_sold(self, hist, now: datetime, strict: bool = False) -> None:
        """Hold the DR blocks sold and not called yet in ``hist`` (a ``load.dr.DrHistory``) as if called:
        one interruption each against their contract's day and month, and in force over their window,
        so a call for a deficit neither uses up what the market is owed nor overlaps it. A store that
        cannot be read is logged and skipped (a call for a deficit goes on; the delivery's own checks
        still hold), or raises with ``strict``."""
        from gridpipeline.market.store import read_sold_blocks

        try:
            with connect(self.s.live_db_path, read_only=True, timeout_s=10.0) as con:
                sold = read_sold_blocks(con, now)
        except Exception:
            if strict:
                raise
            log.exception("dispatcher: reading the sold DR blocks failed; not held back from this call")
            return
        called = self._sold_blocks_called(now) if len(sold) else set()
        day, month = pd.Timestamp(now).normalize(), pd.Timestamp(now).to_period("M")
        for b in sold.itertuples():
            if b.block in called:
                continue
            start = pd.Timestamp(b.start)
            if start.normalize() == day:
                hist.today[b.ven] = hist.today.get(b.ven, 0) + 1
            if start.to_period("M") == month:
                hist.month[b.ven] = hist.month.get(b.ven, 0) + 1
            hist.events.append({"event_id": f"sold:{b.block}", "ven_id": b.ven, "start": start.to_pydatetime(),
                                "end": pd.Timestamp(b.end).to_pydatetime(), "expected_mw": float(b.mw),
                                "opt": "pending", "decision_id": b.decision_id})

    def deliver_sold_dr(self, now: datetime, taken_at: float | None = None) -> list[str]:
        """Each DR block sold on the day-ahead market becomes a call to its contract's VEN over OpenADR once
        its start is within the contract's notice plus ``SOLD_DR_LEAD``: a ``dr_event`` record referring to
        the award (event id ``load.dr.SOLD_PREFIX``...), delivered whatever the grid's deficit and counted
        in force by the plans. A block that can no longer be called within its notice, or whose contract
        has an event in force or no interruption left today, is recorded as not delivered (its shortfall
        is settled as imbalance). ``taken_at``: the monotonic clock when ``now`` was read (default: the
        current plan's start), so the notice counts the time spent since. Returns the records made."""
        import uuid

        from gridpipeline.common.openadr import contract_ven
        from gridpipeline.load.dr import SOLD_PREFIX, DrCall
        from gridpipeline.market.store import read_sold_blocks

        if self.vtn is None:
            return []
        pr = self.priorities()
        if pr is None:
            return []
        with connect(self.s.live_db_path, read_only=True, timeout_s=10.0) as con:
            sold = read_sold_blocks(con, now)
        if not len(sold):
            return []
        called = self._sold_blocks_called(now)
        contracts = {contract_ven(c.load_id): c for c in pr.policy.contracts}
        hist = self.dr_history(now)
        # the notice counts from when the VEN can see the event: now plus the plan's time so far, a poll
        # and a margin (as call_dr)
        elapsed = time.monotonic() - (taken_at if taken_at is not None
                                      else getattr(self, "_plan_started", time.monotonic()))
        margin = timedelta(seconds=elapsed + self.vtn.poll_s + 10)
        out = []
        for b in sold.itertuples():
            c = contracts.get(b.ven)
            start, end = pd.Timestamp(b.start).to_pydatetime(), pd.Timestamp(b.end).to_pydatetime()
            call_by = start - timedelta(minutes=c.notice_min if c is not None else 0)
            if b.block in called or now < call_by - SOLD_DR_LEAD:
                continue
            why = None
            if c is None:
                why = "its contract is no longer in the load policy"
            elif now + margin > call_by:
                why = f"too late for its {c.notice_min:g}-min notice"
            elif any(e["ven_id"] == b.ven and e["opt"] in ("optIn", "pending") and e["end"] > start and e["start"] < end
                     for e in hist.events):
                why = "an event of this contract is in force over the block"
            elif start.date() == now.date() and hist.today.get(b.ven, 0) >= c.max_per_day:
                why = f"{c.max_per_day} interruptions today already (max_per_day)"
            elif (pd.Timestamp(start).to_period("M") == pd.Timestamp(now).to_period("M")
                  and hist.month.get(b.ven, 0) >= c.max_per_month):
                why = f"{c.max_per_month} interruptions this month already (max_per_month)"
            text = (f"day-ahead DR block {b.block}: {b.mw:.3f} MW sold {start:%H:%M}-{end:%H:%M} at a mean "
                    f"{b.clearing:.2f} EUR/MWh (offered at {b.price:.2f}, the compensation)")
            body = {"block": b.block, "award": b.decision_id, "reason": "sold on the day-ahead market",
                    "sold_mw": float(b.mw), "clearing_mean_eur_mwh": round(float(b.clearing), 2)}
            if why is None:
                call = DrCall(event_id=f"{SOLD_PREFIX}{uuid.uuid4()}", ven_id=b.ven, contract=c.name, load_id=c.load_id,
                              start=start, end=end, mw=c.interruptible_mw, expected_mw=round(float(b.mw), 6),
                              compensation_eur_mwh=c.compensation_eur_mwh, notice_min=c.notice_min)
                try:
                    sent = call.event_id in set(self.vtn.call([call]))
                except Exception as exc:  # recorded as not delivered; the imbalance settles it
                    log.exception("dispatcher: calling sold DR block %s failed", b.block)
                    sent, why = False, f"offering the event failed: {type(exc).__name__}: {exc}"
                if sent:
                    rec = self.ledger.append("dr_event", {**body, "summary": text + f": {c.name} called",
                                                          "calls": [call.record()], "sent": True},
                                             mode="automatic", actor="dispatcher", ref=b.decision_id)
                    self.dr_events[call.event_id] = rec.id
                    out.append(rec.id)
                    continue
            rec = self.ledger.append("dr_event", {**body, "summary": text + f": not delivered, {why}", "calls": [],
                                                  "sent": False, "not_delivered": why},
                                     mode="automatic", actor="dispatcher", ref=b.decision_id)
            log.warning("dispatcher: %s: not delivered, %s", text, why)
            out.append(rec.id)
        return out

    def _award(self, now: datetime) -> list[str]:
        """Clear every bid day without an award whose prices are published: a price-taker's award at the
        published price per hour (market.clearing), the position it makes, recorded and stored."""
        from gridpipeline.market.bids import awards, day_hours, dr_position, position
        from gridpipeline.market.settlement import cents, imbalance_prices
        from gridpipeline.market.store import market_days, write_market

        done = []
        with connect(self.s.live_db_path, timeout_s=30.0) as con:
            todo = sorted(market_days(con, "bids") - market_days(con, "awards"))
            bids = {d: con.execute("SELECT * FROM market.bids WHERE delivery_day = ?", [d]).df() for d in todo}
        known, _ = self.engine._smard.known(pd.Timestamp(now, tz="UTC"))
        known = known.copy()
        if pd.DatetimeIndex(known.index).tz is not None:
            known.index = pd.DatetimeIndex(known.index).tz_convert("UTC").tz_localize(None)
        for d in todo:
            hours = day_hours(d)
            price = known.reindex(hours)
            if price.isna().all():
                continue  # not published yet
            b = bids[d]
            sub = b[b.status == "accepted"]
            if "block" not in sub:
                sub = sub.assign(block=None)
            aw = awards(sub[["hour", "cluster", "side", "mw", "price", "block"]], price)
            pos, drp = position(aw, hours), dr_position(aw, hours)
            lo, hi = imbalance_prices(price.to_numpy(float))
            spread = hi - price.to_numpy(float)
            revenue = sum(cents(v) for v in ((pos + drp) * price).fillna(0.0))
            won_blocks = sorted(set(aw.block[aw.block.notna() & (aw.awarded_mw > 0)]))
            text = (f"day-ahead award for {d}: {aw.awarded_mw.gt(0).sum()} of {len(sub)} bids in the money, "
                    f"position {pos.clip(lower=0).sum():.2f} MWh sold, {(-pos.clip(upper=0)).sum():.2f} MWh bought, "
                    + (f"{drp.sum():.2f} MWh of demand response in {len(won_blocks)} blocks, " if won_blocks else "")
                    + f"{revenue / 100:.2f} EUR at the clearing prices")
            body = {"summary": text, "delivery_day": str(d), "bid_decision": str(b.decision_id.iloc[0]),
                    "inputs": {"clearing_prices": {str(h): round(float(v), 2) for h, v in price.items()}},
                    "rule": "price-taker: the auction clears at the published price whatever the portfolio bids "
                            "(market.clearing.award); an offer at or below it sells, a bid at or above it buys",
                    "decision": {"position_mw": {str(h): round(float(v), 4) for h, v in pos.items()},
                                 "dr_position_mw": {str(h): round(float(v), 4) for h, v in drp.items() if v},
                                 "dr_blocks_won": won_blocks, "revenue_cents": int(revenue)},
                    "block_rule": "a block order is awarded whole when the mean clearing price over its hours is at "
                                  "least its price (sell), else not at all (market.clearing.award_block); a won "
                                  "demand-response block is delivered by a DR call at its start",
                    "not_submitted": int((b.status != "accepted").sum()),
                    "position": "held" if len(sub) else "none: nothing was bid",
                    "imbalance_rule": "two-price: short pays price + spread, long is paid price - spread "
                                      "(market.settlement)"}
            rec = self.ledger.append("market_award", body, mode="automatic", actor="market",
                                     ref=str(b.decision_id.iloc[0]))
            awr = aw.assign(delivery_day=d, decision_id=rec.id, bid_decision=str(b.decision_id.iloc[0]), decided_at=now)[
                ["delivery_day", "decision_id", "bid_decision", "decided_at", "hour", "cluster", "side", "mw", "price",
                 "clearing_price", "awarded_mw", "position_mw", "block"]]
            prow = pd.DataFrame({"delivery_day": d, "decision_id": rec.id, "decided_at": now, "hour": hours,
                                 "position_mw": pos.to_numpy(float), "clearing_price": price.to_numpy(float),
                                 "spread_eur_mwh": spread, "dr_mw": drp.to_numpy(float)})
            if not len(sub):
                # nothing was bid: no position (the fleet trades against the import as before the market),
                # and the day is marked cleared
                awr = pd.DataFrame([{"delivery_day": d, "decision_id": rec.id,
                                     "bid_decision": str(b.decision_id.iloc[0]), "decided_at": now, "hour": hours[0], "cluster": None, "side": None, "mw": 0.0,
                                     "price": None, "clearing_price": None, "awarded_mw": 0.0, "position_mw": 0.0}])
                prow = prow.iloc[:0]
            with connect(self.s.live_db_path, timeout_s=30.0) as con:
                write_market(con, d, "awards", awr)
                write_market(con, d, "positions", prow)
            log.info("dispatcher: %s", text)
            self._report_market("market_awards", {
                "decision": rec.id, "summary": text, "delivery_day": str(d), "revenue_eur": revenue / 100,
                "sold_mwh": round(float(pos.clip(lower=0).sum()), 4),
                "bought_mwh": round(float(-pos.clip(upper=0).sum()), 4),
                "awards": awr[["hour", "cluster", "side", "mw", "price", "clearing_price", "awarded_mw"]]
                .astype({"hour": str})})
            done.append(rec.id)
        return done

    def _report_market(self, asset: str, meta: dict) -> None:
        """A runless materialisation of ``asset`` with ``meta`` (frames as markdown tables)."""
        if not self.report:
            return
        from dagster import AssetMaterialization, MetadataValue

        from gridpipeline.base.plots import md_table

        try:
            md = {k: MetadataValue.md(md_table(v, limit=60)) if isinstance(v, pd.DataFrame) else
                  MetadataValue.json(v) if isinstance(v, dict) else v for k, v in meta.items()}
            self.instance.report_runless_asset_event(AssetMaterialization(asset_key=asset, metadata=md))
        except Exception:
            log.exception("dispatcher: reporting %s failed", asset)

    def _import_scenarios(self, now: datetime, times) -> np.ndarray | None:
        """(S, T) the last four weeks' errors of the import against the plans' day-ahead figure, laid on
        ``times`` by time of day (market.tariff.error_scenarios), for the tariff's peak; None (the
        forecast's margin serves) with under a week of them. The errors are read once a day."""
        from gridpipeline.market.ledgerbook import read_import_errors
        from gridpipeline.market.tariff import error_scenarios

        day = pd.Timestamp(now).floor("D")
        if getattr(self, "_import_errors", (None,))[0] != day:
            try:
                with connect(self.s.live_db_path, read_only=True, timeout_s=5.0) as con:
                    errors = read_import_errors(con, (day - pd.Timedelta(days=30)).to_pydatetime(), day.to_pydatetime())
            except Exception:  # the store busy or new: retried at the next plan
                log.debug("dispatcher: import errors not readable; the margin serves", exc_info=True)
                return None
            self._import_errors = (day, errors)
        return error_scenarios(self._import_errors[1], times)

    def _response_terms(self, st) -> tuple[dict, str, pd.DataFrame | None]:
        """(terms, where the elasticities come from, MW per class and zone now) of the price-responsive
        customers: the load policy's classes, their elasticities as measured (``price_response``) where
        learnt; ``by`` None without classes or an estimated state."""
        from gridpipeline.market.response import class_zone_load

        pr = self.priorities()
        terms = (pr.policy.demand_response.get("price_responsive") or {}) if pr is not None else {}
        if not terms or st is None:
            return terms, "no price-responsive classes" if not terms else "no estimated state", None
        learned = self.s.home / "elasticities.json"  # market.assets.price_response, once measured
        source = "load policy"
        if learned.exists():
            try:
                got = json.loads(learned.read_text())
                terms = {c: {**t, "elasticity": float(got[c]["elasticity"])} if c in got else t
                         for c, t in terms.items()}
                source = f"measured ({', '.join(sorted(set(got) & set(terms)))}), else the load policy"
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("dispatcher: %s not readable (%s); the policy's elasticities serve", learned, exc)
        inj = st["injections"]
        load = inj[inj.element_type == "load"].set_index("element_id").p_mw
        zone_of = pd.Series({int(i): self.zones.get(b) for i, b in self.net.load.bus.items()})
        return terms, source, class_zone_load(pr.loads, load, zone_of)

    def _predicted_response(self, sig, terms: dict, source: str, by: pd.DataFrame | None) -> dict:
        """The responsive customers' predicted answer to the tariff (market.response), per zone: MW at
        the first step, and the largest shed and addition over the horizon."""
        from gridpipeline.market.response import predicted_response

        if by is None:
            return {"predicted": None, "why": source}
        r = predicted_response(sig.tariff, sig.zones, by, terms, shape=sig.response_shape)
        return {"model": "share x elasticity x class load x the demand forecast's shape x (tariff/mean - 1), the "
                         "mean weighted by that shape: energy kept over the horizon (market/response.py)",
                "terms": terms, "elasticities_from": source,
                "first_step_mw": {str(z): round(float(v), 4) for z, v in zip(sig.zones, r[0], strict=True)},
                "largest_shed_mw": round(float(-r.min(initial=0.0)), 4),
                "largest_add_mw": round(float(r.max(initial=0.0)), 4)}

    def _publish_tariff(self, now: datetime, times, sig) -> str:
        """The zones' tariff, hourly over the plan's horizon, to the price-responsive aggregators over
        OpenADR (one ELECTRICITY_PRICE event per aggregator and zone, its target group the zone), at
        most once an hour; it replaces the static time-of-use tariff from its first hour on."""
        from gridpipeline.common.openadr import aggregator_ven

        if self.vtn is None:
            return "no VTN: not published"
        hour = pd.Timestamp(now).floor("h")
        if getattr(self, "_tariff_hour", None) == hour:
            return f"published this hour already ({hour})"
        pr = self.priorities()
        classes = (pr.policy.demand_response.get("price_responsive") or {}) if pr is not None else {}
        vens = [aggregator_ven(c) for c in classes]
        if not vens:
            return "no price-responsive aggregators"
        t = pd.DatetimeIndex(times).tz_convert("UTC").tz_localize(None) if pd.DatetimeIndex(times).tz is not None \
            else pd.DatetimeIndex(times)
        hourly = pd.DataFrame(sig.tariff, index=t).groupby(t.floor("h")).mean()
        hourly = hourly[hourly.index >= hour + pd.Timedelta(hours=1)]  # from the next whole hour on
        ids = []
        for k, z in enumerate(sig.zones):
            intervals = [(h.to_pydatetime(), timedelta(hours=1), float(v)) for h, v in hourly[k].items()]
            if intervals:
                ids += self.vtn.publish_tou(hour.to_pydatetime(), intervals, vens, zone=str(z),
                                            event_id_for=lambda v, d, z=z: f"tariff-{v}-{z}-{d:%Y%m%d%H}")
        self._tariff_hour = hour
        return f"published to {len(vens)} aggregators for {len(sig.zones)} zones, {len(hourly)} hours: {len(ids)} events"

    def _report_signals(self, now: datetime, decision_id: str, summary: dict, times, sig) -> None:
        from dagster import AssetMaterialization

        from gridpipeline.market.report import signal_metadata
        from gridpipeline.orchestration.sensors import partition_key

        try:
            self.instance.report_runless_asset_event(AssetMaterialization(
                asset_key="price_signals", partition=partition_key(lz.floor_window(now)),
                metadata={**signal_metadata(decision_id, summary, times, sig), "source": "dispatcher"}))
        except Exception:
            log.exception("dispatcher: reporting price signals %s to Dagster failed", decision_id)

    # ------------------------------------------------------------------ demand response
    def dr_history(self, now: datetime):
        from gridpipeline.load.dr import history_from_records

        return history_from_records(self.ledger.records(kind="dr_event"), self.ledger.records(kind="dr_response"), now,
                                    self.ledger.records(kind="dr_end"))

    def close_out_dr(self, now: datetime, deficit: pd.Series, plan_id: str) -> list[str]:
        """Supply is back: the DR events in force whose remaining window the plan finds no deficit in
        (before DR) are ended at once over OpenADR (cancelled), recorded as one ``dr_end`` record, so
        customers are not held off for nothing and are paid only up to then. Returns the event ids."""
        from gridpipeline.load.dr import events_to_end

        if self.vtn is None:
            return []
        todo = events_to_end(self.dr_history(now), deficit, now)
        if not todo:
            return []
        ended, failed = [], []
        for e in todo:
            try:
                self.vtn.cancel(e["ven_id"], e["event_id"])
                ended.append(e)
            except Exception as exc:  # noqa: BLE001 - the event then runs to its end, and is paid so
                log.exception("dispatcher: cancelling DR event %s failed", e["event_id"])
                failed.append({"event_id": e["event_id"], "error": f"{type(exc).__name__}: {exc}"})
        if ended or failed:
            self.ledger.append("dr_end", {
                "summary": f"{len(ended)} DR events ended early: the plan finds no deficit left in their window",
                "event_ids": [e["event_id"] for e in ended], "ended_at": now.isoformat(timespec="seconds"),
                "events": [{k: str(v) for k, v in e.items()} for e in ended], "not_ended": failed,
                "deficit_mw": [round(float(v), 4) for v in deficit], "steps": [str(t) for t in deficit.index]},
                mode="automatic", actor="dispatcher", ref=plan_id)
        return [e["event_id"] for e in ended]

    def call_dr(self, now: datetime, deficit: pd.Series, policy, plan_id: str) -> tuple[np.ndarray, list]:
        """Demand response for ``deficit`` before any shed: the calls (load.dr.choose_calls) offered
        over OpenADR and recorded (kind ``dr_event``, referring to the plan). Returns (the deficit
        left for the shed schedule, the calls as records). Without a VTN, or in a mode other than
        automatic, nothing is sent and nothing is counted on (advisory calls are recorded)."""
        from gridpipeline.load.dr import choose_calls

        dr = policy.demand_response
        hist = self.dr_history(now)
        self._reserve_sold(hist, now)
        # the notice counts from when the VEN can see the event: now (not the cycle's start) plus a poll
        # of the VENs and a margin
        elapsed = time.monotonic() - getattr(self, "_plan_started", time.monotonic())
        seen = now + timedelta(seconds=elapsed + (self.vtn.poll_s if self.vtn is not None else 0) + 10)
        mode = self.s.mode_for("dr", "automatic")
        awaiting = self.vtn is not None and mode == "approve"
        if awaiting:  # the calls leave the operator the approval time before their notice starts
            seen += self.dr_approval_time()
        calls, left, skipped = choose_calls(deficit, policy, hist, seen, expected_delivery=dr["expected_delivery"])
        if not calls:
            return left.to_numpy(), []
        sent = self.vtn is not None and mode == "automatic"
        body = {"summary": f"{len(calls)} interruptible contracts called for up to {float(deficit.max()):.3f} MW; "
                           f"{sum(c.expected_mw for c in calls):.3f} MW expected"
                           + ("" if sent else " (not sent: " + ("no VTN" if self.vtn is None else f"mode {mode}") + ")"),
                "deficit_mw": [round(float(v), 4) for v in deficit],
                "deficit_after_dr_mw": [round(float(v), 4) for v in left],
                "steps": [str(t) for t in deficit.index],
                "calls": [c.record() for c in calls], "not_called": skipped,
                "in_force_before": [{k: str(v) for k, v in e.items()} for e in hist.events
                                    if e["opt"] in ("optIn", "pending") and e["end"] > now],
                "expected_delivery": dr["expected_delivery"],
                "order": "cheapest compensation first; only where the notice allows; the shed schedule covers the rest",
                "sent": sent}
        if awaiting:
            # sent once approved, while every call's notice still allows (``send_approved_dr``); until
            # then nothing is counted on, and the shed schedule covers the deficit
            body["summary"] = body["summary"].replace("(not sent: mode approve)", "(waiting for an operator's approval)")
            body["expires_at"] = min(c.start - timedelta(minutes=c.notice_min) for c in calls).isoformat()
        rec = self.ledger.append("dr_event", body, mode=mode if sent or mode != "automatic" else "advisory",
                                 actor="dispatcher", ref=plan_id)
        if not sent:
            return deficit.to_numpy(), []
        try:
            self.vtn.call(calls)
        except Exception as exc:  # the VTN is down: what was not offered is not counted on
            log.exception("dispatcher: offering DR events failed")
            offered = set(getattr(self.vtn, "_sent", {}))
            for c in calls:
                if c.event_id not in offered:
                    self.ledger.append("dr_response", {"event_id": c.event_id, "ven_id": c.ven_id, "decision": rec.id,
                                                       "opt": "not sent", "error": str(exc)},
                                       mode="advisory", actor="dispatcher", ref=rec.id)
            ok = [c for c in calls if c.event_id in offered]
            for c in ok:
                self.dr_events[c.event_id] = rec.id
            if not ok:
                return deficit.to_numpy(), []
            from gridpipeline.load.dr import DrHistory

            _, left, _ = choose_calls(deficit, policy, DrHistory(events=[
                {"event_id": c.event_id, "ven_id": c.ven_id, "start": c.start, "end": c.end,
                 "expected_mw": c.expected_mw, "opt": "pending"} for c in ok] + hist.events,
                today=hist.today, month=hist.month), seen, expected_delivery=dr["expected_delivery"])
            return left.to_numpy(), [{"decision": rec.id, **c.record()} for c in ok]
        for c in calls:
            self.dr_events[c.event_id] = rec.id
        return left.to_numpy(), [{"decision": rec.id, **c.record()} for c in calls]

    def dr_approval_time(self) -> timedelta:
        """How long an operator has to approve DR calls (``approve`` mode): the approval timeout,
        at most 15 minutes (a call further out would come too late for the deficit)."""
        return min(timedelta(minutes=self.s.approval_timeout_min), timedelta(minutes=15))

    def send_approved_dr(self, decision_id: str, now: datetime) -> dict:
        """Offer the calls of an approved ``dr_event`` decision whose notice still allows; record what
        was sent (a ``dr_event`` record, ``sent``, referring to the approved decision) and what came too
        late."""
        from gridpipeline.load.dr import DrCall

        rec = self.ledger.get(decision_id)
        margin = timedelta(seconds=(self.vtn.poll_s if self.vtn is not None else 0) + 10)
        calls = [DrCall(**{**c, "start": datetime.fromisoformat(str(c["start"])),
                           "end": datetime.fromisoformat(str(c["end"]))}) for c in rec["body"].get("calls", [])]
        ok = [c for c in calls if c.start - timedelta(minutes=c.notice_min) >= now + margin]
        late = [c.record() for c in calls if c not in ok]
        offered: list[str] = []
        error = None
        if ok and self.vtn is not None:
            try:
                offered = self.vtn.call(ok)
            except Exception as exc:  # noqa: BLE001 - what was not offered is recorded as not sent
                log.exception("dispatcher: offering approved DR events failed")
                offered, error = list(getattr(self.vtn, "_sent", {})), f"{type(exc).__name__}: {exc}"
        sent = [c for c in ok if c.event_id in set(offered)]
        body = {"summary": f"approved DR decision {decision_id}: {len(sent)} calls sent"
                           + (f", {len(late)} too late for their notice" if late else "")
                           + (f", {len(ok) - len(sent)} not offered ({error})" if len(sent) < len(ok) else ""),
                "approved_decision": decision_id, "calls": [c.record() for c in sent], "too_late": late,
                "sent": bool(sent)}
        out = self.ledger.append("dr_event", body, mode="automatic", actor="dispatcher", ref=decision_id)
        for c in sent:
            self.dr_events[c.event_id] = out.id
        self.executed.add(decision_id)
        return {"decision": out.id, "sent": len(sent), "too_late": len(late)}

    def dr_tick(self, now: datetime, taken_at: float | None = None) -> None:
        """Record the VENs' answers (and the ones that did not answer), call the sold DR blocks due, and
        publish the day's time-of-use tariff to the aggregators once per day (today's at start,
        tomorrow's from 12:00). ``taken_at``: the monotonic clock when ``now`` was read (default: now)."""
        if self.vtn is None:
            return
        from gridpipeline.load.dr import aggregator_ven, tou_intervals

        pr = self.priorities()
        if pr is None:
            return
        dr = pr.policy.demand_response
        self.vtn.prune(now)
        # sold DR blocks are called from here too, once a minute: a plan that keeps failing (it calls
        # them before its shed schedule) must not let a block's notice pass (called once: the ledger says)
        last = getattr(self, "_sold_dr_checked", None)
        if last is None or now - last >= SOLD_DR_CHECK:
            self._sold_dr_checked = now
            try:
                self.deliver_sold_dr(now, time.monotonic() if taken_at is None else taken_at)
            except Exception:
                log.exception("dispatcher: delivering sold DR blocks failed")
        for a in self.vtn.answers(now, timedelta(minutes=float(dr["answer_timeout_min"]))):
            ref = self.dr_events.get(a["event_id"])
            flag = a["opt"] == "no answer"
            self.ledger.append("dr_response", {
                "event_id": a["event_id"], "ven_id": a["ven_id"], "opt": a["opt"], "at": str(a["at"]),
                "decision": ref, "programme": "price" if str(a["event_id"]).startswith(("tou-", "tariff-")) else "event",
                **({"flag": "the VEN did not answer in time" + ("" if a.get("registered") else
                                                                 " (it has never registered)")} if flag else {})},
                mode="advisory", actor="vtn", ref=ref)
            if flag:
                log.warning("dispatcher: VEN %s did not answer event %s", a["ven_id"], a["event_id"])
        vens = [aggregator_ven(c) for c in (dr.get("price_responsive") or {})]
        days = [now.date()] + ([now.date() + timedelta(days=1)] if now.hour >= 12 else [])
        for d in days:
            if d in self.tou_days or not vens:
                continue
            tariff = tou_intervals(dr, datetime(d.year, d.month, d.day))
            ids = self.vtn.publish_tou(datetime(d.year, d.month, d.day), tariff, vens)
            self.tou_days.add(d)
            if ids:
                self.ledger.append("dr_price", {
                    "summary": f"time-of-use tariff for {d} sent to {len(vens)} aggregators",
                    "day": str(d), "vens": vens, "event_ids": ids,
                    "tariff_eur_mwh": [{"start": str(s), "hours": dd.total_seconds() / 3600, "eur_mwh": p}
                                       for s, dd, p in tariff],
                    "source": "static time-of-use tariff of the load policy (until nodal tariffs are published)"},
                    mode="automatic", actor="dispatcher")

    def _report_shed(self, now: datetime, decision_id: str, dec) -> None:
        from dagster import AssetMaterialization

        from gridpipeline.load.report import shed_metadata
        from gridpipeline.orchestration.sensors import partition_key

        try:
            self.instance.report_runless_asset_event(AssetMaterialization(
                asset_key="shed_schedule", partition=partition_key(lz.floor_window(now)),
                metadata={**shed_metadata(dec, decision_id), "source": "dispatcher"}))
        except Exception:
            log.exception("dispatcher: reporting shed schedule %s to Dagster failed", decision_id)

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
        # reactive power where a voltage binds (before curtailment), in % of each inverter's rating
        rating = dict(zip(self.gens.sgen_id, self.gens.rating_mw))
        for g, q in setpoints.get("reactive_mvar", {}).items():
            if g not in self.client.inverters or not rating.get(g):
                continue
            ok, detail = self.client.write_var(g, q / float(rating[g]) * 100.0)
            results[g + " var"] = detail
            ok_n += ok
            if not ok:
                bad[g + " var"] = detail
        for g in getattr(self, "_var_set", set()) - set(setpoints.get("reactive_mvar", {})):
            self.client.write_var(g, None)  # no longer asked: released
        self._var_set = set(setpoints.get("reactive_mvar", {}))
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
            "setpoints_mw": setpoints["battery"], "curtail_mw": setpoints.get("curtail_mw", {}),
            "reactive_mvar": setpoints.get("reactive_mvar", {})},
            mode="automatic", actor="dispatcher", ref=decision_id)
        self.executed.add(decision_id)
        return {"confirmed": ok_n, "failed": len(bad), "confirmed_at": confirmed_at}

    def settle_approvals(self, now: datetime) -> None:
        """Execute approved dispatch decisions (after the gate passes them again), record expiries."""

        st_now = self.state()

        def fallback(rec: dict) -> dict:
            if rec["kind"] == "dr_event":
                return {"fallback": "not called", "reason": "unapproved before the calls' notice; the shed schedule "
                                                            "covers the deficit"}
            if self.last_approved is None:
                return {"fallback": "idle", "reason": "no approved setpoints to hold"}
            if st_now is not None:
                v = self._regate(self.last_approved, st_now)
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
                v = self._regate(sp, st_now)
                if not v.passed:
                    self.ledger.append("gate_verdict", {"decision": did, "summary": f"approved plan fails the gate "
                                                        f"now: {v.reason}", **v.record()}, actor="dispatcher", ref=did)
                    self.executed.add(did)
                    continue
                sp = {"battery": {b: mw * v.scale for b, mw in sp.get("battery", {}).items()},
                      "curtail_mw": {g: mw * v.scale for g, mw in sp.get("curtail_mw", {}).items()},
                      "reactive_mvar": {g: q * v.scale for g, q in sp.get("reactive_mvar", {}).items()}}
            self.send(did, sp)
            self.last_approved = {**sp, "decision": did}
        for did in status[(status.kind == "dr_event") & (status.state == "approved") & ~status.id.isin(self.executed)].id:
            self.send_approved_dr(did, now)

    def _regate(self, sp: dict, st_now: dict):
        """The gate on the state now for setpoints decided earlier (an approval, a held fallback): the
        batteries, the curtailment and the reactive setpoints together, as they would be sent."""
        from gridpipeline.storage.gate import gate

        ser = pd.Series({i: sp.get("battery", {}).get(b, 0.0)
                         for i, b in zip(self.fleet.storage_index, self.fleet.battery_id)})
        by_id = dict(zip(self.gens.sgen_id, self.gens.sgen_index))
        curt = pd.Series({by_id[g]: mw for g, mw in sp.get("curtail_mw", {}).items() if g in by_id}, dtype=float)
        q = pd.Series({by_id[g]: mvar for g, mvar in sp.get("reactive_mvar", {}).items() if g in by_id}, dtype=float)
        return gate(self.estimated_net(st_now), ser, curt, loading_limit=self.s.loading_limit_percent,
                    v_min=self.s.v_min_pu, v_max=self.s.v_max_pu, reactive_mvar=q if len(q) else None)

    def _idle(self) -> None:
        """Every battery to 0 MW, every curtailment limit lifted and every reactive setpoint released: the
        units go back to their own behaviour, as with no plan at all."""
        for b in self.fleet.battery_id:
            self.client.write_setpoint(b, 0.0)
        for g in getattr(self, "_limited", set()):
            self.client.write_limit(g, None)
        for g in getattr(self, "_var_set", set()):
            self.client.write_var(g, None)
        self._limited, self._var_set = set(), set()

    # ------------------------------------------------------------------ the record
    # ------------------------------------------------------------------ Dagster
    def _report(self, now, plan_id, trigger, run, sent, seconds) -> None:
        from dagster import AssetCheckEvaluation, AssetCheckSeverity, AssetKey, AssetMaterialization

        from gridpipeline.orchestration.sensors import partition_key
        from gridpipeline.storage.report import dispatch_metadata

        part = partition_key(lz.floor_window(now))
        metas = dispatch_metadata(run, sent, seconds, plan_id, trigger)
        for key, meta in metas.items():
            self.instance.report_runless_asset_event(AssetMaterialization(
                asset_key=key, partition=part, metadata={**meta, "source": "dispatcher"}))
        from gridpipeline.storage.report import dispatch_checks

        for asset, name, passed, desc, meta in dispatch_checks(run.out, run.verdict, self.ledger):
            self.instance.report_runless_asset_event(AssetCheckEvaluation(
                # no partition: Dagster keeps one runless evaluation per (check, partition), and a window
                # holds its scheduled plan and any re-plans
                asset_key=AssetKey(asset), check_name=name, passed=passed,
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
    def generation_snapshots(self) -> list[tuple[datetime, pd.Series]]:
        """(snapshot time, estimated sgen MW by element) of every converged snapshot newer than the last
        one looked at, oldest first (only the newest after a start); [] when the store is busy."""
        import duckdb

        from gridpipeline.storage.inputs import generation_since

        try:
            with connect(self.s.live_db_path, read_only=True, timeout_s=5.0) as con:
                return generation_since(con, self.last_snapshot, limit=SNAPSHOTS_PER_LOOK)
        except (duckdb.IOException, TimeoutError) as exc:
            log.info("dispatcher: live store not readable (%s)", type(exc).__name__)
            return []

    def departure(self, now: datetime) -> tuple[datetime, list[dict]] | None:
        """(first snapshot that departed, what departed) over the snapshots committed since the last
        look, each in turn (two committed between two looks are both judged), else None."""
        found = None
        for ts, sg in self.generation_snapshots():
            self.last_snapshot = ts
            hit = self._departure_at(ts, sg)
            if hit:
                found = (ts, hit) if found is None else (found[0], found[1] + hit)
        return found

    def _departure_at(self, ts: datetime, sg: pd.Series) -> list[dict]:
        """What departs at snapshot ``ts`` (estimated sgen MW by element, each held within 0 and its
        rating, as no generator runs outside them): per kind and test, the measured MW, the
        forecast gap and the recent high. Two tests, each once per excursion and re-armed when it
        clears (the forecast gap back within half its threshold; the output back within half the drop
        of its recent high):

        * from its forecast: |forecast P50 - measured| above ``DEPARTURE_SHARE`` of the kind's capacity;
        * from its own recent past (no forecast needed; a front the forecast does not know): the
          measured output ``DROP_SHARE`` below its highest of the last ``DROP_WINDOW``, and by at least
          ``DROP_MIN_SHARE`` of capacity (a cloud front: -60 % in 10 minutes; a wind cut-out), and
          to ``DROP_MIN_SHARE`` of capacity under what the plan in force counts on (``counted_on``;
          the forecast's P50 before any plan; with neither, the drop alone)."""
        hit: list[dict] = []
        gens = (self.forecasts or {}).get("generation") or {}
        for kind in ("pv", "wind"):
            on = (self.gens.kind == kind).to_numpy()
            cap = float(self.gens.rating_mw[on].sum())
            if cap <= 0:
                continue
            # an estimate, not a meter: noise can put a still turbine below 0 MW (or a unit past its
            # rating), and a swing that no generator can make must not read as a front
            est = sg.reindex(self.gens.sgen_index[on]).fillna(0).to_numpy(dtype=float)
            measured = float(np.clip(est, 0.0, self.gens.rating_mw[on].to_numpy(dtype=float)).sum())
            hist = self.recent.setdefault(kind, [])
            hist.append((ts, measured))
            hist[:] = [(t, v) for t, v in hist if ts - t <= DROP_WINDOW]
            peak = max(v for _, v in hist)
            dropped = measured < (1 - DROP_SHARE) * peak and peak - measured > DROP_MIN_SHARE * cap
            gap, expected = 0.0, None
            step = pd.Timestamp(ts).floor("5min")
            fc = gens.get(kind)
            if fc is not None and len(fc):
                row = fc[fc.valid_time == step]
                if len(row):
                    expected = float(row.p50.iloc[0])
                    gap = (expected - measured) / cap
            plan = self.counted_on.get(kind)
            if plan is not None and step in plan.index:
                expected = float(plan[step])  # the plan's own figure: the forecast with its nowcast
            # a drop to no less than the plan counts on is no news to it: a spike of the estimate that
            # falls back (seen live at 02:45 at night: the LV PV estimated at 1-3 MW for a snapshot or
            # two, 0 before and after, and a drop re-plan each time) is not a front
            dropped = dropped and (expected is None or expected - measured > DROP_MIN_SHARE * cap)
            # each test re-arms on its own: a forecast that stays off (a biased afternoon forecast)
            # must not keep the drop test from seeing the next front
            fired = []
            for test, off, clear in (("forecast", abs(gap) > DEPARTURE_SHARE, abs(gap) < DEPARTURE_SHARE / 2),
                                     ("drop", dropped, measured >= (1 - DROP_SHARE / 2) * peak)):
                key = f"{kind} {test}"
                if off and not self.departed.get(key, False):
                    self.departed[key] = True
                    fired.append(test)
                elif not off and clear:
                    self.departed[key] = False
            if fired:
                hit += [{"kind": kind, "test": t, "measured_mw": round(measured, 4), "forecast_gap_share": round(gap, 4),
                         "high_10min_mw": round(peak, 4)} for t in fired]
                log.info("dispatcher: %s output %.3f MW departs (%s; forecast gap %.0f %% of capacity, %.0f %% below "
                         "its 10-minute high %.3f MW)", kind, measured, " and ".join(fired), 100 * gap,
                         100 * (1 - measured / max(peak, 1e-9)), peak)
        return hit

    def replan_due(self, now: datetime, hit: tuple[datetime, list[dict]] | None) -> tuple[datetime, list[dict]] | None:
        """The departure to re-plan for now, if any. A departure inside ``REPLAN_GAP`` of the last plan
        waits (a newer one joins it, keeping the first snapshot) and is planned for once the gap has
        passed: the test that fired does not fire again for the same excursion, so it is never dropped."""
        if hit is not None:
            self.pending = hit if self.pending is None else (self.pending[0], self.pending[1] + hit[1])
        if self.pending is None or (self.last_plan_at is not None and now - self.last_plan_at < REPLAN_GAP):
            return None
        out, self.pending = self.pending, None
        return out

    def run(self, until: datetime | None = None, poll_s: float = 2.0, echo=print) -> DispatchStats:
        while not self.stop.is_set() and (until is None or utcnow() < until):
            now, taken_at = utcnow(), time.monotonic()
            try:
                self.refresh(now)
                hit = self.replan_due(now, self.departure(now))
                window = lz.floor_window(now)
                due = self.last_window is None or window > self.last_window
                if hit is not None:
                    at, what = hit
                    s = self.plan(now, "departure", departure_at=at, departures=what, economics=False)
                    echo(f"dispatcher: re-plan on a departure at {at:%H:%M:%S}: {json.dumps(s, default=str)}")
                elif due:
                    s = self.plan(now, "schedule")
                    self.last_window = window
                    echo(f"dispatcher: {json.dumps(s, default=str)}")
                self.settle_approvals(now)
                self.dr_tick(now, taken_at)  # after a plan, `now` is its duration old: the DR notice counts it
            except Exception:  # one failed plan must not stop the next one; it is logged and counted
                self.stats.failed += 1
                log.exception("dispatcher: cycle failed")
                self.last_window = lz.floor_window(now)
            self.stop.wait(poll_s)
        self.client.close()
        if self.vtn is not None:
            self.vtn.stop()
        if self.price_feed is not None:
            self.price_feed.stop()
        return self.stats

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop.set())


__all__ = ["Dispatcher"]
