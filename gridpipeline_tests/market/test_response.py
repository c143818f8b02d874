"""The closed loop of a price signal: a zone's tariff published over OpenADR (a real VTN and the world's
VENs on loopback), the world's price-responsive customers in that zone answering it, the realised peak
reduction measured against the predicted one, and the elasticity re-estimated from the measurement."""

from __future__ import annotations

import types
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from gridpipeline.market.response import class_zone_load, elasticity_estimate, predicted_response
from gridpipeline_tests.load.test_dr import _free_port, _policy, _wait

TERMS = {"residential": {"share": 0.5, "elasticity": -0.2}}


def test_a_zone_tariff_moves_that_zone_s_customers_as_predicted():
    from gridpipeline.load.dr import tou_intervals
    from gridpipeline.orchestration.vtn import Vtn, url
    from gridpipeline.world.model import Injections
    from gridpipeline.world.ven import VenField

    pol = _policy([], {"price_responsive": TERMS, "tou_eur_mwh": {"0": 150}})
    net = types.SimpleNamespace(load=pd.DataFrame(index=[20, 21, 22]))
    vens = VenField(net, pol, {20: "residential", 21: "residential", 22: "residential"}, seed=1,
                    load_zone={20: "A", 21: "A", 22: "B"})
    port = _free_port()
    vtn = Vtn(set(vens.ven_ids), "127.0.0.1", port, poll_s=1.0).start()
    try:
        vens.start(url("127.0.0.1", port))
        assert _wait(lambda: len(vtn.registered) == 1), vtn.registered
        now = datetime.now(UTC).replace(tzinfo=None).replace(microsecond=0)
        day = datetime(now.year, now.month, now.day)
        h = pd.Timestamp(now).floor("h").to_pydatetime() + timedelta(hours=1)
        vtn.publish_tou(day, tou_intervals(pol.demand_response, day), ["ven-residential"])
        # zone A's nodal tariff: cheap in the first hour, dear in the second (mean 200 EUR/MWh)
        zone_tariff = [(h, timedelta(hours=1), 100.0), (h + timedelta(hours=1), timedelta(hours=1), 300.0)]
        (eid,) = vtn.publish_tou(h, zone_tariff, ["ven-residential"], zone="A",
                                 event_id_for=lambda v, d: f"tariff-{v}-A-{d:%Y%m%d%H}")
        got = {}
        assert _wait(lambda: got.update({a["event_id"]: a["opt"] for a in vtn.answers(datetime.now(UTC).replace(tzinfo=None),
                                                                                          timedelta(seconds=8))})
                     or len(got) == 2, timeout=40), got
        assert got[eid] == "optIn"
        assert ("ven-residential", "A") in vens.tariffs and ("ven-residential", None) in vens.tariffs
        times = pd.date_range(h, periods=24, freq="5min", tz="UTC")
        load = np.ones((24, 3))
        z = np.zeros((24, 0))
        inj = Injections(times=times, load_index=np.array([20, 21, 22]), sgen_index=np.array([]),
                         storage_index=np.array([]), load_p_mw=load, load_q_mvar=np.zeros((24, 3)), sgen_p_mw=z,
                         sgen_q_mvar=z, storage_p_mw=z, storage_q_mvar=z)
        out = vens.apply(times, inj).load_p_mw
    finally:
        vens.stop()
        vtn.stop()
    # zone A follows its tariff: 1 + 0.5 x -0.2 x (100/200 - 1) = 1.05, then 0.95; the energy over the two
    # hours is kept (shifted, not saved); zone B keeps the flat static tariff (no change)
    np.testing.assert_allclose(out[:12, :2], 1.05)
    np.testing.assert_allclose(out[12:, :2], 0.95)
    np.testing.assert_allclose(out.sum(axis=0)[:2], 24.0)
    np.testing.assert_allclose(out[:, 2], 1.0)
    # what the pipeline predicted from the policy's terms and the zone's class load, and what happened
    by = class_zone_load(pd.DataFrame({"load_id": [20, 21, 22], "class": "residential"}),
                         pd.Series(1.0, index=[20, 21, 22]), pd.Series({20: "A", 21: "A", 22: "B"}))
    tariff = np.repeat([[100.0, 150.0], [300.0, 150.0]], 12, axis=0)
    pred = predicted_response(tariff, ["A", "B"], by, TERMS)
    realised = out[:, :2].sum(axis=1) - 2.0
    np.testing.assert_allclose(realised, pred[:, 0], atol=1e-9)
    assert -realised.min() == pytest.approx(0.1)  # the peak hour's reduction: 0.1 MW, as predicted
    np.testing.assert_allclose(pred[:, 1], 0.0)
    # the elasticity re-estimated from the measured response
    rel_price = tariff[:, 0] / tariff[:, 0].mean() - 1
    est, n = elasticity_estimate(rel_price, out[:, 0] - 1.0, share=0.5)
    assert n == 24 and est == pytest.approx(-0.2)


