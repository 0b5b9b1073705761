"""The state broker in a real engine (supervisor, gateway, router, state on LMDB), driven by
a raw protocol client: every state::* function, error codes, group commit, state triggers
with filters and conditions, and acknowledged writes surviving ``kill -9`` of the state
process."""
from __future__ import annotations

import threading
import time
import uuid

import pytest

from tests.harness import STATE_READY, running_engine
from tests.wsclient import RawClient, ok

STATE_YAML = """
- name: iii-state
  config:
    max_value_bytes: 1000
"""


@pytest.fixture(scope="module")
def engine():
    with running_engine(extra_workers_yaml=STATE_YAML) as eng:
        yield eng


@pytest.fixture
def client(engine):
    # declared: registrations of an undeclared connection wait for the namespace grace
    with RawClient.declared(engine.url) as c:
        c.wait_answered(STATE_READY)
        yield c


def test_functions_roundtrip(client):
    scope = f"s-{uuid.uuid4().hex[:6]}"
    assert ok(client.call("state::set", {"scope": scope, "key": "a", "value": {"n": 1}})) == \
        {"old_value": None, "new_value": {"n": 1}}
    assert ok(client.call("state::get", {"scope": scope, "key": "a"})) == {"n": 1}
    assert ok(client.call("state::get", {"scope": scope, "key": "zz"})) is None
    res = ok(client.call("state::update", {"scope": scope, "key": "a", "ops": [
        {"type": "increment", "path": "n", "by": 4}, {"type": "append", "path": "n", "value": "x"}]}))
    assert res["old_value"] == {"n": 1} and res["new_value"] == {"n": 5}
    assert [e["code"] for e in res["errors"]] == ["append.type_mismatch"]
    ok(client.call("state::set", {"scope": scope, "key": "b", "data": 2}))
    assert sorted(ok(client.call("state::list", {"scope": scope})), key=str) == [2, {"n": 5}]
    assert scope in ok(client.call("state::list_groups", {}))["groups"]
    assert ok(client.call("state::delete", {"scope": scope, "key": "a"})) == {"n": 5}
    assert ok(client.call("state::get", {"scope": scope, "key": "a"})) is None


def test_errors(client):
    err = client.call("state::set", {"key": "k", "value": 1})["error"]
    assert err["code"] == "deserialization_error"
    assert err["message"] == "Failed to deserialize input for state::set: missing field `scope`"
    err = client.call("state::update", {"scope": "s", "key": "k", "ops": [{"type": "zap"}]})["error"]
    assert err["code"] == "deserialization_error"
    err = client.call("state::set", {"scope": "s", "key": "big", "value": "x" * 2000})["error"]
    assert err["code"] == "VALUE_TOO_LARGE"
    assert ok(client.call("state::get", {"scope": "s", "key": "big"})) is None


def test_many_in_flight_all_acked(client):
    """Pipelined writes: every call answered with its own old/new value."""
    scope = f"p-{uuid.uuid4().hex[:6]}"
    ids = []
    for i in range(200):
        inv = str(uuid.uuid4())
        ids.append(inv)
        client.send({"type": "invokefunction", "function_id": "state::update", "invocation_id": inv,
                     "data": {"scope": scope, "key": "ctr", "ops": [{"type": "increment", "path": "", "by": 1}]}})
    olds = []
    for inv in ids:
        frame = client.recv_until(lambda f, inv=inv: f.get("invocation_id") == inv)
        olds.append(ok(frame)["old_value"])
    assert sorted(olds, key=lambda v: -1 if v is None else v) == [None] + list(range(1, 200))
    assert ok(client.call("state::get", {"scope": scope, "key": "ctr"})) == 200


def bind(client, fn, config):
    client.register_function(fn)
    tid = str(uuid.uuid4())
    client.send({"type": "registertrigger", "id": tid, "trigger_type": "state",
                 "function_id": fn, "config": config})
    return tid


def bind_with_condition(client, scope: str) -> tuple[str, str]:
    """A handler bound to ``scope`` with a condition function; both answered by ``client``."""
    handler, cond = f"h::{scope}", f"c::{scope}"
    client.register_function(cond)
    bind(client, handler, {"scope": scope, "condition_function_id": cond})
    time.sleep(0.3)  # the binding travels gateway -> router -> state
    return handler, cond


