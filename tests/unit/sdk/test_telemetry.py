"""Telemetry of our SDK (protocol.md §9): trace context, the OTLP JSON it writes, the /otel
socket against the fake engine (spans, logs, metrics, OTEL_ENABLED=false)."""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, Iterator

import pytest

from iii import InitOptions, Logger, ReconnectionConfig, register_worker
from sdk import otlp
from sdk.options import resolve_telemetry
from sdk.telemetry import FrameBuffer, otel_url
from sdk.tracecontext import (
    Span, child_span, current_span, format_traceparent, outgoing, parse_traceparent, run_in,
)
from sdk.workermetrics import WorkerMetrics
from sdk.worker import III
from tests.unit.sdk.fake_engine import FakeEngine

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TP = f"00-{TRACE}-{PARENT}-01"


# -- pure parts ------------------------------------------------------------------------------
def test_traceparent_parse_and_format():
    assert parse_traceparent(TP) == (TRACE, PARENT, 1)
    assert parse_traceparent(TP.upper()) == (TRACE, PARENT, 1)
    assert format_traceparent(TRACE, PARENT, 1) == TP
    assert format_traceparent(TRACE, PARENT, 0).endswith("-00")
    for bad in (None, 5, "", "00-abc-def-01", f"00-{'0' * 32}-{PARENT}-01", f"00-{TRACE}-{'0' * 16}-01",
                f"ff-{TRACE}-{PARENT}-01", f"00-{TRACE}-{PARENT}-01-extra", f"00-{TRACE}-{PARENT}-zz",
                f"00-{TRACE[:-1]}g-{PARENT}-01"):
        assert parse_traceparent(bad) is None, bad
    assert parse_traceparent(f"01-{TRACE}-{PARENT}-01-future") == (TRACE, PARENT, 1)  # later versions


def test_child_span_of_a_traceparent_and_root_without_one():
    span = child_span("execute a::b", TP, "k=v", 100, {"iii.function.id": "a::b"})
    assert (span.trace_id, span.parent_span_id, span.flags, span.baggage) == (TRACE, PARENT, 1, "k=v")
    assert len(span.span_id) == 16 and span.span_id != PARENT
    assert span.traceparent == f"00-{TRACE}-{span.span_id}-01"
    root = child_span("execute a::b", "garbage", None, 100)
    assert root.parent_span_id is None and len(root.trace_id) == 32 and root.trace_id != TRACE
    assert child_span("x", TP, None, 0).span_id != child_span("x", TP, None, 0).span_id
    span.end(250, RuntimeError("boom"))
    assert (span.end_ns, span.status, span.status_message) == (250, 2, "boom")
    ok = child_span("x", TP, None, 10)
    ok.end(5)
    assert ok.status == 1 and ok.end_ns == 10  # never before its start


def test_current_span_is_set_only_inside_run_in():
    span = child_span("execute a::b", TP, "k=v", 1)
    assert current_span() is None and outgoing() == (None, None)
    assert run_in(span, lambda: (current_span(), outgoing())) == (span, (span.traceparent, "k=v"))
    assert current_span() is None


def test_any_values_and_attributes():
    assert otlp.attributes({"s": "x", "b": True, "i": 3, "f": 1.5, "n": None, "l": [1, "a"], "d": {"k": 2},
                            "big": 1 << 70, "nan": float("nan"), "o": object}) == [
        {"key": "s", "value": {"stringValue": "x"}},
        {"key": "b", "value": {"boolValue": True}},
        {"key": "i", "value": {"intValue": "3"}},
        {"key": "f", "value": {"doubleValue": 1.5}},
        {"key": "n", "value": {}},
        {"key": "l", "value": {"arrayValue": {"values": [{"intValue": "1"}, {"stringValue": "a"}]}}},
        {"key": "d", "value": {"kvlistValue": {"values": [{"key": "k", "value": {"intValue": "2"}}]}}},
        {"key": "big", "value": {"stringValue": str(1 << 70)}},
        {"key": "nan", "value": {"stringValue": "nan"}},
        {"key": "o", "value": {"stringValue": str(object)}},
    ]


