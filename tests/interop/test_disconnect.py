"""Disconnects with the official SDKs: a callee dying mid-call, and a worker reconnecting.

Mid-call: the caller must get `invocation_stopped` at once (spec §4.6 step 3), not its own
client-side timeout. Reconnect: the worker's link is cut by a proxy while the engine still holds
the old connection; the SDK reconnects, sends `reattach` (§4.7), replays its registrations, and
they must not be rejected as conflicts with the old connection: its functions work again.
"""
from __future__ import annotations

import time
import uuid

import pytest

from tests.interop.tcpproxy import TcpProxy

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("callee_sdk,caller_sdk", [("node", "python"), ("python", "node")])
def test_callee_disconnect_mid_call_stops_invocation(spawn, callee_sdk, caller_sdk):
    slow = f"slow::op-{uuid.uuid4().hex[:8]}"
    probe = f"slow::probe-{uuid.uuid4().hex[:8]}"
    callee = spawn(callee_sdk, [{"op": "register", "function_id": slow, "kind": "slow",
                                 "ms": 60000},
                                {"op": "register", "function_id": probe, "kind": "const",
                                 "value": "up"}])
    caller = spawn(caller_sdk)
    assert caller.call_when_found(probe, {})["result"] == "up"

    tag = caller.trigger_async(slow, {"x": 1}, timeout_ms=25000)
    callee.expect(lambda e: e.get("event") == "called" and e["function_id"] == slow,
                  what="slow call delivered")
    t0 = time.monotonic()
    callee.kill()

    ev = caller.result(tag, timeout=10)
    assert not ev["ok"]
    assert ev["code"] == "invocation_stopped", ev
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("sdk", ["node", "python"])
def test_reconnecting_worker_reattaches_and_serves_again(engine, spawn, sdk):
    fn = f"re::fn-{uuid.uuid4().hex[:8]}"
    proxy = TcpProxy(engine.port)
    try:
        worker = spawn(sdk, [{"op": "register", "function_id": fn, "kind": "const",
                              "value": "back"}], url=proxy.url)
        caller = spawn("node" if sdk == "python" else "python")
        assert caller.call_when_found(fn, {})["result"] == "back"
        accepted = proxy.accepted

        # Cut the worker's side only: the engine still holds the old connection.
        assert proxy.drop_clients() >= 1
        deadline = time.monotonic() + 10
        while proxy.accepted == accepted and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proxy.accepted > accepted, "the SDK did not reconnect"

        # Calls work again within a few seconds, served by the reconnected worker.
        n_before = len(worker.seen(lambda e: e.get("event") == "called"))
        ev = caller.call_when_found(fn, {"after": True}, within=10)
        assert ev["ok"] and ev["result"] == "back", ev
        assert len(worker.seen(lambda e: e.get("event") == "called")) > n_before
        # With reattach the replayed registration is not a conflict with the old connection.
        assert not worker.seen(lambda e: e.get("event") == "rejected")
    finally:
        proxy.close()
