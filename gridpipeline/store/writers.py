"""Idempotent writers: a partition's rows are replaced as a whole, inside one transaction."""

from __future__ import annotations

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
