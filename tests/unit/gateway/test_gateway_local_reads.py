"""GatewayCore's reads served in place (``local_reads``, issue 20): a read whose route names
its owner is answered here, as the owner would answer it, with the engine's span; when
the reader declines (``NotServedHere``), or the route names another process, the call
goes on to the bus exactly as before.

Fixture: node ``gw1``, caller ``A``; ``state::get`` routed to the ``state`` process."""
from __future__ import annotations

import orjson
import pytest

from brokers.gateway.core import GatewayCore
from brokers.kit.errors import EngineError, NotServedHere
from brokers.kit.telemetry import Recorder as Spans
from tests.unit.gateway.test_gateway_calls import add_route, call

GET = "state::get"


class Reader:
    """A reader that answers from a dict, or declines while ``up`` is False."""

    def __init__(self) -> None:
        self.data = {"k": {"n": 1}}
        self.up = True
        self.reads = 0

    def __call__(self, data):
        self.reads += 1
        if not self.up:
            raise NotServedHere("store not readable")
        if not isinstance(data, dict) or "key" not in data:
            raise EngineError("deserialization_error", "Failed to deserialize input for state::get: key")
        return self.data.get(data["key"])


@pytest.fixture
def reader(core: GatewayCore) -> Reader:
    r = Reader()
    core.local_reads[GET] = ("state", r)
    core.telemetry = Spans()
    add_route(core, "default", GET, "state", None)
    return r


def test_a_read_is_answered_here_with_its_span(core, rec, reader) -> None:
    call(core, "A", fid=GET, data={"scope": "s", "key": "k"}, traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01")
    assert rec.bus_frames() == []
    assert rec.ws_to("A") == [{"type": "invocationresult", "invocation_id": "i1", "function_id": GET,
                               "result": {"n": 1}}]
    count, errors = core.telemetry.calls[GET][:2]
    assert (count, errors) == (1, 0)
    (span,) = [s for s in core.telemetry.spans if s[9] == GET]
    assert span[10:] == ["state", "A", "i1", "sync"]


def test_a_missing_value_has_no_result_and_bad_input_the_owners_error(core, rec, reader) -> None:
    call(core, "A", fid=GET, data={"scope": "s", "key": "absent"})
    call(core, "A", fid=GET, inv="i2", data={"scope": "s"})
    missing, bad = rec.ws_to("A")
    assert "result" not in missing and "error" not in missing
    assert bad["error"]["code"] == "deserialization_error" and bad["invocation_id"] == "i2"
    assert core.telemetry.calls[GET][:2] == [2, 1]


def test_a_declined_read_goes_to_the_owner_unchanged(core, rec, reader) -> None:
    reader.up = False
    call(core, "A", fid=GET, data={"scope": "s", "key": "k"})
    ((node, header, body),) = rec.bus_frames()
    assert node == "state" and header["fn"] == GET and header["rc"] == "A"
    assert orjson.loads(body)["data"] == {"scope": "s", "key": "k", "_caller_worker_id": "A"}
    assert rec.ws_to("A") == []
    assert GET not in core.telemetry.calls  # not counted by the declined read
    rec.take()
    answer = b'{"type":"invocationresult","invocation_id":"i1","function_id":"state::get","result":7}'
    core.on_frame("state", {"k": "res", "id": "i1", "to": "A"}, answer)
    assert rec.take() == [("ws", "A", answer)]
    assert core.telemetry.calls[GET][0] == 1  # one call, counted once: by the routed path


def test_a_route_to_another_process_is_not_read_here(core, rec, reader) -> None:
    add_route(core, "default", GET, "cluster", "hostB/state/c1")
    call(core, "A", fid=GET, data={"scope": "s", "key": "k"})
    assert reader.reads == 0
    ((node, _, _),) = rec.bus_frames()
    assert node == "cluster"


def test_a_void_read_is_counted_and_not_performed(core, rec, reader) -> None:
    call(core, "A", fid=GET, inv=None, data={"scope": "s", "key": "k"})
    call(core, "A", fid=GET, inv="i3", action={"type": "void"}, data={"scope": "s", "key": "k"})
    assert rec.take() == [] and reader.reads == 0
    assert core.telemetry.calls[GET][0] == 2


def test_an_unknown_function_is_still_not_found(core, rec, reader) -> None:
    call(core, "A", fid=GET, namespace="other", data={"scope": "s", "key": "k"})
    (msg,) = rec.ws_to("A")
    assert msg["error"]["code"] == "function_not_found" and reader.reads == 0
