"""DDL of every table the Python side writes. dbt models own the ``clean`` schema.

Conventions:
- All timestamps are ``TIMESTAMP`` holding UTC (naive). Readings are keyed by ``(sensor_id, ts)``
  without a PRIMARY KEY: a key makes appends ~6x slower and the file ~24x bigger on DuckDB, so
  uniqueness per partition is enforced by delete+insert of the partition's window instead.
- ``sensor_id`` is an INTEGER; the human-readable ``name`` lives in ``telemetry.sensors``.
"""

SCHEMAS = ("telemetry", "grid", "clean", "ops")

DDL = [
    # Sensor registry (rebuilt whole by the `sensor_registry` asset).
    """
    CREATE TABLE IF NOT EXISTS telemetry.sensors (
        sensor_id     INTEGER NOT NULL,
        name          VARCHAR NOT NULL,
        kind          VARCHAR NOT NULL,   -- v_mag, p_inj, q_inj, p_branch, q_branch, i_branch,
                                          -- switch_status, soc, frequency, energy
        element_type  VARCHAR NOT NULL,   -- bus, load, sgen, storage, line, trafo, switch, ext_grid
        element_id    INTEGER NOT NULL,   -- pandapower index of the element
        terminal      VARCHAR,            -- 'from'/'to' (line), 'hv'/'lv' (trafo), NULL otherwise
        bus           INTEGER,            -- bus the sensor sits at
        zone          VARCHAR NOT NULL,   -- feeder / LV grid the sensor belongs to
        source        VARCHAR NOT NULL,   -- RTU / substation whose historian exports the reading
        unit          VARCHAR NOT NULL,   -- canonical unit: kV, MW, Mvar, A, state, %, Hz, kWh
        nominal       DOUBLE NOT NULL,    -- scale for plausibility checks (kV, MVA, A, ...)
        sigma         DOUBLE NOT NULL,    -- accuracy (1 sigma) in the canonical unit
        interval_s    INTEGER NOT NULL    -- sampling interval
    )
    """,
    # Accepted readings, one row per reading as it arrived (duplicates resolved in dbt).
    """
    CREATE TABLE IF NOT EXISTS telemetry.raw_readings (
        sensor_id   INTEGER NOT NULL,
        ts          TIMESTAMP NOT NULL,
        value       DOUBLE NOT NULL,
        unit        VARCHAR,
        arrived_at  TIMESTAMP NOT NULL,
        file_id     BIGINT NOT NULL
    )
    """,
    # Every rejected row, with why. Values kept as text so wrongly typed input is preserved.
    """
    CREATE TABLE IF NOT EXISTS telemetry.quarantine (
        window_start TIMESTAMP NOT NULL,
        file_id      BIGINT,
        file_path    VARCHAR,
        row_number   BIGINT,
        sensor_id    VARCHAR,
        ts           VARCHAR,
        value        VARCHAR,
        unit         VARCHAR,
        reason       VARCHAR NOT NULL,
        quarantined_at TIMESTAMP NOT NULL
    )
    """,
    # One row per landing file seen by a partition run.
    """
    CREATE TABLE IF NOT EXISTS telemetry.ingest_files (
        file_id      BIGINT NOT NULL,
        window_start TIMESTAMP NOT NULL,
        file_path    VARCHAR NOT NULL,
        source       VARCHAR,
        arrived_at   TIMESTAMP,
        bytes        BIGINT,
        rows_in      BIGINT,
        rows_stored  BIGINT,
        rows_quarantined BIGINT,
        status       VARCHAR NOT NULL,   -- ok, rejected, refused (symlink / outside the landing zone), skipped (hidden file)
        error        VARCHAR,
        ingested_at  TIMESTAMP NOT NULL
    )
    """,
    # Sensor health per hour (written by the `sensor_health` asset).
    """
    CREATE TABLE IF NOT EXISTS telemetry.sensor_health (
        hour_start        TIMESTAMP NOT NULL,
        sensor_id         INTEGER NOT NULL,
        expected          INTEGER NOT NULL,
        received          INTEGER NOT NULL,
        good              INTEGER NOT NULL,
        availability      DOUBLE NOT NULL,
        mean_latency_s    DOUBLE,
        max_latency_s     DOUBLE,
        last_seen         TIMESTAMP,
        status            VARCHAR NOT NULL   -- ok, degraded, silent
    )
    """,
]
