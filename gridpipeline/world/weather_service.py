"""The world's weather provider: NWP forecast runs with realistic errors, and station observations.

A utility does not know tomorrow's weather; it buys forecasts. The world therefore publishes its
weather the way a provider does, into the drop folder of :mod:`gridpipeline.common.weather_files`:

* **observations**: the world's true weather (:meth:`World.weather_at`, TMY3 Greensboro) at 5-minute
  steps, published only up to the world's "now";
* **forecast runs** every 6 h, available 3 h after initialisation, hourly to 48 h ahead: the truth at
  each valid time plus an error that grows with the lead time.

Error model
    Every variable's error is ``sigma(lead) * e(lead)``: ``sigma`` grows linearly between its values
    at 0, 24 and 48 h (:data:`ERRORS`), and ``e`` is a unit-variance AR(1) process along the lead
    hours with correlation time ``tau_h`` (a forecast that is too warm at 14:00 is too warm at 15:00
    too). The shocks are drawn from a generator keyed by (seed, initialisation time), so a run is the
    same whenever and in whatever chunks it is published; runs are independent of each other.

    * ``temp_air``: additive.
    * ``temp_dew``: the dew-point *depression* ``T - Td`` gets an additive error and is kept >= 0, so
      the forecast dew point never exceeds the forecast temperature; ``relative_humidity`` is then
      computed from the forecast ``T`` and ``Td`` (Magnus formula), consistent with both.
    * ``ghi``: the error is multiplicative in the clear-sky irradiance (Haurwitz model): the forecast
      clear-sky index is off by ``sigma * e``, i.e. ``ghi + ghi_clear * sigma * e``, clipped to
      ``[0, max(1.1 * ghi_clear, ghi)]``. It is therefore 0 at night and bounded by a clear sky, and
      largest around noon. ``dni`` and ``dhi`` are decomposed from the forecast GHI (Erbs), as NWP
      irradiance products commonly are.
    * ``cloud_cover_total``/``cloud_cover_opaque``: additive in percentage points with the *same*
      latent error as the clear-sky index and opposite sign (a sunnier forecast has fewer clouds),
      clipped to [0, 100] with opaque <= total.
    * ``wind_speed``: additive, clipped at 0 (so its realised RMSE is a little below ``sigma`` on calm
      nights).
    * ``pressure``: additive.

Calibration (RMSE of hourly point forecasts against a station; "day 1" = leads 1-24 h, "day 2" =
leads 25-48 h; :data:`CALIBRATION` holds the targets the tests check):

* 2 m temperature: about 1 °C on day 1, 1.6 °C on day 2. Raw global-model 2 m temperature at a
  station has day-1 RMSE of 1.5-2 K, which statistical post-processing (MOS, as commercial
  providers apply) lowers by 10-15 % and more (Ben Bouallègue et al. 2023, "Statistical modeling of
  2-m temperature and 10-m wind speed forecast errors", Mon. Wea. Rev. 151(4)); point forecasts of a
  good provider sit near 1 °C on day 1, growing by roughly 0.5 °C a day.
* 10 m wind speed: about 1.5 m/s on day 1, 1.8 m/s on day 2. Even the ECMWF *analysis* (lead 0) of
  10 m wind has a median RMSE of 1.42 m/s against 171 French stations ("Using machine learning
  methods to improve surface wind speed from the outputs of a numerical weather prediction model",
  Boundary-Layer Meteorology), so sigma starts at 1.4 m/s.
* GHI, hourly: relative RMSE (RMSE / mean observed GHI over daylight hours) about 33 % on day 1 and
  37 % on day 2. Perez et al. (2013), "Comparison of numerical weather prediction solar irradiance
  forecasts in the US, Canada and Europe", Solar Energy 94, 305-326, found day-ahead hourly GHI
  RMSE of roughly 25-40 % of the mean across the US sites (lower in the arid west, higher in humid
  and cloudy climates such as the south-east), degrading only slowly from day 1 to day 2; the best
  models had about 50 % skill over persistence.
* Dew-point depression, pressure and cloud cover follow typical station verification magnitudes
  (sigma of the depression 0.8 -> 2 °C, pressure 0.5 -> 1.6 hPa, total cloud 20 -> 38 % points over
  0 -> 48 h; cloud cover is mostly 0 or 100 % in TMY3, so clipping leaves realised RMSEs of about
  20 and 26 % points on days 1 and 2).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from gridpipeline.common.weather_files import (
    OBSERVATION_STEP,
    RUN_LENGTH,
    VARIABLES,
    forecast_path,
    run_inits,
    run_valid_times,
    utc_timestamp,
    write_forecast_run,
    write_observations,
)

#: Upper bound of forecast GHI as a multiple of the Haurwitz clear-sky GHI (cloud enhancement).
CLEAR_SKY_BOUND = 1.1
#: Magnus formula constants (Alduchov & Eskridge 1996, over water).
MAGNUS_A, MAGNUS_B = 17.62, 243.12
#: Decimals kept in published values (the TMY3 source has 0.1 units; files are float32).
DECIMALS = 2


@dataclass(frozen=True)
class ErrorGrowth:
    """RMS error of one variable at leads 0, 24 and 48 h (linear in between) and the correlation
    time (hours) of its AR(1) error along the lead."""

    at_0h: float
    at_24h: float
    at_48h: float
    tau_h: float

    def sigma(self, lead_h: np.ndarray) -> np.ndarray:
        return np.interp(lead_h, [0.0, 24.0, 48.0], [self.at_0h, self.at_24h, self.at_48h])

    @property
    def phi(self) -> float:
        """AR(1) coefficient per hour of lead."""
        return float(np.exp(-1.0 / self.tau_h))


#: Error growth per latent error (see the module docstring). Units: °C, °C, m/s, hPa, clear-sky
#: index (fraction), cloud cover (% points). ``sky`` drives both GHI and cloud cover.
ERRORS: dict[str, ErrorGrowth] = {
    "temp_air": ErrorGrowth(0.5, 1.3, 1.9, tau_h=12.0),
    "dew_depression": ErrorGrowth(0.8, 1.5, 2.0, tau_h=12.0),
    "wind_speed": ErrorGrowth(1.4, 1.8, 2.1, tau_h=6.0),
    "pressure": ErrorGrowth(0.5, 1.0, 1.6, tau_h=24.0),
    "sky": ErrorGrowth(0.20, 0.245, 0.28, tau_h=4.0),
}
#: Cloud cover error (% points) per unit of the ``sky`` latent error.
CLOUD_ERRORS = ErrorGrowth(20.0, 32.0, 38.0, tau_h=ERRORS["sky"].tau_h)

#: Realised RMSE targets by lead bucket (day 1 = leads 1-24 h, day 2 = 25-48 h): °C, m/s, and for
#: GHI the RMSE relative to the mean daylight GHI. The tests check the published runs against them.
CALIBRATION: dict[str, tuple[float, float]] = {
    "temp_air": (0.95, 1.6),
    "wind_speed": (1.5, 1.8),
    "ghi_relative": (0.33, 0.37),
}


# ------------------------------------------------------------------------------------------------ errors
def _generator(seed: int, init: pd.Timestamp) -> np.random.Generator:
    key = hashlib.blake2b(f"nwp|{int(seed)}|{init:%Y-%m-%dT%H:%M}Z".encode(), digest_size=16).digest()
    return np.random.default_rng(int.from_bytes(key, "little"))


def latent_errors(seed: int, init: datetime | pd.Timestamp, n_leads: int) -> dict[str, np.ndarray]:
    """Unit-variance AR(1) errors along ``n_leads`` hourly leads for every entry of :data:`ERRORS`,
    drawn in a fixed order from a generator keyed by (seed, init): the same run always gets the same
    errors, whichever variables the weather has."""
    rng = _generator(seed, utc_timestamp(init))
    out = {}
    for name, spec in ERRORS.items():
        z = rng.standard_normal(n_leads)
        e = np.empty(n_leads)
        e[0] = z[0]
        innovation = np.sqrt(1.0 - spec.phi**2)
        for k in range(1, n_leads):
            e[k] = spec.phi * e[k - 1] + innovation * z[k]
        out[name] = e
    return out


def magnus_rh(t_c: np.ndarray, td_c: np.ndarray) -> np.ndarray:
    """Relative humidity (%) from temperature and dew point (°C)."""
    return 100.0 * np.exp(MAGNUS_A * td_c / (MAGNUS_B + td_c) - MAGNUS_A * t_c / (MAGNUS_B + t_c))


def _solar(times: pd.DatetimeIndex, latitude: float, longitude: float) -> tuple[np.ndarray, np.ndarray]:
    """(zenith, Haurwitz clear-sky GHI) at ``times``."""
    import pvlib

    sp = pvlib.solarposition.get_solarposition(times, latitude, longitude)
    cs = pvlib.clearsky.haurwitz(sp["apparent_zenith"])["ghi"].to_numpy(dtype=float)
    return sp["zenith"].to_numpy(dtype=float), np.nan_to_num(cs, nan=0.0)


def nwp_forecast(truth: pd.DataFrame, init: datetime | pd.Timestamp, seed: int, latitude: float,
                 longitude: float) -> pd.DataFrame:
    """The run initialised at ``init``: ``truth`` (the world's weather at the run's hourly valid times,
    pvlib TMY3 columns) with the errors of the module docstring, rounded to :data:`DECIMALS`."""
    import pvlib

    init = utc_timestamp(init)
    times = pd.DatetimeIndex(truth.index)
    lead = ((times - init) / pd.Timedelta(hours=1)).to_numpy(dtype=float)
    e = latent_errors(seed, init, len(times))
    sig = {name: spec.sigma(lead) for name, spec in ERRORS.items()}
    out = pd.DataFrame(index=truth.index)
    col = {c: truth[c].to_numpy(dtype=float) for c in truth.columns}

    if "temp_air" in col:
        t_f = col["temp_air"] + sig["temp_air"] * e["temp_air"]
        out["temp_air"] = t_f
        if "temp_dew" in col:
            depression = np.maximum(col["temp_air"] - col["temp_dew"], 0.0)
            depression_f = np.maximum(depression + sig["dew_depression"] * e["dew_depression"], 0.0)
            out["temp_dew"] = t_f - depression_f
            if "relative_humidity" in col:
                out["relative_humidity"] = np.clip(magnus_rh(t_f, t_f - depression_f), 0.0, 100.0)
    if "ghi" in col:
        zenith, clear = _solar(times, latitude, longitude)
        ghi = col["ghi"]
        ghi_f = np.clip(ghi + clear * sig["sky"] * e["sky"], 0.0, np.maximum(CLEAR_SKY_BOUND * clear, ghi))
        out["ghi"] = ghi_f
        if "dni" in col or "dhi" in col:
            parts = pvlib.irradiance.erbs(pd.Series(ghi_f, index=times), pd.Series(zenith, index=times), times)
            if "dni" in col:
                out["dni"] = np.clip(parts["dni"].to_numpy(dtype=float), 0.0, None)
            if "dhi" in col:
                out["dhi"] = np.clip(parts["dhi"].to_numpy(dtype=float), 0.0, None)
    cloud = CLOUD_ERRORS.sigma(lead) * e["sky"]
    if "cloud_cover_total" in col:
        total_f = np.clip(col["cloud_cover_total"] - cloud, 0.0, 100.0)
        out["cloud_cover_total"] = total_f
        if "cloud_cover_opaque" in col:
            out["cloud_cover_opaque"] = np.clip(col["cloud_cover_opaque"] - cloud, 0.0, total_f)
    if "wind_speed" in col:
        out["wind_speed"] = np.maximum(col["wind_speed"] + sig["wind_speed"] * e["wind_speed"], 0.0)
    if "pressure" in col:
        out["pressure"] = col["pressure"] + sig["pressure"] * e["pressure"]
    for c in truth.columns:  # a column this model has no error for is published as it is
        if c not in out:
            out[c] = col[c]
    return out[[c for c in VARIABLES if c in out.columns]].round(DECIMALS)


# ------------------------------------------------------------------------------------------------ service
class WeatherService:
    """Publishes the world's weather into ``weather_dir`` like a provider (see the module docstring).

    Publication is idempotent: a run already in the folder is never rewritten (whoever wrote it, the
    content is the same for the same seed), and observations are merged into their day files. The
    service remembers what it published so a live loop does not recompute it.
    """

    def __init__(self, world, weather_dir: Path, seed: int = 0):
        loc = world.meta.get("location") or {}
        if "latitude" not in loc or "longitude" not in loc:
            raise ValueError(f"world {world.name!r} has no location: a weather service needs latitude and longitude")
        self.world = world
        self.weather_dir = Path(weather_dir)
        self.seed = int(seed)
        self.latitude = float(loc["latitude"])
        self.longitude = float(loc["longitude"])
        self.columns = [c for c in VARIABLES if c in world.weather_at(pd.DatetimeIndex([], tz="UTC")).columns]
        self._runs_done: set[pd.Timestamp] = set()
        self._obs_done: tuple[pd.Timestamp, pd.Timestamp] | None = None

    def truth(self, times) -> pd.DataFrame:
        """The world's weather at ``times`` in the published columns."""
        return self.world.weather_at(times)[self.columns]

    def forecast_run(self, init: datetime | pd.Timestamp) -> pd.DataFrame:
        """The run initialised at ``init`` (hourly valid times to 48 h), without writing it."""
        init = utc_timestamp(init)
        truth = self.truth(run_valid_times(init))
        return nwp_forecast(truth, init, self.seed, self.latitude, self.longitude)

    def publish_forecasts(self, until: datetime | pd.Timestamp,
                          since: datetime | pd.Timestamp | None = None) -> list[Path]:
        """Write every missing run initialised at or after ``since`` that is available at ``until``.
        ``since`` defaults to ``until - 48 h``: older runs cover nothing from ``until`` on."""
        until = utc_timestamp(until)
        since = utc_timestamp(since) if since is not None else until - RUN_LENGTH
        written = []
        for init in run_inits(since, until):
            if init in self._runs_done:
                continue
            if not forecast_path(self.weather_dir, init).exists():
                written.append(write_forecast_run(self.weather_dir, init, self.forecast_run(init)))
            self._runs_done.add(init)
        return written

    def publish_observations(self, start: datetime | pd.Timestamp, until: datetime | pd.Timestamp) -> list[Path]:
        """Publish the observations at the 5-minute instants in ``[start, until)``; ``until`` is the
        world's now (or the end of a simulated period), so no file ever holds a later time."""
        start = utc_timestamp(start)
        until = utc_timestamp(until)
        written: list[Path] = []
        for a, b in self._unpublished(start, until):
            times = pd.date_range(a.ceil(OBSERVATION_STEP), b, freq=OBSERVATION_STEP, inclusive="left")
            if len(times):
                written += write_observations(self.weather_dir, self.truth(times).round(DECIMALS))
        return sorted(set(written))

    def _unpublished(self, start: pd.Timestamp, until: pd.Timestamp) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
        """The parts of ``[start, until)`` outside the span this service already published, and that
        span extended by them when they touch it (a live loop publishes one contiguous span)."""
        if until <= start:
            return []
        done = self._obs_done
        if done is None or until < done[0] or start > done[1]:
            self._obs_done = (start, until)
            return [(start, until)]
        parts = [(start, done[0])] if start < done[0] else []
        if until > done[1]:
            parts.append((done[1], until))
        self._obs_done = (min(start, done[0]), max(until, done[1]))
        return parts
