"""Idempotent writers: a partition's rows are replaced as a whole, inside one transaction."""

from __future__ import annotations

import contextlib
from datetime import datetime

import duckdb


def replace_window(
    con: duckdb.DuckDBPyConnection,
    table: str,
    relation: str,
    time_col: str,
    start: datetime,
    end: datetime,
    extra_where: str = "",
) -> int:
    """Delete ``table`` rows with ``start <= time_col < end`` and insert ``SELECT * FROM relation``.

    ``relation`` is anything DuckDB can select from (a registered Arrow table, a view, a subquery).
    Returns the number of rows inserted. Runs in the caller's transaction if one is open.
    """
    where = f"{time_col} >= ? AND {time_col} < ?" + (f" AND {extra_where}" if extra_where else "")
    con.execute(f"DELETE FROM {table} WHERE {where}", [start, end])
    return con.execute(f"INSERT INTO {table} SELECT * FROM {relation}").fetchone()[0]



def replace_rows(con: duckdb.DuckDBPyConnection, deletes: list[tuple[str, list]], inserts: list[tuple[str, object]]
                 ) -> None:
    """One transaction: each ``DELETE`` (SQL, params), then each frame inserted by column name into its
    table (``schema.table``). Rolled back whole on any error; the frames are unregistered either way."""
    names = []
    con.execute("BEGIN")
    try:
        for sql, params in deletes:
            con.execute(sql, params)
        for k, (table, frame) in enumerate(inserts):
            if not len(frame):
                continue
            name = f"t_rows_{k}"
            con.register(name, frame)
            names.append(name)
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {name}")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    finally:
        for name in names:
            with contextlib.suppress(Exception):
                con.unregister(name)
