"""Sensor health per hour: availability, latency and last-seen, from cleaned telemetry."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb

HEALTH_SQL = """
WITH c AS (
    SELECT sensor_id, ts, quality, arrived_at
    FROM clean.clean_telemetry WHERE ts >= $start AND ts < $end
),
agg AS (
    SELECT s.sensor_id,
           (epoch($end) - epoch($start)) // s.interval_s                        AS expected,
           count(c.arrived_at)                                                   AS received,
           count(*) FILTER (WHERE c.quality = 'good')                            AS good,
           avg(epoch(c.arrived_at) - epoch(c.ts))                                AS mean_latency_s,
           max(epoch(c.arrived_at) - epoch(c.ts))                                AS max_latency_s,
           max(c.ts) FILTER (WHERE c.arrived_at IS NOT NULL)                     AS last_seen
    FROM telemetry.sensors s LEFT JOIN c USING (sensor_id)
    GROUP BY s.sensor_id, s.interval_s
)
SELECT $start AS hour_start, sensor_id, expected::INTEGER, received::INTEGER, good::INTEGER,
       CASE WHEN expected > 0 THEN least(received / expected, 1.0) ELSE 0 END AS availability,
       mean_latency_s, max_latency_s,
       coalesce(last_seen, (SELECT max(ts) FROM clean.clean_telemetry x
                            WHERE x.sensor_id = agg.sensor_id AND x.arrived_at IS NOT NULL AND x.ts < $start)) AS last_seen,
       CASE WHEN received = 0 THEN 'silent'
            WHEN received < 0.9 * expected OR good < 0.8 * received THEN 'degraded'
            ELSE 'ok' END AS status
FROM agg
"""


def compute_sensor_health(con: duckdb.DuckDBPyConnection, start: datetime, end: datetime) -> dict:
    """Replace ``telemetry.sensor_health`` rows for ``[start, end)`` hour by hour; return a summary."""
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM telemetry.sensor_health WHERE hour_start >= ? AND hour_start < ?", [start, end])
        hour = start
        while hour < end:
            con.execute("INSERT INTO telemetry.sensor_health " + HEALTH_SQL,
                        {"start": hour, "end": hour + timedelta(hours=1)})
            hour += timedelta(hours=1)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    row = con.execute(
        """SELECT count(*), sum(expected), sum(received), sum(good),
                  count(*) FILTER (WHERE status = 'ok'), count(*) FILTER (WHERE status = 'degraded'),
                  count(*) FILTER (WHERE status = 'silent'), max(max_latency_s), avg(mean_latency_s)
           FROM telemetry.sensor_health WHERE hour_start >= ? AND hour_start < ?""", [start, end]).fetchone()
    n, expected, received, good, ok, degraded, silent, max_lat, mean_lat = row
    expected = expected or 0
    return {
        "sensors": n,
        "coverage": (received / expected) if expected else 0.0,
        "good_share": (good / received) if received else 0.0,
        "ok": ok, "degraded": degraded, "silent": silent,
        "max_latency_s": max_lat, "mean_latency_s": mean_lat,
    }
