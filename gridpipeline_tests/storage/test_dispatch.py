"""The dispatch LP on cases small enough to solve by hand, its invariants, and its refusals to do
what a battery cannot (charge and discharge at once)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridpipeline.storage.dispatch import DispatchInputs, DispatchModel, Fleet


def _three(import_max=None):
    """T = 2 one-hour steps at 10 then 50 €/MWh, no load. By hand, per MW charged at step 0 and sold at
    step 1: B1 (lossless) earns 40, B2 (charge efficiency 0.9) 0.9 x 50 - 10 = 35, B3 (lossless, 5 €/MWh
    degradation each way) 50 - 10 - 10 = 30, B3 limited to 0.5 MW. Stored energy below the target is
    worth 60 €/MWh, more than any price, so the targets hold."""
    fleet = Fleet(("B1", "B2", "B3"), eta_c=np.array([1.0, 0.9, 1.0]), eta_d=np.array([1.0, 1.0, 1.0]))
    x = DispatchInputs(
        dt_h=1.0, price_buy=np.array([10.0, 50.0]), price_sell=np.array([10.0, 50.0]), net_load=np.zeros(2),
        soc0=np.array([0.0, 0.0, 0.5]), e_min=np.zeros(3), e_max=np.array([1.0, 2.0, 1.0]),
        p_charge_max=np.array([1.0, 1.0, 0.5]), p_discharge_max=np.array([1.0, 1.0, 0.5]),
        degradation=np.array([0.0, 0.0, 5.0]), e_target=np.array([0.0, 0.0, 0.5]), terminal_value=60.0,
        import_max=import_max)
    return fleet, x


def test_three_batteries_by_hand():
    fleet, x = _three()
    r = DispatchModel(fleet, 2).solve(x)
    # all three cycle fully: -(40 + 35 + 0.5 x 30)
    assert r.objective == pytest.approx(-90.0, abs=1e-6)
    np.testing.assert_allclose(r.charge[0], [1.0, 1.0, 0.5], atol=1e-6)
    np.testing.assert_allclose(r.discharge[1], [1.0, 0.9, 0.5], atol=1e-6)
    np.testing.assert_allclose(r.energy[-1], [0.0, 0.0, 0.5], atol=1e-6)
    assert r.breakdown["degradation"] == pytest.approx(5.0, abs=1e-6)
    assert r.feasible_without_slack


def test_highs_options_follow_the_models_size_and_leave_the_optimum_alone():
    """Presolve and scaling off only for a small fleet over at most a day of 5-minute steps (the live
    plan); a wide fleet or a long horizon keeps HiGHS's defaults (dispatch.SMALL_HIGHS_OPTIONS). The hand
    case's optimum is the same either way."""
    from gridpipeline.storage.dispatch import SMALL_FLEET, SMALL_HIGHS_OPTIONS, SMALL_STEPS

    one = Fleet(("B",), eta_c=np.ones(1), eta_d=np.ones(1))
    wide = Fleet(tuple(f"B{k}" for k in range(SMALL_FLEET + 1)), eta_c=np.ones(SMALL_FLEET + 1),
                 eta_d=np.ones(SMALL_FLEET + 1))
    assert DispatchModel(one, SMALL_STEPS).highs_options == SMALL_HIGHS_OPTIONS
    assert DispatchModel(one, SMALL_STEPS + 1).highs_options == {}
    assert DispatchModel(wide, 2).highs_options == {}

    fleet, x = _three()
    small, default = DispatchModel(fleet, 2), DispatchModel(fleet, 2)
    default.highs_options = {}
    assert small.highs_options and small.solve(x).objective == pytest.approx(default.solve(x).objective, abs=1e-9)
    assert small.highs_options == SMALL_HIGHS_OPTIONS  # the solve did not consume the model's own dict


def test_a_binding_import_limit_rations_by_value_and_prices_the_limit():
    """1.8 MW of import at step 0: B1 (40/MW) takes 1, B2 (35/MW) the remaining 0.8, B3 (30/MW) none.
    The next MW of import would go to B2 first (0.2 MW to fill it): the limit's dual is 35 €/MW."""
    fleet, x = _three(import_max=np.array([1.8, 10.0]))
    r = DispatchModel(fleet, 2).solve(x)
    assert r.objective == pytest.approx(-(40 + 0.8 * 35), abs=1e-6)
    np.testing.assert_allclose(r.charge[0], [1.0, 0.8, 0.0], atol=1e-6)
    (b,) = [b for b in r.binding if b["constraint"] == "import limit"]
    assert b["step"] == 0 and abs(b["dual"]) == pytest.approx(35.0, abs=1e-6)
    assert r.feasible_without_slack


