"""The ``gridpipeline`` command: everything a user does outside the Dagster UI.

    gridpipeline dev                       Dagster UI + daemon on 127.0.0.1 with the live simulator
    gridpipeline data build                rebuild the sample world under data/ from SimBench + pvlib
    gridpipeline simulate --start --end    write landing files for a period (standalone, fast)
    gridpipeline replay --start --end      ingest and clean a period as one run (a single-run backfill)
    gridpipeline bench NAME                run a benchmark, print one JSON line
    gridpipeline dispatch serve|plan       the live dispatcher; one plan from files
    gridpipeline audit verify              check the decision ledger's hash chain
    gridpipeline decisions list|approve|reject
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
    from gridpipeline.ledger.cli import audit_app, decisions_app
    from gridpipeline.load.cli import load_app
    from gridpipeline.storage.cli import dispatch_app

    @dispatch_app.command("serve")
    def dispatch_serve(
        minutes: Optional[float] = typer.Option(None, help="Stop after this many minutes (default: until Ctrl-C)."),
        report: bool = typer.Option(True, help="Report plans and checks to Dagster (runless events)."),
    ):
        """The live dispatcher: plans every 5 minutes and on renewable departures, gates, records in the
        ledger, writes setpoints over Modbus (what `dev` starts; orchestration/dispatcher.py)."""
        import logging

        from dagster import DagsterInstance

        from gridpipeline.orchestration.dispatcher import Dispatcher

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        s = _settings()
        ensure_dagster_home(s)
        worker = Dispatcher(s, DagsterInstance.get() if report else None, report=report)
        worker.vtn = _start_vtn(worker, s)
        worker.install_signal_handlers()
        until = datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(minutes=minutes) if minutes else None
        typer.echo(f"dispatcher: {len(worker.fleet)} batteries, {len(worker.gens)} curtailable generators, mode "
                   f"{worker.mode}, field {s.field_host}:{s.field_port}, ledger {s.ledger}", err=True)
        st = worker.run(until=until, echo=lambda m: typer.echo(m, err=True))
        secs = sorted(st.plan_seconds)
        typer.echo(json.dumps({"plans": st.plans, "replans": st.replans, "failed": st.failed, "writes": st.writes,
                               "writes_failed": st.writes_failed,
                               "plan_p50_s": round(secs[len(secs) // 2], 3) if secs else None}))

    @dispatch_app.command("vpp-setpoint")
    def dispatch_vpp_setpoint(
        vpp: str = typer.Option(..., "--vpp", help="VPP name (the network model's storage.vpp), e.g. VPP_HOME."),
        mw: Optional[float] = typer.Option(None, "--mw", help="Aggregate setpoint in MW, positive = discharge."),
        minutes: float = typer.Option(30.0, help="How long the setpoint holds (the dispatcher leaves the members alone)."),
        operator: str = typer.Option(..., "--operator", help="Who dispatches (recorded in the ledger)."),
        note: str = typer.Option("", help="Why (recorded in the ledger)."),
        release: bool = typer.Option(False, "--release", help="End the VPP's hold now: the dispatcher plans them again."),
    ):
        """Dispatch a VPP as one unit: split the aggregate setpoint onto its members within their and their
        feeder heads' limits, gate it (AC power flow with N-1), record it and write it over Modbus
        (orchestration/vpp_command.py)."""
        import logging

        from gridpipeline.orchestration.vpp_command import vpp_setpoint

        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        try:
            out = vpp_setpoint(_settings(), vpp, mw, minutes, operator, note, release=release)
        except ValueError as exc:
            typer.secho(str(exc), fg="red", err=True)
            raise typer.Exit(2)
        typer.echo(out["summary"], err=True)
        typer.echo(json.dumps(out, default=str))

    @dispatch_app.command("backtest")
    def backtest_cmd(
        start: str = typer.Option("2018-01-01", help="first hour (UTC)"),
        end: str = typer.Option("2019-01-01", help="end (UTC, exclusive)"),
        world: str = typer.Option("sample", help="the world whose fleet and grid are replayed"),
        prices: Optional[Path] = typer.Option(None, "--prices", exists=True,
                                              help="utc_start,price CSV or SMARD CSV; default: the 2018 German "
                                                   "day-ahead prices (data/prices, SMARD, as in ../shared/data/prices_de)"),
        horizon: int = typer.Option(24, help="hourly steps per plan (at least)"),
        to_published: bool = typer.Option(False, "--to-published/--fixed-horizon",
                                          help="plan to the end of the published prices when they reach further"),
        price_model: str = typer.Option("lear", help="prices beyond the published ones: lear (the dispatch's "
                                                     "model, forecast/prices.py) or median (last week's same hour)"),
        terminal: str = typer.Option("hindsight", help="value of the energy left at a plan's end: median (of the "
                                                    "horizon's prices), hindsight (storage/value.py) or learnt "
                                                    "(hindsight times the share the fleet realised)"),
        share_days: int = typer.Option(28, help="with --terminal learnt: days of the fleet's own record the "
                                                "realised share is learnt from"),
        oracle: str = typer.Option("", help="a bound, not a strategy: give the rolling dispatch what no utility "
                                            "has: prices (the true prices over each horizon), terminal (perfect "
                                            "foresight's value of the energy left at each plan's end), netload "
                                            "(the true demand and renewables over each horizon); comma-separated"),
        train_days: int = typer.Option(365, help="days of measured history the demand model trains on"),
        refit_days: int = typer.Option(28, help="days between refits of the demand model"),
        gate: bool = typer.Option(True, "--gate/--no-gate", help="gate every executed hour of the rolling dispatch "
                                                                 "as live (an AC power flow of each quarter)"),
        forecast_cache: Optional[Path] = typer.Option(None, help="keep every issue's forecasts here; a second run "
                                                                 "with the same world, prices and forecast settings "
                                                                 "reads them (a planner study in about half the time)"),
        out: Optional[Path] = typer.Option(None, help="also write the result as JSON here"),
    ):
        """Replay the fleet over a period with four strategies (perfect foresight, the rolling dispatch, the
        median-price rule, no batteries) and print one JSON line: perfect_foresight_savings, mpc_savings,
        rule_savings, mpc_share_of_perfect, violations (AC power flow of every executed hour)."""
        import pandas as pd

        from benchmarks.dispatch_backtest import BacktestConfig, run_backtest, stdout_to_stderr
        from gridpipeline.storage.cli import read_prices
        from gridpipeline.world.model import load_world
        from gridpipeline.world.price_exchange import load_reference

        cfg = BacktestConfig(start=pd.Timestamp(start, tz="UTC"), end=pd.Timestamp(end, tz="UTC"), horizon_steps=horizon,
                             to_published=to_published, price_model=price_model, train_days=train_days, refit_days=refit_days,
                             terminal=terminal, share_days=share_days, oracle=oracle, gate=gate,
                             forecast_cache=str(forecast_cache) if forecast_cache else None)
        if cfg.end <= cfg.start + pd.Timedelta(days=1):
            typer.secho("--end must be more than a day after --start", fg="red", err=True)
            raise typer.Exit(2)
        series = read_prices(prices) if prices else load_reference()
        say = lambda m: typer.echo(f"dispatch backtest: {m}", err=True)  # noqa: E731
        with stdout_to_stderr():
            result = run_backtest(load_world(world), series, cfg, progress=say)
        if out:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=1))
        typer.echo(json.dumps(result))

    economics_app = typer.Typer(no_args_is_help=True, help="Economics studies of the whole chain.")

    @economics_app.command("backtest")
    def economics_backtest_cmd(
        start: str = typer.Option("2018-01-01", help="first hour (UTC)"),
        end: str = typer.Option("2019-01-01", help="end (UTC, exclusive)"),
        world: str = typer.Option("sample", help="the world whose grid, fleet and customers are replayed"),
        prices: Path | None = typer.Option(None, "--prices", exists=True,
                                           help="utc_start,price CSV or SMARD CSV; default: the 2018 German "
                                                "day-ahead prices (data/prices, SMARD)"),
        refit_days: int = typer.Option(28, help="days between refits of the demand model"),
        out: Path | None = typer.Option(None, help="also write the result as JSON here"),
    ):
        """Run the world through a period three ways (no optimisation; dispatch only; dispatch plus DR, price
        signals and market bids) and print one JSON line: baseline_cost, dispatch_cost, full_cost,
        peak_reduction_predicted_mw, peak_reduction_achieved_mw, and the savings by component."""
        import pandas as pd

        from benchmarks.dispatch_backtest import BacktestConfig, stdout_to_stderr
        from benchmarks.economics_backtest import run_economics
        from gridpipeline.storage.cli import read_prices
        from gridpipeline.world.model import load_world
        from gridpipeline.world.price_exchange import load_reference

        cfg = BacktestConfig(start=pd.Timestamp(start, tz="UTC"), end=pd.Timestamp(end, tz="UTC"), refit_days=refit_days)
        if cfg.end <= cfg.start + pd.Timedelta(days=2):
            typer.secho("--end must be more than two days after --start", fg="red", err=True)
            raise typer.Exit(2)
        series = read_prices(prices) if prices else load_reference()
        say = lambda m: typer.echo(f"economics backtest: {m}", err=True)
        with stdout_to_stderr():
            result = run_economics(load_world(world), series, cfg, progress=say)
        if out:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=1, default=str))
        typer.echo(json.dumps(result, default=str))

    app.add_typer(economics_app, name="economics", help="Economics: the three ways of operating through a year.")
    app.add_typer(grid_app, name="grid", help="Power flow, state estimation and N-1 on your own network files.")
    app.add_typer(forecast_app, name="forecast", help="Forecast backtests on your own history.")
    app.add_typer(audit_app, name="audit", help="Integrity of the decision ledger.")
    app.add_typer(decisions_app, name="decisions", help="Decisions in the ledger: list, approve, reject.")
    app.add_typer(dispatch_app, name="dispatch", help="Battery and curtailment dispatch: the live worker, a plan from files.")
    app.add_typer(load_app, name="load", help="Load management: import limit instructions.")


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
    """DAGSTER_HOME (default var/dagster_home), with the shipped dagster.yaml copied in when it has none."""
    home = Path(os.environ.get("DAGSTER_HOME") or settings.home / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    # Create the instance's storage under a lock: two commands starting on a fresh home at once
    # would otherwise race to create the same SQLite tables.
    import fcntl

    with open(home / ".init.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        if not (home / "dagster.yaml").exists():  # a user's own instance settings are theirs
            shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
        from dagster import DagsterInstance

        DagsterInstance.get().dispose()
    return home


def _start_vtn(worker, s: Settings):
    """The OpenADR VTN for the dispatcher, with the VENs the load policy knows; None (logged) when the
    policy is rejected or the port is taken: the dispatch goes on without demand response."""
    from gridpipeline.load.dr import aggregator_ven, ven_id
    from gridpipeline.orchestration.vtn import Vtn

    pr = worker.priorities()
    if pr is None:
        return None
    pol = pr.policy
    known = {ven_id(c) for c in pol.contracts} | {aggregator_ven(c) for c in pol.demand_response.get("price_responsive") or {}}
    try:
        vtn = Vtn(known, s.field_host, s.openadr_port).start()
    except RuntimeError as exc:
        typer.echo(f"dispatcher: no demand response: {exc}", err=True)
        return None
    typer.echo(f"dispatcher: OpenADR 2.0b VTN on {s.field_host}:{s.openadr_port} for {len(known)} VENs", err=True)
    return vtn


def _load_sim(settings: Settings, world_name: str, sensors: int | None, faults: str, seed: int,
              export_interval: int, truth: bool):
    from gridpipeline.telemetry.registry import PlacementPolicy, build_registry
    from gridpipeline.world.model import load_world
    from gridpipeline.world.scada import ScadaSimulator, faults_from_string

    world = load_world(world_name, data_dir=settings.data_dir, cache_dir=settings.home / "worlds" / world_name)
    policy = PlacementPolicy.full() if world_name == "scale" else PlacementPolicy()
    reg = build_registry(world.net, world.zones, policy)
    if sensors:
        reg = reg[reg.sensor_id <= sensors]
    sim = ScadaSimulator(world, reg, settings.landing, faults=faults_from_string(faults), seed=seed,
                         export_interval_s=export_interval, truth_path=settings.truth if truth else None,
                         weather_dir=settings.weather_dir, prices_dir=settings.prices,
                         events_path=settings.home / "world" / "events.json", flex_dir=settings.flex_offers,
                         customers_path=settings.customers)
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
    """Write SCADA historian exports into the landing zone (GRIDPIPELINE_LANDING_DIR), and the weather
    provider's forecast runs and observations as of the simulated clock (GRIDPIPELINE_WEATHER_DIR)."""
    s = _settings()
    t0, t1 = _parse_time(start, "start"), _parse_time(end, "end")
    sim = _load_sim(s, world or s.world, sensors, faults, seed, export_interval, truth)
    typer.echo(f"simulating {len(sim.reg):,} sensors in {len(sim.sources)} sources into {s.landing}")
    try:
        if live:
            plan = sim.serve_field(s.field_host, s.field_port)
            typer.echo(f"field: {len(sim.fleet.batteries)} battery BMS on ports "
                       f"{[g['port'] for g in plan['batteries']]}, {len(sim.fleet.inverters)} inverters on ports "
                       f"{[g['port'] for g in plan['inverters']]} ({s.field_host})")
            from gridpipeline.world.outstation import Outstation

            outstation = Outstation(sim, s.field_host, s.iec104_port)
            outstation.start()
            sim.gateways.append(outstation)  # stopped with the field
            typer.echo(f"field: IEC 104 outstation on {s.field_host}:{s.iec104_port} "
                       f"({len(outstation.commands)} switches, frequency of a {outstation.dyn.area.load_mw:,.0f} MW "
                       f"area, local share {outstation.dyn.model.share:.2e})")
            from gridpipeline.orchestration.vtn import url as vtn_url
            from gridpipeline.world.events import read_events
            from gridpipeline.world.ven import ven_field_for

            events, _ = read_events(s.home / "world" / "events.json", None)
            silent = {e.get("ven") for e in events or [] if e.get("kind") == "ven_silent"}
            sim.vens = ven_field_for(sim.world, s.load_policy, s.customers, seed=seed, silent=silent)
            if sim.vens is not None:
                sim.vens.start(vtn_url(s.field_host, s.openadr_port))
                sim.gateways.append(sim.vens)  # stopped with the field
                typer.echo(f"field: {len(sim.vens.ven_ids)} OpenADR VENs for the VTN on {s.field_host}:{s.openadr_port}"
                           + (f" ({len(silent)} silent)" if silent else ""))
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
    from gridpipeline.replay import replay_range

    t0, t1 = _parse_time(start, "start"), _parse_time(end, "end")
    if simulate_missing:
        from gridpipeline.common import landing as lz

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