def test_the_elasticity_estimate_needs_variation_and_points():
    assert elasticity_estimate(np.zeros(30), np.zeros(30), 0.5) == (None, 30)
    assert elasticity_estimate(np.ones(5), np.ones(5), 0.5) == (None, 5)
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.5, 0.5, 200)
    est, _ = elasticity_estimate(x, 0.15 * -0.3 * x + rng.normal(0, 0.002, 200), share=0.15)
    assert est == pytest.approx(-0.3, abs=0.02)


def test_the_response_is_measured_against_the_baseline_and_the_elasticity_recovered():
    """Eight days of 5-minute readings of two residential loads in zone A (a daily shape, 1-2 MW); on the
    last day the published tariff swings +-40 % hour by hour and the loads answer with elasticity -0.3 on a
    0.5 share. The points pair each step's relative price with the group's change against the week's same
    time of day; a missing reading drops its step. The estimate recovers -0.3."""
    from gridpipeline.market.response import published_signal, response_points

    ts = pd.date_range("2026-11-24", "2026-12-02", freq="5min", inclusive="left")
    shape = 1.5 + 0.5 * np.sin(2 * np.pi * (ts.hour * 60 + ts.minute) / 1440)
    last = ts >= pd.Timestamp("2026-12-01")
    rel = np.where(ts.hour % 2 == 0, 0.4, -0.4)
    factor = np.where(last, 1 + 0.5 * -0.3 * rel, 1.0)
    readings = pd.concat([pd.DataFrame({"load_id": i, "ts": ts, "mw": shape * factor}) for i in (20, 21)])
    readings = readings[~((readings.load_id == 21) & (readings.ts == pd.Timestamp("2026-12-01 10:00")))]
    loads = pd.DataFrame({"load_id": [20, 21], "class": "residential", "zone": "A"})
    steps = ts[last]
    tariff = 100 * (1 + np.where(steps.hour % 2 == 0, 0.4, -0.4))
    sig = pd.DataFrame({"decision_id": [f"d{k}" for k in range(len(steps))], "planned_at": steps, "step_ts": steps,
                        "step": 0, "zone": "A", "tariff": tariff})
    # each decision's horizon: its second step mirrors the first about 100, so the horizon mean is 100
    horizon = sig.assign(step=1, step_ts=sig.step_ts + pd.Timedelta(minutes=5), tariff=200.0 - sig.tariff)
    signal = published_signal(pd.concat([sig, horizon]), set(sig.decision_id))
    assert len(signal) == len(steps)
    np.testing.assert_allclose(np.abs(signal.rel_price), 0.4)
    pts = response_points(readings, loads, signal)
    assert len(pts) == len(steps) - 1  # the step with a missing reading is left out
    est, n = elasticity_estimate(pts.rel_price, pts.rel_change, share=0.5)
    assert n == len(steps) - 1 and est == pytest.approx(-0.3, rel=1e-6)
    assert published_signal(sig, set()).empty
    # a decision that expected three times the responsive load in its dear step judges against the mean
    # weighted so ((60 + 3 x 140) / 4 = 120): 60 is 50 % below it, 140 one sixth above
    one = pd.DataFrame({"decision_id": "w", "planned_at": steps[0], "step_ts": [steps[0], steps[1]], "step": [0, 1],
                        "zone": "A", "tariff": [60.0, 140.0], "load_shape": [1.0, 3.0]})
    assert published_signal(one, {"w"}).rel_price.tolist() == pytest.approx([-0.5])
    assert published_signal(one.drop(columns="load_shape"), {"w"}).rel_price.tolist() == pytest.approx([-0.4])


