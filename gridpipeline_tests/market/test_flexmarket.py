"""The local flexibility market: the need from the congestion the nodal prices find, the DER owners'
offers from the simulator's file drop (bad rows rejected with a reason), pay-as-bid clearing by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gridpipeline.market.dlmp import RadialFeeder, solve_dlmp
from gridpipeline.market.flexmarket import clear_needs, congestion_needs, read_offers

T0 = pd.Timestamp("2026-12-01 16:00")


def _feeder():
    # substation 10 -> 11 -> 12; the line into 11 carries 5 MVA at most
    return RadialFeeder(bus_ids=np.array([10, 11, 12]), parent=np.array([-1, 0, 1]), r=np.array([0.0, 0.001, 0.001]),
                        x=np.array([0.0, 0.001, 0.001]), s_max=np.array([np.inf, 5.0, np.inf]))


def _offers(tmp_path, rows, day="2026-12-01"):
    df = pd.DataFrame(rows, columns=["offer_id", "owner", "bus", "direction", "mw", "price_eur_mwh"])
    df["valid_from"], df["valid_to"], df["divisible"] = day, "2026-12-02", True
    df.to_csv(tmp_path / f"offers-{day}.csv", index=False)


def test_a_congested_line_buys_its_relief_below_it_pay_as_bid(tmp_path):
    """2 MW at bus 11 and 4 MW at 12 put 6 MW through the 5 MVA line into 11: the nodal prices find it
    binding, and 1 MW of import relief is needed for the hour. Below the line, A (bus 12, 0.6 MW less
    load at 200) and B (bus 11, 1 MW at 300) relieve it: A whole and 0.4 MW of B, paid 0.6 x 200 + 0.4 x 300
    = 240 EUR. C (at the substation, 5 MW at 100) is not below the line; D (bus 12, less output) gives the
    wrong direction; E's quantity is not a number: rejected with its reason."""
    feeder = _feeder()
    load = np.tile([0.0, 2.0, 4.0], (12, 1))
    r = solve_dlmp(feeder, load, np.full(12, 50.0))
    assert any(b["constraint"] == "rating" and b["element"] == "line to 11" for b in r.binding)
    assert r.congestion[:, 1:].max() > 0  # the congestion component the need comes from
    times = pd.date_range(T0, periods=12, freq="5min")
    needs = congestion_needs(feeder, load, None, r.binding, times)
    assert len(needs) == 1 and needs.iloc[0].need_mw == pytest.approx(1.0) and needs.iloc[0].direction == "import"
    _offers(tmp_path, [("A", "a", 12, "up", 0.6, 200.0), ("B", "b", 11, "up", 1.0, 300.0),
                       ("C", "c", 10, "up", 5.0, 100.0), ("D", "d", 12, "down", 3.0, 50.0),
                       ("E", "e", 12, "up", "lots", 10.0)])
    offers, rejected = read_offers(tmp_path, needs.hour)
    assert rejected.offer_id.tolist() == ["E"] and "quantity" in rejected.reason.iloc[0]
    bus_map = pd.Series({10: 0, 11: 1, 12: 2})
    awards, per_need = clear_needs(needs, offers, feeder, bus_map)
    assert awards.offer_id.tolist() == ["A", "B"]
    np.testing.assert_allclose(awards.mw, [0.6, 0.4])
    assert awards.pay_eur.sum() == pytest.approx(240.0)
    assert per_need.iloc[0].shortfall_mw == pytest.approx(0.0) and per_need.iloc[0].offers_able == 2


def test_export_congestion_buys_less_output_and_says_what_it_could_not(tmp_path):
    """PV exporting 7 MW from bus 12 through the 5 MVA line: 2 MW of relief in the ``down`` direction;
    the one owner below offers 1.5 MW: 0.5 MW short, and the shortfall says so."""
    feeder = _feeder()
    load = np.tile([0.0, 0.0, -7.0], (12, 1))
    r = solve_dlmp(feeder, load, np.full(12, 50.0))
    needs = congestion_needs(feeder, load, None, r.binding, pd.date_range(T0, periods=12, freq="5min"))
    assert needs.iloc[0].direction == "export" and needs.iloc[0].need_mw == pytest.approx(2.0)
    _offers(tmp_path, [("P", "pv", 12, "down", 1.5, 70.0), ("L", "load", 12, "up", 4.0, 20.0)])
    offers, _ = read_offers(tmp_path, needs.hour)
    awards, per_need = clear_needs(needs, offers, feeder, pd.Series({10: 0, 11: 1, 12: 2}))
    assert awards.offer_id.tolist() == ["P"] and per_need.iloc[0].shortfall_mw == pytest.approx(0.5)


def test_no_binding_rating_no_need_and_an_unreadable_file_is_a_rejected_row(tmp_path):
    feeder = _feeder()
    load = np.tile([0.0, 1.0, 1.0], (12, 1))
    r = solve_dlmp(feeder, load, np.full(12, 50.0))
    assert congestion_needs(feeder, load, None, r.binding, pd.date_range(T0, periods=12, freq="5min")).empty
    (tmp_path / "offers-2026-12-01.csv").write_text("offer_id,owner\n\"unterminated")
    offers, rejected = read_offers(tmp_path, [T0])
    assert offers.empty and len(rejected) == 1 and "offers-2026-12-01.csv" in rejected.reason.iloc[0]


