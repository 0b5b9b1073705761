"""Issue 11, item 1, on the core: a callee with more than its send budget waiting to be sent
to it gets no more calls. A waiting caller is answered ``callee_overloaded`` under its own
id, a void call is dropped and counted, other callees are unaffected; what the relay
delivers counts toward ``Conn.queued`` until the shell next sets it (conns.py).

Fixture: node ``gw1``, caller ``A``, callee ``B`` owning ``(default, math::add)``.
"""
from __future__ import annotations

import logging

import orjson

from brokers.kit.errors import CALLEE_OVERLOADED


def call(core, conn: str, fid: str = "math::add", inv: str | None = "i1", **fields) -> None:
    msg = {"type": "invokefunction", "function_id": fid, **fields}
    if inv is not None:
        msg["invocation_id"] = inv
    core.on_message(conn, orjson.dumps(msg))


def void(core, conn: str, fid: str = "math::add") -> None:
    call(core, conn, fid, inv=None, action={"type": "void"}, data={})


def fill(core, conn: str) -> None:
    """As the shell does after a write that left more than the budget in the transport."""
    core.conns[conn].queued = core.send_budget + 1


def test_a_sync_call_to_a_full_callee_is_refused_with_the_code(core, rec) -> None:
    fill(core, "B")
    call(core, "A", data={"a": 1})
    (event,) = rec.take()
    assert event[:2] == ("ws", "A")  # nothing written to B
    msg = orjson.loads(event[2])
    assert msg["type"] == "invocationresult" and msg["invocation_id"] == "i1"
    assert msg["function_id"] == "math::add" and msg["error"]["code"] == CALLEE_OVERLOADED
    assert "B" in msg["error"]["message"] and "budget" in msg["error"]["message"]
    assert core.conns["B"].refused == 1 and core.conns["B"].delivered == {}
    assert "i1" not in core.conns["A"].outgoing  # answered: nothing left waiting


def test_a_void_call_to_a_full_callee_is_dropped_and_counted(core, rec) -> None:
    fill(core, "B")
    for _ in range(3):
        void(core, "A")
    assert rec.take() == []
    assert core.conns["B"].dropped == 3 and core.conns["B"].refused == 0


def test_a_call_from_another_process_to_a_full_callee_is_refused_over_the_bus(core, rec) -> None:
    fill(core, "B")
    body = b'{"type":"invokefunction","invocation_id":"r1","function_id":"math::add","data":1}'
    core.on_frame("gw2", {"k": "inv", "id": "r1", "fn": "math::add", "to": "B", "rn": "gw2", "rc": "X"}, body)
    (node, header, res), = rec.bus_frames()
    assert (node, header) == ("gw2", {"k": "res", "id": "r1", "to": "X", "e": "callee_overloaded"})
    assert orjson.loads(res)["error"]["code"] == CALLEE_OVERLOADED
    assert len(rec.take()) == 1
    core.on_frame("router", {"k": "inv", "id": "t1", "fn": "math::add", "to": "B", "rn": None, "rc": None}, body)
    assert rec.take() == [] and core.conns["B"].dropped == 1  # a trigger fire (void): dropped


def test_other_callees_are_unaffected(core, rec) -> None:
    core.open("C")
    core.on_frame("router", {"k": "routes", "ops": [["+", "default", "svc::c", "gw1", "C"]]}, b"")
    fill(core, "B")
    rec.take()
    call(core, "A", fid="svc::c", data={})
    assert [m["invocation_id"] for m in rec.ws_to("C")] == ["i1"]
    assert rec.ws_to("A") == []


def test_what_the_relay_delivers_counts_until_the_shell_sets_queued(core, rec) -> None:
    core.send_budget = 1000
    body_len = None
    for n in range(10):
        call(core, "A", inv=f"i{n}", data={"pad": "x" * 300})
        if body_len is None:
            body_len = len(rec.events[0][2])
    delivered = rec.ws_to("B")
    refused = [m for m in rec.ws_to("A") if m.get("error")]
    # over the budget after the third delivery (~370 bytes each), the rest refused
    assert len(delivered) == 1000 // body_len + 1 == 3 and len(refused) == 7
    assert core.conns["B"].queued == 3 * body_len
    rec.take()
    core.conns["B"].queued = 0  # the shell: the transport drained
    call(core, "A", inv="again", data={})
    assert [m["invocation_id"] for m in rec.ws_to("B")] == ["again"]


def test_an_idle_callee_takes_one_message_over_the_budget(core, rec) -> None:
    """The budget bounds what waits, not a message's size (max_message_bytes does that)."""
    core.send_budget = 100
    call(core, "A", data={"big": "x" * 10_000})
    assert len(rec.ws_to("B")) == 1
    call(core, "A", inv="i2", data={})
    assert rec.ws_to("A")[0]["error"]["code"] == CALLEE_OVERLOADED


def test_one_log_line_per_episode(core, rec, caplog) -> None:
    fill(core, "B")
    with caplog.at_level(logging.WARNING, logger="brokers.gateway.calls"):
        for n in range(5):
            call(core, "A", inv=f"i{n}")
            void(core, "A")
        assert len(caplog.records) == 1
        assert "B" in caplog.records[0].getMessage() and CALLEE_OVERLOADED in caplog.records[0].getMessage()
        b = core.conns["B"]
        assert (b.refused, b.dropped) == (5, 5)
        b.refused = b.dropped = 0  # the shell logged the counts when it drained
        void(core, "A")
        assert len(caplog.records) == 2


def test_void_calls_leave_no_entry_on_the_callee(core, rec) -> None:
    """Nobody waits for their answers; a callee that never answers them grows nothing."""
    for _ in range(100):
        void(core, "A")
    assert len(rec.ws_to("B")) == 100 and core.conns["B"].delivered == {}
