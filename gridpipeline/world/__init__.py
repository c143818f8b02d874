"""The grid world: network, profiles and weather (``model``), its builder (``build``) and the
power-grid-model truth engine (``powerflow``). See ``data/README.md`` for the data's origin."""

from gridpipeline.world.model import Injections, World, compute_zones, load_world
from gridpipeline.world.powerflow import States, TruthEngine

__all__ = ["Injections", "States", "TruthEngine", "World", "compute_zones", "load_world"]
