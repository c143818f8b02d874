"""The Open-Meteo-style client against a real HTTP server on loopback that replays a response in the
public API's schema (``data/open_meteo_forecast.json``: 72 hours built from the sample world's TMY3
weather, since this machine cannot reach the live API), plus weather features."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gridpipeline.forecast.weather import weather_features
from gridpipeline.sources.weather import OpenMeteoClient, WeatherUnavailable

RESPONSE = (Path(__file__).parent / "data" / "open_meteo_forecast.json").read_bytes()
ISSUE = pd.Timestamp("2026-11-24 06:05", tz="UTC")


class Replay:
    """Scripted answers, one per request: an int is an HTTP error status, 'slow' sleeps past the
    client's timeout, anything else answers with the recorded response."""

    def __init__(self, script):
        self.script = list(script)
        self.requests: list[str] = []


@pytest.fixture
def server():
    state = Replay([])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            state.requests.append(self.path)
            step = state.script.pop(0) if state.script else "ok"
            if step == "slow":
                time.sleep(0.6)
            if isinstance(step, int):
                self.send_response(step)
                self.end_headers()
                self.wfile.write(b'{"error": true, "reason": "scripted"}')
                return
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(RESPONSE)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *a):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    th = threading.Thread(target=httpd.serve_forever, daemon=True)
    th.start()
    yield state, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _client(url, **kw):
    return OpenMeteoClient(url, 36.1, -79.95, **{"timeout_s": 0.3, "retries": 2, "backoff_s": 0.01, **kw})


def test_forecast_is_read_and_resampled(server):
    state, url = server
    fc, _ = _client(url).forecast(ISSUE, pd.Timedelta(hours=24))
    assert len(fc) == 288 and fc.index[0] == ISSUE
    assert fc[["temperature", "ghi", "wind_speed_100m"]].notna().all().all()
    q = state.requests[0]
    assert q.startswith("/v1/forecast?") and "temperature_2m" in q and "latitude=36.1" in q
    hourly = json.loads(RESPONSE)["hourly"]
    assert fc.loc[pd.Timestamp("2026-11-24 07:00", tz="UTC"), "temperature"] == pytest.approx(hourly["temperature_2m"][7])


def test_server_errors_are_retried(server):
    state, url = server
    state.script = [503, 502]
    fc, _ = _client(url).forecast(ISSUE, pd.Timedelta(hours=24))
    assert len(state.requests) == 3 and len(fc) == 288


def test_timeouts_are_retried_then_reported(server):
    state, url = server
    state.script = ["slow", "slow", "slow"]
    with pytest.raises(WeatherUnavailable, match="after 3 attempts"):
        _client(url).forecast(ISSUE, pd.Timedelta(hours=24))


def test_client_errors_are_not_retried(server):
    state, url = server
    state.script = [400]
    with pytest.raises(WeatherUnavailable, match="refused"):
        _client(url).forecast(ISSUE, pd.Timedelta(hours=24))
    assert len(state.requests) == 1


def test_horizon_beyond_the_answer_is_an_error(server):
    _, url = server
    with pytest.raises(WeatherUnavailable, match="not the horizon"):
        _client(url).forecast(ISSUE + pd.Timedelta(days=3), pd.Timedelta(hours=24))


def test_weather_features_fill_and_derive():
    idx = pd.date_range("2026-03-08 00:00", periods=48, freq="h", tz="UTC")  # US DST starts 2026-03-08
    f = pd.DataFrame({"temperature": np.linspace(0, 25, 48), "relative_humidity": 60.0, "wind_speed_10m": 5.0,
                      "ghi": np.clip(800 * np.sin(np.linspace(0, 4 * np.pi, 48)), 0, None)}, index=idx)
    out = weather_features(f, 36.1, -79.95, "America/New_York", country="US")
    assert out.dew_point.notna().all() and (out.dew_point < out.temperature).all()
    assert out.hdh.iloc[0] == pytest.approx(18.0) and out.cdh.iloc[-1] == pytest.approx(7.0)
    assert (out.wind_speed_hub > 5.0).all()
    assert out.is_dst.iloc[0] is np.False_ or not out.is_dst.iloc[0]
    assert out.is_dst.iloc[-1]
    assert out.clear_sky_index.dropna().between(0, 1.5).all()
    # local hours run through the DST jump without a duplicate
    assert out.local_hour.notna().all()
