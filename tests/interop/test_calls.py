"""Calls between workers of the two official SDKs through the real engine (issue 2).

Covers: sync calls Node -> Python and Python -> Node (`math::add`), Void calls, an unknown
function (`function_not_found` with the spec's message, §5.2), and one function id registered
by two workers (`registrationrejected` FUNCTION_NAMESPACE_CONFLICT, first owner keeps it).
"""
from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.interop

SDK_PAIRS = [("node", "python"), ("python", "node")]


def fid(stem: str) -> str:
    """A function id unique to this test: the module's engine outlives each test's workers."""
    return f"{stem}-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("callee_sdk,caller_sdk", SDK_PAIRS)
def test_math_add_across_sdks(spawn, callee_sdk, caller_sdk):
    add = fid("math::add")
    callee = spawn(callee_sdk, [{"op": "register", "function_id": add, "kind": "add"}])
    caller = spawn(caller_sdk)

    ev = caller.call_when_found(add, {"a": 2, "b": 3})

    assert ev["ok"], ev
    assert ev["result"] == {"c": 5}
    called = callee.expect(lambda e: e.get("event") == "called", what="called")
    assert called["function_id"] == add
    assert called["data"]["a"] == 2 and called["data"]["b"] == 3
    # §5.3: the engine tells the callee who called.
    assert isinstance(called["data"].get("_caller_worker_id"), str)
    # Concurrency: several calls in flight at once, each gets its own answer.
    tags = {caller.trigger_async(add, {"a": i, "b": 1}): i for i in range(10)}
    for tag, i in tags.items():
        ev = caller.result(tag)
        assert ev["ok"] and ev["result"] == {"c": i + 1}, ev


@pytest.mark.parametrize("callee_sdk,caller_sdk", SDK_PAIRS)
def test_void_call_reaches_callee_and_returns_nothing(spawn, callee_sdk, caller_sdk):
    sink = fid("void::sink")
    probe = fid("void::probe")
    callee = spawn(callee_sdk, [{"op": "register", "function_id": sink, "kind": "const",
                                 "value": "ignored"},
                                {"op": "register", "function_id": probe, "kind": "const",
                                 "value": "up"}])
    caller = spawn(caller_sdk)
    assert caller.call_when_found(probe, {})["result"] == "up"

    ev = caller.trigger(sink, {"n": 7}, void=True)

    assert ev["ok"] and ev["result"] is None, ev
    called = callee.expect(lambda e: e.get("event") == "called" and e["function_id"] == sink,
                           what="void call delivered")
    assert called["data"]["n"] == 7


@pytest.mark.parametrize("caller_sdk", ["node", "python"])
def test_unknown_function_is_function_not_found(spawn, caller_sdk):
    caller = spawn(caller_sdk)
    missing = fid("nope::x")

    ev = caller.trigger(missing, {"a": 1}, timeout_ms=5000)

    assert not ev["ok"]
    assert ev["code"] == "function_not_found", ev
    assert f"Function {missing} not found in namespace default." in ev["message"], ev


def test_same_function_id_from_two_workers_first_keeps_it(spawn):
    dup = fid("dup::fn")
    first = spawn("node", [{"op": "register", "function_id": dup, "kind": "const",
                            "value": "first"}])
    caller = spawn("node")
    assert caller.call_when_found(dup, {})["result"] == "first"

    # The official Python SDK reports the engine's registrationrejected as a warning.
    second = spawn("python", [{"op": "register", "function_id": dup, "kind": "const",
                               "value": "second"}])
    rejected = second.expect(lambda e: e.get("event") == "rejected", what="rejection")
    assert "FUNCTION_NAMESPACE_CONFLICT" in rejected["message"], rejected
    assert dup in rejected["message"]

    for _ in range(5):
        ev = caller.trigger(dup, {})
        assert ev["ok"] and ev["result"] == "first", ev
    assert not second.seen(lambda e: e.get("event") == "called")
    # The rejected worker keeps its connection and can still call.
    assert second.trigger(dup, {})["result"] == "first"
    assert first.seen(lambda e: e.get("event") == "called")
