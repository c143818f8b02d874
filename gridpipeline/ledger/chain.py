"""The hash chain of the decision ledger: canonical bytes of a record and its hash. Pure functions.

A record's hash covers its chain, sequence number, id, kind, time, mode, actor, reference, body and
the hash of the record before it in the same chain (:data:`GENESIS` for the first). Changing any
field of any record, deleting one or inserting one breaks every hash after it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

GENESIS = "0" * 64

#: the fields a hash covers, in order
HASHED = ("chain", "seq", "id", "kind", "created_at", "mode", "actor", "ref", "body", "prev_hash")


def _plain(x: Any) -> Any:
    """JSON-safe, deterministic: timestamps as ISO UTC, numpy and pandas scalars as Python, NaN as None."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, frozenset)):
        seq = [_plain(v) for v in x]
        return sorted(seq, key=lambda v: json.dumps(v, sort_keys=True)) if isinstance(x, (set, frozenset)) else seq
    if isinstance(x, datetime):
        if x.tzinfo is not None:
            x = x.astimezone(timezone.utc).replace(tzinfo=None)
        return x.isoformat()
    if isinstance(x, date):
        return x.isoformat()
    if hasattr(x, "item") and callable(x.item) and not isinstance(x, (str, bytes)):
        try:  # numpy / pandas scalars
            return _plain(x.item())
        except (ValueError, TypeError):
            pass
    if hasattr(x, "to_pydatetime"):
        return _plain(x.to_pydatetime())
    if hasattr(x, "tolist"):
        return _plain(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    return str(x)


def canonical(x: Any) -> str:
    """The one JSON text of ``x`` (sorted keys, no spaces): what is stored and what is hashed."""
    return json.dumps(_plain(x), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def record_hash(fields: dict[str, Any]) -> str:
    payload = canonical({k: fields.get(k) for k in HASHED})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Broken:
    chain: str
    seq: int
    id: str
    reason: str


@dataclass
class ChainReport:
    ok: bool
    records: int
    chains: dict[str, dict] = field(default_factory=dict)  # chain -> {"records", "head"}
    broken: Broken | None = None

    def summary(self) -> str:
        if self.ok:
            return f"ledger intact: {self.records} records in {len(self.chains)} chain(s)"
        b = self.broken
        return f"ledger BROKEN at chain {b.chain!r} record {b.seq} (id {b.id}): {b.reason}"


def verify_chain(rows: list[dict[str, Any]], heads: dict[str, str] | None = None) -> ChainReport:
    """Check ``rows`` (every record, any order) chain by chain: sequence numbers without gaps from 1,
    each record's ``prev_hash`` equal to the hash of the one before, each stored hash equal to the
    recomputed one, and, when ``heads`` (chain -> latest hash kept outside the ledger) is given, the
    newest record's hash equal to the head. Names the first broken record."""
    by_chain: dict[str, list[dict]] = {}
    for r in rows:
        by_chain.setdefault(r["chain"], []).append(r)
    report = ChainReport(ok=True, records=len(rows))
    for chain in sorted(set(by_chain) | set(heads or {})):
        recs = sorted(by_chain.get(chain, []), key=lambda r: r["seq"])
        prev = GENESIS
        for k, r in enumerate(recs, start=1):
            reason = None
            if r["seq"] > k:
                gap = f"record {k} is" if r["seq"] == k + 1 else f"records {k}-{r['seq'] - 1} are"
                reason = f"{gap} missing before it (deleted)"
            elif r["seq"] < k:
                reason = f"sequence number {r['seq']} repeats where {k} was expected (a record was inserted)"
            elif r["prev_hash"] != prev:
                reason = "prev_hash does not match the hash of the record before it"
            elif record_hash(r) != r["hash"]:
                reason = "its content does not match its hash (the record was altered)"
            if reason:
                report.ok, report.broken = False, Broken(chain, int(r["seq"]), str(r["id"]), reason)
                return report
            prev = r["hash"]
        report.chains[chain] = {"records": len(recs), "head": prev}
        if heads is not None and chain in heads and heads[chain] != prev:
            last = recs[-1] if recs else {"seq": 0, "id": "-"}
            known = next((r["seq"] for r in recs if r["hash"] == heads[chain]), None)
            why = (f"the head kept outside the ledger is record {known}, the ledger goes on to {last['seq']} "
                   "(records appended without the head)" if known is not None else
                   "the newest record's hash differs from the head kept outside the ledger "
                   "(records were removed from the end, or the chain was rebuilt)")
            report.ok, report.broken = False, Broken(chain, int(last["seq"]), str(last["id"]), why)
            return report
    return report


__all__ = ["GENESIS", "HASHED", "Broken", "ChainReport", "canonical", "record_hash", "verify_chain"]