def test_span_request_shape():
    span = child_span("execute a::b", TP, None, 1000, {"iii.function.id": "a::b"})
    span.end(3000, ValueError("bad"))
    data = otlp.frame(otlp.PREFIX_SPANS, otlp.spans_request([span], otlp.resource("svc", {"service.version": "1"})))
    assert data[:4] == b"OTLP"
    doc = json.loads(data[4:])
    [rs] = doc["resourceSpans"]
    assert rs["resource"]["attributes"][0] == {"key": "service.name", "value": {"stringValue": "svc"}}
    [ss] = rs["scopeSpans"]
    assert ss["scope"] == {"name": "iii-py"}
    assert ss["spans"] == [{
        "traceId": TRACE, "spanId": span.span_id, "parentSpanId": PARENT, "name": "execute a::b", "kind": 1,
        "startTimeUnixNano": "1000", "endTimeUnixNano": "3000", "flags": 1,
        "attributes": [{"key": "iii.function.id", "value": {"stringValue": "a::b"}},
                       {"key": "exception.type", "value": {"stringValue": "ValueError"}}],
        "status": {"code": 2, "message": "bad"}}]


@pytest.mark.parametrize("level, number, text", [("debug", 5, "DEBUG"), ("info", 9, "INFO"),
                                                 ("warn", 13, "WARN"), ("error", 17, "ERROR")])
def test_log_record_shape(level: str, number: int, text: str):
    span = Span(TRACE, PARENT, None, "x", start_ns=0)
    rec = otlp.log_record(level, "hello", {"id": "a", "result": 5}, span, 42)
    assert rec == {"timeUnixNano": "42", "observedTimeUnixNano": "42", "severityNumber": number,
                   "severityText": text, "body": {"stringValue": "hello"},
                   "attributes": [{"key": "id", "value": {"stringValue": "a"}},
                                  {"key": "result", "value": {"intValue": "5"}}],
                   "traceId": TRACE, "spanId": PARENT, "flags": 1}
    bare = otlp.log_record(level, "m", [1], None, 1)
    assert "traceId" not in bare and bare["attributes"][0]["key"] == "log.data"
    res = otlp.resource("svc")
    doc = otlp.logs_request([(res, rec), (res, bare)])
    [rl] = doc["resourceLogs"]
    assert rl["resource"] == res and rl["scopeLogs"][0]["logRecords"] == [rec, bare]


