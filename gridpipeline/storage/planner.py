"""One rolling-horizon plan from what the utility knows: the network model, the fleet's BMS
readings, the forecasts, the prices and the estimated state. Pure functions on frames and arrays;
the live dispatcher (``orchestration/dispatcher.py``) and ``gridpipeline dispatch plan`` call them.

Inputs to the LP (``dispatch.DispatchInputs``)
    * net load at the substation: the system demand forecast (P50) minus the curtailable generation
      forecast (P50, split onto generators by rating) minus the other generators at their estimated
      output (held);
    * every battery's measured energy; a unit that is unavailable (BMS verdict) or whose limits
      contradict each other (SOC min above max, capacity not positive) gets zero power and is left
      out of the plan, with its reason;
    * energy bounds: ``max(soc_min, owner's backup reserve) + headroom`` to ``soc_max - headroom``,
      the headroom taken only from the energy (or room) a unit has: it is never bought or sold;
    * prices per step (known or forecast, as ``sources.prices.price_curve`` labels them); exports are
      paid the same price minus ``EXPORT_SPREAD``;
    * grid limits: ``limits.LimitRows`` around the estimated state, when given.

Headroom for uncertainty
    The plan must survive a P90-demand / P10-renewable hour and a P10-demand / P90-renewable hour.
    The energy of those outcomes over the next ``HEADROOM_HOURS``, ``sum_t max(P90_d - P50_d, 0) +
    max(P50_g - P10_g, 0)`` (and the mirror for surplus), scaled by ``1 + ramps / 4`` (the ramp events
    the generation forecast flags for the next 24 h, the variability analysis), is what the fleet would
    have to give (or take) if the grid could not carry the deviation itself. Mostly it can: the
    substation imports the missing energy. So the fleet holds back only what the grid cannot carry
    (:func:`held_headroom`): the adverse net load's excess over the substation's import (export) limit,
    or all of it when the adverse outcome would take a monitored grid limit row (the plan's
    ``limits``) past its limit or further past it (each row moved by the generators' quantiles split
    by rating, and the demand's quantile put on the zone that moves the row most). The held energy
    is taken from every battery in proportion to its capacity, at most ``HEADROOM_CAP`` of it: SOC
    min is raised by the deficit headroom and SOC max lowered by the surplus headroom. (Holding the
    whole quantile energy whatever the grid's margin cost the 2018 backtest about a fifth of its
    savings on a grid with 80 MW of import capacity and a 4.5 MW fleet; RESULTS.)
    The limit rows survive the adverse outcomes too: each row's base is moved by the farthest either
    outcome can take it toward the limit it is nearer to, at most to that limit (:func:`robust_base`),
    so a battery whose power would take a row past its limit in a P90-renewable hour is not planned
    to (the backtest's over-voltages at the end of the LV feeder were such hours).

End of the horizon
    Stored energy is valued, not targeted: the energy a battery ends with below its starting energy
    costs ``terminal_value`` per MWh, and the energy above it is credited at the same price. The value
    is learnt (``PlanInputs.terminal_value``, storage/value.py: what a MWh held at the hour the horizon
    ends was worth over the last two weeks of published prices, with hindsight), else the median price
    of the horizon. So the plan never empties the fleet just because the horizon ends,
    and a fleet a plan has emptied refills when energy is cheaper than it is worth; with a value on
    the shortfall only, a rolling plan that discharged never saw a reason to charge again (the next
    plan's target is the energy it has), which the 2018 backtest showed as a fleet stuck near empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from gridpipeline.storage.dispatch import DispatchInputs, DispatchResult, Fleet

HEADROOM_HOURS = 1.0
HEADROOM_CAP = 0.25
EXPORT_SPREAD = 5.0          # EUR/MWh between the buying and the selling price
#: value of curtailed renewable energy (EUR/MWh): the lost subsidy/feed-in of a real generator, so
#: curtailment is only chosen when the grid or a price well below zero needs it
CURTAIL_VALUE = 30.0
IMPORT_MAX_MW = 1e4


def fleet_table(net) -> pd.DataFrame:
    """The batteries in the network model, one row each, in ``net.storage`` order."""
    st = net.storage

    def num(col, default):
        return pd.to_numeric(st[col], errors="coerce").fillna(default) if col in st else pd.Series(default, index=st.index)

    p = num("max_p_mw", 0.0).where(num("max_p_mw", 0.0) > 0, num("sn_mva", 0.0))
    return pd.DataFrame({
        "battery_id": st["name"].astype(str) if "name" in st else st.index.astype(str),
        "storage_index": st.index.to_numpy(), "bus": st.bus.to_numpy(),
        "capacity_mwh": num("max_e_mwh", 0.0).to_numpy(), "p_max_mw": p.to_numpy(),
        "eta_c": num("eta_charge", 1.0).to_numpy(), "eta_d": num("eta_discharge", 1.0).to_numpy(),
        "soc_min": num("soc_min_percent", 0.0).to_numpy() / 100, "soc_max": num("soc_max_percent", 100.0).to_numpy() / 100,
        "reserve": num("backup_reserve_percent", 0.0).to_numpy() / 100,
        "degradation": num("degradation_eur_per_mwh", 0.0).to_numpy(),
        "owner": st["owner"].astype(str).to_numpy() if "owner" in st else "",
        "vpp": st["vpp"].fillna("").astype(str).to_numpy() if "vpp" in st else "",
    }).reset_index(drop=True)


def generator_table(net) -> pd.DataFrame:
    """The curtailable generators: name, index, bus, kind (pv/wind), rating."""
    sg = net.sgen
    if "curtailable" not in sg:
        return pd.DataFrame(columns=["sgen_id", "sgen_index", "bus", "kind", "rating_mw"])
    c = sg[sg.curtailable.fillna(False).astype(bool)]
    kind = np.where(c["type"].astype(str).str.startswith("Wind"), "wind", "pv")
    return pd.DataFrame({"sgen_id": c["name"].astype(str).to_numpy(), "sgen_index": c.index.to_numpy(),
                         "bus": c.bus.to_numpy(), "kind": kind,
                         "rating_mw": (pd.to_numeric(c.sn_mva, errors="coerce").fillna(0)
                                       * pd.to_numeric(c.get("scaling", 1.0), errors="coerce").fillna(1)).to_numpy()}
                        ).reset_index(drop=True)


def units_now(fleet: pd.DataFrame, bms: pd.DataFrame | None) -> pd.DataFrame:
    """The fleet with what the BMS reported: ``energy_mwh``, ``available`` and ``reason``.

    Units the BMS did not report, or whose limits contradict each other, are unavailable with the
    reason. The BMS's capacity and power limits win over the model's when the unit reports them."""
    u = fleet.copy()
    u["available"], u["reason"], u["energy_mwh"] = False, "no BMS reading", np.nan
    if bms is not None and len(bms):
        b = bms.set_index("battery_id")
        hit = u.battery_id.isin(b.index)
        r = b.reindex(u.battery_id[hit])
        u.loc[hit, "available"] = r.available.astype(bool).to_numpy()
        u.loc[hit, "reason"] = r.reason.fillna("").astype(str).to_numpy()
        if "energy_mwh" in r:
            u.loc[hit, "energy_mwh"] = pd.to_numeric(r.energy_mwh, errors="coerce").to_numpy()
        if "capacity_mwh" in r:
            cap = pd.to_numeric(r.capacity_mwh, errors="coerce").to_numpy()
            ok = np.isfinite(cap) & (cap > 0)
            u.loc[u.index[hit][ok], "capacity_mwh"] = cap[ok]
    bad = u.soc_min > u.soc_max
    u.loc[bad, ["available", "reason"]] = [False, "contradictory limits: SOC min above SOC max"]
    bad = ~(u.capacity_mwh > 0)
    u.loc[bad, ["available", "reason"]] = [False, "contradictory limits: capacity not positive"]
    u["available"] = u.available.astype(bool)
    u.loc[u.available, "reason"] = ""
    return u


def headroom_mwh(demand: pd.DataFrame, renewables: pd.DataFrame, dt_h: float, ramps: int = 0) -> tuple[float, float]:
    """(deficit, surplus) energy headroom in MWh for the fleet (module docstring). ``demand`` and
    ``renewables`` have p10/p50/p90 per step (MW, renewables summed over kinds)."""
    n = max(1, int(round(HEADROOM_HOURS / dt_h)))
    d, g = demand.iloc[:n], renewables.iloc[:n]
    k = 1.0 + min(ramps, 4) / 4.0
    deficit = ((d.p90 - d.p50).clip(lower=0).sum() + (g.p50 - g.p10).clip(lower=0).sum()) * dt_h * k
    surplus = ((d.p50 - d.p10).clip(lower=0).sum() + (g.p90 - g.p50).clip(lower=0).sum()) * dt_h * k
    return float(deficit), float(surplus)


@dataclass
class PlanInputs:
    """Everything one plan needs, on the plan's step grid ``times`` (T steps)."""

    times: pd.DatetimeIndex
    units: pd.DataFrame            # units_now(...)
    generators: pd.DataFrame       # generator_table(...)
    demand: pd.DataFrame           # system demand: p10, p50, p90 (T rows)
    renewables: dict[str, pd.DataFrame]  # kind -> p10, p50, p90, capacity_mw (T rows)
    prices: pd.DataFrame           # price (EUR/MWh), source (known|filled|forecast), T rows (sources.prices.price_curve)
    other_generation_mw: float = 0.0
    ramps: int = 0
    limits: object | None = None   # limits.LimitRows for the units and generators (same order)
    zone_delta_mw: np.ndarray | None = None  # (T, Z) zone demand forecast's change from its first step,
    #                                          in limits.zones order (moves the limit rows' base)
    position_mw: np.ndarray | None = None      # (T,) the fleet's market position per step (+ sold), NaN: none
    position_spread: np.ndarray | None = None  # (T,) EUR/MWh a deviation from it costs
    limit_base: np.ndarray | None = None   # (T, K) the rows' values with no action when known per step (a
    #                                        hindsight study's power flows); else moved from ``limits.now``
    import_max_mw: float | np.ndarray = IMPORT_MAX_MW  # scalar, or (T,) per step (an import limit instruction)
    export_max_mw: float = IMPORT_MAX_MW
    flags: list[str] = field(default_factory=list)
    #: EUR/MWh a MWh left in the fleet at the horizon's end is worth (storage.value.terminal_value);
    #: None: the median of the horizon's prices
    terminal_value: float | None = None


