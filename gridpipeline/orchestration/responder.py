"""The critical-event responder: a long-lived IEC 60870-5-104 client that answers under-frequency in
seconds (``gridpipeline responder``; ``gridpipeline dev`` starts it).

It connects to the field's outstation (``common.iec104``'s address plan), receives frequency,
breaker status and loading spontaneously, and judges every frequency reading with
``load.response.FrequencyWatch``. When a stage of the under-frequency plan is crossed it acts from
the response table Dagster refreshes every 5 minutes (``response_table``; a JSON file beside the
ledger):

1. the stage's blocks are opened by single commands with select-before-operate, each confirmed by
   the outstation and then by the breaker's own status report (check-back); a block whose switch
   refuses, or whose breaker does not report the new position, is replaced by the next block of the
   table's merit list, and both are recorded;
2. from the first stage, the batteries discharge at the power the table lists (Modbus setpoints);
3. one ``critical_response`` ledger record holds the event, the triggering reading and when it left
   the outstation, the commands with their results, the batteries, the table's age (or that it fell
   back to the policy order, and why) and the latency;
4. ``critical_responses`` is reported to Dagster as a runless materialization.

A reading with bad quality, NaN or a spike is not acted on; it is counted and reported. Each stage
acts once per event; the stages acted are read back from the ledger at start, so a restart in the
middle of an event neither acts twice nor forgets the event (the outstation's general interrogation
on connect brings the present frequency at once).

Readings are handled in a worker thread, never in c104's callback thread.
"""

import json
import logging
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import c104
import pandas as pd

from gridpipeline.common import iec104 as plan
from gridpipeline.load.response import (
    RESTORE_MIN_HZ,
    TABLE_MAX_AGE,
    FrequencyWatch,
    Reading,
    ResponseTable,
    build_table,
    reserve_for,
    restoration_stages,
    table_blocks,
    table_path,
)
from gridpipeline.load.overload import (
    GenerationWatch,
    LoadingReading,
    OverloadWatch,
    battery_relief,
    element_rating_mva,
    fed_through,
    pick_blocks,
    relief_mw,
)
from gridpipeline.load.restoration import StageChecker, checked_stage
from gridpipeline.load.schedule import schedule_in_force
from gridpipeline.settings import Settings

log = logging.getLogger(__name__)

COMMAND_TIMEOUT_MS = 500  # one select-before-operate attempt (loopback p99 ~30 ms; see Responder._operate)
COMMAND_ATTEMPTS = 3
LOADED_MW = 1e-3  # a tripped element with more net load than this behind it is 'loaded'
#: an element over its emergency rating again this soon after its blocks were restored locks out: its
#: blocks stay out for an operator
OVERLOAD_LOCKOUT_S = 15 * 60.0
#: a close a restoration stage commanded that the outstation refused or the breaker did not check back
#: is commanded again in a stage of its own at the end of the restoration, up to this many times; then
#: its block is held for an operator
RESTORE_RETRIES = 2
#: the oldest estimated state the restoration checks run on, and how often it is fetched
STATE_MAX_AGE = timedelta(minutes=10)
STATE_POLL_S = 30.0
BASE_POLL_S = 5.0
SHED_POLL_S = 10.0  # how often the shed schedule in force is looked up in the ledger
SHED_LOOKBACK = timedelta(hours=3)
STATUS_WAIT_S = 1.0  # the breaker's check-back report after a confirmed command (the outstation steps 0.1 s; a busy
#: machine delays it by a few steps, and a block replaced too early is a block shed twice)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class GenerationReading:
    """The substation's local generation (MW), once a second."""

    ts: datetime
    mw: float
    quality: str
    received: float


@dataclass(frozen=True)
class StatusChange:
    """A breaker's spontaneous status report: the field operated it, not this responder."""

    switch: int
    closed: bool
    ts: datetime
    received: float


@dataclass
class ResponderStats:
    readings: int = 0
    flagged: int = 0
    responses: int = 0
    latencies: list = field(default_factory=list)  # seconds from the reading leaving the outstation to the record


