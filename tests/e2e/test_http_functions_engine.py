"""HTTP-invoked functions (iii-http-functions) end to end: a real engine, workers of our SDK
or raw frames, and a real HTTP server started by the test (``http.server`` in a thread) as
the endpoint (workers-b §3, protocol.md §7).

The engine's environment holds the secrets (set in this process before the engine starts,
so the supervisor and its processes inherit them). Its security config allows 127.0.0.1
explicitly, as a development config would; the SSRF tests run a second engine on the
spec's strict defaults. A refused registration is answered to its worker with an ``error``
frame (read here with a raw client).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import queue
import time
import uuid
from typing import Any, Iterator

import pytest

from iii import HttpInvocationConfig, InvocationError, TriggerAction
from iii.iii_types import HttpAuthApiKey, HttpAuthBearer, HttpAuthHmac
from tests.harness import Engine, running_engine
from tests.receiver import LOCAL_SECURITY, Receiver
from tests.sdkclient import our_worker

SECRETS = {"PROVIDER_API_TOKEN": f"tok-{uuid.uuid4().hex}", "HOOK_HMAC_SECRET": f"hm-{uuid.uuid4().hex}",
           "HOOK_API_KEY": f"ak-{uuid.uuid4().hex}"}
STATE_AND_QUEUE = """\
- name: iii-state
  config: {}
- name: iii-queue
  config:
    queue_configs:
      hooks: {max_retries: 1, concurrency: 2, type: standard}
"""


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def secrets_env() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in SECRETS}
    os.environ.update(SECRETS)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def engine(secrets_env: None) -> Iterator[Engine]:
    with running_engine(extra_workers_yaml=LOCAL_SECURITY + STATE_AND_QUEUE, wait_for="state::list_groups") as eng:
        yield eng


@pytest.fixture
def worker(engine: Engine) -> Iterator[Any]:
    with our_worker(engine.url, f"hf-{uuid.uuid4().hex[:6]}") as iii:
        yield iii


def http_fn(iii: Any, url: str, **kw: Any) -> str:
    fid = f"ext::{uuid.uuid4().hex[:8]}"
    iii.register_function(fid, HttpInvocationConfig(url=url, **kw), description="an endpoint")
    return fid


def call(iii: Any, fid: str, payload: Any, within: float = 5.0) -> Any:
    """``trigger``, retried while the function is not routed to the engine's HTTP process yet
    (see test_a_call_right_after_the_registration_is_served)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return iii.trigger({"function_id": fid, "payload": payload})
        except InvocationError as exc:
            if exc.code not in ("function_not_found", "function_not_invokable") or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def failure(iii: Any, fid: str, payload: Any = None) -> tuple[str, str]:
    with pytest.raises(InvocationError) as info:
        call(iii, fid, payload if payload is not None else {})
    return info.value.code, info.value.message


def drain(r: Receiver) -> None:
    while not r.requests.empty():
        r.requests.get_nowait()


# ---- the outgoing request (§3.2) ----------------------------------------------------------

def test_bearer_the_seed_shape_headers_and_body(worker: Any, receiver: Receiver) -> None:
    drain(receiver)
    fid = http_fn(worker, receiver.url("/notify"), method="POST", timeout_ms=5000,
                  headers={"X-Service": "iii-worker"}, auth=HttpAuthBearer(token_key="PROVIDER_API_TOKEN"))
    out = call(worker, fid, {"channel": "#alerts", "text": "Deploy succeeded"})
    req = receiver.next()
    h = req["headers"]
    assert h["authorization"] == f"Bearer {SECRETS['PROVIDER_API_TOKEN']}"
    assert h["x-service"] == "iii-worker" and h["content-type"] == "application/json"
    assert h["x-iii-function-path"] == fid
    uuid.UUID(h["x-iii-invocation-id"])
    assert abs(int(h["x-iii-timestamp"]) - time.time()) < 60
    assert h["host"] == f"127.0.0.1:{receiver.port}"
    body = json.loads(req["body"])
    assert body["channel"] == "#alerts" and body["text"] == "Deploy succeeded"
    assert isinstance(body.get("_caller_worker_id"), str)  # the engine's caller stamp reaches the endpoint
    assert out == {"echo": body}
    names = [n.lower() for n in req["raw_names"]]
    order = ["content-type", "x-iii-function-path", "x-iii-invocation-id", "x-iii-timestamp", "x-service",
             "authorization"]
    assert [n for n in names if n in order] == order


def test_hmac_signature_verifies_with_the_spec_algorithm(worker: Any, receiver: Receiver) -> None:
    drain(receiver)
    fid = http_fn(worker, receiver.url("/signed"), method="PUT", auth=HttpAuthHmac(secret_key="HOOK_HMAC_SECRET"))
    call(worker, fid, {"order": 7})
    req = receiver.next()
    ts, sig = req["headers"]["x-iii-timestamp"], req["headers"]["x-iii-signature"]
    msg = f"{ts}:{base64.b64encode(req['body']).decode()}".encode()
    expected = "sha256=" + hmac.new(SECRETS["HOOK_HMAC_SECRET"].encode(), msg, hashlib.sha256).hexdigest()
    assert req["method"] == "PUT" and hmac.compare_digest(sig, expected)