def test_worker_metrics_gauges():
    m = WorkerMetrics(start=100.0, cpu_s=1.0)
    m.lag(3.0)
    m.lag(7.5)
    gauges = m.sample(110.0, 3.0, 5, {"iii.worker.id": "w"}, rss=1234)
    values = {g["name"]: g["gauge"]["dataPoints"][0]["asDouble"] for g in gauges}
    assert values == {"iii.worker.memory.rss.bytes": 1234.0, "iii.worker.cpu.percent": 20.0,
                      "iii.worker.event_loop.lag.ms": 7.5, "iii.worker.uptime.seconds": 10.0}
    point = gauges[0]["gauge"]["dataPoints"][0]
    assert point["timeUnixNano"] == "5" and point["attributes"] == [{"key": "iii.worker.id",
                                                                     "value": {"stringValue": "w"}}]
    assert m.sample(120.0, 3.0, 6)[2]["gauge"]["dataPoints"][0]["asDouble"] == 0.0  # lag reset
    doc = json.loads(otlp.frame(otlp.PREFIX_METRICS, otlp.metrics_request(gauges, otlp.resource("s")))[4:])
    assert [m["name"] for m in doc["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]] == list(values)


def test_frame_buffer_keeps_the_newest_1000():
    buf = FrameBuffer()
    for i in range(1005):
        buf.push(str(i).encode())
    assert len(buf) == 1000 and buf.dropped == 5 and buf.frames[0] == b"5" and buf.frames[-1] == b"1004"


def test_otel_url_and_config(monkeypatch: pytest.MonkeyPatch):
    assert otel_url("ws://h:1") == "ws://h:1/otel"
    assert otel_url("wss://h:1/base/?t=1") == "wss://h:1/base/otel?t=1"
    for off in ("false", "0", "no", "OFF"):
        monkeypatch.setenv("OTEL_ENABLED", off)
        assert resolve_telemetry(InitOptions(), "w") is None
    assert resolve_telemetry(InitOptions(otel={"enabled": True}), "w") is not None  # the option wins
    monkeypatch.delenv("OTEL_ENABLED")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "250")
    cfg = resolve_telemetry(InitOptions(), "worker-a")
    assert cfg is not None and cfg.service_name == "worker-a" and cfg.metrics_interval_s == 0.25
    assert cfg.flush_interval_s == 0.1
    assert resolve_telemetry(InitOptions(otel={"enabled": False}), "w") is None
    cfg = resolve_telemetry(InitOptions(otel={"service_name": "svc", "spans_flush_interval_ms": 20}), "w")
    assert cfg is not None and cfg.service_name == "svc" and cfg.flush_interval_s == 0.02


# -- over the socket -------------------------------------------------------------------------
@pytest.fixture
def eng() -> Iterator[FakeEngine]:
    e = FakeEngine()
    yield e
    e.stop()


def worker(url: str, **otel: Any) -> III:
    otel.setdefault("spans_flush_interval_ms", 10)
    return register_worker(url, InitOptions(daemon=True, otel=otel, reconnection_config=ReconnectionConfig(
        initial_delay_ms=50, max_delay_ms=200)))


def wait_for(pred: Any, timeout: float = 5.0) -> Any:
    end = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def docs(eng: FakeEngine, prefix: bytes) -> list[dict[str, Any]]:
    return [json.loads(f[4:]) for f in list(eng.otel_frames) if f[:4] == prefix]


def spans(eng: FakeEngine) -> list[dict[str, Any]]:
    return [s for d in docs(eng, b"OTLP") for rs in d["resourceSpans"] for ss in rs["scopeSpans"]
            for s in ss["spans"]]


def logs(eng: FakeEngine) -> list[dict[str, Any]]:
    return [r for d in docs(eng, b"LOGS") for rl in d["resourceLogs"] for sl in rl["scopeLogs"]
            for r in sl["logRecords"]]


def call_with_trace(eng: FakeEngine, fid: str, data: Any, traceparent: str | None = TP,
                    baggage: str | None = "iii.function.id=" + "x") -> str:
    """The engine delivering a call carrying a trace context (as it forwards a caller's)."""
    iid = str(uuid.uuid4())
    msg: dict[str, Any] = {"type": "invokefunction", "invocation_id": iid, "function_id": fid, "data": data}
    if traceparent:
        msg["traceparent"] = traceparent
    if baggage:
        msg["baggage"] = baggage
    wait_for(lambda: eng.conns)  # the handshake can complete before the engine's handler ran
    wait_for(lambda: fid in eng.owners)  # and the worker's registerfunction before this call
    eng.send_to(0, msg)
    return iid


def results(eng: FakeEngine, iid: str) -> list[dict[str, Any]]:
    return [f for f in eng.frames[0] if f.get("type") == "invocationresult" and f.get("invocation_id") == iid]


def test_handler_calls_carry_its_span_and_the_span_is_reported(eng: FakeEngine):
    iii = worker(eng.url)

    def add(data):
        logger = Logger()
        result = data["a"] + data["b"]
        iii.trigger({"function_id": "state::set", "payload": {"scope": "math", "key": "k", "value": result}})
        logger.info("Math add completed", {"id": "k", "result": result})
        return {"id": "k", "result": result}

    iii.register_function("math::add", add)
    try:
        # outside any handler: no traceparent (as the official SDKs)
        assert iii.trigger({"function_id": "state::set", "payload": {"scope": "s", "key": "top", "value": 1}})
        iid = call_with_trace(eng, "math::add", {"a": 2, "b": 3}, baggage="iii.function.id=math::add,k=v")
        wait_for(lambda: results(eng, iid))
        assert results(eng, iid)[0]["result"] == {"id": "k", "result": 5}
        sets = [f for f in eng.frames[0] if f.get("function_id") == "state::set"]
        assert "traceparent" not in sets[0] and "baggage" not in sets[0]
        trace_id, span_id, flags = parse_traceparent(sets[1]["traceparent"])
        assert (trace_id, flags) == (TRACE, 1) and span_id != PARENT
        assert sets[1]["baggage"] == "iii.function.id=math::add,k=v"
        [span] = wait_for(lambda: spans(eng))
        assert (span["traceId"], span["spanId"], span["parentSpanId"]) == (TRACE, span_id, PARENT)
        assert span["name"] == "execute math::add" and span["kind"] == 1 and span["status"]["code"] == 1
        assert int(span["endTimeUnixNano"]) >= int(span["startTimeUnixNano"]) > 0
        assert {"key": "iii.function.id", "value": {"stringValue": "math::add"}} in span["attributes"]
        [rec] = wait_for(lambda: logs(eng))
        assert (rec["traceId"], rec["spanId"]) == (TRACE, span_id)
        assert rec["severityNumber"] == 9 and rec["severityText"] == "INFO"
        assert rec["body"] == {"stringValue": "Math add completed"}
        assert rec["attributes"] == [{"key": "id", "value": {"stringValue": "k"}},
                                     {"key": "result", "value": {"intValue": "5"}}]
        [doc] = docs(eng, b"LOGS")
        res = doc["resourceLogs"][0]["resource"]["attributes"]
        assert res[0] == {"key": "service.name", "value": {"stringValue": iii.core.metadata["name"]}}
        assert not any(f.get("function_id", "").startswith("engine::log::") for f in eng.frames[0])
        assert len(eng.frames) == 1 and eng.otel_connections == 1  # /otel is no worker
    finally:
        iii.shutdown()


def test_async_handler_error_span_and_a_new_trace_without_traceparent(eng: FakeEngine):
    iii = worker(eng.url)

    async def outer(data):
        await iii.trigger_async({"function_id": "state::set", "payload": {"scope": "s", "key": "a", "value": 1}})
        Logger("billing").error("card declined", {"code": 402})
        raise RuntimeError("declined")

    iii.register_function("pay::charge", outer)
    try:
        assert iii.wait_connected(5)
        iid = call_with_trace(eng, "pay::charge", {}, traceparent=None, baggage=None)
        wait_for(lambda: results(eng, iid))
        assert results(eng, iid)[0]["error"]["message"] == "declined"
        [sent] = [f for f in eng.frames[0] if f.get("function_id") == "state::set"]
        trace_id, span_id, _ = parse_traceparent(sent["traceparent"])
        assert "baggage" not in sent
        [span] = wait_for(lambda: spans(eng))
        assert (span["traceId"], span["spanId"]) == (trace_id, span_id) and "parentSpanId" not in span
        assert span["status"] == {"code": 2, "message": "declined"}
        [rec] = wait_for(lambda: logs(eng))
        assert (rec["traceId"], rec["spanId"], rec["severityNumber"]) == (trace_id, span_id, 17)
        [doc] = docs(eng, b"LOGS")
        assert doc["resourceLogs"][0]["resource"]["attributes"][0]["value"] == {"stringValue": "billing"}
    finally:
        iii.shutdown()


def test_metrics_frames(eng: FakeEngine):
    iii = worker(eng.url, metrics_export_interval_ms=100)
    try:
        [doc, *_] = wait_for(lambda: docs(eng, b"MTRC"))
        [rm] = doc["resourceMetrics"]
        names = {m["name"]: m for m in rm["scopeMetrics"][0]["metrics"]}
        assert set(names) == {"iii.worker.memory.rss.bytes", "iii.worker.cpu.percent",
                              "iii.worker.event_loop.lag.ms", "iii.worker.uptime.seconds"}
        assert names["iii.worker.memory.rss.bytes"]["gauge"]["dataPoints"][0]["asDouble"] > 0
        assert rm["resource"]["attributes"][0]["key"] == "service.name"
    finally:
        iii.shutdown()


def test_shutdown_flushes_what_is_batched(eng: FakeEngine):
    iii = worker(eng.url, logs_flush_interval_ms=60_000, spans_flush_interval_ms=60_000)
    assert iii.wait_connected(5)
    wait_for(lambda: eng.otel_connections == 1)
    time.sleep(0.2)  # the /otel handshake done
    Logger(worker=iii).warn("last words")
    iii.shutdown()
    [rec] = wait_for(lambda: logs(eng))
    assert rec["body"] == {"stringValue": "last words"} and rec["severityNumber"] == 13 and "traceId" not in rec


def test_frames_wait_while_otel_is_down_and_logs_never_block():
    e = FakeEngine()
    e.accepting = False  # /otel (and the worker socket) refused: frames are buffered
    iii = worker(e.url)
    try:
        t0 = time.monotonic()
        for i in range(50):
            Logger(worker=iii).info(f"line {i}")
        assert time.monotonic() - t0 < 1.0
        wait_for(lambda: len(iii.shell.telemetry.buffer) >= 1)
        assert e.otel_frames == []
        e.accepting = True
        wait_for(lambda: len(logs(e)) == 50, timeout=10)  # the telemetry socket retried (1 s backoff)
    finally:
        iii.shutdown()
        e.stop()


def test_OTEL_ENABLED_false_opens_no_otel_socket_and_passes_the_context_through(
        eng: FakeEngine, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OTEL_ENABLED", "false")
    iii = register_worker(eng.url, InitOptions(daemon=True))

    def add(data):
        Logger().info("local only")
        return iii.trigger({"function_id": "state::set", "payload": {"scope": "m", "key": "k", "value": 1}})

    iii.register_function("math::add", add)
    try:
        assert iii.shell.telemetry is None and iii.wait_connected(5)
        iid = call_with_trace(eng, "math::add", {}, baggage="k=v")
        wait_for(lambda: results(eng, iid))
        [sent] = [f for f in eng.frames[0] if f.get("function_id") == "state::set"]
        assert sent["traceparent"] == TP and sent["baggage"] == "k=v"  # unchanged: no span of ours
        time.sleep(0.2)
        assert eng.otel_connections == 0 and eng.otel_frames == []
    finally:
        iii.shutdown()


def test_a_running_loop_worker_reports_too(eng: FakeEngine):
    async def main() -> None:
        iii = register_worker(eng.url, InitOptions(run_on_running_loop=True, otel={"spans_flush_interval_ms": 10}))

        async def echo(data):
            return await iii.trigger_async({"function_id": "state::get", "payload": {"scope": "x", "key": "y"}})

        iii.register_function("e::echo", echo)
        assert await iii.wait_connected_async(5)
        call_with_trace(eng, "e::echo", {})
        for _ in range(300):
            if spans(eng):
                break
            await asyncio.sleep(0.01)
        await iii.shutdown_async()

    asyncio.run(main())
    [span] = spans(eng)
    assert span["traceId"] == TRACE and span["name"] == "execute e::echo"


def test_two_workers_in_one_process_log_through_the_handlers_own_worker(eng: FakeEngine):
    a = register_worker(eng.url, InitOptions(daemon=True, worker_name="a", otel={"spans_flush_interval_ms": 10}))
    b = register_worker(eng.url, InitOptions(daemon=True, worker_name="b", otel={"spans_flush_interval_ms": 10}))
    a.register_function("a::log", lambda d: Logger().info("from a") or 1)
    try:
        assert a.wait_connected(5) and b.wait_connected(5)
        wait_for(lambda: len(eng.conns) == 2)
        [index] = wait_for(lambda: [i for i, f in enumerate(eng.frames) if any(m.get("id") == "a::log" for m in f)])
        eng.send_to(index, {"type": "invokefunction", "invocation_id": "1", "function_id": "a::log", "data": {},
                            "traceparent": TP})
        wait_for(lambda: logs(eng))
        [doc] = docs(eng, b"LOGS")
        assert doc["resourceLogs"][0]["resource"]["attributes"][0]["value"] == {"stringValue": "a"}
        assert doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["traceId"] == TRACE
    finally:
        a.shutdown()
        b.shutdown()
