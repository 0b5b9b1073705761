"""A binding parked for want of a provider: the registry reports it (``on_parked``) and
``notices.ParkedNotices`` writes the line a user reads: which worker would provide the
type and why it does not (issue 9, item 7), quiet for replays to a restarted router, at
most one line per trigger type per window."""
from __future__ import annotations

from types import SimpleNamespace

from regfake import A, C, P, Reg

from brokers.router.notices import REPLAY_WINDOW_S, ParkedNotices, worker_sets

HAVE = frozenset({"iii-worker-manager", "iii-engine-functions", "iii-state", "iii-queue", "queue", "iii-pubsub"})
ENABLED = frozenset({"iii-worker-manager", "iii-engine-functions", "iii-queue", "queue"})


def notices(**kw) -> ParkedNotices:
    return ParkedNotices(HAVE, ENABLED, **kw)


# ---- the registry's part ---------------------------------------------------------------

def test_register_trigger_reports_a_parked_binding_once_per_registration(reg: Reg) -> None:
    reg.bind(A, "b1", "cron")
    assert reg.parked == ["b1"]
    reg.bind(A, "b1", "cron")  # the user bound it again (same id): reported again
    assert reg.parked == ["b1", "b1"]


def test_a_delivered_binding_is_not_reported(reg: Reg) -> None:
    reg.tt(P, "webhook")
    reg.bind(A, "b1", "webhook")
    assert reg.parked == []


def test_a_binding_parked_by_its_provider_going_away_is_not_reported(reg: Reg) -> None:
    reg.tt(P, "webhook")
    reg.bind(A, "b1", "webhook")
    reg.disconnect(P)  # a provider restarting: its bindings wait silently for its return
    assert reg.bindings["b1"].provider is None and reg.parked == []


def test_durable_bindings_are_reported_too(reg: Reg) -> None:
    reg.register_trigger(None, "default", {"id": "d1", "trigger_type": "crno", "function_id": "f"})
    assert reg.parked == ["d1"]


# ---- the text ------------------------------------------------------------------------

def line_for(reg: Reg, ttype: str, **extra) -> str:
    reg.bind(A, "T", ttype, fid="f", **extra)
    [line] = notices().parked(reg.bindings["T"], A[0], reg, 0.0)
    return line


def test_cron_names_the_worker_this_engine_does_not_have(reg: Reg) -> None:
    assert line_for(reg, "cron") == (
        "trigger 'T' (type 'cron', function 'f') is waiting: no worker provides trigger type 'cron'; "
        "it is provided by the iii-cron worker, which this engine does not have yet")


def test_a_worker_the_config_does_not_enable_says_how_to_enable_it(reg: Reg) -> None:
    assert line_for(reg, "state").endswith(
        "no worker provides trigger type 'state'; it is provided by the iii-state worker, which is "
        "not enabled in this config (add '- name: iii-state' under workers:)")


def test_an_enabled_worker_that_has_not_registered_yet(reg: Reg) -> None:
    assert "it is provided by the iii-queue worker, which is enabled but has not registered it yet" \
        in line_for(reg, "durable:subscriber")


def test_an_unknown_type_waits_for_anyone_and_suggests_the_near_name(reg: Reg) -> None:
    assert line_for(reg, "crno") == (
        "trigger 'T' (type 'crno', function 'f') is waiting: no worker has registered trigger type "
        "'crno'; it will be delivered when one does (did you mean 'cron'?)")
    reg.tt(P, "webhook")
    reg.bind(A, "U", "webhok")
    [line] = notices().parked(reg.bindings["U"], A[0], reg, 0.0)
    assert line.endswith("(did you mean 'webhook'?)")  # registered types are candidates too


def test_a_type_registered_in_another_namespace_says_where(reg: Reg) -> None:
    reg.tt(P, "webhook", "orders")
    line = line_for(reg, "webhook", trigger_namespace="billing", namespace="billing")
    assert line == ("trigger 'T' (type 'webhook', function 'f' in namespace 'billing') is waiting: "
                    "trigger type 'webhook' is registered in namespace 'orders', not in 'billing'; "
                    "it will be delivered when a worker registers it there")


def test_names_are_quoted_with_control_characters_escaped(reg: Reg) -> None:
    line = line_for(reg, "cr\non")
    assert "\n" not in line and "'cr\\non'" in line


