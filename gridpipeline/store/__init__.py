"""The analytic store: DuckDB schema, connections, idempotent partition writers and quarantine."""

from gridpipeline.store.connection import connect, ensure_schema, writer_lock
from gridpipeline.store.writers import replace_window

__all__ = ["connect", "ensure_schema", "replace_window", "writer_lock"]
