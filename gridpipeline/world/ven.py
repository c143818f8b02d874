"""The simulator's demand-response customers as OpenADR 2.0b VENs (openleadr clients on loopback).

Each interruptible contract's customer is a VEN (``ven-load-<load id>``) and each price-responsive
class aggregator is one (``ven-<class>``). They know their own contracts (the customer's copy: the
same load policy file) and nothing of the pipeline.

**Event-based.** A VEN opts out when the event breaks its contract (notice shorter than agreed,
longer than its longest interruption, no interruptions left this day or month) or, rarely, for its
own reasons (5 %, keyed by the event); otherwise it opts in and, over the event, takes off an
uncertain share of its contracted MW: a draw from N(0.85, 0.12) clipped to [0.3, 1.05], never more
than 95 % of what it draws then. A small payback follows: 20 % of the energy not taken is taken
over the half hour after the event.

**Price-based.** An aggregator per programme opts in to each tariff and its price-responsive share of
the class's load answers with its elasticity: ``p * (1 + share * elasticity * (price / mean price - 1))``,
the mean that of the tariff the price came with, weighted by the load the customers expect in each of
its intervals (their habits: the world's load profile without noise, ``expected_load``). So the
customers keep their energy over the tariff's window: what a dear hour sheds, the cheap hours take
(``sum expected load x (price / mean - 1) = 0``), load shifted and not saved. Without
``expected_load`` the mean is the plain one over the intervals' durations.
A programme is a class (households, commerce) or a part of one (``of``: EV charging and flexible heat
within the households' load, with their own share and a stronger elasticity); programmes on the same
loads add up.

The simulator applies both to the loads of each window it computes (:meth:`VenField.apply`), so
the telemetry shows them, and keeps the delivered reduction (``truth``) for scoring. A VEN listed
as silent (``silent``, or ``{"kind": "ven_silent", "ven": ...}`` in the events file at start) never
runs: the VTN sees no answer.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

PAYBACK_SHARE = 0.2
PAYBACK = timedelta(minutes=30)


def _u(*key) -> np.random.Generator:
    import hashlib

    h = hashlib.sha256(repr(key).encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


def _naive(t) -> datetime:
    t = pd.Timestamp(t)
    return (t.tz_convert("UTC").tz_localize(None) if t.tzinfo else t).to_pydatetime()


@dataclass
class Commitment:
    event_id: str
    ven: str
    load_pos: int
    start: datetime
    end: datetime
    mw: float  # what the customer takes off (before the 95 % cap)


@dataclass
class VenField:
    """The VENs and what they committed to; ``apply`` is the world's response."""

    net: object
    policy: object  # CustomerTerms (or anything with .contracts and .demand_response)
    load_class: dict[int, str]  # load id -> class
    seed: int = 0
    silent: set = field(default_factory=set)
    #: load id -> zone (feeder): a tariff targeted at a zone (the event's group_id) moves that zone's
    #: customers only
    load_zone: dict[int, str] = field(default_factory=dict)
    #: UTC times -> (times, loads) MW each load is expected to draw (the world's profile without
    #: noise, in the net's load order): the weights of the mean a tariff's prices are judged against
    expected_load: object = None

    def __post_init__(self) -> None:
        from gridpipeline.common.openadr import aggregator_ven, contract_ven

        self.pos = {int(i): k for k, i in enumerate(self.net.load.index)}
        self.contracts = {contract_ven(c.load_id): c for c in self.policy.contracts if int(c.load_id) in self.pos}
        pr = self.policy.demand_response.get("price_responsive") or {}
        # a programme answers for a share of one class's load: its own name is the class unless it names
        # the class it is part of (``of``: EV charging and flexible heat within the households' load)
        self.aggregators = {aggregator_ven(c): (str(r.get("of", c)), float(r["share"]), float(r["elasticity"]))
                            for c, r in pr.items()}
        self.class_pos = {}
        for cls, _, _ in self.aggregators.values():
            self.class_pos[cls] = np.array([self.pos[i] for i, c in self.load_class.items() if c == cls and i in self.pos],
                                           dtype=int)
        self.zone_pos = {}
        for i, z in self.load_zone.items():
            if i in self.pos:
                self.zone_pos.setdefault(str(z), []).append(self.pos[i])
        self.zone_pos = {z: np.array(sorted(v), dtype=int) for z, v in self.zone_pos.items()}
        self.commitments: list[Commitment] = []
        #: (aggregator VEN, zone or None for every zone) -> (start, end, EUR/kWh, the tariff's mean) intervals
        self.tariffs: dict[tuple[str, str | None], list[tuple[datetime, datetime, float]]] = {}
        self.answers: list[dict] = []
        self.lock = threading.Lock()
        self._clients: list = []
        self._loop = None
        self._thread = None

    @property
    def ven_ids(self) -> list[str]:
        return sorted(self.contracts) + sorted(self.aggregators)

    # ------------------------------------------------------------------ deciding
    def decide(self, ven: str, event: dict, received: datetime) -> str:
        """optIn or optOut for ``event`` (openleadr's dict), received at ``received`` (UTC naive)."""
        ctx = event["event_descriptor"].get("market_context", "")
        sig = event["event_signals"][0]
        intervals = sig["intervals"]
        start = _naive(intervals[0]["dtstart"])
        end = max(_naive(i["dtstart"]) + i["duration"] for i in intervals)
        eid = event["event_descriptor"]["event_id"]
        if ven in self.aggregators:
            if sig["signal_name"] != "ELECTRICITY_PRICE":
                return self._answer(ven, eid, "optOut", "an aggregator answers price events only")
            zone = next((str(t["group_id"]) for t in event.get("targets") or [] if t.get("group_id")), None)
            new = [(_naive(i["dtstart"]), _naive(i["dtstart"]) + i["duration"], float(i["signal_payload"]))
                   for i in intervals]
            # the customers judge each price against the mean of the tariff it came with, weighted by
            # the energy they expect to draw in each interval (so they keep it over the window)
            mu = self._reference_mean(new, self.aggregators[ven][0], zone)
            new = [(s, e, p, mu) for s, e, p in new]
            with self.lock:
                # a newer tariff replaces the older one from its first interval on
                old = [t for t in self.tariffs.get((ven, zone), []) if t[1] > received - timedelta(days=1)
                       and t[0] < new[0][0]]
                self.tariffs[(ven, zone)] = old + new
            return self._answer(ven, eid, "optIn", "tariff taken" + (f" for zone {zone}" if zone else ""))
        c = self.contracts.get(ven)
        if c is None or "interruptible" not in ctx:
            return self._answer(ven, eid, "optOut", "not a programme of this customer")
        day = [m for m in self.commitments if m.ven == ven and m.start.date() == start.date()]
        month = [m for m in self.commitments if m.ven == ven and (m.start.year, m.start.month) == (start.year, start.month)]
        if (start - received).total_seconds() < c.notice_min * 60 - 1:
            return self._answer(ven, eid, "optOut", f"notice {(start - received).total_seconds() / 60:.1f} min "
                                f"< contract {c.notice_min:g} min")
        if (end - start).total_seconds() > c.max_duration_min * 60 + 1:
            return self._answer(ven, eid, "optOut", "longer than the contract's longest interruption")
        if len(day) >= c.max_per_day or len(month) >= c.max_per_month:
            return self._answer(ven, eid, "optOut", "no interruptions left under the contract")
        rng = _u(self.seed, "ven", eid)
        if rng.random() < 0.05:
            return self._answer(ven, eid, "optOut", "customer's own reasons")
        share = float(np.clip(rng.normal(0.85, 0.12), 0.3, 1.05))
        with self.lock:
            self.commitments.append(Commitment(eid, ven, self.pos[int(c.load_id)], start, end,
                                               c.interruptible_mw * share))
        return self._answer(ven, eid, "optIn", f"delivers {share:.0%} of {c.interruptible_mw:g} MW")

    def _reference_mean(self, intervals, cls: str, zone: str | None) -> float:
        """The mean of ``intervals`` ((start, end, price)) that a class's customers (in ``zone``, or all)
        judge each price against: weighted by each interval's duration times the load they expect at
        its middle (:attr:`expected_load`), or by duration alone without it or without such load."""
        if not intervals:
            return float("nan")
        price = np.array([p for _, _, p in intervals], float)
        hours = np.array([(e - s).total_seconds() / 3600.0 for s, e, _ in intervals], float)
        w = hours.copy()
        cols = self.class_pos.get(cls)
        if zone is not None and cols is not None:
            cols = cols[np.isin(cols, self.zone_pos.get(zone, np.zeros(0, int)))]
        if self.expected_load is not None and cols is not None and len(cols):
            mid = pd.DatetimeIndex([s + (e - s) / 2 for s, e, _ in intervals]).tz_localize("UTC")
            try:
                mw = np.asarray(self.expected_load(mid), float)[:, cols].sum(axis=1)
            except Exception:  # the customers fall back on the plain mean
                log.exception("vens: expected load unavailable; the plain mean stands")
                mw = np.ones(len(intervals))
            if np.isfinite(mw).all() and (mw > 0).any():
                w = hours * np.clip(mw, 0.0, None)
        return float((price * w).sum() / w.sum()) if w.sum() > 0 else float(price.mean())

    def update(self, ven: str, event: dict, received: datetime) -> str:
        """A changed event: cancelled, the customer puts its load back from now (the payback follows);
        any other change is answered as the event was."""
        eid = event["event_descriptor"]["event_id"]
        status = str(event["event_descriptor"].get("event_status", "")).lower()
        if status == "cancelled":
            with self.lock:
                for m in self.commitments:
                    if m.event_id == eid and m.ven == ven and m.end > received:
                        m.end = max(received, m.start)
            log.info("ven %s: event %s cancelled by the utility; load back", ven, eid)
            return "optIn"
        prior = [a["opt"] for a in self.answers if a["event_id"] == eid and a["ven"] == ven]
        return prior[-1] if prior else self.decide(ven, event, received)

    def _answer(self, ven, eid, opt, why) -> str:
        self.answers.append({"ven": ven, "event_id": eid, "opt": opt, "why": why,
                             "at": datetime.now(UTC).replace(tzinfo=None)})
        log.info("ven %s: %s %s (%s)", ven, opt, eid, why)
        return opt

    # ------------------------------------------------------------------ the world's response
    def apply(self, times: pd.DatetimeIndex, inj):
        """``inj`` with the customers' response at ``times``; appends what was taken off to ``truth``."""
        naive = times.tz_convert("UTC").tz_localize(None) if times.tz is not None else times
        with self.lock:
            commits = list(self.commitments)
            tariffs = {k: list(v) for k, v in self.tariffs.items()}
        if not commits and not tariffs:
            return inj
        load = inj.load_p_mw.copy()
        t = naive.to_numpy()
        for m in commits:
            on = (t >= np.datetime64(m.start)) & (t < np.datetime64(m.end))
            pay = (t >= np.datetime64(m.end)) & (t < np.datetime64(m.end + PAYBACK))
            if on.any():
                load[on, m.load_pos] -= np.minimum(m.mw, 0.95 * load[on, m.load_pos])
            if pay.any():
                hours = (m.end - m.start).total_seconds() / 3600
                load[pay, m.load_pos] += PAYBACK_SHARE * m.mw * hours / (PAYBACK.total_seconds() / 3600)
        # each programme's relative change: the static tariff (every zone) first, a zone's own tariff
        # overriding it where it has a price; programmes on the same loads add up
        change: dict[str, np.ndarray] = {}
        for (ven, zone), tar in sorted(tariffs.items(), key=lambda kv: kv[0][1] is not None):
            cls, share, el = self.aggregators[ven]
            cols = self.class_pos.get(cls)
            if zone is not None and cols is not None:
                cols = cols[np.isin(cols, self.zone_pos.get(zone, np.zeros(0, int)))]
            if cols is None or not len(cols) or not tar:
                continue
            price = np.full(len(t), np.nan)
            mean = np.full(len(t), np.nan)
            for s, e, p, mu in tar:
                at = (t >= np.datetime64(s)) & (t < np.datetime64(e))
                price[at], mean[at] = p, mu
            on = ~np.isnan(price) & (mean > 0)
            if not on.any():
                continue
            c = change.setdefault(ven, np.zeros_like(load))
            c[np.ix_(on, cols)] = (share * el * (price[on] / mean[on] - 1.0))[:, None]
        factor = 1.0 + sum(change.values()) if change else 1.0
        return replace(inj, load_p_mw=load * factor)

    # ------------------------------------------------------------------ the VENs
    def start(self, vtn_url: str, poll_s: float = 5.0) -> VenField:
        self._thread = threading.Thread(target=self._run, args=(vtn_url,), name="vens", daemon=True)
        self._thread.start()
        return self

    def _run(self, vtn_url: str) -> None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from openleadr import OpenADRClient
        logging.getLogger("openleadr").setLevel(logging.CRITICAL)  # its retries while the VTN is not up are noise
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def one(ven: str):
            while True:  # until the VTN is there and takes the registration
                c = OpenADRClient(ven_name=ven, vtn_url=vtn_url, show_fingerprint=False)

                def handler(event, ven=ven):
                    return self.decide(ven, event, datetime.now(UTC).replace(tzinfo=None))

                def update(event, ven=ven):
                    return self.update(ven, event, datetime.now(UTC).replace(tzinfo=None))

                c.add_handler("on_event", handler)
                c.add_handler("on_update_event", update)
                try:
                    await c.run()
                except Exception as exc:  # noqa: BLE001 - a VTN not up yet
                    log.debug("ven %s: %s", ven, exc)
                if c.registration_id:
                    self._clients.append(c)
                    return
                try:
                    await c.client_session.close()
                except Exception as exc:  # noqa: BLE001 - a session that never opened
                    log.debug("ven %s: closing the session: %s", ven, exc)
                await asyncio.sleep(5.0)

        for v in self.ven_ids:
            if v not in self.silent:
                loop.create_task(one(v))
        loop.run_forever()

    @property
    def registered(self) -> list[str]:
        return [c.ven_name for c in self._clients]

    def stop(self) -> None:
        if self._loop is None:
            return

        async def down():
            for c in self._clients:
                try:
                    await c.stop()
                except Exception as exc:  # noqa: BLE001 - stopping anyway
                    log.debug("ven %s: stop: %s", c.ven_name, exc)

        try:
            asyncio.run_coroutine_threadsafe(down(), self._loop).result(timeout=5)
        except Exception as exc:  # noqa: BLE001 - the loop is stopped below regardless
            log.debug("vens: stopping the clients: %s", exc)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)


