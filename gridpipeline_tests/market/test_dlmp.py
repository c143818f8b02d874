"""DLMPs from LinDistFlow: the hand-solved 3-bus cases with a line congested by import and by export, an
uncongested one, and a voltage-bound feeder, each price equal to the sum of its components."""

from __future__ import annotations

import numpy as np
import pytest

from gridpipeline.market.dlmp import RadialFeeder, solve_dlmp


def three_bus(limit_01: float = 10.0) -> RadialFeeder:
    """Substation 0 - bus 1 - bus 2, a line rated ``limit_01`` MVA into bus 1, 100 MVA into bus 2."""
    return RadialFeeder(bus_ids=np.array([0, 1, 2]), parent=np.array([-1, 0, 1]), r=np.array([0.0, 1e-3, 1e-3]),
                        x=np.array([0.0, 1e-3, 1e-3]), s_max=np.array([np.inf, limit_01, 100.0]), base_mva=10.0)


def test_the_hand_solved_three_bus_case_separates_at_the_congested_line():
    """Loads 6 MW at bus 1 and 8 MW at bus 2; the grid sells at 50 EUR/MWh; bus 2 can turn up 10 MW of
    local generation at 80. The line into bus 1 carries at most 10 MW, so 4 MW must come from bus 2's
    generator. A MW more at bus 1 or 2 can only come from it: both prices are 80, bus 0's is 50, and the
    30 between them is the congestion component (the rating's dual)."""
    r = solve_dlmp(three_bus(), load_mw=[[0.0, 6.0, 8.0]], price=[50.0], flex_mw=[[0.0, 0.0, 10.0]],
                   flex_cost=[0.0, 0.0, 80.0])
    np.testing.assert_allclose(r.price[0], [50.0, 80.0, 80.0], atol=1e-6)
    np.testing.assert_allclose(r.energy[0], [50.0, 50.0, 50.0])
    np.testing.assert_allclose(r.congestion[0], [0.0, 30.0, 30.0], atol=1e-6)
    np.testing.assert_allclose(r.voltage[0], 0.0, atol=1e-6)
    np.testing.assert_allclose(r.flex_mw[0], [0.0, 0.0, 4.0], atol=1e-6)
    assert r.import_mw[0] == pytest.approx(10.0)
    assert [b["element"] for b in r.binding] == ["line to 1"] and r.binding[0]["dual_eur_mwh"] == pytest.approx(30.0)


def test_the_hand_solved_three_bus_case_congested_by_export_prices_the_curtailment():
    """Bus 1 consumes 2 MW; bus 2's PV produces 14 MW, which it can curtail at 30 EUR/MWh (the value of
    the energy lost: a feed-in premium). The line into bus 1 carries at most 10 MW either way, and the
    export would be 12 MW, so 2 MW are curtailed. A MW more consumed at bus 1 or 2 stays behind the
    line and spares a MW of curtailment: it saves 30 and buys nothing from the grid, so both prices are
    -30. The congestion component is -80 (the rating's dual, on the export side), bus 0 pays 50."""
    r = solve_dlmp(three_bus(), load_mw=[[0.0, 2.0, -14.0]], price=[50.0], down_mw=[[0.0, 0.0, 14.0]],
                   down_cost=[0.0, 0.0, 30.0])
    np.testing.assert_allclose(r.price[0], [50.0, -30.0, -30.0], atol=1e-6)
    np.testing.assert_allclose(r.congestion[0], [0.0, -80.0, -80.0], atol=1e-6)
    np.testing.assert_allclose(r.price, r.energy + r.losses + r.congestion + r.voltage, atol=1e-6)
    np.testing.assert_allclose(r.down_mw[0], [0.0, 0.0, 2.0], atol=1e-6)
    np.testing.assert_allclose(r.flex_mw, 0.0, atol=1e-9)
    assert r.import_mw[0] == pytest.approx(-10.0)
    assert [b["element"] for b in r.binding] == ["line to 1"] and r.binding[0]["dual_eur_mwh"] == pytest.approx(-80.0)
    # the whole-grid program agrees with the merit order that settled it
    slow = solve_dlmp(three_bus(), load_mw=[[0.0, 2.0, -14.0]], price=[50.0], down_mw=[[0.0, 0.0, 14.0]],
                      down_cost=[0.0, 0.0, 30.0], decompose=False)
    np.testing.assert_allclose(slow.price, r.price, atol=1e-6)
    np.testing.assert_allclose(slow.down_mw, r.down_mw, atol=1e-6)


