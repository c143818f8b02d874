"""A plan's horizon on the buses, its nodal prices and the tariff: the system figures are kept, the
pattern comes from the estimated state, and the tariff follows the policy."""

from __future__ import annotations

import numpy as np
import pandapower as pp
import pandas as pd
import pytest

from gridpipeline.market.network import radial_feeder
from gridpipeline.market.signals import horizon_bus_loads, signals_for_plan
from gridpipeline.market.tariff import TariffPolicy
from gridpipeline.settings import PROJECT_ROOT


@pytest.fixture(scope="module")
def grid():
    net = pp.from_json(str(PROJECT_ROOT / "data" / "sample_grid" / "network.json"))
    f, bm, _ = radial_feeder(net)
    return net, f, bm


def test_the_horizon_keeps_the_system_figures_and_puts_batteries_at_their_buses(grid):
    net, f, bm = grid
    T = 4
    demand = np.array([20.0, 25.0, 30.0, 22.0])
    pv = np.array([0.0, 5.0, 8.0, 1.0])
    bare, _ = horizon_bus_loads(net, bm, f.n, demand, {})
    ld = np.zeros(f.n)
    np.add.at(ld, bm.reindex(net.load.bus).to_numpy().astype(int), net.load.p_mw.to_numpy())
    np.testing.assert_allclose(bare, np.outer(demand, ld / ld.sum()), atol=1e-12)  # the estimated pattern, scaled
    with_pv, q = horizon_bus_loads(net, bm, f.n, demand, {"pv": pv})
    np.testing.assert_allclose(with_pv.sum(axis=1), demand - pv, atol=1e-9)
    assert q.shape == with_pv.shape
    bat_bus = net.storage.bus.to_numpy()[:2]
    bat = np.tile([0.5, -0.2], (T, 1))
    g_bus = net.sgen.bus.to_numpy()[:1]
    curt = np.full((T, 1), 0.3)
    full, _ = horizon_bus_loads(net, bm, f.n, demand, {"pv": pv}, battery_bus=bat_bus, battery_mw=bat,
                                gen_bus=g_bus, curtailed_mw=curt)
    delta = full - with_pv
    expect = np.zeros((T, f.n))
    for b, mw in zip(bat_bus, [0.5, -0.2], strict=True):
        expect[:, int(bm[b])] -= mw  # a discharging battery lowers its bus's net load
    expect[:, int(bm[g_bus[0]])] += 0.3  # curtailment raises it
    np.testing.assert_allclose(delta, expect, atol=1e-12)


def test_signals_for_a_plan_price_the_losses_and_publish_within_the_policy(grid):
    net, f, bm = grid
    T = 12
    zone = np.array([str(b % 3) for b in range(f.n)])  # three made-up zones
    price = np.linspace(40.0, 120.0, T)
    pol = TariffPolicy(cap=100.0, floor=0.0, max_change_per_hour=240.0, step_minutes=5.0)
    s = signals_for_plan(f, bm, net, zone, np.full(T, 25.0), {"pv": np.full(T, 3.0)}, price, pol)
    assert s.dlmp.price.shape == (T, f.n) and s.tariff.shape == (T, 3)
    assert (np.abs(s.dlmp.losses).max(axis=1) > 0).all()  # losses move the buses apart
    assert s.tariff.max() <= 100.0 + 1e-9 and any(n["rule"] == "cap" for n in s.tariff_notes)
    np.testing.assert_allclose(s.dlmp.price, s.dlmp.energy + s.dlmp.losses + s.dlmp.congestion + s.dlmp.voltage,
                               atol=1e-6)


def test_export_congestion_is_priced_by_the_curtailment_behind_the_line_not_the_penalty(grid):
    """A sunny, light hour: the PV's export overloads a line once its rating is halved. With the plan's
    curtailment value offered as downward flexibility, the buses behind the line are priced at about
    minus that value (a MW more consumed there spares a MW curtailed) and the price model curtails the
    excess; without it, only the penalty could relieve the line."""
    import dataclasses

    net, f, bm = grid
    T = 2
    zone = np.zeros(f.n, dtype=str)
    demand, pv, price = np.full(T, 5.0), {"pv": np.full(T, 20.0)}, np.full(T, 50.0)
    p, _ = horizon_bus_loads(net, bm, f.n, demand, pv)
    flows = f.subtree() @ p[0]
    mon = np.isfinite(f.s_max) & (np.arange(f.n) > 0)
    line = int(np.argmin(np.where(mon, flows, np.inf)))  # the line exporting the most
    assert flows[line] < -0.1
    s_max = f.s_max.copy()
    s_max[line] = 0.5 * abs(flows[line])
    tight = dataclasses.replace(f, s_max=s_max)
    pol = TariffPolicy(cap=500.0, floor=-500.0, max_change_per_hour=1e4, step_minutes=5.0)
    with_curt = signals_for_plan(tight, bm, net, zone, demand, pv, price, pol, curtail_value=30.0)
    behind = f.subtree()[line, :].indices
    d = with_curt.dlmp
    assert d.status == "optimal" and d.unserved_mw.sum() == pytest.approx(0.0, abs=1e-9)
    assert any(b["constraint"] == "rating" and b["dual_eur_mwh"] < 0 for b in d.binding)
    assert ((d.price[:, behind] > -36) & (d.price[:, behind] < -24)).all()  # -30, give or take the losses
    assert d.down_mw[:, behind].sum(axis=1) == pytest.approx(np.full(T, 0.5 * abs(flows[line])), rel=0.05)
    assert with_curt.summary(tight, np.arange(T))["price_model_curtails_mw_max"] > 0
    without = signals_for_plan(tight, bm, net, zone, demand, pv, price, pol)
    assert (without.dlmp.price[:, behind] < -1000).all()  # the penalty: nothing else can relieve it


def test_a_tariff_chosen_for_a_responsive_load_that_follows_the_forecast_moves_energy_and_keeps_it(grid):
    """With the responsive load following the demand forecast (shape 0.8 to 1.6 of now), the tariff is
    chosen against the mean weighted by it, as the customers judge it: what the LP counts on is what the
    record predicts for the published tariff, and it sums to zero over the horizon."""
    from gridpipeline.market.response import predicted_response

    net, f, bm = grid
    T = 24
    zone = np.array(["A" if k % 2 else "B" for k in range(f.n)])
    price = 40 + 30 * np.sin(np.arange(T) / T * 2 * np.pi)
    shape = 1.2 + 0.4 * np.sin(np.arange(T) / T * 2 * np.pi)
    by = pd.DataFrame({"A": [2.0], "B": [1.0]}, index=["residential"])
    terms = {"residential": {"share": 0.2, "elasticity": -0.3}}
    from gridpipeline.market.response import response_weight

    weight = dict(zip(["A", "B"], response_weight(by, ["A", "B"], terms), strict=True))
    pol = TariffPolicy(cap=500.0, floor=-100.0, max_change_per_hour=100.0, step_minutes=60.0, peak_value_eur_mw=50.0)
    s = signals_for_plan(f, bm, net, zone, np.full(T, 25.0), {}, price, pol, response_weight=weight,
                         response_shape=shape)
    assert s.choice is not None and s.choice.summary["status"] == "optimal"
    pred = predicted_response(s.tariff, s.zones, by, terms, shape=shape)
    np.testing.assert_allclose(s.choice.response, pred, atol=1e-6)
    np.testing.assert_allclose(pred.sum(axis=0), 0.0, atol=1e-6)
    assert np.abs(pred).max() > 0.01  # it does move load
