"""The ``gridpipeline`` command: everything a user does outside the Dagster UI.

    gridpipeline dev                       Dagster UI + daemon on 127.0.0.1 with the live simulator
    gridpipeline data build                rebuild the sample world under data/ from SimBench + pvlib
    gridpipeline simulate --start --end    write landing files for a period (standalone, fast)
    gridpipeline replay --start --end      ingest and clean a period as one run (a single-run backfill)
    gridpipeline bench NAME                run a benchmark, print one JSON line
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import typer

from gridpipeline.settings import PROJECT_ROOT, ConfigurationError, Settings, get_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
data_app = typer.Typer(no_args_is_help=True, help="The sample grid world under data/.")
app.add_typer(data_app, name="data")


def _add_domain_apps() -> None:
    """Domain command groups (grid, forecast) live with their domain."""
    from gridpipeline.forecast.cli import forecast_app
    from gridpipeline.grid.cli import grid_app

    app.add_typer(grid_app, name="grid", help="Power flow, state estimation and N-1 on your own network files.")
    app.add_typer(forecast_app, name="forecast", help="Forecast backtests on your own history.")


_add_domain_apps()


def _settings() -> Settings:
    try:
        s = get_settings()
        s.ensure_dirs()
        return s
    except ConfigurationError as exc:
        typer.secho(f"configuration error: {exc}", fg="red", err=True)
        raise typer.Exit(2)


def _parse_time(value: str, name: str) -> datetime:
    """ISO time (UTC if no offset), or 'now', or 'now-2h' / 'now-30m' / 'now-1d'."""
    now = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    v = value.strip().lower()
    try:
        if v.startswith("now"):
            rest = v[3:]
            if not rest:
                return now
            unit = {"m": "minutes", "h": "hours", "d": "days", "s": "seconds"}[rest[-1]]
            return now + timedelta(**{unit: float(rest[:-1])})
        t = datetime.fromisoformat(value)
        return t.astimezone(timezone.utc).replace(tzinfo=None) if t.tzinfo else t
    except (ValueError, KeyError):
        typer.secho(f"--{name}: cannot read '{value}' as a time (ISO 8601, 'now' or 'now-2h')", fg="red", err=True)
        raise typer.Exit(2)


def ensure_dagster_home(settings: Settings) -> Path:
    """DAGSTER_HOME (default var/dagster_home) with the shipped dagster.yaml in it."""
    home = Path(os.environ.get("DAGSTER_HOME") or settings.home / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    # Create the instance's storage under a lock: two commands starting on a fresh home at once
    # would otherwise race to create the same SQLite tables.
    import fcntl

    with open(home / ".init.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
        from dagster import DagsterInstance

        DagsterInstance.get().dispose()
    return home


def _load_sim(settings: Settings, world_name: str, sensors: int | None, faults: str, seed: int,
              export_interval: int, truth: bool):
    from gridpipeline.telemetry.registry import PlacementPolicy, build_registry
    from gridpipeline.telemetry.simulator import ScadaSimulator, faults_from_string
    from gridpipeline.world.model import load_world

    world = load_world(world_name, data_dir=settings.data_dir, cache_dir=settings.home / "worlds" / world_name)
    policy = PlacementPolicy.full() if world_name == "scale" else PlacementPolicy()
    reg = build_registry(world.net, world.zones, policy)
    if sensors:
        reg = reg[reg.sensor_id <= sensors]
    sim = ScadaSimulator(world, reg, settings.landing, faults=faults_from_string(faults), seed=seed,
                         export_interval_s=export_interval, truth_path=settings.truth if truth else None)
    return sim


@app.command()
def simulate(
    start: str = typer.Option("now-1h", help="First instant (UTC ISO 8601, or now-2h)."),
    end: str = typer.Option("now", help="End (exclusive)."),
    world: str = typer.Option(None, help="sample (default, GRIDPIPELINE_WORLD) or scale (100k+ sensors)."),
    sensors: Optional[int] = typer.Option(None, help="Simulate only the first N sensors of the registry."),
    faults: str = typer.Option("default", help="'none', 'default' or 'gap_rate=0.01,late_rate=0.05,...'."),
    seed: int = typer.Option(0),
    export_interval: int = typer.Option(30, help="Seconds per exported file per source."),
    live: bool = typer.Option(False, help="Run on a clock: catch up from --start at --speed, then real time."),
    speed: float = typer.Option(60.0, help="With --live: how much faster than real time while catching up."),
    truth: bool = typer.Option(True, help="Keep ground truth and the fault log in GRIDPIPELINE_TRUTH_PATH."),
):
    """Write SCADA historian exports into the landing zone (GRIDPIPELINE_LANDING_DIR)."""
    s = _settings()
    t0, t1 = _parse_time(start, "start"), _parse_time(end, "end")
    sim = _load_sim(s, world or s.world, sensors, faults, seed, export_interval, truth)
    typer.echo(f"simulating {len(sim.reg):,} sensors in {len(sim.sources)} sources into {s.landing}")
    try:
        if live:
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            try:
                sim.run_live(t0, speed=speed, stop=stop,
                             on_window=lambda w: typer.echo(f"window {w:%Y-%m-%d %H:%M} simulated", err=True))
            except KeyboardInterrupt:
                pass
        else:
            sim.run(t0, t1)
    finally:
        sim.close()
    st = sim.stats
    typer.echo(json.dumps({"windows": st.windows, "files": st.files, "readings": st.readings,
                           "seconds": round(st.seconds, 2), "faults": st.faults}))


@app.command()
def replay(
    start: str = typer.Option(..., help="First window (UTC ISO 8601)."),
    end: str = typer.Option(..., help="End (exclusive)."),
    simulate_missing: bool = typer.Option(True, "--simulate/--no-simulate",
                                          help="Simulate windows that have no landing files first."),
    faults: str = typer.Option("default"),
    seed: int = typer.Option(0),
    grid: bool = typer.Option(True, "--grid/--no-grid",
                              help="Also estimate the grid state of every 30-second snapshot (and N-1 per window)."),
):
    """Ingest and clean [start, end) as one Dagster run (single-run backfill), then the grid state of every
    snapshot as a second one; both recorded in DAGSTER_HOME."""
    s = _settings()
    ensure_dagster_home(s)
    from gridpipeline.orchestration.replay import replay_range

    t0, t1 = _parse_time(start, "start"), _parse_time(end, "end")
    if simulate_missing:
        from gridpipeline.telemetry import landing as lz

        empty = [w for w in lz.windows(t0, t1) if lz.fingerprint(s.landing, w) is None]
        if empty:
            typer.echo(f"simulating {len(empty)} window(s) without landing files")
            sim = _load_sim(s, s.world, None, faults, seed, 30, True)
            try:
                for w in empty:
                    for pf in sim.simulate_window(w):
                        sim.write(pf)
            finally:
                sim.close()
    summary = replay_range(t0, t1, grid=grid)
    typer.echo(json.dumps(summary, default=str))
    if not summary["success"]:
        raise typer.Exit(1)


@app.command()
def dev(
    port: int = typer.Option(3000),
    catch_up: str = typer.Option("2h", help="Simulated history before now, fed at --speed on start."),
    speed: float = typer.Option(120.0),
    faults: str = typer.Option("default"),
    simulator: bool = typer.Option(True, help="Run the live SCADA simulator next to Dagster."),
):
    """Start the Dagster UI and daemon on 127.0.0.1 with the simulator feeding the landing zone."""
    s = _settings()
    home = ensure_dagster_home(s)
    env = {**os.environ, "DAGSTER_HOME": str(home), "GRIDPIPELINE_DUCKDB_PATH": str(s.db_path)}
    procs = []
    bin_dir = Path(sys.executable).parent
    if simulator:
        procs.append(subprocess.Popen(
            [str(bin_dir / "gridpipeline"), "simulate", "--live", "--start", f"now-{catch_up}",
             "--speed", str(speed), "--faults", faults], env=env, cwd=PROJECT_ROOT))
    procs.append(subprocess.Popen(
        [str(bin_dir / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(port), "-w", str(PROJECT_ROOT / "workspace.yaml")],
        env=env, cwd=PROJECT_ROOT))
    typer.echo(f"Dagster UI: http://127.0.0.1:{port}  (DAGSTER_HOME={home}, store={s.db_path}, landing={s.landing})")
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT if p is procs[-1] else signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


@data_app.command("build")
def data_build(out: Path = typer.Option(PROJECT_ROOT / "data" / "sample_grid", help="Output folder.")):
    """Rebuild the committed sample world (SimBench grid + profiles, pvlib TMY3 weather)."""
    from gridpipeline.world.build import build_sample_world

    summary = build_sample_world(out)
    typer.echo(json.dumps(summary, default=str))


@app.command()
def bench(
    name: str = typer.Argument(..., help="Benchmark: ingest, estimate, contingency, forecast."),
    sensors: int = typer.Option(100_000, help="ingest: sensors."),
    minutes: int = typer.Option(10, help="ingest: minutes of readings."),
    keep: bool = typer.Option(False, help="Keep the benchmark's working folder."),
    reference_scale: bool = typer.Option(False, help="estimate/contingency: also run pandapower on the scale grid "
                                                     "(estimate: about 20 GiB of memory)."),
):
    """Run a benchmark and print one JSON line of figures."""
    from benchmarks import REGISTRY

    if name not in REGISTRY:
        typer.secho(f"unknown benchmark '{name}'; known: {', '.join(sorted(REGISTRY))}", fg="red", err=True)
        raise typer.Exit(2)
    result = REGISTRY[name](sensors=sensors, minutes=minutes, keep=keep, reference_scale=reference_scale)
    typer.echo(json.dumps(result))


if __name__ == "__main__":
    app()
