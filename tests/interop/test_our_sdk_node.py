"""Our Python SDK and the official Node SDK (npm ``iii-sdk`` 0.22.1) call each other's functions.

Both directions, through the real engine: sync calls (``iii.trigger`` and ``trigger_async``,
several in flight), void calls (``TriggerAction.Void()``), and handler errors, which must
reach the caller as ``InvocationError`` with ``code``/``message``/``stacktrace`` on our side
and as the Node SDK's ``InvocationError`` (``code``, ``stacktrace``) on the other. Also a call
chain Node -> our sync ``def`` handler -> Node, which needs handlers off the SDK loop.

The Node worker is the script ``NODE_SCRIPT`` below, run with ``node --input-type=module``
from ``tests/interop/node`` (so ``iii-sdk`` resolves to the pinned install); it speaks JSON
lines: commands on stdin, events on stdout.
"""
from __future__ import annotations

import asyncio
import json
import os
import queue
import subprocess
import threading
import time
import uuid
from typing import Any, Iterator

import pytest

from iii import InvocationError, TriggerAction
from tests.interop.sdkworkers import NODE_DIR
from tests.sdkclient import our_worker, trigger_when_found

pytestmark = pytest.mark.interop

NODE_SCRIPT = r"""
import { createInterface } from 'node:readline'
import { registerWorker, TriggerAction } from 'iii-sdk'
console.log = console.info = console.debug = (...a) => process.stderr.write(a.join(' ') + '\n')
const emit = (o) => process.stdout.write(JSON.stringify(o) + '\n')
const P = process.env.PREFIX
const worker = registerWorker(process.env.III_URL, { workerName: process.env.WORKER_NAME })
worker.registerFunction(`${P}node::add`, async (d) => { emit({ event: 'called', fn: 'add', data: d }); return { c: d.a + d.b } })
worker.registerFunction(`${P}node::sink`, async (d) => { emit({ event: 'called', fn: 'sink', data: d }); return 'ignored' })
worker.registerFunction(`${P}node::fail`, async (d) => { throw new Error(`node says no to ${d.what}`) })
async function trigger(cmd) {
  const req = { function_id: cmd.function_id, payload: cmd.payload ?? null, timeoutMs: 10000 }
  if (cmd.void) req.action = TriggerAction.Void()
  try {
    const result = await worker.trigger(req)
    emit({ event: 'result', tag: cmd.tag, ok: true, result: result ?? null })
  } catch (err) {
    emit({ event: 'result', tag: cmd.tag, ok: false, name: err?.name, code: err?.code,
           message: err?.message, stacktrace: err?.stacktrace ?? null })
  }
}
emit({ event: 'ready' })
createInterface({ input: process.stdin }).on('line', (line) => { if (line.trim()) trigger(JSON.parse(line)) })
  .on('close', async () => { await worker.shutdown(); process.exit(0) })
"""


class NodeWorker:
    """The Node script as a subprocess; events are read by a thread into a queue."""

    def __init__(self, url: str, prefix: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("III_")}
        env.update({"III_URL": url, "PREFIX": prefix, "WORKER_NAME": f"node-{prefix}"})
        self.proc = subprocess.Popen(["node", "--input-type=module", "-e", NODE_SCRIPT], cwd=NODE_DIR,
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()
        assert self.next(lambda e: e["event"] == "ready", 20)

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            if line.startswith("{"):
                self.events.put(json.loads(line))

    def next(self, pred: Any, timeout: float = 10.0) -> dict[str, Any]:
        """The first event (not handed out before) satisfying ``pred``."""
        for i, ev in enumerate(self.seen):
            if pred(ev):
                return self.seen.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            try:
                ev = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no matching Node event in {timeout}s; stderr:\n{self.stop()}") from None
            if pred(ev):
                return ev
            self.seen.append(ev)

    def trigger(self, function_id: str, payload: Any, *, void: bool = False) -> dict[str, Any]:
        tag = uuid.uuid4().hex
        self.proc.stdin.write(json.dumps({"tag": tag, "function_id": function_id,  # type: ignore[union-attr]
                                          "payload": payload, "void": void}) + "\n")
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return self.next(lambda e: e["event"] == "result" and e["tag"] == tag, 15)

    def call_when_found(self, function_id: str, payload: Any, within: float = 8.0) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            ev = self.trigger(function_id, payload)
            if ev["ok"] or ev.get("code") != "function_not_found" or time.monotonic() > deadline:
                return ev
            time.sleep(0.05)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        return (self.proc.stderr.read() or "")[-3000:]  # type: ignore[union-attr]


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}-"


@pytest.fixture
def node(engine: Any, prefix: str) -> Iterator[NodeWorker]:
    w = NodeWorker(engine.url, prefix)
    yield w
    w.stop()


@pytest.fixture
def ours(engine: Any, prefix: str) -> Iterator[Any]:
    with our_worker(engine.url, f"py-{prefix}") as iii:
        yield iii


def call_when_found(iii: Any, function_id: str, payload: Any, within: float = 8.0) -> Any:
    return trigger_when_found(iii, function_id, payload, within)