def _historian(settings: Settings, faults: str, seed: int):
    """The simulated historian archive: every load and generator P point sampled every 5 minutes (as
    a historian keeps long-term data; the forecast reads only the 5-minute instants anyway), exported
    once per 5-minute window into GRIDPIPELINE_ARCHIVE_DIR, with the simulator's faults (gaps, lost
    exports, spikes, wrong units, ...) and the weather provider's files for the period."""
    from gridpipeline.telemetry.registry import PlacementPolicy, build_registry
    from gridpipeline.world.model import load_world
    from gridpipeline.world.scada import ScadaSimulator, faults_from_string

    world = load_world(settings.world, data_dir=settings.data_dir, cache_dir=settings.home / "worlds" / settings.world)
    reg = build_registry(world.net, world.zones, PlacementPolicy.full() if settings.world == "scale" else PlacementPolicy())
    points = reg[(reg.kind == "p_inj") & reg.element_type.isin(["load", "sgen"])].assign(source="HISTORIAN",
                                                                                     interval_s=300)
    return ScadaSimulator(world, points, settings.archive, faults=faults_from_string(faults), seed=seed,
                          export_interval_s=300, truth_path=None, weather_dir=settings.weather_dir,
                          prices_dir=settings.prices)


def _imported_windows(settings: Settings, start: datetime, end: datetime) -> int:
    """How many 5-minute windows of [start, end) the store already holds ingested telemetry for."""
    import duckdb

    from gridpipeline.store import connect, writer_lock

    if not settings.db_path.exists():
        return 0
    with writer_lock(settings.db_path), connect(settings.db_path) as con:
        try:
            return con.execute("SELECT count(DISTINCT window_start) FROM telemetry.ingest_files "
                               "WHERE window_start >= ? AND window_start < ?", [start, end]).fetchone()[0]
        except duckdb.CatalogException:  # a fresh store
            return 0


