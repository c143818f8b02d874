"""Grid calculations on pandapower nets, without Dagster.

* ``network``: load/save (pandapower JSON, MATPOWER .m/.mat, SimBench codes), the pandapower ->
  power-grid-model conversion with id maps (``to_pgm``), tables for storage (``network_tables``);
* ``topology``: bus-branch graph, islands, feeders, critical elements, switch-change events;
* ``estimation``: WLS state estimation with PGM, pseudo-measurements, fallbacks;
* ``bad_data``: chi-squared test, largest normalised residual identification and removal;
* ``powerflow``: PGM/pandapower power flow and bottlenecks with contributing injections;
* ``contingency``: N-1/N-2 as one PGM batch, tie-switch restoration, relief injections;
* ``cli``: the ``grid_app`` typer commands.

Submodules are imported lazily so that ``import gridpipeline.grid`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_network": "network", "save_network": "network", "to_pgm": "network", "PgmModel": "network",
    "NetworkFormatError": "network", "has_voltage_controlled": "network", "network_tables": "network",
    "parse_matpower": "network", "sanitize_net": "network",
    "bus_branch_graph": "topology", "islands": "topology", "feeders": "topology",
    "critical_elements": "topology", "diff_topology": "topology", "TopologyEvent": "topology",
    "normalize_switch_states": "topology",
    "estimate_state": "estimation", "EstimationResult": "estimation",
    "detect_bad_data": "bad_data", "chi2_test": "bad_data", "BadDataResult": "bad_data",
    "run_powerflow": "powerflow", "PowerFlowResult": "powerflow", "bottlenecks": "powerflow",
    "run_n1": "contingency", "relief_injections": "contingency",
}

__all__ = [
    "BadDataResult", "EstimationResult", "NetworkFormatError", "PgmModel", "PowerFlowResult", "TopologyEvent",
    "bottlenecks", "bus_branch_graph", "chi2_test", "critical_elements", "detect_bad_data", "diff_topology",
    "estimate_state", "feeders", "has_voltage_controlled", "islands", "load_network", "network_tables",
    "normalize_switch_states", "parse_matpower", "relief_injections", "run_n1", "run_powerflow", "sanitize_net",
    "save_network", "to_pgm",
]


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(name)
    return getattr(importlib.import_module(f"gridpipeline.grid.{mod}"), name)
