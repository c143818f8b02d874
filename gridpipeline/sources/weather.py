"""The weather provider's feeds, as the pipeline may see them.

Two feeds give the same frame (UTC index; temperature and dew point in °C, relative humidity and
cloud cover in %, wind speed at 10 m and, when the feed has it, at 100 m in m/s, GHI in W/m²):

* :class:`NwpFileFeed`, the default: numerical-weather-prediction runs that the provider drops as files
  into ``GRIDPIPELINE_WEATHER_DIR`` (layout in :mod:`gridpipeline.common.weather_files`), each usable
  from the time it became available, and the station observations feed, which only reaches the present.
  A forecast issued at ``t`` reads the newest run available at ``t``, never a later one, so a backfill
  gives the same forecast whatever arrived since;
* :class:`OpenMeteoClient`: an HTTP client for an Open-Meteo-style forecast API
  (``/v1/forecast?latitude=..&longitude=..&hourly=...``, the public API's JSON schema), with a
  timeout, retries with back-off on connection errors and 5xx answers, and a clear error otherwise.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ["temperature", "dew_point", "relative_humidity", "wind_speed_10m", "wind_speed_100m", "ghi", "cloud_cover"]
OPEN_METEO_HOURLY = {
    "temperature_2m": "temperature", "dew_point_2m": "dew_point", "relative_humidity_2m": "relative_humidity",
    "wind_speed_10m": "wind_speed_10m", "wind_speed_100m": "wind_speed_100m", "shortwave_radiation": "ghi",
    "cloud_cover": "cloud_cover",
}
# The provider's file columns (pvlib's TMY3 names) -> ours.
FILE_COLUMNS = {"temp_air": "temperature", "temp_dew": "dew_point", "relative_humidity": "relative_humidity",
                "wind_speed": "wind_speed_10m", "ghi": "ghi", "cloud_cover_total": "cloud_cover"}


class WeatherUnavailable(RuntimeError):
    """The feed could not deliver (after its retries); the message says why."""


def _ours(frame: pd.DataFrame) -> pd.DataFrame:
    """Provider columns renamed to the pipeline's, missing ones as NaN, in :data:`COLUMNS` order."""
    return frame.rename(columns=FILE_COLUMNS).reindex(columns=COLUMNS).astype(float)


@dataclass
class NwpFileFeed:
    """Forecast runs and station observations from the provider's drop folder."""

    weather_dir: Path
    name: str = "nwp_file"

    def forecast(self, issue: pd.Timestamp, horizon: pd.Timedelta, step: str = "5min") -> tuple[pd.DataFrame, dict]:
        """The newest run available at ``issue`` over [issue, issue + horizon), and which run it was."""
        from gridpipeline.common.weather_files import NoForecastAvailable, read_forecast_asof

        try:
            frame, info = read_forecast_asof(Path(self.weather_dir), issue, horizon, step=step)
        except NoForecastAvailable as exc:
            raise WeatherUnavailable(str(exc)) from exc
        return _ours(frame), info

    def observations(self, start: pd.Timestamp, end: pd.Timestamp, step: str = "5min") -> pd.DataFrame:
        """Observed weather in [start, end) at ``step``; instants the station has not reported are NaN."""
        from gridpipeline.common.weather_files import read_observations

        target = pd.date_range(start, end, freq=step, inclusive="left")
        obs = read_observations(Path(self.weather_dir), start, end)
        return _ours(obs).reindex(target)


@dataclass
class OpenMeteoClient:
    """Client for an Open-Meteo-style forecast API (hourly variables, UTC, wind in m/s)."""

    base_url: str
    latitude: float
    longitude: float
    timeout_s: float = 10.0
    retries: int = 3
    backoff_s: float = 0.5
    name: str = "open_meteo"

    def _get(self, params: dict) -> dict:
        url = self.base_url.rstrip("/") + "/v1/forecast?" + urllib.parse.urlencode(params)
        last = None
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:
                    return json.loads(resp.read().decode())
            except urllib.error.HTTPError as exc:
                body = exc.read().decode(errors="replace")[:300]
                last = f"HTTP {exc.code}: {body}"
                if exc.code < 500:  # the request is wrong: retrying will not help
                    raise WeatherUnavailable(f"weather API refused the request ({last})") from exc
            except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if attempt < self.retries:
                time.sleep(self.backoff_s * 2 ** attempt)
        raise WeatherUnavailable(f"weather API unavailable after {self.retries + 1} attempts ({last})")

    def forecast(self, issue: pd.Timestamp, horizon: pd.Timedelta, step: str = "5min") -> tuple[pd.DataFrame, dict]:
        days = int(np.ceil((issue + horizon - issue.normalize()) / pd.Timedelta(days=1))) + 1
        data = self._get({"latitude": self.latitude, "longitude": self.longitude,
                          "hourly": ",".join(OPEN_METEO_HOURLY), "timezone": "UTC", "wind_speed_unit": "ms",
                          "forecast_days": min(max(days, 1), 16)})
        hourly = data.get("hourly")
        if not isinstance(hourly, dict) or "time" not in hourly:
            raise WeatherUnavailable("weather API answer has no 'hourly' block with 'time'")
        idx = pd.to_datetime(hourly["time"], utc=True)
        frame = pd.DataFrame({ours: pd.to_numeric(pd.Series(hourly.get(theirs, [None] * len(idx))), errors="coerce")
                              .to_numpy(dtype=float) for theirs, ours in OPEN_METEO_HOURLY.items()}, index=idx)
        frame = frame[~frame.index.duplicated()].sort_index()
        target = pd.date_range(issue, issue + horizon, freq=step, inclusive="left")
        if frame.index.max() < target[-1] or frame.index.min() > target[0]:
            raise WeatherUnavailable(f"weather API covers {frame.index.min()}..{frame.index.max()}, "
                                     f"not the horizon {target[0]}..{target[-1]}")
        both = frame.index.union(target)
        return (frame.reindex(both).interpolate(method="time", limit_area="inside").reindex(target),
                {"source": self.name})
