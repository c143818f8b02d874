"""The grid's tables in the DuckDB store: the versioned network model and the 30-second results.

The model is versioned by validity time: ``grid.model_versions`` holds one row per distinct network
(sha256 of its pandapower JSON) with ``valid_from``/``valid_to``; the element tables (``grid.buses``,
``grid.lines``, ...) and the topology views (``grid.feeders``, ``grid.critical_elements``) carry the
``version`` they belong to. A snapshot's results are keyed by ``snapshot_ts`` (30-second instants
inside the 5-minute partition) and replaced as a whole when the snapshot is re-estimated.
"""

from __future__ import annotations

import hashlib
import io
import json
from datetime import datetime

import pandas as pd

DDL = """
CREATE SCHEMA IF NOT EXISTS grid;
CREATE TABLE IF NOT EXISTS grid.model_versions (
    version INTEGER, valid_from TIMESTAMP, valid_to TIMESTAMP, source VARCHAR, sha256 VARCHAR,
    n_buses INTEGER, n_lines INTEGER, n_trafos INTEGER, n_switches INTEGER, n_loads INTEGER,
    n_sgens INTEGER, n_storage INTEGER, network_json VARCHAR, created_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS grid.state_summary (
    snapshot_ts TIMESTAMP, window_start TIMESTAMP, model_version INTEGER, source VARCHAR,
    converged BOOLEAN, fallback VARCHAR, algorithm VARCHAR, observable BOOLEAN,
    j DOUBLE, dof INTEGER, chi2_threshold DOUBLE, chi2_alarm_initial BOOLEAN, max_abs_rn DOUBLE,
    n_measurements INTEGER, n_pseudo INTEGER, n_dropped INTEGER, n_bad_removed INTEGER, n_suspects INTEGER,
    losses_mw DOUBLE, u_pu_min DOUBLE, u_pu_max DOUBLE, max_loading_percent DOUBLE,
    n_bottlenecks INTEGER, n_topology_events INTEGER, switches_missing INTEGER, estimations_run INTEGER,
    readings INTEGER, estimation_seconds DOUBLE, cycle_seconds DOUBLE, message VARCHAR, computed_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS grid.state_bus (
    snapshot_ts TIMESTAMP, bus_id BIGINT, u_pu DOUBLE, u_angle_deg DOUBLE, u_kv DOUBLE, energized BOOLEAN
);
CREATE TABLE IF NOT EXISTS grid.state_branch (
    snapshot_ts TIMESTAMP, element_type VARCHAR, element_id BIGINT, p_from_mw DOUBLE, q_from_mvar DOUBLE,
    i_from_a DOUBLE, p_to_mw DOUBLE, q_to_mvar DOUBLE, i_to_a DOUBLE, pl_mw DOUBLE, ql_mvar DOUBLE,
    loading_percent DOUBLE, energized BOOLEAN
);
CREATE TABLE IF NOT EXISTS grid.state_injection (
    snapshot_ts TIMESTAMP, element_type VARCHAR, element_id BIGINT, p_mw DOUBLE, q_mvar DOUBLE, energized BOOLEAN
);
CREATE TABLE IF NOT EXISTS grid.bad_data (
    snapshot_ts TIMESTAMP, sensor_id INTEGER, kind VARCHAR, element_type VARCHAR, element_id BIGINT,
    terminal VARCHAR, value DOUBLE, r_n DOUBLE, iteration INTEGER, action VARCHAR, note VARCHAR
);
CREATE TABLE IF NOT EXISTS grid.bottlenecks (
    snapshot_ts TIMESTAMP, rank INTEGER, element_type VARCHAR, element_id BIGINT, quantity VARCHAR,
    value DOUBLE, "limit" DOUBLE, margin DOUBLE, margin_rel DOUBLE, contributors VARCHAR
);
CREATE TABLE IF NOT EXISTS grid.topology_events (
    snapshot_ts TIMESTAMP, kind VARCHAR, element_type VARCHAR, element_id BIGINT, buses VARCHAR,
    load_mw DOUBLE, detail VARCHAR
);
CREATE TABLE IF NOT EXISTS grid.switch_states (
    snapshot_ts TIMESTAMP, switch_id BIGINT, closed BOOLEAN
);
CREATE TABLE IF NOT EXISTS grid.contingencies (
    snapshot_ts TIMESTAMP, rank INTEGER, contingency VARCHAR, converged BOOLEAN, max_loading_percent DOUBLE,
    max_loading_element VARCHAR, min_u_pu DOUBLE, max_u_pu DOUBLE, n_overloads INTEGER,
    n_voltage_violations INTEGER, buses_lost INTEGER, load_lost_mw DOUBLE, severity DOUBLE,
    tie_switch BIGINT, load_restored_mw DOUBLE, max_loading_after_restore_percent DOUBLE, method VARCHAR,
    trigger VARCHAR
);
CREATE TABLE IF NOT EXISTS grid.contingency_relief (
    snapshot_ts TIMESTAMP, contingency VARCHAR, element_type VARCHAR, element_id BIGINT, bus BIGINT,
    p_mw DOUBLE, sensitivity_pct_per_mw DOUBLE, action VARCHAR, relief_capacity_pct DOUBLE,
    mw_to_limit DOUBLE, target VARCHAR, target_loading_percent DOUBLE
);
"""

