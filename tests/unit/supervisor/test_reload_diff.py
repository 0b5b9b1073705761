"""Reload by diff as pure logic: two plan generations in, each process's fate out
(``brokers.supervisor.diff``); and the arbiter carrying a reload out in order."""
from __future__ import annotations

import textwrap

import pytest

from brokers.kit import config
from brokers.supervisor.arbiter import Arbiter, Kill, Policy, Proc, Spawn
from brokers.supervisor.diff import diff, plans, why_changed
from brokers.supervisor.plan import Plan
from brokers.supervisor.states import ProcState
from brokers.supervisor.units import discover

UNITS = discover()

BASE = """
    engine: {runtime_dir: /tmp/iii-diff-test, data_dir: /tmp/iii-diff-data}
    workers:
      - name: iii-worker-manager
        config: {host: 127.0.0.1, port: 49999}
      - name: iii-queue
        config:
          queue_configs: {payment: {max_retries: 3, concurrency: 2}}
      - name: iii-cron
"""


def make_plan(tmp_path, text: str, generation: int = 1) -> Plan:
    path = tmp_path / "config.yaml"  # a reload reads the same file again
    path.write_text(textwrap.dedent(text))
    cfg = config.load(str(path), UNITS)
    plan = Plan.make(cfg, config.plan(cfg, UNITS), now=float(generation), generation=generation)
    return plan


def test_same_config_changes_nothing(tmp_path):
    d = plans(make_plan(tmp_path, BASE), make_plan(tmp_path, BASE, 2), UNITS)
    assert d.empty and not d.added and not d.removed and not d.changed
    assert set(d.unchanged) == {"router", "observability", "gateway", "queue", "cron"}


def test_adding_http_starts_it_restarts_the_peer_bound_only(tmp_path):
    """Every spec's ``peers`` changes; only the peer-bound router and observability are
    restarted for it."""
    new = BASE + "      - name: iii-http\n        config: {host: 127.0.0.1, port: 49998}\n"
    d = plans(make_plan(tmp_path, BASE), make_plan(tmp_path, new, 2), UNITS)
    assert d.added == ("http",)
    assert set(d.changed) == {"router", "observability"}
    assert all(r in ("peers", "engine.workers") for r in d.reasons.values())
    assert set(d.unchanged) == {"gateway", "queue", "cron"}
    assert d.removed == ()


def test_changing_a_queue_restarts_the_queue_only(tmp_path):
    new = BASE.replace("max_retries: 3", "max_retries: 7")
    d = plans(make_plan(tmp_path, BASE), make_plan(tmp_path, new, 2), UNITS)
    assert d.changed == ("queue",) and d.reasons == {"queue": "config"}
    assert set(d.unchanged) == {"router", "observability", "gateway", "cron"}
    assert not d.added and not d.removed


def test_removing_cron_stops_it(tmp_path):
    new = BASE.replace("  - name: iii-cron\n", "")
    d = plans(make_plan(tmp_path, BASE), make_plan(tmp_path, new, 2), UNITS)
    assert d.removed == ("cron",) and set(d.changed) == {"router", "observability"}
    assert set(d.unchanged) == {"gateway", "queue"}


def test_an_engine_setting_every_process_runs_with_restarts_them_all(tmp_path):
    new = BASE.replace("data_dir: /tmp/iii-diff-data}", "data_dir: /tmp/iii-diff-data, "
                                                        "log_level: debug}")
    d = plans(make_plan(tmp_path, BASE), make_plan(tmp_path, new, 2), UNITS)
    assert set(d.changed) == {"router", "observability", "gateway", "queue", "cron"}
    assert all(r == "engine.log_level" for r in d.reasons.values())


def test_more_gateway_processes_add_instances_and_restart_the_renamed_one(tmp_path):
    new = BASE.replace("port: 49999}", "port: 49999, processes: 2}")
    d = plans(make_plan(tmp_path, BASE), make_plan(tmp_path, new, 2), UNITS)
    assert d.added == ("gateway-0", "gateway-1") and "gateway" in d.removed


def test_a_gateway_looks_up_http_functions_by_peer():
    spec = {"unit": "gateway", "config": {}, "engine": {"workers": []}, "peers": ["router", "gateway"]}
    units = {"http_functions": {"worker_names": ["iii-http-functions"]}}
    assert why_changed(spec, dict(spec, peers=["router", "gateway", "cron"]), units) is None
    assert why_changed(spec, dict(spec, peers=["router", "gateway", "http_functions"]),
                       units) == "peers (iii-http-functions)"


def test_diff_keeps_new_start_order_and_old_order_for_removed():
    a = {"unit": "x", "config": 1, "engine": {}, "peers": []}
    d = diff({"s": a, "m": a, "i": a}, {"s": a, "n": a, "i": dict(a, config=2)})
    assert d.added == ("n",) and d.changed == ("i",) and d.removed == ("m",) and d.unchanged == ("s",)


# ---- the arbiter carries a reload out ------------------------------------------------

POLICY = Policy(startsecs=1.0, stop_timeout=5.0)


def running() -> Arbiter:
    arb = Arbiter([Proc("queue", storage=True), Proc("router"), Proc("cron"),
                   Proc("gateway", ingress=True)], POLICY)
    for i, a in enumerate(arb.start(0.0)):
        arb.spawned(a.name, 100 + i, 0.0, generation=1)
    arb.tick(2.0)
    return arb