def _day(t: datetime) -> str:
    return f"{t:%Y-%m-%d}" if (t.hour, t.minute) == (0, 0) else f"{t:%Y-%m-%d %H:%M}"


def import_history(settings: Settings, start: datetime, end: datetime, faults: str = "default", seed: int = 0,
                   echo=typer.echo, train: bool = True, chunk_days: float = 7) -> dict:
    """Load [start, end) of the historian archive through ingestion, ``chunk_days`` per Dagster run
    (so the live loop gets the writer between chunks, and a run's fixed cost is paid 106 times for two
    years rather than 738), newest first, and train the forecast models on it: once the newest
    ``MODEL_MILESTONE_DAYS`` are in (the live loop gets a model early) and again when all are. Chunks
    the store already holds are skipped, so a restart picks up where it stopped."""
    from dagster import DagsterInstance

    from gridpipeline.replay import replay_range

    t0 = time.monotonic()
    from gridpipeline.base.partitions import START as PARTITIONS_START

    first = datetime.fromisoformat(PARTITIONS_START).replace(tzinfo=start.tzinfo)
    if start < first:  # the partitions cannot hold what lies before their start
        echo(f"history import: starting at the first partition {first:%Y-%m-%d} rather than {start:%Y-%m-%d} "
             f"(set GRIDPIPELINE_PARTITIONS_START or {PARTITIONS_START!r} in <home>/partitions_start earlier "
             "on a new store to keep more)", err=True)
        start = first
    chunks = []
    b = end
    while b > start:  # newest first: the most useful history for the first model
        a = max(b - timedelta(days=chunk_days), start)
        chunks.append((a, b))
        b = a
    total_days = (end - start) / timedelta(days=1)
    sim = None
    done = {"days": round(total_days, 2), "runs": len(chunks), "imported": 0, "skipped": 0, "readings": 0}
    instance = DagsterInstance.get()
    # retrain as the history grows: early for the live loop, again at a year, and when all is in
    milestones = [d for d in MODEL_MILESTONE_DAYS if d < total_days]

    def _train(what: str):
        from gridpipeline.definitions import defs
        from gridpipeline.orchestration.runs import wait_for_pool

        echo(f"history import: training the forecast models on {what}", err=True)
        wait_for_pool(instance, echo=lambda m: echo(m, err=True), behind_queue=True)
        res = defs.resolve_job_def("forecast_models_job").execute_in_process(instance=instance, raise_on_error=False)
        done["models_run"], done["models_success"] = res.run_id, res.success

    try:
        for k, (a, b) in enumerate(chunks, start=1):
            days_in = (end - b) / timedelta(days=1)
            while train and milestones and days_in >= milestones[0] and done["imported"]:
                milestones.pop(0)
                _train(f"the newest {days_in:.0f} days")
            windows = int((b - a) / timedelta(minutes=5))
            if _imported_windows(settings, a, b) >= windows:
                done["skipped"] += 1
                continue
            sim = sim or _historian(settings, faults, seed)
            sim.run(a, b)
            res = replay_range(a, b, instance=instance, archive=True)
            if not res["success"]:
                echo(f"history import: {_day(a)}..{_day(b)} failed (run {res['run_id']}); see the run in the UI",
                     err=True)
                return {**done, "success": False, "run_id": res["run_id"]}
            done["imported"] += 1
            done["readings"] += int(res.get("rows_stored", 0) or 0)
            echo(f"history import: run {k}/{len(chunks)} ({_day(a)}..{_day(b)}) ingested, "
                 f"{res.get('rows_stored', 0):,} readings; {time.monotonic() - t0:.0f} s so far", err=True)
    finally:
        if sim is not None:
            sim.close()
    if train and done["imported"]:
        _train(f"all {total_days:.0f} days")
    done["seconds"] = round(time.monotonic() - t0, 1)
    done["success"] = True
    return done


