"""Wire types of iii.iii_types (sdk.types) and the lazy ``iii`` package."""
from __future__ import annotations

import subprocess
import sys

import pytest

from iii.iii_types import (
    HttpAuthApiKey, HttpAuthBearer, HttpAuthHmac, HttpInvocationConfig, TriggerAction, action_to_wire,
)


def test_http_invocation_to_wire_matches_observed_python_frames():
    # protocol.md §7, the three observed registerfunction.invocation objects
    assert HttpInvocationConfig(url="https://example.com/fn", method="POST", timeout_ms=5000,
                                headers={"x-a": "b"}, auth=HttpAuthBearer(token_key="TOK")).to_wire() == {
        "url": "https://example.com/fn", "method": "POST", "timeout_ms": 5000, "headers": {"x-a": "b"},
        "auth": {"type": "bearer", "token_key": "TOK"}}
    assert HttpInvocationConfig(url="https://example.com/fn2", method="PUT",
                                auth=HttpAuthHmac(secret_key="SEC")).to_wire() == {
        "url": "https://example.com/fn2", "method": "PUT", "auth": {"type": "hmac", "secret_key": "SEC"}}
    assert HttpInvocationConfig(url="https://example.com/fn3",
                                auth=HttpAuthApiKey(header="x-api-key", value_key="KEY")).to_wire() == {
        "url": "https://example.com/fn3", "method": "POST",
        "auth": {"type": "api_key", "header": "x-api-key", "value_key": "KEY"}}


def test_http_invocation_round_trip_and_validation():
    cfg = HttpInvocationConfig(url="https://x", timeout_ms=10, auth=HttpAuthApiKey(header="h", value_key="V"))
    assert HttpInvocationConfig.from_wire(cfg.to_wire()) == cfg
    with pytest.raises(ValueError):
        HttpInvocationConfig(url="https://x", method="FETCH")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="auth.token_key"):
        HttpInvocationConfig.from_wire({"url": "https://x", "auth": {"type": "bearer"}})


def test_trigger_actions():
    assert action_to_wire(TriggerAction.Void()) == {"type": "void"}
    assert action_to_wire(TriggerAction.Enqueue(queue="payment")) == {"type": "enqueue", "queue": "payment"}
    assert action_to_wire({"type": "enqueue", "queue": "q"}) == {"type": "enqueue", "queue": "q"}
    assert action_to_wire(None) is None
    with pytest.raises(ValueError):
        action_to_wire({"type": "enqueue"})


def test_importing_iii_loads_no_engine_or_sdk_module():
    code = (
        "import sys, iii\n"
        "heavy = ('zmq', 'lmdb', 'msgpack', 'brokers', 'websockets', 'sdk')\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in heavy]\n"
        "assert not bad, bad\n"
        "from iii import register_worker, Logger, TriggerAction, HttpInvocationConfig, InitOptions, InvocationError\n"
        "from iii.iii_types import HttpAuthBearer\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in heavy[:4]]\n"
        "assert not bad, bad\n"
        "import pkgutil\n"  # iii is the SDK's face only: no engine subpackage is left in it
        "assert [m.name for m in pkgutil.iter_modules(iii.__path__)] == ['channels', 'helpers', 'iii_types']\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_unknown_name_is_an_attribute_error():
    import iii

    with pytest.raises(AttributeError):
        iii.no_such_name  # noqa: B018
