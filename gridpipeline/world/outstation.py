"""The simulator's RTUs as an IEC 60870-5-104 outstation (c104, on loopback), with the area's frequency
in real time.

What a utility's SCADA front end would receive from its substations, over the address plan of
``common.iec104``:

* **frequency**, every 0.1 s when it moved by 10 mHz or more, and at least once a second, time-tagged
  when it leaves the outstation (CP56Time2a);
* **breaker status** of every controllable switch, spontaneously on change;
* **loading** of the transformers and feeder-head lines, once a second (a power flow of the world at
  that instant, with the switch states, weather events, demand response and battery setpoints in force);
* **local generation** at the substation, once a second.

Switch commands arrive as single commands with select-before-operate. The world obeys: the switch
changes state at once in the outstation, the area's frequency model counts the load it disconnects
or reconnects from then on (from the start of a loss until the area is back near 50 Hz, when what
is still shed or discharging is settled into the balance: the local grid's own moves between events
do not stand for the whole area's), and the 30-second telemetry shows it from the next 5-minute window the
simulator computes (it simulates a window when the window starts). A switch listed as faulty in the
events file refuses the command (negative confirmation).

Frequency events come from the simulator's events file (``<home>/world/events.json``, the list the
cloud fronts use): ``{"kind": "generation_loss", "start": ISO, "share": 0.06, "minutes": 20}`` (a loss
of 6 % of the area's load in generation for 20 minutes: then the lost unit is back), ``{"kind":
"frequency_glitch", "start": ISO, "value": "nan" | Hz}`` (one bad reading: invalid quality for NaN, a
spike otherwise), ``{"kind": "switch_fault", "switch": id}``, ``{"kind": "breaker_trip", "switch": id,
"start": ISO, "minutes": 30}`` (a protection trip: the breaker opens by itself and reports it
spontaneously; a field crew closes it again after ``minutes``).

The model (``world.frequency``) runs on the wall clock in a thread; what it did (frequency, loss,
local relief, switch operations) goes to the truth store for scoring (``truth_frequency``,
``truth_switching``), which the pipeline never reads.
"""

import logging
import math
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import c104
import numpy as np
import pandas as pd

from gridpipeline.common import iec104 as plan
from gridpipeline.world.frequency import AreaParams, FrequencyModel

log = logging.getLogger(__name__)

STEP_S = 0.1
REPORT_DEADBAND_HZ = 0.01


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def controllable_switches(net) -> pd.Index:
    """Switches a control room works remotely (circuit breakers and load-break switches)."""
    sw = net.switch
    typ = sw["type"].astype(str) if "type" in sw else pd.Series("", index=sw.index)
    return sw.index[typ.isin(["CB", "LBS"]).to_numpy()]


_BASE_GRAPHS: dict[int, object] = {}
_BASE_LOCK = threading.Lock()


def _base_graph(net):
    """The network's graph with every switch closed (cached per network object): built once, never
    changed, so threads can take copies of it."""
    import pandapower.topology as top

    with _BASE_LOCK:
        g = _BASE_GRAPHS.get(id(net))
        if g is None:
            g = top.create_nxgraph(net, respect_switches=False, include_out_of_service=False)
            _BASE_GRAPHS[id(net)] = g
        return g


def energized_loads(net, closed: dict[int, bool]) -> np.ndarray:
    """(n_load,) bool: loads connected to an external grid with the switch states ``closed`` (switches
    not named keep the network's state). Pure: the network is only read, so the simulator's and the
    outstation's threads may call it at once."""
    import networkx as nx

    g = _base_graph(net).copy()
    sw = net.switch
    state = sw.closed.astype(bool).to_dict()
    state.update({int(k): bool(v) for k, v in closed.items()})
    for s, c in state.items():
        if c:
            continue
        et, el = sw.et.at[s], int(sw.element.at[s])
        key = ("switch", s) if et == "b" else ("line", el) if et == "l" else ("trafo", el) if et == "t" else None
        if key is None:
            continue
        for u, v, k in [e for e in g.edges(keys=True) if e[2][0] == key[0] and int(e[2][1]) == key[1]] \
                if et == "b" else list(_edges_of(g, net, et, el)):
            if g.has_edge(u, v, k):
                g.remove_edge(u, v, k)
    live: set = set()
    for b in net.ext_grid.bus[net.ext_grid.in_service.astype(bool)]:
        if int(b) in g:
            live |= set(nx.node_connected_component(g, int(b)))
    return net.load.bus.isin(live).to_numpy() & net.load.in_service.astype(bool).to_numpy()


