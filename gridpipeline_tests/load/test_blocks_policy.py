"""Switchable blocks from the switches, the customer registry's classes, and the policy's validation."""

from __future__ import annotations

import pandapower as pp
import pandas as pd
import pytest

from gridpipeline.common.customers import class_of_profile, customer_registry
from gridpipeline.load.blocks import switchable_blocks
from gridpipeline.load.policy import PolicyError, block_priorities, check_against, parse_policy, read_policy
from gridpipeline.settings import PROJECT_ROOT


@pytest.fixture
def feeder():
    """110 kV source -(trafo, CB)- MV busbar 1 -(line, CB at the head)- 2 -(line, LBS)- 3 -(line, LS)- 4;
    2 -(line, LBS open: a tie)- 5. Loads on 1 (a hospital), 2, 3, 4 and 5."""
    net = pp.create_empty_network()
    b = [pp.create_bus(net, 110.0)] + [pp.create_bus(net, 20.0) for _ in range(5)]
    pp.create_ext_grid(net, b[0])
    t = pp.create_transformer(net, b[0], b[1], "25 MVA 110/20 kV")
    pp.create_switch(net, b[1], t, et="t", type="CB")
    kw = {"length_km": 1.0, "std_type": "NA2XS2Y 1x95 RM/25 12/20 kV"}
    l12, l23, l34, l25 = (pp.create_line(net, u, v, **kw) for u, v in ((b[1], b[2]), (b[2], b[3]), (b[3], b[4]), (b[2], b[5])))
    pp.create_switch(net, b[1], l12, et="l", type="CB")
    pp.create_switch(net, b[2], l23, et="l", type="LBS")
    pp.create_switch(net, b[3], l34, et="l", type="LS")   # a disconnector: no block boundary
    pp.create_switch(net, b[2], l25, et="l", type="LBS", closed=False)  # a normally open tie
    for bus, prof in ((b[1], "G3-M"), (b[2], "G2-A"), (b[3], "lv_rural1"), (b[4], "H0-A"), (b[5], "G1-A")):
        pp.create_load(net, bus, p_mw=0.5, profile=prof, subnet="MV1.101_Feeder1")
    return net, b


def test_blocks_are_the_areas_between_controllable_switches(feeder):
    net, b = feeder
    blk = switchable_blocks(net)
    bb = blk.bus_block
    assert bb[b[0]] == 0  # the source
    assert bb[b[3]] == bb[b[4]]  # a line switch (LS) is no boundary
    assert len({bb[b[1]], bb[b[2]], bb[b[3]], bb[b[5]]}) == 4 and 0 not in {bb[b[1]], bb[b[2]], bb[b[3]]}
    t = blk.table
    assert t.loc[bb[b[1]], "parent"] == 0 and t.loc[bb[b[2]], "parent"] == bb[b[1]]
    assert t.loc[bb[b[3]], "parent"] == bb[b[2]] and t.loc[bb[b[3]], "loads"] == 2
    assert t.loc[bb[b[3]], "feeding_switch"] == 2  # the LBS between 2 and 3
    assert not t.loc[0, "switchable"] and t.loc[bb[b[3]], "switchable"]
    # the feeder head: the block behind the feeder's line breaker; the busbar has none
    assert t.loc[bb[b[3]], "feeder"] == bb[b[2]] and pd.isna(t.loc[bb[b[1]], "feeder"])
    # opening block 2's switch disconnects block 3 too; block 5 hangs on an open tie: not energised now
    assert sorted(blk.descendants(bb[b[2]])) == sorted([bb[b[2]], bb[b[3]]])
    assert t.loc[bb[b[5]], "depth"] == -1 and not t.loc[bb[b[5]], "switchable"]
    assert blk.ties.to_dict("records") == [{"switch_id": 4, "type": "LBS", "block_a": bb[b[2]], "block_b": bb[b[5]]}]


def test_the_customer_registry_classes_and_counts(feeder):
    net, _ = feeder
    reg = customer_registry(net, pd.Series([800.0, 900.0, 350.0, 7.0, 60.0], index=net.load.index)).set_index("load_id")
    assert reg["class"].tolist() == ["critical", "industrial", "residential", "residential", "industrial"]
    assert reg.critical_kind[0] == "hospital"
    assert reg.customers.tolist() == [1, 1, 100, 2, 1]  # 350 MWh / 3.5 MWh a household; 7 / 3.5
    assert class_of_profile("G4-B") == "commercial" and class_of_profile("G4-B", mv=True) == "industrial"


def test_the_sample_registry_and_the_default_policy_agree():
    """The committed customer registry has every load of the sample, and the default policy passes."""
    net = pp.from_json(str(PROJECT_ROOT / "data" / "sample_grid" / "network.json"))
    reg = pd.read_csv(PROJECT_ROOT / "data" / "sample_grid" / "customers.csv").set_index("load_id")
    assert sorted(reg.index) == sorted(net.load.index)
    assert set(reg["class"]) == {"residential", "commercial", "industrial", "critical"}
    assert sorted(reg.critical_kind.dropna()) == ["emergency", "hospital", "telecom", "water"]
    pol = read_policy(PROJECT_ROOT / "data" / "load_policy.yaml")
    blk = switchable_blocks(net)
    check_against(pol, reg["class"], blk.load_block(net), blk.table.switchable)
    pr = block_priorities(pol, reg["class"], blk.load_block(net), net.load.p_mw, blk.table, reg.customers)
    assert pr.customers.sum() == reg.customers.sum() and pr.loads.sum() == len(net.load)
    # a block's tier is its most critical load's: the hospital's block is tier 1 and protected
    hosp = int(reg.index[reg.critical_kind == "hospital"][0])
    row = pr.loc[blk.load_block(net)[hosp]]
    assert row.tier == 1 and row.protected and f"load {hosp}" in row.protected_by


