"""``gridpipeline dispatch backtest``: the sample world's fleet over a historical period (2018 by default),
four strategies in one run, every executed hour checked by an AC power flow.

A measurement, like the benchmarks beside it, not a production path: it plays both sides of the
wall, the world (truth, execution, scoring) and the utility (the strategies), so it lives outside
the package. What the strategies are given is listed below; nothing else of the world reaches them.

The world plays the field: its loads, PV, wind and weather over the period are the truth the strategies
are executed against and scored on. The strategies see only what a utility has:

* **history**: the measured system demand, hourly (the world's demand with 0.5 % measurement noise,
  the SCADA sensors' noise left over after averaging an hour), and the observed temperature;
* **weather forecasts**: the world's weather service runs (every 6 h, available 4 h after their
  initialisation, with the service's growing errors);
* **prices**: the real German day-ahead prices of 2018 (SMARD, the project's copy in ``data/prices``,
  the same series as ``../shared/data/prices_de``), each day known from 12:00 Europe/Berlin the day
  before, the way the exchange publishes them;
* **the fleet**: what the BMS reports, the true SOC (a BMS reads it).

Strategies

* ``none``: no battery moves, nothing is curtailed;
* ``perfect``: perfect foresight of prices, demand and renewables: one LP over the whole period with
  the live planner (``planner.solve_plan``: the same clusters, limits, degradation cost and valuation
  of the energy left at the end);
* ``mpc``: the rolling dispatch: every hour (``step``), a 24-hour plan with the live planner on the
  forecasts known then, of which the first hour is executed. Demand comes from the deployed forecast
  model (``forecast.deployed``, the global model, Prophet left out), trained as-of on the measured
  history every ``refit_days``; PV and wind from the weather run through the deployed physics
  (``forecast.generation``, its fixed band); prices known or forecast as the live loop labels them;
* ``rule``: charge at full power below the day's median price, discharge above it.

Execution and cost
    The executed hour moves the true SOC within each battery's true limits (SOC bounds, the owner's
    backup reserve, the power rating, the efficiencies), whatever the plan assumed. Curtailment is an
    inverter cap at the planned output: a generator makes ``min(true output, cap)``. An hour costs its
    import at the day-ahead price, minus its export at the price less ``EXPORT_SPREAD``, plus the
    batteries' degradation and the curtailed energy at ``CURTAIL_VALUE``. The energy left in the
    fleet at the end, against the start, is valued at the period's median price for every strategy.
    Savings are the no-battery cost minus a strategy's cost.

Violations
    Every executed hour of every strategy goes through an AC power flow (power-grid-model, batched)
    with the hour's mean demand and generation and the batteries' power. An element counts when it is
    over its limit (branch loading above ``loading_limit``, voltage outside ``v_min``-``v_max``) and
    the batteries made it so or made it worse (beyond 0.1 % loading or 0.0005 pu) against the
    no-battery hour; the hours the grid is over a limit on its own are reported beside.

Grid limits
    Every plan has limit rows as the live loop builds them (``storage.limits``: transformers, feeder
    heads, branches above 60 %, bus voltages): linearised around the last hour's state with the
    batteries taken out, their base moved by the forecasts' change. The sensitivities are re-linearised
    once a day (live: every plan). The rows keep ``margin_pu`` / ``margin_loading`` inside the limits,
    since an hourly plan starts from a state an hour old; a base past them may not be made worse and
    need not be pulled back (:func:`in_band`). The base starts at the last hour's state and moves by
    the forecasts' change from that hour (the same weather run's generation then and at each step).
    Perfect foresight gets the same rows with every hour's true no-action flows as their base.

The gate
    As live, nothing the rolling dispatch plans is executed before the validation gate passes it or
    scales it back (``gate``, :class:`InstantGate`): each quarter of the executed hour is checked by an
    AC power flow of the world's state 15 minutes before it (live: 30 s) with the setpoints applied.
    Perfect foresight and the rule are not gated.

Deviations from the live loop, all stated in the result's ``notes``: hourly steps (the prices are
hourly); the sensitivities refreshed daily, and margins on the rows and the gate; the gate on a state
15 minutes old and the base case only; no reactive power (the backtest executes active power only);
no nowcast of renewables.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from gridpipeline.storage.planner import CURTAIL_VALUE, EXPORT_SPREAD

SEED = 20180101
#: how much worse than without the batteries an element over its limit must get to count (the
#: violation count) or to fail the gate (InstantGate): % loading, pu voltage
WORSE_LOADING, WORSE_PU = 0.1, 0.0005


@dataclass(frozen=True)
class BacktestConfig:
    start: pd.Timestamp = pd.Timestamp("2018-01-01", tz="UTC")
    end: pd.Timestamp = pd.Timestamp("2019-01-01", tz="UTC")
    step: pd.Timedelta = pd.Timedelta(hours=1)
    horizon_steps: int = 24
    #: plan to the end of the published prices when they reach beyond ``horizon_steps`` (after the
    #: day-ahead auction, 12:00 Europe/Berlin, up to 36 h). Off by default: on 2018-03-05..04-02 it gave
    #: 0.491 of perfect foresight against 0.495 with the fixed 24 h (RESULTS)
    to_published: bool = False
    price_model: str = "lear"     # beyond the published prices: "lear" (forecast/prices.py) or "median" (last week's)
    #: the value of the energy left at a plan's end: "median" of the horizon's prices, "hindsight" (the
    #: fleet's value of stored energy at that hour over the last 14 published days, storage/value.py), or
    #: "learnt" (that value times the share of the hindsight profit the fleet realised over its own last 28
    #: days: ``TerminalValues.learnt``)
    terminal: str = "hindsight"
    #: days of the fleet's own record the "learnt" value's share is learnt from (storage.value.SHARE_DAYS)
    share_days: int = 28
    train_days: int = 365
    refit_days: int = 28
    soc0: float = 0.5             # of each battery's capacity at the start
    noise: float = 0.005          # relative noise of the measured hourly demand
    sub_steps: int = 4            # instants per step averaged for the truth
    loading_limit: float = 100.0
    v_min: float = 0.95
    v_max: float = 1.05
    grid_limits: bool = True      # limit rows in every plan, as live (see "Grid limits" above)
    # the plans' rows (and the gate below) keep this far inside the limits: an hourly plan starts from a
    # state an hour old, and the gate's state is 15 minutes old; live re-plans every 5 minutes and gates
    # the first step on a state 30 s old
    margin_pu: float = 0.005
    margin_loading: float = 2.0
    #: the live gate on every executed hour of the rolling dispatch, emulated on the world's state 15 minutes
    #: before each quarter (:class:`InstantGate`)
    gate: bool = True
    #: a folder for every issue's forecasts (:class:`ForecastCache`): a second run reads them; None: off
    forecast_cache: str | None = None
    #: bounds, not strategies: what the rolling dispatch earns when given what no utility has. "prices":
    #: the true prices over each plan's horizon; "terminal": perfect foresight's own value of stored energy
    #: at each plan's end (its LP's energy-balance duals); "netload": the true demand and renewable output
    #: over each horizon, as perfect foresight has them; any of them, comma-separated. Off ("") by default
    oracle: str = ""


# ------------------------------------------------------------------------------------------ the world
@dataclass
class Truth:
    """The world's hourly means over the period, in the network tables' row order."""

    times: pd.DatetimeIndex
    load_p: np.ndarray   # (T, L) MW
    load_q: np.ndarray
    sgen_p: np.ndarray   # (T, S) MW
    sgen_q: np.ndarray
    fine: object | None = None   # the instants the means are of (``Injections``, ``sub`` per step): the gate's states
    sub: int = 1

    @property
    def demand(self) -> np.ndarray:
        return self.load_p.sum(axis=1)


def world_truth(world, start: pd.Timestamp, end: pd.Timestamp, step: pd.Timedelta, sub: int = 4) -> Truth:
    times = pd.date_range(start, end, freq=step, inclusive="left")
    fine = pd.date_range(start, end, freq=step / sub, inclusive="left")
    inj = world.injections_at(fine)

    def mean(a):
        return np.asarray(a, float).reshape(len(times), sub, -1).mean(axis=1)

    return Truth(times, mean(inj.load_p_mw), mean(inj.load_q_mvar), mean(inj.sgen_p_mw), mean(inj.sgen_q_mvar),
                 fine=inj, sub=sub)


def measured_demand(world, start: pd.Timestamp, end: pd.Timestamp, step: pd.Timedelta, noise: float,
                    sub: int = 4, seed: int = SEED) -> pd.Series:
    """What the SCADA history holds: the step's mean system demand with measurement noise (seeded)."""
    fine = pd.date_range(start, end, freq=step / sub, inclusive="left")
    times = pd.date_range(start, end, freq=step, inclusive="left")
    d = np.asarray(world.injections_at(fine).load_p_mw, float).sum(axis=1).reshape(len(times), sub).mean(axis=1)
    rng = np.random.default_rng(seed)
    return pd.Series(d * (1 + noise * rng.standard_normal(len(d))), index=times, name="system")


