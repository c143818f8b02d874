"""The critical-event response: the table Dagster refreshes every 5 minutes, and the watch the
responder runs on every reading.

**Under-frequency stages.** Commission Regulation (EU) 2017/2196 (network code on emergency and
restoration), Annex, table 1: automatic under-frequency load shedding starts at 49.0 Hz and ends at
48.0 Hz, disconnects 45 % (+/- 7 %) of the load in at least 6 steps, at most 10 % per step. Here: six
stages 0.2 Hz apart, 7.5 % of the load each (``STAGES``).

**The table.** Which blocks each stage sheds, in order, and the blocks held in reserve for a stage
whose switch fails: sheddable blocks only (never protected, never one that feeds a protected or a
more critical block, never a block that exports), least critical tier first, within a tier the block
out least recently first (rotation) and then the lowest value of lost load per MW. A block is shed
with its subtree, so a block below one already taken is skipped. For a deficit in MW (a loss of
generation, a branch over its emergency rating) the same order is used as a merit list. Batteries
come first in each stage, up to its share (their 15-minute power), so load is shed only for what
they cannot give. Built on the newest estimated load of each block when there is one, else the
rated load.

**The watch.** A reading is acted on only when its quality is good and it is plausible: a reading
that jumps more than ``MAX_RATE_HZ_S`` from the last good one (a spike) is flagged and waits for a
second reading to confirm it. An event begins when the frequency first falls below the first stage
and ends when it has been back above ``RECOVERED_HZ`` for ``RECOVERED_S``; each stage acts once per
event, so a repeated or late reading never acts twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

#: (threshold Hz, share of the load) per stage
STAGES: tuple[tuple[float, float], ...] = ((49.0, 0.075), (48.8, 0.075), (48.6, 0.075), (48.4, 0.075),
                                           (48.2, 0.075), (48.0, 0.075))
#: a change faster than this between two readings is a spike until a second reading confirms it
MAX_RATE_HZ_S = 2.0
RECOVERED_HZ = 49.8
RECOVERED_S = 60.0
#: the most of each stage's share the batteries give (the rest is load disconnected)
BATTERY_SHARE = 0.5
#: the table is stale past this age: the responder falls back to the policy order and says so
TABLE_MAX_AGE = timedelta(minutes=15)


@dataclass(frozen=True)
class ResponseTable:
    """``stages``: one row per stage (stage, threshold_hz, share, target_mw, blocks, mw); ``order``: the
    merit list of blocks (block_id, tier, mw, switch); ``batteries``: battery_id -> MW available to
    discharge; ``built_at`` and ``basis`` (estimated or rated load)."""

    stages: pd.DataFrame
    order: pd.DataFrame
    batteries: dict[str, float]
    built_at: datetime
    basis: str
    load_mw: float

    def to_json(self) -> dict:
        return {"built_at": self.built_at.isoformat(), "basis": self.basis, "load_mw": self.load_mw,
                "stages": self.stages.to_dict("records"), "order": self.order.to_dict("records"),
                "batteries": self.batteries}

    @staticmethod
    def from_json(d: dict) -> ResponseTable:
        return ResponseTable(pd.DataFrame(d["stages"]), pd.DataFrame(d["order"]), dict(d["batteries"]),
                             datetime.fromisoformat(d["built_at"]), d["basis"], float(d["load_mw"]))


def merit_order(blocks: pd.DataFrame, last_out: dict[int, datetime] | None = None) -> pd.DataFrame:
    """Sheddable blocks in shedding order. ``blocks``: block_id index with tier, mw (net load now),
    voll (EUR/MWh), sheddable (bool: switchable, not protected, feeds nothing more critical or
    protected), parent, feeding_switch. A block's ``mw`` in the result is its subtree's net load not
    already counted by a block earlier in the list."""
    last_out = last_out or {}
    b = blocks.copy()
    children: dict[int, list[int]] = {}
    for k, p in b.parent.items():
        if not pd.isna(p):
            children.setdefault(int(p), []).append(int(k))

    def subtree(k: int) -> list[int]:
        out, stack = [], [k]
        while stack:
            c = stack.pop()
            out.append(c)
            stack.extend(children.get(c, []))
        return out

    cand = b[b.sheddable & (b.mw > 0)].copy()
    never = datetime(1970, 1, 1)
    cand["last_out"] = [last_out.get(int(k), never) for k in cand.index]
    cand["voll_per_mw"] = cand.voll
    cand = cand.sort_values(["tier", "last_out", "voll_per_mw"], ascending=[False, True, True])
    taken: set[int] = set()
    rows = []
    for k, r in cand.iterrows():
        k = int(k)
        if k in taken:
            continue
        sub = [c for c in subtree(k) if c not in taken]
        if not all(bool(b.sheddable.get(c, False)) or b.mw.get(c, 0.0) <= 0 for c in sub):
            continue  # its subtree holds a block that may not be shed
        mw = float(b.mw.reindex(sub).fillna(0.0).clip(lower=0.0).sum())
        taken |= set(sub)
        rows.append({"block_id": k, "tier": int(r.tier), "mw": round(mw, 4),
                     "switch": None if pd.isna(r.feeding_switch) else int(r.feeding_switch)})
    return pd.DataFrame(rows, columns=["block_id", "tier", "mw", "switch"])


def build_table(blocks: pd.DataFrame, batteries: dict[str, float], built_at: datetime, basis: str,
                last_out: dict[int, datetime] | None = None, stages=STAGES,
                battery_share: float = BATTERY_SHARE) -> ResponseTable:
    """The stage table over the merit order. Each stage's share of the total load is met by batteries
    first, up to ``battery_share`` of it (no customer is interrupted; the largest first, each at most
    its 15-minute power; the network code's stages are demand disconnection, so by default half of
    each stage stays load), then by
    blocks of the least critical tier left, in merit order but skipping a block that would overshoot
    the share by more than half (a feeder-sized block does not go in a stage of a few per cent while a
    smaller block of the same tier fits); when none fits, the smallest of the tier (a stage never
    stops short of its share while blocks are left)."""
    order = merit_order(blocks, last_out)
    total = float(blocks.mw.clip(lower=0).sum())
    left = [r._asdict() for r in order.itertuples(index=False)]
    batt_left = dict(sorted(((k, float(v)) for k, v in batteries.items() if v > 0), key=lambda kv: -kv[1]))
    rows = []
    for i, (hz, share) in enumerate(stages):
        target = share * total
        got, ids, bats = 0.0, [], {}
        for bid in list(batt_left):
            if got >= battery_share * target - 1e-9:
                break
            mw = min(batt_left[bid], battery_share * target - got)
            bats[bid] = round(mw, 4)
            got += mw
            batt_left[bid] -= mw
            if batt_left[bid] <= 1e-6:
                del batt_left[bid]
        battery_mw = got
        while got < target - 1e-9 and left:
            tier = left[0]["tier"]
            same = [r for r in left if r["tier"] == tier]
            fits = [r for r in same if got + r["mw"] <= target + 0.5 * target + 1e-9]
            pick = fits[0] if fits else min(same, key=lambda r: r["mw"])
            ids.append(int(pick["block_id"]))
            got += float(pick["mw"])
            left.remove(pick)
        rows.append({"stage": i + 1, "threshold_hz": hz, "share": share, "target_mw": round(target, 4),
                     "batteries": bats, "battery_mw": round(battery_mw, 4), "blocks": ids,
                     "mw": round(got, 4)})
    return ResponseTable(pd.DataFrame(rows), order, {k: round(float(v), 4) for k, v in batteries.items()},
                         built_at, basis, round(total, 4))


def table_path(settings):
    """Where the responder reads the table: ``<home>/load/response_table.json``."""
    return settings.home / "load" / "response_table.json"


def write_table(settings, table: ResponseTable) -> None:
    """Atomically replace the table the responder reads."""
    import json

    p = table_path(settings)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(table.to_json(), default=str))
    tmp.replace(p)


def blocks_for_deficit(table: ResponseTable, mw: float, skip: set[int] | frozenset = frozenset()) -> list[int]:
    """The merit list's prefix that covers ``mw`` (blocks in ``skip`` already out)."""
    out, got = [], 0.0
    for r in table.order.itertuples():
        if got >= mw - 1e-9:
            break
        if int(r.block_id) in skip:
            continue
        out.append(int(r.block_id))
        got += float(r.mw)
    return out


