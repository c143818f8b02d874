"""Time partitions.

Five-minute windows (``*/5 * * * *``, UTC) are the unit of ingestion and cleaning. Dagster advises at
most ~100k partitions per asset and five-minute partitions make ~105k a year, so the partition set
starts at the store's *epoch*, the first day it holds data, rather than years back:

* ``GRIDPIPELINE_PARTITIONS_START`` (``YYYY-MM-DD``) if set;
* else the date in ``<GRIDPIPELINE_HOME>/partitions_start``, which ``gridpipeline dev`` writes on its
  first start (the first day of the history it imports), so a newcomer's partitions fill up;
* else :data:`DEFAULT_START`.
"""

import os
from datetime import date
from pathlib import Path

from dagster import HourlyPartitionsDefinition, TimeWindowPartitionsDefinition

DEFAULT_START = "2026-10-01"
EPOCH_FILE = "partitions_start"


def epoch_file(home: Path | None = None) -> Path:
    from gridpipeline.settings import PROJECT_ROOT

    home = home or Path(os.environ.get("GRIDPIPELINE_HOME") or PROJECT_ROOT / "var")
    return Path(home).expanduser() / EPOCH_FILE


def resolve_start() -> str:
    env = os.environ.get("GRIDPIPELINE_PARTITIONS_START")
    if env:
        return env
    f = epoch_file()
    if f.is_file():
        text = f.read_text().strip()
        try:
            return date.fromisoformat(text).isoformat()
        except ValueError:
            raise RuntimeError(f"{f}: expected a date (YYYY-MM-DD), found {text[:20]!r}; fix or delete it") from None
    return DEFAULT_START


def write_epoch(day: date, home: Path | None = None) -> bool:
    """Record the store's first day, once: returns False (and changes nothing) if it is already set,
    since moving the start would re-key every partition the instance knows."""
    f = epoch_file(home)
    if f.exists() or os.environ.get("GRIDPIPELINE_PARTITIONS_START"):
        return False
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(day.isoformat() + "\n")
    return True


START = resolve_start()

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
