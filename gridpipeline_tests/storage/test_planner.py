"""One plan of the sample world's fleet from tables: units left out with reasons, reserve and
headroom honoured, never charging and discharging at once, curtailment at a negative price, and the
alternatives (do nothing, the rule) costed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gridpipeline.storage import planner as pl
from gridpipeline.world.model import load_world


@pytest.fixture(scope="module")
def net():
    return load_world("sample").net


def _inputs(net, T=96):
    times = pd.date_range("2026-06-15 00:00", periods=T, freq="5min", tz="UTC")
    fleet = pl.fleet_table(net)
    bms = pd.DataFrame({"battery_id": fleet.battery_id, "available": True, "reason": "",
                        "energy_mwh": 0.5 * fleet.capacity_mwh, "capacity_mwh": fleet.capacity_mwh})
    bms.loc[1, ["available", "reason"]] = [False, "no answer: ModbusIOException"]
    bms = bms.drop(index=2)  # never reported
    fleet.loc[3, ["soc_min", "soc_max"]] = [0.9, 0.2]
    units = pl.units_now(fleet, bms)
    gens = pl.generator_table(net)
    hour = np.arange(T) * 5 / 60
    demand = pd.DataFrame({"p50": 20 + 5 * np.sin(hour / 24 * 2 * np.pi)})
    demand["p10"], demand["p90"] = demand.p50 * 0.95, demand.p50 * 1.05
    sun = np.clip(np.sin((hour - 2) / 12 * np.pi), 0, None)
    pv_cap = float(gens.rating_mw[gens.kind == "pv"].sum())
    pv = pd.DataFrame({"p50": 0.6 * pv_cap * sun, "capacity_mw": pv_cap})
    pv["p10"], pv["p90"] = pv.p50 * 0.7, pv.p50 * 1.2
    price = np.where((hour >= 3) & (hour < 5), -80.0, np.where(hour >= 6, 120.0, 40.0))
    prices = pd.DataFrame({"price": price, "source": np.where(hour < 4, "known", "forecast")})
    return pl.PlanInputs(times=times, units=units, generators=gens, demand=demand, renewables={"pv": pv},
                         prices=prices, ramps=2)


def _sunny(net):
    """The fixture's inputs with the PV forecast moved 5 hours earlier, so its first hour has sun."""
    p = _inputs(net)
    pv = p.renewables["pv"]
    p.renewables = {"pv": pd.DataFrame(np.roll(pv.to_numpy(), -60, axis=0), columns=pv.columns)}
    return p


def _line_99(p, s_battery=None):
    """One monitored line at 99 % that rises 2 % per MW of PV lost (and by ``s_battery`` per MW of each
    battery's discharge)."""
    from gridpipeline.storage.limits import LimitRows

    s_gen = np.where(p.generators.kind.to_numpy() == "pv", -2.0, 0.0)[None, :]
    s_bat = np.zeros((1, len(p.units))) if s_battery is None else s_battery
    return LimitRows(("line 7 loading",), np.array([99.0]), np.array([0.0]), np.array([100.0]),
                     s_bat, s_gen, np.zeros((1, 1)), ("z",))


def test_a_plan_of_the_sample_fleet(net):
    p = _inputs(net)
    u = p.units.set_index("battery_id")
    assert u.loc["BESS_2", "reason"].startswith("no answer") and u.loc["BESS_3", "reason"] == "no BMS reading"
    assert u.loc["BESS_4", "reason"] == "contradictory limits: SOC min above SOC max"
    out = pl.solve_plan(p)
    T, N = out.power.shape
    assert (T, N) == (96, 64)
    assert np.allclose(out.power[:, 1:4], 0.0)  # the units left out get nothing
    # reserve + headroom: no home battery goes below its 20 % backup reserve plus the headroom
    lo = out.x.e_min
    assert (out.energy >= lo[None, :] - 1e-6).all() and (out.energy <= out.x.e_max[None, :] + 1e-6).all()
    home = (p.units.vpp == "VPP_HOME").to_numpy()
    assert (lo[home] >= 0.2 * p.units.capacity_mwh[home] - 1e-12).all()
    # the adverse hour's energy is sized, but the substation (no import limit given) carries it
    assert out.info["headroom_quantile_deficit_mwh"] > 0 and out.info["ramps_next_24h"] == 2
    assert out.info["headroom_deficit_mwh"] == 0
    assert out.info["headroom_held_because"]["deficit"] == "the substation imports the deviation"
    # never charging and discharging at once
    c, d = out.result.charge, out.result.discharge
    assert not ((c > 1e-6) & (d > 1e-6)).any()
    # cheap and negative hours charge, dear hours discharge
    assert out.power[36:60].sum() < 0 and out.power[72:].sum() > 0
    # curtailment at the negative price, with its reason
    cr = out.curtailment(p.times)
    assert len(cr) and set(cr.reason) <= {"negative price", "storage full"}
    assert cr.step_start.isin(p.times[36:60]).all()
    # alternatives are costed; the plan beats both
    k = out.costs
    assert k["plan_eur"] < k["do_nothing_eur"] and k["plan_eur"] <= k["rule_based_eur"] + 1e-6
    tabs = pl.plan_tables(p, out.power, out.energy, out.curtail, out.x)
    assert len(tabs["batteries"]) == T * N and len(tabs["substation"]) == T
    assert set(tabs["substation"].price_label) == {"known", "forecast"}