class Responder:
    def __init__(self, settings: Settings, instance=None, report: bool = True, bms=None, host: str | None = None,
                 port: int | None = None):
        from gridpipeline.ledger.store import Ledger
        from gridpipeline.sources.network import load_network_model

        self.s = settings
        self.instance = instance
        self.report = report and instance is not None
        self.ledger = Ledger(settings.ledger)
        self.net = load_network_model(settings.network).net
        self.mode = settings.mode_for("critical", "automatic")
        self.host = host or settings.field_host
        self.port = port or settings.iec104_port
        self.bms = bms
        self.watch = FrequencyWatch(recovered_s=settings.responder_recovery_s)
        self.queue: queue.Queue = queue.Queue()
        self.stats = ResponderStats()
        self.stop = threading.Event()
        self.breakers: dict[int, bool] = {}
        self.flags: list[dict] = []
        self._table: ResponseTable | None = None
        self._table_mtime = None
        self._fallback: ResponseTable | None = None
        self.out: set[int] = set()  # blocks this responder opened and has not restored
        self.out_info: dict[int, dict] = {}  # block -> tier, mw before the outage, switch
        self.battery_sp: dict[str, float] = {}  # battery -> MW the responder holds it at in this event
        # battery -> MW the dispatcher last set (its newest setpoint_write): where a stage's discharge
        # adds from, and what a released battery goes back to; read outside any event
        self.battery_base: dict[str, float] = {}
        self._base_polled = 0.0
        self.restoring: dict | None = None  # the restoration under way
        self._restore()
        self.client = c104.Client(tick_rate_ms=50, command_timeout_ms=COMMAND_TIMEOUT_MS)
        self.connection = self.client.add_connection(ip=self.host, port=self.port, init=c104.Init.ALL)
        st = self.connection.add_station(common_address=plan.COMMON_ADDRESS)
        self.freq = st.add_point(io_address=plan.IOA_FREQUENCY, type=c104.Type.M_ME_TF_1)
        self.freq.on_receive(callable=self._on_frequency)
        self.commands: dict[int, object] = {}
        self.station = st
        self.breaker_seen: dict[int, float] = {}
        self._tripped: dict[int, list[int]] = {}  # switch -> blocks a trip cut, until it closes again
        from gridpipeline.load.blocks import switchable_blocks

        self.blocks = switchable_blocks(self.net)
        lb = self.blocks.load_block(self.net)
        self.block_rated = (self.net.load.p_mw.groupby(lb.to_numpy()).sum()).to_dict()
        self.checker = StageChecker(self.net, self.blocks, settings.v_min_pu, settings.v_max_pu,
                                    settings.loading_limit_percent)
        self.held: list[int] = []  # blocks a restoration stage's power flow held for an operator
        self.shed_out: dict[int, int] = {}  # block -> switch, opened by a shed schedule and not closed yet
        self._shed_polled = 0.0
        self._restore_shed()  # switch -> monotonic time of its last status report
        from gridpipeline.load.blocks import CONTROLLABLE

        sw = self.net.switch
        for s_ in sw.index[sw.type.isin(CONTROLLABLE)]:
            pt = st.add_point(io_address=plan.STATUS + int(s_), type=c104.Type.M_SP_TB_1)
            pt.on_receive(callable=self._on_status)
        # emergency ratings and loss of generation (load.overload)
        # the normal rating is 100 % (or the emergency rating, if set below it); the event clears at 90 % of it
        e = settings.emergency_loading_percent
        self.normal_pct = min(100.0, e)
        self.overload = OverloadWatch(emergency_pct=e, clear_pct=0.9 * self.normal_pct)
        self.genwatch = GenerationWatch()
        self.event_blocks: dict[str, set[int]] = {}  # overload event -> blocks it opened
        self._overload_restored: dict[tuple, float] = {}  # element -> monotonic time its blocks were last restored
        self.loading_points = {}
        for kind, base, ids in (("trafo", plan.LOADING_TRAFO, self.net.trafo.index),
                                ("line", plan.LOADING_LINE, plan.feeder_heads(self.net))):
            for k in ids:
                pt = st.add_point(io_address=base + int(k), type=c104.Type.M_ME_TF_1)
                pt.on_receive(callable=self._on_loading)
                self.loading_points[base + int(k)] = (kind, int(k))
        self.gen = st.add_point(io_address=plan.IOA_GENERATION, type=c104.Type.M_ME_TF_1)
        self.gen.on_receive(callable=self._on_generation)

    # ------------------------------------------------------------------ state across restarts
    def _restore(self) -> None:
        """Events in progress, the stages acted and the blocks still out, from the ledger's recent
        critical responses and restorations; blocks left out with no event in progress are restored
        once the frequency is back (``handle``)."""
        since = utcnow() - timedelta(hours=2)
        try:
            recs = self.ledger.records(kind="critical_response") + self.ledger.records(kind="restoration")
        except Exception:  # noqa: BLE001 - an unreadable ledger: start fresh, say so
            log.exception("responder: could not read earlier responses from the ledger")
            return
        for r in sorted(recs, key=lambda x: x["seq"]):
            if pd.Timestamp(r["created_at"]).to_pydatetime() < since:
                continue
            b = r["body"]
            for c in b.get("commands", []):
                if c.get("ok") and r["kind"] == "critical_response":
                    self.out.add(int(c["block"]))
                    self.out_info[int(c["block"])] = {"tier": c.get("tier", 4), "mw": c.get("mw", 0.0),
                                                      "switch": c.get("switch")}
            for blk in b.get("restored", []):
                self.out.discard(int(blk))
            ev = b.get("event")
            if r["kind"] != "critical_response" or not ev:
                continue
            kind = b.get("ended_kind") if b.get("event_ended") else (b.get("trigger") or {}).get("kind")
            if kind not in (None, "under-frequency"):
                continue  # an overload or a loss of generation: not the frequency watch's event
            self.watch.done.setdefault(ev, set()).update(int(x) for x in b.get("stages", []))
            self.watch.event = None if b.get("event_ended") else ev
        self._resume = bool(self.out) and self.watch.event is None
        if self.watch.event:
            log.info("responder: resuming event %s, stages acted %s", self.watch.event,
                     sorted(self.watch.done[self.watch.event]))
        elif self._resume:
            log.info("responder: %d blocks still out from an earlier event; restoring once the frequency is back",
                     len(self.out))

    # ------------------------------------------------------------------ the table
    def table(self, now: datetime) -> tuple[ResponseTable, list[str]]:
        """The refreshed table, or the policy order on rated load when it is missing or stale."""
        flags = []
        p = table_path(self.s)
        try:
            m = p.stat().st_mtime_ns
            if m != self._table_mtime:
                self._table = ResponseTable.from_json(json.loads(p.read_text()))
                self._table_mtime = m
        except (OSError, ValueError, KeyError) as exc:
            self._table = None
            flags.append(f"response table unreadable ({type(exc).__name__})")
        if self._table is not None and now - self._table.built_at <= TABLE_MAX_AGE:
            return self._table, flags
        if self._table is not None:
            flags.append(f"response table from {self._table.built_at:%H:%M:%S} is older than "
                         f"{TABLE_MAX_AGE.total_seconds() / 60:.0f} min")
        flags.append("fell back to the policy order on rated load")
        return self.fallback(), flags

    def fallback(self) -> ResponseTable:
        """The policy order on rated load (built once, at start: an event must not wait for it)."""
        if self._fallback is None:
            from gridpipeline.load.priorities import priorities_for

            pr = priorities_for(self.net, self.s.customers, self.s.load_policy)
            blocks, basis = table_blocks(pr, self.net, None)
            self._fallback = build_table(blocks, {}, utcnow(), basis)
        return self._fallback

    # ------------------------------------------------------------------ readings
    def _on_frequency(self, point: c104.Point, previous_info: c104.Information,
                      message: c104.IncomingMessage) -> c104.ResponseState:
        info = point.info
        ts = info.recorded_at
        ts = ts.astimezone(UTC).replace(tzinfo=None) if ts is not None and ts.tzinfo else (ts or utcnow())
        self.queue.put(Reading(ts=ts, hz=float(point.value), quality=plan.quality_of(info.quality),
                               received=time.time()))
        return c104.ResponseState.SUCCESS

    def _on_status(self, point: c104.Point, previous_info: c104.Information,
                   message: c104.IncomingMessage) -> c104.ResponseState:
        s_ = int(point.io_address) - plan.STATUS
        was = self.breakers.get(s_)
        self.breakers[s_] = bool(point.value)
        self.breaker_seen[s_] = time.monotonic()
        if message.cot == c104.Cot.SPONTANEOUS and was is not None and was != bool(point.value):
            ts = point.info.recorded_at
            ts = ts.astimezone(UTC).replace(tzinfo=None) if ts is not None and ts.tzinfo else (ts or utcnow())
            self.queue.put(StatusChange(s_, bool(point.value), ts, time.time()))
        return c104.ResponseState.SUCCESS

    def _point_reading(self, point) -> tuple[datetime, float, str]:
        info = point.info
        ts = info.recorded_at
        ts = ts.astimezone(UTC).replace(tzinfo=None) if ts is not None and ts.tzinfo else (ts or utcnow())
        return ts, float(point.value), plan.quality_of(info.quality)

    def _on_loading(self, point: c104.Point, previous_info: c104.Information,
                    message: c104.IncomingMessage) -> c104.ResponseState:
        ts, v, q = self._point_reading(point)
        self.queue.put(LoadingReading(self.loading_points[int(point.io_address)], ts, v, q, time.time()))
        return c104.ResponseState.SUCCESS

    def _on_generation(self, point: c104.Point, previous_info: c104.Information,
                       message: c104.IncomingMessage) -> c104.ResponseState:
        ts, v, q = self._point_reading(point)
        self.queue.put(GenerationReading(ts, v, q, time.time()))
        return c104.ResponseState.SUCCESS

    def handle(self, r: Reading | StatusChange) -> dict | None:
        if isinstance(r, StatusChange):
            return self.on_breaker(r)
        if isinstance(r, LoadingReading):
            return self.on_loading(r)
        if isinstance(r, GenerationReading):
            return self.on_generation(r)
        self.stats.readings += 1
        res = self.watch.update(r)
        if res.flag:
            self.stats.flagged += 1
            self.flags.append({"at": r.ts.isoformat(timespec="milliseconds"), "hz": r.hz, "quality": r.quality,
                               "why": res.flag})
            log.warning("responder: %s", res.flag)
            self._report_flag(r, res.flag)
            return None
        if res.ended:
            self._close_event(res.ended, r)
        elif getattr(self, "_resume", False) and res.event is None and r.hz >= RESTORE_MIN_HZ \
                and self.restoring is None:
            self._resume = False
            self._close_event("(before a restart)", r)
        if res.event is not None and self.restoring is not None:
            self._interrupt_restoration(res.event)
        if res.acts:
            return self.act(res.event, res.acts, r)
        if self.restoring is not None and res.event is None:
            return self.restore_step(r)
        return None

    def on_breaker(self, c: StatusChange) -> dict | None:
        """A breaker the field operated by itself: a protection trip opens it, a crew closes it again.
        A trip is an ``outage`` ledger record with the blocks it cut, their load by the response table
        (a trip on a loaded element is flagged as such) and the customers; closing it again ends the
        outage. The reliability report counts both."""
        table, flags = self.table(utcnow())
        bt = self.blocks.table
        head = bt.index[bt.feeding_switch == c.switch]
        blocks = sorted({b for h in head for b in self.blocks.descendants(int(h))})
        # the table's estimated net load where it has the block (sheddable ones), else the rated load
        est = table.order.set_index("block_id").mw
        block_mw = {b: round(float(est.get(b, self.block_rated.get(b, 0.0))), 4) for b in blocks}
        mw = float(sum(block_mw.values()))
        if not c.closed:
            body = {"summary": f"breaker {c.switch} tripped" + (f" on a loaded element: blocks {blocks}, "
                                                               f"{mw:.3f} MW" if mw > LOADED_MW else
                                                               " (no load behind it by the response table)"),
                    "switch": c.switch, "tripped": True, "blocks": blocks, "mw": round(mw, 4),
                    "block_mw": {str(b): v for b, v in block_mw.items()},
                    "loaded": mw > LOADED_MW, "at": c.ts.isoformat(timespec="milliseconds"),
                    "table": {"basis": table.basis, "built_at": table.built_at.isoformat(timespec="seconds")},
                    "flags": flags}
            self._tripped[c.switch] = blocks
        else:
            body = {"summary": f"breaker {c.switch} closed again by the field: the outage of blocks "
                               f"{self._tripped.get(c.switch, blocks)} is over", "switch": c.switch, "tripped": False,
                    "blocks": self._tripped.pop(c.switch, blocks), "at": c.ts.isoformat(timespec="milliseconds")}
        rec = self.ledger.append("outage", body, mode="advisory", actor="responder")
        log.warning("responder: %s", body["summary"])
        if self.report:
            from dagster import AssetMaterialization, MetadataValue

            try:
                self.instance.report_runless_asset_event(AssetMaterialization(
                    asset_key="critical_responses", metadata={
                        "decision": rec.id, "summary": body["summary"], "switch": c.switch,
                        "blocks": MetadataValue.json(body["blocks"]), "source": "responder"}))
            except Exception:  # noqa: BLE001 - recorded already
                log.exception("responder: reporting to Dagster failed")
        return {"decision": rec.id, "outage": True, **body}

    # ------------------------------------------------------------------ emergency ratings, generation
    def on_loading(self, r: LoadingReading) -> dict | None:
        res = self.overload.update(r)
        if res.flag:
            self.stats.flagged += 1
            if len(self.flags) < 10_000:
                self.flags.append({"at": r.ts.isoformat(timespec="milliseconds"), "element": list(r.element),
                                   "why": res.flag})
            return None
        if res.act:
            return self.relieve(res.event, r)
        if res.ended:
            blocks = self.event_blocks.pop(res.ended, set()) & self.out
            why = (f"{r.element[0]} {r.element[1]} below {self.overload.clear_pct:.0f} % for "
                   f"{self.overload.clear_s:.0f} s ({r.pct:.1f} %)")
            last = self._overload_restored.get(r.element)
            if blocks and last is not None and time.monotonic() - last < OVERLOAD_LOCKOUT_S:
                return self._lock_out(res.ended, r, blocks, why)
            if blocks:
                self._overload_restored[r.element] = time.monotonic()
                self._close_event(res.ended, None, blocks=blocks, why=why)
        return None

    def _lock_out(self, event: str, r: LoadingReading, blocks: set[int], why: str) -> dict:
        """An element that went over its emergency rating again within ``OVERLOAD_LOCKOUT_S`` of its last
        restoration (the cause is still there: restoring again would only trip again) keeps its blocks out
        for an operator (``gridpipeline load restore``), as a recloser locks out after its shot."""
        held = sorted(blocks)
        self.held.extend(b for b in held if b not in self.held)
        body = {"summary": f"event {event} over: {why}; {len(held)} blocks held for an operator: {r.element[0]} "
                           f"{r.element[1]} overloaded again within {OVERLOAD_LOCKOUT_S / 60:.0f} min of its last "
                           "restoration (lockout)", "event": event, "event_ended": True, "ended_kind": "emergency rating",
                "stages": [], "commands": [], "blocks_out": held, "held_for_operator": held, "lockout": True,
                "element": list(r.element)}
        rec = self.ledger.append("critical_response", body, mode="automatic", actor="responder")
        self._journal({"decision": rec.id, "event": event, "event_ended": True, "restoration_stages": 0,
                       "lockout": True, "committed_at": time.time()})
        log.warning("responder: %s", body["summary"])
        return {"decision": rec.id, **body}

    def relieve(self, event: str, r: LoadingReading) -> dict:
        """Shed blocks fed through an element above its emergency rating, least critical first, until
        their net load covers the excess over its normal rating; one ``critical_response`` record."""
        now = utcnow()
        table, flags = self.table(now)
        send = self.mode == "automatic"
        if not send:
            flags.append(f"mode {self.mode}: recorded, no command sent (a critical response cannot wait for approval)")
        rating = element_rating_mva(self.net, r.element)
        need = relief_mw(r.pct, rating, normal_pct=self.normal_pct)
        cand = fed_through(self.blocks, self.net, r.element)
        net_behind = float(table.order[table.order.block_id.isin(cand)].mw.sum())
        if net_behind <= 0:
            # the element carries generation out (net export behind it): shedding load would worsen it
            flags.append(f"{net_behind:.3f} MW net behind the element: an export overload, not relieved by "
                         "shedding (curtailment is the dispatcher's)")
            wanted = []
        else:
            wanted = pick_blocks(table.order, cand, need, set(self.out))
        reserve = [b for b in reserve_for(table, set(self.out) | set(wanted)) if b in set(cand)]
        commands = self._open_blocks(wanted, table, send, reserve)
        opened = {c["block"] for c in commands if c.get("ok") or c.get("unconfirmed")}
        self.event_blocks.setdefault(event, set()).update(opened)
        if not opened:
            self.overload.exhausted(event)
        shed_mw = sum(c.get("mw", 0.0) for c in commands if c.get("ok"))
        kind, idx = r.element
        body = {
            "summary": (f"{kind} {idx} at {r.pct:.1f} % of its rating, above its emergency rating "
                        f"{self.overload.emergency_pct:.0f} %: {sum(1 for c in commands if c.get('ok'))} blocks "
                        f"({shed_mw:.3f} MW) opened for {need:.3f} MW of relief"
                        + ("" if shed_mw >= need - 1e-9 else "; not enough sheddable load fed through it")
                        + (f"; {len(flags)} flags" if flags else "")),
            "event": event, "trigger": {"kind": "emergency rating", "element": [kind, idx], "loading_pct": r.pct,
                                        "rating_mva": round(rating, 4), "sent_at": r.ts.isoformat(timespec="milliseconds"),
                                        "quality": r.quality},
            "need_mw": round(need, 4), "candidates": len(cand), "commands": commands, "shed_mw": round(shed_mw, 4),
            "binding": f"{kind} {idx} emergency rating",
            "table": {"built_at": table.built_at.isoformat(timespec="seconds"), "basis": table.basis,
                      "age_s": round((now - table.built_at).total_seconds(), 1)},
            "flags": flags, "mode": self.mode,
        }
        return self._commit(event, body, r.ts, r.received, send, [])

    def on_generation(self, r: GenerationReading) -> dict | None:
        lost, flag = self.genwatch.update(r.ts, r.mw, r.quality)
        if flag:
            self.stats.flagged += 1
            return None
        if lost <= 0:
            return None
        now = utcnow()
        table, flags = self.table(now)
        send = self.mode == "automatic" and self.bms is not None
        now_mw = dict(self.battery_sp)  # what the responder holds; else what each battery gives now
        if self.bms is not None:
            try:
                fleet = self.bms.read_fleet()
                for row in fleet[fleet.available.astype(bool)].itertuples():
                    now_mw.setdefault(str(row.battery_id), float(getattr(row, "p_measured_mw", 0.0) or 0.0))
            except Exception as exc:  # noqa: BLE001 - then from 0: the setpoints are at most the table's
                flags.append(f"BMS read failed ({type(exc).__name__}); relief counted from 0 MW")
        want = battery_relief(table.batteries, lost, now_mw)
        batteries = {}
        for bid, mw in want.items():
            if not send:
                batteries[bid] = {"mw": mw, "ok": None, "detail": "not sent: " + ("no BMS link" if self.bms is None
                                                                                  else f"mode {self.mode}")}
                continue
            try:
                ok, detail = self.bms.write_setpoint(bid, mw)
            except Exception as exc:  # noqa: BLE001 - one battery's link must not stop the others
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            batteries[bid] = {"mw": mw, "ok": ok, "detail": detail}
        given = sum(v["mw"] for v in batteries.values() if v["ok"])
        event = f"generation-loss-{r.ts.isoformat(timespec='seconds')}"
        body = {"summary": f"loss of local generation: {lost:.3f} MW within {self.genwatch.window_s:.0f} s; "
                           f"{sum(1 for v in batteries.values() if v['ok'])} batteries discharging {given:.3f} MW",
                "event": event, "trigger": {"kind": "loss of generation", "lost_mw": round(lost, 4), "mw_now": r.mw,
                                            "sent_at": r.ts.isoformat(timespec="milliseconds"), "quality": r.quality},
                "commands": [], "batteries": batteries, "shed_mw": 0.0,
                "uncovered_mw": round(max(lost - given, 0.0), 4),
                "note": "the emergency-rating watch sheds if the import this leaves overloads the transformer; the "
                        "dispatcher re-plans on the departure it sees in the telemetry",
                "table": {"built_at": table.built_at.isoformat(timespec="seconds"), "basis": table.basis},
                "flags": flags, "mode": self.mode}
        for k, v in batteries.items():
            if v["ok"]:
                self.battery_sp[k] = v["mw"]
        if self.battery_sp:
            # one hold for everything the responder holds (an under-frequency event's too): the newest wins
            body["battery_hold"] = {"setpoints_mw": {k: round(v, 4) for k, v in self.battery_sp.items()},
                                    "until": (now + TABLE_MAX_AGE).isoformat(timespec="seconds")}
        return self._commit(event, body, r.ts, r.received, send, [])

    # ------------------------------------------------------------------ shed schedules
    def _restore_shed(self) -> None:
        """The blocks earlier shed switching left out, so a restart closes them when they are due."""
        try:
            recs = self.ledger.records(kind="shed_switching", since=utcnow() - timedelta(days=1))
        except Exception:  # noqa: BLE001 - as in _restore
            log.exception("responder: could not read earlier shed switching from the ledger")
            return
        for r in sorted(recs, key=lambda x: x["seq"]):
            for c in r["body"].get("commands", []):
                if c.get("action") == "open" and (c.get("ok") or c.get("unconfirmed")):
                    self.shed_out[int(c["block"])] = int(c["switch"])
                elif c.get("action") == "close" and c.get("ok"):
                    self.shed_out.pop(int(c["block"]), None)

    def shed_tick(self, now: datetime | None = None) -> dict | None:
        """Make the field follow the shed schedule in force: the newest shed record that is automatic
        or approved and covers ``now`` (``load.schedule.schedule_in_force``). Blocks due and not out are
        opened, blocks it shed that are no longer due are closed; each switching is a ``shed_switching``
        record referring to the schedule. Blocks a critical response holds are left to it."""
        now = now or utcnow()
        since = now - SHED_LOOKBACK
        recs = self.ledger.records(kind="shed", since=since)
        if not recs and not self.shed_out:
            return None
        approved = {r["ref"] for r in self.ledger.records(kind="approval", since=since)}
        states = {r["id"]: ("automatic" if r["mode"] == "automatic" else
                            "approved" if r["id"] in approved else "not approved") for r in recs}
        rec, due = schedule_in_force(recs, states, now)
        due = [b for b in due if b not in self.out]
        feeding = self.blocks.table.feeding_switch
        to_open = [b for b in due if b not in self.shed_out and b in feeding.index and pd.notna(feeding[b])]
        to_close = [b for b in self.shed_out if b not in due]
        if not to_open and not to_close:
            return None
        items = [(int(feeding[b]), False) for b in to_open] + [(self.shed_out[b], True) for b in to_close]
        res = self.operate(items) if self.mode == "automatic" else \
            {sw: {"ok": False, "unconfirmed": False, "detail": f"mode {self.mode}: not sent"} for sw, _ in items}
        commands = []
        est = self.table(now)[0].order.set_index("block_id").mw
        for b, (sw, closed) in zip(to_open + to_close, items, strict=True):
            r_ = res[sw]
            commands.append({"block": b, "switch": sw, "action": "close" if closed else "open", "ok": r_["ok"],
                             "unconfirmed": r_["unconfirmed"], "detail": r_["detail"],
                             "mw": round(float(est.get(b, self.block_rated.get(b, 0.0))), 4)})
            if not closed and (r_["ok"] or r_["unconfirmed"]):
                self.shed_out[b] = sw
            elif closed and r_["ok"]:
                self.shed_out.pop(b, None)
        opened = [c["block"] for c in commands if c["action"] == "open" and c["ok"]]
        closed_ = [c["block"] for c in commands if c["action"] == "close" and c["ok"]]
        failed = [c for c in commands if not c["ok"]]
        body = {"summary": f"shed schedule {rec['id'] if rec else '(none in force)'}: {len(opened)} blocks opened, "
                           f"{len(closed_)} closed" + (f", {len(failed)} commands failed" if failed else ""),
                "schedule": rec["id"] if rec else None, "at": now.isoformat(timespec="seconds"),
                "due": due, "opened": opened, "closed": closed_, "commands": commands,
                "still_out": sorted(self.shed_out)}
        out = self.ledger.append("shed_switching", body, mode="automatic", actor="responder",
                                 ref=rec["id"] if rec else None)
        log.info("responder: %s", body["summary"])
        return {"decision": out.id, "shed_switching": True, **body}

    # ------------------------------------------------------------------ acting
    def _command_point(self, switch: int):
        if switch not in self.commands:
            self.commands[switch] = self.station.add_point(io_address=plan.COMMAND + int(switch),
                                                           type=c104.Type.C_SC_NA_1,
                                                           command_mode=c104.CommandMode.SELECT_AND_EXECUTE)
        return self.commands[switch]

    def _operate(self, switch: int, closed: bool) -> tuple[bool, str]:
        """One select-before-operate single command, confirmed by the outstation.

        c104 2.2.1 now and then misses a confirmation that arrives within microseconds of its command
        (seen on loopback: the select's ACT_CON comes back, the execute is never sent, and ``transmit``
        waits out its timeout; about 1 command in 150). So the timeout is short and a timed-out command
        is sent again, select and execute, up to ``COMMAND_ATTEMPTS`` times: a repeated open or close
        is harmless. A refusal (a negative confirmation, which comes back at once) is not repeated."""
        pt = self._command_point(switch)
        pt.value = bool(closed)
        t = time.perf_counter()
        for attempt in range(1, COMMAND_ATTEMPTS + 1):
            a = time.perf_counter()
            if pt.transmit(cause=c104.Cot.ACTIVATION):
                return True, f"confirmed in {1000 * (time.perf_counter() - t):.0f} ms" + \
                    (f" (attempt {attempt})" if attempt > 1 else "")
            if time.perf_counter() - a < 0.8 * COMMAND_TIMEOUT_MS / 1000:
                return False, f"refused in {1000 * (time.perf_counter() - t):.0f} ms"
        return False, f"not confirmed after {COMMAND_ATTEMPTS} attempts ({1000 * (time.perf_counter() - t):.0f} ms)"

    def operate(self, items: list[tuple[int, bool]]) -> dict[int, dict]:
        """Command each (switch, closed), then wait for every confirmed breaker's status report.

        c104's client can report a command as confirmed when the outstation refused it (a negative
        ACT_CON followed at once by a positive ACT_TERM: the last one wins, about 1 refusal in 200 on
        loopback). So the breaker's own report of its new position is the proof, as in a SCADA
        check-back. Returns switch -> ``{"ok", "detail", "unconfirmed"}``; ``unconfirmed`` marks a
        command the outstation confirmed whose breaker did not report in ``STATUS_WAIT_S``: not
        counted as done, but its block is kept among those to restore."""
        t0 = time.monotonic()
        res = {}
        for sw, closed in items:
            ok, detail = self._operate(sw, closed)
            res[sw] = {"ok": ok, "detail": detail, "unconfirmed": False}
        want = dict(items)
        waiting = {sw for sw in want if res[sw]["ok"]}
        deadline = time.monotonic() + STATUS_WAIT_S
        while True:
            for sw in list(waiting):
                seen = self.breaker_seen.get(sw)
                if seen is not None and seen >= t0 and self.breakers.get(sw) == want[sw]:
                    waiting.discard(sw)
                    res[sw]["detail"] += f"; breaker reported {'closed' if want[sw] else 'open'} " \
                                         f"{1000 * (seen - t0):.0f} ms after the first command"
            if not waiting or time.monotonic() >= deadline:
                break
            time.sleep(0.005)
        for sw in waiting:
            res[sw] = {"ok": False, "unconfirmed": True,
                       "detail": res[sw]["detail"] + f"; but the breaker did not report "
                                 f"{'closed' if want[sw] else 'open'} within {1000 * STATUS_WAIT_S:.0f} ms"}
        return res

    def open_switch(self, switch: int) -> tuple[bool, str]:
        r = self.operate([(switch, False)])[switch]
        return r["ok"], r["detail"]

    def act(self, event: str, stages: list[int], r: Reading) -> dict:
        now = utcnow()
        table, flags = self.table(now)
        send = self.mode == "automatic"
        if not send:
            flags.append(f"mode {self.mode}: recorded, no command sent (a critical response cannot wait for approval)")
        wanted = [b for s in stages for b in table.stages.blocks[table.stages.stage == s].iloc[0]]
        t_start = time.time()
        commands = self._open_blocks(wanted, table, send)
        t_switched = time.time()
        batteries = {}
        if send and self.bms is not None and "batteries" in table.stages:
            for s_ in stages:
                for bid, mw in (table.stages.batteries[table.stages.stage == s_].iloc[0] or {}).items():
                    # the stage's discharge adds to what the dispatcher had the battery do
                    self.battery_sp[bid] = self.battery_sp.get(bid, self.battery_base.get(bid, 0.0)) + float(mw)
            for bid in {b for s_ in stages for b in (table.stages.batteries[table.stages.stage == s_].iloc[0] or {})}:
                mw = round(self.battery_sp[bid], 4)
                try:
                    ok, detail = self.bms.write_setpoint(bid, mw)
                except Exception as exc:  # noqa: BLE001 - one battery's link must not stop the shed
                    ok, detail = False, f"{type(exc).__name__}: {exc}"
                batteries[bid] = {"mw": mw, "ok": ok, "detail": detail}
        shed_mw = sum(c.get("mw", 0.0) for c in commands if c.get("ok"))
        phases = {"queued_s": round(t_start - r.received, 4), "switching_s": round(t_switched - t_start, 4),
                  "batteries_s": round(time.time() - t_switched, 4)}
        body = {
            "summary": (f"under-frequency {r.hz:.3f} Hz: stage{'s' if len(stages) > 1 else ''} "
                        f"{', '.join(map(str, stages))}; {sum(1 for c in commands if c.get('ok'))} blocks "
                        f"({shed_mw:.3f} MW) opened, {sum(1 for v in batteries.values() if v['ok'])} batteries "
                        f"discharging" + (f"; {len(flags)} flags" if flags else "")),
            "event": event, "stages": stages, "trigger": {"kind": "under-frequency", "hz": r.hz,
                                                          "sent_at": r.ts.isoformat(timespec="milliseconds"),
                                                          "quality": r.quality},
            "thresholds_hz": [float(table.stages.threshold_hz[table.stages.stage == s].iloc[0]) for s in stages],
            "commands": commands, "batteries": batteries, "shed_mw": round(shed_mw, 4),
            "table": {"built_at": table.built_at.isoformat(timespec="seconds"), "basis": table.basis,
                      "age_s": round((now - table.built_at).total_seconds(), 1)},
            "flags": flags, "mode": self.mode,
        }
        if self.battery_sp:
            # the dispatcher leaves these batteries alone while the hold lasts (Dispatcher.holds)
            body["battery_hold"] = {"setpoints_mw": {k: round(v, 4) for k, v in self.battery_sp.items()},
                                    "until": (now + TABLE_MAX_AGE).isoformat(timespec="seconds")}
        return self._commit(event, body, r.ts, r.received, send, stages, phases)

    def _commit(self, event: str, body: dict, sent_at: datetime, received: float, send: bool,
                stages: list[int], phases: dict | None = None) -> dict:
        """The ``critical_response`` record, the journal line with the latency from the reading leaving
        the outstation, and the report to Dagster."""
        t_ledger = time.time()
        rec = self.ledger.append("critical_response", body, mode="automatic" if send else "advisory",
                                 actor="responder")
        committed = time.time()
        phases = {**(phases or {}), "ledger_s": round(committed - t_ledger, 4)}
        latency = committed - sent_at.replace(tzinfo=UTC).timestamp()
        self._journal({"decision": rec.id, "event": event, "stages": stages, "kind": body["trigger"]["kind"],
                       "sent_at": sent_at.replace(tzinfo=UTC).timestamp(), "received_at": received,
                       "committed_at": committed, "latency_s": round(latency, 4), "phases": phases,
                       "commands_ok": sum(1 for c in body["commands"] if c.get("ok"))})
        self.stats.responses += 1
        self.stats.latencies.append(latency)
        log.info("responder: %s (%.3f s after the reading left the outstation)", body["summary"], latency)
        self._report(rec.id, body, latency)
        return {"decision": rec.id, "latency_s": latency, **body}

    def _open_blocks(self, wanted: list[int], table: ResponseTable, send: bool,
                     reserve: list[int] | None = None) -> list[dict]:
        """Open the blocks ``wanted`` (select-before-operate, confirmed by check-back), each one that
        fails replaced by the next unused block of ``reserve`` (default: the table's merit list); the
        blocks opened join ``out``. Returns the commands with their results."""
        order = table.order.set_index("block_id")
        commands, used = [], set(self.out)
        if reserve is None:
            reserve = reserve_for(table, used | set(wanted))
        queue_ = [b for b in wanted if b not in used]
        while queue_:
            batch, queue_, sends = queue_, [], []
            for b in batch:
                used.add(b)
                sw = order.switch.get(b)
                if sw is None or pd.isna(sw):
                    commands.append({"block": b, "switch": None, "ok": False, "detail": "no feeding switch"})
                elif send:
                    sends.append((b, int(sw)))
                    continue
                else:
                    commands.append({"block": b, "switch": int(sw), "ok": None, "detail": "advisory",
                                     "mw": float(order.mw.get(b, 0.0))})
                    continue
                if send:
                    self._replace(commands[-1], reserve, used, queue_)
            results = self.operate([(sw, False) for _, sw in sends]) if sends else {}
            for b, sw in sends:
                r_ = results[sw]
                cmd = {"block": b, "switch": sw, "ok": r_["ok"], "detail": r_["detail"],
                       "mw": float(order.mw.get(b, 0.0)), "tier": int(order.tier.get(b, 4))}
                commands.append(cmd)
                if r_["ok"] or r_["unconfirmed"]:
                    # an unconfirmed block may be out: it is restored with the others
                    self.out.add(b)
                    self.out_info[b] = {"tier": int(order.tier.get(b, 4)), "mw": float(order.mw.get(b, 0.0)),
                                        "switch": sw}
                if not r_["ok"]:
                    cmd["unconfirmed"] = r_["unconfirmed"]
                    self._replace(cmd, reserve, used, queue_)
        return commands

    @staticmethod
    def _replace(cmd: dict, reserve: list[int], used: set[int], queue_: list[int]) -> None:
        """A block that could not be opened is replaced by the next unused block of the merit list."""
        repl = next((x for x in reserve if x not in used), None)
        if repl is not None:
            reserve.remove(repl)
            cmd["replaced_by"] = repl
            queue_.append(repl)

    def _journal(self, row: dict) -> None:
        """One line per response in ``<home>/load/responses.jsonl``: when the reading left the outstation,
        arrived, and when the record was committed (after every command was confirmed)."""
        try:
            p = self.s.home / "load" / "responses.jsonl"
            p.parent.mkdir(parents=True, exist_ok=True)
            with open(p, "a") as fh:
                fh.write(json.dumps(row) + "\n")
        except OSError:
            log.exception("responder: writing the response journal failed")

    def _close_event(self, event: str, r: Reading | None, blocks: set[int] | None = None, why: str | None = None
                     ) -> None:
        """The event is over: record it and plan the restoration of every block still out (``blocks``:
        only these, the ones an overload event opened; ``why``: what ended it, when not the frequency)."""
        table, _ = self.table(utcnow())
        margin = float(table.stages.mw.iloc[0]) if len(table.stages) else 0.0
        # an overload still under way keeps its blocks out
        held_by_overload = set().union(*self.event_blocks.values()) if self.event_blocks else set()
        todo = sorted(self.out - held_by_overload if blocks is None else blocks)
        out = pd.DataFrame([{"block_id": b, **self.out_info.get(b, {"tier": 4, "mw": 0.0})} for b in todo],
                           columns=["block_id", "tier", "mw", "switch"])
        clpu = self.clpu()
        stages = restoration_stages(out, max(margin, 1e-6), clpu.factor)
        if self.restoring is not None:  # another event's restoration is under way: this one's stages follow
            self.restoring["stages"].extend(stages)
            stages_after = True
        else:
            stages_after = False
        ended = why or (f"frequency back above 49.8 Hz for {self.watch.recovered_s:.0f} s ({r.hz:.3f} Hz)")
        plan_body = {"summary": f"event {event} over: {ended}; {len(out)} blocks to restore in "
                                f"{len(stages)} stages", "event": event, "event_ended": True, "stages": [],
                     "commands": [], "blocks_out": todo, "battery_hold_released": bool(self.battery_sp)
                     and blocks is None, "ended_kind": "under-frequency" if blocks is None else "emergency rating",
                     "restoration": {"stages": stages, "margin_mw": round(margin, 4),
                                     "margin_basis": "the response table's first under-frequency stage",
                                     "cold_load_pickup": clpu.to_json(),
                                     "min_hz": RESTORE_MIN_HZ,
                                     "interval_s": self.s.responder_restore_interval_s}}
        if blocks is None and self.battery_sp:
            # released: back to what they did before the event at once (not only at the dispatcher's
            # next plan, which may be minutes away), and the dispatcher plans them again
            plan_body["battery_release"] = self.release_batteries()
        rec = self.ledger.append("critical_response", plan_body, mode="automatic", actor="responder")
        if blocks is None:
            self.battery_sp = {}
        self._journal({"decision": rec.id, "event": event, "event_ended": True, "restoration_stages": len(stages),
                       "committed_at": time.time()})
        if not stages_after:
            self.restoring = {"event": event, "plan": rec.id, "stages": stages, "k": 0,
                              "next_at": time.monotonic()} if stages else None

    def _interrupt_restoration(self, event: str) -> None:
        left = [b for st in self.restoring["stages"][self.restoring["k"]:] for b in st]
        self.ledger.append("restoration", {
            "summary": f"restoration after {self.restoring['event']} interrupted by a new event {event}: "
                       f"{len(left)} blocks stay out", "event": self.restoring["event"], "interrupted_by": event,
            "left_out": left, "restored": []}, mode="automatic", actor="responder", ref=self.restoring["plan"])
        self.restoring = None

    def restore_requests(self, now: datetime | None = None) -> list[dict]:
        """Carry out the operators' ``restore_request`` records not carried out yet (``gridpipeline load
        restore``): close the switches of the requested blocks this responder holds out, with the power
        flow check recorded but not binding (the operator decided), one ``restoration`` record each,
        referring to the request."""
        now = now or utcnow()
        since = now - SHED_LOOKBACK
        reqs = self.ledger.records(kind="restore_request", since=since)
        if not reqs:
            return []
        done = {r["ref"] for r in self.ledger.records(kind="restoration", since=since) if r.get("ref")}
        out = []
        for q in reqs:
            if q["id"] in done:
                continue
            wanted = [int(b) for b in q["body"].get("blocks", [])]
            todo = [b for b in wanted if b in self.out and b not in self.shed_out]
            pf = []
            if todo:
                try:
                    c = self.checker.check(set(self.out), todo, {b: float(self.out_info.get(b, {}).get("mw", 0.0))
                                                               for b in todo}, self.clpu().factor)
                    pf = [{"blocks": todo, **c.as_dict()}]
                except Exception as exc:  # noqa: BLE001 - the operator decided; say the check failed
                    pf = [{"blocks": todo, "ok": None, "violations": [f"check failed: {type(exc).__name__}: {exc}"]}]
            results, restored = self._close_blocks(todo)
            for b in restored:
                if b in self.held:
                    self.held.remove(b)
                for ev in self.event_blocks.values():
                    ev.discard(b)
            skipped = [b for b in wanted if b not in todo]
            body = {"summary": f"restore request {q['id']} by {q['actor']}: {len(restored)} of {len(wanted)} blocks "
                               "back" + (f"; {len(skipped)} not held out by the responder" if skipped else "")
                               + ("; the power flow showed a violation, restored on the operator's decision"
                                  if pf and pf[0].get("ok") is False and restored else ""),
                    "requested_by": q["actor"], "reason": q["body"].get("reason", ""), "commands": results,
                    "restored": restored, "not_held_out": skipped, "power_flow": pf,
                    "pickup_mw": round(sum(float(self.out_info.get(b, {}).get("mw", 0.0)) for b in restored)
                                       * self.clpu().factor, 4)}
            rec = self.ledger.append("restoration", body, mode="automatic", actor="responder", ref=q["id"])
            log.info("responder: %s", body["summary"])
            self._report_restoration(rec.id, {**body, "event": None, "stage": None, "hz_before": None,
                                              "held_for_operator": []})
            out.append({"decision": rec.id, **body})
        return out

    def fetch_state(self, now: datetime | None = None) -> dict | None:
        """The newest estimated state of the live store, at most ``STATE_MAX_AGE`` old, or None (not
        readable now, or none that recent)."""
        import duckdb

        from gridpipeline.storage.inputs import state_at
        from gridpipeline.store import connect

        try:
            with connect(self.s.live_db_path, read_only=True, timeout_s=5.0) as con:
                return state_at(con, now or utcnow(), max_age=STATE_MAX_AGE)
        except (duckdb.Error, TimeoutError, OSError) as exc:
            log.debug("responder: live store not readable (%s)", exc)
            return None

    def apply_state(self, st: dict | None, now: datetime | None = None) -> bool:
        """Give the restoration checks ``st`` (or keep the one they have while it is recent enough; else
        they run on rated values, and their records say so)."""
        now = now or utcnow()
        if st is None:
            st = getattr(self, "_state", None)
        if st is not None and now - pd.Timestamp(st["ts"]).to_pydatetime() > STATE_MAX_AGE:
            st = None
        if st is not getattr(self, "_state", None):
            self._state = st
            self.checker.set_state(None if st is None else st["injections"], None if st is None else st["ts"])
        return st is not None

    def poll_state(self, now: datetime | None = None) -> bool:
        """Fetch and apply the newest estimated state (tests; the running responder fetches in a thread
        of its own, so a busy store never holds up a reading)."""
        return self.apply_state(self.fetch_state(now), now)

    def _state_fetcher(self) -> None:
        """Background reads that must never hold up a reading: the estimated state (every
        ``STATE_POLL_S``) and the batteries' measured power (every ``BASE_POLL_S``, on a BMS client of
        its own)."""
        client = None
        if self.bms is not None:
            client = self.bms.__class__(list(self.bms.endpoints.values()), timeout_s=1.0, stale_s=60.0)
        last_state = 0.0
        try:
            while not self.stop.wait(BASE_POLL_S):
                if client is not None and not self.battery_sp:
                    try:
                        self._measured_base = self.measure_battery_base(client)
                    except Exception:  # noqa: BLE001 - the ledger's setpoints serve meanwhile
                        log.debug("responder: measuring the batteries failed", exc_info=True)
                if time.monotonic() - last_state >= STATE_POLL_S:
                    last_state = time.monotonic()
                    self._fresh_state = self.fetch_state()
        finally:
            if client is not None:
                client.close()

    def poll_battery_base(self) -> None:
        """Refresh :attr:`battery_base`, unless the responder holds batteries now: what each battery the
        response table lists measures (read over Modbus by the background thread, so a slow unit never
        holds up a reading), else the dispatcher's newest ``setpoint_write`` record."""
        if self.battery_sp:
            return
        measured = getattr(self, "_measured_base", None)
        if measured:
            self.battery_base = dict(measured)
            self._base_polled = time.monotonic()
            return
        try:
            recs = self.ledger.records(kind="setpoint_write", since=utcnow() - timedelta(hours=1))
        except Exception:  # noqa: BLE001 - a busy ledger: the base from the last poll stays
            log.exception("responder: reading the dispatcher's setpoints failed")
            return
        if recs:
            sp = recs[-1]["body"].get("setpoints_mw") or {}
            self.battery_base = {str(k): float(v) for k, v in sp.items()}
        self._base_polled = time.monotonic()

    def measure_battery_base(self, client=None) -> dict[str, float]:
        """What the batteries of the response table's stages give now (MW, + discharge; Modbus
        ``p_measured``), read while the responder holds none: the state the world was in before an
        event, which a stage adds to and a release returns to. ``client``: a BMS client of its own
        (the background thread's)."""
        client = client or self.bms
        if client is None or self.battery_sp:
            return {}
        table = self._table or self._fallback
        ids = sorted({b for bs in (table.stages.batteries if table is not None and "batteries" in table.stages
                                   else []) for b in (bs or {})})
        if not ids:
            return {}
        sub = client.__class__([client.endpoints[b] for b in ids if b in client.endpoints], timeout_s=1.0,
                               stale_s=60.0) if set(ids) != set(client.endpoints) else client
        try:
            fleet = sub.read_fleet()
        finally:
            if sub is not client:
                sub.close()
        ok = fleet[fleet.available.astype(bool)] if len(fleet) else fleet
        return {str(r.battery_id): float(r.p_measured_mw) for r in ok.itertuples()}

    def release_batteries(self) -> dict:
        """Every battery the responder held goes back to its base (what it measured before the event,
        else the dispatcher's last setpoint, else 0 MW) over Modbus; returns battery -> {mw, ok, detail}
        for the record."""
        out = {}
        if self.mode != "automatic" or self.bms is None:
            return out
        for bid in sorted(self.battery_sp):
            mw = round(self.battery_base.get(bid, 0.0), 4)
            try:
                ok, detail = self.bms.write_setpoint(bid, mw)
            except Exception as exc:  # noqa: BLE001 - one battery's link must not stop the others
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            out[bid] = {"mw": mw, "ok": ok, "detail": detail}
        return out

    def clpu(self):
        """The cold-load pickup in force: calibrated from the restored blocks' telemetry by the
        ``clpu_calibration`` asset (``<home>/load/clpu.json``), else the literature's 2.0 over 20 min."""
        from gridpipeline.load.clpu import read

        return read(self.s.home)

    def close_switch(self, switch: int) -> tuple[bool, str]:
        r = self.operate([(switch, True)])[switch]
        return r["ok"], r["detail"]

    def _close_blocks(self, blocks: list[int]) -> tuple[list[dict], list[int]]:
        """Close the feeding switches of ``blocks`` this responder holds out (check-back confirmed; only in
        automatic mode); the blocks closed leave ``out``. Returns (the commands, the blocks back)."""
        send = self.mode == "automatic"
        items = [(int(self.out_info[b]["switch"]), True) for b in blocks
                 if send and self.out_info.get(b, {}).get("switch") is not None]
        done = self.operate(items) if items else {}
        results, restored = [], []
        for b in blocks:
            sw = self.out_info.get(b, {}).get("switch")
            if sw is None or not send:
                ok, detail = False, "no switch" if sw is None else f"mode {self.mode}: not sent"
            else:
                ok, detail = done[int(sw)]["ok"], done[int(sw)]["detail"]
            results.append({"block": b, "switch": sw, "ok": ok, "detail": detail})
            if ok:
                restored.append(b)
                self.out.discard(b)
        return results, restored

    def restore_step(self, r: Reading) -> dict | None:
        """The next restoration stage when it is due and the frequency allows: close its blocks'
        switches (highest tier first), record the stage with its pickup under cold-load pickup."""
        rs = self.restoring
        if time.monotonic() < rs["next_at"]:
            return None
        if r.hz < RESTORE_MIN_HZ:
            rs["next_at"] = time.monotonic() + 1.0
            return None
        blocks, pf_checks, held = rs["stages"][rs["k"]], [], []
        try:
            blocks, later, held, pf_checks = checked_stage(
                self.checker, set(self.out), blocks,
                {b: float(self.out_info.get(b, {}).get("mw", 0.0)) for b in blocks}, self.clpu().factor)
            rs["stages"][rs["k"] + 1:rs["k"] + 1] = later
        except Exception as exc:  # noqa: BLE001 - the margin still limits the stage; say the check failed
            log.exception("responder: the restoration stage's power flow check failed")
            pf_checks = [{"blocks": blocks, "ok": None, "violations": [f"check failed: {type(exc).__name__}: {exc}"]}]
        results, restored = self._close_blocks(blocks)
        # a close refused, or not checked back in time (a late report on a busy machine), would leave
        # its block out with nothing coming back to it: it is commanded again at the end (closing a
        # closed breaker is harmless and checks back), and held for an operator after the last try
        tries = rs.setdefault("tries", {})
        retry, gave_up = [], []
        for c in results:
            if not c["ok"] and c["switch"] is not None and self.mode == "automatic" and c["block"] in self.out:
                tries[c["block"]] = tries.get(c["block"], 0) + 1
                (retry if tries[c["block"]] <= RESTORE_RETRIES else gave_up).append(c["block"])
        if retry:
            rs["stages"].append(retry)
        pickup = sum(float(self.out_info.get(b, {}).get("mw", 0.0)) for b in restored) * self.clpu().factor
        body = {"summary": f"restoration stage {rs['k'] + 1}/{len(rs['stages'])} after {rs['event']}: "
                           f"{len(restored)} of {len(blocks)} blocks back, pickup up to {pickup:.3f} MW with "
                           f"cold-load pickup at {r.hz:.3f} Hz", "event": rs["event"], "stage": rs["k"] + 1,
                "commands": results, "restored": restored, "pickup_mw": round(pickup, 4), "hz_before": r.hz,
                "power_flow": pf_checks, "held_for_operator": held + gave_up, "retry_later": retry}
        if held:
            body["summary"] += f"; {len(held)} blocks held for an operator: the power flow shows a violation with them"
        if retry:
            body["summary"] += f"; {len(retry)} closes not checked back, commanded again at the end"
        if gave_up:
            body["summary"] += (f"; {len(gave_up)} blocks held for an operator: their close failed "
                                f"{RESTORE_RETRIES + 1} times")
        self.held.extend(b for b in held + gave_up if b not in self.held)
        rec = self.ledger.append("restoration", body, mode="automatic", actor="responder", ref=rs["plan"])
        self._report_restoration(rec.id, body)
        rs["k"] += 1
        self._journal({"decision": rec.id, "event": rs["event"], "restored_stage": rs["k"], "of": len(rs["stages"]),
                       "restored": restored, "committed_at": time.time()})
        rs["next_at"] = time.monotonic() + self.s.responder_restore_interval_s
        if rs["k"] >= len(rs["stages"]):
            self.restoring = None
        return {"decision": rec.id, "restoration": True, **body}

    # ------------------------------------------------------------------ Dagster
    def _report(self, decision_id: str, body: dict, latency: float) -> None:
        if not self.report:
            return
        from dagster import AssetMaterialization, MetadataValue

        try:
            self.instance.report_runless_asset_event(AssetMaterialization(
                asset_key="critical_responses", metadata={
                    "decision": decision_id, "summary": body["summary"], "trigger": body["trigger"]["kind"],
                    "stages": MetadataValue.json(body.get("stages", [])),
                    "frequency_hz": body["trigger"].get("hz"), "loading_pct": body["trigger"].get("loading_pct"),
                    "lost_mw": body["trigger"].get("lost_mw"), "latency_seconds": round(latency, 3),
                    "blocks_opened": sum(1 for c in body["commands"] if c.get("ok")),
                    "shed_mw": body["shed_mw"], "table_basis": body["table"]["basis"],
                    "table_age_seconds": body["table"].get("age_s"), "flags": MetadataValue.json(body["flags"]),
                    "batteries": MetadataValue.json(body.get("batteries", {})),
                    "commands": MetadataValue.json(body["commands"]), "source": "responder"}))
        except Exception:  # noqa: BLE001 - recorded and acted already
            log.exception("responder: reporting to Dagster failed")

    def _report_restoration(self, decision_id: str, body: dict) -> None:
        if not self.report:
            return
        from dagster import AssetMaterialization, MetadataValue

        try:
            self.instance.report_runless_asset_event(AssetMaterialization(
                asset_key="restoration_plan", metadata={
                    "decision": decision_id, "summary": body["summary"], "event": str(body["event"]),
                    "stage": body["stage"], "restored": MetadataValue.json(body["restored"]),
                    "pickup_mw": body["pickup_mw"], "frequency_hz": body["hz_before"],
                    "power_flow": MetadataValue.json(body["power_flow"]),
                    "held_for_operator": MetadataValue.json(body["held_for_operator"]),
                    "retry_later": MetadataValue.json(body.get("retry_later", [])), "source": "responder"}))
        except Exception:  # noqa: BLE001 - recorded and acted already
            log.exception("responder: reporting to Dagster failed")

    def _report_flag(self, r: Reading, why: str) -> None:
        if not self.report:
            return
        from dagster import AssetObservation

        try:
            self.instance.report_runless_asset_event(AssetObservation(
                asset_key="critical_responses", metadata={
                    "flagged_reading": why, "hz": r.hz if r.hz == r.hz else "NaN", "quality": r.quality,
                    "sent_at": r.ts.isoformat(timespec="milliseconds"), "flagged_total": self.stats.flagged}))
        except Exception:  # noqa: BLE001
            log.exception("responder: reporting a flag to Dagster failed")

    # ------------------------------------------------------------------ the loop
    def start(self) -> None:
        self.fallback()
        self.table(utcnow())  # read the table now, so the first event does not
        self.poll_battery_base()
        self._fresh_state = self.fetch_state()
        threading.Thread(target=self._state_fetcher, name="responder-state", daemon=True).start()
        self.client.start()

    def keep_open(self) -> None:
        """c104 sometimes leaves a new connection muted after its start-up sequence (seen on loopback
        about one time in three): a connection muted for over a second is unmuted and interrogated,
        so monitoring messages flow and the present values arrive."""
        st = self.connection.state
        if st != c104.ConnectionState.OPEN_MUTED:
            self._muted_since = None
            return
        now = time.monotonic()
        self._muted_since = getattr(self, "_muted_since", None) or now
        if now - self._muted_since >= 1.0:
            log.info("responder: connection muted after start-up; unmuting and interrogating")
            self.connection.unmute()
            self.connection.interrogation(common_address=plan.COMMON_ADDRESS, wait_for_response=False)
            self._muted_since = None

    def wait_connected(self, timeout_s: float = 10.0) -> bool:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if self.connection.state == c104.ConnectionState.OPEN:
                return True
            self.keep_open()
            time.sleep(0.02)
        log.warning("responder: not connected to %s:%s after %.0f s (state %s)", self.host, self.port, timeout_s,
                    self.connection.state)
        return False

    def run(self, until: datetime | None = None) -> ResponderStats:
        from gridpipeline.common.stall import StallWatch

        self.stall_watch = StallWatch("responder").start()  # stopped below; the process's own health
        self.start()
        while not self.stop.is_set() and (until is None or utcnow() < until):
            self.keep_open()
            if time.monotonic() - self._shed_polled >= SHED_POLL_S:
                self._shed_polled = time.monotonic()
                try:
                    self.shed_tick()
                except Exception:  # noqa: BLE001 - the next poll tries again
                    log.exception("responder: following the shed schedule failed")
                self.poll_battery_base()
                fresh, self._fresh_state = getattr(self, "_fresh_state", None), None
                self.apply_state(fresh)
                try:
                    self.restore_requests()
                except Exception:  # noqa: BLE001 - the next poll tries again
                    log.exception("responder: carrying out an operator's restore request failed")
            try:
                r = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self.handle(r)
            except Exception:  # noqa: BLE001 - one bad reading must not stop the responder
                log.exception("responder: handling a reading failed")
        self.client.stop()
        self.stall_watch.stop()
        return self.stats

    def drain(self, timeout_s: float = 0.0) -> list[dict]:
        """Handle every queued reading (tests and benchmarks drive the responder this way)."""
        out = []
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                r = self.queue.get(timeout=max(deadline - time.monotonic(), 0.0) if timeout_s else 0.0)
            except queue.Empty:
                return out
            res = self.handle(r)
            if res:
                out.append(res)

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop.set())
