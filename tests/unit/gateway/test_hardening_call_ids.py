"""Issue 11, item 5: an in-flight call is known by (caller, the caller's invocation_id).

Two callers may pick the same id (ids are the callers' choice, protocol.md §3.4); each must
get its own answer, and the callee must never see two invocations in flight with one id
(its SDK keeps them by id, §3.5). The first keeps its id and its bytes; the second gets a
fresh id, and its answer is re-encoded with the caller's own id.

Fixture: node ``gw1``, callers ``A`` and ``C``, callee ``B`` owning ``(default, math::add)``.
"""
from __future__ import annotations

import orjson
import pytest

STOPPED = {"code": "invocation_stopped", "message": "Invocation stopped"}


def call(core, conn: str, inv: str, **fields) -> None:
    core.on_message(conn, orjson.dumps({"type": "invokefunction", "function_id": "math::add",
                                        "invocation_id": inv, **fields}))


def answer(core, conn: str, inv: str, result) -> bytes:
    raw = orjson.dumps({"type": "invocationresult", "invocation_id": inv, "function_id": "math::add",
                        "result": result})
    core.on_message(conn, raw)
    return raw


@pytest.fixture
def core3(core, rec):
    core.open("C", "10.0.0.3")
    rec.take()
    return core


def test_two_local_callers_with_one_id_each_get_their_own_answer(core3, rec) -> None:
    call(core3, "A", "same", data={"who": "A"})
    call(core3, "C", "same", data={"who": "C"})
    first, second = rec.ws_to("B")
    assert first["invocation_id"] == "same"  # the common case: the caller's id, as it came
    assert second["invocation_id"] != "same"  # never two invocations with one id on B
    assert (first["data"]["who"], second["data"]["who"]) == ("A", "C")
    rec.take()
    answer(core3, "B", second["invocation_id"], "for C")  # answers in any order (§5.8)
    raw_a = answer(core3, "B", "same", "for A")
    to_c, to_a = rec.take()
    assert to_a == ("ws", "A", raw_a)  # not re-encoded: the callee's bytes
    assert to_c[:2] == ("ws", "C")
    assert orjson.loads(to_c[2]) == {"type": "invocationresult", "invocation_id": "same",
                                     "function_id": "math::add", "result": "for C"}


def test_a_remote_and_a_local_caller_with_one_id(core3, rec) -> None:
    body = b'{"type":"invokefunction","invocation_id":"same","function_id":"math::add","data":{"who":"X"}}'
    core3.on_frame("gw2", {"k": "inv", "id": "same", "fn": "math::add", "to": "B", "rn": "gw2", "rc": "X"}, body)
    call(core3, "A", "same", data={"who": "A"})
    remote, local = rec.ws_to("B")
    assert remote["invocation_id"] == "same" and local["invocation_id"] != "same"
    rec.take()
    answer(core3, "B", local["invocation_id"], "for A")
    raw_x = answer(core3, "B", "same", "for X")
    to_a, to_x = rec.take()
    assert to_a[:2] == ("ws", "A") and orjson.loads(to_a[2])["invocation_id"] == "same"
    assert orjson.loads(to_a[2])["result"] == "for A"
    assert to_x == ("bus", "gw2", {"k": "res", "id": "same", "to": "X"}, raw_x)


def test_a_second_call_with_the_id_after_the_first_was_answered_keeps_it(core3, rec) -> None:
    call(core3, "A", "same")
    answer(core3, "B", "same", 1)
    rec.take()
    call(core3, "C", "same")
    assert [m["invocation_id"] for m in rec.ws_to("B")] == ["same"]


def test_callee_disconnect_stops_each_caller_under_its_own_id(core3, rec) -> None:
    call(core3, "A", "same")
    call(core3, "C", "same")
    rec.take()
    core3.closed("B")
    stopped = {e[1]: orjson.loads(e[2]) for e in rec.take() if e[0] == "ws"}
    assert stopped == {c: {"type": "invocationresult", "invocation_id": "same", "function_id": "math::add",
                           "error": STOPPED} for c in ("A", "C")}


def test_reset_of_a_callers_node_keeps_the_id_taken_on_the_callee(core3, rec) -> None:
    core3.on_frame("gw2", {"k": "inv", "id": "same", "fn": "math::add", "to": "B", "rn": "gw2", "rc": "X"}, b"{}")
    core3.on_frame("router", {"k": "reset", "node": "gw2"}, b"")
    rec.take()
    call(core3, "A", "same")  # B still works on gw2's call "same": A's gets a fresh id
    (delivered,) = rec.ws_to("B")
    assert delivered["invocation_id"] != "same"
    rec.take()
    answer(core3, "B", "same", "late for gw2")
    assert rec.take() == []  # gw2's new life waits for nothing
    answer(core3, "B", delivered["invocation_id"], "for A")
    (to_a,) = rec.take()
    assert orjson.loads(to_a[2])["invocation_id"] == "same" and orjson.loads(to_a[2])["result"] == "for A"


def test_an_answer_under_the_callers_id_does_not_reach_the_aliased_caller(core3, rec) -> None:
    call(core3, "A", "same")
    call(core3, "C", "same")
    rec.take()
    answer(core3, "B", "same", "for A")
    answer(core3, "B", "same", "again")  # a duplicate of A's: dropped, never C's answer
    (only,) = rec.take()
    assert only[1] == "A"