def publication_times(hours: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """When each delivery hour's day-ahead price is published: 12:00 Europe/Berlin the day before."""
    from gridpipeline.world.price_exchange import PUBLISH_HOUR, TZ

    local = hours.tz_convert(TZ).normalize().tz_localize(None)
    pub = (local - pd.Timedelta(days=1) + pd.Timedelta(hours=PUBLISH_HOUR)).tz_localize(TZ, ambiguous="NaT",
                                                                                         nonexistent="shift_forward")
    return pub.tz_convert("UTC")


# --------------------------------------------------------------------------------------- the fleet
@dataclass
class FleetState:
    """True SOC and the executed schedule of one strategy."""

    fleet: pd.DataFrame
    energy: np.ndarray
    dt_h: float
    power: list = field(default_factory=list)      # (N,) MW per executed step, + discharge
    gen_cap: list = field(default_factory=list)    # (G,) MW inverter caps per step (inf = none)
    costs: list = field(default_factory=list)
    gen_out: np.ndarray | None = None              # (T, G) MW the curtailable generators made

    @property
    def e_min(self) -> np.ndarray:
        f = self.fleet
        return np.maximum(f.soc_min.to_numpy(float), f.reserve.to_numpy(float)) * f.capacity_mwh.to_numpy(float)

    @property
    def e_max(self) -> np.ndarray:
        return self.fleet.soc_max.to_numpy(float) * self.fleet.capacity_mwh.to_numpy(float)

    def execute(self, p: np.ndarray) -> np.ndarray:
        """Apply the requested power (+ discharge) within the true limits; returns what was done."""
        f, dt = self.fleet, self.dt_h
        eta_c, eta_d = f.eta_c.to_numpy(float), f.eta_d.to_numpy(float)
        pmax = f.p_max_mw.to_numpy(float)
        p = np.clip(np.nan_to_num(np.asarray(p, float)), -pmax, pmax)
        dis = np.minimum(np.clip(p, 0, None), np.clip(self.energy - self.e_min, 0, None) * eta_d / dt)
        ch = np.minimum(np.clip(-p, 0, None), np.clip(self.e_max - self.energy, 0, None) / (eta_c * dt))
        self.energy = self.energy + dt * (eta_c * ch - dis / eta_d)
        done = dis - ch
        self.power.append(done)
        return done


def hour_cost(net_mw: float, price: float, power: np.ndarray, degradation: np.ndarray, curtailed_mw: float,
              dt_h: float) -> float:
    energy = net_mw * price if net_mw > 0 else net_mw * (price - EXPORT_SPREAD)
    return float(dt_h * (energy + np.abs(power) @ degradation + curtailed_mw * CURTAIL_VALUE))


# --------------------------------------------------------------------------------------- forecasts
class Forecaster:
    """The forecasts a utility has at an issue time: deployed demand model (refit as-of), weather runs
    through the deployed renewable physics, prices known or forecast."""

    def __init__(self, world, hist: pd.Series, prices: pd.Series, gens: pd.DataFrame, cfg: BacktestConfig,
                 progress: Callable[[str], None] | None = None):
        from gridpipeline.forecast.deployed import deployed_config
        from gridpipeline.world.weather_service import WeatherService

        self.world, self.cfg, self.progress = world, cfg, progress or (lambda m: None)
        self.hist = hist.to_frame("system")
        span = pd.date_range(hist.index[0], cfg.end + pd.Timedelta(days=2), freq=cfg.step, inclusive="left")
        self.observed = pd.DataFrame({"temperature": world.weather_at(span)["temp_air"].to_numpy(float)}, index=span)
        import tempfile

        self.ws = WeatherService(world, tempfile.mkdtemp(prefix="gp_backtest_wx_"))
        self.loc = world.meta["location"]
        self.capacity = {k: float(gens.rating_mw[gens.kind == k].sum()) for k in ("pv", "wind")}
        self.gcfg = deployed_config(cfg.step, cfg.train_days, world.timezone, _country(world), threads=1)
        self.prices = prices
        self.pub = publication_times(prices.index)
        from gridpipeline.forecast.prices import PriceForecaster

        self.price_model = PriceForecaster() if cfg.price_model == "lear" else None
        self._bundle, self._trained = None, None
        #: refit as of ``anchor + k x refit_days`` (a fixed grid: the same models whichever issue comes
        #: first, as a run that reads some issues from a :class:`ForecastCache` needs); None: at the first
        #: issue and every ``refit_days`` after it
        self.anchor: pd.Timestamp | None = None
        self._runs: dict = {}
        self.train_seconds = 0.0
        self.refits = 0

    def steps(self, issue: pd.Timestamp) -> int:
        """Hourly steps of the plan issued at ``issue``: ``horizon_steps``, or to the end of the prices
        published by then when ``to_published`` and they reach further."""
        n = self.cfg.horizon_steps
        if self.cfg.to_published:
            last = self.prices.index[self.pub <= issue].max()
            if pd.notna(last):
                n = max(n, int((last + self.cfg.step - issue) / self.cfg.step))
        return n

    def demand(self, issue: pd.Timestamp, steps: int | None = None) -> pd.DataFrame:
        """p10/p50/p90 on the plan's steps ``issue .. issue + horizon``; the first step (lead 0, the hour
        now starting) is the last measured hour (persistence), as the model forecasts from lead 1."""
        from gridpipeline.forecast.deployed import predict, train

        cfg = self.cfg
        refit = pd.Timedelta(days=cfg.refit_days)
        if self.anchor is not None and issue >= self.anchor:
            as_of = self.anchor + ((issue - self.anchor) // refit) * refit
            due = as_of != self._trained
        else:
            as_of, due = issue, self._trained is None or issue - self._trained >= refit
        if due:
            t0 = time.perf_counter()
            self._bundle = train(self.hist, self.observed, self.gcfg, as_of, self.world.timezone,
                                 _country(self.world), prophet=False)
            self._trained = as_of
            self.train_seconds += time.perf_counter() - t0
            self.refits += 1
            self.progress(f"demand model trained as of {as_of:%Y-%m-%d} "
                          f"(hold-out MAPE {self._bundle['report'].get('holdout_mape', float('nan')):.2f} %)")
        wx = self.weather(issue, steps)
        fc = predict(self._bundle, self.hist, wx[["temperature"]], issue, observed=self.observed)
        times = pd.date_range(issue, periods=steps or cfg.horizon_steps, freq=cfg.step)
        fc = fc[fc.series == "system"].set_index("valid_time")[["p10", "p50", "p90"]].astype(float)
        out = fc[~fc.index.duplicated()].reindex(times)
        last = self.hist.system.reindex([issue - cfg.step]).iloc[0]
        out.iloc[0] = last if np.isfinite(last) else np.nan
        return out.ffill().bfill().reset_index(drop=True)

    def _run(self, issue: pd.Timestamp):
        """The newest weather run available at ``issue`` (weather features and its generation forecast
        over all its valid times, computed once per run)."""
        from gridpipeline.common.renewables import hub_wind_speed
        from gridpipeline.common.weather_files import run_inits
        from gridpipeline.forecast.generation import generation_forecast

        init = run_inits(issue - pd.Timedelta(hours=24), issue)[-1]
        if init not in self._runs:
            run = self.ws.forecast_run(init)
            wx = pd.DataFrame({"ghi": run.ghi.to_numpy(float), "temperature": run.temp_air.to_numpy(float),
                               "wind_speed_10m": run.wind_speed.to_numpy(float)}, index=run.index)
            wx["wind_speed_hub"] = hub_wind_speed(wx.wind_speed_10m.to_numpy())
            gen, _, _ = generation_forecast(wx, self.loc["latitude"], self.loc["longitude"], self.capacity, {})
            self._runs = {init: (wx, {k: part.set_index("valid_time") for k, part in gen.groupby("kind")})}
        return self._runs[init]

    def weather(self, issue: pd.Timestamp, steps: int | None = None) -> pd.DataFrame:
        """The newest run's weather on the plan's steps."""
        times = pd.date_range(issue, periods=steps or self.cfg.horizon_steps, freq=self.cfg.step)
        return self._run(issue)[0].reindex(times).interpolate(limit_direction="both")

    def renewables(self, issue: pd.Timestamp, start: pd.Timestamp | None = None,
                   steps: int | None = None) -> dict[str, pd.DataFrame]:
        """PV and wind p10/p50/p90 per kind on the plan's steps (from ``start``, default ``issue``), from
        the newest run at ``issue``."""
        times = pd.date_range(issue if start is None else start, periods=steps or self.cfg.horizon_steps,
                              freq=self.cfg.step)
        return {k: g[["p10", "p50", "p90", "capacity_mw"]].reindex(times).fillna(0.0).reset_index(drop=True)
                for k, g in self._run(issue)[1].items()}

    def terminal_value(self, issue: pd.Timestamp, steps: int, fleet: pd.DataFrame,
                       strict: bool = False) -> float | None:
        """The plan's terminal value (``cfg.terminal``): None for the horizon's median, else the hindsight
        value at the horizon's end from the prices published by ``issue`` (before it with ``strict``: a bid
        at the gate, when the day it bids is published at that very instant) (storage.value.TerminalValues,
        as the live loop)."""
        if self.cfg.terminal != "hindsight":
            return None
        from gridpipeline.storage.value import DAYS, TerminalValues

        if getattr(self, "_tv", None) is None:
            self._tv = TerminalValues(fleet)
        seen = self.pub < issue if strict else self.pub <= issue
        known = self.prices[seen & (self.prices.index > issue - pd.Timedelta(days=DAYS + 1))]
        return self._tv.at(known, issue + steps * self.cfg.step)

    def price_curve(self, issue: pd.Timestamp, steps: int | None = None) -> pd.DataFrame:
        from gridpipeline.sources.prices import price_curve

        known = self.prices[(self.pub <= issue) & (self.prices.index > issue - pd.Timedelta(days=200))]
        end = issue + (steps or self.cfg.horizon_steps) * self.cfg.step
        return price_curve(known, issue, end, self.cfg.step, self.price_model).reset_index(drop=True)


    def inputs(self, issue: pd.Timestamp, fleet: pd.DataFrame) -> dict:
        """Everything a plan issued at ``issue`` takes from the forecasts: its steps, demand, renewables
        (from ``issue``, and from the hour before: the limit rows' base moves from there) and prices. The
        terminal value is the planner's (:meth:`terminal_value`), kept out of the forecast cache."""
        steps = self.steps(issue)
        return {"steps": steps, "demand": self.demand(issue, steps), "renew": self.renewables(issue, steps=steps),
                "renew_then": self.renewables(issue, start=issue - self.cfg.step, steps=steps),
                "prices": self.price_curve(issue, steps)}


class ForecastCache:
    """Every issue's forecasts (:meth:`Forecaster.inputs`) on disk, so that another run with the same
    forecasts (a study of the planner: the same world, prices and forecast settings) reads them instead
    of computing them again: the daily LEAR fits and the demand model are about half of a year's run.
    Off by default (``gridpipeline dispatch backtest --forecast-cache DIR``).

    The entries sit under a key of everything the forecasts depend on: the world's truth and network,
    the prices, the fleet, the configuration's fields and the source of the code
    that makes them (``SOURCES`` and the forecaster); any change is a new key, never a stale read.
    The demand model refits on a fixed grid from the period's start (``Forecaster.anchor``), so a run
    that reads some issues and computes the others makes the same forecasts as one that computes all."""

    SOURCES = ("gridpipeline/forecast", "gridpipeline/world", "gridpipeline/common", "gridpipeline/sources",
               "gridpipeline/settings.py")
    FIELDS = ("start", "end", "step", "horizon_steps", "to_published", "price_model", "train_days",
              "refit_days", "noise", "sub_steps")

    def __init__(self, root, world, truth: Truth, prices: pd.Series, fleet: pd.DataFrame, cfg: BacktestConfig):
        import hashlib
        import inspect
        from pathlib import Path

        h = hashlib.sha256()
        pkg = Path(__file__).resolve().parents[1]
        for rel in self.SOURCES:
            path = pkg / rel
            for f in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
                h.update(str(f.relative_to(pkg)).encode() + f.read_bytes())
        for obj in (Forecaster, ForecastCache, measured_demand, publication_times, _country):
            h.update(inspect.getsource(obj).encode())
        h.update(str({k: getattr(cfg, k) for k in self.FIELDS}).encode())
        h.update(pd.util.hash_pandas_object(prices).to_numpy().tobytes())
        h.update(pd.util.hash_pandas_object(fleet.astype(str), index=False).to_numpy().tobytes())
        for k in ("bus", "line", "trafo", "load", "sgen", "storage"):
            h.update(pd.util.hash_pandas_object(world.net[k].astype(str)).to_numpy().tobytes())
        for a in (truth.load_p, truth.sgen_p):
            h.update(np.ascontiguousarray(a).tobytes())
        self.key = h.hexdigest()[:20]
        self.dir = Path(root) / self.key
        self.dir.mkdir(parents=True, exist_ok=True)
        self.hits = self.misses = 0

    def _file(self, issue: pd.Timestamp):
        return self.dir / f"{pd.Timestamp(issue).tz_convert('UTC'):%Y%m%dT%H%M}.pkl"

    def get(self, issue: pd.Timestamp) -> dict | None:
        import pickle

        f = self._file(issue)
        try:
            out = pickle.loads(f.read_bytes())
        except (OSError, EOFError, pickle.UnpicklingError):
            out = None
        self.hits += out is not None
        self.misses += out is None
        return out

    def put(self, issue: pd.Timestamp, value: dict) -> None:
        import os
        import pickle

        f = self._file(issue)
        tmp = f.with_name(f"{f.name}.{os.getpid()}.tmp")
        tmp.write_bytes(pickle.dumps(value))
        tmp.replace(f)


def _country(world) -> str | None:
    from gridpipeline.settings import get_settings

    return get_settings().forecast_country


# --------------------------------------------------------------------------------------- the grid
def no_action_flows(world, truth: Truth):
    """Every step's AC power flow without batteries and curtailment: ``(values, converged)`` with
    ``values`` a name -> (T,) map in the limit rows' names ("line 7 loading", "bus 3 voltage")."""
    from gridpipeline.world.model import Injections
    from gridpipeline.world.powerflow import TruthEngine

    net = world.net
    T = len(truth.times)
    inj = Injections(times=truth.times, load_index=net.load.index.to_numpy(), sgen_index=net.sgen.index.to_numpy(),
                     storage_index=net.storage.index.to_numpy(), load_p_mw=truth.load_p, load_q_mvar=truth.load_q,
                     sgen_p_mw=truth.sgen_p, sgen_q_mvar=truth.sgen_q, storage_p_mw=np.zeros((T, len(net.storage))),
                     storage_q_mvar=np.zeros((T, len(net.storage))))
    s = TruthEngine(net).solve(inj)
    values = {f"line {i} loading": s.line_loading_percent[:, k] for k, i in enumerate(net.line.index)}
    values |= {f"trafo {i} loading": s.trafo_loading_percent[:, k] for k, i in enumerate(net.trafo.index)}
    values |= {f"bus {i} voltage": s.bus_u_pu[:, k] for k, i in enumerate(net.bus.index)}
    return values, s.converged


def rows_at(world, truth: Truth, t: int, fleet: pd.DataFrame, gens: pd.DataFrame, cfg: BacktestConfig):
    """The limit rows linearised around hour ``t`` of the truth with no battery power (the state a
    utility estimates, with the plan's batteries taken out, as live: ``cycle.limit_rows_for``), without
    the inverters' reactive power (the backtest executes active power only)."""
    import copy
    from dataclasses import replace

    from gridpipeline.grid.network import to_pgm
    from gridpipeline.storage.limits import limit_rows

    n = copy.deepcopy(world.net)
    n.load["p_mw"], n.load["q_mvar"], n.load["scaling"] = truth.load_p[t], truth.load_q[t], 1.0
    n.sgen["p_mw"], n.sgen["q_mvar"], n.sgen["scaling"] = truth.sgen_p[t], truth.sgen_q[t], 1.0
    n.storage["p_mw"] = 0.0
    if "q_mvar" in n.storage:
        n.storage["q_mvar"] = 0.0
    m = to_pgm(n)
    rows = limit_rows(m, m.with_switch_states(None), n, batteries=list(fleet.storage_index),
                      generators=list(gens.sgen_index), zone_of_load=pd.Series("all", index=n.load.index),
                      loading_limit=cfg.loading_limit - cfg.margin_loading, v_min=cfg.v_min + cfg.margin_pu,
                      v_max=cfg.v_max - cfg.margin_pu)
    return replace(rows, s_generator_q=None)


def in_band(base: np.ndarray, rows) -> np.ndarray:
    """The rows' no-action base held within the (tightened) limits: a base past a limit is put at it,
    so the plan may not push it further and is not made to pull it back. The gate's rule, create or
    worsen, which is also what the violations count. (Live keeps a row already past its limit as it
    is and relieves it with priced slack; planned on an hour-old state and a forecast, that relief
    chases overvoltages the forecast expects, at a cost: 2018-03-15..25 earned 32 % of perfect
    foresight this way and -43 % the other.)"""
    up, lo = rows.upper, rows.lower
    return np.clip(base, lo, up)


def _at(rows, values: dict, t) -> np.ndarray:
    """The rows' no-action values at step(s) ``t`` from the power flows."""
    return np.stack([values[n][t] for n in rows.names], axis=-1)


class InstantGate:
    """The live validation gate (``storage.gate``: no setpoint is sent that creates or worsens a violation;
    the setpoints scaled back by one common factor, 0 a rejection) on the backtest's instants.

    Live, every 5-minute plan's first step is gated on the state estimated 30 s before. The backtest knows
    the world at ``truth.sub`` instants per hour (every 15 minutes), so each quarter of the executed hour
    is gated on the world's state at the instant before it (15 minutes old; the hour's first quarter on
    the last instant of the hour before): an AC power flow (power-grid-model, batched) of that instant
    with the setpoints at a factor, against the same instant without them. The quarter gets the largest
    factor (full, or the largest of ``1/grid .. (grid-1)/grid`` below which every factor passes, the
    bisection's resolution) at which no branch and no bus is past its limit and worse than without the
    setpoints (by the count's tolerances: 0.1 % loading, 0.0005 pu). The limits are the plans' (the
    margins inside 100 % and 0.95-1.05 pu): a state 15 minutes old is older than live's. The hour
    executes the mean of its quarters' factors. Base case only (live also checks the ten most severe
    N-1 cases; the count is of the base case). The setpoints are the batteries' power and the
    curtailment, as live."""

    def __init__(self, world, truth: Truth, curt_pos: np.ndarray, cfg: BacktestConfig, grid: int = 32):
        from gridpipeline.world.powerflow import TruthEngine

        if truth.fine is None:
            raise ValueError("the gate needs the truth's instants (world_truth keeps them)")
        self.eng, self.truth, self.pos, self.cfg = TruthEngine(world.net), truth, np.asarray(curt_pos), cfg
        self.grid = np.arange(1, grid) / grid
        self.hours = self.scaled = self.rejected = 0
        self.held_mwh, self.seconds = 0.0, 0.0
        self.cases: list[dict] = []

    @staticmethod
    def caps(avail: np.ndarray, curtail: np.ndarray, factor) -> np.ndarray:
        """The inverter caps (MW, inf = none) of curtailing ``factor`` x ``curtail`` MW of the planned output
        ``avail``: what the backtest executes, and what the gate checks."""
        c = np.multiply.outer(np.atleast_1d(factor), curtail)
        return np.where(c > 1e-6, np.clip(avail - c, 0, None), np.inf)

    def _excess(self, k: np.ndarray, power: np.ndarray, avail: np.ndarray, curtail: np.ndarray, scales: np.ndarray):
        """At each (instant, factor) pair of ``k`` x ``scales`` (instants outer): the branches' and buses'
        excess beyond the limits, and whether the flow converged."""
        from gridpipeline.world.model import Injections

        f, cfg = self.truth.fine, self.cfg
        idx, sc = np.repeat(k, len(scales)), np.tile(scales, len(k))
        sp, sq = f.sgen_p_mw[idx].copy(), f.sgen_q_mvar[idx].copy()
        o = sp[:, self.pos]
        made = np.minimum(o, self.caps(avail, curtail, sc))              # the inverter caps, at the factor
        ratio = np.divide(made, o, out=np.ones_like(o), where=np.abs(o) > 1e-12)
        sp[:, self.pos], sq[:, self.pos] = made, sq[:, self.pos] * ratio
        stor = -sc[:, None] * power[None, :]                            # storage p consumes: discharge < 0
        inj = Injections(times=f.times[idx], load_index=f.load_index, sgen_index=f.sgen_index,
                         storage_index=f.storage_index, load_p_mw=f.load_p_mw[idx], load_q_mvar=f.load_q_mvar[idx],
                         sgen_p_mw=sp, sgen_q_mvar=sq, storage_p_mw=stor, storage_q_mvar=np.zeros_like(stor))
        s = self.eng.solve(inj)
        load = np.nan_to_num(np.hstack([s.line_loading_percent, s.trafo_loading_percent]))
        v = np.nan_to_num(s.bus_u_pu, nan=1.0)
        lo = np.clip(load - (cfg.loading_limit - cfg.margin_loading), 0, None)
        vo = np.clip(v - (cfg.v_max - cfg.margin_pu), 0, None) + np.clip(cfg.v_min + cfg.margin_pu - v, 0, None)
        shape = (len(k), len(scales))
        return lo.reshape(*shape, -1), vo.reshape(*shape, -1), s.converged.reshape(shape)

    @staticmethod
    def _passes(before, after) -> np.ndarray:
        """(instants, factors) -> passes: nothing past its limit and worse than without the setpoints."""
        (lo0, vo0, ok0), (lo, vo, ok) = before, after
        worse = ((lo > 0) & (lo - lo0 > WORSE_LOADING)).any(axis=-1) | ((vo > 0) & (vo - vo0 > WORSE_PU)).any(axis=-1)
        return ~worse & (ok | ~ok0)

    def factor(self, t: int, power: np.ndarray, avail: np.ndarray, curtail: np.ndarray) -> float:
        """The executed hour ``t``'s factor on the planned battery power (MW, + discharge) and curtailment
        (MW per curtailable generator of its planned output ``avail``, :meth:`caps`): the mean of its
        quarters' gate factors."""
        a = time.perf_counter()
        if not np.any(np.abs(power) > 1e-9) and not np.any(curtail > 1e-6):
            return 1.0
        sub = self.truth.sub
        k = np.clip(np.arange(t * sub - 1, (t + 1) * sub - 1), 0, None)  # the instant before each quarter
        self.hours += 1
        lo, vo, ok = self._excess(k, power, avail, curtail, np.array([0.0, 1.0]))
        before = (lo[:, :1], vo[:, :1], ok[:, :1])
        full = self._passes(before, (lo[:, 1:], vo[:, 1:], ok[:, 1:]))[:, 0]
        f = np.ones(len(k))
        if not full.all():
            bad = np.flatnonzero(~full)
            lo2, vo2, ok2 = self._excess(k[bad], power, avail, curtail, self.grid)
            ok_grid = self._passes((lo[bad, :1], vo[bad, :1], ok[bad, :1]), (lo2, vo2, ok2))
            # the largest factor below which every factor passes (a monotone bisection's answer)
            n = np.cumprod(ok_grid, axis=1).sum(axis=1)
            f[bad] = np.where(n > 0, self.grid[np.maximum(n - 1, 0)], 0.0)
            self.scaled += 1
            self.rejected += int(f.mean() == 0)
            if len(self.cases) < 20:
                self.cases.append({"hour": str(self.truth.times[t]), "factor": round(float(f.mean()), 4),
                                   "quarters": [round(float(x), 4) for x in f], "fleet_mw": round(float(power.sum()), 3)})
        fac = float(f.mean())
        self.held_mwh += float(np.abs(power).sum() * (1 - fac) * self.cfg.step / pd.Timedelta(hours=1))
        self.seconds += time.perf_counter() - a
        return fac

    def summary(self) -> dict:
        return {"hours_checked": self.hours, "hours_scaled_back": self.scaled, "hours_rejected": self.rejected,
                "battery_mwh_held_back": round(self.held_mwh, 3), "seconds": round(self.seconds, 1),
                "first_scaled": self.cases}


# --------------------------------------------------------------------------------------- the run
def _plan_inputs(times, units, gens, demand, renew, prices, other_mw, import_max, export_max):
    from gridpipeline.storage.planner import PlanInputs

    return PlanInputs(times=times, units=units, generators=gens, demand=demand, renewables=renew, prices=prices,
                      other_generation_mw=other_mw, import_max_mw=import_max, export_max_mw=export_max)


def _units(fleet: pd.DataFrame, energy: np.ndarray) -> pd.DataFrame:
    u = fleet.copy()
    u["energy_mwh"], u["available"], u["reason"] = energy, True, ""
    return u


def fleet_and_grid(world) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """(the fleet with each battery's feeder, the curtailable generators with their zone, the substation's
    import limit: the HV/MV transformers' rating, 1e4 MW without one), as every backtest plans with them."""
    from gridpipeline.storage.planner import fleet_table, generator_table

    net = world.net
    fleet = fleet_table(net)
    fleet["feeder"] = world.zones.reindex(fleet.bus).to_numpy()
    gens = generator_table(net)
    gens["zone"] = world.zones.reindex(gens.bus).to_numpy()
    tr = net.trafo
    rating = float(pd.to_numeric(tr.sn_mva[tr.vn_hv_kv >= 60], errors="coerce").sum()) if len(tr) else 0.0
    return fleet, gens, rating or 1e4


@contextmanager
def stdout_to_stderr():
    """HiGHS prints its banner on stdout: while a backtest runs, stdout goes to stderr, so a command's
    stdout stays one JSON line."""
    import os
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def run_backtest(world, prices: pd.Series, cfg: BacktestConfig = BacktestConfig(),
                 progress: Callable[[str], None] | None = None) -> dict:
    """The four strategies over ``cfg.start .. cfg.end``; returns the figures (see the module docstring)."""
    from gridpipeline.storage.aggregate import FleetPlanner
    from gridpipeline.storage.planner import gen_availability, solve_plan
    from gridpipeline.storage.value import DAYS, TerminalValues

    say = progress or (lambda m: None)
    t_all = time.perf_counter()
    oracles = {o.strip() for o in cfg.oracle.split(",") if o.strip()}
    if oracles - {"prices", "terminal", "netload"}:
        raise ValueError(f"unknown oracle {sorted(oracles - {'prices', 'terminal', 'netload'})}: prices, terminal, netload")
    net = world.net
    fleet, gens, imp_max = fleet_and_grid(world)
    exp_max = imp_max
    dt_h = cfg.step / pd.Timedelta(hours=1)

    say("the world's truth over the period")
    truth = world_truth(world, cfg.start, cfg.end, cfg.step, cfg.sub_steps)
    T = len(truth.times)
    if cfg.grid_limits:
        say("AC power flow of every hour without batteries (the limit rows' base)")
        flows0, _ = no_action_flows(world, truth)
    pos = pd.Index(net.sgen.index).get_indexer(gens.sgen_index)      # curtailable columns of sgen
    other = np.setdiff1d(np.arange(len(net.sgen)), pos)
    avail_true = truth.sgen_p[:, pos]
    other_true = truth.sgen_p[:, other].sum(axis=1)
    price = prices.reindex(truth.times)
    if price.isna().any():
        say(f"{int(price.isna().sum())} hours without a price: filled from the hour before")
    price = price.ffill().bfill().to_numpy(float)
    deg = fleet.degradation.to_numpy(float)
    cap = fleet.capacity_mwh.to_numpy(float)
    e0 = cfg.soc0 * cap
    end_value = float(np.median(price))

    def account(state: FleetState, caps: np.ndarray | None) -> None:
        """The cost of every executed step of ``state`` against the truth."""
        out = avail_true if caps is None else np.minimum(avail_true, caps)
        power = np.asarray(state.power) if state.power else np.zeros((T, len(fleet)))
        net_mw = truth.demand - other_true - out.sum(axis=1) - power.sum(axis=1)
        curtailed = (avail_true - out).sum(axis=1)
        state.costs = [hour_cost(net_mw[t], price[t], power[t], deg, curtailed[t], dt_h) for t in range(T)]
        state.gen_out = out

    results: dict[str, FleetState] = {}
    # ---- no batteries
    none = FleetState(fleet, e0.copy(), dt_h)
    for _ in range(T):
        none.execute(np.zeros(len(fleet)))
    account(none, None)
    results["none"] = none

    # ---- the rule: the day's median (Europe/Berlin days, as the prices are published)
    rule = FleetState(fleet, e0.copy(), dt_h)
    day = truth.times.tz_convert("Europe/Berlin").normalize()
    med = pd.Series(price, index=truth.times).groupby(day).transform("median").to_numpy()
    pmax = fleet.p_max_mw.to_numpy(float)
    for t in range(T):
        rule.execute(pmax if price[t] > med[t] else -pmax if price[t] < med[t] else np.zeros(len(fleet)))
    account(rule, None)
    results["rule"] = rule

    # ---- perfect foresight: one LP over the whole period
    say(f"perfect foresight: one LP over {T} steps")
    t0 = time.perf_counter()
    kinds = {k: (gens.kind == k).to_numpy() for k in ("pv", "wind")}
    renew_true = {k: pd.DataFrame({q: avail_true[:, m].sum(axis=1) for q in ("p10", "p50", "p90")}
                                  ).assign(capacity_mw=float(gens.rating_mw[m].sum()))
                  for k, m in kinds.items() if m.any()}
    d_true = pd.DataFrame({q: truth.demand for q in ("p10", "p50", "p90")})
    pr_true = pd.DataFrame({"price": price, "source": "known"})
    pin = _plan_inputs(truth.times, _units(fleet, e0), gens, d_true, renew_true, pr_true, 0.0, imp_max, exp_max)
    pin.other_generation_mw = 0.0
    pin.demand = d_true.sub(other_true, axis=0)  # the other generators' true output, known in hindsight
    pmax_all = fleet.p_max_mw.to_numpy(float)
    rows_pf = None
    if cfg.grid_limits:
        # one set of sensitivities (around the first hour), and every hour's true no-action values as the
        # base: the rows any hour's flows could take to a limit with the fleet at full power
        rows0 = rows_at(world, truth, 0, fleet, gens, cfg)
        base_all = _at(rows0, flows0, slice(None))
        effect = np.abs(rows0.s_battery) @ pmax_all
        keep = (np.nanmax(base_all, axis=0) + effect >= rows0.upper) | (np.nanmin(base_all, axis=0) - effect <= rows0.lower)
        rows_pf = rows0.select(keep)
        pin.limits, pin.limit_base = rows_pf, in_band(np.nan_to_num(base_all[:, keep], nan=1.0), rows_pf)
    pf_out = solve_plan(pin, FleetPlanner())
    perfect_seconds = time.perf_counter() - t0

    def true_frame(values: np.ndarray, t: int, n: int) -> pd.DataFrame:
        """``n`` steps of a true series from ``t`` as a forecast with no spread (held past the period's end)."""
        v = pd.Series(np.asarray(values, float)[t:t + n]).reindex(range(n)).ffill().to_numpy()
        return pd.DataFrame({q: v for q in ("p10", "p50", "p90")})

    pf_value = None
    if "terminal" in oracles:  # what a MWh held at the start of each hour was worth to perfect foresight
        du = np.asarray(pf_out.result.duals["energy_balance"], float)
        cap_c = np.asarray(pf_out.agg_x.e_max, float)
        pf_value = du @ (cap_c / cap_c.sum())
    perfect = FleetState(fleet, e0.copy(), dt_h)
    pf_caps = np.full_like(avail_true, np.inf)
    g_av = pf_out.x.gen_avail
    for t in range(T):
        perfect.execute(pf_out.power[t])
        c = pf_out.curtail[t]
        pf_caps[t] = np.where(c > 1e-6, np.clip(g_av[t] - c, 0, None), np.inf)
    account(perfect, pf_caps)
    results["perfect"] = perfect

    # ---- the rolling dispatch
    say(f"rolling dispatch: {T} hourly plans")
    hist_start = cfg.start - pd.Timedelta(days=cfg.train_days + 9)
    hist = measured_demand(world, hist_start, cfg.start, cfg.step, cfg.noise, cfg.sub_steps)
    # the measured history grows hour by hour with what the SCADA measured (the truth plus its noise)
    live = pd.Series(truth.demand * (1 + cfg.noise * np.random.default_rng(SEED + 1).standard_normal(T)),
                     index=truth.times, name="system")
    fc = Forecaster(world, pd.concat([hist, live]), prices, gens, cfg, say)
    fc.anchor = cfg.start
    cache = ForecastCache(cfg.forecast_cache, world, truth, prices, fleet, cfg) if cfg.forecast_cache else None
    mpc = FleetState(fleet, e0.copy(), dt_h)
    planner = FleetPlanner()
    gate = InstantGate(world, truth, pos, cfg) if cfg.gate else None
    mpc_caps = np.full_like(avail_true, np.inf)
    times_h = cfg.horizon_steps
    t_fc = t_lp = 0.0
    plan_seconds, plan_steps = [], []
    flags: dict[str, int] = {}
    rows_day, rows_from, rows_built, rows_k = None, None, 0, []
    tv, shares = TerminalValues(fleet, share_days=cfg.share_days), []

    def plan_end_value(t: int, issue: pd.Timestamp, steps: int) -> tuple[float | None, float | None]:
        """The plan's terminal value (``cfg.terminal``), as live: none (the horizon's median), the
        hindsight value, or that times the share the fleet realised over its own executed record
        (storage/value.py); and the share."""
        if cfg.terminal == "median":
            return None, None
        known = prices[(fc.pub <= issue) & (prices.index > issue - pd.Timedelta(days=max(DAYS, cfg.share_days) + 1))]
        end = issue + steps * cfg.step
        if cfg.terminal == "hindsight":
            return tv.at(known, end), None
        k = min(t, cfg.share_days * int(pd.Timedelta(days=1) / cfg.step))
        record = pd.Series([float(np.sum(x)) for x in mpc.power[t - k:t]], index=truth.times[t - k:t], dtype=float)
        return tv.learnt(known, end, record)

    for t, issue in enumerate(truth.times):
        a = time.perf_counter()
        got = cache.get(issue) if cache is not None else None
        if got is None:
            got = fc.inputs(issue, fleet)
            if cache is not None:
                cache.put(issue, got)
        times_h, demand, renew, prices_h = got["steps"], got["demand"], got["renew"], got["prices"]
        if "prices" in oracles:
            prices_h = pd.DataFrame({"price": price[t:t + times_h], "source": "known"}).reindex(range(times_h)).ffill()
        if "netload" in oracles:  # as perfect foresight: the true demand net of the other generators, true output
            demand = true_frame(truth.demand - other_true, t, times_h)
            renew = {k: true_frame(avail_true[:, m].sum(axis=1), t, times_h).assign(capacity_mw=float(gens.rating_mw[m].sum()))
                     for k, m in kinds.items() if m.any()}
            got = {**got, "renew_then": {k: true_frame(avail_true[:, m].sum(axis=1), max(t - 1, 0), times_h).assign(
                capacity_mw=float(gens.rating_mw[m].sum())) for k, m in kinds.items() if m.any()}}
        b = time.perf_counter()
        other_now = float(other_true[t - 1]) if t else float(other_true[0])  # the last measured hour, held
        if "netload" in oracles:
            other_now = 0.0  # in the true net demand above
        steps = pd.date_range(issue, periods=times_h, freq=cfg.step)
        p = _plan_inputs(steps, _units(fleet, mpc.energy), gens, demand, renew, prices_h, other_now, imp_max, exp_max)
        p.terminal_value, share = plan_end_value(t, issue, times_h)
        if pf_value is not None:
            p.terminal_value = float(pf_value[min(t + times_h, T - 1)])
        if share is not None:
            shares.append(share)
        if cfg.grid_limits:
            # as live: rows around the state estimated now (the last hour, batteries out), their base moved
            # by the forecasts' change; the sensitivities refreshed once a day (live: every plan)
            last = max(t - 1, 0)
            if rows_day is None or (issue - rows_from) >= pd.Timedelta(days=1):
                rows_day, rows_from = rows_at(world, truth, last, fleet, gens, cfg).relevant(pmax_all), issue
                rows_built += 1
            p.limits = replace(rows_day, now=np.nan_to_num(_at(rows_day, flows0, last), nan=1.0))
            d50 = demand.p50.to_numpy(float)
            p.zone_delta_mw = (d50 - d50[0])[:, None]
            # generation: the same run's change from the hour of the state (the last hour) on, so the
            # executed hour's base moves with the sun too (live: the state is 30 s old, not an hour)
            g50 = gen_availability(p)
            g_then = gen_availability(replace(p, renewables=got["renew_then"]))[:1] if t else g50[:1]
            p.limit_base = in_band(p.limits.base(p.zone_delta_mw, g50 - g_then), p.limits)
            rows_k.append(len(rows_day.names))
        out = solve_plan(p, planner)
        c = time.perf_counter()
        t_fc += b - a
        t_lp += c - b
        plan_seconds.append(c - a)
        plan_steps.append(times_h)
        for lab in prices_h.source.iloc[:1]:
            flags[f"price_{lab}"] = flags.get(f"price_{lab}", 0) + 1
        # as live: nothing is sent before the gate passes it, or scales it back
        g = gate.factor(t, out.power[0], out.x.gen_avail[0], out.curtail[0]) if gate is not None else 1.0
        mpc.execute(g * out.power[0])
        mpc_caps[t] = InstantGate.caps(out.x.gen_avail[0], out.curtail[0], g)[0]
        if t and t % 500 == 0:
            say(f"rolling dispatch: {t}/{T} hours, {np.mean(plan_seconds[-500:]):.3f} s per plan")
    account(mpc, mpc_caps)
    results["mpc"] = mpc

    # ---- the energy left at the end, valued alike for every strategy
    totals = {}
    for k, s in results.items():
        totals[k] = float(np.sum(s.costs)) - float(np.sum(s.energy - e0)) * end_value

    # ---- AC power flow of every executed hour
    say("AC power flow of every executed hour (4 strategies)")
    viol, base_hours, pf_seconds, viol_details = violations(world, truth, results, pos, cfg)
    saving = {k: totals["none"] - totals[k] for k in ("perfect", "mpc", "rule")}
    return {
        "perfect_foresight_savings": round(saving["perfect"], 2),
        "mpc_savings": round(saving["mpc"], 2),
        "rule_savings": round(saving["rule"], 2),
        "mpc_share_of_perfect": round(saving["mpc"] / saving["perfect"], 4) if saving["perfect"] > 0 else None,
        "violations": int(viol["mpc"]),
        "violations_by_strategy": {k: int(v) for k, v in viol.items()},
        "grid_over_limit_hours_without_batteries": int(base_hours),
        "violation_hours": {k: v for k, v in viol_details.items() if k in ("mpc", "perfect")},
        "cost_eur": {k: round(v, 2) for k, v in totals.items()},
        "period": f"{cfg.start:%Y-%m-%d} .. {cfg.end:%Y-%m-%d}", "hours": T, "step": str(cfg.step),
        "horizon_steps": cfg.horizon_steps, "to_published": cfg.to_published,
        "plan_steps_min_mean_max": [int(np.min(plan_steps)), round(float(np.mean(plan_steps)), 1),
                                    int(np.max(plan_steps))], "batteries": len(fleet),
        "fleet_mwh": round(float(cap.sum()), 3), "fleet_mw": round(float(pmax.sum()), 3),
        "curtailable_generators": len(gens),
        "curtailed_mwh": {k: round(float((avail_true - s.gen_out).sum() * dt_h), 3) for k, s in results.items()},
        "throughput_mwh": {k: round(float(np.abs(np.asarray(s.power)).sum() * dt_h), 3) for k, s in results.items()},
        "demand_model_refits": fc.refits, "demand_train_seconds": round(fc.train_seconds, 1),
        "forecasts_from_cache": cache.hits if cache is not None else 0,
        "plan_seconds_p50": round(float(np.median(plan_seconds)), 4),
        "forecast_seconds": round(t_fc, 1), "lp_seconds": round(t_lp, 1),
        "perfect_foresight_seconds": round(perfect_seconds, 1), "power_flow_seconds": round(pf_seconds, 1),
        "first_step_prices": flags, "seconds": round(time.perf_counter() - t_all, 1),
        "terminal": cfg.terminal, "oracle": sorted(oracles) or None,
        "realised_share_min_mean_max": ([round(float(np.min(shares)), 3), round(float(np.mean(shares)), 3),
                                         round(float(np.max(shares)), 3)] if shares else None),
        "gate": gate.summary() if gate is not None else None,
        "limit_rows": {"perfect": len(rows_pf.names) if rows_pf is not None else 0,
                       "mpc_median": int(np.median(rows_k)) if rows_k else 0, "mpc_linearisations": rows_built},
        "notes": [
            ("hourly steps (the prices are hourly), re-planned every hour, first hour executed; "
             + (f"{cfg.horizon_steps} steps or to the end of the published prices if further"
                if cfg.to_published else f"{cfg.horizon_steps}-step horizon")),
            (f"demand: the deployed global model without Prophet, refit every {cfg.refit_days} days on "
             f"{cfg.train_days} days of measured history (live: weekly, with Prophet)"),
            "renewables: the weather service's runs through the deployed physics with its fixed band; no nowcast",
            ("limit rows as live (transformers, feeder heads, branches above 60 %, bus voltages), around the last "
             "hour's state without batteries, their base moved by the forecasts; sensitivities re-linearised once "
             "a day (live: every plan), kept 0.005 pu and 2 % loading inside the limits; no reactive power (active power only is executed); perfect "
             "foresight: the same rows, one set of sensitivities and every hour's true no-action flows as the base"
             if cfg.grid_limits else "no limit rows in the LP"),
            ("the live gate on every executed hour of the rolling dispatch: each quarter gated by an AC power flow "
             "of the world's state 15 minutes before it (live: 30 s), base case only (live: and ten N-1 cases), "
             "at the plans' limits; the hour executes the mean factor" if cfg.gate else "no gate"),
            "energy left at the end valued at the period's median price for every strategy",
        ],
    }


def violations(world, truth: Truth, results: dict, curt_pos: np.ndarray, cfg: BacktestConfig):
    """Per strategy, the executed hours with an element over its limit that the batteries made so or
    made worse than without them; and the hours over a limit without batteries."""
    from gridpipeline.world.model import Injections
    from gridpipeline.world.powerflow import TruthEngine

    t0 = time.perf_counter()
    net = world.net
    eng = TruthEngine(net)
    T = len(truth.times)

    def flows(state):
        sg = truth.sgen_p.copy()
        sg[:, curt_pos] = state.gen_out
        scale = np.divide(sg, truth.sgen_p, out=np.ones_like(sg), where=np.abs(truth.sgen_p) > 1e-12)
        power = np.asarray(state.power) if state.power else np.zeros((T, len(net.storage)))
        inj = Injections(times=truth.times, load_index=net.load.index.to_numpy(), sgen_index=net.sgen.index.to_numpy(),
                         storage_index=net.storage.index.to_numpy(), load_p_mw=truth.load_p, load_q_mvar=truth.load_q,
                         sgen_p_mw=sg, sgen_q_mvar=truth.sgen_q * scale, storage_p_mw=-power,
                         storage_q_mvar=np.zeros_like(power))
        s = eng.solve(inj)
        load = np.hstack([s.line_loading_percent, s.trafo_loading_percent])
        return load, s.bus_u_pu, s.converged

    base_load, base_v, base_ok = flows(results["none"])
    over = lambda ld, v: (np.nan_to_num(ld) > cfg.loading_limit, (np.nan_to_num(v, nan=1.0) < cfg.v_min)
                          | (np.nan_to_num(v, nan=1.0) > cfg.v_max))
    bl, bv = over(base_load, base_v)
    base_hours = int((bl.any(axis=1) | bv.any(axis=1) | ~base_ok).sum())
    out, details = {}, {}
    for k, s in results.items():
        if k == "none":
            out[k] = 0
            continue
        ld, v, ok = flows(s)
        ol, ov = over(ld, v)
        worse_l = ol & (np.nan_to_num(ld) > np.nan_to_num(base_load) + WORSE_LOADING)
        dv = np.abs(np.nan_to_num(v, nan=1.0) - 1.0) - np.abs(np.nan_to_num(base_v, nan=1.0) - 1.0)
        worse_v = ov & (dv > WORSE_PU)
        hit = worse_l.any(axis=1) | worse_v.any(axis=1) | (~ok & base_ok)
        out[k] = int(hit.sum())
        for t in np.flatnonzero(hit)[:20]:  # what each one was: the worst element, without and with batteries
            if worse_l[t].any():
                j = int(np.argmax(np.where(worse_l[t], ld[t] - base_load[t], -np.inf)))
                el = (f"line {net.line.index[j]}" if j < len(net.line) else f"trafo {net.trafo.index[j - len(net.line)]}",
                      round(float(base_load[t, j]), 2), round(float(ld[t, j]), 2), "% loading")
            elif worse_v[t].any():
                j = int(np.argmax(np.where(worse_v[t], dv[t], -np.inf)))
                el = (f"bus {net.bus.index[j]}", round(float(base_v[t, j]), 4), round(float(v[t, j]), 4), "pu")
            else:
                el = ("-", None, None, "power flow does not converge")
            details.setdefault(k, []).append({"hour": str(truth.times[t]), "element": el[0], "without": el[1],
                                              "with": el[2], "unit": el[3],
                                              "fleet_mw": round(float(np.asarray(s.power)[t].sum()), 3)})
    return out, base_hours, time.perf_counter() - t0, details


__all__ = ["BacktestConfig", "FleetState", "ForecastCache", "InstantGate", "Truth", "fleet_and_grid", "publication_times", "run_backtest", "stdout_to_stderr", "violations", "world_truth"]
