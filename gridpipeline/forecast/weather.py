"""Weather feeds and weather features.

Two feeds give the same frame (UTC index; temperature and dew point in °C, relative humidity and
cloud cover in %, wind speed at 10 m and, when the feed has it, at 100 m in m/s, GHI in W/m²):

* :class:`FileWeatherFeed`, the default: the world's weather file (pvlib's TMY3 for the sample world)
  serves observations and, for the next 24 h, the forecast (a perfect-prognosis stand-in);
* :class:`OpenMeteoClient`: an HTTP client for an Open-Meteo-style forecast API
  (``/v1/forecast?latitude=..&longitude=..&hourly=...``, the public API's JSON schema), with a
  timeout, retries with back-off on connection errors and 5xx answers, and a clear error otherwise.

:func:`weather_features` derives what the models use: dew point or humidity (whichever is missing,
Magnus formula), heating/cooling degree hours, wind speed at hub height (power law), clear-sky GHI
and the clear-sky index (pvlib, Ineichen), cloud cover, and the calendar in local time with public
holidays (the ``holidays`` package), DST-safe because it is computed from tz-aware instants.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gridpipeline.forecast.features import holiday_dates

COLUMNS = ["temperature", "dew_point", "relative_humidity", "wind_speed_10m", "wind_speed_100m", "ghi", "cloud_cover"]
OPEN_METEO_HOURLY = {
    "temperature_2m": "temperature", "dew_point_2m": "dew_point", "relative_humidity_2m": "relative_humidity",
    "wind_speed_10m": "wind_speed_10m", "wind_speed_100m": "wind_speed_100m", "shortwave_radiation": "ghi",
    "cloud_cover": "cloud_cover",
}


class WeatherUnavailable(RuntimeError):
    """The feed could not deliver (after its retries); the message says why."""


@dataclass
class FileWeatherFeed:
    """Weather from the world's file: ``world.weather_at(times)`` (pvlib TMY3 column names)."""

    world: object
    name: str = "file"

    def _at(self, times: pd.DatetimeIndex) -> pd.DataFrame:
        w = self.world.weather_at(times)
        return pd.DataFrame({
            "temperature": w["temp_air"].to_numpy(dtype=float),
            "dew_point": w["temp_dew"].to_numpy(dtype=float) if "temp_dew" in w else np.nan,
            "relative_humidity": w["relative_humidity"].to_numpy(dtype=float) if "relative_humidity" in w else np.nan,
            "wind_speed_10m": w["wind_speed"].to_numpy(dtype=float),
            "wind_speed_100m": np.nan,
            "ghi": w["ghi"].to_numpy(dtype=float),
            "cloud_cover": w["cloud_cover_total"].to_numpy(dtype=float) if "cloud_cover_total" in w else np.nan,
        }, index=times)

    def observations(self, start: pd.Timestamp, end: pd.Timestamp, step: str = "5min") -> pd.DataFrame:
        return self._at(pd.date_range(start, end, freq=step, inclusive="left"))

    def forecast(self, issue: pd.Timestamp, horizon: pd.Timedelta, step: str = "5min") -> pd.DataFrame:
        return self._at(pd.date_range(issue, issue + horizon, freq=step, inclusive="left"))


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

    def forecast(self, issue: pd.Timestamp, horizon: pd.Timedelta, step: str = "5min") -> pd.DataFrame:
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
        return frame.reindex(both).interpolate(method="time", limit_area="inside").reindex(target)


def magnus_dew_point(t_c: np.ndarray, rh: np.ndarray) -> np.ndarray:
    a, b = 17.62, 243.12
    g = np.log(np.clip(rh, 1e-3, 100) / 100.0) + a * t_c / (b + t_c)
    return b * g / (a - g)


def magnus_rh(t_c: np.ndarray, td_c: np.ndarray) -> np.ndarray:
    a, b = 17.62, 243.12
    return 100.0 * np.exp(a * td_c / (b + td_c) - a * t_c / (b + t_c))


def weather_features(frame: pd.DataFrame, latitude: float, longitude: float, tz: str, country: str | None = None,
                     base_temp_c: float = 18.0, hub_height_m: float = 100.0, shear_alpha: float = 1 / 7) -> pd.DataFrame:
    """Model-ready features on ``frame``'s UTC index (see the module docstring)."""
    import pvlib

    f = frame.reindex(columns=COLUMNS).astype(float).copy()
    t = f.temperature.to_numpy()
    dp_missing = f.dew_point.isna().to_numpy()
    rh_missing = f.relative_humidity.isna().to_numpy()
    if dp_missing.any():
        f.loc[dp_missing, "dew_point"] = magnus_dew_point(t[dp_missing], f.relative_humidity.to_numpy()[dp_missing])
    if rh_missing.any():
        f.loc[rh_missing, "relative_humidity"] = magnus_rh(t[rh_missing], f.dew_point.to_numpy()[rh_missing])
    f["hdh"] = np.maximum(base_temp_c - f.temperature, 0)
    f["cdh"] = np.maximum(f.temperature - base_temp_c, 0)
    hub = f.wind_speed_100m.where(f.wind_speed_100m.notna(), f.wind_speed_10m * (100.0 / 10.0) ** shear_alpha)
    f["wind_speed_hub"] = hub * (hub_height_m / 100.0) ** shear_alpha
    loc = pvlib.location.Location(latitude, longitude, tz="UTC")
    cs = loc.get_clearsky(f.index, model="ineichen")
    f["ghi_clear"] = cs["ghi"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        csi = np.where(f.ghi_clear > 20, f.ghi / f.ghi_clear, np.nan)
    f["clear_sky_index"] = np.clip(csi, 0, 1.5)
    f["cloud_cover"] = f.cloud_cover.where(f.cloud_cover.notna(), (1 - f.clear_sky_index.clip(0, 1)) * 100)
    local = f.index.tz_convert(tz)
    hol = holiday_dates(country, None, sorted(set(local.year))) if country else frozenset()
    f["local_hour"] = local.hour + local.minute / 60.0
    f["weekday"] = local.dayofweek
    f["holiday"] = np.array([d in hol for d in local.date])
    f["is_dst"] = np.array([bool(x.dst()) for x in local])
    return f