def test_api_key_header_and_get_still_sends_the_body(worker: Any, receiver: Receiver) -> None:
    drain(receiver)
    fid = http_fn(worker, receiver.url("/keyed"), method="GET",
                  auth=HttpAuthApiKey(header="X-Api-Key", value_key="HOOK_API_KEY"))
    call(worker, fid, {"q": 1})
    req = receiver.next()
    assert req["method"] == "GET" and req["headers"]["x-api-key"] == SECRETS["HOOK_API_KEY"]
    assert json.loads(req["body"])["q"] == 1


# ---- the response mapping (§3.3) ----------------------------------------------------------

def test_response_mapping_and_transport_failures(worker: Any, receiver: Receiver) -> None:
    assert call(worker, http_fn(worker, receiver.url("/empty")), {}) is None
    assert call(worker, http_fn(worker, receiver.url("/redirect")), {}) is None  # not followed
    assert failure(worker, http_fn(worker, receiver.url("/fail400"))) == ("http_error", "HTTP 400 Bad Request")
    assert failure(worker, http_fn(worker, receiver.url("/fail502"))) == ("upstream_failure", "gateway failed")
    assert failure(worker, http_fn(worker, receiver.url("/text")))[0] == "invalid_response"
    code, message = failure(worker, http_fn(worker, receiver.url("/slow"), timeout_ms=200))
    assert code == "http_request_failed" and "timed out" in message
    dead = RawPort.free()
    code, message = failure(worker, http_fn(worker, f"http://127.0.0.1:{dead}/x"))
    assert code == "http_request_failed" and "connect" in message.lower()


def test_a_redirect_to_a_blocked_address_is_not_followed(worker: Any, receiver: Receiver) -> None:
    drain(receiver)
    assert call(worker, http_fn(worker, receiver.url("/redirect-to-metadata")), {}) is None
    assert receiver.next()["path"] == "/redirect-to-metadata"
    time.sleep(0.2)
    assert receiver.requests.empty()


class RawPort:
    @staticmethod
    def free() -> int:
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


# ---- registration: listed, bound to triggers, removed with its owner ------------------------

def test_listed_without_secrets_and_removed_when_its_owner_disconnects(engine: Engine, receiver: Receiver) -> None:
    with our_worker(engine.url, "hf-owner") as owner, our_worker(engine.url, "hf-caller") as caller:
        fid = http_fn(owner, receiver.url("/listed"), auth=HttpAuthBearer(token_key="PROVIDER_API_TOKEN"))
        call(caller, fid, {})
        listed = caller.trigger({"function_id": "engine::functions::list", "payload": {}})
        [row] = [f for f in listed["functions"] if f["function_id"] == fid]
        assert row["description"] == "an endpoint" and row["worker_name"] == "hf-owner"
        info = caller.trigger({"function_id": "engine::functions::info", "payload": {"function_id": fid}})
        for text in (json.dumps(listed), json.dumps(info)):
            assert all(secret not in text for secret in SECRETS.values())
        owner.shutdown()
        deadline = time.monotonic() + 5
        while True:
            try:
                caller.trigger({"function_id": fid, "payload": {}})
            except InvocationError as exc:
                if exc.code == "function_not_found":
                    break
            assert time.monotonic() < deadline, "still served after its owner left"
            time.sleep(0.05)
        listed = caller.trigger({"function_id": "engine::functions::list", "payload": {}})
        assert fid not in [f["function_id"] for f in listed["functions"]]
    assert all(secret not in engine.log_tail(10**7) for secret in SECRETS.values())


def test_bound_to_a_state_trigger_and_to_a_queue(worker: Any, receiver: Receiver) -> None:
    drain(receiver)
    fid = http_fn(worker, receiver.url("/state-event"))
    scope = f"orders-{uuid.uuid4().hex[:6]}"
    worker.register_trigger({"type": "state", "function_id": fid, "config": {"scope": scope, "key": "status"}})
    deadline = time.monotonic() + 10
    event = None
    while event is None and time.monotonic() < deadline:  # the binding lands asynchronously
        worker.trigger({"function_id": "state::set", "payload": {"scope": scope, "key": "status", "value": "paid"}})
        try:
            event = json.loads(receiver.next(timeout=0.5)["body"])
        except queue.Empty:
            pass
    assert event is not None, "the state trigger never called the endpoint"
    assert event["scope"] == scope and event["key"] == "status" and event["new_value"] == "paid"
    drain(receiver)
    qfid = http_fn(worker, receiver.url("/queued"))
    call(worker, qfid, {"warm": True})  # routed before the job is enqueued
    receiver.next()
    receipt = worker.trigger({"function_id": qfid, "payload": {"job": 42}, "action": TriggerAction.Enqueue(queue="hooks")})
    assert "messageReceiptId" in receipt
    req = receiver.next()
    assert req["path"] == "/queued" and json.loads(req["body"])["job"] == 42


def test_a_call_right_after_the_registration_is_served(worker: Any, receiver: Receiver) -> None:
    # the gateway claims a new HTTP-invoked function for the HTTP functions process at once
    # (not for the registering connection, whose SDK would answer function_not_invokable)
    for n in range(5):
        fid = http_fn(worker, receiver.url(f"/at-once-{n}"))
        assert "echo" in worker.trigger({"function_id": fid, "payload": {}})
