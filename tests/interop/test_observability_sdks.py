"""The official SDKs' telemetry in the observability worker's stores (issue 16, first bullet).

Workers on the npm ``iii-sdk`` 0.22.1 and the PyPI ``iii-sdk`` 0.25.0 (``node/otel_worker.mjs``,
``official_py/otel_worker.py``) run with OpenTelemetry as their SDK sets it up by default: each
opens ``<url>/otel`` and sends OTLP JSON frames (``LOGS`` for ``Logger`` records, ``OTLP`` for
the ``execute <fn>`` INTERNAL span it opens around every handler), batched every 100 ms.
Each worker gets its own ``OTEL_SERVICE_NAME`` (the resource's ``service.name``).

- Logs: each SDK's ``Logger.info(message, data)`` inside a handler and outside any is listed by
  ``engine::logs::list`` with the message as body, the data as the attribute ``log.data`` (where
  both SDKs put it), the worker's service name, and for the in-handler entry the trace and span
  ids of the handler's ``execute`` span, itself a child of the engine's ``call <fn>`` span.
- A chain test caller → Node fn → Python fn → ``state::set`` is one trace whose tree is
  ``call node`` (iii) → ``execute node`` (Node) → ``call py`` (iii) → ``execute py`` (Python) →
  ``call state::set`` (iii): the engine's spans between the SDK spans (protocol §9.1).

SDK exports are batched and travel a second socket: every check polls with a deadline.
"""
from __future__ import annotations

import json
import os
import queue
import subprocess
import tempfile
import threading
import time
import uuid
from typing import Any, Callable, Iterator

import pytest

from tests.harness import STATE_READY, STATE_WORKER_YAML, Engine, running_engine
from tests.interop.sdkworkers import HERE, NODE_DIR, OFFICIAL_PY, SdkWorker
from tests.wsclient import RawClient, ok, wait_for_function

pytestmark = pytest.mark.interop

OBSERVABILITY_YAML = "- name: iii-observability\n  config: {}\n"
DEADLINE_S = 15.0
SLACK_NS = 5_000_000
SCRIPTS = {
    "node": (["node", str(NODE_DIR / "otel_worker.mjs")], NODE_DIR),
    "python": ([str(OFFICIAL_PY), str(HERE / "official_py" / "otel_worker.py")], HERE),
}