def test_worker_sets_read_units_and_config_entries() -> None:
    units = [SimpleNamespace(worker_names=("iii-engine-functions",), always=True),
             SimpleNamespace(worker_names=("iii-state",), always=False),
             SimpleNamespace(worker_names=("iii-queue", "queue"), always=False)]
    entries = [SimpleNamespace(unit=units[2]), SimpleNamespace(unit=None)]  # e.g. iii-cron: no unit
    have, enabled = worker_sets(units, entries)
    assert have == {"iii-engine-functions", "iii-state", "iii-queue", "queue"}
    assert enabled == {"iii-engine-functions", "iii-queue", "queue"}


# ---- replays to a restarted router ---------------------------------------------------

def test_a_replay_after_a_router_restart_is_quiet_until_its_ack_request(reg: Reg) -> None:
    n = notices()
    reg.bind(A, "b1", "cron")
    n.replaying("gw1", 0.0)
    assert n.parked(reg.bindings["b1"], "gw1", reg, 0.1) == []
    reg.bind(C, "b2", "crno")  # another gateway, not replaying
    assert len(n.parked(reg.bindings["b2"], "gw2", reg, 0.1)) == 1
    n.replayed("gw1")
    reg.bind(A, "b3", "state")
    assert len(n.parked(reg.bindings["b3"], "gw1", reg, 0.2)) == 1


def test_a_replay_window_ends_by_itself() -> None:
    reg = Reg()
    reg.conn(A)
    n = notices()
    n.replaying("gw1", 0.0)
    reg.bind(A, "b1", "cron")
    assert n.parked(reg.bindings["b1"], "gw1", reg, REPLAY_WINDOW_S + 0.1) != []


def test_engine_register_trigger_is_never_a_replay(reg: Reg) -> None:
    n = notices()
    n.replaying("router", 0.0)
    reg.register_trigger(None, "default", {"id": "d1", "trigger_type": "cron", "function_id": "f"})
    assert len(n.parked(reg.bindings["d1"], None, reg, 0.0)) == 1


# ---- floods --------------------------------------------------------------------------

def test_one_line_per_type_per_window_then_a_count_of_those_still_waiting(reg: Reg) -> None:
    n = notices(interval=60.0)
    for i in range(50):
        reg.bind(A, f"h{i}", "http", fid=f"api::route{i}")
    lines = [line for i in range(50) for line in n.parked(reg.bindings[f"h{i}"], "gw1", reg, float(i))]
    assert len(lines) == 1 and lines[0].startswith("trigger 'h0' (type 'http', function 'api::route0')")
    reg.bind(A, "c0", "cron")
    assert len(n.parked(reg.bindings["c0"], "gw1", reg, 1.0)) == 1  # another type has its own window
    assert n.next_due() == 60.0
    assert n.due(59.9, reg) == []
    reg.unregister_trigger(A, "default", {"id": "h1"})  # gone: not counted
    [summary] = n.due(60.0, reg)
    assert summary == (
        "48 more trigger bindings of type 'http' are waiting (parked in the last 60 s; functions "
        "'api::route2', 'api::route3', 'api::route4' and 45 more): no worker provides trigger type "
        "'http'; it is provided by the iii-http worker, which this engine does not have yet")
    assert n.next_due() is None
    reg.bind(A, "h99", "http")
    assert len(n.parked(reg.bindings["h99"], "gw1", reg, 61.0)) == 1  # a new window


def test_no_summary_when_the_held_bindings_were_delivered_meanwhile(reg: Reg) -> None:
    n = notices(interval=60.0)
    for bid in ("w1", "w2"):
        reg.bind(A, bid, "webhook")
        n.parked(reg.bindings[bid], "gw1", reg, 0.0)
    reg.tt(P, "webhook")
    assert reg.bindings["w2"].provider is not None
    assert n.due(60.0, reg) == []


def test_a_late_window_is_summed_up_before_the_next_line(reg: Reg) -> None:
    n = notices(interval=10.0)
    for bid in ("x1", "x2"):
        reg.bind(A, bid, "cron")
        n.parked(reg.bindings[bid], "gw1", reg, 0.0)
    reg.bind(A, "x3", "cron")
    lines = n.parked(reg.bindings["x3"], "gw1", reg, 30.0)  # the shell's timer did not run
    assert [line.split(" ", 2)[:2] for line in lines] == [["1", "more"], ["trigger", "'x3'"]]