def test_the_asset_warns_without_a_published_signal(tmp_path, monkeypatch):
    from dagster import materialize
    from dagster_duckdb import DuckDBResource

    from gridpipeline.market.assets import price_response
    from gridpipeline.settings import get_settings, reset_settings
    from gridpipeline.sources.resources import NetworkModelResource, SettingsResource

    monkeypatch.setenv("GRIDPIPELINE_HOME", str(tmp_path))
    reset_settings()
    s = get_settings()
    s.ensure_dirs()
    res = {"duckdb": DuckDBResource(database=str(s.db_path)), "settings": SettingsResource.from_settings(s),
           "network": NetworkModelResource(path=str(s.network))}
    out = materialize([price_response], partition_key="2026-12-01", resources=res)
    (check,) = out.get_asset_check_evaluations()
    assert out.success and not check.passed and "too little" in check.description


def test_the_table_per_class_and_what_is_learnt():
    from gridpipeline.market.response import LEARN_MIN_POINTS, elasticity_table, learned

    rng = np.random.default_rng(1)
    x = rng.uniform(-0.4, 0.4, LEARN_MIN_POINTS)
    pts = pd.concat([pd.DataFrame({"cls": "residential", "rel_price": x, "rel_change": 0.5 * -0.3 * x}),
                     pd.DataFrame({"cls": "commercial", "rel_price": x[:20], "rel_change": 0.1 * -0.1 * x[:20]})])
    terms = {"residential": {"share": 0.5, "elasticity": -0.2}, "commercial": {"share": 0.1, "elasticity": -0.1},
             "industrial": {"share": 0.05, "elasticity": -0.05}}
    t = elasticity_table(pts, terms).set_index("cls")
    assert t.loc["residential", "elasticity_measured"] == pytest.approx(-0.3)
    assert t.loc["commercial", "elasticity_measured"] == pytest.approx(-0.1) and t.loc["commercial", "points"] == 20
    assert pd.isna(t.loc["industrial", "elasticity_measured"])
    # only an estimate on a day of points replaces the policy's
    assert set(learned(t.reset_index(), "2026-12-01")) == {"residential"}


def test_ev_charging_and_flexible_heat_answer_within_the_households_load():
    """Three programmes on one household load (the class's own 15 % at -0.2, EV charging 3 % at -0.8,
    flexible heat 8 % at -0.3): at a tariff 50 % above its mean the load moves by
    0.5 x (0.15 x -0.2 + 0.03 x -0.8 + 0.08 x -0.3) = -3.9 %; the pipeline predicts the same, and a
    class answering half as strongly as assumed halves each programme's estimate."""
    from gridpipeline.market.response import elasticity_table, response_weight
    from gridpipeline.world.model import Injections
    from gridpipeline.world.ven import VenField

    terms = {"residential": {"share": 0.15, "elasticity": -0.2},
             "ev_charging": {"of": "residential", "share": 0.03, "elasticity": -0.8},
             "flexible_heat": {"of": "residential", "share": 0.08, "elasticity": -0.3}}
    pol = _policy([], {"price_responsive": terms, "tou_eur_mwh": {"0": 150}})
    net = types.SimpleNamespace(load=pd.DataFrame(index=[1, 2]))
    vens = VenField(net, pol, {1: "residential", 2: "commercial"}, load_zone={1: "A", 2: "A"})
    assert sorted(vens.aggregators) == ["ven-ev_charging", "ven-flexible_heat", "ven-residential"]
    t0 = datetime(2026, 12, 1, 16)
    for name in terms:  # the event each aggregator's VEN would receive: 100 then 300 EUR/MWh (mean 200)
        ev = {"event_descriptor": {"event_id": f"tariff-{name}", "market_context": "oadr://gridpipeline/tou"},
              "event_signals": [{"signal_name": "ELECTRICITY_PRICE", "intervals": [
                  {"dtstart": t0 + timedelta(hours=k), "duration": timedelta(hours=1), "signal_payload": p}
                  for k, p in enumerate((0.1, 0.3))]}], "targets": [{"group_id": "A"}]}
        assert vens.decide(f"ven-{name}", ev, t0 - timedelta(hours=1)) == "optIn"
    times = pd.date_range(t0, periods=2, freq="h", tz="UTC")
    z = np.zeros((2, 0))
    inj = Injections(times=times, load_index=np.array([1, 2]), sgen_index=np.array([]), storage_index=np.array([]),
                     load_p_mw=np.ones((2, 2)), load_q_mvar=np.zeros((2, 2)), sgen_p_mw=z, sgen_q_mvar=z,
                     storage_p_mw=z, storage_q_mvar=z)
    out = vens.apply(times, inj).load_p_mw
    np.testing.assert_allclose(out[:, 0], [1.039, 0.961])
    np.testing.assert_allclose(out[:, 1], 1.0)  # commerce has no programme here
    by = class_zone_load(pd.DataFrame({"load_id": [1, 2], "class": ["residential", "commercial"]}),
                         pd.Series(1.0, index=[1, 2]), pd.Series({1: "A", 2: "A"}))
    assert response_weight(by, ["A"], terms)[0] == pytest.approx(-0.078)
    np.testing.assert_allclose(predicted_response(np.array([[100.0], [300.0]]), ["A"], by, terms)[:, 0],
                               [0.039, -0.039])
    rel = np.tile([-0.5, 0.5], 12)
    pts = pd.DataFrame({"cls": "residential", "rel_price": rel, "rel_change": 0.5 * -0.078 * rel})
    est = elasticity_table(pts, terms).set_index("cls")
    for name, t in terms.items():
        assert est.loc[name, "elasticity_measured"] == pytest.approx(t["elasticity"] / 2)