def reserve_for(table: ResponseTable, used: set[int]) -> list[int]:
    """The merit list's blocks not in ``used``, in order: the next-best when a switch fails (blocks of
    the stages not reached yet before the ones no stage takes: a later stage skips a block already out)."""
    return [int(b) for b in table.order.block_id if int(b) not in used]


# ---------------------------------------------------------------------------------------- the watch
@dataclass
class Reading:
    ts: datetime  # when it left the outstation (its time tag)
    hz: float
    quality: str  # the project's code (common.iec104.quality_of)
    received: float = 0.0  # time.time() when it arrived


@dataclass
class WatchResult:
    acts: list[int] = field(default_factory=list)  # stages to act on now
    flag: str | None = None  # why the reading was not acted on
    event: str | None = None  # the event id
    ended: str | None = None  # an event that ended with this reading


@dataclass
class FrequencyWatch:
    """See the module docstring; ``done``: event id -> stages acted (restored after a restart)."""

    stages: tuple[tuple[float, float], ...] = STAGES
    last_good: Reading | None = None
    suspect: Reading | None = None
    event: str | None = None
    done: dict[str, set[int]] = field(default_factory=dict)
    above_since: datetime | None = None
    recovered_s: float = RECOVERED_S

    def update(self, r: Reading) -> WatchResult:
        out = WatchResult(event=self.event)
        if r.quality != "good" or r.hz is None or not math.isfinite(r.hz):
            out.flag = f"not acted on: quality {r.quality}, value {r.hz}"
            return out
        if self.last_good is not None:
            dt = max((r.ts - self.last_good.ts).total_seconds(), 0.1)
            if abs(r.hz - self.last_good.hz) > MAX_RATE_HZ_S * dt + 0.05:
                if self.suspect is None or abs(r.hz - self.suspect.hz) > MAX_RATE_HZ_S * max(
                        (r.ts - self.suspect.ts).total_seconds(), 0.1) + 0.05:
                    self.suspect = r
                    out.flag = (f"not acted on: a spike ({r.hz:.3f} Hz against {self.last_good.hz:.3f} Hz "
                                f"{dt:.1f} s before); waiting for a second reading")
                    return out
        self.suspect = None
        self.last_good = r
        first = self.stages[0][0]
        if self.event is None and r.hz < first:
            self.event = r.ts.isoformat(timespec="milliseconds")
            self.done.setdefault(self.event, set())
            self.above_since = None
        out.event = self.event
        if self.event is None:
            return out
        acted = self.done.setdefault(self.event, set())
        out.acts = [i + 1 for i, (hz, _) in enumerate(self.stages) if r.hz < hz and (i + 1) not in acted]
        acted.update(out.acts)
        if r.hz >= RECOVERED_HZ:
            self.above_since = self.above_since or r.ts
            if (r.ts - self.above_since).total_seconds() >= self.recovered_s:
                out.ended, out.event, self.event, self.above_since = self.event, None, None, None
        else:
            self.above_since = None
        return out