@app.command("history")
def history_cmd(
    days: Optional[float] = typer.Option(None, help="Days before --end (default: the training window + 8 days of lags)."),
    end: str = typer.Option("now-2h", help="End of the history (UTC ISO 8601 or now-2h)."),
    faults: str = typer.Option("default"),
    seed: int = typer.Option(0),
    train: bool = typer.Option(True, help="Train the forecast models on the history when it is in."),
    days_per_run: float = typer.Option(7.0, min=0.01, help="Days of archive ingested per Dagster run."),
):
    """Import the simulated historian archive as history, through ingestion and cleaning (a week per run)."""
    s = _settings()
    ensure_dagster_home(s)
    t1 = _parse_time(end, "end").replace(second=0, microsecond=0)
    t1 -= timedelta(minutes=t1.minute % 5)
    t0 = t1 - timedelta(days=days or s.forecast_train_days + HISTORY_LAG_DAYS)
    _set_epoch(s, t0)
    typer.echo(json.dumps(import_history(s, t0, t1, faults, seed, train=train, chunk_days=days_per_run),
                          default=str))


HISTORY_LAG_DAYS = 8


def _set_epoch(s: Settings, first: datetime) -> None:
    """On a new store, start the partitions on the first day of its history (see base/partitions.py)."""
    from gridpipeline.base.partitions import write_epoch

    if write_epoch(first.date(), s.home):
        typer.echo(f"partitions start on {first:%Y-%m-%d}, the first day of this store's history "
                   f"(recorded in {s.home / 'partitions_start'})", err=True)