def test_customers_keep_their_energy_over_the_tariff_window_when_their_load_follows_the_price():
    """The load the customers expect is 2 MW in the dear hour and 1 MW in the cheap one (the evening
    peak is dear). Judged against the plain mean (200 EUR/MWh), a 0.5 x -0.2 elasticity would shed 0.2
    MW in the dear hour and add only 0.05 in the cheap one: 0.15 MWh saved, not shifted. Judged against
    the mean weighted by their expected load ((100 + 2 x 300) / 3 = 233.3), they shed 2 x 0.1 x
    (300/233.3 - 1) and add 1 x 0.1 x (1 - 100/233.3): the same 0.0571 MWh each way, the energy kept."""
    from gridpipeline.world.model import Injections
    from gridpipeline.world.ven import VenField

    pol = _policy([], {"price_responsive": TERMS, "tou_eur_mwh": {"0": 150}})
    net = types.SimpleNamespace(load=pd.DataFrame(index=[1]))
    t0 = datetime(2026, 12, 1, 16)
    times = pd.date_range(t0, periods=2, freq="h", tz="UTC")

    def expected(ts):
        return np.where(pd.DatetimeIndex(ts) >= times[1], 2.0, 1.0)[:, None]

    ev = {"event_descriptor": {"event_id": "tariff-r", "market_context": "oadr://gridpipeline/tou"},
          "event_signals": [{"signal_name": "ELECTRICITY_PRICE", "intervals": [
              {"dtstart": t0 + timedelta(hours=k), "duration": timedelta(hours=1), "signal_payload": p}
              for k, p in enumerate((0.1, 0.3))]}], "targets": [{"group_id": "A"}]}
    z = np.zeros((2, 0))
    inj = Injections(times=times, load_index=np.array([1]), sgen_index=np.array([]), storage_index=np.array([]),
                     load_p_mw=np.array([[1.0], [2.0]]), load_q_mvar=np.zeros((2, 1)), sgen_p_mw=z, sgen_q_mvar=z,
                     storage_p_mw=z, storage_q_mvar=z)
    outs = {}
    for name, exp in (("weighted", expected), ("plain", None)):
        vens = VenField(net, pol, {1: "residential"}, load_zone={1: "A"}, expected_load=exp)
        assert vens.decide("ven-residential", ev, t0 - timedelta(hours=1)) == "optIn"
        outs[name] = vens.apply(times, inj).load_p_mw[:, 0]
    mu = (0.1 + 2 * 0.3) / 3
    np.testing.assert_allclose(outs["weighted"], [1 - 0.1 * (0.1 / mu - 1), 2 * (1 - 0.1 * (0.3 / mu - 1))])
    assert outs["weighted"].sum() == pytest.approx(3.0, abs=1e-12)  # shifted, not saved
    np.testing.assert_allclose(outs["plain"], [1.05, 1.9])
    assert outs["plain"].sum() == pytest.approx(2.95)  # the plain mean saves energy that should move