def test_export_congestion_backs_off_running_generation_before_curtailing():
    """Bus 2 also has 3 MW of local generation running because it is cheaper (20) than the grid (50).
    Backing it off nets 30 per MW (the grid's 50 less its 20), curtailing the PV costs 80 (its 30 and
    the grid's 50): the 2 MW come off the local generator, whose net cost (30) is the rating's dual.
    Prices behind the line: 50 - 30 = 20, the local generator's cost."""
    kw = {"load_mw": [[0.0, 2.0, -11.0]], "price": [50.0], "flex_mw": [[0.0, 0.0, 3.0]], "flex_cost": [0, 0, 20.0],
          "down_mw": [[0.0, 0.0, 11.0]], "down_cost": [0.0, 0.0, 30.0]}
    r = solve_dlmp(three_bus(), **kw)
    np.testing.assert_allclose(r.flex_mw[0], [0.0, 0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(r.down_mw, 0.0, atol=1e-9)
    np.testing.assert_allclose(r.price[0], [50.0, 20.0, 20.0], atol=1e-6)
    slow = solve_dlmp(three_bus(), screen=False, **kw)
    np.testing.assert_allclose(slow.price, r.price, atol=1e-6)


def test_downward_flexibility_runs_on_its_own_below_minus_its_cost():
    """At -50 EUR/MWh curtailing PV that costs 30 to curtail earns 20 per MW: it runs with no limit binding,
    and the price stays the energy's. At -10 it does not."""
    r = solve_dlmp(three_bus(limit_01=100.0), load_mw=[[0.0, 1.0, -5.0]] * 2, price=[-50.0, -10.0],
                   down_mw=[[0.0, 0.0, 5.0]] * 2, down_cost=[0.0, 0.0, 30.0])
    np.testing.assert_allclose(r.down_mw[:, 2], [5.0, 0.0])
    np.testing.assert_allclose(r.price, [[-50.0] * 3, [-10.0] * 3], atol=1e-9)
    assert r.binding == []


def test_without_congestion_every_bus_pays_the_energy_price_and_the_losses():
    lf = np.array([0.0, 0.01, 0.03])
    r = solve_dlmp(three_bus(limit_01=100.0), load_mw=[[0.0, 6.0, 8.0], [0.0, 1.0, 2.0]], price=[50.0, -10.0],
                   flex_mw=[[0.0, 0.0, 10.0]] * 2, flex_cost=[0.0, 0.0, 80.0], loss_factor=lf)
    np.testing.assert_allclose(r.price, [[50.0, 50.5, 51.5], [-10.0, -10.1, -10.3]], atol=1e-6)
    np.testing.assert_allclose(r.losses, [50.0 * lf, -10.0 * lf])
    assert r.flex_mw.max() == pytest.approx(0.0, abs=1e-9) and r.binding == []


def test_a_voltage_bound_feeder_prices_the_band_and_the_components_add_up():
    """Five buses in a row with a high resistance: the far end's voltage would fall below 0.95 pu, so the
    local flexibility at the end is used, and prices rise along the feeder by the voltage component."""
    n = 5
    f = RadialFeeder(bus_ids=np.arange(n), parent=np.arange(-1, n - 1), r=np.r_[0.0, np.full(n - 1, 0.02)],
                     x=np.r_[0.0, np.full(n - 1, 0.02)], s_max=np.full(n, np.inf), base_mva=10.0)
    load = np.array([[0.0, 2.0, 2.0, 2.0, 3.0]])
    r = solve_dlmp(f, load_mw=load, load_mvar=0.3 * load, price=[40.0], flex_mw=[[0, 0, 0, 0, 3.0]],
                   flex_cost=[0, 0, 0, 0, 120.0])
    assert r.v[0, -1] == pytest.approx(0.95 ** 2, abs=1e-6)  # the band binds at the far end
    assert 0 < r.flex_mw[0, -1] < 3.0
    assert (np.diff(r.price[0]) > 0).all() and r.price[0, -1] == pytest.approx(120.0, abs=1e-6)
    np.testing.assert_allclose(r.price, r.energy + r.losses + r.congestion + r.voltage, atol=1e-6)
    assert any(b["constraint"] == "voltage low" for b in r.binding)


def test_load_beyond_every_limit_is_unserved_at_voll_not_an_infeasible_program():
    r = solve_dlmp(three_bus(limit_01=5.0), load_mw=[[0.0, 6.0, 8.0]], price=[50.0], voll=3000.0)
    assert r.status == "optimal" and r.unserved_mw.sum() == pytest.approx(9.0, abs=1e-6)
    np.testing.assert_allclose(r.price[0, 1:], 3000.0, atol=1e-6)  # the price says the load is short


def test_the_closed_form_steps_price_as_the_program_does():
    """Steps where no limit binds are settled without the LP; forcing them through it changes nothing,
    also where cheap flexibility runs (30 against 50) and at a negative price."""
    rng = np.random.default_rng(3)
    load = np.c_[np.zeros(6), rng.uniform(1, 4, (6, 2))]
    load[2] = [0.0, 6.0, 8.0]  # this step congests the line into bus 1
    kw = {"load_mw": load, "price": [50, 50, 50, -20, 10, 50], "flex_mw": np.tile([0.0, 1.0, 10.0], (6, 1)),
          "flex_cost": [0.0, 30.0, 80.0], "loss_factor": [0.0, 0.01, 0.02]}
    fast = solve_dlmp(three_bus(), **kw)
    slow = solve_dlmp(three_bus(), screen=False, **kw)
    np.testing.assert_allclose(fast.price, slow.price, atol=1e-6)
    np.testing.assert_allclose(fast.flex_mw, slow.flex_mw, atol=1e-6)
    assert {b["step"] for b in fast.binding} == {2}
    assert fast.flex_mw[0, 1] == pytest.approx(1.0)  # 30 < 50 x 1.01: the cheap one runs


@pytest.mark.parametrize("seed", range(10))
def test_decomposed_by_subtree_prices_as_the_whole_grid_program(seed):
    """A random radial grid (a busbar with feeders), lines rated so that different subtrees overload in
    different steps, flexibility everywhere at random costs: relieving a step's overloaded lines by the
    merit order of the flexibility below them, or solving their subtrees alone, gives the whole-grid
    program's prices and dispatch (voltage binding too in odd seeds, which the decomposition hands to
    the whole-grid program). Seeds 5-9 add PV that exports at every other step, so lines overload by
    export too and are relieved by curtailment or by backing off local generation; some prices are
    negative. Over the ten seeds both shortcuts and the fallback are taken."""
    rng = np.random.default_rng(seed)
    n, T = 60, 8
    parent = np.r_[-1, 0, [int(rng.integers(1, j)) for j in range(2, n)]]
    f0 = RadialFeeder(bus_ids=np.arange(n), parent=parent, r=np.r_[0.0, rng.uniform(1e-4, 3e-3, n - 1)],
                      x=np.r_[0.0, rng.uniform(1e-4, 3e-3, n - 1)], s_max=np.full(n, np.inf), base_mva=10.0,
                      v_min=0.9 if seed % 2 else 0.5)
    load = np.c_[np.zeros(T), rng.uniform(0.05, 0.4, (T, n - 1))] * rng.uniform(0.6, 1.4, (T, 1))
    pv = np.zeros((T, n))
    if seed >= 5:  # PV at a third of the buses, exporting at noon: lines overload both ways
        at = rng.choice(np.arange(1, n), n // 3, replace=False)
        pv[:, at] = rng.uniform(0.3, 1.2, (T, len(at))) * (np.arange(T) % 2 == 0)[:, None]
    load = load - pv
    L = f0.subtree()
    flows = (L @ load.T).T
    s_max = np.full(n, np.inf)
    rated = rng.choice(np.arange(2, n), 8, replace=False)
    s_max[rated] = np.quantile(np.abs(flows[:, rated]), 0.6, axis=0)  # overloaded in about 40 % of the steps
    f = RadialFeeder(bus_ids=f0.bus_ids, parent=parent, r=f0.r, x=f0.x, s_max=s_max, base_mva=10.0, v_min=f0.v_min)
    kw = {"load_mw": load, "load_mvar": 0.2 * load, "price": rng.uniform(20, 90, T),
          "flex_mw": rng.uniform(0, 0.3, (T, n)), "flex_cost": rng.uniform(10, 200, n),
          "loss_factor": rng.uniform(0, 0.03, n), "down_mw": pv + rng.uniform(0, 0.1, (T, n)),
          "down_cost": rng.uniform(-60, 80, n)}  # curtailment at its value; a load turned up may pay to run
    kw["price"][::3] = -kw["price"][::3]  # negative prices: some downward flexibility runs on its own
    fast = solve_dlmp(f, **kw)
    slow = solve_dlmp(f, decompose=False, **kw)
    assert fast.unserved_mw.sum() == pytest.approx(slow.unserved_mw.sum(), abs=1e-6)
    np.testing.assert_allclose(fast.price, slow.price, atol=1e-5)
    def cost_of(r):
        return (kw["price"][:, None] * (1 + kw["loss_factor"]) * (load - r.flex_mw + r.down_mw)).sum() + \
            (kw["flex_cost"] * r.flex_mw).sum() + (kw["down_cost"] * r.down_mw).sum()

    cost, cost_slow = cost_of(fast), cost_of(slow)
    assert cost == pytest.approx(cost_slow, rel=1e-7, abs=1e-6)
    np.testing.assert_allclose(fast.loading_pct, slow.loading_pct, atol=1e-4)
    np.testing.assert_allclose(fast.price, fast.energy + fast.losses + fast.congestion + fast.voltage, atol=1e-6)
    assert {(b["step"], b["element"]) for b in fast.binding if b["constraint"] == "rating"} == \
        {(b["step"], b["element"]) for b in slow.binding if b["constraint"] == "rating"}
