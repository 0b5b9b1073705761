"""Issue 11, item 5, on the real engine with raw clients: two callers that pick the same
``invocation_id`` for calls to one callee each get their own answer, and the callee sees
two distinct ids (its SDK keeps invocations by id, protocol.md §3.5).

Unit tests of the same rule on the core: tests/unit/gateway/test_hardening_call_ids.py.
"""
from __future__ import annotations

import time
import uuid

import pytest

from tests.wsclient import RawClient, fid


def wait_callable(caller: RawClient, callee: RawClient, function_id: str) -> None:
    """Until ``function_id`` of ``callee`` is routed (registrations are asynchronous, §4.2)."""
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        probe = str(uuid.uuid4())
        caller.send({"type": "invokefunction", "function_id": function_id, "invocation_id": probe, "data": {}})
        try:
            inv = callee.next_call(function_id, timeout=0.5)
        except TimeoutError:
            res = caller.recv_until(lambda f: f.get("invocation_id") == probe, 2)
            assert res["error"]["code"] == "function_not_found", res
            time.sleep(0.05)
            continue
        callee.answer(inv, "probe")
        caller.recv_until(lambda f: f.get("invocation_id") == probe, 5)
        return
    raise AssertionError(f"{function_id} never became callable")


@pytest.fixture
def trio(engine):
    fn = fid("ids::echo")
    with RawClient.declared(engine.url, "ids-callee") as callee, \
            RawClient.declared(engine.url, "ids-a") as a, RawClient.declared(engine.url, "ids-c") as c:
        callee.register_function(fn)
        wait_callable(a, callee, fn)
        yield fn, callee, a, c


def test_two_callers_with_one_invocation_id_each_get_their_own_answer(trio) -> None:
    fn, callee, a, c = trio
    same = str(uuid.uuid4())
    for client, who in ((a, "A"), (c, "C")):
        client.send({"type": "invokefunction", "function_id": fn, "invocation_id": same, "data": {"who": who}})
    first = callee.next_call(fn)
    second = callee.next_call(fn)
    assert first["invocation_id"] != second["invocation_id"], "one id twice on the callee"
    assert {first["data"]["who"], second["data"]["who"]} == {"A", "C"}
    for inv in (second, first):  # answered in reverse order
        callee.answer(inv, f"for {inv['data']['who']}")
    for client, who in ((a, "A"), (c, "C")):
        res = client.recv_until(lambda f: f.get("type") == "invocationresult", 5)
        assert res["invocation_id"] == same  # each caller's own id, whatever the callee saw
        assert res["result"] == f"for {who}" and res.get("error") is None
    for client in (a, c):  # and nothing else (no second, misrouted answer)
        assert [f for f in client.frames_within(0.3) if f.get("type") == "invocationresult"] == []


def test_a_callee_that_goes_away_stops_both_under_their_own_id(engine, trio) -> None:
    fn, callee, a, c = trio
    same = str(uuid.uuid4())
    for client in (a, c):
        client.send({"type": "invokefunction", "function_id": fn, "invocation_id": same, "data": {}})
    callee.next_call(fn)
    callee.next_call(fn)
    callee.close()
    for client in (a, c):
        res = client.recv_until(lambda f: f.get("type") == "invocationresult", 5)
        assert res["invocation_id"] == same and res["error"]["code"] == "invocation_stopped"
