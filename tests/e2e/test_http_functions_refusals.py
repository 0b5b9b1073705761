"""HTTP-invoked registrations the engine refuses, end to end: the SSRF guard under the spec's
strict defaults (workers-b §3.4), a missing secret, and an engine without iii-http-functions.
Each refusal is logged, answered to the registering worker with an ``error`` frame, and
(except without the module, where nothing is registered) returned to every caller with
the spec's code. Also the seed page's ``state_trigger.py`` verbatim, its webhook a local
receiver of the test (on an engine that allows 127.0.0.1)."""
from __future__ import annotations

import json
import time
import uuid
from typing import Any, Iterator

import pytest

from tests.harness import STATE_WORKER_YAML, Engine, running_engine
from tests.seedpage import needs_seed_page, seed_worker
from tests.wsclient import RawClient

from tests.receiver import LOCAL_SECURITY, Receiver

STRICT = "- name: iii-http-functions\n  config: {}\n"


@pytest.fixture(scope="module")
def strict() -> Iterator[Engine]:
    with running_engine(extra_workers_yaml=STRICT) as eng:
        yield eng


def refusal(client: RawClient, fid: str, url: str, **invocation: Any) -> dict:
    client.register_function(fid, invocation={"url": url, "method": "POST", **invocation})
    frame = client.recv_until(lambda f: f.get("type") == "error" and f.get("function_id") == fid, 10)
    return frame["error"]


@pytest.mark.parametrize("url,message", [
    ("https://169.254.169.254/latest/meta-data/", "Private IP blocked"),
    ("https://10.0.0.1/", "Private IP blocked"),
    ("https://[::1]/", "Private IP blocked"),
    ("https://[::ffff:127.0.0.1]/", "Private IP blocked"),
    ("https://localhost/", "Private IP blocked"),  # a hostname resolving to 127.0.0.1
    ("http://example.com/hook", "HTTPS is required"),
    ("https://nonexistent.invalid/", "DNS lookup failed"),
    ("not a url", "Invalid URL"),
])
def test_ssrf_refusals_under_the_default_security(strict: Engine, url: str, message: str) -> None:
    fid = f"ext::{uuid.uuid4().hex[:8]}"
    with RawClient.declared(strict.url, "ssrf") as client:
        assert refusal(client, fid, url) == {"code": "url_validation_failed", "message": message}
        answer = client.call(fid, {})
        assert answer["error"]["code"] == "url_validation_failed" and answer["error"]["message"] == message
    assert fid in strict.log_tail(10**6)


def test_a_missing_secret_is_refused_by_name(strict: Engine) -> None:
    fid = f"ext::{uuid.uuid4().hex[:8]}"
    with RawClient.declared(strict.url, "nosecret") as client:
        err = refusal(client, fid, "https://8.8.8.8/hook", auth={"type": "hmac", "secret_key": "NO_SUCH_SECRET_VAR"})
        assert err == {"code": "secret_not_found", "message": "Secret not found: NO_SUCH_SECRET_VAR"}
        assert client.call(fid, {})["error"]["code"] == "secret_not_found"


def test_without_the_module_the_worker_is_told_and_nothing_is_registered() -> None:
    with running_engine() as eng, RawClient.declared(eng.url, "nomodule") as client:
        err = refusal(client, "ext::nomodule", "https://example.com/hook")
        assert err["code"] == "module_unavailable" and "HTTP functions module not loaded" in err["message"]
        listed = client.call("engine::functions::list", {})["result"]["functions"]
        assert "ext::nomodule" not in [f["function_id"] for f in listed]
        # never routed to the registering worker either: callers get function_not_found
        assert client.call("ext::nomodule", {})["error"]["code"] == "function_not_found"
        assert "HTTP functions module not loaded" in eng.log_tail()


@needs_seed_page
def test_seed_state_trigger_py_verbatim_posts_the_state_event_to_the_webhook() -> None:
    receiver = Receiver()
    try:
        with running_engine(extra_workers_yaml=LOCAL_SECURITY + STATE_WORKER_YAML,
                            wait_for="state::list_groups") as eng:
            import os
            os.environ["WEBHOOK_URL"] = receiver.url("/orders-webhook")
            try:
                worker = seed_worker("state_trigger.py", eng.url)
            finally:
                os.environ.pop("WEBHOOK_URL", None)
            try:
                with RawClient.declared(eng.url, "seed-state") as client:
                    deadline = time.monotonic() + 10
                    got = None
                    while got is None and time.monotonic() < deadline:
                        client.call("state::set", {"scope": "orders", "key": "status", "value": "shipped"})
                        try:
                            got = receiver.next(timeout=0.5)
                        except Exception:
                            pass
                    assert got is not None, "the webhook never received the state event"
                    event = json.loads(got["body"])
                    assert got["path"] == "/orders-webhook" and got["headers"]["x-iii-function-path"] == "orders::webhook"
                    assert (event["scope"], event["key"], event["new_value"]) == ("orders", "status", "shipped")
            finally:
                worker.stop()
    finally:
        receiver.close()