def test_an_impossible_limit_is_a_flagged_violation_not_a_crash():
    """Load of 3 MW with a 1 MW import limit and nothing to discharge: the plan imports 3 MW and says
    the import limit was exceeded by 2 MW at each step (flat prices and a cost on every cycle, so moving
    the excess from one step to the other gains nothing)."""
    fleet, x = _three(import_max=np.array([1.0, 1.0]))
    x.price_buy = x.price_sell = np.array([10.0, 10.0])
    x.degradation = np.array([1.0, 1.0, 5.0])
    x.net_load = np.array([3.0, 3.0])
    x.soc0 = np.zeros(3)
    x.e_target = np.zeros(3)
    r = DispatchModel(fleet, 2).solve(x)
    assert r.status == "optimal" and not r.feasible_without_slack
    imp = [v for v in r.violations if v["kind"] == "import limit"]
    assert [(v["step"], round(v["amount"], 6)) for v in imp] == [(0, 2.0), (1, 2.0)]


def test_a_grid_limit_caps_the_discharge_and_names_the_line():
    """Discharging B1 adds 0.5 MW per MW to line 7, already at 0.8 of its 1.0 MW: at most 0.4 MW."""
    fleet, x = _three()
    x.limit_base = np.array([[0.0], [0.8]])
    x.limit_lower, x.limit_upper = np.array([-1.0]), np.array([1.0])
    x.sens_battery = np.array([[0.5, 0.0, 0.0]])
    x.limit_names = ("line 7",)
    r = DispatchModel(fleet, 2, limit_rows=1).solve(x)
    assert r.discharge[1, 0] == pytest.approx(0.4, abs=1e-6)
    assert any(b["where"] == "line 7" and b["step"] == 1 for b in r.binding)
    assert r.feasible_without_slack


def test_no_simultaneous_charge_and_discharge_at_negative_prices():
    """At -80 €/MWh with lossy batteries and no degradation cost the LP's optimum burns energy by
    charging and discharging at once; the plan never does."""
    T, N = 24, 4
    fleet = Fleet(tuple(f"B{k}" for k in range(N)), eta_c=np.full(N, 0.9), eta_d=np.full(N, 0.9))
    price = np.where(np.arange(T) % 6 < 3, -80.0, 40.0)
    x = DispatchInputs(dt_h=1.0, price_buy=price, price_sell=price, net_load=np.zeros(T), soc0=np.full(N, 0.5),
                       e_min=np.zeros(N), e_max=np.full(N, 1.0), p_charge_max=np.full(N, 0.5),
                       p_discharge_max=np.full(N, 0.5), degradation=np.zeros(N), e_target=np.full(N, 0.5),
                       terminal_value=40.0)
    model = DispatchModel(fleet, T)
    r = model.solve(x)
    assert not ((r.charge > 1e-6) & (r.discharge > 1e-6)).any()
    assert r.solves >= 2  # the first LP did burn energy: the restriction was needed
    assert r.feasible_without_slack


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(2, 12), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_energy_follows_the_efficiency_weighted_power(T, N, seed):
    """Whatever the prices and limits: e[t+1] = e[t] + dt (eta_c c - d / eta_d), bounds kept, never both."""
    rng = np.random.default_rng(seed)
    fleet = Fleet(tuple(range(N)), eta_c=rng.uniform(0.8, 1.0, N), eta_d=rng.uniform(0.8, 1.0, N))
    cap = rng.uniform(0.5, 3.0, N)
    price = rng.normal(40, 40, T)
    x = DispatchInputs(dt_h=5 / 60, price_buy=price, price_sell=price - rng.uniform(0, 5, T),
                       net_load=rng.uniform(-2, 5, T), soc0=cap * rng.uniform(0.1, 0.9, N), e_min=cap * 0.1,
                       e_max=cap * 0.9, p_charge_max=rng.uniform(0.1, 2, N), p_discharge_max=rng.uniform(0.1, 2, N),
                       degradation=rng.uniform(0, 10, N), e_target=cap * 0.5, terminal_value=40.0,
                       import_max=np.full(T, rng.uniform(1, 10)))
    r = DispatchModel(fleet, T).solve(x)
    expect = r.energy[:-1] + x.dt_h * (r.charge * fleet.eta_c - r.discharge / fleet.eta_d)
    np.testing.assert_allclose(r.energy[1:], expect, atol=1e-6)
    assert (r.energy >= x.e_min - 1e-6).all() and (r.energy <= x.e_max + 1e-6).all()
    assert not ((r.charge > 1e-6) & (r.discharge > 1e-6)).any()


