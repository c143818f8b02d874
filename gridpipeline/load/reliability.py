"""Reliability indices (IEEE 1366-2022) from the pipeline's own switching records.

An interruption is a block cut off, as the pipeline's records say: a block whose switch the
critical-event responder opened (a ``critical_response`` record; a command confirmed by the breaker's
check-back, or sent but unconfirmed, counts) until a ``restoration`` record closes it again, a block
a shed schedule's switching opened until it closes it (``shed_switching``), and the blocks behind a
breaker that tripped by itself (an ``outage`` record) until it is reported closed. Opening a block's
feeding switch also cuts every block fed through it, so a block interrupts its descendants' customers
too. A block still out is counted up to ``now``. Shed *schedules* are plans; they count once their
switching is recorded the same way.

Per interruption and load: the customers behind the load (the registry's counts), the minutes, and
the energy not supplied: the block's net load when it was opened (the response table's estimate the
record carries) times the hours, spread over the block's loads by their rated load; a block whose net
load was negative (local generation above load) counts no energy.

Indices, per day (an interruption belongs to the day it began, in UTC) and per scope (the system,
each class, each feeder):

* SAIFI = customers interrupted (sustained, > 5 minutes) / customers served;
* SAIDI = customer minutes of sustained interruption / customers served;
* CAIDI = SAIDI / SAIFI (minutes; empty when SAIFI is 0);
* MAIFI = customers momentarily interrupted (<= 5 minutes) / customers served;
* ENS = energy not supplied, MWh (sustained and momentary).

Major event days by the 2.5 beta method: alpha and beta are the mean and the standard deviation of
ln(daily system SAIDI) over the history's days with SAIDI > 0; a day whose SAIDI exceeds
T_MED = exp(alpha + 2.5 beta) is a major event day. IEEE 1366 asks for five years of history; with
fewer than ``MED_MIN_DAYS`` days the threshold is reported as unreliable and no day is excluded."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

SUSTAINED_MIN = 5.0
MED_K = 2.5
MED_MIN_DAYS = 30

INTERRUPTION_COLUMNS = ["block_id", "start", "end", "mw", "decision", "event", "still_out"]


def interruptions_from_records(records: list[dict], now: datetime) -> pd.DataFrame:
    """One row per block opened and its restoration: block_id, start, end, mw (net load when opened),
    decision (the record that opened it), event,
    still_out. ``records``: the ledger's critical_response, restoration and outage records."""
    open_: dict[int, dict] = {}
    rows = []
    for r in sorted(records, key=lambda x: x["seq"]):
        at = pd.Timestamp(r["created_at"]).tz_localize(None).to_pydatetime()
        body = r["body"]
        if r["kind"] == "critical_response":
            for c in body.get("commands", []):
                if c.get("switch") is None or not (c.get("ok") or c.get("unconfirmed")):
                    continue
                b = int(c["block"])
                if b not in open_:
                    open_[b] = {"block_id": b, "start": at, "mw": float(c.get("mw", 0.0) or 0.0),
                                "decision": r["id"], "event": body.get("event")}
        elif r["kind"] == "restoration":
            for b in body.get("restored", []):
                if int(b) in open_:
                    rows.append({**open_.pop(int(b)), "end": at, "still_out": False})
        elif r["kind"] == "shed_switching":  # a shed schedule followed in the field
            for c in body.get("commands", []):
                b = int(c["block"])
                if c.get("action") == "open" and (c.get("ok") or c.get("unconfirmed")) and b not in open_:
                    open_[b] = {"block_id": b, "start": at, "mw": float(c.get("mw", 0.0) or 0.0),
                                "decision": r["id"], "event": "shed"}
                elif c.get("action") == "close" and c.get("ok") and b in open_:
                    rows.append({**open_.pop(b), "end": at, "still_out": False})
        elif r["kind"] == "outage":  # a breaker the field operated: a protection trip, a crew closing it
            at = pd.Timestamp(body.get("at", r["created_at"])).tz_localize(None).to_pydatetime()
            for b in body.get("blocks", []):
                b = int(b)
                if body.get("tripped") and b not in open_:
                    mw = float((body.get("block_mw") or {}).get(str(b), 0.0))
                    open_[b] = {"block_id": b, "start": at, "mw": mw, "decision": r["id"], "event": "trip"}
                elif not body.get("tripped") and b in open_:
                    rows.append({**open_.pop(b), "end": at, "still_out": False})
    for b in open_.values():
        rows.append({**b, "end": max(now, b["start"]), "still_out": True})
    return pd.DataFrame(rows, columns=INTERRUPTION_COLUMNS)


