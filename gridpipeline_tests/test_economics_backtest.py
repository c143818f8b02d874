"""The economics backtest (``gridpipeline economics backtest``): its cost rule by hand, and three real days
of the sample world run three ways."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks.dispatch_backtest import BacktestConfig
from benchmarks.economics_backtest import COMPONENTS, hour_costs, run_economics, spread_of


def test_energy_plus_imbalance_is_the_schedule_at_the_price_and_the_deviation_at_the_imbalance_price():
    """An hour at 50 EUR/MWh (spread 10): 6 MW bought day-ahead and 7 MW taken pays 6 x 50 + 1 x 60 = 360,
    which is 7 x 50 at the price plus 1 x 10 of imbalance; 5 MW taken: 6 x 50 - 1 x 40 = 260 = 250 + 10.
    At 200 EUR/MWh the spread is 20 % of the price, 40."""
    from gridpipeline.market.settlement import settle

    assert spread_of(np.array([50.0, 200.0, -80.0])).tolist() == [10.0, 40.0, 16.0]
    net, sched, price = np.array([7.0, 5.0]), np.array([6.0, 6.0]), np.array([50.0, 50.0])
    c = hour_costs(net, sched, price, np.zeros((2, 1)), np.zeros(1), np.zeros(2), np.zeros(2), 1.0)
    assert (c["energy"] + c["imbalance"]).tolist() == [360.0, 260.0]
    # the same as the settlement's two-price rule, the utility buying (a position of -S, delivering -N)
    lines = settle(-sched, -net, price, 1.0)
    np.testing.assert_allclose(-(lines.energy_cents + lines.imbalance_cents) / 100, c["energy"] + c["imbalance"])


@pytest.fixture(scope="module")
def result():
    from gridpipeline.world.model import load_world
    from gridpipeline.world.price_exchange import load_reference

    cfg = BacktestConfig(start=pd.Timestamp("2018-03-05", tz="UTC"), end=pd.Timestamp("2018-03-08", tz="UTC"),
                         train_days=21, refit_days=7)
    return run_economics(load_world("sample"), load_reference(), cfg)


def test_three_ways_of_operating_on_real_prices(result):
    r = result
    for k in ("baseline_cost", "dispatch_cost", "full_cost", "peak_reduction_predicted_mw", "peak_reduction_achieved_mw"):
        assert np.isfinite(r[k]), k
    for k, v in r["cost_by_component_eur"].items():  # the totals are the components', nothing hidden
        assert set(v) == set(COMPONENTS)
        assert r[f"{k}_cost"] == pytest.approx(sum(v.values()), abs=0.05)
    base = r["cost_by_component_eur"]["baseline"]
    assert base["degradation"] == base["curtailment"] == base["dr_payments"] == base["stored_energy"] == 0
    assert base["imbalance"] > 0  # the demand and renewable forecasts miss, for every strategy alike
    # the full strategy bid every delivery day from its gate, and its customers answered the tariff
    # as predicted (the same model, so the moved energy agrees; the hours by the load forecast)
    assert r["market"]["days"] >= 3 and r["market"]["rejected"] == 0
    resp = r["response"]
    assert resp["realised_mwh_moved"] > 0
    assert resp["realised_mwh_moved"] == pytest.approx(resp["predicted_mwh_moved"], rel=0.25)
    assert resp["hourly_correlation"] > 0.8
    assert r["peak_mw"]["mean_daily_with_signals"] <= r["peak_mw"]["mean_daily_without_signals"]
    # no 2018 price reaches the cheapest DR compensation: no call, and it says so
    assert r["dr"]["calls"] == 0 and r["dr"]["highest_price_eur_mwh"] < r["dr"]["cheapest_compensation_eur_mwh"]


def test_the_energy_splits_the_saving_into_moved_and_not_consumed(result):
    """The dispatch alone consumes what the baseline does; the tariff's net change of consumption is the
    full strategy's consumption less the baseline's (no DR call in these days), and small against the
    energy it moves; and the dispatch's
    net import differs from the baseline's only by its batteries' losses and what they hold at the end."""
    e = result["energy_mwh"]
    assert e["consumption"]["dispatch"] == e["consumption"]["baseline"]
    assert e["consumption"]["full"] - e["consumption"]["baseline"] == pytest.approx(e["tariff_net_change"], abs=0.01)
    # the customers keep their energy over each tariff's window (judged against the mean weighted by the
    # load they expect): the tariff moves energy, it does not save it (the meters' noise aside)
    assert abs(e["tariff_net_change"]) < 0.1 * result["response"]["realised_mwh_moved"]
    assert all(np.isfinite(v) for v in e["net_import"].values())
    # the batteries store and return energy with losses: over the same consumption the dispatch imports
    # at least what the baseline does, less the energy it started with (the fleet starts half full: at
    # most half its 8.75 MWh, times the discharge efficiency, can leave it)
    assert e["net_import"]["dispatch"] >= e["net_import"]["baseline"] - 0.5 * result["fleet_mwh"]