def test_no_simultaneous_charge_and_discharge_on_the_real_2018_negative_hours():
    """Every day of 2018 with negative German day-ahead prices (134 hours, SMARD), planned hourly with
    lossy batteries and no degradation cost: not one hour charges and discharges one battery at once."""
    from gridpipeline.world.price_exchange import load_reference

    ref = load_reference()
    assert int((ref < 0).sum()) == 134
    local = ref.tz_convert("Europe/Berlin")
    days = sorted({d for d, v in zip(local.index.date, local.to_numpy()) if v < 0})
    N = 3
    fleet = Fleet(tuple(f"B{k}" for k in range(N)), eta_c=np.full(N, 0.9), eta_d=np.full(N, 0.9))
    model = DispatchModel(fleet, 24)
    soc, hours, neg_seen = np.full(N, 0.5), 0, 0
    for day in days:
        price = local[local.index.date == day].to_numpy()[:24]
        if len(price) < 24:  # the spring-forward day has 23 hours
            price = np.pad(price, (0, 24 - len(price)), mode="edge")
        x = DispatchInputs(dt_h=1.0, price_buy=price, price_sell=price, net_load=np.zeros(24), soc0=soc,
                           e_min=np.zeros(N), e_max=np.full(N, 1.0), p_charge_max=np.full(N, 0.5),
                           p_discharge_max=np.full(N, 0.5), degradation=np.zeros(N), e_target=np.full(N, 0.5),
                           terminal_value=float(np.median(price)))
        r = model.solve(x)
        assert not ((r.charge > 1e-6) & (r.discharge > 1e-6)).any(), day
        assert r.feasible_without_slack
        hours += 24
        neg_seen += int((price < 0).sum())
        soc = r.energy[-1]
    assert neg_seen >= 134 and len(days) >= 10


def test_stored_energy_at_the_end_is_valued_both_ways_by_hand():
    """One lossless 1 MWh battery, empty, one hour at 10 €/MWh. Energy short of the target costs 30 €/MWh.
    Worthless above the target, nothing is bought (objective 0); credited at 30 €/MWh above it, 1 MWh is
    bought for 10 and is worth 30 (objective -20); a surplus credit above the shortfall price is cut to
    it (an LP: the value of stored energy stays concave)."""
    fleet = Fleet(("B",), eta_c=np.ones(1), eta_d=np.ones(1))

    def x(surplus):
        return DispatchInputs(dt_h=1.0, price_buy=np.array([10.0]), price_sell=np.array([10.0]), net_load=np.zeros(1),
                              soc0=np.zeros(1), e_min=np.zeros(1), e_max=np.ones(1), p_charge_max=np.ones(1),
                              p_discharge_max=np.ones(1), degradation=np.zeros(1), e_target=np.zeros(1),
                              terminal_value=30.0, surplus_value=surplus)

    m = DispatchModel(fleet, 1)
    assert m.solve(x(0.0)).objective == pytest.approx(0.0, abs=1e-6)
    r = m.solve(x(30.0))
    assert r.objective == pytest.approx(-20.0, abs=1e-6)
    np.testing.assert_allclose(r.charge[0], [1.0], atol=1e-6)
    assert r.breakdown["terminal_surplus"] == pytest.approx(-30.0, abs=1e-6)
    assert m.solve(x(99.0)).objective == pytest.approx(-20.0, abs=1e-6)