def test_the_simulator_s_owners_post_valid_offers_a_day_ahead(tmp_path):
    from gridpipeline.settings import PROJECT_ROOT
    from gridpipeline.world.flexowners import FlexOwners
    from gridpipeline.world.model import load_world

    w = load_world("sample")
    owners = FlexOwners(w, tmp_path, PROJECT_ROOT / "data" / "sample_grid" / "customers.csv", seed=3)
    assert [f.name for f in owners.publish(T0, T0.replace(hour=11))] == ["offers-2026-12-01.csv"]
    assert [f.name for f in owners.publish(T0, T0)] == ["offers-2026-12-02.csv"]  # after noon: tomorrow's too
    offers, rejected = read_offers(tmp_path, [T0, T0 + pd.Timedelta(days=1)])
    assert rejected.empty and set(offers.direction) == {"up", "down"}
    assert set(offers[offers.direction == "down"].owner) == {f"sgen-{i}" for i in w.net.sgen.index}
    pv = offers[offers.owner.str.startswith("sgen")]
    assert pv.price.between(50, 110).all() and (pv.mw > 0).all()
    # the weather-driven generators offer hour by hour what they expect to make, never above their rating;
    # PV offers nothing at night (Greensboro in December: the sun is up from about 12:10 to 22:10 UTC)
    rating = w.net.sgen.sn_mva.rename(lambda i: f"sgen-{i}")
    assert (pv.mw <= pv.owner.map(rating) + 1e-9).all()
    types = w.net.sgen.type.astype(str).rename(lambda i: f"sgen-{i}")
    solar = pv[pv.owner.map(types).str.startswith(("PV", "lv_RES"))]
    assert len(solar) and (solar.valid_to - solar.valid_from == pd.Timedelta(hours=1)).all()
    assert not solar.valid_from.dt.hour.isin(range(1, 12)).any()
    other = pv[pv.owner.map(types).str.startswith(("Biomass", "Hydro"))]
    assert len(other) and (other.valid_to - other.valid_from == pd.Timedelta(days=1)).all()
    # the owners' own prices: the same on a restart, different by day
    again, _ = read_offers(tmp_path, [T0])
    assert again.price.tolist() == offers[offers.offer_id.str.contains("20261201")].price.tolist()


def test_the_dispatcher_records_the_purchase_once_per_line_and_hour(tmp_path, monkeypatch):
    """The live path: a plan's prices with the congested line above, the owners' offers in the drop; a
    ``flex_award`` record with the awards and the needs (advisory by default), rows in market.flex_awards,
    and the same line and hour not bought again by the next plan."""
    import types

    import duckdb

    from gridpipeline.ledger.store import Ledger
    from gridpipeline.orchestration.dispatcher import Dispatcher
    from gridpipeline.settings import get_settings, reset_settings

    monkeypatch.setenv("GRIDPIPELINE_HOME", str(tmp_path))
    reset_settings()
    s = get_settings()
    s.ensure_dirs()
    s.flex_offers.mkdir(parents=True, exist_ok=True)
    _offers(s.flex_offers, [("A", "a", 12, "up", 0.6, 200.0), ("B", "b", 11, "up", 1.0, 300.0)])
    feeder = _feeder()
    load = np.tile([0.0, 2.0, 4.0], (24, 1))
    times = pd.date_range(T0, periods=24, freq="5min", tz="UTC")
    sig = types.SimpleNamespace(net_load=load, net_q=None, dlmp=solve_dlmp(feeder, load, np.full(24, 50.0)))
    d = types.SimpleNamespace(s=s, ledger=Ledger(s.ledger), engine=types.SimpleNamespace(network_version="v1"),
                              _report_market=lambda asset, meta: None)
    now = (T0 - pd.Timedelta(minutes=10)).to_pydatetime()
    rid = Dispatcher.flex_market(d, now, sig, feeder, pd.Series({10: 0, 11: 1, 12: 2}), times, "sig-1")
    (rec,) = d.ledger.records(kind="flex_award")
    assert rec["id"] == rid and rec["mode"] == "advisory" and rec["ref"] == "sig-1"
    assert [a["offer_id"] for a in rec["body"]["decision"]["awards"]] == ["A", "B", "A", "B"]  # 16:00 and 17:00
    assert rec["body"]["objective"]["pay_eur"] == pytest.approx(480.0)
    with duckdb.connect(str(s.live_db_path), read_only=True) as con:
        assert con.execute("SELECT count(*), sum(pay_eur) FROM market.flex_awards").fetchone() == (4, pytest.approx(480.0))
    assert Dispatcher.flex_market(d, now, sig, feeder, pd.Series({10: 0, 11: 1, 12: 2}), times, "sig-2") is None
    assert len(d.ledger.records(kind="flex_award")) == 1


