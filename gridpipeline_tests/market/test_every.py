"""The market's reports run on the latest partition at each tick, and the one before once more after it
closes: a day (month) reported to date is not left without its last minutes (days)."""

from __future__ import annotations

from datetime import datetime, timedelta

import dagster as dg

from gridpipeline.market.assets import every

DAYS = dg.DailyPartitionsDefinition(start_date="2026-01-01", timezone="UTC", end_offset=1)
MONTHS = dg.MonthlyPartitionsDefinition(start_date="2026-01-01", timezone="UTC", end_offset=1)


@dg.asset(partitions_def=DAYS, automation_condition=every("50 * * * *", close="20 0 * * *"))
def daily(): ...


@dg.asset(partitions_def=MONTHS,
          automation_condition=every("55 23 * * *", close="35 0 1 * *", lookback=timedelta(days=62)))
def monthly(): ...


def test_the_day_and_the_month_are_reported_once_more_after_they_close():
    """Evaluated every 5 minutes from 23:35 on the month's last day (as the daemon does, more often):
    the day at :50 and the month at 23:55 as before; after midnight the day just ended once more at
    00:20, the month just ended at 00:35, each once; then the new day alone, every hour."""
    defs = dg.Definitions(assets=[daily, monthly])
    inst = dg.DagsterInstance.ephemeral()
    cursor, got = None, []
    t = datetime.fromisoformat("2026-06-30 23:36+00:00")
    while t < datetime.fromisoformat("2026-07-01 03:00+00:00"):
        r = dg.evaluate_automation_conditions(defs=defs, instance=inst, cursor=cursor, evaluation_time=t)
        cursor = r.cursor
        for k in ("daily", "monthly"):
            got += [(f"{t:%H:%M}", k, p) for p in sorted(r.get_requested_partitions(dg.AssetKey(k)))]
        t += timedelta(minutes=5)
    assert got == [("23:51", "daily", "2026-06-30"), ("23:56", "monthly", "2026-06-01"),
                   ("00:21", "daily", "2026-06-30"), ("00:36", "monthly", "2026-06-01"),
                   ("00:51", "daily", "2026-07-01"), ("01:51", "daily", "2026-07-01"),
                   ("02:51", "daily", "2026-07-01")]