def _edges_of(g, net, et: str, el: int):
    """The graph edges of line or transformer ``el``."""
    if et == "l":
        a, b = int(net.line.from_bus.at[el]), int(net.line.to_bus.at[el])
        table = "line"
    else:
        a, b = int(net.trafo.hv_bus.at[el]), int(net.trafo.lv_bus.at[el])
        table = "trafo"
    if g.has_node(a) and g.has_node(b):
        for k in list(g.get_edge_data(a, b, default={})):
            if isinstance(k, tuple) and k[0] == table and int(k[1]) == el:
                yield a, b, k


@dataclass
class FieldDynamics:
    """The real-time state the outstation reports: frequency, switch states, the relief they give."""

    sim: object  # world.scada.ScadaSimulator
    area: AreaParams = field(default_factory=AreaParams)
    share: float | None = None

    def __post_init__(self) -> None:
        self._inj = None  # (time, the world's injections then): load_now's once-a-second copy
        net = self.sim.world.net
        self.switches = list(controllable_switches(net))
        self.closed = {int(s): bool(net.switch.closed.at[s]) for s in self.switches}
        self._resume_switches()
        self._energized = energized_loads(net, self.closed)
        peak = float(self.sim.world.injections_at(pd.date_range("2026-01-15 17:00", periods=1, tz="UTC")
                                                  ).load_p_mw.sum())
        self.model = FrequencyModel(self.area, share=self.share or max(peak, 1e-3) / self.area.load_mw)
        self.base_energized: np.ndarray | None = None  # at the start of the present event
        self.base_battery_mw = 0.0
        self._in_event = False
        self.faulty: set[int] = set()
        self.events: list[dict] = []
        self.lock = threading.Lock()

    def _resume_switches(self) -> None:
        """A field keeps its switches where they were while the simulator was down: each switch's last
        operation in the world's own record (``truth_switching``) holds again, for the outstation, the
        frequency model and the telemetry alike."""
        path = getattr(self.sim, "truth_path", None)
        if path is None or not Path(path).exists():
            return
        try:
            con = self.sim._truth_con().cursor()
            try:
                rows = con.execute("SELECT switch_id, arg_max(closed, ts), max(ts) FROM truth_switching "
                                   "WHERE result <> 'refused (switch fault)' GROUP BY switch_id").fetchall()
            finally:
                con.close()
        except Exception as exc:  # noqa: BLE001 - no record yet (a new world): the network's states hold
            log.debug("outstation: no switching record to resume from (%s)", exc)
            return
        moved = []
        for sw, closed, ts in rows:
            if int(sw) in self.closed and bool(closed) != self.closed[int(sw)]:
                self.closed[int(sw)] = bool(closed)
                moved.append((pd.Timestamp(ts).to_pydatetime(), int(sw), bool(closed)))
        if moved:
            self.sim.switch_events = sorted([*self.sim.switch_events, *moved])
            log.info("outstation: %d switches resume the state the field left them in", len(moved))

    # ------------------------------------------------------------------ the world's response
    def load_now(self, now: datetime) -> np.ndarray:
        """Each load's MW now, with cold-load pickup. The world's injections (about 40 ms of pandas) are
        taken once a second: the loop asks every 0.1 s in an event, and loads do not move in 0.1 s."""
        times = pd.DatetimeIndex([pd.Timestamp(now, tz="UTC")])
        cached = self._inj
        if cached is None or abs((now - cached[0]).total_seconds()) >= 1.0:
            cached = self._inj = (now, self.sim.world.injections_at(times))
        inj = self.sim.cold_load_pickup(times, cached[1])
        return inj.load_p_mw[0]

    def battery_discharge_mw(self) -> float:
        """What the batteries give now (+ discharge): a setpoint in force, else their scheduled power."""
        out = 0.0
        mono = time.monotonic()
        for u in self.sim.fleet.batteries:
            c = u.commanded(mono)
            out += float(np.clip(c if c is not None else u.p_mw, -u.p_charge_max_mw, u.p_discharge_max_mw))
        return out

    def relief_mw(self, now: datetime) -> tuple[float, float]:
        """(load disconnected since the event began, extra battery discharge since then) in MW."""
        if self.base_energized is None:
            return 0.0, 0.0
        p = self.load_now(now)
        with self.lock:
            off = self.base_energized & ~self._energized
        return float(p[off].sum()), self.battery_discharge_mw() - self.base_battery_mw

    def set_switch(self, switch: int, closed: bool, now: datetime, force: bool = False) -> bool:
        """Operate a switch (a command the outstation received); False if it refuses (faulty).
        ``force``: the field itself operates it (a protection trip, a crew closing it)."""
        if switch not in self.closed or (switch in self.faulty and not force):
            return False
        with self.lock:
            self.closed[switch] = bool(closed)
            self._energized = energized_loads(self.sim.world.net, self.closed)
        # a new sorted list swapped in (an in-place sort empties the list for a moment, and the
        # simulator's thread reads it)
        self.sim.switch_events = sorted([*self.sim.switch_events, (now, switch, bool(closed))])
        return True

    def loss_mw(self, now: datetime) -> float:
        total = 0.0
        for e in self.events:
            if e.get("kind") != "generation_loss":
                continue
            start = datetime.fromisoformat(e["start"])
            end = start + timedelta(minutes=float(e.get("minutes", 30)))
            if start <= now < end:
                total += float(e.get("share", 0.0)) * self.area.load_mw + float(e.get("mw", 0.0))
        return total

    def glitch(self, now: datetime, dt: timedelta) -> float | None:
        """A bad reading due in ``(now - dt, now]``: its value (NaN for an invalid one)."""
        for e in self.events:
            if e.get("kind") == "frequency_glitch":
                t = datetime.fromisoformat(e["start"])
                if now - dt < t <= now:
                    v = e.get("value", "nan")
                    return float("nan") if str(v).lower() == "nan" else float(v)
        return None

    def step(self, now: datetime, dt_s: float) -> float:
        loss = self.loss_mw(now)
        if loss > 0 and not self._in_event:
            # an event begins: its relief counts from here; the last event's relief (blocks still
            # out, batteries still discharging) and what secondary control holds stay in the balance
            # as settled, so the frequency carries on unchanged
            self.model.rebase(sum(self.relief_mw(now)))
            with self.lock:
                self.base_energized = self._energized.copy()
            self.base_battery_mw = self.battery_discharge_mw()
        self._in_event = loss > 0
        shed, batt = self.relief_mw(now)
        self.model.loss_mw = loss
        f = self.model.step(dt_s, shed + batt)
        if loss == 0 and self.base_energized is not None and abs(self.model.df_hz) < 0.005:
            # the area is back: what is still shed or discharging is settled, and from here the
            # local grid's own moves (the dispatcher's batteries, restorations) no longer stand for
            # the whole area's
            self.model.rebase(shed + batt)
            self.base_energized = None
        self.last = {"loss_mw": loss, "shed_mw": shed, "battery_mw": batt}
        return f