def test_our_sdk_calls_node_sync_and_async(node: NodeWorker, ours: Any, prefix: str) -> None:
    add = f"{prefix}node::add"
    assert call_when_found(ours, add, {"a": 2, "b": 3}) == {"c": 5}
    called = node.next(lambda e: e["event"] == "called" and e["fn"] == "add")
    assert called["data"]["a"] == 2 and called["data"]["b"] == 3

    async def many() -> list[Any]:
        return await asyncio.gather(*(ours.trigger_async({"function_id": add, "payload": {"a": i, "b": 1}})
                                      for i in range(16)))
    assert asyncio.run(many()) == [{"c": i + 1} for i in range(16)]


def test_our_sdk_void_call_reaches_node(node: NodeWorker, ours: Any, prefix: str) -> None:
    sink = f"{prefix}node::sink"
    call_when_found(ours, sink, {"probe": True})
    node.next(lambda e: e["event"] == "called" and e["data"].get("probe"))

    assert ours.trigger({"function_id": sink, "payload": {"n": 7}, "action": TriggerAction.Void()}) is None
    called = node.next(lambda e: e["event"] == "called" and e["fn"] == "sink" and e["data"].get("n") == 7)
    assert called["data"]["_caller_worker_id"] == ours.worker_id  # §5.3: void calls carry it too


def test_node_error_reaches_our_sdk_as_invocation_error(node: NodeWorker, ours: Any, prefix: str) -> None:
    fail = f"{prefix}node::fail"
    call_when_found(ours, f"{prefix}node::add", {"a": 0, "b": 0})
    with pytest.raises(InvocationError) as info:
        ours.trigger({"function_id": fail, "payload": {"what": "tea"}})
    err = info.value
    assert err.code == "invocation_failed"
    assert err.message == "node says no to tea"
    assert err.stacktrace and err.stacktrace.startswith("Error: node says no to tea") and "\n    at " in err.stacktrace
    assert err.function_id == fail


def _register_ours(ours: Any, prefix: str, node: NodeWorker) -> dict[str, Any]:
    calls: dict[str, Any] = {"voided": threading.Event()}

    def add(data: Any) -> Any:
        return {"sum": data["a"] + data["b"], "caller": data.get("_caller_worker_id")}

    async def aadd(data: Any) -> Any:
        await asyncio.sleep(0)
        return {"sum": data["a"] + data["b"]}

    def fail(data: Any) -> Any:
        raise ValueError(f"python says no to {data['what']}")

    def via_node(data: Any) -> Any:  # a sync handler that itself calls Node (seed's math::add shape)
        return ours.trigger({"function_id": f"{prefix}node::add", "payload": data})

    def sink(data: Any) -> None:
        calls["void_data"] = data
        calls["voided"].set()

    for name, fn in (("add", add), ("aadd", aadd), ("fail", fail), ("via_node", via_node), ("sink", sink)):
        ours.register_function(f"{prefix}py::{name}", fn)
    return calls


def test_node_calls_our_sdk_sync_def_and_async_def(node: NodeWorker, ours: Any, prefix: str) -> None:
    _register_ours(ours, prefix, node)
    ev = node.call_when_found(f"{prefix}py::add", {"a": 2, "b": 3})
    assert ev["ok"], ev
    assert ev["result"]["sum"] == 5 and isinstance(ev["result"]["caller"], str)
    ev = node.trigger(f"{prefix}py::aadd", {"a": 20, "b": 22})
    assert ev == {**ev, "ok": True, "result": {"sum": 42}}
    ev = node.trigger(f"{prefix}py::via_node", {"a": 4, "b": 5})  # Node -> Python -> Node
    assert ev["ok"] and ev["result"] == {"c": 9}, ev


def test_node_void_call_reaches_our_sdk(node: NodeWorker, ours: Any, prefix: str) -> None:
    calls = _register_ours(ours, prefix, node)
    assert node.call_when_found(f"{prefix}py::add", {"a": 0, "b": 0})["ok"]
    ev = node.trigger(f"{prefix}py::sink", {"n": 11}, void=True)
    assert ev["ok"] and ev["result"] is None, ev
    assert calls["voided"].wait(5)
    data = calls["void_data"]
    assert data.pop("_caller_worker_id") != ours.worker_id  # Node's connection called (§5.3)
    assert data == {"n": 11}


def test_our_error_reaches_node_with_code_message_stacktrace(node: NodeWorker, ours: Any, prefix: str) -> None:
    _register_ours(ours, prefix, node)
    assert node.call_when_found(f"{prefix}py::add", {"a": 0, "b": 0})["ok"]
    ev = node.trigger(f"{prefix}py::fail", {"what": "coffee"})
    assert not ev["ok"]
    assert ev["name"] == "InvocationError" and ev["code"] == "invocation_failed", ev
    assert ev["message"] == "invocation_failed: python says no to coffee"  # Node prefixes the code
    assert ev["stacktrace"].startswith("Traceback (most recent call last):")
    assert "ValueError: python says no to coffee" in ev["stacktrace"]