def last_out_from_records(records: list[dict]) -> dict[int, datetime]:
    """Block -> when it was last shed, from shed and critical-response records (for rotation)."""
    out: dict[int, datetime] = {}
    for r in records:
        b = r.get("body", {})
        at = pd.Timestamp(r["created_at"]).to_pydatetime().replace(tzinfo=None)
        for blk in list(b.get("first_step_blocks", [])) + [c.get("block") for c in b.get("commands", [])
                                                            if isinstance(c, dict) and c.get("ok")]:
            if blk is not None:
                out[int(blk)] = max(out.get(int(blk), at), at)
    return out


def table_blocks(pr, net, load_by_block: pd.Series | None) -> tuple[pd.DataFrame, str]:
    """The blocks frame :func:`build_table` needs from the priorities (``load.priorities``), the
    newest estimated net load per block if known (``basis`` 'estimated'), else rated load."""
    from gridpipeline.load.shed import ShedProblem, tier_exempt

    t = pr.blocks.table
    prio = pr.table
    ids = t.index.to_numpy(dtype=int)
    least = max(pr.policy.tier_names) if pr.policy.tier_names else 4
    basis = "estimated" if load_by_block is not None and len(load_by_block) else "rated"
    mw = (load_by_block.reindex(ids).fillna(0.0) if basis == "estimated"
          else prio.load_mw.reindex(ids).fillna(0.0)).to_numpy(float)
    tier = prio.tier.reindex(ids).fillna(least).astype(int).to_numpy()
    pos = {int(b): k for k, b in enumerate(ids)}
    parent = np.array([pos.get(int(a), -1) if not pd.isna(a) else -1 for a in t.parent.reindex(ids)])
    protected = prio.protected.reindex(ids).astype("boolean").fillna(False).to_numpy(bool)
    switchable = t.switchable.reindex(ids).fillna(False).astype(bool).to_numpy()
    voll_class = pr.policy.voll_eur_mwh
    loads = pr.loads
    v = loads["class"].map(voll_class).to_numpy(float)
    w = net.load.p_mw.reindex(loads.load_id).to_numpy(float)
    vb = (pd.Series(v * w).groupby(loads.block_id.to_numpy()).sum()
          / pd.Series(w).groupby(loads.block_id.to_numpy()).sum().replace(0, np.nan)).reindex(ids).fillna(0.0)
    p = ShedProblem(block_ids=ids, net_mw=mw[:, None], load_mw=np.maximum(mw, 0)[:, None], voll=vb.to_numpy(),
                    tier=tier, sheddable=switchable & ~protected & (parent >= 0), parent=parent,
                    deficit_mw=np.zeros(1))
    exempt, _ = tier_exempt(p)
    frame = pd.DataFrame({"tier": tier, "mw": mw, "voll": vb.to_numpy(), "sheddable": ~exempt[:, 0],
                          "parent": [int(ids[k]) if k >= 0 else np.nan for k in parent],
                          "feeding_switch": t.feeding_switch.reindex(ids).to_numpy()}, index=ids)
    return frame, basis