def interruptions_from_switching(switching: pd.DataFrame, switch_block: pd.Series, now: datetime) -> pd.DataFrame:
    """The same rows from a switching log (ts, switch_id, closed; e.g. the simulator's record of the
    commands it obeyed), for scoring the pipeline's figures against the field. ``switch_block``:
    switch id -> the block it feeds."""
    open_: dict[int, datetime] = {}
    rows = []
    for r in switching.sort_values("ts").itertuples():
        b = switch_block.get(int(r.switch_id))
        if b is None or pd.isna(b):
            continue
        b = int(b)
        if not r.closed and b not in open_:
            open_[b] = pd.Timestamp(r.ts).to_pydatetime()
        elif r.closed and b in open_:
            rows.append({"block_id": b, "start": open_.pop(b), "end": pd.Timestamp(r.ts).to_pydatetime(), "mw": 0.0,
                         "decision": None, "event": None, "still_out": False})
    for b, t in open_.items():
        rows.append({"block_id": b, "start": t, "end": max(now, t), "mw": 0.0, "decision": None, "event": None,
                     "still_out": True})
    return pd.DataFrame(rows, columns=INTERRUPTION_COLUMNS)


def customer_interruptions(intr: pd.DataFrame, loads: pd.DataFrame, descendants) -> pd.DataFrame:
    """One row per load and continuous interruption: day, block_id (the block opened first), load_id,
    class, feeder, customers, minutes, ens_mwh, start. ``loads``: load_id, block_id, class, customers,
    feeder, rated_mw; ``descendants(block)``: the blocks fed through ``block`` (itself included).

    A load cut by two openings that overlap (a block and one it feeds) is one interruption, from the
    first cut to the last restoration. Its energy not supplied runs at its rated load times the opened
    block's net load over that block's own rated load (the load level when it was opened)."""
    cols = ["day", "block_id", "load_id", "class", "feeder", "customers", "minutes", "ens_mwh", "start"]
    if intr.empty:
        return pd.DataFrame(columns=cols)
    by_block = loads.groupby("block_id")
    parts = []
    for r in intr.itertuples():
        cut = [b for b in descendants(int(r.block_id)) if b in by_block.groups]
        if not cut:
            continue
        ld = pd.concat([by_block.get_group(b) for b in cut])
        own = float(ld[ld.block_id == r.block_id].rated_mw.clip(lower=0.0).sum())
        level = max(float(r.mw), 0.0) / own if own > 0 else 0.0
        parts.append(pd.DataFrame({"block_id": int(r.block_id), "load_id": ld.load_id.to_numpy(),
                                   "start": pd.Timestamp(r.start), "end": pd.Timestamp(r.end),
                                   "rate_mw": ld.rated_mw.clip(lower=0.0).to_numpy() * level}))
    if not parts:
        return pd.DataFrame(columns=cols)
    x = pd.concat(parts, ignore_index=True).sort_values(["load_id", "start"])
    merged = []
    for load_id, g in x.groupby("load_id", sort=False):
        cur = None
        for r in g.itertuples():
            if cur is not None and r.start <= cur["end"]:
                cur["end"] = max(cur["end"], r.end)
                cur["rate_mw"] = max(cur["rate_mw"], r.rate_mw)
                continue
            if cur is not None:
                merged.append(cur)
            cur = {"load_id": load_id, "block_id": r.block_id, "start": r.start, "end": r.end, "rate_mw": r.rate_mw}
        merged.append(cur)
    m = pd.DataFrame(merged)
    info = loads.set_index("load_id")
    m["minutes"] = (m.end - m.start).dt.total_seconds() / 60.0
    m["ens_mwh"] = m.rate_mw * m.minutes / 60.0
    m["day"] = m.start.dt.normalize()
    for c in ("class", "feeder", "customers"):
        m[c] = info[c].reindex(m.load_id).to_numpy()
    return m[cols].reset_index(drop=True)


def _scopes(df: pd.DataFrame) -> list[tuple[str, pd.Series]]:
    return [("system", pd.Series("all", index=df.index)), ("class", df["class"].astype(str)),
            ("feeder", df.feeder.astype(str))]


