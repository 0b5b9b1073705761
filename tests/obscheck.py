"""Helpers of the observability tests: polling, Prometheus scrapes, routed calls between two
raw workers, span trees (tests/e2e/test_observability_*.py, tests/interop/test_observability_sdks.py)."""
from __future__ import annotations

import time
import urllib.error
import urllib.request
import uuid
from typing import Any, Callable

from prometheus_client.parser import text_string_to_metric_families

from tests.harness import Engine
from tests.wsclient import RawClient


def poll(probe: Callable[[], Any], within: float, what: str, every: float = 0.1) -> Any:
    """``probe()`` until it returns something truthy; AssertionError after ``within`` s."""
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within}s (last: {last!r})")
        time.sleep(every)


def trace_ids() -> tuple[str, str]:
    return uuid.uuid4().hex, uuid.uuid4().hex[:16]


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrape(prom: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of ``/metrics`` by (sample name, labels), parsed by prometheus_client."""
    status, body = http_get(prom + "/metrics")
    assert status == 200, (status, body[:500])
    out: dict[tuple[str, frozenset], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def sample(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def routed_call(caller: RawClient, callee: RawClient, function_id: str, data: Any = None, *,
                traceparent: str | None = None, baggage: str | None = None,
                error: dict | None = None, on_invoke: Callable[[dict], None] | None = None
                ) -> tuple[dict, dict]:
    """``caller`` calls ``function_id`` of ``callee`` through the engine; ``callee`` answers
    (``error`` to fail). Returns (the invokefunction the callee got, the caller's result)."""
    inv = str(uuid.uuid4())
    frame: dict[str, Any] = {"type": "invokefunction", "function_id": function_id,
                             "invocation_id": inv, "data": data}
    if traceparent is not None:
        frame["traceparent"] = traceparent
    if baggage is not None:
        frame["baggage"] = baggage
    caller.send(frame)
    got = callee.next_call(function_id, timeout=10)
    if on_invoke is not None:
        on_invoke(got)
    if error is None:
        callee.answer(got, {"ok": True})
    else:
        callee.send({"type": "invocationresult", "invocation_id": got["invocation_id"],
                     "function_id": function_id, "error": error})
    result = caller.recv_until(lambda f: f.get("type") == "invocationresult"
                               and f.get("invocation_id") == inv, timeout=10)
    return got, result


def attrs(span: dict) -> dict[str, str]:
    return {k: v for k, v in span["attributes"]}


def flatten(nodes: list[dict]) -> list[dict]:
    out = []
    for node in nodes:
        out.append(node)
        out.extend(flatten(node.get("children") or []))
    return out


def connect_pair(eng: Engine, function_id: str) -> tuple[RawClient, RawClient]:
    """A caller and a callee worker, ``function_id`` registered by the callee and routable."""
    caller = RawClient.declared(eng.url, "obs-caller")
    callee = RawClient.declared(eng.url, "obs-callee")
    callee.register_function(function_id)
    deadline = time.monotonic() + 10
    while True:
        inv = str(uuid.uuid4())
        caller.send({"type": "invokefunction", "function_id": function_id, "invocation_id": inv,
                     "data": {"probe": True}})
        try:
            probe = callee.next_call(function_id, timeout=0.5)
            callee.answer(probe, {"probe": True})
        except TimeoutError:
            pass
        res = caller.recv_until(lambda f: f.get("type") == "invocationresult"
                                and f.get("invocation_id") == inv, timeout=10)
        if res.get("error") is None:
            return caller, callee
        assert (res["error"] or {}).get("code") == "function_not_found", res
        assert time.monotonic() < deadline, f"{function_id} never routable: {res}"
        time.sleep(0.05)
