"""OTLP export through the OpenTelemetry SDK to a real HTTP collector in the test: the
protobuf bodies of POST /v1/traces and /v1/logs decoded with opentelemetry.proto (ids,
parent, names, attributes, status, events, links, scope, service.name; log body,
severity, attributes, trace id, resource), logs_batch_size / logs_flush_interval_ms,
close() flushing without blocking the loop (the collector runs on that same loop), a dead
collector costing the caller nothing, and the degraded mode without the packages."""
from __future__ import annotations

import asyncio
import builtins
import logging
import time
from typing import AsyncIterator

import pytest
from aiohttp import web

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402

from brokers.observability import export  # noqa: E402
from brokers.observability.export import Exporter, wanted  # noqa: E402

TRACE = "0af7651916cd43dd8448eb211c80319c"
ROOT, CHILD, OTHER = "b7ad6b7169203331", "00f067aa0ba902b7", "1111111111111111"


class Collector:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        self.arrived = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/traces", self.handle)
        app.router.add_post("/v1/logs", self.handle)
        self.runner = web.AppRunner(app)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, request.content_type, await request.read()))
        self.arrived.set()
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def start(self) -> str:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/"

    def bodies(self, path: str) -> list[bytes]:
        return [body for p, _, body in self.requests if p == path]

    def spans(self) -> dict[str, tuple]:
        out = {}
        for body in self.bodies("/v1/traces"):
            req = ExportTraceServiceRequest.FromString(body)
            for rs in req.resource_spans:
                res = {kv.key: kv.value.string_value for kv in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        out[span.span_id.hex()] = (span, res, ss.scope)
        return out

    def logs(self) -> list[tuple]:
        out = []
        for body in self.bodies("/v1/logs"):
            req = ExportLogsServiceRequest.FromString(body)
            for rl in req.resource_logs:
                res = {kv.key: kv.value.string_value for kv in rl.resource.attributes}
                for sl in rl.scope_logs:
                    out += [(rec, res, sl.scope) for rec in sl.log_records]
        return out


@pytest.fixture
async def collector() -> AsyncIterator[tuple[Collector, str]]:
    c = Collector()
    url = await c.start()
    try:
        yield c, url
    finally:
        await c.runner.cleanup()


def cfg(endpoint: str, **over) -> dict:
    base = {"exporter": "otlp", "logs_exporter": "otlp", "endpoint": endpoint, "service_name": "iii",
            "service_version": "0.9.1", "service_namespace": None, "logs_batch_size": 100,
            "logs_flush_interval_ms": 5000}
    base.update(over)
    return base


def stored_span(span_id: str, parent: str | None, name: str, **over) -> dict:
    span = {"trace_id": TRACE, "span_id": span_id, "parent_span_id": parent, "name": name,
            "start_time_unix_nano": 1_700_000_000_000_000_000, "end_time_unix_nano": 1_700_000_000_500_000_000,
            "status": "ok", "attributes": [["function_id", "state::set"], ["iii.function.kind", "internal"]],
            "service_name": "iii", "events": [], "links": []}
    span.update(over)
    return span


def attrs(kvs) -> dict:
    return {kv.key: kv.value for kv in kvs}


async def wait_for(pred, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "collector never received the export"
        await asyncio.sleep(0.02)


async def test_spans_reach_the_collector_as_otlp_protobuf(collector) -> None:
    c, url = collector
    exp = Exporter(cfg(url, logs_exporter="memory"))
    assert exp.available
    exp.start()
    exp.spans([
        stored_span(ROOT, None, "GET /users/:id", attributes=[["http.request.method", "GET"]],
                    events=[{"name": "cache-miss", "timestamp_unix_nano": 1_700_000_000_100_000_000,
                             "attributes": [["key", "user:1"]]}]),
        stored_span(CHILD, ROOT, "call state::set", status="error", status_description="boom",
                    links=[{"trace_id": "5" * 32, "span_id": OTHER, "trace_state": "k=v", "attributes": [["why", "x"]]}]),
        stored_span(OTHER, CHILD, "math::add", status="unset", service_name="py-worker",
                    instrumentation_scope_name="iii-python-sdk", instrumentation_scope_version="1.2.3",
                    trace_state="vendor=1"),
        stored_span("2222222222222222", ROOT, "still running", end_time_unix_nano=0, pending=True),
    ])
    await exp.close()          # flushes on a thread: the collector on this loop keeps answering
    assert {p for p, _, _ in c.requests} == {"/v1/traces"}
    assert all(ct == "application/x-protobuf" for _, ct, _ in c.requests)
    got = c.spans()
    assert set(got) == {ROOT, CHILD, OTHER}           # the pending span is not exported

    root, res, scope = got[ROOT]
    assert root.trace_id.hex() == TRACE and root.parent_span_id == b"" and root.name == "GET /users/:id"
    assert attrs(root.attributes)["http.request.method"].string_value == "GET"
    assert root.status.code == 1
    assert (root.start_time_unix_nano, root.end_time_unix_nano) == (1_700_000_000_000_000_000, 1_700_000_000_500_000_000)
    assert res == {"service.name": "iii", "service.version": "0.9.1"}
    assert scope.name == "iii"
    assert [e.name for e in root.events] == ["cache-miss"]
    assert root.events[0].time_unix_nano == 1_700_000_000_100_000_000
    assert attrs(root.events[0].attributes)["key"].string_value == "user:1"

    child, _, _ = got[CHILD]
    assert child.parent_span_id.hex() == ROOT and child.trace_id.hex() == TRACE
    assert child.status.code == 2 and child.status.message == "boom"
    assert attrs(child.attributes)["function_id"].string_value == "state::set"
    assert attrs(child.attributes)["iii.function.kind"].string_value == "internal"
    link = child.links[0]
    assert (link.trace_id.hex(), link.span_id.hex()) == ("5" * 32, OTHER)   # the SDK encoder drops link trace_state
    assert attrs(link.attributes)["why"].string_value == "x"

    other, res, scope = got[OTHER]
    assert other.parent_span_id.hex() == CHILD and other.status.code == 0
    assert res == {"service.name": "py-worker"}
    assert (scope.name, scope.version) == ("iii-python-sdk", "1.2.3")
    assert other.trace_state == "vendor=1"


def stored_log(body: str, **over) -> dict:
    entry = {"timestamp_unix_nano": 1_700_000_000_000_000_001, "observed_timestamp_unix_nano": 1_700_000_000_000_000_002,
             "severity_number": 17, "severity_text": "ERROR", "body": body,
             "attributes": {"user": "ada", "n": 3, "ok": True, "nested": {"a": [1, "x"]}},
             "trace_id": TRACE, "span_id": CHILD,
             "resource": {"service.name": "node-worker", "service.version": "2.0.0"},
             "service_name": "node-worker", "instrumentation_scope_name": "iii-node"}
    entry.update(over)
    return entry


async def test_logs_reach_the_collector_with_trace_ids(collector) -> None:
    c, url = collector
    exp = Exporter(cfg(url, exporter="memory"))
    exp.start()
    exp.spans([stored_span(ROOT, None, "ignored: span export is off")])
    exp.logs([stored_log("disk full"),
              stored_log("plain", severity_number=9, severity_text="INFO", attributes={}, trace_id=None,
                         span_id=None, resource={}, service_name="iii", instrumentation_scope_name=None)])
    await exp.close()
    assert {p for p, _, _ in c.requests} == {"/v1/logs"}
    records = {rec.body.string_value: (rec, res, scope) for rec, res, scope in c.logs()}
    assert set(records) == {"disk full", "plain"}

    rec, res, scope = records["disk full"]
    assert rec.severity_number == 17 and rec.severity_text == "ERROR"
    assert rec.trace_id.hex() == TRACE and rec.span_id.hex() == CHILD
    assert (rec.time_unix_nano, rec.observed_time_unix_nano) == (1_700_000_000_000_000_001, 1_700_000_000_000_000_002)
    a = attrs(rec.attributes)
    assert a["user"].string_value == "ada" and a["n"].int_value == 3 and a["ok"].bool_value is True
    nested = {kv.key: kv.value for kv in a["nested"].kvlist_value.values}
    assert [v.int_value or v.string_value for v in nested["a"].array_value.values] == [1, "x"]
    assert res == {"service.name": "node-worker", "service.version": "2.0.0"}
    assert scope.name == "iii-node"

    rec, res, scope = records["plain"]
    assert rec.severity_number == 9 and rec.trace_id == b"" and rec.span_id == b""
    assert res == {"service.name": "iii", "service.version": "0.9.1"} and scope.name == "iii"


async def test_logs_batch_size_sends_without_waiting_for_the_interval(collector) -> None:
    c, url = collector
    exp = Exporter(cfg(url, exporter="memory", logs_batch_size=3, logs_flush_interval_ms=3_600_000))
    exp.start()
    try:
        exp.logs([stored_log(f"m{i}") for i in range(3)])
        await wait_for(lambda: len(c.logs()) == 3)
        assert len(c.bodies("/v1/logs")) == 1
    finally:
        await exp.close()


async def test_logs_flush_interval_sends_a_partial_batch(collector) -> None:
    c, url = collector
    exp = Exporter(cfg(url, exporter="memory", logs_batch_size=100, logs_flush_interval_ms=100))
    exp.start()
    try:
        exp.logs([stored_log("alone")])
        await wait_for(lambda: len(c.logs()) == 1, timeout=3.0)
    finally:
        await exp.close()


async def test_a_dead_collector_costs_the_caller_nothing(caplog) -> None:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exp = Exporter(cfg(f"http://127.0.0.1:{port}", logs_batch_size=10, logs_flush_interval_ms=100))
    exp.start()
    t0 = time.perf_counter()
    for i in range(200):
        exp.logs([stored_log(f"m{i}")])
    exp.spans([stored_span(f"{i + 1:016x}", None, "call x") for i in range(3000)])   # > the SDK's queue of 2048
    assert time.perf_counter() - t0 < 2.0
    full = [r for r in caplog.records if r.getMessage().startswith("Queue full")]
    assert len(full) == 1                        # the SDK drops the overflow; its warning is rate-limited
    beat = time.perf_counter()
    await asyncio.sleep(0.3)                     # the loop keeps turning while export fails
    assert time.perf_counter() - beat < 1.0
    t0 = time.perf_counter()
    await asyncio.wait_for(exp.close(grace_s=1.0), 10)   # bounded: retries are aborted after the grace
    assert time.perf_counter() - t0 < 4.0
    assert exp.failed == 0


def test_wanted_follows_the_two_exporter_keys() -> None:
    assert not wanted({"exporter": "memory", "logs_exporter": "memory"})
    assert wanted({"exporter": "both", "logs_exporter": "memory"})
    assert wanted({"exporter": "memory", "logs_exporter": "otlp"})


def test_a_bad_item_is_skipped_not_raised(collector) -> None:
    exp = Exporter(cfg("http://127.0.0.1:9"))
    exp.start()
    try:
        exp.spans([stored_span("not-hex", None, "x")])
        exp.logs([stored_log("x", trace_id="zz", span_id="yy")])
        assert exp.failed == 2
    finally:
        exp.shutdown()


async def test_missing_packages_degrade_to_memory_only_with_one_error(monkeypatch, caplog) -> None:
    real_import = builtins.__import__

    def no_otel(name, *args, **kw):
        if name.startswith("opentelemetry"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_otel)
    with caplog.at_level(logging.DEBUG, logger=export.__name__):
        exp = Exporter(cfg("http://127.0.0.1:9"))
        exp.start()
        exp.spans([stored_span(ROOT, None, "x")])
        exp.logs([stored_log("x")])
        exp.force_flush()
        await exp.close()
        exp.shutdown()
    assert not exp.available
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1 and errors[0].levelno == logging.ERROR
    assert "iii-engine[otlp]" in errors[0].getMessage() and "memory" in errors[0].getMessage()