class OtelWorker(SdkWorker):
    """An official-SDK worker running ``otel_worker.mjs`` / ``otel_worker.py`` (same line
    protocol and helpers as ``SdkWorker``), with OTel on and its own service name."""

    def __init__(self, sdk: str, url: str, service_name: str,
                 register: list[dict[str, Any]] | None = None) -> None:
        self.sdk = sdk
        self.service_name = service_name
        cmd, cwd = SCRIPTS[sdk]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("III_", "OTEL_"))}
        env.pop("PYTHONPATH", None)  # never let our `iii` shadow the official one
        env.update({"III_URL": url, "REGISTER": json.dumps(register or []), "OTEL_ENABLED": "true",
                    "OTEL_SERVICE_NAME": service_name, "PYTHONUNBUFFERED": "1"})
        self._stderr = tempfile.NamedTemporaryFile(prefix=f"iii-otel-{sdk}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr, text=True, bufsize=1)
        self.events: list[dict[str, Any]] = []
        self.noise: list[str] = []
        self._q: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._used: set[int] = set()
        threading.Thread(target=self._read, daemon=True).start()


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with running_engine(extra_workers_yaml=STATE_WORKER_YAML + OBSERVABILITY_YAML, wait_for=STATE_READY) as eng:
        wait_for_function(eng.url, "engine::logs::list", {})
        yield eng


@pytest.fixture
def client(engine: Engine) -> Iterator[RawClient]:
    with RawClient.declared(engine.url, "obs-interop") as c:
        yield c


@pytest.fixture
def workers(engine: Engine) -> Iterator[Callable[..., OtelWorker]]:
    started: list[OtelWorker] = []

    def make(sdk: str, service_name: str, register: list[dict[str, Any]]) -> OtelWorker:
        w = OtelWorker(sdk, engine.url, service_name, register)
        started.append(w)
        w.ready()
        return w

    try:
        yield make
    finally:
        for w in started:
            w.stop()


def tag() -> str:
    return uuid.uuid4().hex[:8]


def poll(what: str, probe: Callable[[], Any], workers: tuple[OtelWorker, ...] = (),
         within: float = DEADLINE_S) -> Any:
    """``probe()`` until it returns something truthy; AssertionError with its last value."""
    deadline = time.monotonic() + within
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            tails = "\n".join(f"{w!r} stderr:\n{w.stderr_tail(2000)}" for w in workers)
            raise AssertionError(f"{what}: not within {within}s; last: {got!r}\n{tails}")
        time.sleep(0.1)


def call(client: RawClient, function_id: str, data: Any = None) -> Any:
    return ok(client.call(function_id, {} if data is None else data, timeout=10))


def logs_with_bodies(client: RawClient, bodies: set[str], **query: Any) -> dict[str, dict]:
    """The stored logs whose body is one of ``bodies``, by body; {} until all are there."""
    found = {e["body"]: e for e in call(client, "engine::logs::list", query)["logs"] if e["body"] in bodies}
    return found if set(found) == bodies else {}


def trace_tree(client: RawClient, trace_id: str, spans: int) -> list[dict]:
    """The roots of ``trace_id``'s tree once it holds ``spans`` spans (SDK spans come later)."""
    def count(nodes: list[dict]) -> int:
        return sum(1 + count(n["children"]) for n in nodes)
    roots = call(client, "engine::traces::tree", {"trace_id": trace_id})["roots"]
    return roots if count(roots) >= spans else []


def attrs(span: dict) -> dict[str, str]:
    return dict(span["attributes"])


def only_child(span: dict) -> dict:
    assert len(span["children"]) == 1, f"{span['name']}: children {[c['name'] for c in span['children']]}"
    return span["children"][0]


def assert_engine_call(span: dict, function_id: str, kind: str, parent: str | None) -> None:
    assert span["name"] == f"call {function_id}", span
    assert span["service_name"] == "iii", span
    assert span["parent_span_id"] == parent, span
    assert span["status"] == "ok", span
    assert attrs(span)["function_id"] == function_id
    assert attrs(span)["iii.function.kind"] == kind


def assert_sdk_execute(span: dict, function_id: str, service_name: str, parent: str) -> None:
    assert span["name"] == f"execute {function_id}", span
    assert span["service_name"] == service_name, span
    assert span["parent_span_id"] == parent, span
    assert span["status"] == "ok", span
    assert span.get("pending") is None, span


@pytest.mark.parametrize("sdk", ["node", "python"])
def test_sdk_logger_entries_are_listed_with_the_handlers_trace(sdk, workers, client):
    t = tag()
    fn, service = f"obs-log-{sdk}::{t}", f"obs-{sdk}-{t}"
    inside, outside = f"inside handler {sdk} {t}", f"outside handler {sdk} {t}"
    in_data = {"order_id": f"ord_{t}", "amount": 49.5, "count": 3, "paid": True}
    out_data = {"phase": "startup", "attempt": 1}
    w = workers(sdk, service, [{"op": "register", "function_id": fn, "kind": "log",
                                "message": inside, "data": in_data}])

    answer = client.call_when_found(fn, {"x": 1}, timeout=10)
    handler = ok(answer)  # the handler's own trace context, as its SDK saw it
    w.send({"op": "log", "tag": t, "message": outside, "data": out_data})
    w.expect(lambda e: e.get("event") == "logged" and e.get("tag") == t, what="logged")

    logs = poll("both Logger entries in engine::logs::list",
                lambda: logs_with_bodies(client, {inside, outside}), (w,))

    for body, data in ((inside, in_data), (outside, out_data)):
        entry = logs[body]
        assert entry["service_name"] == service, entry
        assert entry["resource"]["service.name"] == service, entry
        assert entry["severity_number"] == 9 and entry["severity_text"] == "INFO", entry
        assert entry["attributes"]["log.data"] == data, entry  # the SDKs' key for Logger data
    assert logs[outside]["trace_id"] is None and logs[outside]["span_id"] is None, logs[outside]
    entry = logs[inside]
    assert isinstance(handler["trace_id"], str) and len(handler["trace_id"]) == 32, handler
    assert entry["trace_id"] == handler["trace_id"], (entry, handler)
    assert entry["span_id"] == handler["span_id"], (entry, handler)
    # engine::logs::list finds it by its trace id
    by_trace = call(client, "engine::logs::list", {"trace_id": handler["trace_id"]})["logs"]
    assert [e["body"] for e in by_trace] == [inside], by_trace

    # that span is the SDK's `execute <fn>`, child of the engine's `call <fn>`, root of the trace
    assert answer["traceparent"].split("-")[1] == handler["trace_id"], answer
    roots = poll("the handler's trace tree", lambda: trace_tree(client, handler["trace_id"], 2), (w,))
    assert len(roots) == 1, roots
    assert_engine_call(roots[0], fn, "user", None)
    execute = only_child(roots[0])
    assert_sdk_execute(execute, fn, service, roots[0]["span_id"])
    assert execute["span_id"] == handler["span_id"]


def test_call_chain_node_python_state_set_is_one_trace(workers, client):
    t = tag()
    node_fn, py_fn = f"obs-chain-node::{t}", f"obs-chain-py::{t}"
    node_svc, py_svc = f"obs-chain-node-{t}", f"obs-chain-py-{t}"
    node_msg, py_msg = f"chain node {t}", f"chain python {t}"
    py = workers("python", py_svc, [{"op": "register", "function_id": py_fn, "kind": "chain",
                                     "next": "state::set", "message": py_msg, "data": {"hop": 2}}])
    node = workers("node", node_svc, [{"op": "register", "function_id": node_fn, "kind": "chain",
                                       "next": py_fn, "message": node_msg, "data": {"hop": 1}}])
    both = (node, py)
    scope, key = f"obs-chain-{t}", "k"
    ok(client.call_when_found(py_fn, {"scope": f"{scope}-probe", "key": key, "value": 0}, timeout=10))

    answer = client.call_when_found(node_fn, {"scope": scope, "key": key, "value": t}, timeout=15)

    result = ok(answer)
    assert result["next"]["next"]["new_value"] == t, result  # state::set's answer, back up the chain
    assert call(client, "state::get", {"scope": scope, "key": key}) == t
    trace_id = result["trace_id"]
    assert result["next"]["trace_id"] == trace_id, result  # Python's handler ran in Node's trace
    assert answer["traceparent"].split("-")[1] == trace_id, answer

    listed = poll("the chain's trace in engine::traces::list", lambda: call(client, "engine::traces::list", {
        "name": node_fn, "include_internal": True, "search_all_spans": True})["spans"], both)
    assert {s["trace_id"] for s in listed} == {trace_id}, listed
    roots = poll("all 5 spans in the trace tree", lambda: trace_tree(client, trace_id, 5), both)

    assert len(roots) == 1, [r["name"] for r in roots]
    call_node = roots[0]
    assert_engine_call(call_node, node_fn, "user", None)
    exec_node = only_child(call_node)
    assert_sdk_execute(exec_node, node_fn, node_svc, call_node["span_id"])
    call_py = only_child(exec_node)
    assert_engine_call(call_py, py_fn, "user", exec_node["span_id"])
    exec_py = only_child(call_py)
    assert_sdk_execute(exec_py, py_fn, py_svc, call_py["span_id"])
    call_state = only_child(exec_py)
    assert_engine_call(call_state, "state::set", "internal", exec_py["span_id"])
    assert call_state["children"] == [], call_state
    chain = [call_node, exec_node, call_py, exec_py, call_state]
    assert all(s["trace_id"] == trace_id for s in chain)
    assert exec_node["span_id"] == result["span_id"] and exec_py["span_id"] == result["next"]["span_id"]
    # nested in time too (up to SLACK_NS: Node's clock has millisecond steps, processes differ)
    for parent, child in zip(chain, chain[1:]):
        assert parent["start_time_unix_nano"] - SLACK_NS <= child["start_time_unix_nano"], (parent, child)
        assert child["end_time_unix_nano"] <= parent["end_time_unix_nano"] + SLACK_NS, (parent, child)

    # each hop's Logger entry sits on its own execute span of the same trace
    logs = poll("the chain's Logger entries", lambda: logs_with_bodies(client, {node_msg, py_msg},
                                                                      trace_id=trace_id), both)
    assert logs[node_msg]["span_id"] == exec_node["span_id"] and logs[node_msg]["service_name"] == node_svc
    assert logs[py_msg]["span_id"] == exec_py["span_id"] and logs[py_msg]["service_name"] == py_svc
