"""Resources shared by all domains, built from the one settings object."""

from __future__ import annotations

from dagster import ConfigurableResource
from dagster_dbt import DbtCliResource
from dagster_duckdb import DuckDBResource

from gridpipeline.project import dbt_project
from gridpipeline.settings import Settings, export_env, get_settings


class GridWorldResource(ConfigurableResource):
    """Which grid world the location runs on and where its mutable state lives."""

    world: str = "sample"

    def settings(self) -> Settings:
        s = get_settings()
        s.ensure_dirs()
        return s

    def load(self):
        from gridpipeline.world.model import load_world

        s = self.settings()
        return load_world(self.world, data_dir=s.data_dir, cache_dir=s.home / "worlds" / self.world)


def build_resources(settings: Settings | None = None) -> dict:
    settings = settings or get_settings()
    settings.ensure_dirs()  # one clear error naming the setting, at load time
    export_env(settings)  # dbt's profile reads GRIDPIPELINE_DUCKDB_PATH
    from gridpipeline.forecast.assets import WeatherSource

    return {
        "weather": WeatherSource(mode=settings.weather_source, base_url=settings.weather_url,
                                 timeout_s=settings.weather_timeout_s, retries=settings.weather_retries),
        "duckdb": DuckDBResource(database=str(settings.db_path)),
        "dbt": DbtCliResource(project_dir=dbt_project),
        "world": GridWorldResource(world=settings.world),
    }