def test_automatic_awards_reach_the_owners_and_they_deliver(tmp_path, monkeypatch):
    """With ``flex_award=automatic`` the accepted offers go to the platform's ``awards/`` folder; the
    simulator's owners read them and deliver over the awarded hour only: the site at load 104 draws
    0.3 MW less, the PV at sgen 0 makes 0.2 MW less (never below nothing)."""
    import types

    from gridpipeline.ledger.store import Ledger
    from gridpipeline.orchestration.dispatcher import Dispatcher
    from gridpipeline.settings import get_settings, reset_settings
    from gridpipeline.world.flexowners import FlexOwners
    from gridpipeline.world.model import load_world

    monkeypatch.setenv("GRIDPIPELINE_HOME", str(tmp_path))
    monkeypatch.setenv("GRIDPIPELINE_DECISION_MODES", "flex_award=automatic")
    reset_settings()
    s = get_settings()
    s.ensure_dirs()
    d = types.SimpleNamespace(s=s)
    awards = pd.DataFrame({"offer_id": ["x", "y"], "owner": ["load-104", "sgen-0"], "hour": [T0, T0], "mw": [0.3, 0.2],
                           "price": [200.0, 70.0]})
    assert "posted" in Dispatcher._post_flex_awards(d, awards)
    w = load_world("sample")
    owners = FlexOwners(w, s.flex_offers)
    times = pd.date_range(T0 - pd.Timedelta(minutes=30), periods=12, freq="10min", tz="UTC")
    inj = w.injections_at(times)
    out = owners.apply(times, inj)
    on = (times >= T0.tz_localize("UTC")) & (times < T0.tz_localize("UTC") + pd.Timedelta(hours=1))
    li = list(w.net.load.index).index(104)
    np.testing.assert_allclose(inj.load_p_mw[on, li] - out.load_p_mw[on, li],
                               np.minimum(0.3, 0.95 * inj.load_p_mw[on, li]))
    np.testing.assert_allclose(out.sgen_p_mw[on, 0], np.clip(inj.sgen_p_mw[on, 0] - 0.2, 0, None))
    np.testing.assert_allclose(out.load_p_mw[~on], inj.load_p_mw[~on])
    # the dispatcher's record says the awards were posted
    _offers(s.flex_offers, [("A", "a", 12, "up", 0.6, 200.0), ("B", "b", 11, "up", 1.0, 300.0)])
    feeder = _feeder()
    load = np.tile([0.0, 2.0, 4.0], (12, 1))
    sig = types.SimpleNamespace(net_load=load, net_q=None, dlmp=solve_dlmp(feeder, load, np.full(12, 50.0)))
    d = types.SimpleNamespace(s=s, ledger=Ledger(s.ledger), engine=types.SimpleNamespace(network_version="v1"),
                              _report_market=lambda asset, meta: None)
    d._post_flex_awards = types.MethodType(Dispatcher._post_flex_awards, d)
    Dispatcher.flex_market(d, (T0 - pd.Timedelta(minutes=10)).to_pydatetime(), sig, feeder,
                           pd.Series({10: 0, 11: 1, 12: 2}), pd.date_range(T0, periods=12, freq="5min", tz="UTC"), "s")
    (rec,) = d.ledger.records(kind="flex_award")
    assert rec["mode"] == "automatic" and rec["body"]["activation"].startswith("posted to the owners")
    assert len(list((s.flex_offers / "awards").glob("awards-*.csv"))) == 2


def test_an_offer_serves_only_its_own_day_and_a_day_without_offers_waits(tmp_path):
    """The same owner posts for two days at two prices: a need at 23:00 on the first day and at 00:00 on
    the second each take that day's offer (never both in one hour). The third day has no file yet:
    ``offer_days`` leaves it out, so the dispatcher waits for the owners rather than record it unmet."""
    from gridpipeline.market.flexmarket import offer_days

    feeder = _feeder()
    _offers(tmp_path, [("A1", "a", 12, "up", 2.0, 200.0)], day="2026-12-01")
    df = pd.DataFrame([("A2", "a", 12, "up", 2.0, 250.0, "2026-12-02", "2026-12-03", True)],
                      columns=["offer_id", "owner", "bus", "direction", "mw", "price_eur_mwh", "valid_from", "valid_to",
                               "divisible"])
    df.to_csv(tmp_path / "offers-2026-12-02.csv", index=False)
    hours = pd.DatetimeIndex(["2026-12-01 23:00", "2026-12-02 00:00"])
    needs = pd.DataFrame({"element": "line to 11", "bus": 1, "hour": hours, "direction": "import", "need_mw": 1.0,
                          "dual_eur_mwh": 5.0})
    offers, rejected = read_offers(tmp_path, hours)
    assert rejected.empty and len(offers) == 2
    awards, _ = clear_needs(needs, offers, feeder, pd.Series({10: 0, 11: 1, 12: 2}))
    assert awards.offer_id.tolist() == ["A1", "A2"] and awards.price.tolist() == [200.0, 250.0]
    assert offer_days(tmp_path, [*hours, pd.Timestamp("2026-12-03 10:00")]) == {
        pd.Timestamp("2026-12-01"), pd.Timestamp("2026-12-02")}
