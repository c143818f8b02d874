"""The utility's OpenADR 2.0b VTN (openleadr, HTTP on loopback), run by the live dispatcher.

* VENs register by name; only the VENs the load policy knows (``load.dr.ven_id`` of each contract,
  ``ven-<class>`` for the price-responsive aggregators) are accepted, others are refused and logged.
* :meth:`Vtn.call` offers event-based calls (``SIMPLE`` level 1 over the call's window, programme
  ``oadr://gridpipeline/interruptible``); :meth:`Vtn.publish_tou` sends a day's time-of-use tariff as
  an ``ELECTRICITY_PRICE`` event (programme ``oadr://gridpipeline/tou``).
* The VENs' answers (optIn / optOut) arrive on openleadr's thread and are queued; the dispatcher
  drains the queue from its own loop (:meth:`Vtn.answers`), so every ledger write happens on one
  thread. A VEN that has not answered within the policy's ``answer_timeout_min`` is reported as
  ``no answer``: flagged, and no longer counted on.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import warnings
from datetime import UTC, datetime, timedelta

log = logging.getLogger(__name__)

VTN_ID = "GRIDPIPELINE_VTN"
PATH = "/OpenADR2/Simple/2.0b"


def _openleadr():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # signxml's DSA deprecation, at import
        import openleadr
    logging.getLogger("openleadr").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # every VEN polls every few seconds
    return openleadr


def url(host: str, port: int) -> str:
    return f"http://{host}:{port}{PATH}"


def _aware(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


class Vtn:
    """The VTN server on its own thread and event loop."""

    def __init__(self, known_vens: set[str], host: str = "127.0.0.1", port: int = 18080, poll_s: float = 5.0):
        self.known = set(known_vens)
        self.host, self.port, self.poll_s = host, port, poll_s
        self.registered: dict[str, datetime] = {}
        self.refused: list[str] = []
        self._answers: queue.Queue = queue.Queue()
        self._sent: dict[str, dict] = {}  # event_id -> {ven_id, sent_at, answered}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self.error: BaseException | None = None

    # ------------------------------------------------------------------ server
    def _register(self, registration_info):
        name = registration_info.get("ven_name")
        if name not in self.known:
            self.refused.append(name)
            log.warning("vtn: registration of unknown VEN %r refused", name)
            return False
        self.registered[name] = datetime.now(UTC).replace(tzinfo=None)
        log.info("vtn: VEN %s registered", name)
        return name, f"reg-{name}"

    def _lookup(self, ven_id):
        if ven_id in self.registered:
            return {"ven_id": ven_id, "ven_name": ven_id, "registration_id": f"reg-{ven_id}", "fingerprint": None}
        return {}

    def _on_opt(self, ven_id, event_id, opt_type):
        sent = self._sent.get(event_id)
        if sent is not None:
            sent["answered"] = True
        self._answers.put({"event_id": event_id, "ven_id": ven_id, "opt": opt_type,
                           "at": datetime.now(UTC).replace(tzinfo=None)})

    def _run(self) -> None:
        ol = _openleadr()
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self.server = ol.OpenADRServer(vtn_id=VTN_ID, http_host=self.host, http_port=self.port,
                                           requested_poll_freq=timedelta(seconds=self.poll_s),
                                           show_fingerprint=False, ven_lookup=self._lookup)
            self.server.add_handler("on_create_party_registration", self._register)
            import contextlib
            import io

            with contextlib.redirect_stdout(io.StringIO()):  # openleadr prints a banner
                loop.run_until_complete(self.server.run())
        except BaseException as exc:  # noqa: BLE001 - reported to the starter
            self.error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self.server.stop())
        loop.close()

    def start(self, timeout_s: float = 10.0) -> Vtn:
        self._thread = threading.Thread(target=self._run, name="vtn", daemon=True)
        self._thread.start()
        self._ready.wait(timeout_s)
        if self.error is not None:
            raise RuntimeError(f"the OpenADR VTN could not start on {self.host}:{self.port}: {self.error}")
        log.info("vtn: OpenADR 2.0b VTN on %s", url(self.host, self.port))
        return self

    def stop(self) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _in_loop(self, fn, *args, **kw):
        async def go():
            return fn(*args, **kw)

        return asyncio.run_coroutine_threadsafe(go(), self._loop).result(timeout=10)

    # ------------------------------------------------------------------ events
    def call(self, calls) -> list[str]:
        """Offer each :class:`~gridpipeline.load.dr.DrCall`; returns the event ids queued."""
        from gridpipeline.common.openadr import EVENT_PROGRAMME

        out = []
        now = datetime.now(UTC).replace(tzinfo=None)
        for c in calls:
            interval = {"dtstart": _aware(c.start), "duration": c.end - c.start, "signal_payload": 1.0}
            # known before it is queued: an answer can come back before add_event returns
            self._sent[c.event_id] = {"ven_id": c.ven_id, "sent_at": now, "answered": False, "start": c.start,
                                      "end": c.end}
            try:
                self._in_loop(self.server.add_event, ven_id=c.ven_id, signal_name="SIMPLE", signal_type="level",
                              intervals=[interval], callback=self._on_opt, event_id=c.event_id,
                              market_context=EVENT_PROGRAMME, notification_period=timedelta(minutes=c.notice_min))
            except BaseException:
                self._sent.pop(c.event_id, None)
                raise
            out.append(c.event_id)
        return out

    def cancel(self, ven_id: str, event_id: str) -> None:
        """End an event early: its status becomes cancelled, and the VEN sees it at its next poll."""
        self._in_loop(self.server.cancel_event, ven_id, event_id)

    def publish_tou(self, day: datetime, tariff, vens: list[str], event_id_for=lambda v, d: f"tou-{v}-{d:%Y%m%d}",
                    zone: str | None = None) -> list[str]:
        """A day's time-of-use tariff ((start, duration, EUR/MWh) intervals) to each aggregator VEN; with
        ``zone``, for that zone's customers only (the event's target group, ``group_id``): the nodal tariff
        of a feeder."""
        from gridpipeline.common.openadr import PRICE_PROGRAMME

        out = []
        now = datetime.now(UTC).replace(tzinfo=None)
        for v in vens:
            eid = event_id_for(v, day)
            if eid in self._sent:
                continue
            intervals = [{"dtstart": _aware(s), "duration": d, "signal_payload": round(p / 1000.0, 6)}
                         for s, d, p in tariff]  # EUR/kWh, the unit openleadr's price signals carry
            # a tariff's day may have begun: only the answer timeout applies (start None)
            self._sent[eid] = {"ven_id": v, "sent_at": now, "answered": False, "start": None,
                               "end": tariff[-1][0] + tariff[-1][1], "zone": None if zone is None else str(zone)}
            target = {} if zone is None else {"targets": [{"ven_id": v, "group_id": str(zone)}]}
            if zone is not None:  # the zone's earlier tariff, once answered, is superseded: off the queue
                self._drop({e for e, st in self._sent.items() if st.get("zone") == str(zone) and st["ven_id"] == v
                            and st["answered"]})
            self._in_loop(self.server.add_event, ven_id=v, signal_name="ELECTRICITY_PRICE", signal_type="price",
                          intervals=intervals, callback=self._on_opt, event_id=eid, market_context=PRICE_PROGRAMME,
                          **target)
            out.append(eid)
        return out

    def prune(self, now: datetime, keep: timedelta = timedelta(hours=1)) -> int:
        """Drop events that ended more than ``keep`` ago from openleadr's queues (it never does, and
        re-sends every queued event to its VEN on each change); returns how many."""
        old = {eid for eid, s in self._sent.items() if s.get("end") is not None and s["end"] < now - keep}
        if not old or self._loop is None:
            return 0

        self._drop(old)
        return len(old)

    def _drop(self, old: set) -> None:
        """Take events off openleadr's queues and out of the record of what was sent."""
        if not old or self._loop is None:
            return

        def drop():
            for ven, evs in self.server.events.items():
                self.server.events[ven] = [e for e in evs
                                           if getattr(getattr(e, "event_descriptor", None), "event_id", None) not in old]
            for eid in old:
                self.server.event_callbacks.pop(eid, None)

        self._in_loop(drop)
        for eid in old:
            self._sent.pop(eid, None)

    def answers(self, now: datetime, timeout: timedelta) -> list[dict]:
        """Answers received since the last call, plus ``no answer`` for each event offered more than
        ``timeout`` ago (or starting) without one."""
        out = []
        while True:
            try:
                out.append(self._answers.get_nowait())
            except queue.Empty:
                break
        for eid, s in self._sent.items():
            late = now - s["sent_at"] >= timeout or (s["start"] is not None and now >= s["start"])
            if not s["answered"] and not s.get("flagged") and late:
                s["flagged"] = True
                out.append({"event_id": eid, "ven_id": s["ven_id"], "opt": "no answer", "at": now,
                            "registered": s["ven_id"] in self.registered})
        return out


__all__ = ["Vtn", "url"]
