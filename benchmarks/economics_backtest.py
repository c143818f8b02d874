"""``gridpipeline economics backtest``: the sample world through a historical period (2018 by default) at
the real German day-ahead prices, three ways of operating in one run, costed component by component.

A simulation study, like ``dispatch backtest`` beside it (whose world, forecasts and fleet execution it
reuses): it plays both sides of the wall. The world is the truth the strategies execute against and are
scored on; it is the only place the simulator runs both ways (with and without the price signals), which
is how the peak reduction achieved is measured. The strategies see what a utility has: the measured
demand history, the weather service's runs, the prices as the exchange publishes them (12:00
Europe/Berlin for the next day), the fleet's SOC (the BMS), the customer registry and the contracts.

Strategies
    * ``baseline``: no optimisation: no battery moves, nothing curtailed, no DR, no price signal;
    * ``dispatch``: the rolling dispatch alone (an hourly 24-hour plan, first hour executed, as
      ``dispatch backtest``'s ``mpc``). It has no market access: the fleet's energy is a deviation from
      the day-ahead schedule, so the plan prices every battery MW at the imbalance spread (a zero
      position, :class:`PlanInputs.position_mw`);
    * ``full``: the rolling dispatch plus the day-ahead market, DR and price signals. At each gate
      closure (12:00 Europe/Berlin, the prices for the delivery day not yet known) a plan to the end of
      the delivery day gives the portfolio's bids (``market.bids``: the energy-balance duals as limit
      prices); the exchange awards them at the real clearing price (a price-taker); the hourly plans then
      follow the position, a deviation priced at the imbalance spread. Once the prices are published,
      the next day's tariff per zone is chosen with the predicted response (``market.tariff.
      choose_tariff``; the peak valued at its mean over the last four weeks' day-ahead errors of the
      import, :func:`market.tariff.error_scenarios`) and sent to the price-responsive aggregators, and the interruptible contracts
      are called where they pay (``load.dr.choose_calls``: a price above the contract's compensation,
      or a forecast import above the substation's rating). The world's VENs answer with their own code
      (``world.ven.VenField``: the same ``decide``/``apply`` the loopback VENs run, handed the events
      in-process rather than over OpenADR, a simulation's shortcut).

Cost of an hour (EUR), for every strategy alike
    * ``energy``: the substation's net import ``N`` at the day-ahead price (exports earn it);
    * ``imbalance``: ``|N - S| x spread``, ``S`` the day-ahead schedule (the net demand forecast at
      gate closure; the full strategy's also holds the predicted response, the DR it called and its
      awarded position), ``spread`` the settlement's two-price rule (``market.settlement``:
      ``max(10, 20 % of |price|)``). Settling ``S`` at the price and ``N - S`` at the imbalance price
      is exactly ``energy + imbalance``;
    * ``degradation``: the fleet's throughput at each battery's cost; ``curtailment``: curtailed energy
      at ``CURTAIL_VALUE``; ``dr_payments``: the energy the called customers took off (the world's
      truth), at their contracts' compensation; ``shed``: none is shed in these strategies;
    * the energy left in the fleet at the end against the start, at the period's median price.

Peak
    The substation's import (net of generation and the fleet; losses are not modelled). The full
    strategy's executed hours are run again by the world without the price signals (its VENs keep the
    DR events, drop the tariffs): the peak reduction achieved is the mean over days of the daily peak
    without minus with; predicted, the mean over the same days of what the tariff LP expected (its
    forecast import's peak over the error scenarios, with and without the predicted response; over
    import + margin in the first week, before there are errors to draw on). Annual peaks both ways
    beside.

Deviations, all printed in ``notes``: no limit rows in the plans (every executed hour goes through an AC
power flow afterwards and the violations are counted, as in ``dispatch backtest``); one demand model for
both strategies, trained on the history without price signals (the full strategy adds its predicted
response to it); the predicted response uses the load policy's elasticities, which are the world's (the
live loop learns them, ``price_response``), and the class loads of the same hours a week before; the
zones' prices are the day-ahead price (the sample grid's DLMPs differ from it by the loss component).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta

import numpy as np
import pandas as pd

from benchmarks.dispatch_backtest import (
    SEED,
    BacktestConfig,
    FleetState,
    Forecaster,
    Truth,
    _plan_inputs,
    _units,
    fleet_and_grid,
    measured_demand,
    publication_times,
    violations,
    world_truth,
)
from gridpipeline.storage.planner import CURTAIL_VALUE

BID_STEPS = 37
COMPONENTS = ("energy", "imbalance", "degradation", "curtailment", "dr_payments", "shed", "stored_energy")


@dataclass
class _Loads:
    """What :meth:`VenField.apply` reads and replaces."""

    load_p_mw: np.ndarray


def spread_of(price: np.ndarray) -> np.ndarray:
    """EUR/MWh a deviation from the day-ahead schedule costs (the settlement's two-price rule)."""
    from gridpipeline.market.settlement import imbalance_prices

    lo, hi = imbalance_prices(np.asarray(price, float))
    return (hi - lo) / 2.0


def hour_costs(net_mw: np.ndarray, sched_mw: np.ndarray, price: np.ndarray, power: np.ndarray, deg: np.ndarray,
               curtailed_mw: np.ndarray, dr_eur: np.ndarray, dt_h: float) -> dict[str, np.ndarray]:
    """Per hour and component (see the module docstring)."""
    return {"energy": dt_h * net_mw * price,
            "imbalance": dt_h * np.abs(net_mw - sched_mw) * spread_of(price),
            "degradation": dt_h * np.abs(power) @ deg,
            "curtailment": dt_h * curtailed_mw * CURTAIL_VALUE,
            "dr_payments": np.asarray(dr_eur, float),
            "shed": np.zeros(len(price))}


def _pad(a: np.ndarray, t: int, n: int, fill: float) -> np.ndarray:
    """``a[t:t + n]``, padded with ``fill`` past the period's end."""
    out = np.full(n, fill, dtype=float)
    part = a[t:t + n]
    out[:len(part)] = part
    return out


def daily_peaks(net_mw: np.ndarray, times: pd.DatetimeIndex) -> pd.Series:
    return pd.Series(net_mw, index=times).groupby(times.tz_convert("Europe/Berlin").date).max()


def _tariff_event(eid: str, hours: pd.DatetimeIndex, tariff: np.ndarray, zone: str) -> dict:
    from gridpipeline.common.openadr import PRICE_PROGRAMME

    return {"event_descriptor": {"event_id": eid, "market_context": PRICE_PROGRAMME},
            "event_signals": [{"signal_name": "ELECTRICITY_PRICE", "intervals": [
                {"dtstart": h.to_pydatetime(), "duration": timedelta(hours=1), "signal_payload": round(p / 1000.0, 6)}
                for h, p in zip(hours, tariff, strict=True)]}],
            "targets": [{"group_id": zone}]}


def _dr_event(call) -> dict:
    from gridpipeline.common.openadr import EVENT_PROGRAMME

    return {"event_descriptor": {"event_id": call.event_id, "market_context": EVENT_PROGRAMME},
            "event_signals": [{"signal_name": "SIMPLE", "intervals": [
                {"dtstart": call.start, "duration": call.end - call.start, "signal_payload": 1.0}]}]}


class World:
    """The world's loads under what the utility sent: the hourly means of the truth with the VENs'
    response applied at quarter hours (the tariffs are hourly, the DR paybacks half-hourly)."""

    def __init__(self, ven, load0: np.ndarray, times: pd.DatetimeIndex):
        self.ven, self.load0, self.times = ven, load0, times

    def loads(self, t0: int, t1: int, tariffs: bool = True, dr: bool = True) -> np.ndarray:
        ven = self.ven
        saved = ven.tariffs, ven.commitments
        ven.tariffs = saved[0] if tariffs else {}
        ven.commitments = saved[1] if dr else []
        try:
            q = pd.date_range(self.times[t0], periods=4 * (t1 - t0), freq="15min")
            out = ven.apply(q, _Loads(np.repeat(self.load0[t0:t1], 4, axis=0))).load_p_mw
        finally:
            ven.tariffs, ven.commitments = saved
        return np.asarray(out, float).reshape(t1 - t0, 4, -1).mean(axis=1)


def run_economics(world, prices: pd.Series, cfg: BacktestConfig | None = None, policy_path=None,
                  customers_path=None, tariff_policy=None, progress: Callable[[str], None] | None = None) -> dict:
    """The three strategies over ``cfg.start .. cfg.end``; returns the figures (module docstring)."""
    from gridpipeline.common.openadr import aggregator_ven
    from gridpipeline.load.dr import DrHistory, choose_calls
    from gridpipeline.load.policy import read_policy
    from gridpipeline.market.bids import (
        awards,
        day_hours,
        hourly_bids,
        position,
        stored_energy_value,
        validate,
    )
    from gridpipeline.market.response import class_of
    from gridpipeline.market.tariff import TariffPolicy, choose_tariff, error_scenarios
    from gridpipeline.settings import get_settings
    from gridpipeline.sources.prices import price_curve
    from gridpipeline.storage.aggregate import FleetPlanner
    from gridpipeline.storage.planner import solve_plan
    from gridpipeline.world.ven import ven_field_for

    say = progress or (lambda m: None)
    cfg = cfg or BacktestConfig()
    t_all = time.perf_counter()
    s = get_settings()
    policy_path = policy_path or s.load_policy
    customers_path = customers_path or s.customers
    tp = tariff_policy or TariffPolicy(step_minutes=60.0)
    net = world.net
    fleet, gens, imp_max = fleet_and_grid(world)
    exp_max = imp_max
    dt_h = cfg.step / pd.Timedelta(hours=1)
    if dt_h != 1.0:
        raise ValueError("the economics backtest runs hourly (the day-ahead prices' step)")

    # ---- the world: a week of history before the period (the class loads the tariff is chosen with)
    say("the world's truth over the period")
    week = pd.Timedelta(days=7)
    full_truth = world_truth(world, cfg.start - week, cfg.end, cfg.step, cfg.sub_steps)
    W = int(week / cfg.step)
    truth = Truth(full_truth.times[W:], full_truth.load_p[W:], full_truth.load_q[W:], full_truth.sgen_p[W:],
                  full_truth.sgen_q[W:])
    T = len(truth.times)
    L = truth.load_p.shape[1]
    pos = pd.Index(net.sgen.index).get_indexer(gens.sgen_index)
    other = np.setdiff1d(np.arange(len(net.sgen)), pos)
    avail_true = truth.sgen_p[:, pos]
    other_true = truth.sgen_p[:, other].sum(axis=1)
    price = prices.reindex(truth.times).ffill().bfill().to_numpy(float)
    true_price = pd.Series(price, index=truth.times.tz_convert("UTC").tz_localize(None))
    deg = fleet.degradation.to_numpy(float)
    cap = fleet.capacity_mwh.to_numpy(float)
    e0 = cfg.soc0 * cap
    end_value = float(np.median(price))

    # ---- the customers (the world's VENs) and what the utility knows of them
    ven = ven_field_for(world, policy_path, customers_path, seed=SEED)
    pol = read_policy(policy_path)
    terms = (pol.demand_response.get("price_responsive") or {})
    cust = pd.read_csv(customers_path)
    load_ids = net.load.index.to_numpy()
    cls_of = pd.Series(cust["class"].to_numpy(), index=cust.load_id.to_numpy()).reindex(load_ids).fillna("").to_numpy()
    zone_of = world.zones.reindex(net.load.bus).astype(str).to_numpy()
    zones = sorted(set(zone_of))
    # (L, Z): per load, its share x elasticity in its zone's column (the response weight per MW of load)
    wmat = np.zeros((L, len(zones)))
    for c, t in terms.items():
        m = cls_of == class_of(c, t)
        for k, z in enumerate(zones):
            wmat[m & (zone_of == z), k] += float(t["share"]) * float(t["elasticity"])  # programmes add up
    hist_load = np.vstack([full_truth.load_p[:W], np.zeros((T, L))])  # what the meters measured, full strategy
    wl = World(ven, truth.load_p, truth.times)

    # ---- baseline: nothing moves
    times_naive = truth.times.tz_convert("UTC").tz_localize(None)
    say(f"rolling dispatch, two strategies: {T} hours")
    hist_start = cfg.start - pd.Timedelta(days=cfg.train_days + 9)
    hist = measured_demand(world, hist_start, cfg.start, cfg.step, cfg.noise, cfg.sub_steps)
    live = pd.Series(truth.demand * (1 + cfg.noise * np.random.default_rng(SEED + 1).standard_normal(T)),
                     index=truth.times, name="system")
    fc = Forecaster(world, pd.concat([hist, live]), prices, gens, cfg, say)
    pub = publication_times(prices.index)
    fleets = {k: FleetState(fleet, e0.copy(), dt_h) for k in ("dispatch", "full")}
    planners = {k: FleetPlanner() for k in ("dispatch", "full", "bid")}
    caps = {k: np.full_like(avail_true, np.inf) for k in fleets}
    sched = np.full(T, np.nan)          # the day-ahead schedule: net demand forecast at gate closure
    resp_pred = np.zeros(T)             # the full strategy's predicted response (MW, + more load)
    dr_exp = np.zeros(T)                # what it counts on from the DR it called
    pos_mw = np.full(T, np.nan)         # its awarded position (+ sold)
    dayahead = np.full(T, np.nan)       # the import the full strategy expected at gate closure (+ response, - DR)
    measured = np.full(T, np.nan)       # the import its meters measured, hour by hour
    load_full, load_nosig, load_nodr = np.zeros((T, L)), np.zeros((T, L)), np.zeros((T, L))
    days: list[dict] = []
    bids_n = {"offers": 0, "bids": 0, "rejected": 0, "awarded_mwh": 0.0, "days": 0}
    dr_calls: list = []
    dr_history = DrHistory()
    gate_t = {}
    for d in pd.date_range((cfg.start - pd.Timedelta(days=1)).tz_convert("Europe/Berlin").normalize().tz_localize(None),
                           cfg.end.tz_convert("Europe/Berlin").normalize().tz_localize(None), freq="D"):
        hrs = day_hours(d)
        ix = times_naive.get_indexer(hrs)
        ix = ix[ix >= 0]
        if not len(ix):
            continue
        g = (pd.Timestamp(d).tz_localize("Europe/Berlin") - pd.Timedelta(hours=12)).tz_convert("UTC")
        gate_t.setdefault(max(int(truth.times.searchsorted(g)), 0), []).append((d, ix))
    t_fc = t_lp = t_gate = 0.0
    plan_seconds = []
    tariff_seconds = []

    def forecast(issue, steps):
        return fc.demand(issue, steps), fc.renewables(issue, steps=steps)

    def net_forecast(demand, renew, other_mw):
        return demand.p50.to_numpy(float) - sum(r.p50.to_numpy(float) for r in renew.values()) - other_mw

    def import_margin(demand, renew):  # how far the import may come out above its P50: P90 demand, P10 output
        return (demand.p90 - demand.p50).to_numpy(float) + sum((r.p50 - r.p10).to_numpy(float) for r in renew.values())

    for t, issue in enumerate(truth.times):
        # the last measured hour of the generators the plans do not control (before the period: its last hour)
        other_now = float(other_true[t - 1]) if t else float(full_truth.sgen_p[W - 1, other].sum())
        # ------------------------------------------------ gate closure: the day-ahead market, then signals
        for d, ix in gate_t.get(t, []):
            a = time.perf_counter()
            # to the end of the delivery day, on a fixed number of steps (37: the longest day from its gate)
            # so the bid planner's compiled programme is reused every day
            n = max(BID_STEPS, int(ix[-1]) + 1 - t)
            demand, renew = forecast(issue, n)
            base = net_forecast(demand, renew, other_now)
            sched[ix] = base[ix - t]
            now = issue.tz_convert("UTC").tz_localize(None).to_pydatetime()
            # bids: a plan to the end of the delivery day on the prices known before the auction
            known = prices[(pub < issue) & (prices.index > issue - pd.Timedelta(days=200))]
            pc = price_curve(known, issue, issue + n * cfg.step, cfg.step, fc.price_model).reset_index(drop=True)
            p = _plan_inputs(pd.date_range(issue, periods=n, freq=cfg.step), _units(fleet, fleets["full"].energy), gens,
                             demand.add(_pad(resp_pred - dr_exp, t, n, 0.0), axis=0), renew, pc, other_now,
                             imp_max, exp_max)
            p.position_mw = _pad(pos_mw, t, n, np.nan)
            p.position_spread = spread_of(pc.price.to_numpy(float))
            p.terminal_value = fc.terminal_value(issue, n, fleet, strict=True)  # as its prices: before the gate
            out = solve_plan(p, planners["bid"])
            hours = times_naive[ix]
            bids = hourly_bids(p.times.tz_convert("UTC").tz_localize(None), stored_energy_value(out.result),
                               out.result.battery_power, out.agg_fleet.eta_c, out.agg_fleet.eta_d,
                               out.agg_x.degradation, list(out.agg_fleet.battery_ids), hours)
            ok, rejected = validate(bids, hours)
            aw = awards(ok, true_price)
            pos_mw[ix] = position(aw, hours).to_numpy(float)
            bids_n["offers"] += int((ok.side == "sell").sum())
            bids_n["bids"] += int((ok.side == "buy").sum())
            bids_n["rejected"] += len(rejected)
            bids_n["awarded_mwh"] += float(aw.awarded_mw.sum()) if len(aw) else 0.0
            bids_n["days"] += 1
            # the tariff for the day, on its published prices, chosen with the predicted response
            b = time.perf_counter()
            zp = np.repeat(price[ix][:, None], len(zones), axis=1)
            week_ago = hist_load[ix]  # the same hours a week before (row W + i is hour i), as measured
            w = week_ago @ wmat           # (H, Z) MW moved per unit of relative price
            imp_fc = base[ix - t] - pos_mw[ix]  # the fleet delivers its position
            # where the peak may fall: the last four weeks' day-ahead errors of the import, by time of day
            # (the margin until there are seven days of them)
            scen = error_scenarios(pd.Series(measured[:t] - dayahead[:t], index=truth.times[:t]), truth.times[ix])
            ch = choose_tariff(zp, w, imp_fc, tp, import_margin=import_margin(demand, renew)[ix - t],
                               import_scenarios=scen)
            tariff_seconds.append(time.perf_counter() - b)
            resp_pred[ix] = ch.response.sum(axis=1)
            for c in terms:
                for k, z in enumerate(zones):
                    ven.decide(aggregator_ven(c), _tariff_event(f"tariff-{c}-{z}-{d:%Y%m%d}", hours,
                                                                ch.tariff[:, k], z), now)
            # DR where it pays, or where the forecast import passes the substation's rating
            comp = np.array([[float(price[i] > c.compensation_eur_mwh) * c.interruptible_mw for c in pol.contracts]
                             for i in ix]).sum(axis=1) if pol.contracts else np.zeros(len(ix))
            need = np.clip(imp_fc + resp_pred[ix] - imp_max, 0, None) + comp
            if (need > 1e-6).any():
                calls, _, _ = choose_calls(pd.Series(need, index=hours), pol, dr_history, now,
                                           pol.demand_response.get("expected_delivery", 0.8), dt=timedelta(hours=1),
                                           event_id=lambda: f"dr-{len(dr_calls)}")
                for c in calls:
                    opt = ven.decide(f"ven-load-{c.load_id}", _dr_event(c), now)
                    dr_calls.append((c, opt))
                    if opt != "optIn":
                        continue  # refused: nothing to count on
                    k = times_naive.get_indexer([pd.Timestamp(c.start)])[0]
                    kk = times_naive.get_indexer([pd.Timestamp(c.end)])[0]
                    dr_exp[k:kk if kk > 0 else T] += c.expected_mw
                    dr_history.today[c.ven_id] = dr_history.today.get(c.ven_id, 0) + 1
                    dr_history.month[c.ven_id] = dr_history.month.get(c.ven_id, 0) + 1
            dayahead[ix] = imp_fc + resp_pred[ix] - dr_exp[ix]
            days.append({"day": d, "ix": ix, "peak_before": ch.summary.get("expected_peak_before_mw"),
                         "peak_after": ch.summary.get("expected_peak_after_mw"), "status": ch.summary["status"],
                         "scenarios": ch.summary.get("scenarios", 0)})
            t_gate += time.perf_counter() - a
        if issue.tz_convert("Europe/Berlin").hour == 0:
            dr_history.today = {}
            if issue.tz_convert("Europe/Berlin").day == 1:
                dr_history.month = {}
        if np.isnan(sched[t]):  # before the period's first gate: the forecast at the start stands
            demand, renew = forecast(issue, 1)
            sched[t] = net_forecast(demand, renew, other_now)[0]
        # ------------------------------------------------ this hour's plans
        a = time.perf_counter()
        n = fc.steps(issue)
        demand, renew = forecast(issue, n)
        pc = fc.price_curve(issue, n)
        b = time.perf_counter()
        steps = pd.date_range(issue, periods=n, freq=cfg.step)
        sp = spread_of(pc.price.to_numpy(float))
        for k in ("dispatch", "full"):
            dem = demand if k == "dispatch" else demand.add(_pad(resp_pred - dr_exp, t, n, 0.0), axis=0)
            p = _plan_inputs(steps, _units(fleet, fleets[k].energy), gens, dem, renew, pc, other_now, imp_max, exp_max)
            p.terminal_value = fc.terminal_value(issue, n, fleet)  # as live (storage/value.py)
            if k == "dispatch":
                p.position_mw, p.position_spread = np.zeros(n), sp
            else:
                p.position_mw, p.position_spread = _pad(pos_mw, t, n, np.nan), sp
            out = solve_plan(p, planners[k])
            fleets[k].execute(out.power[0])
            cu = out.curtail[0]
            caps[k][t] = np.where(cu > 1e-6, np.clip(out.x.gen_avail[0] - cu, 0, None), np.inf)
        c = time.perf_counter()
        t_fc += b - a
        t_lp += c - b
        plan_seconds.append(c - a)
        # the world answers this hour (the week-old history the next tariffs are chosen on), and the same
        # hour without the tariffs and without the DR events (the VENs keep only the last days' tariffs)
        load_full[t] = wl.loads(t, t + 1)[0]
        load_nosig[t] = wl.loads(t, t + 1, tariffs=False)[0]
        load_nodr[t] = wl.loads(t, t + 1, dr=False)[0]
        hist_load[W + t] = load_full[t]
        measured[t] = (load_full[t].sum() - other_true[t] - np.minimum(avail_true[t], caps["full"][t]).sum()
                       - np.asarray(fleets["full"].power[-1]).sum())
        if t and t % 500 == 0:
            say(f"{t}/{T} hours, {np.mean(plan_seconds[-500:]):.3f} s per hour's plans")

    # ---- the world's loads both ways, and the costs
    say("costing the three strategies")
    states, nets, costs = {}, {}, {}
    none = FleetState(fleet, e0.copy(), dt_h)
    for _ in range(T):
        none.execute(np.zeros(len(fleet)))
    none.gen_out = avail_true
    states["baseline"] = none
    for k in ("dispatch", "full"):
        fleets[k].gen_out = np.minimum(avail_true, caps[k])
        states[k] = fleets[k]
    loads = {"baseline": truth.load_p, "dispatch": truth.load_p, "full": load_full}
    dr_eur = np.zeros(T)
    delivered = (load_nodr - load_full).clip(min=0)  # what the called customers took off, per load
    for c, opt in dr_calls:
        if opt != "optIn":
            continue
        k0 = times_naive.get_indexer([pd.Timestamp(c.start)])[0]
        k1 = times_naive.get_indexer([pd.Timestamp(c.end)])[0]
        k1 = T if k1 < 0 else k1
        j = int(np.flatnonzero(load_ids == c.load_id)[0])
        dr_eur[k0:k1] += delivered[k0:k1, j] * dt_h * c.compensation_eur_mwh
    for k, st in states.items():
        power = np.asarray(st.power)
        nets[k] = loads[k].sum(axis=1) - other_true - st.gen_out.sum(axis=1) - power.sum(axis=1)
    # the meters the tariff's error scenarios were drawn from measured the same import, hour by hour
    if not np.allclose(measured, nets["full"]):
        raise RuntimeError("economics backtest: the hourly measured import departs from the full strategy's")
    for k, st in states.items():
        power = np.asarray(st.power)
        sch = sched.copy()
        if k == "full":
            sch = sched + resp_pred - dr_exp - np.nan_to_num(pos_mw)
        cc = hour_costs(nets[k], sch, price, power, deg, (avail_true - st.gen_out).sum(axis=1),
                        dr_eur if k == "full" else np.zeros(T), dt_h)
        costs[k] = {n: float(v.sum()) for n, v in cc.items()}
        costs[k]["stored_energy"] = -float(np.sum(st.energy - e0)) * end_value
    totals = {k: sum(v.values()) for k, v in costs.items()}

    # ---- peaks: the full strategy's executed hours, by the world with and without the price signals
    power_full = np.asarray(fleets["full"].power)
    net_nosig = load_nosig.sum(axis=1) - other_true - fleets["full"].gen_out.sum(axis=1) - power_full.sum(axis=1)
    pk_with, pk_without = daily_peaks(nets["full"], truth.times), daily_peaks(net_nosig, truth.times)
    pred = [dd["peak_before"] - dd["peak_after"] for dd in days if dd["peak_before"] is not None]
    realised = (load_full - load_nosig).sum(axis=1)  # the customers' answer to the tariffs, MW (+ more load)
    dr_on = sum(1 for _, o in dr_calls if o == "optIn")

    # ---- AC power flow of every executed hour, each run against its own loads without batteries
    say("AC power flow of every executed hour")
    viol_d, base_d, pf1, _ = violations(world, truth, {"none": none, "dispatch": fleets["dispatch"]}, pos, cfg)
    truth_full = replace(truth, load_p=load_full, load_q=truth.load_q * np.divide(
        load_full, truth.load_p, out=np.ones_like(load_full), where=np.abs(truth.load_p) > 1e-12))
    none_full = FleetState(fleet, e0.copy(), dt_h, power=none.power, gen_out=avail_true)
    viol_f, base_f, pf2, _ = violations(world, truth_full, {"none": none_full, "full": fleets["full"]}, pos, cfg)

    r2 = lambda x: round(float(x), 2)
    saving = {k: {n: r2(costs["baseline"][n] - costs[k][n]) for n in COMPONENTS} for k in ("dispatch", "full")}
    return {
        "baseline_cost": r2(totals["baseline"]), "dispatch_cost": r2(totals["dispatch"]), "full_cost": r2(totals["full"]),
        "peak_reduction_predicted_mw": round(float(np.mean(pred)), 4) if pred else None,
        "peak_reduction_achieved_mw": round(float((pk_without - pk_with).mean()), 4),
        "savings_eur": {"dispatch": r2(totals["baseline"] - totals["dispatch"]),
                        "full": r2(totals["baseline"] - totals["full"])},
        "savings_by_component_eur": saving,
        "cost_by_component_eur": {k: {n: r2(v[n]) for n in COMPONENTS} for k, v in costs.items()},
        "peak_mw": {"mean_daily_with_signals": round(float(pk_with.mean()), 4),
                    "mean_daily_without_signals": round(float(pk_without.mean()), 4),
                    "annual_with_signals": round(float(pk_with.max()), 4),
                    "annual_without_signals": round(float(pk_without.max()), 4),
                    "mean_daily_baseline": round(float(daily_peaks(nets["baseline"], truth.times).mean()), 4),
                    "annual_baseline": round(float(nets["baseline"].max()), 4)},
        "tariff_days": len(days), "tariff_days_with_error_scenarios": sum(1 for dd in days if dd["scenarios"] > 1),
        "tariff_lp_not_optimal": sum(1 for dd in days if dd["status"] != "optimal"),
        "tariff_lp_seconds_p50": round(float(np.median(tariff_seconds)), 4) if tariff_seconds else None,
        "response": {"predicted_mwh_moved": round(float(np.abs(resp_pred).sum() * dt_h / 2), 3),
                     "realised_mwh_moved": round(float(np.abs(realised).sum() * dt_h / 2), 3),
                     "hourly_correlation": round(float(np.corrcoef(resp_pred, realised)[0, 1]), 3)
                     if np.std(resp_pred) > 0 and np.std(realised) > 0 else None,
                     "mean_abs_error_mw": round(float(np.abs(resp_pred - realised).mean()), 4)},
        "market": {**{k: (round(v, 3) if isinstance(v, float) else v) for k, v in bids_n.items()},
                   "revenue_eur": r2(np.nansum(np.nan_to_num(pos_mw) * price * dt_h)),
                   "deviation_mwh": r2(np.abs(power_full.sum(axis=1) - np.nan_to_num(pos_mw)).sum() * dt_h)},
        "dr": {"calls": len(dr_calls), "opted_in": dr_on,
               "cheapest_compensation_eur_mwh": min((c.compensation_eur_mwh for c in pol.contracts), default=None),
               "highest_price_eur_mwh": r2(price.max()),
               "delivered_mwh": round(float(sum(delivered[:, int(np.flatnonzero(load_ids == c.load_id)[0])].sum()
                                                for c in pol.contracts) * dt_h), 4) if pol.contracts else 0.0},
        "throughput_mwh": {k: round(float(np.abs(np.asarray(fleets[k].power)).sum() * dt_h), 3) for k in fleets},
        # the energy, so a saving splits into energy moved and energy not consumed: the customers'
        # consumption and the substation's net import per strategy; the tariff's net change of
        # consumption (+ more), which the response keeps at zero only on its mean price, not in MWh
        "energy_mwh": {"consumption": {k: round(float(loads[k].sum() * dt_h), 3) for k in loads},
                       "net_import": {k: round(float(nets[k].sum() * dt_h), 3) for k in nets},
                       "tariff_net_change": round(float(realised.sum() * dt_h), 3),
                       "tariff_saving_at_mean_price_eur": r2(-realised.sum() * dt_h * float(np.mean(price)))},
        "violations": {"dispatch": int(viol_d["dispatch"]), "full": int(viol_f["full"])},
        "grid_over_limit_hours_without_batteries": {"dispatch": int(base_d), "full": int(base_f)},
        "period": f"{cfg.start:%Y-%m-%d} .. {cfg.end:%Y-%m-%d}", "hours": T, "batteries": len(fleet),
        "fleet_mwh": round(float(fleet.capacity_mwh.sum()), 3),
        "zones": len(zones), "demand_model_refits": fc.refits,
        "seconds": round(time.perf_counter() - t_all, 1), "forecast_seconds": round(t_fc, 1),
        "lp_seconds": round(t_lp, 1), "gate_seconds": round(t_gate, 1), "power_flow_seconds": round(pf1 + pf2, 1),
        "notes": [
            ("hourly steps; every hour a 24-hour plan per strategy, its first hour executed; no limit rows in the plans "
            "(every executed hour is checked by an AC power flow afterwards: violations)"),
            ("cost = net import at the day-ahead price + |net import - day-ahead schedule| x the imbalance spread "
            "(max(10, 20 % of |price|)) + degradation + curtailment + DR payments; stored energy at the median price"),
            ("dispatch has no market access (its battery energy is all imbalance, and its plans price it so); full bids "
            "at gate closure on the prices known before the auction, is awarded at the real price and follows the position"),
            ("tariff: chosen per zone and day with the predicted response (choose_tariff) on the published prices, "
            f"peak valued at {tp.peak_value_eur_mw:g} EUR/MW-day (its mean over the last 28 days' day-ahead import "
            f"errors by time of day), within {tp.max_deviation:.0%} of the mean; the world's "
            "VENs answer it (VenField.decide/apply, in-process)"),
            ("one demand model for both strategies (history without signals); elasticities: the load policy's "
            "(the world's; live learns them); class loads from the same hours a week before"),
            ("DR: the interruptible contracts where the price passes their compensation or the forecast import the "
            "substation's rating (load.dr.choose_calls)"),
        ],
    }


__all__ = ["hour_costs", "run_economics", "spread_of"]