def test_triggers_filters_order_and_condition(client, engine):
    scope = f"t-{uuid.uuid4().hex[:6]}"
    handler, cond = bind_with_condition(client, scope)

    # A writer in another connection: the events come to `client`, which answers them.
    writer = RawClient.worker(engine.url)
    try:
        ok(writer.call("state::set", {"scope": "elsewhere", "key": "k", "value": 0}))
        for i in range(3):
            ok(writer.call("state::set", {"scope": scope, "key": "k", "value": i}))
        ok(writer.call("state::delete", {"scope": scope, "key": "k"}))
    finally:
        writer.close()

    seen = []
    for _ in range(4):
        inv = client.recv_until(lambda f: f.get("type") == "invokefunction" and f["function_id"] == cond)
        event = inv["data"]
        # only the second event is vetoed, by an exact JSON false
        client.answer(inv, False if event["new_value"] == 1 else "anything")
        if event["new_value"] != 1:
            h = client.recv_until(lambda f: f.get("type") == "invokefunction" and f["function_id"] == handler)
            assert h["data"] == event
            client.answer(h, None)
        seen.append((event["event_type"], event["old_value"], event["new_value"]))
    assert seen == [("state:created", None, 0), ("state:updated", 0, 1), ("state:updated", 1, 2),
                    ("state:deleted", 2, None)]
    assert all(f.get("data", {}).get("scope") != "elsewhere" for f in client.frames_within(0.3))


def test_trigger_calls_carry_the_writes_trace_context(client, engine):
    """protocol §9.1: the condition and the handler run in the trace of the write, as
    children of the engine's spans (issue 16), with the write's baggage."""
    scope = f"tr-{uuid.uuid4().hex[:6]}"
    handler, cond = bind_with_condition(client, scope)
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with RawClient.worker(engine.url) as writer:
        ok(writer.call("state::set", {"scope": scope, "key": "k", "value": 1},
                       traceparent=traceparent, baggage="tenant=a"))
        ok(writer.call("state::set", {"scope": scope, "key": "k", "value": 2}))
    traces = []
    for baggage in ("tenant=a", None):
        calls = []
        for fn in (cond, handler):
            inv = client.recv_until(lambda f, fn=fn: f.get("type") == "invokefunction" and f["function_id"] == fn)
            client.answer(inv, True if fn == cond else None)
            calls.append((inv["traceparent"][3:35], inv.get("baggage")))
            assert inv["traceparent"][36:52] != traceparent[36:52]  # the engine's span is the parent
        traces.append(calls[0][0])
        # the engine's trace context reached the state process, so iii.function.id is set (§9.1)
        expect = (lambda fn: f"{baggage},iii.function.id={fn}") if baggage else (lambda fn: f"iii.function.id={fn}")
        assert calls == [(calls[0][0], expect(cond)), (calls[0][0], expect(handler))]
    # the first write's trace is the writer's; the second's is the one the engine started for it
    assert traces[0] == traceparent[3:35] and traces[1] != traces[0]


def test_acknowledged_writes_survive_kill_9(engine):
    """Writes acknowledged before a SIGKILL of the state process are there after its restart."""
    c = RawClient.worker(engine.url)
    acked: dict[str, int] = {}
    unsure: dict[str, set[int]] = {}  # writes answered with an error: stored or not
    try:
        c.wait_answered(STATE_READY)
        old_pid = engine.pid("state")
        killer = threading.Timer(0.3, engine.kill, args=("state",))
        killer.start()
        t_end = time.monotonic() + 1.0
        i = 0
        while time.monotonic() < t_end:
            key = f"k{i % 50}"
            frame = c.call("state::set", {"scope": "crash", "key": key, "value": i}, timeout=10)
            if frame.get("error") is None:
                acked[key] = i
                unsure[key] = set()
            else:
                unsure.setdefault(key, set()).add(i)
            i += 1
        killer.join()
        deadline = time.monotonic() + 15
        while engine.pid("state") in (old_pid, None, 0) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert engine.pid("state") not in (old_pid, None, 0), "the state process was not restarted"
        c.wait_answered(STATE_READY, within=15)
        for key, value in acked.items():
            # The last acknowledged value, unless a later write whose answer was lost with the
            # killed process made it to disk first (durable but unacknowledged is allowed).
            stored = ok(c.call("state::get", {"scope": "crash", "key": key}))
            assert stored == value or stored in unsure.get(key, ()), (key, stored, value)
    finally:
        c.close()
    assert len(acked) > 10
