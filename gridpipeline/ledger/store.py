"""The decision ledger: an append-only, hash-chained record of every decision, in its own DuckDB file.

Why its own file: a long write on the analytic store (a backfill, a dbt build) must never block a
decision being recorded, and DuckDB allows one writer process per file. Every writer (Dagster runs,
the critical-event responder, approvals from the CLI or the UI) appends under the file's writer lock
(``store.writer_lock``), so there is one total order across all of them; the lock is held only for the append.

Each record carries the hash of the one before it in its chain (``live``; replays and backfills
write to ``replay``, never the live chain). After each append the chain's newest hash is appended
to a head file beside the ledger (``<ledger>.head``, one line per append): ``audit verify``
recomputes every hash and checks the newest against that head, so a record removed from the end, or
a chain rebuilt from scratch, is caught too.

Modes, per action kind: ``automatic`` (acted on at once), ``approve`` (waits for an operator; expires
to a fallback after a set time), ``advisory`` (recorded only). Approvals, rejections and expiries
are records themselves, referring to the decision (``ref``).
"""

from __future__ import annotations

import json
import os
import secrets
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator

import duckdb
import pandas as pd

from gridpipeline.ledger.chain import GENESIS, ChainReport, canonical, record_hash, verify_chain
from gridpipeline.store.connection import writer_lock

MODES = ("automatic", "approve", "advisory")
#: records that settle a decision waiting for approval
RESOLUTIONS = ("approval", "rejection", "expiry")
LIVE, REPLAY = "live", "replay"

DDL = """
CREATE SCHEMA IF NOT EXISTS ops;
CREATE TABLE IF NOT EXISTS ops.decisions (
    chain VARCHAR NOT NULL, seq BIGINT NOT NULL, id VARCHAR NOT NULL, kind VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL, mode VARCHAR, actor VARCHAR, ref VARCHAR, body VARCHAR NOT NULL,
    prev_hash VARCHAR NOT NULL, hash VARCHAR NOT NULL, PRIMARY KEY (chain, seq)
);
"""