def test_the_fleet_holds_back_only_what_the_grid_cannot_carry(net):
    """The headroom by hand on the fixture's first hour with the sun up (12 five-minute steps, ramps 2:
    factor 1.5):
    the adverse net load is P90 demand less P10 PV; the fleet holds its excess over the import limit,
    and all of the adverse energy when the PV shortfall would take a monitored line past its limit."""

    p = _sunny(net)
    ren = p.renewables["pv"][["p10", "p50", "p90"]].reset_index(drop=True)
    dt, k = 5 / 60, 1.5
    deficit_q, surplus_q = pl.headroom_mwh(p.demand, ren, dt, p.ramps)
    assert deficit_q == pytest.approx(((p.demand.p90 - p.demand.p50)[:12].sum()
                                       + (ren.p50 - ren.p10)[:12].sum()) * dt * k)
    # no import limit: nothing held
    assert pl.held_headroom(p, ren, deficit_q, surplus_q, dt)[:2] == (0.0, 0.0)
    # an import limit 0.5 MW under the adverse hour's peak: its excess is held
    net_hi = (p.demand.p90 - ren.p10).to_numpy()[:12]
    p.import_max_mw = float(net_hi.max()) - 0.5
    held, _, why = pl.held_headroom(p, ren, deficit_q, surplus_q, dt)
    assert held == pytest.approx(np.clip(net_hi - p.import_max_mw, 0, None).sum() * dt * k) and held > 0
    assert why["deficit"] == "beyond the import limit"
    p.import_max_mw = pl.IMPORT_MAX_MW
    # a line at 99 % that rises 2 % per MW of PV lost: the P10 outcome takes it past 100 %
    p.limits = _line_99(p)
    base = np.full((len(p.times), 1), 99.0)
    assert pl.gen_availability(p, "p50")[:12].sum() > pl.gen_availability(p, "p10")[:12].sum() + 0.5
    held, _, why = pl.held_headroom(p, ren, deficit_q, surplus_q, dt, base)
    assert held == pytest.approx(deficit_q) and why["deficit"] == "the adverse outcome would take line 7 loading past its limit"
    # the same line at 50 %: the grid carries it again
    assert pl.held_headroom(p, ren, deficit_q, surplus_q, dt, base - 49.0)[0] == 0.0


def test_limit_rows_keep_the_adverse_outcome_within_the_limit(net):
    """A row's base moves by the adverse outcome toward its nearer limit, at most to it; a row already
    past is left; and a plan's rows are built that way (the 99 % line above rises 2 % per MW of PV lost,
    so with the P10 PV hour it is planned at its limit: no action may raise it)."""
    from gridpipeline.storage.limits import LimitRows

    rows = LimitRows(("a", "b", "c", "d"), np.zeros(4), np.array([0.0, 0.0, 0.0, 0.95]),
                     np.array([100.0, 100.0, 100.0, 1.05]), np.zeros((4, 1)), np.zeros((4, 1)), np.zeros((4, 1)), ("z",))
    base = np.array([[99.0, 30.0, 101.0, 0.951]])
    up, down = np.array([[2.0, 2.0, 2.0, 0.0]]), np.array([[0.0, 5.0, 0.0, 0.01]])
    assert pl.robust_base(base, rows, up, down)[0].tolist() == pytest.approx([100.0, 25.0, 101.0, 0.95])

    p = _sunny(net)
    s_bat = np.zeros((1, len(p.units)))
    s_bat[0, 0] = 1.0  # BESS_1's discharge raises it 1 % per MW
    p.limits = _line_99(p, s_bat)
    p.limit_base = np.full((len(p.times), 1), 99.0)
    _, x, _ = pl.build_inputs(p)
    up, _ = pl.adverse_moves(p)
    assert up[0, 0] == pytest.approx(2.0 * (pl.gen_availability(p, "p50")[0] - pl.gen_availability(p, "p10")[0]).sum())
    assert x.limit_base[0, 0] == pytest.approx(100.0) and up[0, 0] > 1.0
    out = pl.solve_plan(p)
    # the dear evening (120 EUR/MWh from step 72) with the sun still up: the others sell, BESS_1 does not
    assert (up[72:, 0] > 1.0).all() and out.power[72:, 4:].sum() > 0
    assert out.power[72:, 0].max() <= 1e-6


def test_without_the_adverse_move_the_same_battery_would_sell(net, monkeypatch):
    """The control of the test above: with the base as forecast, BESS_1 sells into the 1 % of room."""

    p = _sunny(net)
    s_bat = np.zeros((1, len(p.units)))
    s_bat[0, 0] = 1.0
    p.limits = _line_99(p, s_bat)
    p.limit_base = np.full((len(p.times), 1), 99.0)
    monkeypatch.setattr(pl, "robust_base", lambda base, rows, up, down: np.asarray(base, float))
    out = pl.solve_plan(p)
    assert out.power[72:, 0].max() > 0.5