POLICY = {
    "tiers": [{"tier": 1, "classes": ["critical"]}, {"tier": 2, "classes": ["industrial", "commercial"]},
              {"tier": 3, "name": "households", "classes": ["residential"]}],
    "protected": {"classes": ["critical"]},
    "voll_eur_mwh": {"residential": 1e4, "commercial": 2e4, "industrial": 1.5e4, "critical": 2e5},
    "contracts": [{"name": "plant", "load": 1, "interruptible_mw": 0.2, "max_per_day": 1, "max_per_month": 4,
                   "max_duration_min": 60, "notice_min": 15, "compensation_eur_mwh": 500}],
}


def _with(path: str, value):
    import copy

    doc = copy.deepcopy(POLICY)
    node, keys = doc, path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if k.isdigit() else node[k]
    last = keys[-1]
    node[int(last) if last.isdigit() else last] = value
    return doc


@pytest.mark.parametrize(("doc", "says"), [
    (_with("tiers.1.classes", ["industrial", "comercial"]), "tiers[1]: unknown class 'comercial'"),
    (_with("tiers.2.classes", ["residential", "commercial"]),
     "tiers[2] (households): class 'commercial' is already in tier 2 (overlapping tiers)"),
    (_with("tiers.2.tier", 2), "tiers[2] (households): tier 2 is defined twice (overlapping tiers)"),
    (_with("tiers.2.classes", ["critical"]), "class 'critical' is already in tier 1"),
    (_with("protected.classes", ["hospital"]), "protected.classes: unknown class 'hospital'"),
    (_with("voll_eur_mwh", {"residential": 1e4}), "voll_eur_mwh: no value of lost load for class(es) commercial"),
    (_with("contracts.0.max_per_month", 0), "contracts[0] (plant): max_per_month (0) is below max_per_day (1)"),
    (_with("contracts.0.interruptible_mw", "lots"), "contracts[0] (plant): 'interruptible_mw' must be a number"),
])
def test_a_bad_policy_is_one_error_naming_the_entry(doc, says):
    with pytest.raises(PolicyError) as err:
        parse_policy(doc)
    assert says in str(err.value)


def test_policy_checks_against_the_network(feeder):
    net, _ = feeder
    blk = switchable_blocks(net)
    classes = pd.Series(["critical", "industrial", "residential", "residential", "industrial"], index=net.load.index)
    lb, sw = blk.load_block(net), blk.table.switchable
    check_against(parse_policy(POLICY), classes, lb, sw)  # load 1 behind the LBS: fine
    with pytest.raises(PolicyError, match=r"contracts\[0\] \(plant, load 0\): load 0 is protected \(class critical\)"):
        check_against(parse_policy(_with("contracts.0.load", 0)), classes, lb, sw)
    # load 4 sits behind an open tie: nothing feeds it through a switch now, it cannot be switched
    with pytest.raises(PolicyError, match=r"contracts\[0\] \(plant, load 4\): its block \d+ cannot be switched"):
        check_against(parse_policy(_with("contracts.0.load", 4)), classes, lb, sw)
    with pytest.raises(PolicyError, match="load 2: unknown class 'farm'"):
        check_against(parse_policy(POLICY), classes.replace({"residential": "farm"}), lb, sw)


def test_load_priorities_asset_writes_the_blocks_and_fails_clearly_on_a_bad_policy(tmp_path, monkeypatch):
    """The asset on the sample: the blocks and loads in the store, the figures in the metadata; a policy
    with an unknown class fails the run with the entry named, and writes nothing."""
    import duckdb
    import yaml
    from dagster import materialize
    from dagster_duckdb import DuckDBResource

    from gridpipeline.load.assets import load_priorities
    from gridpipeline.settings import get_settings, reset_settings
    from gridpipeline.sources.resources import NetworkModelResource, SettingsResource

    monkeypatch.setenv("GRIDPIPELINE_HOME", str(tmp_path))
    monkeypatch.setenv("GRIDPIPELINE_DUCKDB_PATH", str(tmp_path / "store.duckdb"))
    reset_settings()
    s = get_settings()
    def res():
        return {"duckdb": DuckDBResource(database=str(s.db_path)), "settings": SettingsResource.from_settings(get_settings()),
                "network": NetworkModelResource(path=str(s.network))}

    out = materialize([load_priorities], resources=res())
    assert out.success
    meta = out.get_asset_materialization_events()[0].materialization.metadata
    assert meta["customers"].value == 11744 and meta["protected_blocks"].value == 3
    assert "data:image/png" in meta["load_by_feeder_and_tier"].value
    (check,) = out.get_asset_check_evaluations()
    assert check.passed
    with duckdb.connect(str(s.db_path), read_only=True) as con:
        n_loads, n_blocks = con.execute("SELECT (SELECT count(*) FROM load.block_loads), "
                                        "(SELECT count(*) FROM load.block_priorities)").fetchone()
    assert n_loads == 218 and n_blocks == meta["blocks_serving_load"].value

    doc = yaml.safe_load((PROJECT_ROOT / "data" / "load_policy.yaml").read_text())
    doc["tiers"][3]["classes"] = ["residental"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("GRIDPIPELINE_LOAD_POLICY", str(bad))
    reset_settings()
    failed = materialize([load_priorities], resources=res(), raise_on_error=False)
    assert not failed.success
    (err,) = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "tiers[3] (households): unknown class 'residental'" in str(err.event_specific_data.error.message)
    with duckdb.connect(str(s.db_path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM load.block_loads").fetchone()[0] == 218  # untouched