class LedgerError(ValueError):
    """An operation the ledger refuses (unknown or expired decision, wrong mode...): one clear line."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


@dataclass
class Record:
    chain: str
    seq: int
    id: str
    kind: str
    created_at: datetime
    mode: str | None
    actor: str | None
    ref: str | None
    body: dict
    prev_hash: str
    hash: str

    def fields(self) -> dict:
        return {"chain": self.chain, "seq": self.seq, "id": self.id, "kind": self.kind,
                "created_at": self.created_at, "mode": self.mode, "actor": self.actor, "ref": self.ref,
                "body": self.body, "prev_hash": self.prev_hash, "hash": self.hash}


def _row_to_fields(row: tuple, cols: list[str]) -> dict:
    d = dict(zip(cols, row))
    d["body"] = json.loads(d["body"])
    return d


class Ledger:
    def __init__(self, path: Path | str, lock_timeout_s: float = 30.0):
        self.path = Path(path)
        self.head_path = Path(f"{self.path}.head")
        self.lock_timeout_s = lock_timeout_s

    # ------------------------------------------------------------------ plumbing
    @contextmanager
    def _locked(self, write: bool) -> Iterator[duckdb.DuckDBPyConnection | None]:
        """The ledger's lock, then its file; None when reading a ledger that does not exist yet."""
        with writer_lock(self.path, timeout_s=self.lock_timeout_s):
            if not write and not self.path.exists():
                yield None
                return
            con = duckdb.connect(str(self.path), read_only=not write)
            try:
                if write:
                    for stmt in DDL.split(";"):
                        if stmt.strip():
                            con.execute(stmt)
                yield con
            finally:
                con.close()

    def _append_head(self, chain: str, seq: int, h: str) -> None:
        fd = os.open(self.head_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, f"{chain} {seq} {h}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def heads(self) -> dict[str, str]:
        """chain -> the newest hash recorded in the head file."""
        out: dict[str, str] = {}
        if self.head_path.exists():
            for line in self.head_path.read_text().splitlines():
                parts = line.split()
                if len(parts) == 3:
                    out[parts[0]] = parts[2]
        return out

    # ------------------------------------------------------------------ writing
    def append(self, kind: str, body: dict, mode: str | None = None, actor: str | None = None,
               ref: str | None = None, chain: str = LIVE, created_at: datetime | None = None) -> Record:
        """Append one record and return it (with its id, sequence number and hash)."""
        if mode is not None and mode not in MODES:
            raise LedgerError(f"unknown mode {mode!r}: one of {', '.join(MODES)}")
        if chain not in (LIVE, REPLAY):
            raise LedgerError(f"unknown chain {chain!r}: {LIVE!r} or {REPLAY!r}")
        body = json.loads(canonical(body))  # what is stored is exactly what is hashed
        with self._locked(write=True) as con:
            last = con.execute("SELECT seq, hash FROM ops.decisions WHERE chain = ? ORDER BY seq DESC LIMIT 1",
                               [chain]).fetchone()
            seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
            ts = created_at or utcnow()
            if ts.tzinfo is not None:
                ts = ts.astimezone(timezone.utc).replace(tzinfo=None)
            rec = Record(chain=chain, seq=seq, id=secrets.token_hex(8), kind=kind, created_at=ts, mode=mode,
                         actor=actor, ref=ref, body=body, prev_hash=prev, hash="")
            rec.hash = record_hash(rec.fields())
            con.execute("INSERT INTO ops.decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [rec.chain, rec.seq, rec.id, rec.kind, rec.created_at, rec.mode, rec.actor, rec.ref,
                         canonical(rec.body), rec.prev_hash, rec.hash])
            self._append_head(chain, seq, rec.hash)
        return rec

    # ------------------------------------------------------------------ reading
    def _rows(self, where: str = "", params: list | None = None) -> list[dict]:
        # only the read holds the lock; the bodies are parsed after it is released (the responder
        # appends within its seconds while the dispatcher reads)
        with self._locked(write=False) as con:
            if con is None:
                return []
            try:
                cur = con.execute(f"SELECT * FROM ops.decisions {where} ORDER BY chain, seq", params or [])
            except duckdb.CatalogException:
                return []
            cols = [d[0] for d in cur.description]
            raw = cur.fetchall()
        return [_row_to_fields(r, cols) for r in raw]

    def records(self, chain: str | None = LIVE, kind: str | None = None, since: datetime | None = None) -> list[dict]:
        """The records of ``chain`` (None: both), of ``kind``, created after ``since`` (all when None)."""
        conds, params = [], []
        if since is not None:
            conds.append("created_at > ?")
            params.append(since)
        if chain:
            conds.append("chain = ?")
            params.append(chain)
        if kind:
            conds.append("kind = ?")
            params.append(kind)
        return self._rows(("WHERE " + " AND ".join(conds)) if conds else "", params)

    def get(self, decision_id: str) -> dict | None:
        rows = self._rows("WHERE id = ?", [decision_id])
        return rows[0] if rows else None

    def status(self, now: datetime | None = None, chain: str = LIVE, since: datetime | None = None) -> pd.DataFrame:
        """Every decision (not the approval records) with its state: automatic, advisory, pending,
        approved, rejected, expired; who settled it, when, and when a pending one expires. ``since``:
        only decisions created after it (settled by records after it)."""
        now = now or utcnow()
        rows = self.records(chain, since=since)
        settled = {r["ref"]: r for r in rows if r["kind"] in RESOLUTIONS and r["ref"]}
        out = []
        for r in rows:
            if r["kind"] in RESOLUTIONS:
                continue
            s = settled.get(r["id"])
            exp = r["body"].get("expires_at")
            if r["mode"] != "approve":
                state = r["mode"] or "record"
            elif s is not None:
                state = {"approval": "approved", "rejection": "rejected", "expiry": "expired"}[s["kind"]]
            elif exp and datetime.fromisoformat(exp) <= now:
                state = "expiring"  # past its time, expiry not recorded yet
            else:
                state = "pending"
            out.append({"id": r["id"], "seq": r["seq"], "kind": r["kind"], "created_at": r["created_at"],
                        "mode": r["mode"], "state": state, "expires_at": exp,
                        "settled_by": s["actor"] if s else None, "settled_at": s["created_at"] if s else None,
                        "summary": r["body"].get("summary", "")})
        return pd.DataFrame(out, columns=["id", "seq", "kind", "created_at", "mode", "state", "expires_at",
                                          "settled_by", "settled_at", "summary"])

    def pending(self, now: datetime | None = None) -> pd.DataFrame:
        """Decisions waiting for approval (those of the last day: a wait expires in minutes)."""
        now = now or utcnow()
        st = self.status(now, since=now - timedelta(days=1))
        return st[st.state.isin(["pending", "expiring"])].reset_index(drop=True)

    # ------------------------------------------------------------------ approvals
    def _open_decision(self, decision_id: str, now: datetime) -> dict:
        rec = self.get(decision_id)
        if rec is None or rec["kind"] in RESOLUTIONS:
            raise LedgerError(f"no decision {decision_id!r} in the ledger")
        if rec["chain"] != LIVE:
            raise LedgerError(f"decision {decision_id} is a replay record: replays are never acted on")
        if rec["mode"] != "approve":
            raise LedgerError(f"decision {decision_id} is {rec['mode']}: it does not wait for approval")
        st = self.status(now)
        state = st.loc[st.id == decision_id, "state"].iloc[0]
        if state in ("expiring", "expired"):
            raise LedgerError(f"decision {decision_id} expired at {rec['body'].get('expires_at')}: "
                              "its fallback applies; approve a newer decision")
        if state != "pending":
            row = st.loc[st.id == decision_id].iloc[0]
            raise LedgerError(f"decision {decision_id} was already {state} by {row.settled_by} at {row.settled_at}")
        return rec

    def approve(self, decision_id: str, operator: str, now: datetime | None = None, note: str = "") -> Record:
        return self._settle("approval", decision_id, operator, now, note=note)

    def reject(self, decision_id: str, operator: str, reason: str = "", now: datetime | None = None) -> Record:
        return self._settle("rejection", decision_id, operator, now, reason=reason)

    def _settle(self, kind: str, decision_id: str, operator: str, now: datetime | None, **extra: str) -> Record:
        """An approval or rejection of a pending decision, by a named operator."""
        if not operator or not operator.strip():
            raise LedgerError(f"a{'n' if kind == 'approval' else ''} {kind} needs the operator's name")
        now = now or utcnow()
        rec = self._open_decision(decision_id, now)
        verb = "approved" if kind == "approval" else "rejected"
        return self.append(kind, {"decision_kind": rec["kind"], **extra,
                                  "summary": f"{verb} {rec['kind']} {decision_id}"},
                           actor=operator.strip(), ref=decision_id, created_at=now)

    def expire_due(self, now: datetime | None = None,
                   fallback: Callable[[dict], dict] | None = None) -> list[Record]:
        """Record the expiry of every decision past its approval time, with the fallback applied
        (``fallback(decision) -> dict``, default: hold the last approved setpoints)."""
        now = now or utcnow()
        st = self.status(now)
        out = []
        for did in st.loc[st.state == "expiring", "id"]:
            rec = self.get(did)
            fb = fallback(rec) if fallback else {"fallback": "hold_last_approved"}
            out.append(self.append("expiry", {"decision_kind": rec["kind"], **fb,
                                              "summary": f"{rec['kind']} {did} expired unapproved"},
                                   actor="system", ref=did, created_at=now))
        return out

    # ------------------------------------------------------------------ integrity
    def verify(self) -> ChainReport:
        return verify_chain(self._rows(), self.heads())


def approval_deadline(now: datetime, ttl: timedelta) -> str:
    """The ``expires_at`` a decision waiting for approval carries in its body."""
    return (now + ttl).isoformat()


__all__ = ["LIVE", "MODES", "REPLAY", "Ledger", "LedgerError", "Record", "approval_deadline", "utcnow"]
