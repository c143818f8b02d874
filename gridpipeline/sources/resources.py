"""Dagster resources for what a utility has. Every one is built from the one settings object by
:func:`gridpipeline.orchestration.resources.build_resources`; none reads the environment itself."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from dagster import ConfigurableResource
from pydantic import PrivateAttr

from gridpipeline.settings import Settings
from gridpipeline.sources.network import NetworkModel, load_network_model
from gridpipeline.sources.weather import COLUMNS, NwpFileFeed, OpenMeteoClient, WeatherUnavailable


class SettingsResource(ConfigurableResource):
    """The settings the code location was built with (paths, thresholds), frozen as JSON so a run sees
    exactly what the location was loaded with, whatever its own environment says."""

    settings_json: str

    _settings: Settings | None = PrivateAttr(default=None)

    @classmethod
    def from_settings(cls, settings: Settings) -> "SettingsResource":
        return cls(settings_json=settings.model_dump_json())

    def get(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.model_validate_json(self.settings_json)
        return self._settings


class NetworkModelResource(ConfigurableResource):
    """The network model export (pandapower JSON): what the utility's GIS knows of its grid."""

    path: str

    def load(self) -> NetworkModel:
        return load_network_model(Path(self.path))


class WeatherSource(ConfigurableResource):
    """Weather forecasts and observations from the provider: NWP runs dropped as files (default) or an
    Open-Meteo-style API. When the forecast cannot be had, the last stored one serves, flagged stale;
    without one, an empty (all-NaN) forecast, flagged stale, so the models fall back to no-weather."""

    mode: str = "file"
    weather_dir: str
    latitude: float
    longitude: float
    base_url: str = "https://api.open-meteo.com"
    timeout_s: float = 10.0
    retries: int = 3

    def _files(self) -> NwpFileFeed:
        return NwpFileFeed(Path(self.weather_dir))

    def forecast(self, issue: pd.Timestamp, horizon: pd.Timedelta,
                 last_stored: Callable[[pd.Timestamp], pd.DataFrame | None] | None = None
                 ) -> tuple[pd.DataFrame, str, bool, str]:
        """(frame over [issue, issue + horizon) at 5 minutes, source, stale, message)."""
        if self.mode == "file":
            feed = self._files()
        else:
            feed = OpenMeteoClient(self.base_url, self.latitude, self.longitude, self.timeout_s, self.retries)
        try:
            frame, info = feed.forecast(issue, horizon)
            label = feed.name if "init_time" not in info else f"{feed.name} run {pd.Timestamp(info['init_time']):%Y-%m-%d %H:%M}Z"
            return frame, label, False, ""
        except WeatherUnavailable as exc:
            prev = last_stored(issue) if last_stored else None
            if prev is not None and len(prev) and prev.notna().any().any():
                return prev, f"{feed.name} (last forecast)", True, str(exc)
            target = pd.date_range(issue, issue + horizon, freq="5min", inclusive="left")
            return pd.DataFrame(np.nan, index=target, columns=COLUMNS), f"{feed.name} (unavailable)", True, str(exc)

    def observations(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """The station feed in [start, end) at 5 minutes; NaN where nothing was observed (yet)."""
        return self._files().observations(start, end)


class PriceSource(ConfigurableResource):
    """Day-ahead energy prices from the price source's drop folder (SMARD CSV day files), as of a time:
    known where published, then filled and forecast values, each labelled (sources/prices.py)."""

    prices_dir: str

    def curve(self, start: pd.Timestamp, end: pd.Timestamp, as_of: pd.Timestamp,
              step: pd.Timedelta = pd.Timedelta(minutes=5)) -> tuple[pd.DataFrame, list[str]]:
        """(prices on [start, end) at ``step`` with their source, files that could not be read)."""
        from gridpipeline.sources.prices import SmardFolder, price_curve

        known, bad = SmardFolder(Path(self.prices_dir)).known(as_of, since=pd.Timestamp(start))
        return price_curve(known, start, end, step), bad