def new_procs(*names_flags) -> list[Proc]:
    return [Proc(n, ingress=f == "i", storage=f == "s") for n, f in names_flags]


def test_reload_stops_ingress_first_storage_last_then_starts_in_plan_order():
    arb = running()
    procs = new_procs(("queue", "s"), ("router", ""), ("gateway", "i"), ("http", "i"))
    acts = arb.reload(procs, changed=["queue", "router"], removed=["cron"], now=3.0)
    # no ingress changes: the others go first (router and cron), storage after them
    assert sorted(a.name for a in acts) == ["cron", "router"] and all(isinstance(a, Kill) for a in acts)
    assert arb.reloading is not None
    assert arb.exited("router", 0, 3.1)[1:] == []  # cron still stopping
    acts = arb.exited("cron", 0, 3.2)[1:]
    assert acts == [Kill("queue", "TERM")] and "cron" not in arb.procs
    acts = arb.exited("queue", 0, 3.3)[1:]
    assert acts == [Spawn("queue"), Spawn("router"), Spawn("http")]  # plan order
    assert arb.reloading is None
    assert list(arb.procs) == ["queue", "router", "gateway", "http"]
    gw = arb.procs["gateway"]
    assert gw.pid == 103 and gw.state is ProcState.RUNNING and gw.generation == 1
    arb.spawned("queue", 200, 3.4, generation=2)
    assert arb.status(4.0)[0]["generation"] == 2


def test_reload_with_only_additions_spawns_at_once_and_touches_nothing_else():
    arb = running()
    procs = new_procs(("queue", "s"), ("router", ""), ("cron", ""), ("gateway", "i"), ("http", "i"))
    assert arb.reload(procs, changed=[], removed=[], now=3.0) == [Spawn("http")]
    assert arb.reloading is None
    assert [arb.procs[n].pid for n in ("queue", "router", "cron", "gateway")] == [100, 101, 102, 103]


def test_a_process_stopped_by_a_reload_is_not_respawned_until_its_turn():
    arb = running()
    procs = new_procs(("queue", "s"), ("router", ""), ("cron", ""), ("gateway", "i"))
    assert arb.reload(procs, changed=["gateway", "queue"], removed=[], now=3.0) == [Kill("gateway", "TERM")]
    assert arb.tick(4.0) == []
    assert arb.exited("gateway", 0, 4.5)[1:] == [Kill("queue", "TERM")]  # not spawned yet
    assert arb.exited("queue", 0, 4.6)[1:] == [Spawn("queue"), Spawn("gateway")]


def test_reload_revives_a_changed_fatal_process_and_drops_a_removed_dead_one():
    arb = running()
    arb.procs["cron"].state, arb.procs["cron"].pid = ProcState.FATAL, None
    arb.procs["router"].state, arb.procs["router"].pid = ProcState.FATAL, None
    procs = new_procs(("queue", "s"), ("router", ""), ("gateway", "i"))
    assert arb.reload(procs, changed=["router"], removed=["cron"], now=3.0) == [Spawn("router")]
    assert "cron" not in arb.procs


def test_no_reload_while_stopping_or_during_another():
    arb = running()
    procs = new_procs(("queue", "s"), ("router", ""), ("cron", ""), ("gateway", "i"))
    arb.reload(procs, changed=["router"], removed=[], now=3.0)
    with pytest.raises(RuntimeError, match="already under way"):
        arb.reload(procs, changed=[], removed=[], now=3.1)
    arb.stop_all(3.2)
    assert arb.reloading is None
    with pytest.raises(RuntimeError, match="stopping"):
        arb.reload(procs, changed=[], removed=[], now=3.3)


def test_stop_during_a_reload_starts_nothing_of_it():
    arb = running()
    procs = new_procs(("queue", "s"), ("router", ""), ("cron", ""), ("gateway", "i"), ("http", "i"))
    arb.reload(procs, changed=["router"], removed=[], now=3.0)
    acts = arb.stop_all(3.1)
    assert acts == [Kill("gateway", "TERM")]
    acts = arb.exited("router", 0, 3.2)
    assert not [a for a in acts if isinstance(a, Spawn)]


def test_changing_the_state_store_restarts_state_and_the_gateways_that_serve_it(tmp_path):
    """The gateways serve ``state::*`` on the state store in place (its place and value
    limit are shared with them): a change there restarts them too, nobody else."""
    old = BASE + "      - name: iii-state\n        config: {}\n"
    new = BASE + "      - name: iii-state\n        config: {max_value_bytes: 1000}\n"
    d = plans(make_plan(tmp_path, old), make_plan(tmp_path, new, 2), UNITS)
    assert set(d.changed) == {"state", "gateway"}
    assert d.reasons == {"state": "config", "gateway": "engine.shared.state"}
    assert set(d.unchanged) == {"router", "observability", "queue", "cron"}


def test_adding_state_restarts_the_gateway_besides_the_peer_bound(tmp_path):
    new = BASE + "      - name: iii-state\n        config: {}\n"
    d = plans(make_plan(tmp_path, BASE), make_plan(tmp_path, new, 2), UNITS)
    assert d.added == ("state",)
    assert set(d.changed) == {"router", "observability", "gateway"}
    assert d.reasons["gateway"] == "engine.shared.state"
    assert set(d.unchanged) == {"queue", "cron"}
