"""The wall between the simulated world and the operator's pipeline, and imports that flow one way.

The pipeline may see only what a utility has (network model, registry, telemetry, weather and price
sources, device protocols, its own history). These tests read the source: they fail when a production
module reaches the world's truth, when the world reaches into the pipeline, when a production asset
takes a resource outside the utility's interfaces, or when two packages import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent / "gridpipeline"
WORLD = "gridpipeline.world"
#: the world side may use these and nothing else of the project
WORLD_MAY_IMPORT = ("gridpipeline.world", "gridpipeline.common", "gridpipeline.settings")
#: launchers that start both sides (the simulator next to Dagster); they hold no pipeline logic
LAUNCHERS = {"gridpipeline.cli"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str) -> set[str]:
    """Every gridpipeline module ``path`` imports, at top level or inside functions."""
    tree = ast.parse(path.read_text(), filename=str(path))
    pkg = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("gridpipeline")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
            if not base.startswith("gridpipeline"):
                continue
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}  # `from pkg import module`
    return out


@pytest.fixture(scope="module")
def graph() -> nx.DiGraph:
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    g = nx.DiGraph()
    g.add_nodes_from(files)
    for mod, path in files.items():
        for target in _imports(path, mod):
            if target in files:
                g.add_edge(mod, target)
    return g


def _production(g: nx.DiGraph) -> list[str]:
    return [m for m in g if not m.startswith(WORLD) and m not in LAUNCHERS]


def test_no_production_module_reaches_the_world(graph):
    leaks = {}
    for mod in _production(graph):
        reached = [t for t in nx.descendants(graph, mod) if t.startswith(WORLD)]
        if reached:
            path = nx.shortest_path(graph, mod, reached[0])
            leaks[mod] = " -> ".join(path)
    assert not leaks, f"production modules that reach the simulated world: {leaks}"


def test_the_world_does_not_import_the_pipeline(graph):
    bad = {(m, t) for m, t in graph.edges if m.startswith(WORLD) and not t.startswith(WORLD_MAY_IMPORT)}
    assert not bad, f"the world imports pipeline modules: {sorted(bad)}"


def test_common_modules_are_neutral(graph):
    bad = {(m, t) for m, t in graph.edges if m.startswith("gridpipeline.common") and not t.startswith("gridpipeline.common")}
    assert not bad, f"gridpipeline.common must import nothing else of the project: {sorted(bad)}"


def test_the_graph_sees_imports_inside_functions(graph):
    """The checks above are only as good as the graph: a lazy import of the world is an edge too."""
    assert graph.has_edge("gridpipeline.cli", "gridpipeline.world.model") or any(
        t.startswith(WORLD) for t in graph.successors("gridpipeline.cli"))


def _package(mod: str) -> str:
    parts = mod.split(".")
    return ".".join(parts[:2])


def test_packages_import_each_other_one_way(graph):
    """No two packages (gridpipeline.grid, .forecast, ...) import each other, directly or in a ring."""
    pk = nx.DiGraph()
    for m, t in graph.edges:
        a, b = _package(m), _package(t)
        if a != b and m not in LAUNCHERS:
            pk.add_edge(a, b)
    cycles = list(nx.simple_cycles(pk))
    assert not cycles, f"package import cycles: {cycles}"


def test_modules_do_not_import_each_other(graph):
    cycles = [c for c in nx.simple_cycles(graph) if len(c) > 1]
    assert not cycles, f"module import cycles: {cycles[:5]}"


def test_production_assets_take_only_utility_resources():
    """Every asset and check takes only the store, dbt, the settings and the utility's interfaces, and
    no resource of the location is a world object."""
    from gridpipeline.definitions import defs
    from gridpipeline.orchestration.resources import RESOURCE_KEYS

    repo = defs.get_repository_def()
    taken = {}
    for key, node in repo.assets_defs_by_key.items():
        taken[key.to_user_string()] = set(node.required_resource_keys)
    for check in repo.asset_checks_defs_by_key.values():
        taken[str(check.check_key)] = set(check.required_resource_keys)
    # io_manager is Dagster's own default (the store of in-process outputs), not an interface
    allowed = set(RESOURCE_KEYS) | {"io_manager"}
    outside = {name: sorted(keys - allowed) for name, keys in taken.items() if keys - allowed}
    assert not outside, f"assets taking resources outside the utility's interfaces: {outside}"
    assert taken["grid_state"] and taken["demand_forecast"]  # the loop really was inspected
    for name, res in repo.get_top_level_resources().items():
        assert not type(res).__module__.startswith(WORLD), f"resource {name} is a world object"


def test_private_helpers_stay_in_their_module(graph):
    """A ``_name`` imported from another module is a shared API wearing a private name."""
    found = []
    for mod in graph:
        path = ROOT.parent / (mod.replace(".", "/") + ".py")
        if not path.exists():
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gridpipeline"):
                found += [f"{mod}: {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert not found, f"private helpers used across modules: {found}"
