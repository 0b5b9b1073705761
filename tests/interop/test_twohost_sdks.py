"""Calls across engine hosts with the official SDKs (issue 19): a worker on host A calls a
function registered only on host B, for each pair of SDKs (Node and Python), the two hosts
sharing one Redis with a reference-style config (``iii-state`` on the ``redis`` adapter)."""
from __future__ import annotations

import uuid

import pytest

from tests.interop.sdkworkers import SdkWorker
from tests.twohosts import two_hosts

pytestmark = pytest.mark.interop

STATE_ON_REDIS = """\
- name: iii-state
  config:
    adapter: {name: redis, config: {redis_url: "{redis_url}"}}
"""
SDK_PAIRS = [("node", "python"), ("python", "node"), ("node", "node"), ("python", "python")]


@pytest.fixture(scope="module")
def hosts(redis_server):
    with two_hosts(redis_server, STATE_ON_REDIS) as (a, b):
        yield a, b


@pytest.fixture
def spawn_on():
    started: list[SdkWorker] = []

    def make(sdk: str, url: str, register=None) -> SdkWorker:
        w = SdkWorker(sdk, url, register=register)
        started.append(w)
        w.ready()
        return w

    yield make
    for w in started:
        w.stop()


@pytest.mark.parametrize("callee_sdk,caller_sdk", SDK_PAIRS)
def test_a_worker_on_A_calls_a_function_only_on_B(hosts, spawn_on, callee_sdk, caller_sdk):
    a, b = hosts
    add = f"math::add-{uuid.uuid4().hex[:8]}"
    callee = spawn_on(callee_sdk, b.url, [{"op": "register", "function_id": add, "kind": "add"}])
    caller = spawn_on(caller_sdk, a.url)

    ev = caller.call_when_found(add, {"a": 2, "b": 3}, within=15)

    assert ev["ok"], ev
    assert ev["result"] == {"c": 5}
    called = callee.expect(lambda e: e.get("event") == "called", what="called on B")
    assert called["data"]["a"] == 2 and isinstance(called["data"].get("_caller_worker_id"), str)
    # several in flight at once across the hosts, each answered once
    tags = {caller.trigger_async(add, {"a": i, "b": 1}): i for i in range(16)}
    for tag, i in tags.items():
        ev = caller.result(tag)
        assert ev["ok"] and ev["result"] == {"c": i + 1}, ev
