"""Grid limits for the dispatch: linear sensitivities around the current estimated state.

One set per plan, applied to all steps (the issue's decision): a power-grid-model batch on the
estimated injections, where scenario 0 is the state itself and each further scenario moves one
"driver" by ``delta_mw``:

* each battery's injection (+ = discharge) and each curtailable generator's output;
* each curtailable generator's reactive power (its inverter's Q, + injects);
* each zone's demand, split onto its loads by their nominal shares (so the forecast's change of a
  zone's demand moves the flows the way the registry's shares say).

Monitored rows: every transformer, every feeder-head line (a line at a bus fed by a transformer's
low-voltage side), and any branch above ``watch_percent`` loading now or in N-1; plus every energised
bus for voltage. For a row, ``base(t) = now + Σ_zones S_zone (forecast_zone(t) - forecast_zone(0))
+ Σ_gen S_gen (forecast_gen(t) - forecast_gen(0))``: the base starts at the estimated state and the
forecasts' change from their first step moves it (their change, not their level: a forecast biased
against the measurement at step 0 would otherwise shift every row, the executed step's too); the
plan's decisions move it further through ``S_battery`` and ``-S_gen`` (curtailment). ``now`` holds no
power of the batteries the plan decides (see ``cycle.limit_rows_for``).

Loading is a magnitude (of a current), so the linearisation holds while a branch's flow keeps its
direction; the validation gate re-checks the plan's first step with a full AC power flow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from power_grid_model import CalculationMethod, ComponentType, PowerGridModel

from gridpipeline.grid.network import PgmModel
from gridpipeline.grid.powerflow import batch_loading, batch_update, branch_index

DELTA_MW = 0.05


@dataclass
class LimitRows:
    names: tuple[str, ...]        # "line 7 loading", "bus 12 voltage"
    now: np.ndarray               # (K,) value in the current state (% or pu)
    lower: np.ndarray             # (K,)
    upper: np.ndarray             # (K,)
    s_battery: np.ndarray         # (K, N) per MW of battery injection
    s_generator: np.ndarray       # (K, G) per MW of generator output
    s_zone: np.ndarray            # (K, Z) per MW of zone demand
    zones: tuple[str, ...]
    seconds: float = 0.0
    s_generator_q: np.ndarray | None = None  # (K, G) per Mvar a generator's inverter injects

    def relevant(self, battery_power_mw: np.ndarray, min_loading: float = 0.5, min_voltage: float = 0.001,
                 margin_loading: float = 25.0, margin_voltage: float = 0.02) -> LimitRows:
        """Only the rows that can bind: the batteries move them noticeably at full power
        (``min_loading`` % or ``min_voltage`` pu) **and** the fleet at full power in the worst
        direction, plus a margin for the day's change of demand and generation (``margin_loading`` %,
        ``margin_voltage`` pu), could take them to their limit; and every row already at or past its
        limit. A row that cannot bind changes nothing in the plan, and every row costs the LP 288
        constraints."""
        effect = np.abs(self.s_battery) @ np.abs(np.asarray(battery_power_mw, float))
        is_v = np.array([n.endswith("voltage") for n in self.names], dtype=bool)
        near = (self.now >= self.upper) | (self.now <= self.lower)
        reach = np.where(is_v, effect + margin_voltage, effect + margin_loading)
        can_bind = (self.now + reach >= self.upper) | (self.now - reach <= self.lower)
        keep = (np.where(is_v, effect >= min_voltage, effect >= min_loading) & can_bind) | near
        return self.select(keep)

    def loading_only(self) -> LimitRows:
        """The branch and transformer loading rows (no bus voltages)."""
        return self.select(np.array([not n.endswith("voltage") for n in self.names], dtype=bool))

    def select(self, keep: np.ndarray) -> LimitRows:
        keep = np.asarray(keep, dtype=bool)
        return LimitRows(tuple(n for n, k in zip(self.names, keep) if k), self.now[keep], self.lower[keep],
                         self.upper[keep], self.s_battery[keep], self.s_generator[keep], self.s_zone[keep], self.zones,
                         self.seconds, None if self.s_generator_q is None else self.s_generator_q[keep])

    def base(self, zone_delta_mw: np.ndarray | None, gen_delta_mw: np.ndarray | None) -> np.ndarray:
        """(T, K) rows with no action: now, moved by the forecast's change of zone demand (T, Z) and of
        generator output (T, G) against the current state."""
        b = np.broadcast_to(self.now, (1, len(self.now))).astype(float)
        if zone_delta_mw is not None and self.s_zone.size:
            b = b + zone_delta_mw @ self.s_zone.T
        if gen_delta_mw is not None and self.s_generator.size:
            b = b + gen_delta_mw @ self.s_generator.T
        return b


def feeder_heads(net) -> list[int]:
    """Lines that leave a transformer's low-voltage bus."""
    lv = set(net.trafo.lv_bus.astype(int))
    return sorted(int(i) for i, r in net.line.iterrows() if int(r.from_bus) in lv or int(r.to_bus) in lv)


