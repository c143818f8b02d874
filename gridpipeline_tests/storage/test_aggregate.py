"""The fast path against the monolithic LP on the same fleet."""

from __future__ import annotations

import numpy as np
import pytest

from gridpipeline.storage.aggregate import FleetPlanner, clusters_of, member_cost
from gridpipeline.storage.dispatch import DispatchInputs, DispatchModel, Fleet


def _fleet(N=40, T=96, seed=3):
    rng = np.random.default_rng(seed)
    fleet = Fleet(tuple(range(N)), eta_c=np.full(N, 0.95), eta_d=np.full(N, 0.95))
    cap = rng.uniform(0.010, 0.015, N)
    price = 50 + 30 * np.sin(np.arange(T) / T * 4 * np.pi) + rng.normal(0, 5, T)
    x = DispatchInputs(dt_h=0.25, price_buy=price, price_sell=price - 1, net_load=np.full(T, 0.5),
                       soc0=cap * rng.uniform(0.2, 0.8, N), e_min=cap * 0.1, e_max=cap * 0.95,
                       p_charge_max=cap / 2, p_discharge_max=cap / 2, degradation=np.full(N, 20.0),
                       e_target=cap * 0.5, terminal_value=60.0)
    feeder = np.arange(N) % 4
    return fleet, x, feeder


def test_clusters_keep_feeders_and_parameters_apart():
    cl = clusters_of(np.array([0, 0, 1, 1]), np.array([0.95, 0.9, 0.95, 0.95]), np.full(4, 0.95), np.full(4, 20.0))
    assert cl[0] != cl[1] and cl[2] == cl[3] and len(set(cl)) == 3


def test_the_fast_path_is_within_a_tenth_of_a_percent_of_the_monolithic_optimum():
    fleet, x, feeder = _fleet()
    mono = DispatchModel(fleet, len(x.price_buy)).solve(x)
    fast = FleetPlanner().plan(fleet, x, feeder)
    assert fast.seconds["clusters"] == 4
    # every member within its limits, the energy rolled forward with the efficiencies
    assert (fast.energy >= x.e_min - 1e-9).all() and (fast.energy <= x.e_max + 1e-9).all()
    assert (fast.power <= x.p_discharge_max + 1e-9).all() and (fast.power >= -x.p_charge_max - 1e-9).all()
    a = member_cost(mono.battery_power, mono.energy, x)
    b = member_cost(fast.power, fast.energy, x)
    assert a == pytest.approx(mono.breakdown["energy"] + mono.breakdown["degradation"]
                              + mono.breakdown["terminal_shortfall"], rel=1e-6)
    assert (b - a) / abs(a) < 1e-3, (a, b, np.abs(fast.shortfall).max())