def gen_availability(p: PlanInputs, quantile: str = "p50") -> np.ndarray:
    """(T, G) MW each curtailable generator is forecast to produce: its kind's forecast split by rating."""
    g = p.generators
    out = np.zeros((len(p.times), len(g)))
    for kind, fc in p.renewables.items():
        on = (g.kind == kind).to_numpy()
        if not on.any():
            continue
        cap = float(np.nanmax(fc.capacity_mw)) if "capacity_mw" in fc and np.isfinite(fc.capacity_mw).any() else 0.0
        cap = cap if cap > 0 else float(g.rating_mw[on].sum())
        share = g.rating_mw[on].to_numpy() / max(cap, 1e-9)
        out[:, on] = np.clip(fc[quantile].to_numpy(float), 0, None)[:, None] * share[None, :]
    return out


def adverse_moves(p: PlanInputs, steps: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(up, down): (T, K) how far each limit row of ``p.limits`` can rise and fall from its base in the
    two adverse outcomes, P90 demand with P10 renewables and P10 demand with P90 renewables: the
    generators' quantiles split by rating (``gen_availability``) through the rows' generator
    sensitivities, and the demand's deviation put on the zone that moves the row most, either way.
    ``steps``: only the first ones (T = steps)."""
    rows = p.limits
    T, K = min(len(p.times), steps or len(p.times)), len(rows.names)
    d = p.demand.reset_index(drop=True).iloc[:T]
    gens = {q: gen_availability(p, q)[:T] for q in ("p10", "p50", "p90")}
    sg = np.asarray(rows.s_generator, float)
    sz = np.asarray(rows.s_zone, float) if rows.s_zone.size else np.zeros((K, 1))
    zone_up, zone_down = np.clip(sz.max(axis=1), 0, None), np.clip(-sz.min(axis=1), 0, None)
    up, down = np.zeros((T, K)), np.zeros((T, K))
    for dd, gq in ((d.p90 - d.p50, "p10"), (d.p10 - d.p50, "p90")):
        dd = dd.to_numpy(float)[:, None]
        g = (gens[gq] - gens["p50"]) @ sg.T if sg.size else np.zeros((T, K))
        up = np.maximum(up, g + np.where(dd > 0, dd * zone_up, -dd * zone_down))
        down = np.maximum(down, -g + np.where(dd > 0, dd * zone_down, -dd * zone_up))
    return up, down


def robust_base(base: np.ndarray, rows, up: np.ndarray, down: np.ndarray) -> np.ndarray:
    """The rows' base moved by the adverse outcome (:func:`adverse_moves`) toward the limit each row is
    nearer to, at most to that limit: so the plan keeps a row within its limit in the adverse outcome
    too (the issue: the plan survives a P10-renewable or P90-demand outcome), and a row the
    adverse outcome would take past its limit gets no action that moves it further. A base already
    past its limit is left as it is. One base per row and step serves both of its limits, so the far
    limit's constraint is loosened by the same move; the far limit is more than half the band away."""
    base = np.asarray(base, float)
    upper, lower = np.asarray(rows.upper, float)[None, :], np.asarray(rows.lower, float)[None, :]
    to_upper = (upper - base) <= (base - lower)
    rise = np.minimum(np.clip(up, 0, None), np.clip(upper - base, 0, None))
    fall = np.minimum(np.clip(down, 0, None), np.clip(base - lower, 0, None))
    return np.where(to_upper, base + rise, base - fall)


def held_headroom(p: PlanInputs, renewables: pd.DataFrame, deficit: float, surplus: float, dt_h: float,
                  limit_base: np.ndarray | None = None) -> tuple[float, float, dict[str, str]]:
    """(deficit, surplus) MWh the fleet holds back of the adverse outcomes' energy (``headroom_mwh``),
    and why, per direction: only what the grid cannot carry (module docstring).

    ``renewables``: p10/p50/p90 summed over kinds (T rows); ``limit_base``: (T, K) the plan's limit rows
    with no action, when it has rows. A direction holds all of its energy when its adverse outcome
    takes a row past its limit (or further past it) within the window, else the adverse net load's
    excess over the substation's import (export) limit, scaled like the energy itself."""
    T = len(p.times)
    n = min(T, max(1, round(HEADROOM_HOURS / dt_h)))
    d = p.demand.reset_index(drop=True).iloc[:n]
    g = renewables.iloc[:n]
    k = 1.0 + min(p.ramps, 4) / 4.0
    other = float(p.other_generation_mw)
    imp = np.broadcast_to(np.asarray(p.import_max_mw, float), (T,))[:n]
    exp = np.broadcast_to(np.asarray(p.export_max_mw, float), (T,))[:n]
    net_hi = d.p90.to_numpy(float) - other - g.p10.to_numpy(float)
    net_lo = d.p10.to_numpy(float) - other - g.p90.to_numpy(float)
    over_imp = float(np.clip(net_hi - imp, 0, None).sum()) * dt_h * k
    over_exp = float(np.clip(-net_lo - exp, 0, None).sum()) * dt_h * k
    held = {"deficit": min(deficit, over_imp), "surplus": min(surplus, over_exp)}
    why = {"deficit": "the substation imports the deviation" if over_imp <= 0 else "beyond the import limit",
           "surplus": "the substation exports the deviation" if over_exp <= 0 else "beyond the export limit"}
    rows = p.limits
    if limit_base is not None and rows is not None and len(rows.names):
        base = np.asarray(limit_base, float)[:n]
        tol = 1e-6
        for side, dq, gq in (("deficit", "p90", "p10"), ("surplus", "p10", "p90")):
            # this side's outcome alone: the other quantiles at P50
            one = replace(p, demand=p.demand.assign(p10=p.demand[dq], p90=p.demand[dq]),
                          renewables={kk: fc.assign(p10=fc[gq], p90=fc[gq]) for kk, fc in p.renewables.items()})
            up, down = adverse_moves(one, n)
            past = ((base + up > np.maximum(rows.upper, base) + tol)
                    | (base - down < np.minimum(rows.lower, base) - tol))
            if past.any():
                j = int(np.flatnonzero(past.any(axis=0))[0])
                held[side] = deficit if side == "deficit" else surplus
                why[side] = f"the adverse outcome would take {rows.names[j]} past its limit"
    return float(held["deficit"]), float(held["surplus"]), why


def build_inputs(p: PlanInputs) -> tuple[Fleet, DispatchInputs, dict]:
    """The LP's fleet and inputs, and what was assumed (headroom, terminal value) for the record."""
    T = len(p.times)
    dt_h = (p.times[1] - p.times[0]).total_seconds() / 3600 if T > 1 else 5 / 60
    u = p.units
    avail = u.available.to_numpy(bool)
    cap = u.capacity_mwh.to_numpy(float)
    e0 = np.where(avail, np.nan_to_num(u.energy_mwh.to_numpy(float), nan=0.0), 0.0)
    e0 = np.clip(e0, 0, cap)
    ren = sum((fc[["p10", "p50", "p90"]].to_numpy(float) for fc in p.renewables.values()),
              np.zeros((T, 3)))
    ren_df = pd.DataFrame(ren, columns=["p10", "p50", "p90"])
    deficit_q, surplus_q = headroom_mwh(p.demand.reset_index(drop=True), ren_df, dt_h, p.ramps)
    gen_p50 = gen_availability(p, "p50")
    base = None
    if p.limits is not None and len(p.limits.names):
        gen_delta = gen_p50 - gen_p50[:1]  # the forecast's change from the estimated state (limits.py)
        base = p.limits.base(p.zone_delta_mw, gen_delta) if p.limit_base is None else p.limit_base
        base = np.broadcast_to(base, (T, len(p.limits.names)))
    deficit, surplus, held_why = held_headroom(p, ren_df, deficit_q, surplus_q, dt_h, base)
    total_cap = float(cap[avail].sum()) or 1.0
    h_lo = np.minimum(deficit * cap / total_cap, HEADROOM_CAP * cap)
    h_hi = np.minimum(surplus * cap / total_cap, HEADROOM_CAP * cap)
    floor = np.maximum(u.soc_min.to_numpy(float), u.reserve.to_numpy(float)) * cap
    ceil = u.soc_max.to_numpy(float) * cap
    # headroom is held back from the energy a unit has (or the room it has left), never bought or sold
    # to make it: a unit below its raised minimum is not forced to charge at any price (the slack's
    # penalty), it only may not go lower; likewise above its lowered maximum
    lo = np.maximum(np.minimum(floor + h_lo, np.maximum(e0, floor)), floor)
    hi = np.maximum(np.maximum(ceil - h_hi, np.minimum(e0, ceil)), lo)
    pmax = np.where(avail, u.p_max_mw.to_numpy(float), 0.0)
    # the LP subtracts the curtailable generators' output (avail - curtailed) itself
    net_load = p.demand.p50.to_numpy(float) - p.other_generation_mw
    price = p.prices.price.to_numpy(float)
    terminal = float(np.median(price)) if p.terminal_value is None or not np.isfinite(p.terminal_value) \
        else float(p.terminal_value)
    fleet = Fleet(tuple(u.battery_id), eta_c=u.eta_c.to_numpy(float), eta_d=u.eta_d.to_numpy(float),
                  generator_ids=tuple(p.generators.sgen_id))
    x = DispatchInputs(
        dt_h=dt_h, price_buy=price, price_sell=price - EXPORT_SPREAD, net_load=net_load, soc0=e0,
        e_min=np.where(avail, lo, 0.0), e_max=np.where(avail, hi, cap), p_charge_max=pmax, p_discharge_max=pmax,
        degradation=u.degradation.to_numpy(float), e_target=np.minimum(e0, np.where(avail, hi, cap)),
        terminal_value=max(terminal, 0.0), surplus_value=max(terminal, 0.0), gen_avail=gen_p50,
        curtail_value=np.full(len(p.generators), CURTAIL_VALUE),
        import_max=np.broadcast_to(np.asarray(p.import_max_mw, float), (T,)).copy(),
        export_max=np.full(T, p.export_max_mw), position=p.position_mw, position_spread=p.position_spread)
    if p.limits is not None and len(p.limits.names):
        rows = p.limits
        up, down = adverse_moves(p)
        x.limit_base = robust_base(np.broadcast_to(base, (T, len(rows.names))), rows, up, down)
        x.limit_lower, x.limit_upper = rows.lower, rows.upper
        x.sens_battery, x.sens_generator, x.limit_names = rows.s_battery, rows.s_generator, rows.names
        if rows.s_generator_q is not None and len(p.generators):
            # reactive room of each inverter at its forecast output, within its apparent power
            s_mva = p.generators.rating_mw.to_numpy(float)
            x.q_max = np.sqrt(np.clip(s_mva[None, :] ** 2 - gen_p50 ** 2, 0.0, None))
            x.sens_generator_q = rows.s_generator_q
    info = {"headroom_deficit_mwh": round(deficit, 4), "headroom_surplus_mwh": round(surplus, 4),
            "headroom_quantile_deficit_mwh": round(deficit_q, 4), "headroom_quantile_surplus_mwh": round(surplus_q, 4),
            "headroom_held_because": held_why,
            "ramps_next_24h": int(p.ramps), "terminal_value_eur_mwh": round(terminal, 2),
            "terminal_rule": "the median of the horizon's prices" if p.terminal_value is None
            or not np.isfinite(p.terminal_value) else "learnt: the fleet's hindsight value at the end's hour over "
            "the last 14 published days (storage/value.py)",
            "dt_h": dt_h, "steps": T, "units_available": int(avail.sum()), "units_left_out": int((~avail).sum())}
    return fleet, x, info


def net_before(x: DispatchInputs) -> np.ndarray:
    """(T,) MW at the substation with no battery action and no curtailment."""
    gen = np.asarray(x.gen_avail, float).sum(axis=1) if x.gen_avail is not None else 0.0
    return np.asarray(x.net_load, float) - gen


def do_nothing_cost(x: DispatchInputs) -> float:
    """Energy cost of the horizon with no battery action and no curtailment."""
    net = net_before(x)
    return float(np.sum(np.where(net > 0, net * x.price_buy, net * x.price_sell)) * x.dt_h)


def rule_cost(x: DispatchInputs, eta_c: np.ndarray, eta_d: np.ndarray) -> tuple[float, np.ndarray]:
    """The best simple rule: charge at full power below the horizon's median price, discharge above it,
    within energy bounds; returns its energy + degradation cost and the (T, N) power (+ discharge)."""
    T, N = len(x.price_buy), len(x.soc0)
    med = np.median(x.price_buy)
    e = np.asarray(x.soc0, float).copy()
    power = np.zeros((T, N))
    for t in range(T):
        if x.price_buy[t] < med:
            ch = np.minimum(x.p_charge_max, np.maximum(x.e_max - e, 0) / (eta_c * x.dt_h))
            power[t], e = -ch, e + ch * eta_c * x.dt_h
        elif x.price_buy[t] > med:
            dis = np.minimum(x.p_discharge_max, np.maximum(e - x.e_min, 0) * eta_d / x.dt_h)
            power[t], e = dis, e - dis / eta_d * x.dt_h
    net = net_before(x) - power.sum(axis=1)
    cost = np.sum(np.where(net > 0, net * x.price_buy, net * x.price_sell)) * x.dt_h
    cost += float(np.sum(np.abs(power) * np.asarray(x.degradation)[None, :]) * x.dt_h)
    gap = np.asarray(x.e_target, float) - e
    cost += float(gap.clip(0).sum()) * x.terminal_value
    cost -= float((-gap).clip(0).sum()) * min(x.surplus_value or 0.0, x.terminal_value)
    return float(cost), power


@dataclass
class PlanOutcome:
    fleet: Fleet
    x: DispatchInputs
    power: np.ndarray             # (T, N) MW per battery, + discharge
    energy: np.ndarray            # (T+1, N) MWh
    result: DispatchResult        # the (cluster-level) LP result: curtailment, duals, violations
    info: dict
    costs: dict
    agg_x: DispatchInputs | None = None   # the cluster-level inputs ``result`` belongs to
    agg_fleet: Fleet | None = None
    curtail: np.ndarray | None = None     # (T, G) MW per generator (the groups' curtailment split by availability)
    gen_group: np.ndarray | None = None   # (G,) group of each generator
    reactive: np.ndarray | None = None    # (T, G) Mvar per generator's inverter (+ injects)

    def curtailment(self, times: pd.DatetimeIndex) -> pd.DataFrame:
        """Curtailed MW per generator and step with the reason and the binding constraint's dual
        (the reason is its group's: the generators of one kind on one feeder share their limits)."""
        from gridpipeline.storage.curtailment import curtailment_reasons

        grp = curtailment_reasons(self.result, self.agg_x, self.agg_fleet, times)
        if not len(grp):
            return grp.assign(group=pd.Series(dtype=object))
        ids = np.asarray(self.fleet.generator_ids, dtype=object)
        pos = {g: k for k, g in enumerate(self.agg_fleet.generator_ids)}
        tpos = {t: k for k, t in enumerate(times)}
        rows = []
        for r in grp.itertuples(index=False):
            t, c = tpos[r.step_start], pos[r.generator_id]
            for j in np.flatnonzero(self.gen_group == c):
                mw = float(self.curtail[t, j])
                if mw > 1e-6:
                    rows.append({**r._asdict(), "generator_id": ids[j], "curtailed_mw": mw,
                                 "curtailed_mwh": mw * self.x.dt_h, "group": r.generator_id})
        return pd.DataFrame(rows, columns=[*grp.columns, "group"])


def generator_groups(gens: pd.DataFrame) -> tuple[np.ndarray, tuple[str, ...]]:
    """Group of every curtailable generator: its kind on its feeder (zone), the unit the LP curtails.
    The generators of a group share their feeder's limits and weather, so the LP needs one column
    per group, not per generator (127 -> 12 on the sample grid)."""
    feeder = gens["zone"].astype(str) if "zone" in gens else gens.bus.astype(str)
    key = gens.kind.astype(str) + " " + feeder
    codes, names = pd.factorize(key, sort=True)
    return codes.astype(int), tuple(names)


def _group_inputs(x: DispatchInputs, grp: np.ndarray, n_groups: int) -> DispatchInputs:
    from dataclasses import replace as _replace

    if x.gen_avail is None or not len(grp):
        return x
    onehot = np.zeros((len(grp), n_groups))
    onehot[np.arange(len(grp)), grp] = 1.0
    avail = np.asarray(x.gen_avail, float)
    w_avail = avail.sum(axis=0) + 1e-9  # availability-weighted sensitivities: who produces moves the flows
    w = onehot * w_avail[:, None]
    w = w / np.maximum(w.sum(axis=0, keepdims=True), 1e-12)
    sens = None if x.sens_generator is None else np.asarray(x.sens_generator, float) @ w
    cv = (np.asarray(x.curtail_value, float) @ onehot) / np.maximum(onehot.sum(axis=0), 1)
    q_max, sens_q = None, None
    if x.q_max is not None and x.sens_generator_q is not None:
        qm = np.asarray(x.q_max, float)
        wq = onehot * (qm.sum(axis=0) + 1e-9)[:, None]  # weighted by reactive room: who has room moves the voltage
        wq = wq / np.maximum(wq.sum(axis=0, keepdims=True), 1e-12)
        q_max, sens_q = qm @ onehot, np.asarray(x.sens_generator_q, float) @ wq
    return _replace(x, gen_avail=avail @ onehot, curtail_value=cv, sens_generator=sens, q_max=q_max,
                    sens_generator_q=sens_q)


def solve_plan(p: PlanInputs, planner=None) -> PlanOutcome:
    """Build the inputs and solve with ``planner`` (an ``aggregate.FleetPlanner``, kept between calls
    for DPP re-solves): batteries on one feeder with equal efficiencies and degradation cost are one
    cluster in the LP and disaggregated by water-filling on SOC headroom."""
    from gridpipeline.storage.aggregate import FleetPlanner, aggregate_inputs, member_cost

    planner = planner or FleetPlanner()
    fleet, x, info = build_inputs(p)
    feeder = p.units["feeder"].to_numpy() if "feeder" in p.units else p.units.bus.to_numpy()
    grp, gnames = generator_groups(p.generators)
    xg = _group_inputs(x, grp, len(gnames))
    gfleet = Fleet(fleet.battery_ids, fleet.eta_c, fleet.eta_d, generator_ids=gnames)
    fp = planner.plan(gfleet, xg, feeder, gnames)
    info["generator_groups"] = len(gnames)
    # each group's curtailment split onto its members in proportion to what they would produce
    avail = np.asarray(x.gen_avail, float) if x.gen_avail is not None else np.zeros((len(p.times), 0))
    gsum = np.zeros((avail.shape[0], len(gnames)))
    for c in range(len(gnames)):
        gsum[:, c] = avail[:, grp == c].sum(axis=1)
    share = np.divide(avail, gsum[:, grp], out=np.zeros_like(avail), where=gsum[:, grp] > 1e-12)
    curtail = fp.aggregate.curtail[:, grp] * share if len(grp) else avail * 0
    reactive = np.zeros_like(avail)
    if x.q_max is not None and fp.aggregate.reactive is not None and len(grp):
        qm = np.asarray(x.q_max, float)
        qsum = np.zeros((qm.shape[0], len(gnames)))
        for c in range(len(gnames)):
            qsum[:, c] = qm[:, grp == c].sum(axis=1)
        qshare = np.divide(qm, qsum[:, grp], out=np.zeros_like(qm), where=qsum[:, grp] > 1e-12)
        reactive = fp.aggregate.reactive[:, grp] * qshare  # each inverter by its room
    info["reactive_mvar_first_step"] = round(float(np.abs(reactive[0]).sum()) if reactive.size else 0.0, 4)
    info.update({k: (round(v, 4) if isinstance(v, float) else v) for k, v in fp.seconds.items()})
    from dataclasses import replace as _replace

    # the members' schedules costed with the plan's curtailment in the substation's net load
    plan_cost = member_cost(fp.power, fp.energy, _replace(x, net_load=net_before(x) + fp.aggregate.curtail.sum(axis=1)))
    curt_cost = float(fp.aggregate.curtail.sum() * x.dt_h * CURTAIL_VALUE)
    rc, _ = rule_cost(x, fleet.eta_c, fleet.eta_d)
    costs = {"plan_eur": round(plan_cost + curt_cost, 2), "energy_and_degradation_eur": round(plan_cost, 2),
             "curtailment_value_eur": round(curt_cost, 2), "do_nothing_eur": round(do_nothing_cost(x), 2),
             "rule_based_eur": round(rc, 2), "lp_objective_eur": round(fp.aggregate.objective, 2),
             "lp_breakdown": {k: round(v, 2) for k, v in fp.aggregate.breakdown.items()},
             "disaggregation_shortfall_mw": round(float(np.abs(fp.shortfall).max()) if fp.shortfall.size else 0.0, 6)}
    C = int(fp.clusters.max()) + 1
    first = np.array([np.nonzero(fp.clusters == c)[0][0] for c in range(C)])
    agg_fleet = Fleet(tuple(f"cluster {c}" for c in range(C)), eta_c=fleet.eta_c[first], eta_d=fleet.eta_d[first],
                      generator_ids=gnames)
    return PlanOutcome(fleet, x, fp.power, fp.energy, fp.aggregate, info, costs,
                       aggregate_inputs(xg, fp.clusters, C), agg_fleet, curtail, grp, reactive)


def plan_tables(p: PlanInputs, power: np.ndarray, energy: np.ndarray, curtail: np.ndarray,
                x: DispatchInputs) -> dict[str, pd.DataFrame]:
    """The plan as tables: per battery and step, per step at the substation."""
    T, N = power.shape
    u = p.units
    cap = np.maximum(u.capacity_mwh.to_numpy(float), 1e-12)
    t = np.repeat(p.times.tz_convert("UTC").tz_localize(None).to_numpy() if p.times.tz else p.times.to_numpy(), N)
    batt = pd.DataFrame({"step_ts": t, "step": np.repeat(np.arange(T), N),
                         "battery_id": np.tile(u.battery_id.to_numpy(), T),
                         "p_mw": power.reshape(-1), "energy_mwh": energy[1:].reshape(-1),
                         "soc_percent": (100 * energy[1:] / cap[None, :]).reshape(-1),
                         "vpp": np.tile(u.vpp.to_numpy(), T)})
    before = net_before(x)
    after = before - power.sum(axis=1) + curtail.sum(axis=1)
    sub = pd.DataFrame({"step_ts": batt.step_ts.iloc[::N].to_numpy() if N else p.times.to_numpy(),
                        "step": np.arange(T), "net_load_before_mw": before, "net_load_after_mw": after,
                        "battery_mw": power.sum(axis=1), "curtailed_mw": curtail.sum(axis=1),
                        "price_eur_mwh": p.prices.price.to_numpy(float),
                        "price_label": p.prices.source.astype(str).to_numpy(),
                        "demand_p50_mw": p.demand.p50.to_numpy(float)})
    return {"batteries": batt, "substation": sub}


__all__ = [
    "CURTAIL_VALUE",
    "HEADROOM_CAP",
    "HEADROOM_HOURS",
    "PlanInputs",
    "PlanOutcome",
    "adverse_moves",
    "build_inputs",
    "do_nothing_cost",
    "fleet_table",
    "gen_availability",
    "generator_table",
    "headroom_mwh",
    "held_headroom",
    "plan_tables",
    "robust_base",
    "rule_cost",
    "solve_plan",
    "units_now",
]
