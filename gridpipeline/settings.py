"""One settings object for the whole code location.

Every path and threshold a user may want to change is read from an environment variable with the
prefix ``GRIDPIPELINE_`` (for example ``GRIDPIPELINE_DUCKDB_PATH``). Defaults keep everything under
``./var`` of the checkout so a fresh clone works without configuration.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigurationError(RuntimeError):
    """A setting is missing or wrong; the message names the environment variable to fix."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRIDPIPELINE_", extra="ignore")

    home: Path = Field(default=PROJECT_ROOT / "var", description="Root for all mutable state.")
    duckdb_path: Path | None = Field(default=None, description="The analytic store (DuckDB file).")
    live_duckdb_path: Path | None = Field(default=None, description="The 30-second loop's own store (grid.* of "
                                          "the live snapshots); default <home>/live.duckdb.")
    landing_dir: Path | None = Field(default=None, description="Where historian exports land.")
    rejected_dir: Path | None = Field(default=None, description="Unreadable landing files are moved here.")
    archive_dir: Path | None = Field(default=None, description="Historian archive (landing layout) imported as history.")
    truth_path: Path | None = Field(default=None, description="Simulator ground truth (its own DuckDB).")
    weather_dir: Path | None = Field(default=None, validate_default=True,
                                     description="The weather provider's drop folder (NWP runs and station "
                                     "observations); default <home>/weather.")
    prices_dir: Path | None = Field(default=None, description="The price source's drop folder (SMARD-format day-ahead "
                                    "files, published 12:00 Europe/Berlin the day before delivery); default <home>/prices.")
    price_url: str | None = Field(default=None, description="An ENTSO-E-style day-ahead price API (documentType=A44 "
                                  "queries); when set, the dispatcher keeps the price folder filled from it every 5 "
                                  "minutes (sources/price_http.py), beside whatever else drops files there.")
    price_token: str | None = Field(default=None, description="The price API's security token (never logged).")
    price_zone: str = Field(default="10Y1001A1001A82H", description="The bidding zone's EIC code (default DE-LU).")
    data_dir: Path = Field(default=PROJECT_ROOT / "data", description="Redistributable sample world.")
    world: str = Field(default="sample", description="Which grid world to run: 'sample' or 'scale'.")
    load_policy: Path = Field(default=PROJECT_ROOT / "data" / "load_policy.yaml",
                              description="The load-priority policy (YAML): tiers, protected loads, contracts, VOLL.")
    customers_path: Path | None = Field(default=None, description="The customer registry (CSV: load_id, class, "
                                        "customers, ...); default: customers.csv beside the network model.")
    world_shift_h: int = Field(default=0, ge=-23, le=23, description="Simulator only: move the world this many hours "
                               "east (its sun and wall clock; see world/model.py). The pipeline's own site_longitude "
                               "and forecast_tz must be moved with it.")

    # Ingestion and cleaning thresholds.
    future_tolerance_s: int = Field(default=300, ge=0, description="Readings newer than now+this are rejected.")
    max_age_days: int = Field(default=400, ge=1, description="Readings older than this are rejected.")
    late_after_s: int = Field(default=60, ge=0, description="Arrival after window end + this flags OLD_DATA.")
    max_interp_gap_s: int = Field(default=120, ge=0, description="Gaps up to this long are interpolated.")
    stuck_samples: int = Field(default=6, ge=2, description="Identical consecutive samples that mean stuck.")
    coverage_warn: float = Field(default=0.95, ge=0, le=1, description="sensor_health warns below this.")
    landing_grace_s: int = Field(default=20, ge=0, description="Wait after a window closes before ingesting.")
    v_min_pu: float = Field(default=0.95, gt=0, description="Lower voltage limit (pu) for checks and bottlenecks.")
    v_max_pu: float = Field(default=1.05, gt=0, description="Upper voltage limit (pu) for checks and bottlenecks.")
    loading_limit_percent: float = Field(default=100.0, gt=0, description="Branch loading (%) counted as an overload (checks, N-1).")
    loading_warn_percent: float = Field(default=80.0, gt=0, description="Branch loading (%) listed as a bottleneck.")
    snapshot_grace_s: int = Field(default=6, ge=0, description="The live loop estimates a snapshot when every RTU has "
                                  "delivered, or this many seconds after its 30-s interval closed.")
    weather_source: str = Field(default="file", pattern="^(file|open_meteo)$",
                                description="Weather forecasts: 'file' (NWP runs dropped into GRIDPIPELINE_WEATHER_DIR "
                                "by the weather provider) or 'open_meteo' (an Open-Meteo-style HTTP API).")
    site_latitude: float = Field(default=36.1, ge=-90, le=90,
                                 description="Latitude of the grid's weather point (solar position, weather API).")
    site_longitude: float = Field(default=-79.95, ge=-180, le=180,
                                  description="Longitude of the grid's weather point.")
    network_path: Path | None = Field(default=None, description="The network model export (pandapower JSON); default: "
                                      "the sample world's data/sample_grid/network.json, or the scale world's cache.")
    weather_url: str = Field(default="https://api.open-meteo.com", description="Base URL of the Open-Meteo-style API.")
    weather_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one weather API request.")
    weather_retries: int = Field(default=3, ge=0, description="Retries of a failed weather API request.")
    forecast_tz: str = Field(default="America/New_York", description="Local time zone of the grid (calendar, DST).")
    forecast_country: str = Field(default="US", description="Public holidays (holidays package country code).")
    forecast_train_days: int = Field(default=730, ge=9, description="Days of history the weekly demand model learns from "
                                     "(a young deployment learns from what it has). Two years: 2.47 % MAPE on Victoria 2014 "
                                     "(benchmarks/forecast_accuracy.md).")
    forecast_mape_warn: float = Field(default=5.0, gt=0, description="Rolling 24 h MAPE (%) above which accuracy warns.")
    forecast_mape_fail: float = Field(default=10.0, gt=0, description="Rolling 24 h MAPE (%) above which accuracy fails.")
    forecast_degraded_mape: float = Field(default=8.0, gt=0, description="A model this bad (rolling MAPE %) hands over to the next in the chain.")
    ledger_path: Path | None = Field(default=None, description="The decision ledger (its own DuckDB file, "
                                     "append-only and hash-chained); default <home>/ledger.duckdb.")
    decision_modes: str = Field(default="", description="Mode per action kind, e.g. 'dispatch=automatic,shed=approve': "
                                "automatic (acted on), approve (waits for an operator) or advisory (recorded only). "
                                "Kinds not named use each stage's default.")
    approval_timeout_min: float = Field(default=15.0, gt=0, description="Minutes a decision waits for approval "
                                        "before it expires to its fallback.")
    import_limit_mw: float | None = Field(default=None, gt=0, description="Most the substation may import (MW) in the "
                                          "dispatch plan; default: the HV/MV transformers' rating.")
    export_limit_mw: float | None = Field(default=None, gt=0, description="Most the substation may export (MW); "
                                          "default: the HV/MV transformers' rating.")
    field_host: str = Field(default="127.0.0.1", description="Host of the field gateways (BMS and inverter Modbus TCP).")
    emergency_loading_percent: float = Field(default=120.0, gt=0, description="Emergency rating of transformers "
                                             "and feeder-head lines, % of their normal rating: the responder sheds "
                                             "blocks fed through one that stays above it for 2 s.")
    responder_recovery_s: float = Field(default=60.0, gt=0, description="Seconds the frequency must stay above "
                                        "49.8 Hz before the responder calls an under-frequency event over and restores.")
    responder_restore_interval_s: float = Field(default=30.0, gt=0, description="Seconds between the responder's "
                                                "restoration stages (each waits for 49.9 Hz and stays within the margin).")
    iec104_port: int = Field(default=2404, ge=1, le=65535, description="TCP port of the field's IEC 60870-5-104 "
                             "outstation on field_host (frequency, breaker status, loading; switch commands).")
    openadr_port: int = Field(default=18080, ge=1, le=65535, description="TCP port of the utility's OpenADR 2.0b "
                              "VTN (run by the live dispatcher on field_host); the world's VENs register there.")
    field_port: int = Field(default=15020, ge=1, le=65000, description="First Modbus TCP port of the field gateways: "
                            "battery gateway g on field_port+g, inverter gateway g on field_port+50+g (common/field_map.py).")
    n2_contingencies: str = Field(default="", description="Extra N-2 cases for n1_contingency, e.g. "
                                  "'line:3+line:7;trafo:0+line:12' (element_type:index, '+' within a case, ';' between).")

    def n2_list(self) -> list[tuple[tuple[str, int], ...]]:
        """``n2_contingencies`` parsed; a malformed entry raises ConfigurationError naming the setting."""
        out = []
        for case in filter(None, (c.strip() for c in self.n2_contingencies.split(";"))):
            try:
                out.append(tuple((p.split(":")[0].strip(), int(p.split(":")[1])) for p in case.split("+")))
            except (IndexError, ValueError) as exc:
                raise ConfigurationError(f"GRIDPIPELINE_N2_CONTINGENCIES: cannot read case {case!r} "
                                         "(expected element_type:index+element_type:index)") from exc
        return out

    def mode_for(self, kind: str, default: str) -> str:
        """The mode of action ``kind`` from ``decision_modes``; a malformed entry names the setting."""
        modes = {}
        for part in filter(None, (p.strip() for p in self.decision_modes.split(","))):
            k, _, m = part.partition("=")
            if m.strip() not in ("automatic", "approve", "advisory"):
                raise ConfigurationError(f"GRIDPIPELINE_DECISION_MODES: {part!r}: the mode must be automatic, "
                                         "approve or advisory")
            modes[k.strip()] = m.strip()
        return modes.get(kind, default)

    @field_validator("home", "data_dir", mode="after")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @field_validator("weather_dir", mode="after")
    @classmethod
    def _weather_dir(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        """Resolved here rather than in a property: the simulator and the weather source both pass it on."""
        home = info.data.get("home")
        if v is None:
            return home / "weather" if home is not None else None
        return v.expanduser().resolve()

    # Derived paths: explicit setting wins, otherwise a place under home.
    @property
    def db_path(self) -> Path:
        return (self.duckdb_path or self.home / "gridpipeline.duckdb").expanduser().resolve()

    @property
    def live_db_path(self) -> Path:
        return (self.live_duckdb_path or self.home / "live.duckdb").expanduser().resolve()

    @property
    def prices(self) -> Path:
        return (self.prices_dir or self.home / "prices").expanduser().resolve()

    @property
    def flex_offers(self) -> Path:
        """The local flexibility market's file drop: the DER owners' offers (``offers-YYYY-MM-DD.csv``)."""
        return (self.home / "flex_offers").expanduser().resolve()

    @property
    def ledger(self) -> Path:
        return (self.ledger_path or self.home / "ledger.duckdb").expanduser().resolve()

    @property
    def landing(self) -> Path:
        return (self.landing_dir or self.home / "landing").expanduser().resolve()

    @property
    def archive(self) -> Path:
        """The historian archive: past exports in the landing layout, imported as history."""
        return (self.archive_dir or self.home / "archive").expanduser().resolve()

    @property
    def rejected(self) -> Path:
        return (self.rejected_dir or self.home / "rejected").expanduser().resolve()

    @property
    def network(self) -> Path:
        """The network model the pipeline reads (a utility's GIS export; here the world's published file)."""
        if self.network_path is not None:
            return self.network_path.expanduser().resolve()
        if self.world == "sample":
            return self.data_dir / "sample_grid" / "network.json"
        return self.home / "worlds" / self.world / "network.json"

    @property
    def customers(self) -> Path:
        """The customer registry (the utility's CIS export): ``customers.csv`` beside the network model,
        unless GRIDPIPELINE_CUSTOMERS_PATH names another."""
        if self.customers_path is not None:
            return self.customers_path.expanduser().resolve()
        return self.network.parent / "customers.csv"

    @property
    def truth(self) -> Path:
        return (self.truth_path or self.home / "simulator_truth.duckdb").expanduser().resolve()

    def ensure_dirs(self) -> None:
        """Create the writable folders, or raise one error naming the setting that points somewhere bad."""
        for name, path in (
            ("GRIDPIPELINE_HOME", self.home),
            ("GRIDPIPELINE_LANDING_DIR", self.landing),
            ("GRIDPIPELINE_REJECTED_DIR", self.rejected),
            ("GRIDPIPELINE_ARCHIVE_DIR", self.archive),
            ("GRIDPIPELINE_WEATHER_DIR", self.weather_dir),
            ("GRIDPIPELINE_PRICES_DIR", self.prices),
            ("GRIDPIPELINE_DUCKDB_PATH", self.db_path.parent),
        ):
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigurationError(f"{name}={path} is not a usable folder: {exc}") from exc
        if not self.data_dir.is_dir():
            raise ConfigurationError(
                f"GRIDPIPELINE_DATA_DIR={self.data_dir} does not exist; point it at the project's data/ folder"
            )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        bad = ", ".join(f"GRIDPIPELINE_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        raise ConfigurationError(f"invalid setting(s): {bad}") from None


def reset_settings() -> None:
    """Forget cached settings (tests change the environment)."""
    get_settings.cache_clear()


def export_env(settings: Settings) -> None:
    """Expose resolved paths to child processes (dbt reads GRIDPIPELINE_DUCKDB_PATH)."""
    os.environ["GRIDPIPELINE_DUCKDB_PATH"] = str(settings.db_path)
