"""Demand response: which interruptible contracts to call before any involuntary shed, the event
windows their notice allows, and what each call delivered against a baseline.

Programmes (one mechanism, OpenADR 2.0b, ``orchestration.vtn``):

* **event-based**: each interruptible contract of the load policy is a VEN
  (``ven-load-<load id>``). A call asks the customer to take its contracted interruptible MW off
  over a window that starts no earlier than its notice time allows, lasts no longer than its
  longest interruption, and counts against its interruptions per day and per month.
* **price-based**: a static time-of-use tariff (the policy's ``demand_response.tou_eur_mwh``) sent
  as an ``ELECTRICITY_PRICE`` event per day to the class aggregators' VENs (``ven-<class>``), until
  the economics stage publishes nodal tariffs.

Calls are chosen for the deficit a dispatch plan leaves (``schedule.deficit_from_plan``): cheapest
compensation first, only where the notice allows, and the plan counts on ``expected_delivery`` of
the contracted MW (customers under-deliver). The shed schedule then covers what is left, so DR is
always called before involuntary shedding whenever the notice time allows.

**Baselines** (NAESB M&V): *high 5 of 10* (the mean, over the event's clock window, of the 5
highest of the last 10 prior weekdays without an event, with a same-day adjustment from the two
hours before notice) when 10 such days of readings exist; otherwise *meter before* (the mean of the
hour before the event starts, held over the event), the NAESB "meter before / meter after" type.
The baseline used is stated on each row.

Pure functions on frames; the dispatcher, the VTN and the ``dr_events`` asset call them.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from gridpipeline.common.openadr import EVENT_PROGRAMME, PRICE_PROGRAMME, aggregator_ven, contract_ven
from gridpipeline.load.policy import Contract, Policy

STEP = timedelta(minutes=5)
#: the event ids of calls that deliver a block sold on the day-ahead market (market.bids): delivered
#: whatever the grid's deficit, so never ended early, and settled as part of the market position
SOLD_PREFIX = "da-"
#: opt states that count as delivering (an answer still due counts until the answer timeout)
IN_FORCE = ("optIn", "pending")


def ven_id(contract: Contract) -> str:
    return contract_ven(contract.load_id)


@dataclass(frozen=True)
class DrCall:
    """One event offered to one VEN."""

    event_id: str
    ven_id: str
    contract: str
    load_id: int
    start: datetime
    end: datetime
    mw: float  # contracted interruptible MW asked for
    expected_mw: float  # what the plan counts on
    compensation_eur_mwh: float
    notice_min: float

    def record(self) -> dict:
        d = asdict(self)
        d["start"], d["end"] = str(self.start), str(self.end)
        return d


@dataclass
class DrHistory:
    """Per VEN, from the ledger: events called today and this month, and the events still in force
    (their window and expected MW) with the latest answer."""

    today: dict[str, int] = field(default_factory=dict)
    month: dict[str, int] = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)  # {event_id, ven_id, start, end, expected_mw, opt}


def ended_early(end_records: list[dict]) -> dict[str, datetime]:
    """Event id -> when the utility ended it early (the ledger's ``dr_end`` records)."""
    out = {}
    for r in end_records:
        at = pd.Timestamp(r["body"]["ended_at"]).to_pydatetime()
        for eid in r["body"].get("event_ids", []):
            out[str(eid)] = min(out.get(str(eid), at), at)
    return out


def history_from_records(event_records: list[dict], response_records: list[dict], now: datetime,
                         end_records: list[dict] = ()) -> DrHistory:
    """``dr_event`` records (bodies with ``calls``) and ``dr_response`` records (``event_id``,
    ``opt``) of the ledger, as a :class:`DrHistory` at ``now``. An event counts against the day and
    month it starts in unless its VEN opted out; one the utility ended early (``end_records``,
    ``dr_end``) is in force until then."""
    ends = ended_early(list(end_records))
    opt = {}
    for r in sorted(response_records, key=lambda r: str(r["created_at"])):
        b = r["body"]
        opt[b.get("event_id")] = b.get("opt", "pending")
    h = DrHistory()
    day, month = pd.Timestamp(now).normalize(), pd.Timestamp(now).to_period("M")
    for r in event_records:
        if not r["body"].get("sent", True):
            continue  # recorded, never offered (advisory, or no VTN)
        for c in r["body"].get("calls", []):
            o = opt.get(c["event_id"], "pending")
            start, end = pd.Timestamp(c["start"]), pd.Timestamp(c["end"])
            if o not in ("optOut", "no answer", "not sent"):
                if start.normalize() == day:
                    h.today[c["ven_id"]] = h.today.get(c["ven_id"], 0) + 1
                if start.to_period("M") == month:
                    h.month[c["ven_id"]] = h.month.get(c["ven_id"], 0) + 1
            e = end.to_pydatetime()
            if c["event_id"] in ends:
                e = max(min(e, ends[c["event_id"]]), start.to_pydatetime())
            h.events.append({"event_id": c["event_id"], "ven_id": c["ven_id"], "start": start.to_pydatetime(),
                             "end": e, "expected_mw": float(c["expected_mw"]), "opt": o,
                             "decision_id": r["id"]})
    return h


def events_to_end(history: DrHistory, deficit: pd.Series, now: datetime, dt: timedelta = STEP,
                  tol_mw: float = 1e-6) -> list[dict]:
    """The events in force to end early because supply is back: those whose remaining window
    (from ``now``) the plan's ``deficit`` before DR (MW per step start) covers and finds no deficit
    in. An event running past the deficit's last step is kept (its end is not known to be free), and
    so is one that delivers a block sold on the day-ahead market (``SOLD_PREFIX``)."""
    if not len(deficit):
        return []
    t = pd.DatetimeIndex(deficit.index)
    if t.tz is not None:
        t = t.tz_convert("UTC").tz_localize(None)
    last = t.max() + dt
    out = []
    for e in history.events:
        if e["opt"] not in IN_FORCE or e["end"] <= now:
            continue
        if e["end"] > last or str(e["event_id"]).startswith(SOLD_PREFIX):
            continue  # runs past what the plan sees, or sold: the market is owed it
        lo = max(pd.Timestamp(e["start"]), pd.Timestamp(now))
        win = (t + dt > lo) & (t < pd.Timestamp(e["end"]))
        if win.any() and (deficit.to_numpy(float)[win] <= tol_mw).all():
            out.append(e)
    return out


def in_force_mw(history: DrHistory, steps: pd.DatetimeIndex, dt: timedelta = STEP) -> np.ndarray:
    """(T,) MW the plan counts on from events already called and not refused, per step starting at
    ``steps``."""
    out = np.zeros(len(steps))
    t0 = steps.to_numpy()
    for e in history.events:
        if e["opt"] not in IN_FORCE:
            continue
        cover = (t0 >= np.datetime64(e["start"])) & (t0 + np.timedelta64(dt) <= np.datetime64(e["end"]))
        out[cover] += e["expected_mw"]
    return out


def _ceil_step(t: datetime, dt: timedelta = STEP) -> datetime:
    s = dt.total_seconds()
    epoch = datetime(2000, 1, 1)
    return epoch + timedelta(seconds=math.ceil((t - epoch).total_seconds() / s) * s)


def choose_calls(deficit: pd.Series, policy: Policy, history: DrHistory, now: datetime,
                 expected_delivery: float = 0.8, dt: timedelta = STEP,
                 event_id=lambda: str(uuid.uuid4())) -> tuple[list[DrCall], pd.Series, list[dict]]:
    """Calls for ``deficit`` (MW per step, indexed by step start): (calls, the deficit left for the
    shed schedule, contracts not called and why).

    What events already in force are expected to deliver comes off first. Then, cheapest
    compensation first, each contract with interruptions left is called over the first run of
    remaining deficit it can reach: from the later of the run's start and ``now`` plus its notice
    (rounded up to a step), for at most its longest interruption."""
    idx = pd.DatetimeIndex(deficit.index)
    left = np.clip(deficit.to_numpy(float) - in_force_mw(history, idx, dt), 0.0, None)
    calls: list[DrCall] = []
    skipped: list[dict] = []
    busy = {e["ven_id"] for e in history.events if e["opt"] in IN_FORCE and e["end"] > now}
    t0 = idx.to_pydatetime()
    for c in sorted(policy.contracts, key=lambda c: (c.compensation_eur_mwh, -c.interruptible_mw)):
        v = ven_id(c)
        if not (left > 1e-6).any():
            break
        why = None
        if v in busy:
            why = "an event of this contract is in force"
        elif history.today.get(v, 0) >= c.max_per_day:
            why = f"{c.max_per_day} interruptions today already (max_per_day)"
        elif history.month.get(v, 0) >= c.max_per_month:
            why = f"{c.max_per_month} interruptions this month already (max_per_month)"
        elif c.interruptible_mw <= 0:
            why = "no interruptible capacity"
        if why:
            skipped.append({"ven_id": v, "contract": c.name, "why": why})
            continue
        earliest = _ceil_step(now + timedelta(minutes=c.notice_min), dt)
        reach = np.array([t >= earliest for t in t0]) & (left > 1e-6)
        if not reach.any():
            skipped.append({"ven_id": v, "contract": c.name,
                            "why": f"notice {c.notice_min:g} min: the deficit ends before {earliest:%H:%M}"})
            continue
        first = int(np.argmax(reach))
        n_max = max(int(c.max_duration_min // (dt.total_seconds() / 60)), 1)
        last = first
        while last + 1 < len(left) and last + 1 - first < n_max and left[last + 1] > 1e-6:
            last += 1
        exp = c.interruptible_mw * expected_delivery
        call = DrCall(event_id=event_id(), ven_id=v, contract=c.name, load_id=c.load_id, start=t0[first],
                      end=t0[last] + dt, mw=c.interruptible_mw, expected_mw=round(exp, 6),
                      compensation_eur_mwh=c.compensation_eur_mwh, notice_min=c.notice_min)
        calls.append(call)
        left[first:last + 1] = np.clip(left[first:last + 1] - exp, 0.0, None)
    return calls, pd.Series(left, index=deficit.index, name="deficit_after_dr_mw"), skipped


# ---------------------------------------------------------------------- measurement
def interval_means(readings: pd.DataFrame, minutes: int = 5) -> pd.DataFrame:
    """``readings`` (load_id, ts, mw) as mean MW per load and ``minutes`` interval (interval start)."""
    if readings.empty:
        return pd.DataFrame(columns=["load_id", "interval", "mw"])
    r = readings.assign(interval=pd.to_datetime(readings.ts).dt.floor(f"{minutes}min"))
    return r.groupby(["load_id", "interval"], as_index=False).mw.mean()


def baseline(series: pd.Series, start: datetime, end: datetime, event_days: set = frozenset(),
             x: int = 5, y: int = 10, minutes: int = 5) -> tuple[pd.Series, str]:
    """The baseline MW of one load over ``[start, end)`` per interval, and its method.

    ``series``: mean MW per interval start (the load's history, the event included or not), on the
    5-minute steps events start and end on, so no slot straddles the event's edges (or its payback)."""
    s = series.sort_index()
    slots = pd.date_range(pd.Timestamp(start).floor(f"{minutes}min"), pd.Timestamp(end), freq=f"{minutes}min",
                          inclusive="left")
    day0 = pd.Timestamp(start).normalize()
    days = []
    for k in range(1, 30):
        d = day0 - pd.Timedelta(days=k)
        if d.weekday() >= 5 or d.date() in event_days:
            continue
        vals = s.reindex(slots - (day0 - d))
        if vals.notna().all():
            days.append(vals.to_numpy(float))
        if len(days) == y:
            break
    if len(days) == y:
        top = sorted(days, key=lambda v: -float(v.mean()))[:x]
        base = np.mean(top, axis=0)
        # same-day adjustment: the two hours before notice against the same hours on those days
        pre = pd.date_range(pd.Timestamp(start) - pd.Timedelta(hours=2), pd.Timestamp(start), freq=f"{minutes}min",
                            inclusive="left")
        today = s.reindex(pre)
        if today.notna().all() and base.mean() > 0:
            ref = np.mean([s.reindex(pre - pd.Timedelta(days=k)).mean() for k in range(1, 11)])
            if ref and np.isfinite(ref):
                base = base * float(np.clip(today.mean() / ref, 0.8, 1.2))
        return pd.Series(base, index=slots), f"high {x} of {y}"
    before = s[(s.index >= pd.Timestamp(start) - pd.Timedelta(hours=1)) & (s.index < pd.Timestamp(start))]
    if len(before) == 0:
        return pd.Series(np.nan, index=slots), "none: no readings before the event"
    return pd.Series(float(before.mean()), index=slots), "meter before (1 h)"


def performance(series: pd.Series, start: datetime, end: datetime, event_days: set = frozenset(),
                minutes: int = 5) -> dict:
    """Baseline, measured and delivered MW (means over the event) of one load, and the method."""
    base, method = baseline(series, start, end, event_days, minutes=minutes)
    meas = series.reindex(base.index)
    ok = meas.notna() & base.notna()
    if not ok.any():
        return {"baseline_mw": None, "measured_mw": None, "delivered_mw": None, "baseline": method,
                "intervals": 0}
    b, m = float(base[ok].mean()), float(meas[ok].mean())
    return {"baseline_mw": round(b, 5), "measured_mw": round(m, 5), "delivered_mw": round(b - m, 5),
            "baseline": method, "intervals": int(ok.sum())}


# ---------------------------------------------------------------------- time-of-use tariff
def tou_intervals(policy_dr: dict, day: datetime) -> list[tuple[datetime, timedelta, float]]:
    """The day's static time-of-use tariff as hourly (start, duration, EUR/MWh) intervals (UTC).
    ``policy_dr['tou_eur_mwh']`` maps "HH" (the hour a price starts) to the price."""
    tou = {int(k): float(v) for k, v in (policy_dr.get("tou_eur_mwh") or {"0": 150.0}).items()}
    hours = sorted(tou)
    out = []
    d0 = pd.Timestamp(day).normalize().to_pydatetime()
    for h in range(24):
        start_h = max([k for k in hours if k <= h], default=hours[-1])
        out.append((d0 + timedelta(hours=h), timedelta(hours=1), tou[start_h]))
    return out


__all__ = ["DrCall", "DrHistory", "EVENT_PROGRAMME", "PRICE_PROGRAMME", "aggregator_ven", "baseline",
           "choose_calls", "history_from_records", "in_force_mw", "interval_means", "performance",
           "tou_intervals", "ven_id", "event_rows", "EVENT_COLUMNS", "mask_outages", "ended_early", "events_to_end"]


# ---------------------------------------------------------------------- the events table
EVENT_COLUMNS = ["event_id", "decision_id", "called_at", "ven_id", "contract", "load_id", "start", "end", "mw",
                 "expected_mw", "compensation_eur_mwh", "opt", "answered_at", "flag", "status", "baseline",
                 "baseline_mw", "measured_mw", "delivered_mw", "delivered_share", "delivered_mwh", "payment_eur",
                 "interrupted_min"]


def mask_outages(series: pd.Series, outages: pd.DataFrame | None, minutes: int = 5) -> pd.Series:
    """``series`` (mean MW per interval start) with every interval that overlaps one of the load's
    involuntary interruptions (``outages``: start, end) set to NaN: a drop the grid made is not the
    customer's delivery, and a day with an outage is no baseline day."""
    if outages is None or not len(outages) or not len(series):
        return series
    out = series.copy()
    t0 = out.index
    t1 = t0 + pd.Timedelta(minutes=minutes)
    hit = np.zeros(len(out), dtype=bool)
    for o in outages.itertuples():
        hit |= (t0 < pd.Timestamp(o.end)) & (t1 > pd.Timestamp(o.start))
    out[hit] = np.nan
    return out


def _overlap_min(outages: pd.DataFrame | None, start: datetime, end: datetime) -> float:
    if outages is None or not len(outages):
        return 0.0
    a = outages.start.clip(lower=pd.Timestamp(start))
    b = outages.end.clip(upper=pd.Timestamp(end))
    return float(((b - a).dt.total_seconds().clip(lower=0.0)).sum() / 60.0)


def event_rows(event_records: list[dict], response_records: list[dict], readings: pd.DataFrame,
               now: datetime, outages: pd.DataFrame | None = None, end_records: list[dict] = ()) -> pd.DataFrame:
    """One row per call of the ledger's ``dr_event`` records: who was called, the answer (or its
    absence), and, once the event has ended, the baseline, the measured and the delivered MW from
    the load's own telemetry (``readings``: load_id, ts, mw) and the payment it earns (delivered
    MWh, never negative, times the contract's compensation).

    ``outages`` (load_id, start, end): the involuntary interruptions the ledger records (a shed, an
    under-frequency stage, a trip). Their intervals count neither in the measurement nor in the
    baseline, and an event is paid only for the time the load was supplied (``interrupted_min``).
    An event the utility ended early (``end_records``, ``dr_end``) is measured and paid up to then."""
    ends = ended_early(list(end_records))
    answers = {}
    for r in sorted(response_records, key=lambda r: str(r["created_at"])):
        b = r["body"]
        if b.get("event_id"):
            answers[b["event_id"]] = (b.get("opt"), r["created_at"], b.get("flag"))
    means = interval_means(readings)
    by_load = {int(k): g.set_index("interval").mw for k, g in means.groupby("load_id")} if len(means) else {}
    event_days: dict[int, set] = {}
    calls = [(r, c) for r in event_records if r["body"].get("sent", True) for c in r["body"].get("calls", [])]
    for _, c in calls:
        event_days.setdefault(int(c["load_id"]), set()).add(pd.Timestamp(c["start"]).date())
    rows = []
    for r, c in calls:
        start, end = pd.Timestamp(c["start"]).to_pydatetime(), pd.Timestamp(c["end"]).to_pydatetime()
        opt, at, flag = answers.get(c["event_id"], ("pending", None, None))
        if c["event_id"] in ends and ends[c["event_id"]] < end:
            end = max(ends[c["event_id"]], start)
            flag = "; ".join(x for x in (flag, f"ended early at {end:%H:%M}: supply back") if x)
        row = {"event_id": c["event_id"], "decision_id": r["id"], "called_at": pd.Timestamp(r["created_at"]).tz_localize(None)
               if pd.Timestamp(r["created_at"]).tzinfo else pd.Timestamp(r["created_at"]),
               "ven_id": c["ven_id"], "contract": c["contract"], "load_id": int(c["load_id"]), "start": start,
               "end": end, "mw": float(c["mw"]), "expected_mw": float(c["expected_mw"]),
               "compensation_eur_mwh": float(c["compensation_eur_mwh"]), "opt": opt,
               "answered_at": None if at is None else pd.Timestamp(at).tz_localize(None) if pd.Timestamp(at).tzinfo
               else pd.Timestamp(at), "flag": flag}
        if opt in ("optOut", "no answer", "not sent"):
            row["status"] = "refused" if opt == "optOut" else "no answer" if opt == "no answer" else "not sent"
        elif now < start:
            row["status"] = "scheduled"
        elif now < end:
            row["status"] = "active"
        else:
            s = by_load.get(int(c["load_id"]))
            own = None if outages is None else outages[outages.load_id == int(c["load_id"])]
            cut = _overlap_min(own, start, end)
            row["interrupted_min"] = round(cut, 2)
            if s is not None:
                s = mask_outages(s, own)
            perf = performance(s, start, end, event_days.get(int(c["load_id"]), set()) - {start.date()}) \
                if s is not None else {"baseline": "none: no readings", "delivered_mw": None}
            row.update({k: perf.get(k) for k in ("baseline", "baseline_mw", "measured_mw", "delivered_mw")})
            row["status"] = "measured" if perf.get("delivered_mw") is not None else (
                "interrupted: not measurable" if cut > 0 else "ended, not measurable")
            if cut > 0:
                row["flag"] = "; ".join(x for x in (row.get("flag"), f"interrupted {cut:.0f} min by the grid: "
                                                    "not paid for that time") if x)
        d = row.get("delivered_mw")
        if d is not None:
            hours = max((end - start).total_seconds() / 60 - float(row.get("interrupted_min") or 0.0), 0.0) / 60
            row["delivered_share"] = round(d / row["mw"], 4) if row["mw"] else None
            row["delivered_mwh"] = round(d * hours, 5)
            row["payment_eur"] = round(max(d, 0.0) * hours * row["compensation_eur_mwh"], 2)
        rows.append(row)
    out = pd.DataFrame(rows, columns=EVENT_COLUMNS)
    for col in ("baseline_mw", "measured_mw", "delivered_mw", "delivered_share", "delivered_mwh", "payment_eur",
                "interrupted_min"):
        out[col] = pd.to_numeric(out[col], errors="coerce")
    for col in ("baseline", "flag", "status", "opt"):
        out[col] = out[col].astype(object)
    return out
