"""The simulated world standing in for a utility's field: network, profiles and weather (``model``),
its builder (``build``), the power-grid-model truth engine (``powerflow``), the SCADA simulator that
exports measurements into the landing zone (``scada``) and the weather provider that publishes
forecast runs and station observations (``weather_service``). See ``data/README.md`` for the data's
origin. The pipeline never imports this package; it sees only the files the world writes."""

from gridpipeline.common.zones import compute_zones
from gridpipeline.world.model import Injections, World, load_world
from gridpipeline.world.powerflow import States, TruthEngine

__all__ = ["Injections", "States", "TruthEngine", "World", "compute_zones", "load_world"]
