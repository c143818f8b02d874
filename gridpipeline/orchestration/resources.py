"""The code location's resources, all built from the one settings object (never re-read elsewhere)."""

from __future__ import annotations

import sys
from pathlib import Path

from dagster_dbt import DbtCliResource
from dagster_duckdb import DuckDBResource

from gridpipeline.project import dbt_project
from gridpipeline.settings import Settings, export_env, get_settings
from gridpipeline.sources.resources import NetworkModelResource, SettingsResource, WeatherSource

#: the resource keys production assets may take: what a utility has, its store and its settings
RESOURCE_KEYS = ("settings", "duckdb", "dbt", "network", "weather")


def dbt_executable() -> str:
    """dbt beside the running interpreter (the project's venv), so a run started outside ``uv run``
    (``.venv/bin/gridpipeline replay``) finds it without .venv/bin on PATH; else whatever PATH has."""
    here = Path(sys.executable).parent / "dbt"
    return str(here) if here.exists() else "dbt"


def build_resources(settings: Settings | None = None) -> dict:
    settings = settings or get_settings()
    settings.ensure_dirs()  # one clear error naming the setting, at load time
    export_env(settings)  # dbt's profile reads GRIDPIPELINE_DUCKDB_PATH
    return {
        "settings": SettingsResource.from_settings(settings),
        "duckdb": DuckDBResource(database=str(settings.db_path)),
        "dbt": DbtCliResource(project_dir=dbt_project, dbt_executable=dbt_executable()),
        "network": NetworkModelResource(path=str(settings.network)),
        "weather": WeatherSource(mode=settings.weather_source, weather_dir=str(settings.weather_dir),
                                 latitude=settings.site_latitude, longitude=settings.site_longitude,
                                 base_url=settings.weather_url, timeout_s=settings.weather_timeout_s,
                                 retries=settings.weather_retries),
    }
