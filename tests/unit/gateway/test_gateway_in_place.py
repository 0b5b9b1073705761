"""GatewayCore's calls served in place (``in_place``, issue 20): a call whose route names
the handler's owner is served here, answered as the owner would answer it (now or once
the handler calls ``done``), with the engine's span; when the handler declines
(``NotServedHere``), or the route names another process, the call goes on to the bus
exactly as before.

Fixture: node ``gw1``, caller ``A``; ``state::get`` and ``state::set`` routed to ``state``."""
from __future__ import annotations

import orjson
import pytest

from brokers.gateway.core import GatewayCore
from brokers.kit.errors import EngineError, NotServedHere
from brokers.kit.telemetry import Recorder as Spans
from tests.unit.gateway.test_gateway_calls import add_route, call

GET, SET = "state::get", "state::set"
TP = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"


class Owner:
    """Handlers: ``get`` answers from a dict at once, ``set`` answers when ``commit`` is
    called; both decline while ``up`` is False."""

    def __init__(self) -> None:
        self.data = {"k": {"n": 1}}
        self.up = True
        self.calls: list[tuple] = []
        self.waiting: list = []

    def get(self, data, trace, done) -> None:
        self.calls.append((GET, data, trace))
        if not self.up:
            raise NotServedHere("store not readable")
        if not isinstance(data, dict) or "key" not in data:
            raise EngineError("deserialization_error", "Failed to deserialize input for state::get: key")
        done(self.data.get(data["key"]), None)

    def set(self, data, trace, done) -> None:
        self.calls.append((SET, data, trace))
        self.waiting.append((data, done))

    def commit(self, fail: bool = False) -> None:
        for data, done in self.waiting:
            if fail:
                done(None, EngineError("SET_ERROR", "Failed to set value: no space left on device"))
            else:
                self.data[data["key"]] = data["value"]
                done({"old_value": None, "new_value": data["value"]}, None)
        self.waiting = []


@pytest.fixture
def owner(core: GatewayCore) -> Owner:
    o = Owner()
    core.in_place[GET] = ("state", o.get)
    core.in_place[SET] = ("state", o.set)
    core.telemetry = Spans()
    add_route(core, "default", GET, "state", None)
    add_route(core, "default", SET, "state", None)
    return o


def test_a_read_is_answered_here_with_its_span(core, rec, owner) -> None:
    call(core, "A", fid=GET, data={"scope": "s", "key": "k"}, traceparent=TP)
    assert rec.bus_frames() == []
    assert rec.ws_to("A") == [{"type": "invocationresult", "invocation_id": "i1", "function_id": GET,
                               "result": {"n": 1}}]
    assert core.telemetry.calls[GET][:2] == [1, 0]
    (span,) = [s for s in core.telemetry.spans if s[9] == GET]
    assert span[10:] == ["state", "A", "i1", "sync"]
    (_, _, (traceparent, _)), = owner.calls
    assert traceparent[3:35] == "a" * 32 and traceparent[36:52] != "b" * 16  # the engine span is its parent


def test_a_write_is_answered_once_committed(core, rec, owner) -> None:
    call(core, "A", fid=SET, data={"scope": "s", "key": "k2", "value": 5})
    assert rec.take() == []  # nothing yet: not committed
    assert GET not in core.telemetry.calls and SET not in core.telemetry.calls
    owner.commit()
    assert rec.ws_to("A") == [{"type": "invocationresult", "invocation_id": "i1", "function_id": SET,
                               "result": {"old_value": None, "new_value": 5}}]
    assert core.telemetry.calls[SET][:2] == [1, 0]


def test_a_failed_write_gets_its_error(core, rec, owner) -> None:
    call(core, "A", fid=SET, data={"scope": "s", "key": "k2", "value": 5})
    owner.commit(fail=True)
    (msg,) = rec.ws_to("A")
    assert msg["error"] == {"code": "SET_ERROR", "message": "Failed to set value: no space left on device"}
    assert core.telemetry.calls[SET][:2] == [1, 1]


def test_a_missing_value_has_no_result_and_bad_input_the_owners_error(core, rec, owner) -> None:
    call(core, "A", fid=GET, data={"scope": "s", "key": "absent"})
    call(core, "A", fid=GET, inv="i2", data={"scope": "s"})
    missing, bad = rec.ws_to("A")
    assert "result" not in missing and "error" not in missing
    assert bad["error"]["code"] == "deserialization_error" and bad["invocation_id"] == "i2"
    assert core.telemetry.calls[GET][:2] == [2, 1]


def test_a_declined_call_goes_to_the_owner_unchanged(core, rec, owner) -> None:
    owner.up = False
    call(core, "A", fid=GET, data={"scope": "s", "key": "k"})
    ((node, header, body),) = rec.bus_frames()
    assert node == "state" and header["fn"] == GET and header["rc"] == "A"
    assert orjson.loads(body)["data"] == {"scope": "s", "key": "k", "_caller_worker_id": "A"}
    assert rec.ws_to("A") == [] and GET not in core.telemetry.calls
    rec.take()
    answer = b'{"type":"invocationresult","invocation_id":"i1","function_id":"state::get","result":7}'
    core.on_frame("state", {"k": "res", "id": "i1", "to": "A"}, answer)
    assert rec.take() == [("ws", "A", answer)]
    assert core.telemetry.calls[GET][0] == 1  # one call, counted once: by the routed path


def test_a_route_to_another_process_is_not_served_here(core, rec, owner) -> None:
    add_route(core, "default", GET, "cluster", "hostB/state/c1")
    call(core, "A", fid=GET, data={"scope": "s", "key": "k"})
    assert owner.calls == []
    ((node, _, _),) = rec.bus_frames()
    assert node == "cluster"


def test_a_void_write_is_made_and_not_answered(core, rec, owner) -> None:
    call(core, "A", fid=SET, inv=None, data={"scope": "s", "key": "v", "value": 1})
    call(core, "A", fid=SET, inv="i3", action={"type": "void"}, data={"scope": "s", "key": "w", "value": 2})
    owner.commit()
    assert rec.take() == [] and owner.data["v"] == 1 and owner.data["w"] == 2
    assert core.telemetry.calls[SET][0] == 2


def test_an_unknown_function_is_still_not_found(core, rec, owner) -> None:
    call(core, "A", fid=GET, namespace="other", data={"scope": "s", "key": "k"})
    (msg,) = rec.ws_to("A")
    assert msg["error"]["code"] == "function_not_found" and owner.calls == []