SNAPSHOT_TABLES = ("state_summary", "state_bus", "state_branch", "state_injection", "bad_data", "bottlenecks",
                   "topology_events", "switch_states")


def ensure_grid_schema(con) -> None:
    for stmt in DDL.split(";"):
        if stmt.strip():
            con.execute(stmt)


def network_json(net) -> str:
    import pandapower as pp

    return pp.to_json(net)


def save_model_version(con, net, valid_from: datetime, source: str, extra_tables: dict[str, pd.DataFrame] | None = None
                       ) -> tuple[int, bool]:
    """Store ``net`` as the model valid from ``valid_from`` unless the current version is the same
    network. Returns (version, created). Element tables go to ``grid.<name>`` with a version column."""
    from gridpipeline.grid.network import network_tables

    ensure_grid_schema(con)
    js = network_json(net)
    sha = hashlib.sha256(js.encode()).hexdigest()
    cur = con.execute("SELECT version, sha256 FROM grid.model_versions WHERE valid_to IS NULL "
                      "ORDER BY version DESC LIMIT 1").fetchall()
    if cur and cur[0][1] == sha:
        return int(cur[0][0]), False
    version = int(con.execute("SELECT coalesce(max(version), 0) + 1 FROM grid.model_versions").fetchone()[0])
    tables = network_tables(net)
    counts = {k: len(tables.get(k, [])) for k in ("buses", "lines", "trafos", "switches", "loads", "sgens", "storage")}
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("UPDATE grid.model_versions SET valid_to = ? WHERE valid_to IS NULL", [valid_from])
        con.execute("INSERT INTO grid.model_versions VALUES (?, ?, NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
                    [version, valid_from, source, sha, counts["buses"], counts["lines"], counts["trafos"],
                     counts["switches"], counts["loads"], counts["sgens"], counts["storage"], js])
        for name, df in {**tables, **(extra_tables or {})}.items():
            df = df.copy()
            df.insert(0, "version", version)
            for c in df.columns:  # lists/dicts (e.g. bus lists) as JSON text
                if df[c].dtype == object and len(df) and isinstance(df[c].dropna().iloc[0] if df[c].notna().any() else None,
                                                                    (list, tuple, dict)):
                    df[c] = [json.dumps(v, default=int) if v is not None else None for v in df[c]]
            con.register("_grid_tbl", df)
            con.execute(f"CREATE TABLE IF NOT EXISTS grid.{name} AS SELECT * FROM _grid_tbl WHERE false")
            con.execute(f"INSERT INTO grid.{name} BY NAME SELECT * FROM _grid_tbl")
            con.unregister("_grid_tbl")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return version, True


def current_model(con, at: datetime | None = None) -> tuple[int, str, str] | None:
    """(version, sha256, network_json) of the model valid at ``at`` (default: the latest). Read-only:
    a store without ``grid.model_versions`` raises duckdb.CatalogException."""
    if at is None:
        row = con.execute("SELECT version, sha256, network_json FROM grid.model_versions "
                          "ORDER BY version DESC LIMIT 1").fetchall()
    else:
        row = con.execute("SELECT version, sha256, network_json FROM grid.model_versions WHERE valid_from <= ? "
                          "AND (valid_to IS NULL OR valid_to > ?) ORDER BY version DESC LIMIT 1", [at, at]).fetchall()
        if not row:  # snapshots before the first version: the earliest model
            row = con.execute("SELECT version, sha256, network_json FROM grid.model_versions "
                              "ORDER BY version LIMIT 1").fetchall()
    return (int(row[0][0]), row[0][1], row[0][2]) if row else None


