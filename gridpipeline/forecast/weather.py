"""Weather features: what the models use, derived from a weather frame of the provider's feeds
(:mod:`gridpipeline.sources.weather`).

:func:`weather_features` derives dew point or humidity (whichever is missing, Magnus formula),
heating/cooling degree hours, wind speed at hub height (power law), clear-sky GHI and the clear-sky
index (pvlib, Ineichen), cloud cover, and the calendar in local time with public holidays (the
``holidays`` package), DST-safe because it is computed from tz-aware instants.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gridpipeline.forecast.features import holiday_dates
from gridpipeline.sources.weather import COLUMNS


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