def indices(ci: pd.DataFrame, loads: pd.DataFrame, sustained_min: float = SUSTAINED_MIN) -> pd.DataFrame:
    """SAIFI, SAIDI, CAIDI, MAIFI and ENS per scope (system, class, feeder) over the interruptions
    ``ci`` (one period): scope, key, customers_served, customers_interrupted, customer_minutes,
    momentary_customers, saifi, saidi, caidi, maifi, ens_mwh. Every scope with customers is listed,
    interrupted or not."""
    served = loads.assign(customers=loads.customers.astype(float))
    rows = []
    sus = ci[ci.minutes > sustained_min] if len(ci) else ci
    mom = ci[ci.minutes <= sustained_min] if len(ci) else ci
    for scope, key in _scopes(served):
        n = served.customers.groupby(key).sum()
        for k, total in n.items():
            def part(df, _scope=scope, _k=k):
                if df.empty:
                    return df
                kk = dict(_scopes(df))[_scope]
                return df[kk == _k]
            s_, m_, a_ = part(sus), part(mom), part(ci)
            interrupted = float(s_.customers.sum()) if len(s_) else 0.0
            cmin = float((s_.customers * s_.minutes).sum()) if len(s_) else 0.0
            saifi = interrupted / total if total else 0.0
            saidi = cmin / total if total else 0.0
            rows.append({"scope": scope, "key": str(k), "customers_served": int(total),
                         "customers_interrupted": int(interrupted), "customer_minutes": round(cmin, 4),
                         "momentary_customers": int(m_.customers.sum()) if len(m_) else 0,
                         "saifi": saifi, "saidi": saidi, "caidi": saidi / saifi if saifi > 0 else np.nan,
                         "maifi": (float(m_.customers.sum()) / total if total and len(m_) else 0.0),
                         "ens_mwh": float(a_.ens_mwh.sum()) if len(a_) else 0.0})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class MajorEventDays:
    threshold_min: float | None  # T_MED, customer minutes per customer served
    alpha: float | None
    beta: float | None
    days_used: int
    reliable: bool
    days: tuple  # the major event days (empty when unreliable)


def major_event_days(daily_saidi: pd.Series, min_days: int = MED_MIN_DAYS, k: float = MED_K) -> MajorEventDays:
    """The 2.5 beta method on ``daily_saidi`` (day -> system SAIDI in minutes). Days with zero SAIDI
    are left out of alpha and beta (ln 0 is undefined), as IEEE 1366 does."""
    pos = daily_saidi[daily_saidi > 0]
    if len(pos) < 2:
        return MajorEventDays(None, None, None, len(pos), False, ())
    lg = np.log(pos.to_numpy(dtype=float))
    alpha, beta = float(lg.mean()), float(lg.std(ddof=1))
    t = float(np.exp(alpha + k * beta))
    reliable = len(pos) >= min_days
    days = tuple(d for d, v in daily_saidi.items() if v > t) if reliable else ()
    return MajorEventDays(t, alpha, beta, len(pos), reliable, days)


def report(ci: pd.DataFrame, loads: pd.DataFrame, days: pd.DatetimeIndex,
           sustained_min: float = SUSTAINED_MIN) -> tuple[pd.DataFrame, MajorEventDays, pd.DataFrame, pd.DataFrame]:
    """Per-day indices for ``days`` (period 'day'), the major event days from every day in ``ci``,
    and the period's indices with and without them: (daily, med, period_all, period_without_med)."""
    daily = []
    for d in days:
        part = ci[ci.day == d] if len(ci) else ci
        daily.append(indices(part, loads, sustained_min).assign(day=d))
    daily = pd.concat(daily, ignore_index=True) if daily else pd.DataFrame()
    history = ci.groupby("day").apply(
        lambda g: float((g.customers * g.minutes)[g.minutes > sustained_min].sum()), include_groups=False) \
        / float(loads.customers.sum()) if len(ci) else pd.Series(dtype=float)
    med = major_event_days(history)
    in_period = ci[ci.day.isin(days)] if len(ci) else ci
    period_all = indices(in_period, loads, sustained_min)
    period_wo = indices(in_period[~in_period.day.isin(med.days)] if len(in_period) else in_period, loads,
                        sustained_min)
    return daily, med, period_all, period_wo


def loads_table(pr, net) -> pd.DataFrame:
    """The loads with what the indices need: load_id, block_id, class, customers, feeder, rated_mw."""
    sc = net.load["scaling"].fillna(1.0) if "scaling" in net.load else 1.0
    rated = (net.load.p_mw * sc).reindex(pr.loads.load_id).to_numpy()
    feeder = pr.blocks.table.feeder.reindex(pr.loads.block_id).to_numpy()
    return pr.loads[["load_id", "block_id", "class", "customers"]].assign(
        feeder=pd.Series(feeder).astype("object").where(pd.notna(feeder), "substation").to_numpy(), rated_mw=rated)


def report_rows(day: pd.Timestamp, daily: pd.DataFrame, month_all: pd.DataFrame, month_wo: pd.DataFrame,
                computed_at: datetime) -> pd.DataFrame:
    """The rows ``load.reliability`` holds for one day's report: the day's indices and the
    month-to-date's, with and without major event days."""
    month = day.to_period("M").start_time
    parts = [daily.assign(period="day", period_start=day, without_med=False),
             month_all.assign(period="month", period_start=month, without_med=False),
             month_wo.assign(period="month", period_start=month, without_med=True)]
    out = pd.concat(parts, ignore_index=True).assign(report_day=day, computed_at=computed_at)
    return out.drop(columns=["day"], errors="ignore")
