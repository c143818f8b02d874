"""Time partitions.

Five-minute windows (``*/5 * * * *``, UTC) are the unit of ingestion and cleaning. Dagster advises at
most ~100k partitions per asset and five-minute partitions make ~105k a year, so the partition set
starts at ``GRIDPIPELINE_PARTITIONS_START`` (default 2026-10-01) rather than years back.
"""

import os

from dagster import HourlyPartitionsDefinition, TimeWindowPartitionsDefinition

START = os.environ.get("GRIDPIPELINE_PARTITIONS_START", "2026-10-01")

five_minute_partitions = TimeWindowPartitionsDefinition(
    cron_schedule="*/5 * * * *",
    start=f"{START}-00:00",
    fmt="%Y-%m-%d-%H:%M",
    timezone="UTC",
)

hourly_partitions = HourlyPartitionsDefinition(start_date=f"{START}-00:00", timezone="UTC")

# The same windows including the one still open (end_offset=1): the 30-second grid loop writes the
# current window's snapshots before the window closes. Telemetry partitions only exist once closed.
live_five_minute_partitions = TimeWindowPartitionsDefinition(
    cron_schedule="*/5 * * * *",
    start=f"{START}-00:00",
    fmt="%Y-%m-%d-%H:%M",
    timezone="UTC",
    end_offset=1,
)
