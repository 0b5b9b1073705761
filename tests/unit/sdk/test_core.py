"""The sans-I/O core without sockets: frames in, frames out, time passed in."""
from __future__ import annotations

import json

import pytest

from sdk.core import MAX_QUEUE, Core
from sdk.errors import InvocationError, RegistrationRejectedError
from sdk.events import Completion, Fatal, Invoke, ProviderCall
from sdk.handlers import handler_error_body
from sdk.options import ReconnectionConfig


class Waiter:
    """Stands in for a future: records how it was settled."""

    def __init__(self) -> None:
        self.outcome: tuple[str, object] | None = None

    def done(self) -> bool:
        return self.outcome is not None

    def set_result(self, v: object) -> None:
        self.outcome = ("ok", v)

    def set_exception(self, e: BaseException) -> None:
        self.outcome = ("err", e)


META = {"runtime": "python", "name": "w"}


def frames(core: Core) -> list[dict]:
    return [json.loads(t) for t in core.take_outbox()]


def answer_register(core: Core) -> None:
    core.receive(json.dumps({"type": "invocationresult", "invocation_id": core.register_id,
                             "function_id": "engine::workers::register", "result": {"success": True}}))


def connected_core(**kw) -> Core:
    core = Core(metadata=META, **kw)
    core.connection_made()
    answer_register(core)
    core.take_outbox()
    return core


def test_first_connect_order_and_no_reattach():
    core = Core(metadata=META)
    core.register_trigger_type({"id": "webhook", "description": "d", "type": "registertriggertype"}, object())
    core.register_function("math::add", object(), {"id": "math::add", "type": "registerfunction"})
    core.register_trigger({"id": "t1", "trigger_type": "http", "function_id": "math::add", "type": "registertrigger"})
    core.call("math::add", {"a": 1}, waiter=Waiter(), now=0.0)
    assert core.take_outbox() == []  # nothing leaves while disconnected
    core.connection_made()
    out = frames(core)
    assert [f["type"] for f in out] == ["registertriggertype", "registerfunction", "registertrigger",
                                         "invokefunction"]
    assert out[3] == {"function_id": "engine::workers::register", "data": META,
                      "invocation_id": core.register_id, "type": "invokefunction"}
    # calls are held until the engine answered the metadata call; results are not
    core.call("later", {}, waiter=Waiter(), now=0.0)
    core.result("i9", "math::add", result=1)
    assert [f["type"] for f in frames(core)] == ["invocationresult"]
    answer_register(core)
    assert not core.holding and core.register_id is None
    assert [(f["function_id"], f.get("data")) for f in frames(core)] == [("math::add", {"a": 1}), ("later", {})]
    core.call("now", {}, waiter=Waiter(), now=0.0)
    assert [f["function_id"] for f in frames(core)] == ["now"]


def test_hold_is_released_by_an_error_answer_or_the_shell():
    core = Core(metadata=META)
    core.call("f", {}, waiter=Waiter(), now=0.0)
    core.connection_made()
    core.take_outbox()
    core.receive(json.dumps({"type": "invocationresult", "invocation_id": core.register_id,
                             "function_id": "engine::workers::register",
                             "error": {"code": "function_not_found", "message": "no"}}))
    assert [f["function_id"] for f in frames(core)] == ["f"]
    core.connection_lost()
    core.call("g", {}, waiter=Waiter(), now=0.0)
    core.connection_made()
    core.take_outbox()
    core.release()  # the shell's fallback timer
    assert [f["function_id"] for f in frames(core)] == ["g"]


def test_reconnect_sends_reattach_first_then_replays():
    core = connected_core()
    core.register_function("f::a", object(), {"id": "f::a", "type": "registerfunction"})
    assert frames(core) == [{"id": "f::a", "type": "registerfunction"}]
    core.receive(json.dumps({"type": "workerregistered", "worker_id": "w-1", "reattach_token": "tok"}))
    core.connection_lost()
    core.register_function("f::b", object(), {"id": "f::b", "type": "registerfunction"})
    core.connection_made()
    out = frames(core)
    assert out[0] == {"type": "reattach", "previous_worker_id": "w-1", "reattach_token": "tok"}
    assert [f.get("id") for f in out[1:3]] == ["f::a", "f::b"]
    assert out[3]["function_id"] == "engine::workers::register" and len(out) == 4
    assert "action" not in out[3] and out[3]["invocation_id"] == core.register_id