#: the models are trained once this many of the newest days are in (and again when all are)
MODEL_MILESTONE_DAYS = (30, 365)


@app.command()
def loop(
    minutes: Optional[float] = typer.Option(None, help="Stop after this many minutes (default: until Ctrl-C/SIGTERM)."),
    report: bool = typer.Option(True, help="Report every snapshot to Dagster (runless materialisations and checks)."),
):
    """The 30-second grid loop: a long-lived worker that estimates every snapshot from the landing zone,
    writes the live store and reports to Dagster (what `dev` starts)."""
    import logging

    from dagster import DagsterInstance

    from gridpipeline.orchestration.live_loop import GridLoop

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    s = _settings()
    ensure_dagster_home(s)
    instance = DagsterInstance.get() if report else None
    worker = GridLoop(s, instance, report=report)
    worker.install_signal_handlers()
    until = datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(minutes=minutes) if minutes else None
    typer.echo(f"grid loop: estimating every 30-second snapshot of {s.landing} into {s.live_db_path}", err=True)
    stats = worker.run(until=until, echo=lambda m: typer.echo(m, err=True))
    lags = sorted(stats.lags_s)
    typer.echo(json.dumps({"estimated": stats.estimated, "failed": stats.failed, "n1_runs": stats.n1_runs,
                           "store_busy": stats.store_busy, "last_snapshot": stats.last_snapshot,
                           "lag_p50_s": round(lags[len(lags) // 2], 3) if lags else None,
                           "lag_max_s": round(lags[-1], 3) if lags else None}, default=str))


#: CPU niceness of batch work under `dev` (Dagster and its runs, the history import); the live loop
#: and the simulator (the field) keep 0
BATCH_NICE = 5


@app.command()
def responder(
    minutes: Optional[float] = typer.Option(None, help="Stop after this many minutes (default: until Ctrl-C)."),
    report: bool = typer.Option(True, help="Report responses to Dagster (runless events on critical_responses)."),
):
    """The critical-event responder: an IEC 104 client of the field's outstation that sheds load by the
    under-frequency stages within seconds, from the response table Dagster refreshes (what `dev`
    starts; orchestration/responder.py)."""
    import logging

    from dagster import DagsterInstance

    from gridpipeline.common.field_map import endpoints
    from gridpipeline.orchestration.responder import Responder
    from gridpipeline.sources.bms import BmsClient
    from gridpipeline.sources.network import load_network_model
    from gridpipeline.storage.planner import fleet_table

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    s = _settings()
    ensure_dagster_home(s)
    fleet = fleet_table(load_network_model(s.network).net)
    bms = BmsClient(endpoints(fleet.battery_id, s.field_host, s.field_port), timeout_s=1.0, stale_s=30.0)
    worker = Responder(s, DagsterInstance.get() if report else None, report=report, bms=bms)
    worker.install_signal_handlers()
    until = datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(minutes=minutes) if minutes else None
    typer.echo(f"responder: IEC 104 client of {worker.host}:{worker.port}, mode {worker.mode}, ledger {s.ledger}",
               err=True)
    st = worker.run(until=until)
    bms.close()
    lat = sorted(st.latencies)
    typer.echo(json.dumps({"readings": st.readings, "flagged": st.flagged, "responses": st.responses,
                           "latency_p50_s": round(lat[len(lat) // 2], 3) if lat else None}))


@app.command()
def dev(
    port: int = typer.Option(3000),
    catch_up: str = typer.Option("2h", help="Simulated history before now, fed at --speed on start."),
    speed: float = typer.Option(120.0),
    faults: str = typer.Option("default"),
    simulator: bool = typer.Option(True, help="Run the live SCADA simulator next to Dagster."),
    history: bool = typer.Option(True, help="Import the training window of simulated historian archive "
                                            "(once; later starts skip the days already in the store)."),
):
    """Start the Dagster UI and daemon on 127.0.0.1 with the simulator feeding the landing zone."""
    s = _settings()
    home = ensure_dagster_home(s)
    env = {**os.environ, "DAGSTER_HOME": str(home), "GRIDPIPELINE_DUCKDB_PATH": str(s.db_path)}
    live_start = _parse_time(f"now-{catch_up}", "catch-up")
    _set_epoch(s, live_start - timedelta(days=s.forecast_train_days + HISTORY_LAG_DAYS) if history and simulator
               else live_start)
    from gridpipeline.orchestration.child import spawn, stop_all

    procs = []
    bin_dir = Path(sys.executable).parent
    if simulator:
        procs.append(spawn(
            [str(bin_dir / "gridpipeline"), "simulate", "--live", "--start", f"now-{catch_up}",
             "--speed", str(speed), "--faults", faults], env=env, cwd=PROJECT_ROOT))
        if history:
            # the archive ends where the live simulator's catch-up starts; a day per run, because a run
            # holds the one writer slot while it ingests (a week's run held it 7 minutes, and the live
            # windows and forecasts queued behind it), and it waits for the run queue to empty first
            procs.append(spawn(
                [str(bin_dir / "gridpipeline"), "history", "--end", f"now-{catch_up}", "--faults", faults,
                 "--days-per-run", "1"],
                nice=BATCH_NICE, env=env, cwd=PROJECT_ROOT))
    # the 30-second loop: a long-lived worker, not a run per snapshot (orchestration/live_loop.py)
    procs.append(spawn([str(bin_dir / "gridpipeline"), "loop"], env=env, cwd=PROJECT_ROOT))
    if simulator:
        # the rolling dispatch: a long-lived worker (re-plans must reach the batteries within a minute)
        procs.append(spawn([str(bin_dir / "gridpipeline"), "dispatch", "serve"], env=env, cwd=PROJECT_ROOT))
        # the critical-event responder: answers under-frequency over IEC 104 within seconds
        procs.append(spawn([str(bin_dir / "gridpipeline"), "responder"], env=env, cwd=PROJECT_ROOT))
    # started in DAGSTER_HOME: from the checkout, dagster would warn that the shipped dagster.yaml there
    # "will not be used" (it is the template copied into DAGSTER_HOME); workspace.yaml paths are
    # relative to the workspace file, so the code location loads the same
    # Dagster's runs (ingestion, forecasts, training, backfills) are batch work: at a lower CPU priority
    # than the live loop, so on a busy machine the 30-second estimate gets the core first
    procs.append(spawn(
        [str(bin_dir / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(port), "-w", str(PROJECT_ROOT / "workspace.yaml")],
        nice=BATCH_NICE, env=env, cwd=home))
    dagster = procs[-1]
    history_proc = procs[1] if simulator and history else None
    typer.echo(f"Dagster UI: http://127.0.0.1:{port}  (DAGSTER_HOME={home}, store={s.db_path}, landing={s.landing})")

    def _stop(signum, frame):  # SIGTERM stops every child the way Ctrl-C does
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        while all(p.poll() is None for p in procs if p is not history_proc):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        # each child leads its own process group: the group gets the signal, and what is still alive
        # after 30 s is killed, grandchildren (webserver, daemon, code server, dbt) included
        before = signal.signal(signal.SIGTERM, signal.SIG_IGN), signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            # runs in flight end CANCELED with the reason, not FAILURE ("interrupted unexpectedly")
            instance, in_flight = _cancel_in_flight(home)
            stop_all(procs, lambda p: signal.SIGINT if p is dagster else signal.SIGTERM, timeout_s=30)
            if instance is not None:
                from gridpipeline.orchestration.runs import settle_canceled

                settle_canceled(instance, in_flight)
        finally:
            # ignored dispositions survive exec: left in place, every process this one starts later (and,
            # in a test session, every later test's children) would ignore SIGTERM and Ctrl-C
            signal.signal(signal.SIGTERM, before[0] if before[0] is not None else signal.SIG_DFL)
            signal.signal(signal.SIGINT, before[1] if before[1] is not None else signal.default_int_handler)


def _cancel_in_flight(home: Path):
    """(instance, ids of the runs marked CANCELING) under ``home``; (None, []) if the instance cannot be
    opened (stopping goes on regardless)."""
    try:
        from dagster import DagsterInstance
        from dagster._core.instance.ref import InstanceRef

        from gridpipeline.orchestration.runs import cancel_in_flight

        instance = DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
        ids = cancel_in_flight(instance)
        if ids:
            typer.echo(f"stopping: {len(ids)} run(s) in flight marked canceling: {', '.join(i[:8] for i in ids)}")
        return instance, ids
    except Exception as exc:  # noqa: BLE001 - a stop must never hang on the run storage
        typer.echo(f"stopping: runs in flight not marked canceling ({type(exc).__name__}: {exc})", err=True)
        return None, []


@data_app.command("build")
def data_build(out: Path = typer.Option(PROJECT_ROOT / "data" / "sample_grid", help="Output folder.")):
    """Rebuild the committed sample world (SimBench grid + profiles, pvlib TMY3 weather)."""
    from gridpipeline.world.build import build_sample_world

    summary = build_sample_world(out)
    typer.echo(json.dumps(summary, default=str))


@app.command("report")
def report_cmd(
    month: str = typer.Option(..., "--month", help="YYYY-MM (UTC days)"),
    out: Path = typer.Option(..., "--out", help="folder for report.html, daily.csv and steps.csv"),
):
    """The month's financial report for compliance and regulatory filing: costs by component, savings
    against the same days with no optimisation, market revenue, DR payments and shed costs, as HTML with
    the plots, and CSV (per day and per 5-minute step). Reads the stores (read-only)."""
    import duckdb
    import pandas as pd

    from gridpipeline.market.finance import cost_context, day_report, write_report
    from gridpipeline.sources.network import load_network_model
    from gridpipeline.store import connect

    s = _settings()
    try:
        first = pd.Timestamp(datetime.strptime(month, "%Y-%m"))
    except ValueError:
        typer.secho(f"--month {month!r}: expected YYYY-MM", fg="red", err=True)
        raise typer.Exit(2)
    ctx = cost_context(load_network_model(s.network).net, s.load_policy)
    days, steps = {}, []
    try:
        with connect(s.live_db_path, read_only=True, timeout_s=60.0) as live, \
                connect(s.db_path, read_only=True, timeout_s=60.0) as main:
            for day in pd.date_range(first, first + pd.offsets.MonthEnd(0), freq="D"):
                fig, per_step = day_report(live, main, day.to_pydatetime(), (day + pd.Timedelta(days=1)).to_pydatetime(),
                                           ctx["degradation"], ctx["curtail_value"], ctx["voll"], ctx["import_max_mw"])
                if fig["steps_priced"]:
                    days[day.date()] = fig
                    steps.append(per_step)
    except (duckdb.IOException, TimeoutError) as exc:
        typer.secho(f"the stores are not readable: {exc}", fg="red", err=True)
        raise typer.Exit(1)
    daily = pd.DataFrame.from_dict(days, orient="index")
    result = write_report(month, daily, pd.concat(steps) if steps else pd.DataFrame(), out)
    typer.echo(json.dumps({"month": month, "out": str(out), **result}))


@app.command()
def bench(
    name: str = typer.Argument(..., help="Benchmark: ingest, estimate, contingency, forecast, loop, dispatch, replan, "
                                         "shed, responder."),
    sensors: int = typer.Option(100_000, help="ingest: sensors."),
    minutes: int = typer.Option(10, help="ingest: minutes of readings; loop: minutes measured (30 for the record)."),
    keep: bool = typer.Option(False, help="Keep the benchmark's working folder."),
    reference_scale: bool = typer.Option(False, help="estimate/contingency: also run pandapower on the scale grid "
                                                     "(estimate: about 20 GiB of memory)."),
    batteries: int = typer.Option(1000, help="dispatch: batteries."),
    events: Optional[int] = typer.Option(None, help="replan: cloud fronts injected (default 20); responder: "
                                                   "under-frequency events (default 100)."),
    loads: int = typer.Option(10_000, help="shed: loads of the generated instance."),
    steps: int = typer.Option(12, help="shed: 5-minute steps."),
):
    """Run a benchmark and print one JSON line of figures."""
    from benchmarks import REGISTRY

    if name not in REGISTRY:
        typer.secho(f"unknown benchmark '{name}'; known: {', '.join(sorted(REGISTRY))}", fg="red", err=True)
        raise typer.Exit(2)
    # solvers and libraries print banners on stdout (HiGHS does, at every model): while the benchmark
    # runs, stdout goes to stderr, so stdout carries exactly the one JSON line
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)

    def _interrupt(signum, frame):  # SIGTERM unwinds like Ctrl-C: the benchmark stops what it started
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        extra = {"events": events} if events is not None else {}
        result = REGISTRY[name](sensors=sensors, minutes=minutes, keep=keep, reference_scale=reference_scale,
                                batteries=batteries, loads=loads, steps=steps, **extra)
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
    typer.echo(json.dumps(result))


if __name__ == "__main__":
    app()
