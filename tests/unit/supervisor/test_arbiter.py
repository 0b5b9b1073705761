"""The arbiter as pure logic: events and times in, actions out; no processes."""
from __future__ import annotations

from brokers.supervisor.arbiter import Arbiter, Event, Kill, Policy, Proc, Spawn
from brokers.supervisor.states import ProcState

POLICY = Policy(startsecs=1.0, startretries=3, crash_delay=0.1, backoff_base=0.5,
                backoff_max=10.0, stop_timeout=5.0)


def make() -> Arbiter:
    return Arbiter([Proc("state", storage=True), Proc("router"), Proc("gateway-0", ingress=True),
                    Proc("gateway-1", ingress=True)], POLICY)


def started(arb: Arbiter, now: float = 0.0) -> Arbiter:
    for i, action in enumerate(arb.start(now)):
        arb.spawned(action.name, 100 + i, now)
    return arb


def only(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


def test_start_spawns_in_plan_order_and_becomes_running_after_startsecs():
    arb = make()
    assert arb.start(0.0) == [Spawn("state"), Spawn("router"), Spawn("gateway-0"), Spawn("gateway-1")]
    events = arb.spawned("state", 11, 0.0)
    assert events == [Event("state", "spawn", {"pid": 11})] and events[0].topic == "proc.state.spawn"
    assert arb.procs["state"].state is ProcState.STARTING
    assert arb.tick(0.5) == [] and arb.procs["state"].state is ProcState.STARTING
    arb.tick(1.0)
    assert arb.procs["state"].state is ProcState.RUNNING
    assert arb.next_deadline() is None


def test_crash_after_running_restarts_after_crash_delay():
    arb = started(make())
    arb.tick(5.0)
    actions = arb.exited("router", -9, 10.0)
    assert only(actions, Event)[0].what == "exit" and only(actions, Event)[1].what == "backoff"
    p = arb.procs["router"]
    assert (p.state, p.pid, p.last_exit) == (ProcState.BACKOFF, None, -9)
    assert arb.next_deadline() == 10.1
    assert arb.tick(10.05) == []
    assert arb.tick(10.1) == [Spawn("router")]
    assert p.restarts == 1
    arb.spawned("router", 200, 10.12)
    assert p.state is ProcState.STARTING and p.info(10.62)["uptime"] == 0.5


def test_crash_without_a_tick_in_between_still_counts_as_having_run():
    arb = started(make())  # no tick since spawn: STARTING, but it ran 3 s
    arb.exited("router", 1, 3.0)
    assert arb.procs["router"].next_start == 3.1 and arb.procs["router"].failures == 0


def test_crashes_during_startsecs_back_off_exponentially_then_fatal():
    arb = started(make())
    p, now, delays = arb.procs["state"], 0.0, []
    for _ in range(3):
        arb.exited("state", 1, now + 0.2)
        delays.append(round(p.next_start - (now + 0.2), 3))
        now = p.next_start
        assert arb.tick(now) == [Spawn("state")]
        arb.spawned("state", 1, now)
    assert delays == [0.5, 1.0, 2.0] and p.restarts == 3
    actions = arb.exited("state", 1, now + 0.2)
    assert p.state is ProcState.FATAL and actions[-1] == Event("state", "fatal", {"failures": 4})
    assert arb.tick(now + 100) == []


def test_a_good_run_resets_the_failure_count():
    arb = started(make())
    arb.exited("state", 1, 0.2)
    arb.tick(0.7)
    arb.spawned("state", 5, 0.7)
    arb.tick(1.7)  # up for startsecs: RUNNING
    assert arb.procs["state"].failures == 0


def test_backoff_is_capped():
    arb = Arbiter([Proc("x")], Policy(startretries=20, backoff_base=1.0, backoff_max=3.0))
    started(arb)
    now = 0.0
    for _ in range(5):
        arb.exited("x", 1, now)
        now = arb.procs["x"].next_start
        arb.tick(now)
        arb.spawned("x", 1, now)
    assert now == 1 + 2 + 3 + 3 + 3


def test_stop_all_drains_ingress_first_then_others_then_storage():
    arb = started(make())
    arb.tick(2.0)
    assert arb.stop_all(10.0) == [Kill("gateway-0", "TERM"), Kill("gateway-1", "TERM")]
    assert arb.procs["gateway-0"].state is ProcState.STOPPING
    assert only(arb.exited("gateway-0", 0, 10.1), Kill) == []  # gateway-1 still draining
    assert only(arb.exited("gateway-1", 0, 10.2), Kill) == [Kill("router", "TERM")]
    assert only(arb.exited("router", 0, 10.3), Kill) == [Kill("state", "TERM")]
    assert not arb.done
    arb.exited("state", 0, 10.4)
    assert arb.done and all(p.state is ProcState.STOPPED for p in arb.procs.values())


def test_stop_timeout_then_sigkill_and_nothing_respawns_during_stop():
    arb = started(make())
    arb.exited("router", -9, 1.5)  # in BACKOFF when the stop begins
    assert arb.tick(1.55) == []
    arb.stop_all(2.0)
    assert arb.procs["router"].state is ProcState.STOPPED
    assert arb.next_deadline() == 7.0
    assert arb.tick(7.0) == [Kill("gateway-0", "KILL"), Kill("gateway-1", "KILL")]
    assert arb.tick(8.0) == []  # SIGKILL is sent once
    arb.exited("gateway-0", -9, 8.1)
    assert only(arb.exited("gateway-1", -9, 8.1), Kill) == [Kill("state", "TERM")]
    assert only(arb.tick(100.0), Spawn) == []


def test_second_signal_skips_the_drain():
    arb = started(make())
    arb.stop_all(1.0)
    kills = arb.stop_all(1.1, drain=False)
    assert sorted(k.name for k in kills) == ["gateway-0", "gateway-1", "router", "state"]
    assert {k.signal for k in kills} == {"KILL"}
    assert arb.stop_all(1.2, drain=False) == []


def test_operator_restart_respawns_on_exit_and_revives_fatal():
    arb = started(make())
    assert arb.restart("router", 3.0) == [Kill("router", "TERM")]
    assert only(arb.exited("router", 0, 3.1), Spawn) == [Spawn("router")]
    assert arb.procs["router"].restarts == 0
    arb.procs["state"].state, arb.procs["state"].pid = ProcState.FATAL, None
    assert arb.restart("state", 4.0) == [Spawn("state")]


def test_spawn_failure_counts_as_a_start_failure():
    arb = make()
    arb.start(0.0)
    actions = arb.spawn_failed("router", "ENOENT", 0.0)
    assert arb.procs["router"].state is ProcState.BACKOFF and arb.procs["router"].failures == 1
    assert only(actions, Event)[-1].data == {"error": "ENOENT"}


def test_without_autorestart_a_clean_exit_is_exited():
    arb = Arbiter([Proc("x")], Policy(autorestart=False))
    started(arb)
    arb.exited("x", 0, 5.0)
    assert arb.procs["x"].state is ProcState.EXITED and arb.tick(9.0) == []


def test_status_rows():
    arb = started(make(), now=1.0)
    rows = arb.status(3.5)
    assert rows[0] == {"name": "state", "state": "STARTING", "pid": 100, "uptime": 2.5,
                       "restarts": 0, "last_exit": None, "generation": None}
