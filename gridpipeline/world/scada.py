"""SCADA simulator: true grid states by power flow, measured with noise, exported like a historian.

For every 5-minute window the simulator

1. takes the world's injections (profiles) at each sampling instant and solves the power flow
   (power-grid-model batch) for the true state;
2. reads each sensor's true value off that state and adds Gaussian noise with the sensor's sigma;
3. applies the configured faults (gaps, communication loss of a substation, stuck values, spikes,
   drift, late and out-of-order arrival, duplicates, wrong units, corrupt files, invalid rows);
4. writes one file per source (RTU) per export interval into the landing zone, Parquet or CSV,
   with the file's mtime set to its simulated arrival time;
5. keeps the ground truth (noise-free values and a log of every injected fault) in its own DuckDB
   file, never in the pipeline's store.

With a ``weather_dir`` it also runs the world's weather provider
(:class:`~gridpipeline.world.weather_service.WeatherService`): station observations up to the
simulated now and every NWP run available by then, so the pipeline's weather is only ever what a
provider would have delivered at that time.

Everything random is drawn from generators keyed by (seed, window, purpose), so a run is
deterministic by seed and independent of how a period is chunked or whether it runs live.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from gridpipeline.common import landing as lz
from gridpipeline.world.weather_service import WeatherService

log = logging.getLogger(__name__)

EPOCH = datetime(2020, 1, 1)
#: NWP runs are published from this long before a simulated period, so its first instant has a run.
WEATHER_LOOKBACK = timedelta(days=1)
ANALOG = ("v_mag", "p_inj", "q_inj", "p_branch", "q_branch", "i_branch", "frequency")
# Units a misconfigured exporter sends instead of the canonical one, with the factor applied.
WRONG_UNITS = {"MW": ("kW", 1e3), "Mvar": ("kvar", 1e3), "kV": ("V", 1e3), "A": ("kA", 1e-3), "kWh": ("MWh", 1e-3)}
FAULT_KINDS = (
    "gap", "comm_loss", "stuck", "spike", "drift", "late", "out_of_order", "duplicate", "wrong_units",
    "corrupt_file", "missing_column", "nan_value", "infinite_value", "unknown_sensor", "impossible_value",
    "future_timestamp", "old_timestamp", "outside_partition", "bad_type",
)


@dataclass(frozen=True)
class FaultConfig:
    """Rates of every fault the simulator can inject. ``FaultConfig.none()`` gives clean data."""

    gap_rate: float = 0.002            # per reading: not delivered
    comm_loss_rate: float = 0.002      # per source and window: the whole substation is silent
    stuck_rate: float = 0.001          # per analog sensor and window: value frozen for the window
    spike_rate: float = 0.0005         # per analog reading: isolated excursion
    drift_fraction: float = 0.01       # share of voltage sensors that drift (sawtooth, 6 h cycle)
    drift_pu_per_hour: float = 0.02
    late_rate: float = 0.01            # per file: arrives long after its window (re-run needed)
    late_delay_s: float = 420.0
    out_of_order_rate: float = 0.01    # per file: rows shuffled, delivered after later files
    duplicate_rate: float = 0.01       # per file: delivered twice
    wrong_units_rate: float = 0.05     # per source: exports kW/kvar/V/kA instead of MW/Mvar/kV/A
    corrupt_rate: float = 0.002        # per file: truncated (unreadable) or a column renamed
    invalid_row_rate: float = 0.0005   # per row: NaN, inf, unknown id, impossible value, bad time/type
    csv_share: float = 0.25            # share of sources that export CSV rather than Parquet

    @classmethod
    def none(cls) -> FaultConfig:
        zero = {f: 0.0 for f in cls.__dataclass_fields__ if f not in ("drift_pu_per_hour", "late_delay_s", "csv_share")}
        return cls(**zero)


@dataclass
class SimulationStats:
    windows: int = 0
    files: int = 0
    readings: int = 0
    seconds: float = 0.0
    faults: dict[str, int] = field(default_factory=dict)


def _u01(*key) -> float:
    """Uniform [0,1) from a hash of ``key``: per-entity decisions that must not depend on order."""
    h = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64


def _rng(seed: int, window: datetime, purpose: str) -> np.random.Generator:
    k = int((window - EPOCH).total_seconds() // 300)
    p = int.from_bytes(hashlib.blake2b(purpose.encode(), digest_size=4).digest(), "little")
    return np.random.default_rng([seed, k, p])


@dataclass
class _PendingFile:
    arrival: datetime
    path: Path
    table: pa.Table
    fmt: str
    corrupt: bool = False

    def __lt__(self, other: _PendingFile) -> bool:
        return (self.arrival, str(self.path)) < (other.arrival, str(other.path))


class ScadaSimulator:
    """Simulates the sensors of ``registry`` on ``world`` and feeds ``landing``."""

    def __init__(
        self,
        world,
        registry: pd.DataFrame,
        landing: Path,
        faults: FaultConfig | None = None,
        seed: int = 0,
        export_interval_s: int = 30,
        truth_path: Path | None = None,
        switch_events: list[tuple[datetime, int, bool]] | None = None,
        weather_dir: Path | None = None,
        prices_dir: Path | None = None,
        events_path: Path | None = None,
        flex_dir: Path | None = None,
        customers_path: Path | None = None,
    ):
        from gridpipeline.world.powerflow import TruthEngine

        self.world = world
        self.reg = registry.reset_index(drop=True)
        self.landing = Path(landing)
        self.faults = faults or FaultConfig()
        self.seed = seed
        self.export_s = export_interval_s
        self.truth_path = Path(truth_path) if truth_path else None
        self.switch_events = sorted(switch_events or [])
        self.weather = WeatherService(world, weather_dir, seed) if weather_dir is not None else None
        if prices_dir is not None:
            from gridpipeline.world.price_exchange import PriceExchange

            self.exchange = PriceExchange(prices_dir)
        else:
            self.exchange = None
        #: the DER owners' offers on the local flexibility market (world.flexowners), when posted
        self.flex_owners = None
        if flex_dir is not None:
            from gridpipeline.world.flexowners import FlexOwners

            self.flex_owners = FlexOwners(world, flex_dir, customers_path, seed)
        self.engine = TruthEngine(world.net)
        from gridpipeline.world.fleet import FieldFleet

        self.fleet = FieldFleet(world.net)
        self.gateways: list = []
        from gridpipeline.world.clpu import ColdLoadPickup

        self.clpu = ColdLoadPickup(world.net)
        #: the demand-response customers (world.ven.VenField), when the live world serves OpenADR
        self.vens = None
        self._dr_taken = None
        #: weather events injected on top of the world's weather: (start, end, factor, sgen positions)
        self.fronts: list[tuple[datetime, datetime, float, np.ndarray, float]] = []
        #: load surges (a heat wave on a feeder, a factory's start-up): (start, end, factor, load positions, ramp)
        self.surges: list[tuple[datetime, datetime, float, np.ndarray, float]] = []
        #: a JSON list of weather events for the running world ({"start", "minutes", "depth", "kind",
        #: "ramp_minutes"}), re-read when it changes: how a study injects cloud fronts into a live world
        self.events_path = Path(events_path) if events_path else None
        self._events_mtime: int | None = None
        self.step_s = int(np.gcd.reduce(self.reg.interval_s.to_numpy().astype(int)))
        if 300 % self.step_s or 300 % self.export_s or self.export_s % self.step_s:
            raise ValueError("sampling and export intervals must divide 300 s and each other")
        self.stats = SimulationStats()
        self._energy_cache: dict[int, np.ndarray] = {}
        self._annual_cache: dict[int, np.ndarray] = {}
        self._prepare_sources()

    # ------------------------------------------------------------------ setup
    def _prepare_sources(self) -> None:
        reg, f = self.reg, self.faults
        self.sources = sorted(reg.source.unique())
        self.source_cols = {s: np.flatnonzero(reg.source.to_numpy() == s) for s in self.sources}
        self.source_fmt = {s: ("csv" if _u01(self.seed, "fmt", s) < f.csv_share else "parquet") for s in self.sources}
        self.wrong_units = {s for s in self.sources if _u01(self.seed, "units", s) < f.wrong_units_rate}
        kinds = reg.kind.to_numpy()
        self.analog = np.isin(kinds, ANALOG)
        self.drifting = (kinds == "v_mag") & np.array(
            [_u01(self.seed, "drift", int(i)) < f.drift_fraction for i in reg.sensor_id]
        )
        self.max_id = int(reg.sensor_id.max())

    # ------------------------------------------------------------------ truth
    def _switch_state(self, times: pd.DatetimeIndex) -> np.ndarray | None:
        events = self.switch_events  # one snapshot (the outstation swaps in a new list)
        if not events:
            return None
        base = self.world.net.switch.closed.to_numpy(dtype=bool)
        out = np.tile(base, (len(times), 1))
        pos = {idx: k for k, idx in enumerate(self.world.net.switch.index)}
        naive = times.tz_convert("UTC").tz_localize(None)
        for when, sw, closed in events:
            out[naive >= pd.Timestamp(when), pos[sw]] = closed
        return out

    def true_values(self, window: datetime) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray]:
        """Sampling instants of ``window``, the (time x sensor) true values, and the switch states."""
        times = pd.date_range(window, periods=300 // self.step_s, freq=f"{self.step_s}s", tz="UTC")
        inj = self._fronts(times, self.world.injections_at(times))
        if self.vens is not None:  # the demand-response customers' answer (world.ven)
            after = self.vens.apply(times, inj)
            taken = inj.load_p_mw - after.load_p_mw
            cols = np.flatnonzero(np.abs(taken).max(axis=0) > 1e-9) if len(taken) else np.array([], int)
            self._dr_taken = (times, cols, taken[:, cols])
            inj = after
        else:
            self._dr_taken = None
        if self.flex_owners is not None:  # the DER owners deliver what the flexibility market awarded them
            inj = self.flex_owners.apply(times, inj)
        inj = self.cold_load_pickup(times, inj)
        inj = self.fleet.apply(times, inj)
        switches = self._switch_state(times)
        states = self.engine.solve(inj, switch_closed=switches)
        reg = self.reg
        out = np.full((len(times), len(reg)), np.nan)
        et, kind, term = reg.element_type.to_numpy(), reg.kind.to_numpy(), reg.terminal.to_numpy()
        eid = reg.element_id.to_numpy()

        def put(mask, arr, index):
            cols = np.flatnonzero(mask)
            if len(cols):
                pos = pd.Index(index).get_indexer(eid[cols])
                out[:, cols] = arr[:, pos]

        s = states
        put(kind == "v_mag", s.bus_u_kv, s.bus_index)
        for table, p, q in (("load", s.load_p_mw, s.load_q_mvar), ("sgen", s.sgen_p_mw, s.sgen_q_mvar),
                            ("storage", s.storage_p_mw, s.storage_q_mvar)):
            idx = getattr(s, f"{table}_index")
            put((et == table) & (kind == "p_inj"), p, idx)
            put((et == table) & (kind == "q_inj"), q, idx)
        for table, ends in (("line", ("from", "to")), ("trafo", ("hv", "lv"))):
            idx = getattr(s, f"{table}_index")
            for end in ends:
                m = (et == table) & (term == end)
                put(m & (kind == "p_branch"), getattr(s, f"{table}_p_{end}_mw"), idx)
                put(m & (kind == "q_branch"), getattr(s, f"{table}_q_{end}_mvar"), idx)
                put(m & (kind == "i_branch"), getattr(s, f"{table}_i_{end}_ka") * 1000.0, idx)
        sw_mask = kind == "switch_status"
        if sw_mask.any():
            closed = switches if switches is not None else np.tile(
                self.world.net.switch.closed.to_numpy(dtype=bool), (len(times), 1))
            put(sw_mask, closed.astype(float), self.world.net.switch.index)
        if (kind == "soc").any():
            put(kind == "soc", self.fleet.soc_percent(times), s.storage_index)
        if (kind == "frequency").any():
            put(kind == "frequency", np.repeat(self._frequency(times)[:, None], len(self.world.net.ext_grid), 1),
                self.world.net.ext_grid.index)
        if (kind == "energy").any():
            put(kind == "energy", self._energy(times), self.world.net.load.index)
        # Sensors sample on their own interval: blank the instants they skip.
        secs = ((times.tz_convert("UTC").tz_localize(None) - EPOCH).total_seconds()).to_numpy().astype(np.int64)
        out[(secs[:, None] % reg.interval_s.to_numpy()[None, :]) != 0] = np.nan
        return times, out, switches

    def cold_load_pickup(self, times: pd.DatetimeIndex, inj):
        """``inj`` with the loads re-energised after an outage drawing more (``world.clpu``)."""
        f = self.clpu.factor(times, self.switch_events)
        return inj if f is None else replace(inj, load_p_mw=inj.load_p_mw * f)

    def add_front(self, start: datetime, minutes: float = 60.0, depth: float = 0.6, kind: str = "pv",
                  ramp_minutes: float = 10.0) -> None:
        """A cloud front (``kind="pv"``: output falls by ``depth`` over ``ramp_minutes``, stays down for
        ``minutes``, recovers as fast) or a wind cut-out (``kind="wind"``, ``depth=1``), from ``start``."""
        self.fronts = [*self.fronts, self._front(start, minutes, depth, kind, ramp_minutes)]

    def _front(self, start: datetime, minutes: float, depth: float, kind: str, ramp_minutes: float) -> tuple:
        types = self.world.net.sgen["type"].astype(str)
        m = types.str.startswith(("PV", "lv_RES")) if kind == "pv" else types.str.startswith("Wind")
        return (start, start + timedelta(minutes=minutes + 2 * ramp_minutes), float(depth),
                np.flatnonzero(m.to_numpy()), float(ramp_minutes))

    def _surge(self, start: datetime, minutes: float, factor: float, line: int | None, loads, ramp_minutes: float
               ) -> tuple:
        """A load surge: the loads fed through feeder line ``line`` (or the ``loads`` listed) draw
        ``factor`` times their load, ramping over ``ramp_minutes``, for ``minutes``."""
        net = self.world.net
        if loads is None:
            if line is None:
                raise ValueError("a load surge names a feeder 'line' or its 'loads'")
            loads = self._loads_behind(int(line))
        pos = np.array([net.load.index.get_loc(int(i)) for i in loads], dtype=int)
        return (start, start + timedelta(minutes=minutes + 2 * ramp_minutes), float(factor), pos, float(ramp_minutes))

    def _loads_behind(self, line: int) -> list[int]:
        """The loads a line feeds: those cut off from every external grid without it."""
        import networkx as nx
        import pandapower.topology as top

        net = self.world.net
        g = top.create_nxgraph(net, respect_switches=True)
        a, b = int(net.line.from_bus.at[line]), int(net.line.to_bus.at[line])
        if g.has_edge(a, b):
            g.remove_edges_from([(a, b, k) for k in list(g[a][b]) if k == ("line", line)] or [(a, b)])
        fed = set()
        for s_ in net.ext_grid.bus.astype(int):
            fed |= nx.node_connected_component(g, int(s_))
        return [int(i) for i, bus in net.load.bus.items() if int(bus) not in fed]

    def _read_events(self) -> None:
        from gridpipeline.world.events import FRONT_KINDS, SURGE_KINDS, read_events

        events, self._events_mtime = read_events(self.events_path, self._events_mtime)
        if events is None:
            return
        fronts, surges = [], []  # built aside and swapped in whole: the outstation's thread reads them too
        for e in events:
            kind = e.get("kind", "pv")
            if kind not in FRONT_KINDS + SURGE_KINDS:
                continue  # the outstation's events (world.outstation)
            try:
                if kind in SURGE_KINDS:
                    surges.append(self._surge(datetime.fromisoformat(e["start"]), float(e.get("minutes", 30)),
                                              float(e.get("factor", 2.0)), e.get("line"), e.get("loads"),
                                              float(e.get("ramp_minutes", 2))))
                    continue
                fronts.append(self._front(datetime.fromisoformat(e["start"]), float(e.get("minutes", 60)),
                                          float(e.get("depth", 0.6)), e.get("kind", "pv"),
                                          float(e.get("ramp_minutes", 10))))
            except (KeyError, TypeError, ValueError, IndexError):
                log.warning("world: events file entry not understood, skipped: %s", e)
        self.fronts = fronts
        self.surges = surges

    def _fronts(self, times: pd.DatetimeIndex, inj):
        if self.events_path is not None:
            self._read_events()
        fronts, surges = self.fronts, self.surges
        if not fronts and not surges:
            return inj
        naive = times.tz_convert("UTC").tz_localize(None)

        def share(start, end, ramp):  # 0 outside, ramps to 1
            a = ((naive - pd.Timestamp(start)).total_seconds().to_numpy() / 60.0)
            b = ((pd.Timestamp(end) - naive).total_seconds().to_numpy() / 60.0)
            return np.clip(np.minimum(a, b) / max(ramp, 1e-9), 0.0, 1.0)

        sgen = inj.sgen_p_mw.copy()
        for start, end, depth, cols, ramp in fronts:
            sgen[:, cols] *= (1.0 - depth * share(start, end, ramp))[:, None]
        if not surges:
            return replace(inj, sgen_p_mw=sgen)
        load, q = inj.load_p_mw.copy(), inj.load_q_mvar.copy()
        for start, end, factor, cols, ramp in surges:
            f = (1.0 + (factor - 1.0) * share(start, end, ramp))[:, None]
            load[:, cols] *= f
            q[:, cols] *= f
        return replace(inj, sgen_p_mw=sgen, load_p_mw=load, load_q_mvar=q)

    def _frequency(self, times: pd.DatetimeIndex) -> np.ndarray:
        t = (times.tz_convert("UTC").tz_localize(None) - EPOCH).total_seconds().to_numpy()
        ph = _u01(self.seed, "freq") * 2 * math.pi
        return 50.0 + 0.018 * np.sin(2 * math.pi * t / 613.0 + ph) + 0.009 * np.sin(2 * math.pi * t / 97.0 + 2 * ph)

    def _energy(self, times: pd.DatetimeIndex) -> np.ndarray:
        """Cumulative kWh registers: the energy of every whole year since 2020 plus this year's so far.

        The world's calendar maps each year onto the profile year a little differently (weekdays,
        leap days), so years differ in energy. A register therefore starts a year at the sum of the
        earlier years' (noise-free) energies, and this year's integral, which includes the load noise,
        is scaled to end exactly at this year's noise-free energy (a change of about 1e-5): the
        register runs on continuously across New Year and never steps back."""
        naive = times.tz_convert("UTC").tz_localize(None)
        out = np.empty((len(times), len(self.world.net.load)))
        for year in np.unique(naive.year):
            year = int(year)
            cum = self._year_energy(year)
            total = self._annual_energy(year)
            scale = np.divide(total, cum[-1], out=np.ones_like(total), where=cum[-1] > 0)
            base = sum((self._annual_energy(y) for y in range(EPOCH.year, year)), np.zeros_like(total))
            sel = naive.year == year
            pos = (naive[sel] - pd.Timestamp(f"{year}-01-01")).total_seconds().to_numpy() / 900.0
            steps = np.arange(cum.shape[0])
            for j in range(cum.shape[1]):
                out[sel, j] = base[j] + scale[j] * np.interp(pos, steps, cum[:, j])
        return np.round(out, 2)

    @staticmethod
    def _year_grid(year: int) -> pd.DatetimeIndex:
        return pd.date_range(f"{year}-01-01", f"{year + 1}-01-01", freq="15min", tz="UTC")

    def _year_energy(self, year: int) -> np.ndarray:
        """(steps+1, loads) cumulative kWh over ``year`` on the 15-minute profile grid, load noise included."""
        if year not in self._energy_cache:
            p = self.world.injections_at(self._year_grid(year)).load_p_mw * 1000.0  # kW
            self._energy_cache[year] = np.vstack(
                [np.zeros((1, p.shape[1])), np.cumsum((p[1:] + p[:-1]) / 2 * 0.25, axis=0)])
        return self._energy_cache[year]

    def _annual_energy(self, year: int) -> np.ndarray:
        """kWh of every load over ``year`` without the load noise (trapezoids on the 15-minute grid)."""
        if year not in self._annual_cache:
            p = self.world.expected_load_p_mw(self._year_grid(year)) * 1000.0  # kW
            self._annual_cache[year] = ((p[1:] + p[:-1]) / 2 * 0.25).sum(axis=0)
        return self._annual_cache[year]

    # ------------------------------------------------------------------ faults
    def _measure(self, window: datetime, truth: np.ndarray, times: pd.DatetimeIndex, log: list) -> tuple[np.ndarray, np.ndarray]:
        f, reg = self.faults, self.reg
        rng = _rng(self.seed, window, "noise")
        sigma = reg.sigma.to_numpy()
        meas = truth + rng.standard_normal(truth.shape) * sigma[None, :]
        kinds = reg.kind.to_numpy()
        meas[:, kinds == "energy"] = truth[:, kinds == "energy"]  # registers count, they do not jitter
        # Instruments report magnitudes and bounded states: noise never makes them negative.
        mag = np.isin(kinds, ("v_mag", "i_branch"))
        meas[:, mag] = np.abs(meas[:, mag])
        meas[:, kinds == "soc"] = np.clip(meas[:, kinds == "soc"], 0.0, 100.0)
        present = ~np.isnan(truth)
        ts0 = times[0].to_pydatetime().replace(tzinfo=None)
        ids = reg.sensor_id.to_numpy()

        # Drift: sawtooth offset on a few voltage sensors, recalibrated every 6 hours.
        if self.drifting.any():
            hours = ((times.tz_convert("UTC").tz_localize(None) - EPOCH).total_seconds().to_numpy() % 21600) / 3600
            nominal = reg.nominal.to_numpy()
            off = f.drift_pu_per_hour * hours[:, None] * nominal[None, self.drifting]
            meas[:, self.drifting] += off
            for j in np.flatnonzero(self.drifting):
                log.append(("drift", None, int(ids[j]), ts0, None, f"offset up to {off[:, list(np.flatnonzero(self.drifting)).index(j)].max():.4f}"))
        # Stuck: an analog sensor repeats its first value of the window for the whole window.
        r = _rng(self.seed, window, "stuck").random(len(reg))
        for j in np.flatnonzero((r < f.stuck_rate) & self.analog):
            col = meas[:, j]
            first = col[~np.isnan(col)][:1]
            if len(first):
                meas[~np.isnan(col), j] = first[0]
                log.append(("stuck", None, int(ids[j]), ts0, None, f"value {first[0]:.6g}"))
        # Spikes: isolated excursions on analog readings (not the first/last of the window).
        rs = _rng(self.seed, window, "spike").random(meas.shape)
        rs[[0, -1], :] = 1.0
        spikes = (rs < f.spike_rate) & present & self.analog[None, :]
        if spikes.any():
            ti, sj = np.nonzero(spikes)
            # A spike is a gross transient: a full rating off (30 % of nominal for voltages).
            rel = np.where(kinds[sj] == "v_mag", 0.3, 1.0)
            mag = np.maximum(rel * reg.nominal.to_numpy()[sj], 30 * sigma[sj])
            meas[ti, sj] += np.where(_rng(self.seed, window, "spike-sign").random(len(ti)) < 0.5, -1, 1) * mag
            for a, b in zip(ti, sj):
                log.append(("spike", None, int(ids[b]), times[a].to_pydatetime().replace(tzinfo=None), None, ""))
        # Gaps: single readings that never arrive.
        gaps = (_rng(self.seed, window, "gap").random(meas.shape) < f.gap_rate) & present
        for a, b in zip(*np.nonzero(gaps)):
            log.append(("gap", None, int(ids[b]), times[a].to_pydatetime().replace(tzinfo=None), None, ""))
        return meas, present & ~gaps

    # ------------------------------------------------------------------ export
    def simulate_window(self, window: datetime) -> list[_PendingFile]:
        """Files (with arrival times) for ``window``; ground truth goes to the truth store."""
        f = self.faults
        log: list[tuple] = []
        times, truth, _ = self.true_values(window)
        meas, emit = self._measure(window, truth, times, log)
        reg = self.reg
        units = reg.unit.to_numpy()
        ids = reg.sensor_id.to_numpy()
        wdir = lz.window_dir(self.landing, window)
        per_export = self.export_s // self.step_s
        window_end = window + lz.WINDOW
        comm = _rng(self.seed, window, "comm").random(len(self.sources)) < f.comm_loss_rate
        rfile = _rng(self.seed, window, "files")
        rrow = _rng(self.seed, window, "rows")
        files: list[_PendingFile] = []
        for si, src in enumerate(self.sources):
            cols = self.source_cols[src]
            if comm[si]:
                log.append(("comm_loss", src, None, window, None, f"{len(cols)} sensors silent for the window"))
                continue
            fmt = self.source_fmt[src]
            unit_col = units[cols].astype(object)
            vals = meas[:, cols]
            if src in self.wrong_units:
                conv = np.array([WRONG_UNITS.get(u, (u, 1.0)) for u in unit_col], dtype=object)
                unit_col = conv[:, 0]
                vals = vals * conv[:, 1].astype(float)[None, :]
                log.append(("wrong_units", src, None, window, None, "exports kW/kvar/V/kA"))
            for k in range(0, len(times), per_export):
                t_slice = slice(k, k + per_export)
                m = emit[t_slice][:, cols]
                ti, cj = np.nonzero(m)
                if not len(ti):
                    continue
                export_start = times[k].to_pydatetime().replace(tzinfo=None)
                export_end = export_start + timedelta(seconds=self.export_s)
                ts = times[t_slice].tz_convert("UTC").tz_localize(None).to_numpy()[ti]
                table = {
                    "sensor_id": ids[cols][cj].astype(np.int32),
                    "ts": ts.astype("datetime64[ms]"),
                    "value": vals[t_slice][ti, cj],
                    "unit": unit_col[cj],
                }
                draws = rfile.random(6)
                arrival = export_end + timedelta(seconds=1 + 4 * draws[0])
                path = wdir / lz.file_name(src, export_start, fmt)
                corrupt = False
                if draws[1] < f.late_rate:
                    arrival = window_end + timedelta(seconds=f.late_delay_s + 60 * draws[0])
                    log.append(("late", src, None, export_start, str(path), f"arrives {arrival:%H:%M:%S}"))
                elif draws[2] < f.out_of_order_rate:
                    perm = rrow.permutation(len(ti))
                    table = {c: v[perm] for c, v in table.items()}
                    arrival = window_end + timedelta(seconds=90 + 30 * draws[0])
                    log.append(("out_of_order", src, None, export_start, str(path), "shuffled, after later files"))
                self._invalid_rows(table, fmt, export_start, window, rrow, log, str(path))
                t = self._to_arrow(table, fmt)
                if draws[3] < f.corrupt_rate:
                    if draws[4] < 0.5:
                        corrupt = True
                        log.append(("corrupt_file", src, None, export_start, str(path), "truncated"))
                    else:
                        t = t.rename_columns(["sensor_id", "ts", "val", "unit"])
                        log.append(("missing_column", src, None, export_start, str(path), "value column renamed"))
                files.append(_PendingFile(arrival, path, t, fmt, corrupt))
                if draws[5] < f.duplicate_rate:
                    dup = path.with_name(lz.file_name(src, export_start, fmt, tag="resend"))
                    files.append(_PendingFile(arrival + timedelta(seconds=15), dup, t, fmt, corrupt))
                    log.append(("duplicate", src, None, export_start, str(dup), "file delivered twice"))
        self._write_truth(window, times, truth, log)
        for k, *_ in log:
            self.stats.faults[k] = self.stats.faults.get(k, 0) + 1
        self.stats.windows += 1
        return files

    def _invalid_rows(self, table: dict, fmt: str, export_start: datetime, window: datetime,
                      rng: np.random.Generator, log: list, path: str) -> None:
        n = len(table["value"])
        hit = np.flatnonzero(rng.random(n) < self.faults.invalid_row_rate)
        if not len(hit):
            return
        kinds = ["nan_value", "infinite_value", "unknown_sensor", "impossible_value", "future_timestamp",
                 "old_timestamp", "outside_partition"] + (["bad_type"] if fmt == "csv" else [])
        table["value"] = table["value"].astype(object) if fmt == "csv" else table["value"].copy()
        table["sensor_id"] = table["sensor_id"].copy()
        table["ts"] = table["ts"].copy()
        for i in hit:
            kind = kinds[int(rng.integers(len(kinds)))]
            if kind == "nan_value":
                table["value"][i] = float("nan")
            elif kind == "infinite_value":
                table["value"][i] = float("inf")
            elif kind == "unknown_sensor":
                table["sensor_id"][i] = self.max_id + 1000 + int(rng.integers(1000))
            elif kind == "impossible_value":
                table["value"][i] = -1e9
            elif kind == "future_timestamp":      # clock error: years ahead, whatever "now" is
                table["ts"][i] = np.datetime64(export_start + timedelta(days=3650), "ms")
            elif kind == "old_timestamp":         # RTU clock reset to its epoch
                table["ts"][i] = np.datetime64(datetime(2000, 1, 1), "ms")
            elif kind == "outside_partition":
                table["ts"][i] = np.datetime64(window - timedelta(minutes=30), "ms")
            else:
                table["value"][i] = "n/a"
            log.append((kind, None, int(table["sensor_id"][i]), export_start, path, f"row {i + 1}"))

    @staticmethod
    def _to_arrow(table: dict, fmt: str) -> pa.Table:
        if fmt == "csv":
            ts = pd.to_datetime(table["ts"]).strftime("%Y-%m-%dT%H:%M:%S.%fZ").str.replace(".000000Z", "Z")
            vals = [("nan" if isinstance(v, float) and math.isnan(v) else repr(float(v)) if isinstance(v, (float, np.floating)) else str(v))
                    for v in table["value"]] if table["value"].dtype == object else table["value"]
            return pa.table({"sensor_id": pa.array(table["sensor_id"]), "ts": pa.array(np.asarray(ts), pa.string()),
                             "value": pa.array(vals), "unit": pa.array(table["unit"], pa.string())})
        return pa.table({
            "sensor_id": pa.array(table["sensor_id"], pa.int32()),
            "ts": pa.array(table["ts"], pa.timestamp("ms", tz="UTC")),
            "value": pa.array(table["value"], pa.float64()),
            "unit": pa.array(table["unit"], pa.string()),
        })

    @staticmethod
    def write(pf: _PendingFile) -> None:
        pf.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = pf.path.with_name(pf.path.name + ".tmp")
        if pf.fmt == "csv":
            pacsv.write_csv(pf.table, tmp)
        else:
            pq.write_table(pf.table, tmp, compression="zstd")
        if pf.corrupt:
            data = tmp.read_bytes()
            tmp.write_bytes(data[: max(8, len(data) // 3)] + b"\x00garbage")
        stamp = pf.arrival.replace(tzinfo=UTC).timestamp()
        os.utime(tmp, (stamp, stamp))
        os.replace(tmp, pf.path)
        os.utime(pf.path, (stamp, stamp))

    # ------------------------------------------------------------------ truth store
    def _write_truth(self, window: datetime, times: pd.DatetimeIndex, truth: np.ndarray, log: list) -> None:
        if self.truth_path is None:
            return
        ti, sj = np.nonzero(~np.isnan(truth))
        readings = pa.table({  # noqa: F841 - read by DuckDB by name
            "sensor_id": pa.array(self.reg.sensor_id.to_numpy()[sj].astype(np.int32)),
            "ts": pa.array(times.tz_convert("UTC").tz_localize(None).to_numpy()[ti].astype("datetime64[us]")),
            "true_value": pa.array(truth[ti, sj]),
        })
        faults = pa.table({  # noqa: F841 - read by DuckDB by name
            "kind": pa.array([r[0] for r in log], pa.string()),
            "source": pa.array([r[1] for r in log], pa.string()),
            "sensor_id": pa.array([r[2] for r in log], pa.int32()),
            "ts": pa.array([r[3] for r in log], pa.timestamp("us")),
            "file_path": pa.array([r[4] for r in log], pa.string()),
            "detail": pa.array([r[5] for r in log], pa.string()),
        })
        con = self._truth_con()
        if self._dr_taken is not None and len(self._dr_taken[1]):
            t, cols, taken = self._dr_taken
            ti, cj = np.nonzero(np.ones_like(taken, bool))
            dr = pa.table({  # noqa: F841 - read by DuckDB by name
                "ts": pa.array(t.tz_convert("UTC").tz_localize(None).to_numpy()[ti].astype("datetime64[us]")),
                "load_id": pa.array(self.world.net.load.index.to_numpy()[cols][cj].astype(np.int32)),
                "mw_taken_off": pa.array(taken[ti, cj]),
            })
            con.execute("DELETE FROM truth_dr WHERE ts >= ? AND ts < ?", [window, window + lz.WINDOW])
            con.execute("INSERT INTO truth_dr SELECT * FROM dr")
        con.execute("DELETE FROM truth_readings WHERE ts >= ? AND ts < ?", [window, window + lz.WINDOW])
        con.execute("DELETE FROM fault_log WHERE window_start = ?", [window])
        con.execute("INSERT INTO truth_readings SELECT * FROM readings")
        con.execute("INSERT INTO fault_log SELECT ?, * FROM faults", [window])

    def _truth_con(self) -> duckdb.DuckDBPyConnection:
        if getattr(self, "_tcon", None) is None:
            self.truth_path.parent.mkdir(parents=True, exist_ok=True)
            self._tcon = duckdb.connect(str(self.truth_path))
            self._tcon.execute("CREATE TABLE IF NOT EXISTS truth_readings (sensor_id INTEGER, ts TIMESTAMP, true_value DOUBLE)")
            self._tcon.execute("CREATE TABLE IF NOT EXISTS truth_dr (ts TIMESTAMP, load_id INTEGER, mw_taken_off DOUBLE)")
            self._tcon.execute(
                "CREATE TABLE IF NOT EXISTS fault_log (window_start TIMESTAMP, kind VARCHAR, source VARCHAR, "
                "sensor_id INTEGER, ts TIMESTAMP, file_path VARCHAR, detail VARCHAR)")
        return self._tcon

    def close(self) -> None:
        for gw in self.gateways:
            gw.stop()
        self.gateways.clear()
        if getattr(self, "_tcon", None) is not None:
            self._tcon.close()
            self._tcon = None

    # ------------------------------------------------------------------ field devices
    def serve_field(self, host: str = "127.0.0.1", port: int = 15020) -> dict:
        """Serve every battery's BMS and every curtailable inverter over Modbus TCP, 247 units per
        gateway, on the ports of ``common.field_map``; returns the plan."""
        from gridpipeline.common.field_map import INVERTER_OFFSET, chunks
        from gridpipeline.world.bms import BmsGateway

        plan = {"host": host, "batteries": [], "inverters": []}
        for offset, units, key in ((0, self.fleet.batteries, "batteries"),
                                   (INVERTER_OFFSET, self.fleet.inverters, "inverters")):
            for g, part in enumerate(chunks(units)):
                gw = BmsGateway(part, port=port + offset + g if port else 0)
                gw.start()
                self.gateways.append(gw)
                plan[key].append({"port": gw.port, "units": len(part)})
        return plan

    # ------------------------------------------------------------------ drivers
    def publish_weather(self, start: datetime, now: datetime) -> None:
        """The weather provider's files as of ``now`` for a period that began at ``start``: observations
        in ``[start, now)`` and every NWP run available at ``now`` from a day before ``start`` on."""
        if self.exchange is not None:  # the power exchange's day-ahead files, as published by now
            self.exchange.publish(start - WEATHER_LOOKBACK, now)
        if self.flex_owners is not None:  # the DER owners' offers for today and, after noon, tomorrow
            self.flex_owners.publish(now, now)
        if self.weather is None:
            return
        self.weather.publish_observations(start, now)
        self.weather.publish_forecasts(now, since=start - WEATHER_LOOKBACK)

    def run(self, start: datetime, end: datetime) -> SimulationStats:
        """Simulate ``[start, end)`` as fast as possible (mtimes carry the simulated arrival), with the
        weather provider's files as of ``end``."""
        t0 = time.perf_counter()
        self.publish_weather(start, end)
        for w in lz.windows(start, end):
            for pf in self.simulate_window(w):
                self.write(pf)
                self.stats.files += 1
                self.stats.readings += pf.table.num_rows
        self.stats.seconds += time.perf_counter() - t0
        return self.stats

    def run_live(self, start: datetime, speed: float = 1.0, stop: threading.Event | None = None,
                 until: datetime | None = None, on_window=None) -> SimulationStats:
        """Feed the landing zone on a simulated clock that starts at ``start`` and runs ``speed``
        times faster than real time until it has caught up with now, then in real time. A file
        appears in the landing zone only once the clock passes its arrival time; the weather
        provider's files are brought up to the clock each time it passes a window start."""
        stop = stop or threading.Event()
        wall0 = time.monotonic()
        pending: list[_PendingFile] = []
        next_window = lz.floor_window(start)

        def clock() -> datetime:
            now = datetime.now(UTC).replace(tzinfo=None)
            return min(start + timedelta(seconds=(time.monotonic() - wall0) * speed), now)

        while not stop.is_set():
            now = clock()
            # done when every window before ``until`` is simulated and written (a fast clock can pass
            # ``until`` before the first window was simulated)
            if until is not None and now >= until and not pending and next_window >= until:
                self.publish_weather(start, until)
                break
            while next_window <= now and (until is None or next_window < until):
                for pf in self.simulate_window(next_window):
                    heapq.heappush(pending, pf)
                self.publish_weather(start, next_window)
                if on_window:
                    on_window(next_window)
                next_window += lz.WINDOW
            self.fleet.tick(now)
            while pending and pending[0].arrival <= now:
                pf = heapq.heappop(pending)
                self.write(pf)
                self.stats.files += 1
                self.stats.readings += pf.table.num_rows
            stop.wait(0.2 if speed > 1 else 0.5)
        return self.stats


def faults_from_string(spec: str | None, base: FaultConfig | None = None) -> FaultConfig:
    """``"none"``, ``"default"`` or ``"gap_rate=0.01,late_rate=0.1"`` on top of the defaults."""
    base = base or FaultConfig()
    if not spec or spec == "default":
        return base
    if spec == "none":
        return FaultConfig.none()
    kw = {}
    for part in spec.split(","):
        k, _, v = part.partition("=")
        if k.strip() not in FaultConfig.__dataclass_fields__:
            raise ValueError(f"unknown fault setting '{k}'; known: {', '.join(FaultConfig.__dataclass_fields__)}")
        kw[k.strip()] = float(v)
    return replace(base, **kw)