class Outstation:
    """The IEC 104 server and the real-time loop (see the module docstring)."""

    def __init__(self, sim, host: str = "127.0.0.1", port: int = plan.DEFAULT_PORT, area: AreaParams | None = None,
                 events_path: Path | None = None):
        self.c104 = c104
        self.sim = sim
        self.dyn = FieldDynamics(sim, area or AreaParams())
        self.events_path = Path(events_path) if events_path else getattr(sim, "events_path", None)
        self._events_mtime = None
        self.server = c104.Server(ip=host, port=port, tick_rate_ms=50, select_timeout_ms=5000)
        self.port = port
        st = self.server.add_station(common_address=plan.COMMON_ADDRESS)
        T = c104.Type
        self.freq = st.add_point(io_address=plan.IOA_FREQUENCY, type=T.M_ME_TF_1)
        self.gen = st.add_point(io_address=plan.IOA_GENERATION, type=T.M_ME_TF_1)
        self.status, self.commands = {}, {}
        for s in self.dyn.switches:
            self.status[s] = st.add_point(io_address=plan.STATUS + int(s), type=T.M_SP_TB_1)
            self.status[s].value = self.dyn.closed[int(s)]
            cmd = st.add_point(io_address=plan.COMMAND + int(s), type=T.C_SC_NA_1,
                               command_mode=c104.CommandMode.SELECT_AND_EXECUTE)
            cmd.on_receive(callable=self._on_command)
            self.commands[s] = cmd
        net = sim.world.net
        self.loading = {("trafo", int(k)): st.add_point(io_address=plan.LOADING_TRAFO + int(k), type=T.M_ME_TF_1)
                        for k in net.trafo.index}
        self.loading.update({("line", int(k)): st.add_point(io_address=plan.LOADING_LINE + int(k), type=T.M_ME_TF_1)
                             for k in plan.feeder_heads(net)})
        self.stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending_status: list[tuple[int, object]] = []  # (switch, cause of transmission)
        self.trips: list[dict] = []
        self._trip_state: dict[tuple, str] = {}  # (switch, start) -> 'open' | 'closed again'
        self._to_switch: list[tuple[int, bool, datetime]] = []  # commands accepted, not yet applied
        self.sent_frequency = 0
        self._truth_rows: list[tuple] = []
        self._switch_rows: list[tuple] = []

    # ------------------------------------------------------------------ commands from the master
    def _on_command(self, point: c104.Point, previous_info: c104.Information,
                    message: c104.IncomingMessage) -> c104.ResponseState:  # c104 checks these annotations
        return self._command(point, message)

    def _command(self, point, message):
        """Confirm or refuse at once; the switching itself (topology, the world's switch events) is done
        by the loop thread within a step, so c104's thread never waits on it."""
        c104 = self.c104
        s = int(point.io_address) - plan.COMMAND
        closed = bool(point.value)
        now = _utcnow()
        ok = s in self.dyn.closed and s not in self.dyn.faulty
        self._switch_rows.append((now, s, closed, "accepted" if ok else "refused (switch fault)"))
        if ok:
            self._to_switch.append((s, closed, now))
        log.info("outstation: switch %s %s: %s", s, "close" if closed else "open", "accepted" if ok else "refused")
        return c104.ResponseState.SUCCESS if ok else c104.ResponseState.FAILURE

    # ------------------------------------------------------------------ events
    def _read_events(self) -> None:
        from gridpipeline.world.events import read_events

        events, self._events_mtime = read_events(self.events_path, self._events_mtime)
        if events is None:
            return
        self.dyn.events = [e for e in events if e.get("kind") in ("generation_loss", "frequency_glitch")]
        self.dyn.faulty = {int(e["switch"]) for e in events if e.get("kind") == "switch_fault" and "switch" in e}
        self.trips = [e for e in events if e.get("kind") == "breaker_trip"]

    def _trip(self, now: datetime) -> None:
        """Protection trips from the events file: open at ``start``, closed by a crew ``minutes`` later;
        each reported spontaneously and recorded in the truth store."""
        for e in self.trips:
            try:
                sw, start = int(e["switch"]), pd.Timestamp(e["start"]).tz_localize(None).to_pydatetime()
            except (KeyError, ValueError, TypeError):
                continue
            if sw not in self.dyn.closed:
                continue
            key = (sw, start)
            state = self._trip_state.get(key)
            back = start + timedelta(minutes=float(e.get("minutes", 30.0)))
            if state is None and start <= now < back:
                self.dyn.set_switch(sw, False, now, force=True)
                self._trip_state[key] = "open"
                self._switch_rows.append((now, sw, False, "trip"))
                self._pending_status.append((sw, self.c104.Cot.SPONTANEOUS))
                log.info("outstation: breaker %s tripped", sw)
            elif state == "open" and now >= back:
                self.dyn.set_switch(sw, True, now, force=True)
                self._trip_state[key] = "closed again"
                self._switch_rows.append((now, sw, True, "closed by the field crew"))
                self._pending_status.append((sw, self.c104.Cot.SPONTANEOUS))
                log.info("outstation: breaker %s closed again by the field crew", sw)

    # ------------------------------------------------------------------ the loop
    def _transmit_float(self, point, value: float, quality=None) -> None:
        c104 = self.c104
        point.info = c104.ShortInfo(actual=float(value), quality=quality or c104.Quality(),
                                    recorded_at=datetime.now(UTC))
        point.transmit(cause=c104.Cot.SPONTANEOUS)

    def _loop(self) -> None:
        c104 = self.c104
        last_f, last_sent = None, 0.0
        next_t = time.monotonic()
        while not self.stop_event.is_set():
            now = _utcnow()
            self._read_events()
            while self._to_switch:
                sw, closed, at = self._to_switch.pop(0)
                if self.dyn.set_switch(sw, closed, at):
                    self._pending_status.append((sw, c104.Cot.RETURN_INFO_REMOTE))
            self._trip(now)
            # the breakers' check-back first: it must not wait on the area's step (cold-load pickup, relief)
            while self._pending_status:
                s, cause = self._pending_status.pop(0)
                p = self.status[s]
                p.info = c104.SingleInfo(on=self.dyn.closed[s], recorded_at=datetime.now(UTC))
                p.transmit(cause=cause)
            f = self.dyn.step(now, STEP_S)
            mono = time.monotonic()
            glitch = self.dyn.glitch(now, timedelta(seconds=STEP_S))
            if glitch is not None:
                if math.isnan(glitch):
                    self._transmit_float(self.freq, 0.0, c104.Quality.Invalid)
                else:
                    self._transmit_float(self.freq, glitch)
                self.sent_frequency += 1
            elif last_f is None or abs(f - last_f) >= REPORT_DEADBAND_HZ or mono - last_sent >= 1.0:
                self._transmit_float(self.freq, f)
                last_f, last_sent = f, mono
                self.sent_frequency += 1
            self._truth_rows.append((now, f, self.dyn.last["loss_mw"], self.dyn.last["shed_mw"],
                                     self.dyn.last["battery_mw"]))
            next_t += STEP_S
            self.stop_event.wait(max(next_t - time.monotonic(), 0.0))

    def _slow(self, now: datetime) -> None:
        """Once a second: loading and generation from a power flow of the instant, truth rows out."""
        try:
            times = pd.DatetimeIndex([pd.Timestamp(now, tz="UTC")])
            inj = self.sim._fronts(times, self.sim.world.injections_at(times))
            if getattr(self.sim, "vens", None) is not None:
                inj = self.sim.vens.apply(times, inj)
            inj = self.sim.cold_load_pickup(times, inj)
            bats = self.sim.fleet.batteries
            if len(bats) == inj.storage_p_mw.shape[1]:  # what each battery does now (pandapower sign: + charging)
                mono = time.monotonic()
                p = np.array([-(c if (c := u.commanded(mono)) is not None else u.p_mw) for u in bats])
                lim = np.array([u.p_discharge_max_mw for u in bats])
                inj = replace(inj, storage_p_mw=np.clip(p, -lim, lim)[None, :])
            sw = self.sim.world.net.switch
            closed = sw.closed.to_numpy(dtype=bool).copy()
            for s, c in self.dyn.closed.items():
                closed[sw.index.get_loc(s)] = c
            st = self.sim.engine.solve(inj, switch_closed=closed[None, :])
            for kind, idx in self.loading:
                col = list(getattr(st, f"{kind}_index")).index(idx)
                v = getattr(st, f"{kind}_loading_percent")[0, col]
                self._transmit_float(self.loading[(kind, idx)], 0.0 if np.isnan(v) else float(v))
            self._transmit_float(self.gen, float(np.nansum(inj.sgen_p_mw[0])))
        except Exception:  # noqa: BLE001 - a failed second of loading readings must not stop the frequency
            log.exception("outstation: loading readings failed")
        self._flush_truth()

    def _flush_truth(self) -> None:
        path = getattr(self.sim, "truth_path", None)
        if path is None or not (self._truth_rows or self._switch_rows):
            self._truth_rows.clear()
            return
        rows, self._truth_rows = self._truth_rows, []
        sw, self._switch_rows = self._switch_rows, []
        try:
            con = self.sim._truth_con().cursor()
            con.execute("CREATE TABLE IF NOT EXISTS truth_frequency (ts TIMESTAMP, hz DOUBLE, loss_mw DOUBLE, "
                        "shed_mw DOUBLE, battery_mw DOUBLE)")
            con.execute("CREATE TABLE IF NOT EXISTS truth_switching (ts TIMESTAMP, switch_id INTEGER, closed BOOLEAN, "
                        "result VARCHAR)")
            con.executemany("INSERT INTO truth_frequency VALUES (?, ?, ?, ?, ?)", rows)
            if sw:
                con.executemany("INSERT INTO truth_switching VALUES (?, ?, ?, ?)", sw)
            con.close()
        except Exception:  # noqa: BLE001 - scoring data; never stop the field for it
            log.exception("outstation: writing the truth rows failed")

    def _slow_loop(self) -> None:
        """Once a second, in a thread of its own: the loading and generation readings need a power flow
        of the world (a few hundred ms on a busy machine), which must never hold up the 0.1-s loop that
        switches breakers and reports their check-back (in a bench run it delayed reports past 600 ms)."""
        while not self.stop_event.wait(1.0):
            self._slow(_utcnow())

    def start(self) -> int:
        self.server.start()
        self._thread = threading.Thread(target=self._loop, name="iec104-outstation", daemon=True)
        self._thread.start()
        self._slow_thread = threading.Thread(target=self._slow_loop, name="iec104-outstation-slow", daemon=True)
        self._slow_thread.start()
        return self.port

    def stop(self) -> None:
        self.stop_event.set()
        for th in (self._thread, getattr(self, "_slow_thread", None)):
            if th is not None:
                th.join(5)
        self.server.stop()
