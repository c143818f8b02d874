"""The code location's resources, all built from the one settings object (never re-read elsewhere)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from dagster_dbt import DbtCliResource
from dagster_duckdb import DuckDBResource

from gridpipeline.orchestration.child import die_with_parent
from gridpipeline.project import dbt_project
from gridpipeline.settings import Settings, export_env, get_settings
from gridpipeline.sources.resources import NetworkModelResource, PriceSource, SettingsResource, WeatherSource

#: the resource keys production assets may take: what a utility has, its store and its settings
RESOURCE_KEYS = ("settings", "duckdb", "dbt", "network", "weather")


def dbt_executable(settings: Settings | None = None) -> str:
    """dbt beside the running interpreter (the project's venv), so a run started outside ``uv run``
    (``.venv/bin/gridpipeline replay``) finds it without .venv/bin on PATH; else whatever PATH has.
    With ``settings``, behind a wrapper in ``<home>/bin`` that dies with the run that started it
    (``orchestration/child.py``), so a killed run leaves no dbt writing the store without the lock."""
    here = Path(sys.executable).parent / "dbt"
    real = str(here) if here.exists() else shutil.which("dbt") or "dbt"
    if settings is None or not Path(real).is_absolute():
        return real
    return str(die_with_parent(real, settings.home / "bin" / "dbt"))


def build_resources(settings: Settings | None = None) -> dict:
    settings = settings or get_settings()
    settings.ensure_dirs()  # one clear error naming the setting, at load time
    export_env(settings)  # dbt's profile reads GRIDPIPELINE_DUCKDB_PATH
    return {
        "settings": SettingsResource.from_settings(settings),
        "duckdb": DuckDBResource(database=str(settings.db_path)),
        "dbt": DbtCliResource(project_dir=dbt_project, dbt_executable=dbt_executable(settings)),
        "network": NetworkModelResource(path=str(settings.network)),
        "weather": WeatherSource(mode=settings.weather_source, weather_dir=str(settings.weather_dir),
                                 latitude=settings.site_latitude, longitude=settings.site_longitude,
                                 base_url=settings.weather_url, timeout_s=settings.weather_timeout_s,
                                 retries=settings.weather_retries),
        "prices": PriceSource(prices_dir=str(settings.prices)),
    }