def test_offline_queue_is_bounded_oldest_dropped():
    core = Core(metadata=META)
    for i in range(MAX_QUEUE + 5):
        core.call("f", {"i": i}, waiter=Waiter(), now=0.0)
    assert len(core.queue) == MAX_QUEUE and core.dropped == 5
    core.connection_made()
    answer_register(core)
    calls = [f for f in frames(core) if f["function_id"] == "f"]
    assert len(calls) == MAX_QUEUE and calls[0]["data"] == {"i": 5} and calls[-1]["data"] == {"i": MAX_QUEUE + 4}


def test_registrations_and_unregistrations_are_not_queued_offline():
    core = Core(metadata=META)
    h = object()
    core.register_function("f::a", h, {"id": "f::a", "type": "registerfunction"})
    core.unregister_function("f::a", h)
    assert list(core.queue) == [] and core.functions == {}
    core.connection_made()
    assert [f["function_id"] for f in frames(core)] == ["engine::workers::register"]


def test_requeue_keeps_only_calls():
    core = Core(metadata=META)
    core.requeue(['{"id":"x","type":"registerfunction"}',
                  '{"function_id":"f","invocation_id":"1","type":"invokefunction"}',
                  '{"function_id":"engine::workers::register","type":"invokefunction"}'])
    assert list(core.queue) == ['{"function_id":"f","invocation_id":"1","type":"invokefunction"}']


def test_call_shapes_sync_void_enqueue_and_none_payload():
    core = connected_core()
    iid = core.call("math::add", {"a": 2}, waiter=Waiter(), now=0.0, metadata={"m": 1})
    assert core.call("math::add", {"a": 1}, waiter=Waiter(), now=0.0, action={"type": "void"}) is None
    core.call("x::y", {"k": 1}, waiter=Waiter(), now=0.0, action={"type": "enqueue", "queue": "jobs"},
              namespace="orders")
    core.call("math::boom", None, waiter=Waiter(), now=0.0)
    sync, void, enq, none = frames(core)
    assert sync == {"function_id": "math::add", "data": {"a": 2}, "metadata": {"m": 1},
                    "invocation_id": iid, "type": "invokefunction"}
    assert void == {"function_id": "math::add", "data": {"a": 1}, "action": {"type": "void"}, "type": "invokefunction"}
    assert enq["action"] == {"type": "enqueue", "queue": "jobs"} and enq["namespace"] == "orders"
    assert "invocation_id" in enq
    assert "data" not in none
    assert len(core.pending) == 3  # void has no pending entry


def test_namespaces_worker_engine_and_blank():
    core = connected_core(namespace="orders")
    core.call("a::b", 1, waiter=Waiter(), now=0.0)
    core.call("engine::functions::list", {}, waiter=Waiter(), now=0.0)
    core.call("configuration::get", {}, waiter=Waiter(), now=0.0)
    core.call("a::b", 1, waiter=Waiter(), now=0.0, namespace="other")
    assert [f["namespace"] for f in frames(core)] == ["orders", "default", "default", "other"]
    with pytest.raises(ValueError):
        core.call("a::b", 1, waiter=Waiter(), now=0.0, namespace="  ")


def test_timeout_then_late_result_dropped():
    core = connected_core(invocation_timeout_ms=30_000)
    w = Waiter()
    iid = core.call("slow", {}, waiter=w, now=10.0, timeout_ms=100)
    assert core.next_deadline() == pytest.approx(10.1)
    assert core.expire(10.05) == []
    [c] = core.expire(10.1)
    assert isinstance(c.error, InvocationError) and c.error.code == "TIMEOUT"
    assert c.error.message == "invocation timed out after 100ms" and c.waiter is w
    late = json.dumps({"type": "invocationresult", "invocation_id": iid, "function_id": "slow", "result": 1})
    assert core.receive(late) == [] and core.next_deadline() is None


def test_default_timeout_is_the_option():
    core = connected_core(invocation_timeout_ms=2500)
    core.call("f", {}, waiter=Waiter(), now=0.0)
    assert core.next_deadline() == pytest.approx(2.5)


