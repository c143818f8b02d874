"""ENTSO-E publication documents and the HTTP price source: documents built from the real SMARD
numbers, read back exactly; every bad input a clear error or a flag; a loopback HTTP server that
answers, fails, stalls and lies."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd
import pytest

from gridpipeline.sources.entsoe import EntsoeError, read_entsoe, write_entsoe
from gridpipeline.sources.price_http import EntsoeApi, delivery_window, published_by, sync
from gridpipeline.sources.prices import SmardFolder, read_price_file
from gridpipeline.world.price_exchange import load_reference, mapped_prices


def smard_day(day: str) -> pd.Series:
    """The real 2018 SMARD prices the world maps onto delivery day ``day`` (Berlin), hourly on UTC."""
    start, end = delivery_window(pd.Timestamp(day))
    return mapped_prices(start, end, load_reference()).round(2)


@pytest.mark.parametrize("curve", ["A01", "A03"])
def test_a_document_built_from_smard_numbers_reads_back_exactly(curve):
    s = smard_day("2026-12-04")
    doc = read_entsoe(write_entsoe(s, curve=curve))
    assert doc.flags == [] and doc.zone == "10Y1001A1001A82H"
    pd.testing.assert_series_equal(doc.prices, s.rename("price"), check_freq=False, check_index_type=False)


@pytest.mark.parametrize(("day", "hours"), [("2026-03-29", 23), ("2026-10-25", 25), ("2026-12-04", 24)])
def test_daylight_saving_days_have_23_and_25_hours(day, hours):
    start, end = delivery_window(pd.Timestamp(day))
    assert (end - start) == pd.Timedelta(hours=hours)
    s = smard_day(day)
    assert len(read_entsoe(write_entsoe(s)).prices) == hours == len(s)
    assert published_by(pd.Timestamp(day)) == (pd.Timestamp(day) - pd.Timedelta(hours=12)).tz_localize(
        "Europe/Berlin").tz_convert("UTC")


def test_quarter_hours_are_averaged_to_hours_and_flagged():
    start = pd.Timestamp("2026-12-03 23:00", tz="UTC")
    pts = "".join(f"<Point><position>{k + 1}</position><price.amount>{10 + k}</price.amount></Point>" for k in range(8))
    xml = (f'<Publication_MarketDocument xmlns="urn:iec62325.351:tc57wg16:451-3:publicationdocument:7:3">'
           f"<type>A44</type><TimeSeries><currency_Unit.name>EUR</currency_Unit.name>"
           f"<price_Measure_Unit.name>MWH</price_Measure_Unit.name><curveType>A01</curveType><Period>"
           f"<timeInterval><start>{start:%Y-%m-%dT%H:%MZ}</start><end>2026-12-04T01:00Z</end></timeInterval>"
           f"<resolution>PT15M</resolution>{pts}</Period></TimeSeries></Publication_MarketDocument>")
    doc = read_entsoe(xml)
    assert doc.prices.tolist() == [11.5, 15.5]
    assert any("averaged" in f for f in doc.flags)


@pytest.mark.parametrize(("text", "says"), [
    (b"<Publication_MarketDocument><TimeSeries>", "malformed XML"),
    (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>', "DTD"),
    ((b"<Acknowledgement_MarketDocument><Reason><code>999</code><text>No matching data found</text></Reason>"
      b"</Acknowledgement_MarketDocument>"), "No matching data found"),
    (b"<Publication_MarketDocument><type>A65</type></Publication_MarketDocument>", "A65"),
    ((b"<Publication_MarketDocument><type>A44</type><TimeSeries><currency_Unit.name>USD</currency_Unit.name>"
      b"</TimeSeries></Publication_MarketDocument>"), "USD"),
    (b"<Publication_MarketDocument><type>A44</type></Publication_MarketDocument>", "without any price"),
])
def test_what_cannot_be_prices_is_a_clear_error(text, says):
    with pytest.raises(EntsoeError, match=says):
        read_entsoe(text)


def test_a_wrong_unit_a_missing_hour_and_a_spike_are_flagged_not_lost(tmp_path):
    s = smard_day("2026-12-04")
    kwh = read_entsoe(write_entsoe(s, unit="KWH"))
    np.testing.assert_allclose(kwh.prices.to_numpy(), s.to_numpy(), atol=1e-6)  # converted back to EUR/MWh
    assert any("converted" in f for f in kwh.flags)
    holed = s.copy()
    holed.iloc[5] = np.nan
    holed.iloc[7] = 3000.0  # a spike at the old harmonised cap
    (tmp_path / "day_ahead_20261204.xml").write_bytes(write_entsoe(holed))
    got, notes = read_price_file(tmp_path / "day_ahead_20261204.xml")
    assert np.isnan(got.iloc[5]) and got.iloc[7] == 3000.0  # kept, not clipped
    assert any("1 of 24 positions" in n for n in notes)
    assert any("spike" in n and "3000" in n for n in notes)
    # the folder serves both formats, with the notes
    s2 = smard_day("2026-12-05")
    (tmp_path / "day_ahead_20261205.xml").write_bytes(write_entsoe(s2))
    known, notes2 = SmardFolder(tmp_path).known(pd.Timestamp.now(tz="UTC"))
    assert len(known) == 48 and known.iloc[7] == 3000.0
    assert any("spike" in n for n in notes2)


def test_euros_per_kwh_sent_as_per_mwh_are_flagged():
    s = smard_day("2026-12-04") / 1000.0  # the unit says MWh, the numbers are per kWh
    path_notes = read_entsoe(write_entsoe(s.round(5)))
    from gridpipeline.sources.prices import price_notes

    assert any("EUR/kWh sent as EUR/MWh" in n for n in price_notes(path_notes.prices, "x.xml"))


class _Source:
    """A loopback price source: serves documents built from SMARD numbers, or fails as told."""

    def __init__(self):
        self.fail_next = 0  # answer 503 this many times first
        self.stall_s = 0.0
        self.garbage = False
        self.requests: list[dict] = []
        source = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                q = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
                source.requests.append(q)
                if source.stall_s:
                    time.sleep(source.stall_s)
                if source.fail_next > 0:
                    source.fail_next -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                start = pd.Timestamp(q["periodStart"], tz="UTC")
                end = pd.Timestamp(q["periodEnd"], tz="UTC")
                body = b"<Publication_MarketDocument><oops" if source.garbage else \
                    write_entsoe(mapped_prices(start, end, load_reference()).round(2))
                self.send_response(200)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def source():
    s = _Source()
    yield s
    s.close()


def test_the_http_source_fills_the_folder_with_published_days_only(source, tmp_path):
    api = EntsoeApi(source.url, token="t0k", timeout_s=2.0, retries=2, backoff_s=0.05)
    now = pd.Timestamp("2026-12-04 10:00", tz="UTC")  # 11:00 Berlin: tomorrow is not published yet
    r = sync(api, tmp_path, now)
    assert r["down"] is None and r["rejected"] == []
    assert r["fetched"] == ["day_ahead_20261202.xml", "day_ahead_20261203.xml", "day_ahead_20261204.xml"]
    assert source.requests[0]["documentType"] == "A44" and source.requests[0]["securityToken"] == "t0k"
    assert source.requests[-1]["periodStart"] == "202612032300"
    later = sync(api, tmp_path, pd.Timestamp("2026-12-04 11:05", tz="UTC"))  # 12:05 Berlin
    assert later["fetched"] == ["day_ahead_20261205.xml"]  # only what is new
    known, notes = SmardFolder(tmp_path).known(pd.Timestamp.now(tz="UTC"))
    assert notes == []
    ref = mapped_prices(pd.Timestamp("2026-12-04 23:00", tz="UTC"), pd.Timestamp("2026-12-05 23:00", tz="UTC"),
                        load_reference()).round(2)
    np.testing.assert_allclose(known.loc[ref.index].to_numpy(), ref.to_numpy())


def test_retries_ride_out_a_brief_outage(source, tmp_path):
    source.fail_next = 2
    api = EntsoeApi(source.url, timeout_s=2.0, retries=2, backoff_s=0.05)
    r = sync(api, tmp_path, pd.Timestamp("2026-12-04 10:00", tz="UTC"), days_back=0)
    assert r["fetched"] == ["day_ahead_20261204.xml"] and r["down"] is None
    assert len(source.requests) == 3


def test_a_source_that_is_down_or_stalls_leaves_the_last_known_prices_serving(source, tmp_path):
    api = EntsoeApi(source.url, timeout_s=2.0, retries=1, backoff_s=0.05)
    sync(api, tmp_path, pd.Timestamp("2026-12-03 12:00", tz="UTC"))  # up to 4 December
    before, _ = SmardFolder(tmp_path).known(pd.Timestamp.now(tz="UTC"))
    source.stall_s = 0.6
    slow = EntsoeApi(source.url, timeout_s=0.2, retries=1, backoff_s=0.05)
    r = sync(slow, tmp_path, pd.Timestamp("2026-12-04 12:00", tz="UTC"))
    assert "did not answer after 2 attempts" in r["down"] and "timed out" in r["down"].lower()
    source.close()
    gone = sync(api, tmp_path, pd.Timestamp("2026-12-04 12:00", tz="UTC"))
    assert gone["down"] and gone["fetched"] == []
    after, _ = SmardFolder(tmp_path).known(pd.Timestamp.now(tz="UTC"))
    pd.testing.assert_series_equal(before, after)  # the last known prices still serve
    from gridpipeline.sources.prices import price_curve

    curve = price_curve(after, pd.Timestamp("2026-12-04 23:00", tz="UTC"), pd.Timestamp("2026-12-05 23:00", tz="UTC"),
                        pd.Timedelta(hours=1))
    assert (curve.source == "forecast").all()  # labelled: tomorrow is not known


def test_a_document_that_is_not_prices_goes_to_quarantine_with_its_reason(source, tmp_path):
    source.garbage = True
    api = EntsoeApi(source.url, timeout_s=2.0, retries=0)
    r = sync(api, tmp_path, pd.Timestamp("2026-12-04 10:00", tz="UTC"), days_back=0)
    assert r["fetched"] == [] and r["rejected"][0]["file"] == "day_ahead_20261204.xml"
    assert "malformed XML" in (tmp_path / "rejected" / "day_ahead_20261204.reason.txt").read_text()
    assert (tmp_path / "rejected" / "day_ahead_20261204.xml").read_bytes().startswith(b"<Publication")
    assert SmardFolder(tmp_path).known(pd.Timestamp.now(tz="UTC"))[0].empty  # nothing half-read


def test_the_feed_fills_the_folder_in_its_own_thread_and_says_when_the_source_is_down(source, tmp_path):
    from gridpipeline.sources.price_http import PriceFeed

    clock = lambda: pd.Timestamp("2026-12-04 12:00", tz="UTC")
    feed = PriceFeed(EntsoeApi(source.url, timeout_s=1.0, retries=0), tmp_path, every_s=0.1, clock=clock).start()
    deadline = time.monotonic() + 10
    while feed.status["syncs"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (tmp_path / "day_ahead_20261205.xml").exists() and feed.status["down_since"] is None
    source.close()
    (tmp_path / "day_ahead_20261205.xml").unlink()  # asked again: the source is gone now
    n = feed.status["syncs"]
    while feed.status["syncs"] < n + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    feed.stop()
    assert feed.status["down_since"] == str(clock()) and feed.status["last"]["down"]