@pytest.mark.parametrize("const_sens", [False, True])
def test_reactive_power_before_curtailment_where_voltage_binds_by_hand(const_sens):
    """A generator making 2 MW raises a bus to 1.06 pu (limit 1.05): each MW curtailed takes 0.01 pu
    off, each Mvar absorbed 0.02 pu. With 0.5 Mvar of room in its inverter it absorbs 0.5 Mvar and
    nothing is curtailed (0.25 €: 0.5 Mvarh at 0.5 €); with 0.3 Mvar it absorbs those and curtails
    the rest, 0.4 MW (12 € + 0.15 €); with none it curtails 1 MW (30 €)."""
    fleet = Fleet(("B",), eta_c=np.ones(1), eta_d=np.ones(1), generator_ids=("PV",))
    sb, sg, sq = np.zeros((1, 1)), np.array([[0.01]]), np.array([[0.02]])

    def x(q_room):
        return DispatchInputs(dt_h=1.0, price_buy=np.zeros(1), price_sell=np.zeros(1), net_load=np.zeros(1),
                              soc0=np.zeros(1), e_min=np.zeros(1), e_max=np.ones(1), p_charge_max=np.zeros(1),
                              p_discharge_max=np.zeros(1), degradation=np.zeros(1), e_target=np.zeros(1),
                              terminal_value=0.0, gen_avail=np.array([[2.0]]), curtail_value=np.array([30.0]),
                              limit_base=np.array([[1.06]]), limit_lower=np.array([0.95]), limit_upper=np.array([1.05]),
                              sens_battery=sb, sens_generator=sg, sens_generator_q=sq, limit_names=("bus 3 voltage",),
                              q_max=np.array([[q_room]]))

    m = (DispatchModel(fleet, 1, limit_rows=1, sens_battery=sb, sens_generator=sg, sens_generator_q=sq) if const_sens
         else DispatchModel(fleet, 1, limit_rows=1))
    for room, q, curt, cost in ((0.5, -0.5, 0.0, 0.25), (0.3, -0.3, 0.4, 12.15), (0.0, 0.0, 1.0, 30.0)):
        r = m.solve(x(room))
        assert r.reactive[0, 0] == pytest.approx(q, abs=1e-6)
        assert r.curtail[0, 0] == pytest.approx(curt, abs=1e-6)
        assert r.objective == pytest.approx(cost, abs=1e-6)
        assert r.feasible_without_slack


def test_a_market_position_is_followed_unless_deviating_pays_more_than_the_spread():
    """The three-battery case with the fleet sold 0.5 MW at step 1 and nothing at step 0, deviations at
    100 EUR/MWh. Charging at step 0 would deviate (100/MW against at most 40 earned), so only B3 can
    deliver: it sells its 0.5 MWh at 50 below its target (worth 60) with 5 of degradation, 7.5 EUR,
    against 50 EUR for not delivering. Objective -25 + 2.5 + 30 = 7.5. With no spread, or no position,
    the plan is the one without a market (-90)."""
    fleet, x = _three()
    x.position = np.array([0.0, 0.5])
    x.position_spread = np.array([100.0, 100.0])
    m = DispatchModel(fleet, 2)
    r = m.solve(x)
    np.testing.assert_allclose((r.discharge - r.charge).sum(axis=1)[1], 0.5, atol=1e-6)
    assert r.objective == pytest.approx(-50 * 0.5 + 5 * 0.5 + 60 * 0.5, abs=1e-6)
    assert r.breakdown["imbalance"] == pytest.approx(0.0, abs=1e-6)
    x.position_spread = np.zeros(2)
    assert m.solve(x).objective == pytest.approx(-90.0, abs=1e-6)
    x.position = np.array([np.nan, np.nan])
    assert m.solve(x).objective == pytest.approx(-90.0, abs=1e-6)


def test_the_value_of_stored_energy_is_read_from_the_duals():
    """One lossless battery charging at full power for one hour at 40 EUR/MWh, its energy at the end worth
    50 EUR/MWh (power-limited: the value of stored energy is pinned at 50, whatever the sign convention)."""
    from gridpipeline.market.bids import stored_energy_value

    fleet = Fleet(("B",), eta_c=np.ones(1), eta_d=np.ones(1))
    x = DispatchInputs(dt_h=1.0, price_buy=np.array([40.0, 40.0]), price_sell=np.array([40.0, 40.0]),
                       net_load=np.zeros(2), soc0=np.zeros(1), e_min=np.zeros(1), e_max=np.full(1, 5.0),
                       p_charge_max=np.ones(1), p_discharge_max=np.ones(1), degradation=np.zeros(1),
                       e_target=np.zeros(1), terminal_value=50.0, surplus_value=50.0)
    r = DispatchModel(fleet, 2).solve(x)
    np.testing.assert_allclose(stored_energy_value(r), [[50.0], [50.0]], atol=1e-6)