def block_net_load(pr, net, injections: pd.DataFrame) -> pd.Series:
    """Block -> net load (MW) in an estimated state's injections (element_type, element_id, p_mw):
    loads and charging batteries count, generators and discharging batteries subtract (pandapower
    signs: load and storage p > 0 consume, sgen p > 0 generates)."""
    bb = pr.blocks.bus_block
    parts = []
    for table, sign in (("load", 1.0), ("storage", 1.0), ("sgen", -1.0)):
        el = net[table]
        if not len(el):
            continue
        inj = injections[injections.element_type == table].set_index("element_id").p_mw
        p = inj.reindex(el.index).fillna(0.0).to_numpy(float) * sign
        blk = bb.reindex(el.bus).to_numpy()
        parts.append(pd.Series(p, index=blk))
    if not parts:
        return pd.Series(dtype=float)
    s = pd.concat(parts)
    return s[s.index.notna()].groupby(level=0).sum()


def battery_power(fleet: pd.DataFrame, storage_state: pd.DataFrame, minutes: float = 15.0) -> dict[str, float]:
    """Battery id -> MW it can discharge for ``minutes`` (its power, or its energy above its floor
    over that time, whichever is less), for the batteries the newest BMS read found available."""
    if storage_state is None or not len(storage_state):
        return {}
    st = storage_state.set_index("battery_id")
    out = {}
    for r in fleet.itertuples():
        if r.battery_id not in st.index or not bool(st.available.get(r.battery_id, False)):
            continue
        e = float(st.energy_mwh.get(r.battery_id, 0.0) or 0.0)
        floor = max(float(r.soc_min), float(getattr(r, "reserve", 0.0))) * float(r.capacity_mwh)
        mw = min(float(r.p_max_mw), max(e - floor, 0.0) / (minutes / 60.0))
        if mw > 1e-4:
            out[str(r.battery_id)] = round(mw, 4)
    return out


# ---------------------------------------------------------------------------------------- restoration
#: restored load comes back at this multiple of its pre-outage value (cold-load pickup: thermostatic
#: loads that lost diversity), decaying to 1 over ``CLPU_DECAY_MIN``; 2.0 and 20 minutes sit inside the
#: issue's 1.5-2x over 15-30 min and are the order of the field measurements summarised by
#: Kumar, Gupta and Pahwa (IEEE PES General Meeting 2010) for residential feeders after outages of
#: an hour or more; not yet calibrated on this project's data
CLPU_FACTOR = 2.0
CLPU_DECAY_MIN = 20.0
#: restoration waits for this much frequency before each stage
RESTORE_MIN_HZ = 49.9


def restoration_stages(out: pd.DataFrame, margin_mw: float, clpu: float = CLPU_FACTOR) -> list[list[int]]:
    """Blocks to restore in stages: ``out`` (block_id, tier, mw pre-outage) most critical tier first,
    then the largest; each stage's pickup (``mw`` x ``clpu``) within ``margin_mw``. A single block
    whose pickup exceeds the margin gets a stage of its own (it cannot be split)."""
    if not len(out):
        return []
    o = out.sort_values(["tier", "mw"], ascending=[True, False])
    stages, cur, got = [], [], 0.0
    for r in o.itertuples():
        pick = max(float(r.mw), 0.0) * clpu
        if cur and got + pick > margin_mw + 1e-9:
            stages.append(cur)
            cur, got = [], 0.0
        cur.append(int(r.block_id))
        got += pick
    if cur:
        stages.append(cur)
    return stages
