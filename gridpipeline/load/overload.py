"""Emergency-rating and loss-of-generation watches for the critical-event responder: pure logic on the
readings the IEC 104 outstation sends once a second.

**A branch above its emergency rating.** A transformer or feeder-head line may carry its emergency
rating (``emergency_pct``, 120 % of its normal rating by default, the order of IEC 60076-7's
short-time emergency loading for distribution transformers) for minutes, not for long. When two
good readings at least ``persist_s`` apart both stand above it, the responder sheds blocks fed
through the element, least critical first by the response table's merit list, until their net load
covers the excess over the normal rating (``relief_mw``); another step follows if the element is
still above the emergency rating ``again_s`` later. When it has stayed below ``clear_pct`` for
``clear_s``, the event ends and the blocks are restored in stages, as after an under-frequency event.

**A loss of generation.** Local generation (the substation's sum) dropping by more than
``loss_mw`` (and ``loss_share`` of what it was) within ``window_s`` is a loss of generation: the
responder discharges the batteries by the response table's list, up to the lost power, so the import
the transformer must carry rises less; the dispatcher re-plans on the departure it sees in the
telemetry, and the overload watch covers what the batteries cannot.

A reading with bad quality or NaN is flagged, never acted on.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pandas as pd

EMERGENCY_PCT = 120.0
NORMAL_PCT = 100.0
CLEAR_PCT = 90.0


@dataclass(frozen=True)
class LoadingReading:
    element: tuple[str, int]  # ("trafo" | "line", pandapower index)
    ts: datetime
    pct: float
    quality: str = "good"
    received: float = 0.0


@dataclass
class OverloadResult:
    flag: str | None = None
    act: bool = False
    event: str | None = None
    ended: str | None = None


@dataclass
class OverloadWatch:
    emergency_pct: float = EMERGENCY_PCT
    clear_pct: float = CLEAR_PCT
    persist_s: float = 2.0
    again_s: float = 10.0
    clear_s: float = 60.0
    above_since: dict = field(default_factory=dict)
    events: dict = field(default_factory=dict)  # element -> {"event", "acted_at", "below_since"}

    def update(self, r: LoadingReading) -> OverloadResult:
        if r.quality != "good" or r.pct is None or not math.isfinite(r.pct):
            return OverloadResult(flag=f"loading of {r.element[0]} {r.element[1]} not acted on: quality "
                                       f"{r.quality}, value {r.pct}")
        ev = self.events.get(r.element)
        if r.pct > self.emergency_pct:
            since = self.above_since.setdefault(r.element, r.ts)
            if (r.ts - since).total_seconds() < self.persist_s:
                return OverloadResult(event=ev["event"] if ev else None)
            if ev is None:
                ev = {"event": f"overload-{r.element[0]}{r.element[1]}-{r.ts.isoformat(timespec='seconds')}",
                      "acted_at": r.ts, "below_since": None}
                self.events[r.element] = ev
                return OverloadResult(act=True, event=ev["event"])
            ev["below_since"] = None
            if ev.get("exhausted"):  # the last step found nothing more to open: recorded once, not every 10 s
                return OverloadResult(event=ev["event"])
            if (r.ts - ev["acted_at"]).total_seconds() >= self.again_s:
                ev["acted_at"] = r.ts
                return OverloadResult(act=True, event=ev["event"])
            return OverloadResult(event=ev["event"])
        self.above_since.pop(r.element, None)
        if ev is None:
            return OverloadResult()
        if r.pct < self.clear_pct:
            ev["below_since"] = ev["below_since"] or r.ts
            if (r.ts - ev["below_since"]).total_seconds() >= self.clear_s:
                del self.events[r.element]
                return OverloadResult(ended=ev["event"])
        else:
            ev["below_since"] = None
        return OverloadResult(event=ev["event"])


    def exhausted(self, event: str) -> None:
        """Nothing more can be opened for ``event``: no further steps until it ends."""
        for ev in self.events.values():
            if ev["event"] == event:
                ev["exhausted"] = True


def relief_mw(pct: float, rating_mva: float, normal_pct: float = NORMAL_PCT, margin: float = 0.05) -> float:
    """MW to take off an element at ``pct`` of ``rating_mva`` to bring it to ``normal_pct`` less a margin
    (loading is apparent power; taking active power off relieves it at least one for one at the
    power factors of distribution load, so MW for MVA errs on the safe side)."""
    return max(pct - normal_pct * (1 - margin), 0.0) / 100.0 * rating_mva


def element_rating_mva(net, element: tuple[str, int]) -> float:
    kind, idx = element
    if kind == "trafo":
        return float(net.trafo.sn_mva.at[idx])
    ln = net.line.loc[idx]
    kv = float(net.bus.vn_kv.at[ln.from_bus])
    return math.sqrt(3) * kv * float(ln.max_i_ka) * float(ln.get("parallel", 1) or 1)


def fed_through(blocks, net, element: tuple[str, int]) -> list[int]:
    """Blocks whose supply passes through ``element``: the block at its downstream end and every block
    fed through that one (for the substation's transformer, every block)."""
    kind, idx = element
    bus = int(net.trafo.lv_bus.at[idx]) if kind == "trafo" else downstream_bus(net, idx)
    b = blocks.bus_block.get(bus)
    if b is None or pd.isna(b):
        return []
    return sorted({int(x) for x in blocks.descendants(int(b))} | {int(b)})


_DEPTH: dict[int, dict] = {}


def downstream_bus(net, line: int) -> int:
    """The end of ``line`` farther from the external grid (hops over the network with every switch
    closed): a line's from/to order says nothing about the direction of supply."""
    import networkx as nx

    depth = _DEPTH.get(id(net))
    if depth is None:
        import pandapower.topology as top

        g = top.create_nxgraph(net, respect_switches=False, include_out_of_service=False)
        depth = {}
        for b in net.ext_grid.bus:
            if int(b) in g:
                for node, d in nx.single_source_shortest_path_length(g, int(b)).items():
                    depth[node] = min(d, depth.get(node, d))
        _DEPTH[id(net)] = depth
    a, b = int(net.line.from_bus.at[line]), int(net.line.to_bus.at[line])
    return a if depth.get(a, -1) > depth.get(b, -1) else b


def pick_blocks(order: pd.DataFrame, candidates: list[int], need_mw: float, exclude: set[int]) -> list[int]:
    """Blocks of the response table's merit ``order`` (least critical first) among ``candidates``,
    skipping ``exclude``, until their net load covers ``need_mw``."""
    out, got = [], 0.0
    cand = set(candidates)
    for row in order.itertuples():
        if got >= need_mw:
            break
        b = int(row.block_id)
        if b in cand and b not in exclude and float(row.mw) > 0:
            out.append(b)
            got += float(row.mw)
    return out


@dataclass
class GenerationWatch:
    """Detects a loss of local generation from the once-a-second substation generation readings."""

    loss_mw: float = 0.5
    loss_share: float = 0.2
    window_s: float = 10.0
    rearm_s: float = 300.0
    history: deque = field(default_factory=lambda: deque(maxlen=64))
    last_event_at: datetime | None = None

    def update(self, ts: datetime, mw: float, quality: str = "good") -> tuple[float, str | None]:
        """(MW lost, flag): MW lost > 0 when a loss of generation is seen now."""
        if quality != "good" or mw is None or not math.isfinite(mw):
            return 0.0, f"generation reading not acted on: quality {quality}, value {mw}"
        while self.history and (ts - self.history[0][0]).total_seconds() > self.window_s:
            self.history.popleft()
        high = max((v for _, v in self.history), default=mw)
        self.history.append((ts, mw))
        lost = high - mw
        if lost > self.loss_mw and lost > self.loss_share * max(high, 1e-9):
            if self.last_event_at is None or (ts - self.last_event_at) >= timedelta(seconds=self.rearm_s):
                self.last_event_at = ts
                self.history.clear()
                self.history.append((ts, mw))
                return float(lost), None
        return 0.0, None


def battery_relief(batteries: dict[str, float], lost_mw: float, now_mw: dict[str, float] | None = None
                   ) -> dict[str, float]:
    """Setpoints (MW, + discharge) that add ``lost_mw`` to what the batteries give now (``now_mw``, their
    present output or the setpoint they hold; 0 when unknown), shared by each one's headroom up to what
    the response table says it can discharge (``batteries``: id -> MW)."""
    now_mw = now_mw or {}
    room = {k: max(float(v) - float(now_mw.get(k, 0.0)), 0.0) for k, v in batteries.items()}
    total = float(sum(room.values()))
    if total <= 0 or lost_mw <= 0:
        return {}
    f = min(lost_mw / total, 1.0)
    return {k: round(float(now_mw.get(k, 0.0)) + r * f, 4) for k, r in room.items() if r > 0}


__all__ = ["EMERGENCY_PCT", "GenerationWatch", "LoadingReading", "OverloadWatch", "battery_relief",
           "element_rating_mva", "fed_through", "pick_blocks", "relief_mw"]
