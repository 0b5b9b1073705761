"""A custom trigger type provided by one official-SDK worker and bound by another (spec §6).

The provider receives the binding (E->W `registertrigger`), fires it by calling the bound
function, then disconnects; a new provider process registers the same type and the engine
re-delivers the parked binding to it (§4.6 step 5, §6.2 steps 5-6).
"""
from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("provider_sdk,binder_sdk", [("node", "python"), ("python", "node")])
def test_custom_trigger_type_binding_survives_provider_reconnect(spawn, provider_sdk, binder_sdk):
    ttype = f"demo::tick-{uuid.uuid4().hex[:8]}"
    target = f"tick::handler-{uuid.uuid4().hex[:8]}"
    provider = spawn(provider_sdk, [{"op": "trigger_type", "type_id": ttype}])
    binder = spawn(binder_sdk, [
        {"op": "register", "function_id": target, "kind": "const", "value": "ticked"},
        {"op": "bind", "trigger_type": ttype, "function_id": target, "config": {"every": 1}},
    ])

    got = provider.expect(lambda e: e.get("event") == "trigger_registered", 10,
                          "binding delivered to provider")
    assert got["config"]["function_id"] == target
    assert got["config"]["config"] == {"every": 1}
    binding_id = got["config"]["id"]

    provider.send({"op": "fire", "tag": "fire-1"})
    fired = provider.result("fire-1")
    assert fired["ok"] and fired["result"] == "ticked", fired
    called = binder.expect(lambda e: e.get("event") == "called", what="fired call")
    assert called["data"]["fired"] == {"every": 1}

    # The provider goes away; the binding is parked, not lost.
    provider.kill()
    again = spawn(provider_sdk, [{"op": "trigger_type", "type_id": ttype}])
    got2 = again.expect(lambda e: e.get("event") == "trigger_registered", 10,
                        "binding re-delivered to the new provider")
    assert got2["config"]["id"] == binding_id
    assert got2["config"]["function_id"] == target
    assert got2["config"]["config"] == {"every": 1}

    again.send({"op": "fire", "tag": "fire-2"})
    fired = again.result("fire-2")
    assert fired["ok"] and fired["result"] == "ticked", fired