def model_at(con, at: datetime) -> tuple[int, str, str, str | None] | None:
    """(version, sha256, network_json, note) of the network valid at ``at``; None without any version.

    ``note`` is None when a version is valid at ``at``. Otherwise (``at`` falls in a gap between
    versions, or before the first one) the nearest earlier version serves, or the earliest when none
    is earlier, and ``note`` says so: the caller flags the snapshot. Read-only (the live loop reads
    the store read-only): a store without ``grid.model_versions`` raises duckdb.CatalogException."""
    row = con.execute("SELECT version, sha256, network_json FROM grid.model_versions WHERE valid_from <= ? "
                      "AND (valid_to IS NULL OR valid_to > ?) ORDER BY version DESC LIMIT 1", [at, at]).fetchall()
    if row:
        return int(row[0][0]), row[0][1], row[0][2], None
    row = con.execute("SELECT version, sha256, network_json FROM grid.model_versions WHERE valid_from <= ? "
                      "ORDER BY valid_from DESC, version DESC LIMIT 1", [at]).fetchall()
    if row:
        return int(row[0][0]), row[0][1], row[0][2], (
            f"no network version valid at {at:%Y-%m-%d %H:%M:%S}; nearest earlier version {row[0][0]} used")
    row = con.execute("SELECT version, sha256, network_json, valid_from FROM grid.model_versions "
                      "ORDER BY valid_from, version LIMIT 1").fetchall()
    if row:
        return int(row[0][0]), row[0][1], row[0][2], (
            f"no network version valid at {at:%Y-%m-%d %H:%M:%S} (the first is valid from {row[0][3]}); "
            f"version {row[0][0]} used")
    return None


def net_from_json(js: str):
    import pandapower as pp

    return pp.from_json(io.StringIO(js))


def previous_switch_states(con, before: datetime) -> pd.Series | None:
    """Switch states of the latest estimated snapshot before ``before`` (None if there is none)."""
    row = con.execute("SELECT max(snapshot_ts) FROM grid.switch_states WHERE snapshot_ts < ?", [before]).fetchone()
    if not row or row[0] is None:
        return None
    df = con.execute("SELECT switch_id, closed FROM grid.switch_states WHERE snapshot_ts = ?", [row[0]]).df()
    return pd.Series(df.closed.to_numpy(dtype=bool), index=df.switch_id.to_numpy())


def last_good_state(con, before: datetime) -> pd.DataFrame | None:
    """Bus voltages of the latest converged estimate before ``before`` (the estimator's fallback)."""
    row = con.execute("SELECT max(snapshot_ts) FROM grid.state_summary WHERE snapshot_ts < ? AND converged",
                      [before]).fetchone()
    if not row or row[0] is None:
        return None
    df = con.execute("SELECT bus_id, u_pu, u_angle_deg, u_kv, energized FROM grid.state_bus WHERE snapshot_ts = ?",
                     [row[0]]).df()
    return df.set_index("bus_id")


def _insert(con, table: str, df: pd.DataFrame, ts: datetime) -> None:
    if df is None or not len(df):
        return
    df = df.copy()
    df.insert(0, "snapshot_ts", ts)
    cols = [c[0] for c in con.execute(f"DESCRIBE grid.{table}").fetchall()]
    df = df[[c for c in cols if c in df.columns]]
    con.register("_grid_rows", df)
    con.execute(f"INSERT INTO grid.{table} BY NAME SELECT * FROM _grid_rows")
    con.unregister("_grid_rows")


def write_cycle(con, result, window_start: datetime, model_version: int, source: str, readings: int) -> None:
    """Replace snapshot ``result.snapshot_ts``'s rows in every grid result table, in one transaction."""
    ts = result.snapshot_ts
    s = dict(result.summary)
    s.pop("snapshot_ts", None)
    s["j"] = s.pop("J")
    summary = pd.DataFrame([{**s, "window_start": window_start, "model_version": model_version, "source": source,
                             "readings": readings, "computed_at": datetime.utcnow()}])
    buses = result.buses.rename_axis("bus_id").reset_index()
    sw = pd.DataFrame({"switch_id": result.switch_states.index.to_numpy(), "closed": result.switch_states.to_numpy()})
    con.execute("BEGIN TRANSACTION")
    try:
        for t in SNAPSHOT_TABLES:
            con.execute(f"DELETE FROM grid.{t} WHERE snapshot_ts = ?", [ts])
        _insert(con, "state_summary", summary, ts)
        _insert(con, "state_bus", buses, ts)
        _insert(con, "state_branch", result.branches, ts)
        _insert(con, "state_injection", result.appliances, ts)
        _insert(con, "bad_data", result.bad_data, ts)
        _insert(con, "bottlenecks", result.bottlenecks, ts)
        _insert(con, "topology_events", result.events, ts)
        _insert(con, "switch_states", sw, ts)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def write_contingencies(con, ts: datetime, table: pd.DataFrame, relief: pd.DataFrame | None, trigger: str) -> None:
    df = table.drop(columns=["elements"], errors="ignore").copy()
    df["trigger"] = trigger
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM grid.contingencies WHERE snapshot_ts = ?", [ts])
        con.execute("DELETE FROM grid.contingency_relief WHERE snapshot_ts = ?", [ts])
        _insert(con, "contingencies", df, ts)
        if relief is not None:
            _insert(con, "contingency_relief", relief, ts)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
