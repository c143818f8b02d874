"""Power of PV arrays and wind turbines from the weather: physics that holds on both sides of the wall.

The simulated world drives its PV and wind generators with these functions (from the true weather),
and the pipeline's generation forecasts use the same physics (from forecast weather), so a forecast
from perfect weather reproduces the world's generation and every forecast error comes from the
weather or the learnt correction, never from a mismatch of models.

* :func:`pv_physics`: pvlib (solar position, Erbs decomposition of GHI, plane-of-array irradiance,
  Faiman cell temperature, PVWatts DC with a temperature coefficient, inverter efficiency, clipping
  at the rating).
* :func:`wind_physics`: a turbine power curve from windpowerlib's bundled turbine library (default
  Enercon E-82/2300) at the hub-height wind speed, scaled to the farm's rating.
* :func:`hub_wind_speed`: 10 m wind speed brought to hub height with the power law (exponent 1/7,
  the neutral-stability value over open land).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

#: Power-law shear exponent for neutral stability over open terrain.
SHEAR_ALPHA = 1 / 7
#: Hub height (m) of the default turbine (windpowerlib's E-82/2300 curve is given at 100 m here).
HUB_HEIGHT_M = 100.0


def pv_physics(weather: pd.DataFrame, latitude: float, longitude: float, capacity_mw: float, tilt: float = 25.0,
               azimuth: float = 180.0, gamma_pdc: float = -0.004, inverter_eff: float = 0.96) -> pd.Series:
    """AC output (MW) of a fixed PV array from ``weather`` (UTC index; ``ghi`` W/m², ``temperature`` °C,
    optional ``wind_speed_10m`` m/s)."""
    import pvlib

    idx = weather.index
    ghi = weather["ghi"].astype(float).clip(lower=0).fillna(0.0)
    temp = weather["temperature"].astype(float).ffill().bfill().fillna(15.0)
    wind = weather["wind_speed_10m"].astype(float).fillna(1.0) if "wind_speed_10m" in weather else 1.0
    sp = pvlib.solarposition.get_solarposition(idx, latitude, longitude)
    dec = pvlib.irradiance.erbs(ghi, sp["zenith"], idx)
    poa = pvlib.irradiance.get_total_irradiance(tilt, azimuth, sp["apparent_zenith"], sp["azimuth"], dec["dni"],
                                                ghi, dec["dhi"])["poa_global"].fillna(0.0).clip(lower=0)
    tcell = pvlib.temperature.faiman(poa, temp, wind)
    pdc = pvlib.pvsystem.pvwatts_dc(poa, tcell, capacity_mw, gamma_pdc)
    return (pdc * inverter_eff).clip(lower=0, upper=capacity_mw).rename("pv_physics_mw")


@lru_cache(maxsize=8)
def _curve(turbine: str) -> tuple[np.ndarray, np.ndarray, float]:
    from windpowerlib import WindTurbine

    t = WindTurbine(hub_height=HUB_HEIGHT_M, turbine_type=turbine)
    pc = t.power_curve
    return pc.wind_speed.to_numpy(float), pc.value.to_numpy(float) / float(t.nominal_power), float(t.nominal_power)


def wind_physics(hub_speed: pd.Series | np.ndarray, capacity_mw: float, turbine: str = "E-82/2300",
                 cut_out_ms: float = 25.0) -> np.ndarray:
    """Output (MW) from the turbine's power curve at the hub wind speed, scaled to ``capacity_mw``."""
    ws, frac, _ = _curve(turbine)
    v = np.asarray(hub_speed, dtype=float)
    out = np.interp(v, ws, frac, left=0.0, right=0.0)
    out = np.where((v >= ws.max()) & (v < cut_out_ms), 1.0, out)
    return np.clip(np.nan_to_num(out, nan=0.0), 0, 1) * capacity_mw


def hub_wind_speed(speed_10m: pd.Series | np.ndarray, hub_height_m: float = HUB_HEIGHT_M,
                   alpha: float = SHEAR_ALPHA) -> np.ndarray:
    """Wind speed (m/s) at ``hub_height_m`` from the 10 m speed by the power law ``(h / 10) ** alpha``."""
    return np.asarray(speed_10m, dtype=float) * (hub_height_m / 10.0) ** alpha
