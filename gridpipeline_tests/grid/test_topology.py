from __future__ import annotations

import networkx as nx
import pytest

from gridpipeline.grid import topology as tp
from gridpipeline_tests.grid import cigre, sample_net


@pytest.fixture(scope="module")
def net():
    return sample_net()


def test_graph_islands_and_feeders(net):
    g = tp.bus_branch_graph(net)
    # two bus-bus switches are merged away
    assert g.number_of_nodes() == len(net.bus) - 2
    assert nx.is_connected(g)
    isl = tp.islands(net)
    assert len(isl) == 1 and isl.has_slack.iloc[0] and isl.n_buses.iloc[0] == len(net.bus)
    f = tp.feeders(net)
    # every bus below a substation is in a feeder, radially (depth grows by one per line)
    assert set(f.bus) >= set(net.load.bus)
    child = f.dropna(subset=["parent_bus"])
    depth = f.set_index("bus").depth
    # the parent of a bus sits one line closer to the root
    assert (depth.reindex(child.parent_bus.astype(int)).to_numpy() == child.depth.to_numpy() - 1).all()
    assert not f.meshed.any()
    assert f.feeder.nunique() >= 8


def test_critical_elements_consistent_with_removal(net):
    crit = tp.critical_elements(net)
    bridges = crit[crit.kind == "bridge"]
    assert len(bridges) > 100
    # removing a reported bridge cuts exactly the reported buses and load off the slack
    for row in bridges.head(5).itertuples():
        n2 = sample_net()
        n2[row.element_type].loc[row.element_id, "in_service"] = False
        en = tp.energized_buses(n2)
        assert int((~en).sum()) == row.buses_cut_off
        assert tp.bus_load_mw(n2)[~en].sum() == pytest.approx(row.load_mw_cut_off)


def test_switch_change_events(net):
    # open the closed switch at the head of a feeder line
    f = tp.feeders(net)
    head_line = int(f[f.depth == 1].parent_element.iloc[0])
    sw = net.switch[(net.switch.et == "l") & (net.switch.element == head_line) & net.switch.closed].index[0]
    ev = tp.diff_topology({}, {sw: 0}, net)
    kinds = [e.kind for e in ev]
    assert kinds[0] == "switch_opened" and "island_split" in kinds and "supply_lost" in kinds
    lost = next(e for e in ev if e.kind == "supply_lost")
    n2 = sample_net()
    n2.switch.loc[sw, "closed"] = False
    assert lost.load_mw == pytest.approx(tp.bus_load_mw(n2)[~tp.energized_buses(n2)].sum())
    # and back: supply restored, islands merged
    ev = tp.diff_topology({sw: False}, {sw: True}, net)
    kinds = [e.kind for e in ev]
    assert "switch_closed" in kinds and "islands_merged" in kinds and "supply_restored" in kinds
    frame = tp.events_frame(ev)
    assert list(frame.columns) == ["kind", "element_type", "element_id", "buses", "load_mw", "detail"]


def test_conflicting_and_invalid_states_are_flagged_not_raised(net):
    sw = int(net.switch.index[5])
    raw = [(sw, 1), (sw, 0), (int(net.switch.index[6]), "maybe"), (int(net.switch.index[7]), 2), (10**6, 1),
           ("x", 1)]
    ev = tp.diff_topology(None, raw, net)
    kinds = [e.kind for e in ev]
    assert kinds.count("switch_status_conflict") == 1
    assert kinds.count("switch_status_invalid") == 2
    assert kinds.count("switch_unknown") == 2
    assert "switch_opened" not in kinds  # flagged switches keep their previous state
    closed, issues = tp.normalize_switch_states({sw: "open"}, net)
    assert closed[sw] is False or not closed[sw]
    assert not issues


def test_tie_switches_and_meshed_when_closed():
    net = cigre()
    ties = tp.tie_switches(net)
    assert set(ties.switch) == {1, 2, 4}
    closed = {int(s): True for s in ties.switch}
    f = tp.feeders(net, closed)
    assert f.meshed.any()
    crit = tp.critical_elements(net, closed)
    # with all ties closed the MV rings have no bridges left among the ring lines
    assert not set(crit[(crit.kind == "bridge") & (crit.element_type == "line")].element_id) & {0, 1, 2, 3, 4}
