"""Day-ahead prices across the wall: the exchange publishes SMARD day files at 12:00 Berlin the day
before; the pipeline reads them as of a time, fills gaps and forecasts beyond, every value labelled."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from gridpipeline.sources.prices import PricesUnavailable, SmardFolder, price_curve, read_smard
from gridpipeline.world.price_exchange import PriceExchange, load_reference, mapped_prices, publication_time


def test_the_2018_reference_has_its_negative_hours_and_weekdays_map_onto_weekdays():
    ref = load_reference()
    assert len(ref) == 8760 and (ref < 0).sum() == 134 and ref.notna().all()
    start = pd.Timestamp("2026-12-07", tz="UTC")  # a Monday
    m = mapped_prices(start, start + pd.Timedelta(days=14), ref)
    assert m.notna().all() and len(m) == 14 * 24
    src = ref.index[ref.index.get_indexer([pd.Timestamp("2018-12-10", tz="UTC")])[0]]
    assert src.dayofweek == start.dayofweek  # 52 x k weeks: same weekday


def test_prices_are_known_only_after_their_publication(tmp_path):
    ex = PriceExchange(tmp_path)
    now = pd.Timestamp("2026-12-04 11:30", tz="Europe/Berlin").tz_convert("UTC").tz_localize(None)
    ex.publish(pd.Timestamp("2026-12-02"), now.to_pydatetime())
    names = sorted(p.name for p in tmp_path.glob("*.csv"))
    assert names == ["day_ahead_20261202.csv", "day_ahead_20261203.csv", "day_ahead_20261204.csv"]
    later = pd.Timestamp("2026-12-04 12:00", tz="Europe/Berlin").tz_convert("UTC").tz_localize(None)
    ex.publish(pd.Timestamp("2026-12-02"), later.to_pydatetime())
    assert (tmp_path / "day_ahead_20261205.csv").exists()
    assert publication_time(pd.Timestamp("2026-12-05")) == pd.Timestamp("2026-12-04 11:00", tz="UTC")
    folder = SmardFolder(tmp_path)
    before, bad = folder.known(pd.Timestamp("2026-12-04 10:59", tz="UTC"))
    after, _ = folder.known(pd.Timestamp("2026-12-04 11:00", tz="UTC"))
    assert not bad
    assert before.index.max() == pd.Timestamp("2026-12-04 22:00", tz="UTC")  # D ends 23:00 Berlin
    assert after.index.max() == pd.Timestamp("2026-12-05 22:00", tz="UTC")
    # what was read is what the world published
    ref = mapped_prices(pd.Timestamp("2026-12-04 23:00", tz="UTC"), pd.Timestamp("2026-12-05 23:00", tz="UTC"),
                        load_reference())
    np.testing.assert_allclose(after.loc[ref.index].to_numpy(), ref.round(2).to_numpy())


def test_a_daylight_saving_day_reads_23_and_25_hours(tmp_path):
    ex = PriceExchange(tmp_path)
    ex.publish(pd.Timestamp("2026-03-28"), pd.Timestamp("2026-03-29 12:00").to_pydatetime())
    ex.publish(pd.Timestamp("2026-10-24"), pd.Timestamp("2026-10-25 12:00").to_pydatetime())
    assert len(read_smard(tmp_path / "day_ahead_20260329.csv")) == 23
    assert len(read_smard(tmp_path / "day_ahead_20261025.csv")) == 25


def test_the_curve_labels_known_filled_and_forecast_values(tmp_path):
    ex = PriceExchange(tmp_path)
    ex.publish(pd.Timestamp("2026-11-20"), pd.Timestamp("2026-12-04 12:00").to_pydatetime())
    p = tmp_path / "day_ahead_20261204.csv"
    lines = p.read_text().splitlines()
    lines[5] = lines[5].rsplit(";", 1)[0] + ";-"        # a missing price inside a published day
    lines[6] = lines[6].rsplit(";", 1)[0] + ";nan?"     # garbage
    mt = p.stat().st_mtime
    p.write_text("\n".join(lines) + "\n")
    os.utime(p, (mt, mt))
    known, _ = SmardFolder(tmp_path).known(pd.Timestamp("2026-12-04 12:00", tz="UTC"))
    start = pd.Timestamp("2026-12-04 00:00", tz="UTC")
    c = price_curve(known, start, start + pd.Timedelta(hours=48), pd.Timedelta(minutes=5))
    assert len(c) == 576 and c.price.notna().all()
    counts = c.source.value_counts().to_dict()
    assert counts["filled"] == 2 * 12  # two hours at 5-minute steps
    assert counts["known"] + counts["filled"] == (known.index.max() - start).total_seconds() / 300 + 12
    assert c.source.iloc[-1] == "forecast"
    with pytest.raises(PricesUnavailable):
        price_curve(pd.Series(dtype=float), start, start + pd.Timedelta(hours=1), pd.Timedelta(minutes=5))


def test_a_file_that_is_not_smard_is_reported_not_fatal(tmp_path):
    (tmp_path / "junk.csv").write_text("hello\n1\n")
    t = pd.Timestamp("2026-12-01", tz="UTC").timestamp()
    os.utime(tmp_path / "junk.csv", (t, t))
    PriceExchange(tmp_path).publish(pd.Timestamp("2026-12-01"), pd.Timestamp("2026-12-01 12:00").to_pydatetime())
    known, bad = SmardFolder(tmp_path).known(pd.Timestamp("2026-12-03", tz="UTC"))
    assert len(bad) == 1 and bad[0].startswith("junk.csv: unreadable (ValueError: junk.csv: not a SMARD") and len(known) == 48


def test_a_day_file_is_parsed_once_and_again_when_it_changes(tmp_path, monkeypatch):
    from gridpipeline.sources import prices

    ex = PriceExchange(tmp_path)
    ex.publish(pd.Timestamp("2026-12-01"), pd.Timestamp("2026-12-04 12:00").to_pydatetime())
    reads: list[str] = []
    real = prices.read_smard
    monkeypatch.setattr(prices, "read_smard", lambda p: reads.append(p.name) or real(p))
    folder = SmardFolder(tmp_path)
    now = pd.Timestamp("2026-12-05 12:00", tz="UTC")
    first, _ = folder.known(now)
    n = len(reads)
    assert n == len(list(tmp_path.glob("*.csv"))) and n > 0
    again, _ = folder.known(now)
    assert len(reads) == n  # nothing re-read
    pd.testing.assert_series_equal(first, again)
    p = tmp_path / "day_ahead_20261204.csv"
    lines = p.read_text().splitlines()
    lines[3] = lines[3].rsplit(";", 1)[0] + ";999.00"
    mt = p.stat().st_mtime
    p.write_text("\n".join(lines) + "\n")
    os.utime(p, (mt, mt + 1))  # a correction, published again (still before now)
    third, _ = folder.known(now)
    assert reads[n:] == [p.name]  # only the changed file
    assert (third != first).sum() == 1 and third.max() == 999.0
