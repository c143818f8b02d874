"""The cost model: each component by hand, the bill for the import kept whole, and the departure check
naming the component that moved."""

from __future__ import annotations

import numpy as np
import pytest

from gridpipeline.market.costs import COMPONENTS, cost_departures, step_costs


def test_each_component_by_hand():
    dt = 5 / 60
    c = step_costs(price=[60.0, -10.0], import_mw=[10.0, 4.0], losses_mw=[0.2, 0.1],
                   battery_mw=[[1.0, -0.5], [0.0, 0.0]], degradation=[20.0, 40.0], curtailed_mw=[0.0, 1.5],
                   curtail_value=[50.0, 50.0], dr_mw=[0.3, 0.0], dr_price=300.0, shed_mw=[0.0, 0.2], voll=10_000.0)
    assert c.energy.tolist() == pytest.approx([(10 - 0.2) * 60 * dt, (4 - 0.1) * -10 * dt])
    assert c.losses.tolist() == pytest.approx([0.2 * 60 * dt, 0.1 * -10 * dt])
    assert (c.energy + c.losses).tolist() == pytest.approx([10 * 60 * dt, 4 * -10 * dt])  # the whole import bill
    assert c.degradation.tolist() == pytest.approx([(1.0 * 20 + 0.5 * 40) * dt, 0.0])
    assert c.curtailment.tolist() == pytest.approx([0.0, 1.5 * 50 * dt])
    assert c.demand_response.tolist() == pytest.approx([0.3 * 300 * dt, 0.0])
    assert c.lost_load.tolist() == pytest.approx([0.0, 0.2 * 10_000 * dt])
    assert c.total.tolist() == pytest.approx(c[list(COMPONENTS)].sum(axis=1).tolist())
    assert c.missing.iloc[0] == "imbalance"  # no market position given: no imbalance, and it says so


def test_a_market_position_splits_energy_and_imbalance():
    dt = 5 / 60
    c = step_costs(price=[50.0, 50.0], import_mw=[12.0, 8.0], position_mw=[10.0, 10.0], dt_h=dt)
    # short 2 MW at 60 (50 + 10), long 2 MW paid 40
    assert c.imbalance.tolist() == pytest.approx([2 * 60 * dt, -2 * 40 * dt])
    assert c.energy.tolist() == pytest.approx([10 * 50 * dt, 10 * 50 * dt])
    # a deviation never pays better than the market: total >= import x price
    assert (c.total >= np.array([12.0, 8.0]) * 50 * dt - 1e-9).all()


def test_a_step_that_departs_from_the_plan_names_the_component():
    plan = step_costs(price=[50.0] * 3, import_mw=[10.0] * 3, losses_mw=[0.2] * 3)
    real = step_costs(price=[50.0] * 3, import_mw=[10.0, 10.5, 10.0], losses_mw=[0.2] * 3, shed_mw=[0, 0, 0.5],
                      voll=10_000.0)
    d = cost_departures(real, plan, share=0.2)
    assert [x["step"] for x in d] == [2] and d[0]["component"] == "lost_load"  # step 1 moved 5 %: no warning
