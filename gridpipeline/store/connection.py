"""Connections to the DuckDB store.

DuckDB allows one writer process per file. Dagster runs that write take the ``duckdb`` pool (limit 1
in the shipped ``dagster.yaml``); anything else that opens the file (CLI, benchmarks, tests) goes
through :func:`connect`, which retries while another process holds the lock instead of failing.
"""

from __future__ import annotations

import fcntl
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb

from gridpipeline.store.schema import DDL, SCHEMAS

LOCK_MARKERS = ("Could not set lock", "Conflicting lock")


@contextmanager
def connect(path: Path | str, read_only: bool = False, timeout_s: float = 300.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open ``path``; wait up to ``timeout_s`` for another process's lock to go away."""
    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.IOException as exc:
            if not any(m in str(exc) for m in LOCK_MARKERS) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    try:
        yield con
    finally:
        con.close()


@contextmanager
def writer_lock(db_path: Path | str, timeout_s: float | None = None) -> Iterator[None]:
    """Hold the store's writer lock (an flock next to the file) for the duration of the block.

    DuckDB fails, rather than waits, when another process holds the file, and dbt-duckdb does not
    retry. Every writer (assets, dbt invocations, CLI, benchmarks) takes this lock first, so two
    processes writing at once queue here instead of failing, whether or not Dagster's pool limit
    applies (it does not for in-process runs started from the CLI)."""
    lock_path = Path(f"{db_path}.writer.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as fh:
        if timeout_s is None:
            fcntl.flock(fh, fcntl.LOCK_EX)
        else:  # who must not wait long (the live loop) asks, and uses its cached copy if refused
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"{db_path}: another process holds the writer lock") from None
                    time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create schemas and tables if absent (idempotent, cheap)."""
    for schema in SCHEMAS:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    for ddl in DDL:
        con.execute(ddl)