def test_result_shapes():
    core = connected_core()
    ids = [core.call("f", {}, waiter=Waiter(), now=0.0) for _ in range(4)]
    ok, err, bad, missing = (core.receive(json.dumps(m)) for m in [
        {"type": "invocationresult", "invocation_id": ids[0], "function_id": "f", "result": {"c": 5}},
        {"type": "invocationresult", "invocation_id": ids[1], "function_id": "f",
         "error": {"code": "invocation_failed", "message": "boom", "stacktrace": "Traceback..."}},
        {"type": "invocationresult", "invocation_id": ids[2], "function_id": "f", "error": "weird"},
        {"type": "invocationresult", "invocation_id": ids[3], "function_id": "f"},
    ])
    assert ok[0].result == {"c": 5} and ok[0].error is None
    e = err[0].error
    assert (e.code, e.message, e.stacktrace, e.invocation_id) == ("invocation_failed", "boom", "Traceback...", ids[1])
    assert "Traceback" not in str(e)
    assert bad[0].error.code == "UNKNOWN"
    assert missing[0].result is None and missing[0].error is None
    assert core.pending == {}


def test_incoming_invocation_dispatch_and_local_errors():
    core = connected_core()
    handler = object()
    core.register_function("math::add", handler, {"id": "math::add", "type": "registerfunction"})
    core.register_function("ext::x", None, {"id": "ext::x", "invocation": {"url": "u", "method": "POST"},
                                             "type": "registerfunction"})
    core.take_outbox()
    [ev] = core.receive(json.dumps({"type": "invokefunction", "invocation_id": "i1", "function_id": "math::add",
                                    "data": {"a": 2, "_caller_worker_id": "c"}, "metadata": {"m": 1},
                                    "traceparent": "00-x"}))
    assert isinstance(ev, Invoke) and ev.handler is handler and ev.invocation_id == "i1"
    assert ev.data == {"a": 2, "_caller_worker_id": "c"} and ev.metadata == {"m": 1} and ev.traceparent == "00-x"
    assert core.receive(json.dumps({"type": "invokefunction", "invocation_id": "i2", "function_id": "nope"})) == []
    assert core.receive(json.dumps({"type": "invokefunction", "invocation_id": "i3", "function_id": "ext::x"})) == []
    assert core.receive(json.dumps({"type": "invokefunction", "function_id": "nope"})) == []  # void: silent
    nf, ni = frames(core)
    assert nf == {"invocation_id": "i2", "function_id": "nope", "type": "invocationresult",
                  "error": {"code": "function_not_found", "message": "Function 'nope' not found"}}
    assert ni["error"]["code"] == "function_not_invokable"


def test_answers_null_result_error_and_unencodable():
    core = connected_core()
    core.result("i1", "f", result=None)
    core.result("i2", "f", error=handler_error_body(ValueError("bad")))
    core.result("i3", "f", result=object())
    a, b, c = frames(core)
    assert a == {"invocation_id": "i1", "function_id": "f", "result": None, "type": "invocationresult"}
    assert b["error"]["code"] == "invocation_failed" and b["error"]["message"] == "bad"
    assert "ValueError: bad" in b["error"]["stacktrace"]
    assert c["error"]["code"] == "serialization_error" and "result" not in c


def test_results_are_queued_while_offline():
    core = Core(metadata=META)
    core.result("i1", "f", result=1)
    assert len(core.queue) == 1


def test_garbage_and_unknown_frames_are_ignored():
    core = connected_core()
    assert core.receive("{not json") == []
    assert core.receive("[1,2]") == []
    assert core.receive('{"type":"functionregistered","id":"x"}') == []
    assert core.receive('{"type":"pong"}') == []


def test_backoff_numbers():
    from sdk.options import backoff_delay_ms

    cfg = ReconnectionConfig()
    assert [backoff_delay_ms(cfg, a, 0.5) for a in range(7)] == [1000, 2000, 4000, 8000, 16000, 30000, 30000]
    assert backoff_delay_ms(cfg, 0, 0.0) == pytest.approx(700)
    assert backoff_delay_ms(cfg, 0, 0.999999) == pytest.approx(1300, abs=0.01)
    assert backoff_delay_ms(cfg, 10, 0.0) == pytest.approx(21000)


