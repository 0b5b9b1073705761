"""The worker protocol at the frame level, with a raw client against the real engine.

Covers the tolerance rules of spec §1.3/§2 (malformed frames dropped, connection kept; missing
`data` is null), `ping`/`pong` (§3.14), the `/otel` route (§1.1), a 20 MiB message (§10.4),
and the exact frames of `function_not_found`, Void, `registrationrejected` and `reattach`.
"""
from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

from tests.wsclient import RawClient


def fid(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def callee(engine):
    """A raw worker owning one echo-style function, namespace declared at once."""
    c = RawClient.worker(engine.url)
    c.fn = fid("raw::echo")
    c.register_function(c.fn)
    c.declare("raw-callee")
    yield c
    c.close()


@pytest.fixture
def caller(engine):
    with RawClient.declared(engine.url, "raw-caller") as c:
        yield c


def serve_one(callee: RawClient, result=None, timeout: float = 5.0) -> dict:
    """Read the next call delivered to ``callee``; answer with ``result`` or its data."""
    inv = callee.recv_until(lambda f: f.get("type") == "invokefunction", timeout)
    callee.answer(inv, inv.get("data") if result is None else result)
    return inv


def roundtrip(caller: RawClient, callee: RawClient, data) -> tuple[dict, dict]:
    """Caller -> engine -> callee -> engine -> caller; returns (delivered call, result)."""
    box: dict = {}

    def serve() -> None:
        try:
            box["inv"] = serve_one(callee, timeout=8)
        except Exception as exc:  # reported by the assertion below
            box["err"] = exc

    t = threading.Thread(target=serve)
    t.start()
    res = caller.call(callee.fn, data, timeout=8)
    t.join(10)
    assert "inv" in box, box.get("err")
    return box["inv"], res


def wait_callable(caller: RawClient, callee: RawClient) -> None:
    """Until the callee's registration is live (registrations are asynchronous)."""
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        inv, res = None, None
        probe = str(uuid.uuid4())
        caller.send({"type": "invokefunction", "function_id": callee.fn, "invocation_id": probe,
                     "data": {"probe": True}})
        try:
            inv = callee.recv_until(lambda f: f.get("type") == "invokefunction", 0.5)
        except TimeoutError:
            res = caller.recv_until(lambda f: f.get("invocation_id") == probe, 2)
            assert res["error"]["code"] == "function_not_found", res
            time.sleep(0.1)
            continue
        callee.answer(inv, "probe")
        caller.recv_until(lambda f: f.get("invocation_id") == probe, 5)
        return
    raise AssertionError(f"{callee.fn} never became callable")


def test_sync_call_frames(caller, callee):
    wait_callable(caller, callee)
    inv, res = roundtrip(caller, callee, {"a": 2, "b": 3})

    assert inv["function_id"] == callee.fn
    assert inv["data"]["a"] == 2 and inv["data"]["b"] == 3
    assert inv["data"]["_caller_worker_id"] == caller.worker_id
    assert "action" not in inv and "namespace" not in inv
    assert res["invocation_id"] == inv["invocation_id"]  # the caller's id, reused end to end
    assert res["function_id"] == callee.fn
    assert res["result"]["a"] == 2


def test_unknown_function_frame(caller):
    name = fid("nope::x")
    res = caller.call(name, {"a": 1})
    assert res["error"]["code"] == "function_not_found"
    assert res["error"]["message"] == f"Function {name} not found in namespace default."
    assert res["function_id"] == name
    assert "result" not in res or res["result"] is None


def test_void_call_is_delivered_and_never_answered(caller, callee):
    wait_callable(caller, callee)
    caller.send({"type": "invokefunction", "function_id": callee.fn, "data": {"v": 1},
                 "action": {"type": "void"}})
    inv = callee.recv_until(lambda f: f.get("type") == "invokefunction", 5)
    assert inv["data"]["v"] == 1
    assert inv.get("invocation_id"), "the callee always gets an invocation id (§3.5)"
    callee.answer(inv, "dropped")
    assert [f for f in caller.frames_within(0.7) if f.get("type") == "invocationresult"] == []


def test_missing_data_is_null(caller, callee):
    wait_callable(caller, callee)
    box: dict = {}
    t = threading.Thread(target=lambda: box.setdefault("inv", serve_one(callee, result="ok")))
    t.start()
    res = caller.call(callee.fn, omit_data=True)
    t.join(5)
    assert res.get("result") == "ok", res
    assert box["inv"].get("data") is None


@pytest.mark.parametrize("bad", [
    "{not json",
    "",
    "   ",
    json.dumps({"type": "no-such-type", "x": 1}),
    json.dumps({"no_type": True}),
    json.dumps({"type": "registerfunction"}),            # missing id
    json.dumps({"type": "invokefunction", "data": 1}),   # missing function_id
    json.dumps({"type": "invocationresult"}),            # missing invocation_id
    json.dumps({"type": "registertrigger", "id": 5}),    # wrong types, missing fields
    json.dumps([1, 2, 3]),
    json.dumps("just a string"),
    b"\x00\xff\xfe garbage \x80",
    b"OTLP{\"resourceSpans\":[]}",
])
def test_malformed_frame_dropped_connection_kept(caller, callee, bad):
    wait_callable(caller, callee)
    caller.send_raw(bad)
    assert [f for f in caller.frames_within(0.3) if f.get("type") != "pong"] == []
    assert caller.is_open
    inv, res = roundtrip(caller, callee, {"after": "bad frame"})
    assert res["result"]["after"] == "bad frame"


def test_unknown_fields_ignored(caller, callee):
    wait_callable(caller, callee)
    inv_id = str(uuid.uuid4())
    t = threading.Thread(target=serve_one, args=(callee,))
    t.start()
    caller.send({"type": "invokefunction", "function_id": callee.fn, "invocation_id": inv_id,
                 "data": {"k": 1}, "message_type": "invokefunction", "caller": {"x": 1},
                 "zzz": [1, 2]})
    res = caller.recv_until(lambda f: f.get("invocation_id") == inv_id)
    t.join(5)
    assert res["result"]["k"] == 1


def test_ping_pong(caller):
    caller.send({"type": "ping"})
    assert caller.recv_until(lambda f: f.get("type") == "pong", 3) == {"type": "pong"}


def test_binary_json_frame_is_protocol(caller, callee):
    wait_callable(caller, callee)
    t = threading.Thread(target=serve_one, args=(callee,))
    t.start()
    inv_id = str(uuid.uuid4())
    caller.send_raw(json.dumps({"type": "invokefunction", "function_id": callee.fn,
                                "invocation_id": inv_id, "data": {"bin": 1}}).encode())
    res = caller.recv_until(lambda f: f.get("invocation_id") == inv_id)
    t.join(5)
    assert res["result"]["bin"] == 1


def test_otel_path_accepted(engine):
    with RawClient(engine.url, path="/otel") as otel:
        otel.send_raw(b'OTLP{"resourceSpans":[]}')
        otel.send_raw(b'MTRC{"resourceMetrics":[]}')
        otel.send_raw(b'LOGS{"resourceLogs":[]}')
        assert otel.frames_within(0.3) == []  # never registered as a worker
        assert otel.is_open


def test_query_string_on_worker_url_accepted(engine):
    with RawClient(engine.url, path="/?token=abc") as c:
        assert c.recv(5)["type"] == "workerregistered"


def test_20_mib_message_accepted(caller, callee):
    wait_callable(caller, callee)
    blob = "x" * (20 * 1024 * 1024)
    inv, res = roundtrip(caller, callee, {"blob": blob})
    assert len(inv["data"]["blob"]) == len(blob)
    assert len(res["result"]["blob"]) == len(blob)


def test_over_1_mib_to_old_python_worker_fails_the_call(engine, caller):
    """Spec §10.4: older Python SDKs close on > 1 MiB; the engine fails the call instead."""
    with RawClient.worker(engine.url) as old:
        old.fn = fid("raw::old")
        old.register_function(old.fn)
        old.declare("raw-old-python", features=None)
        wait_callable(caller, old)
        res = caller.call(old.fn, {"blob": "x" * (2 * 1024 * 1024)}, timeout=8)
        assert res["error"]["code"] == "payload_too_large", res
        assert old.is_open
        assert [f for f in old.frames_within(0.3) if f.get("type") == "invokefunction"] == []


def test_function_registered_twice_rejected_first_keeps_it(engine, caller, callee):
    wait_callable(caller, callee)
    with RawClient.worker(engine.url) as second:
        second.register_function(callee.fn)
        second.declare("raw-second")
        rej = second.recv_until(lambda f: f.get("type") == "registrationrejected", 6)
        assert rej["code"] == "FUNCTION_NAMESPACE_CONFLICT"
        assert rej["namespace"] == "default"
        assert rej["function_id"] == callee.fn
        assert rej["owner_worker_id"] == callee.worker_id
        assert second.is_open  # non-fatal
        inv, res = roundtrip(caller, callee, {"who": "first"})
        assert res["result"]["who"] == "first"


def test_reattach_retires_old_connection(engine, caller):
    old = RawClient.worker(engine.url)
    fn = fid("raw::reattach")
    old.register_function(fn)
    old.declare("raw-reattach")
    new = RawClient.worker(engine.url)
    try:
        new.send({"type": "reattach", "previous_worker_id": old.worker_id,
                  "reattach_token": old.welcome["reattach_token"]})
        new.register_function(fn)
        new.declare("raw-reattach")
        assert [f for f in new.frames_within(1.0) if f.get("type") == "registrationrejected"] == []
        new.fn = fn
        wait_callable(caller, new)
        inv, res = roundtrip(caller, new, {"r": 1})
        assert res["result"]["r"] == 1
    finally:
        old.close()
        new.close()


def test_reattach_with_wrong_token_is_ignored(engine, caller):
    old = RawClient.worker(engine.url)
    old.fn = fid("raw::keep")
    old.register_function(old.fn)
    old.declare("raw-keep")
    wait_callable(caller, old)
    with RawClient.worker(engine.url) as intruder:
        intruder.send({"type": "reattach", "previous_worker_id": old.worker_id,
                       "reattach_token": str(uuid.uuid4())})
        intruder.register_function(old.fn)
        intruder.declare("raw-intruder")
        rej = intruder.recv_until(lambda f: f.get("type") == "registrationrejected", 6)
        assert rej["owner_worker_id"] == old.worker_id
    inv, res = roundtrip(caller, old, {"still": "old"})
    assert res["result"]["still"] == "old"
    old.close()
