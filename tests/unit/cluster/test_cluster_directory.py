"""The cluster's pure core: remote functions merged into the local registry, local
preferred, hosts that come and go, the export diff and the calls in flight."""
from __future__ import annotations

from brokers.cluster.core import Calls, Directory, Host, Lives, details, export_diff, pseudo_conn

GW = "gateway"


def d() -> Directory:
    return Directory("A", "cluster")


def host(hid: str, *fns: str, ns: str = "default", epoch: str = "1", conn: str = "w1") -> Host:
    return Host(hid, f"tcp://127.0.0.1:{ord(hid[0])}", epoch, {(ns, f): details((GW, conn)) for f in fns},
                {GW: [f"tcp://127.0.0.1:{ord(hid[0]) + 1}", "e1"]})


def pc(hid: str, conn: str = "w1") -> str:
    return f"{hid}/{GW}/{conn}"


def test_remote_function_is_registered_under_its_owner_there() -> None:
    dr = d()
    eff = dr.set_host(host("B", "b::f"))
    assert eff == [("open", pc("B")), ("register", pc("B"), "default", "b::f")]
    assert dr.target(pc("B")) == ("B", GW, "w1")
    assert dr.set_host(host("B", "b::f")) == []  # unchanged: nothing to say
    assert dr.peers() == {"B/gateway": ("tcp://127.0.0.1:67", "e1")}


def test_details_without_a_well_formed_owner_are_not_routable() -> None:
    dr = d()
    for bad in ({}, {"o": "gateway/w1"}, {"o": ["gateway"]}, {"o": ["gate/way", "w1"]}, {"o": ["gateway", 3]}):
        assert pseudo_conn("B", bad) is None
        assert dr.set_host(Host("B", "tcp://x:1", "1", {("default", "f"): bad})) == []


def test_a_function_whose_owner_changes_on_its_host_moves_to_the_new_owner() -> None:
    dr = d()
    dr.set_host(host("B", "f"))
    eff = dr.set_host(host("B", "f", conn="w2"))
    assert eff == [("open", pc("B", "w2")), ("register", pc("B", "w2"), "default", "f"), ("close", pc("B"))]


def test_a_local_function_is_never_registered_as_remote() -> None:
    dr = d()
    dr.apply_routes([["=",], ["+", "default", "f", GW, "w1"]])
    assert dr.set_host(host("B", "f")) == []


def test_a_local_owner_takes_over_and_the_remote_one_comes_back_after_it() -> None:
    dr = d()
    dr.set_host(host("B", "f", "g"))
    # the router replaced our entry with the local worker's: we forget it, nothing sent
    assert dr.apply_routes([["+", "default", "f", GW, "w1"]]) == []
    assert ("default", "f") not in dr.registered
    # the worker goes: the remote one is registered again
    assert dr.apply_routes([["-", "default", "f", GW, "w1"]]) == [("register", pc("B"), "default", "f")]


def test_our_own_route_ops_do_not_count_as_local() -> None:
    dr = d()
    dr.set_host(host("B", "f"))
    assert dr.apply_routes([["+", "default", "f", "cluster", pc("B")]]) == []
    assert dr.registered == {("default", "f"): pc("B")}


def test_a_dead_host_closes_its_pseudo_connections_in_one_go() -> None:
    dr = d()
    dr.set_host(host("B", "f", "g"))
    assert dr.drop_host("B") == [("close", pc("B"))]
    assert dr.registered == {} and dr.conns == {}
    assert dr.drop_host("B") == []


def test_a_function_moves_to_another_host_when_its_host_dies_and_stays_put_otherwise() -> None:
    dr = d()
    dr.set_host(host("C", "f"))
    dr.set_host(host("B", "f"))  # B sorts first, but f stays on C: no flapping
    assert dr.registered[("default", "f")] == pc("C")
    eff = dr.drop_host("C")
    assert eff == [("open", pc("B")), ("register", pc("B"), "default", "f"), ("close", pc("C"))]


def test_a_function_the_host_no_longer_serves_is_unregistered() -> None:
    dr = d()
    dr.set_host(host("B", "f", "g"))
    assert dr.set_host(host("B", "g")) == [("unregister", pc("B"), "default", "f")]


def test_one_owner_serves_several_namespaces_under_one_pseudo_connection() -> None:
    dr = d()
    eff = dr.set_host(Host("B", "tcp://x:1", "1", {("default", "f"): details((GW, "w1")),
                                                    ("billing", "f"): details((GW, "w1"))}))
    assert eff == [("open", pc("B")), ("register", pc("B"), "default", "f"), ("register", pc("B"), "billing", "f")]


def test_a_restart_of_the_router_replays_everything() -> None:
    dr = d()
    dr.set_host(host("B", "f"))
    assert dr.replay() == [("open", pc("B")), ("register", pc("B"), "default", "f")]


def test_exported_is_the_workers_functions_only() -> None:
    dr = d()
    dr.apply_routes([["=",], ["+", "default", "w::f", GW, "w1"], ["+", "default", "state::get", "state", None],
                     ["+", "default", "r::f", "cluster", pc("B")], ["+", "default", "engine::x", GW, "w1"]])
    assert set(dr.exported()) == {("default", "w::f")}
    assert export_diff({("default", "old"): {}}, {("default", "w::f"): {}}) == ({("default", "w::f"): {}},
                                                                               [("default", "old")])


def test_calls_are_numbered_and_stopped_per_host_and_per_node() -> None:
    calls = Calls()
    s1 = calls.send("gateway", "c1", "id", "f", "B")
    s2 = calls.send("gateway", "c2", "id", "f", "C")  # the same caller id: another number
    assert s1 != s2
    assert [c.rc for c in calls.host_gone("B")] == ["c1"]
    assert calls.answered(s1) is None and calls.answered(s2).rc == "c2"
    key = calls.deliver("A", 7, "id", "f", "gateway")
    assert calls.node_gone("gateway")[0].seq == 7 and calls.returned(key) is None
    calls.deliver("A", 8, "id", "f", "gateway")
    calls.origin_gone("A")
    assert calls.inb == {}


def test_a_gateway_life_ends_on_a_new_epoch_or_a_dead_host_not_on_a_gap() -> None:
    lives = Lives()
    assert lives.seen({"B/gw": ("tcp://b:1", "e1"), "C/gw": ("tcp://c:1", "e1")}) == []
    assert lives.seen({"C/gw": ("tcp://c:1", "e1")}) == []  # B's entry lacks it (its cluster restarted)
    assert lives.seen({"B/gw": ("tcp://b:1", "e1"), "C/gw": ("tcp://c:1", "e1")}) == []  # the same life
    assert lives.seen({"B/gw": ("tcp://b:2", "e2"), "C/gw": ("tcp://c:1", "e1")}) == ["B/gw"]  # restarted
    assert lives.of("C") and lives.dead("C") == ["C/gw"] and lives.dead("C") == [] and not lives.of("C")
    lives.prune(["A"])  # B left cleanly: forgotten, nothing to stop
    assert lives.epochs == {}