@dataclass(frozen=True)
class CustomerContract:
    """A customer's own copy of its interruptible contract (what its VEN holds it to)."""

    load_id: int
    interruptible_mw: float
    max_per_day: int
    max_per_month: int
    max_duration_min: float
    notice_min: float
    name: str = ""


@dataclass(frozen=True)
class CustomerTerms:
    """The contracts and the price-responsive classes' terms, as the customers hold them."""

    contracts: tuple
    demand_response: dict


def read_terms(policy_path) -> CustomerTerms:
    """The customers' copy of their terms: the contracts and ``demand_response`` sections of the load
    policy file (the same agreement the utility holds; the world never imports the utility's parser)."""
    import yaml

    from pathlib import Path

    doc = yaml.safe_load(Path(policy_path).read_text()) or {}
    contracts = []
    for c in doc.get("contracts") or []:
        try:
            contracts.append(CustomerContract(
                int(c["load"]), float(c["interruptible_mw"]), int(c["max_per_day"]), int(c["max_per_month"]),
                float(c["max_duration_min"]), float(c["notice_min"]), str(c.get("name", ""))))
        except (KeyError, TypeError, ValueError):
            log.warning("vens: contract entry not understood, its customer has no VEN: %s", c)
    return CustomerTerms(tuple(contracts), dict(doc.get("demand_response") or {}))


def ven_field_for(world, policy_path, customers_path, seed: int = 0, silent=()) -> VenField | None:
    """The VENs of ``world`` under the terms in ``policy_path``; None when there are no contracts and no
    price-responsive classes, or the file cannot be read. Classes come from the customer registry."""
    try:
        terms = read_terms(policy_path)
    except Exception as exc:  # noqa: BLE001 - unreadable or not YAML: the world runs without DR
        log.warning("vens: the contracts are not readable, no demand response in the world: %s", exc)
        return None
    try:
        cust = pd.read_csv(customers_path)
        classes = {int(i): str(c) for i, c in zip(cust.load_id, cust["class"])}
    except (OSError, ValueError, KeyError) as exc:
        log.warning("vens: customer registry not readable (%s); price-responsive classes left out", exc)
        classes = {}
    zones = getattr(world, "zones", None)
    load_zone = {} if zones is None else {int(i): str(zones.get(b)) for i, b in world.net.load.bus.items()
                                          if b in zones.index}
    f = VenField(world.net, terms, classes, seed=seed, silent=set(silent), load_zone=load_zone,
                 expected_load=getattr(world, "expected_load_p_mw", None))
    return f if f.ven_ids else None


__all__ = ["VenField", "ven_field_for"]