def feeder_headroom(rows: LimitRows, feeder: np.ndarray, heads: list[int]) -> dict[str, tuple[float, float]]:
    """Per feeder, the MW of more injection and of more consumption its head line can carry from the
    state the rows were linearised around: ``(upper - now) / s`` in the direction that loads the head
    further, ``(upper + now) / s`` in the other (through zero flow to the limit the other way), with
    ``s`` the mean sensitivity (loading % per MW of injection) of the batteries on that feeder (on a
    radial feeder every member moves its head alike). ``feeder``: the feeder of every battery (the
    rows' battery order); ``heads``: the feeder-head line indices (:func:`feeder_heads`)."""
    names = {f"line {i} loading" for i in heads}
    rows_k = [k for k, n in enumerate(rows.names) if n in names]
    feeder = np.asarray(feeder, dtype=object)
    out: dict[str, tuple[float, float]] = {}
    for f in pd.unique(feeder):
        if f is None or (isinstance(f, float) and np.isnan(f)):
            continue
        on = feeder == f
        best = None
        for k in rows_k:
            sens = float(np.mean(rows.s_battery[k, on]))
            if abs(sens) < 1e-4:  # that head does not carry this feeder
                continue
            now, lim = float(rows.now[k]), float(rows.upper[k])
            room, back = max(lim - now, 0.0) / abs(sens), (lim + now) / abs(sens)
            up, down = (room, back) if sens > 0 else (back, room)
            best = (up, down) if best is None else (min(best[0], up), min(best[1], down))
        if best is not None:
            out[str(f)] = (round(best[0], 6), round(best[1], 6))
    return out


def limit_rows(model: PgmModel, data: dict, net, *, batteries: list[int], generators: list[int],
               zone_of_load: pd.Series, loading_limit: float = 100.0, v_min: float = 0.95, v_max: float = 1.05,
               watch_percent: float = 60.0, also_watch: list[tuple[str, int]] = (), delta_mw: float = DELTA_MW
               ) -> LimitRows:
    """The rows for storage elements ``batteries`` and sgens ``generators`` (pandapower indices) on the
    state in ``data`` (the PGM input with the estimated injections and switch states)."""
    import time

    t0 = time.perf_counter()
    scen: list[list[tuple]] = [[]]
    app = model.appliances

    def _p(pgm_id: int) -> float:
        comp = model.component_of(model.id_table[pgm_id])
        arr = data[comp]
        return float(arr["p_specified"][int(np.searchsorted(arr["id"], pgm_id))])

    def _q(pgm_id: int) -> float:
        comp = model.component_of(model.id_table[pgm_id])
        arr = data[comp]
        return float(arr["q_specified"][int(np.searchsorted(arr["id"], pgm_id))])

    def bump(table: str, idx: int, mw: float) -> tuple:
        pid = int(model.pgm_id(table, idx)[0])
        return (model.component_of(table), pid, {"p_specified": _p(pid) + mw * 1e6})

    def bump_q(table: str, idx: int, mvar: float) -> tuple:
        pid = int(model.pgm_id(table, idx)[0])
        return (model.component_of(table), pid, {"q_specified": _q(pid) + mvar * 1e6})

    # battery injection +: storage consumption -; generator output +: sgen generation +
    scen += [[bump("storage", b, -delta_mw)] for b in batteries]
    scen += [[bump("sgen", g, delta_mw)] for g in generators]
    zones = tuple(sorted(zone_of_load.dropna().unique()))
    loads = net.load
    for z in zones:
        members = zone_of_load.index[zone_of_load == z]
        nominal = loads.loc[members, "p_mw"].abs()
        share = nominal / nominal.sum() if nominal.sum() > 0 else pd.Series(1.0 / len(members), index=members)
        scen.append([bump("load", int(i), delta_mw * float(s)) for i, s in share.items()])
    # each curtailable generator's inverter injecting reactive power (the voltage rows' lever before curtailment)
    scen += [[bump_q("sgen", g, delta_mw)] for g in generators]
    pgm = PowerGridModel(data)
    out = pgm.calculate_power_flow(update_data=batch_update(scen), calculation_method=CalculationMethod.newton_raphson,
                                   continue_on_batch_error=True,
                                   output_component_types={ComponentType.node: ["id", "u_pu", "energized"],
                                                           ComponentType.line: ["id", "i_from", "i_to"],
                                                           ComponentType.transformer: ["id", "i_from", "i_to"]})
    loading = batch_loading(model, data, out)                     # (S, branches)
    u = out[ComponentType.node]["u_pu"]                           # (S, nodes)
    with np.errstate(invalid="ignore"):
        dl = (loading[1:] - loading[0]) / delta_mw
        du = (u[1:] - u[0]) / delta_mw
    bidx = branch_index(model, data)
    watch = {("trafo", int(i)) for i in net.trafo.index} | {("line", i) for i in feeder_heads(net)}
    watch |= {k for k, v in zip(bidx, loading[0]) if np.isfinite(v) and v >= watch_percent}
    watch |= set(also_watch)
    rows_b = [k for k, key in enumerate(bidx) if key in watch]
    energized = out[ComponentType.node]["energized"][0].astype(bool)
    rows_v = list(np.nonzero(energized)[0])
    N, G, Z = len(batteries), len(generators), len(zones)
    D = np.vstack([dl[:, rows_b].T, du[:, rows_v].T]) if len(rows_b) + len(rows_v) else np.zeros((0, len(scen) - 1))
    D = np.nan_to_num(D)
    node_ids = data[ComponentType.node]["id"]
    names = tuple([f"{bidx[k][0]} {bidx[k][1]} loading" for k in rows_b] +
                  [f"bus {int(model.id_index[node_ids[k]])} voltage" for k in rows_v])
    now = np.concatenate([loading[0][rows_b], u[0][rows_v]])
    lower = np.concatenate([np.full(len(rows_b), -np.inf), np.full(len(rows_v), v_min)])
    upper = np.concatenate([np.full(len(rows_b), loading_limit), np.full(len(rows_v), v_max)])
    return LimitRows(names=names, now=now, lower=np.where(np.isfinite(lower), lower, -1e6), upper=upper,
                     s_battery=D[:, :N], s_generator=D[:, N:N + G], s_zone=D[:, N + G:N + G + Z], zones=zones,
                     seconds=time.perf_counter() - t0, s_generator_q=D[:, N + G + Z:])


__all__ = ["LimitRows", "feeder_headroom", "feeder_heads", "limit_rows"]