def test_reconnect_attempts_reset_on_connect_and_max_retries():
    core = Core(metadata=META, reconnect=ReconnectionConfig(max_retries=2))
    assert core.next_reconnect_delay(0.5) == pytest.approx(1.0)
    assert core.next_reconnect_delay(0.5) == pytest.approx(2.0)
    core.connection_made()
    core.connection_lost()
    assert core.next_reconnect_delay(0.5) == pytest.approx(1.0)
    assert core.next_reconnect_delay(0.5) == pytest.approx(2.0)
    assert core.next_reconnect_delay(0.5) is None and core.state == "failed"


def test_worker_name_conflict_is_fatal_function_conflict_is_not():
    core = connected_core()
    w = Waiter()
    core.call("f", {}, waiter=w, now=0.0)
    assert core.receive(json.dumps({"type": "registrationrejected", "code": "FUNCTION_NAMESPACE_CONFLICT",
                                    "namespace": "default", "function_id": "f", "owner_worker_id": "o"})) == []
    evs = core.receive(json.dumps({"type": "registrationrejected", "code": "WORKER_NAMESPACE_CONFLICT",
                                   "namespace": "default", "worker_name": "w", "owner_worker_id": "o"}))
    assert isinstance(evs[0], Completion) and isinstance(evs[0].error, RegistrationRejectedError)
    assert isinstance(evs[-1], Fatal) and core.state == "failed" and core.next_reconnect_delay(0.5) is None
    with pytest.raises(RegistrationRejectedError):
        core.call("f", {}, waiter=Waiter(), now=0.0)


def test_shutdown_fails_pending_with_shutdown():
    core = connected_core()
    core.call("f", {}, waiter=Waiter(), now=0.0)
    [c] = core.shutdown()
    assert c.error.code == "SHUTDOWN"
    with pytest.raises(InvocationError) as info:
        core.call("f", {}, waiter=Waiter(), now=0.0)
    assert info.value.code == "SHUTDOWN"


def test_reserved_and_duplicate_ids_refused():
    core = Core(metadata=META)
    with pytest.raises(ValueError):
        core.register_function("iii::x", object(), {"id": "iii::x", "type": "registerfunction"})
    with pytest.raises(ValueError):
        core.register_function("  ", object(), {"id": "  ", "type": "registerfunction"})
    core.register_function("a", object(), {"id": "a", "type": "registerfunction"})
    with pytest.raises(ValueError):
        core.register_function("a", object(), {"id": "a", "type": "registerfunction"})


def test_trigger_type_provider_calls_and_result_frames():
    core = connected_core()
    handler = object()
    core.register_trigger_type({"id": "webhook", "description": "d", "type": "registertriggertype"}, handler)
    core.take_outbox()
    [ev] = core.receive(json.dumps({"type": "registertrigger", "id": "b1", "trigger_type": "webhook",
                                    "function_id": "math::add", "config": {"url": "/hook"}}))
    assert isinstance(ev, ProviderCall) and ev.kind == "register" and ev.handler is handler
    assert (ev.trigger.id, ev.trigger.function_id, ev.trigger.config) == ("b1", "math::add", {"url": "/hook"})
    assert core.receive(json.dumps({"type": "registertrigger", "id": "b2", "trigger_type": "other",
                                    "function_id": "f"})) == []
    [un] = core.receive(json.dumps({"type": "unregistertrigger", "id": "b1", "trigger_type": "webhook"}))
    assert un.kind == "unregister" and un.trigger.function_id == ""
    core.trigger_registration_result(ev.trigger, None)
    core.trigger_registration_result(ev.trigger, {"code": "trigger_registration_failed", "message": "bad url"})
    ok, bad = frames(core)
    assert ok == {"type": "triggerregistrationresult", "id": "b1", "trigger_type": "webhook",
                  "function_id": "math::add"}
    assert bad["error"] == {"code": "trigger_registration_failed", "message": "bad url"}


def test_trigger_unregister_and_trigger_type_unregister_frames():
    core = connected_core()
    core.register_trigger({"id": "t1", "trigger_type": "http", "function_id": "f", "type": "registertrigger"})
    core.unregister_trigger("t1")
    core.unregister_trigger_type("webhook")
    assert frames(core)[1:] == [{"id": "t1", "type": "unregistertrigger", "trigger_type": "http"},
                                {"id": "webhook", "type": "unregistertriggertype"}]
    core.connection_lost()
    core.connection_made()
    assert [f["type"] for f in frames(core)] == ["invokefunction"]  # the unregistered trigger is not replayed
