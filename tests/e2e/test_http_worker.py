"""The HTTP worker (iii-http) end to end: a real engine, workers of our SDK, a real HTTP
client (``http.client``) on the worker's own port (workers-b §2)."""
from __future__ import annotations

import http.client
import json
import time
import uuid
from typing import Any, Iterator

import pytest

from tests.harness import Engine, free_port, running_engine
from tests.sdkclient import our_worker
from tests.seedpage import needs_seed_page, seed_worker


class Http:
    """Requests to the engine's HTTP port, on one keep-alive connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def __call__(self, method: str, path: str, body: Any = None, headers: dict | None = None,
                 raw: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        hdrs = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        self.conn.request(method, path, body=data, headers=hdrs)
        r = self.conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()

    def until(self, method: str, path: str, status: int, within: float = 5.0, **kw: Any):
        """Repeat until the answer has ``status`` (a route lands asynchronously)."""
        deadline = time.monotonic() + within
        while True:
            out = self(method, path, **kw)
            if out[0] == status or time.monotonic() > deadline:
                return out
            time.sleep(0.05)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    port = free_port()
    with running_engine(extra_workers_yaml=f"- name: iii-http\n  config: {{host: 127.0.0.1, port: {port}, "
                                           "default_timeout: 1500}\n") as eng:
        eng.http_port = port  # type: ignore[attr-defined]
        yield eng


@pytest.fixture
def worker(engine: Engine) -> Iterator[Any]:
    with our_worker(engine.url, f"http-test-{uuid.uuid4().hex[:6]}") as iii:
        yield iii


@pytest.fixture
def web(engine: Engine) -> Http:
    return Http(engine.http_port)  # type: ignore[attr-defined]


def route(iii: Any, method: str, path: str, handler: Any, **config: Any) -> tuple[str, Any]:
    fid = f"web::{uuid.uuid4().hex[:8]}"
    iii.register_function(fid, handler)
    ref = iii.register_trigger({"type": "http", "function_id": fid,
                                "config": {"api_path": path, "http_method": method, **config}})
    return fid, ref


def test_the_seed_shape_post_json_with_a_header(worker: Any, web: Http) -> None:
    def multiply(req):
        a, b = req["body"]["a"], req["body"]["b"]
        return {"status_code": 200, "body": {"result": a * b}, "headers": {"Content-Type": "application/json"}}
    route(worker, "POST", "/math/multiply", multiply)
    status, hdrs, body = web.until("POST", "/math/multiply", 200, body={"a": 2, "b": 3})
    assert (status, json.loads(body), hdrs["content-type"]) == (200, {"result": 6}, "application/json")


def test_request_object_get_with_path_and_query(worker: Any, web: Http) -> None:
    seen: list[dict] = []

    def handler(req):
        seen.append(req)
        return {"status_code": 203, "body": {"id": req["path_params"]["id"]}}
    base = f"/r{uuid.uuid4().hex[:6]}"
    route(worker, "GET", base + "/items/:id", handler)
    status, _, body = web.until("GET", f"{base}/items/a%20b?x=1&x=2&y=hello%20there", 203,
                                headers={"X-Trace": "t1"})
    assert json.loads(body) == {"id": "a%20b"}
    req = seen[-1]
    assert req["path"] == base + "/items/:id" and req["method"] == "GET" and req["body"] is None
    assert req["query_params"] == {"x": "2", "y": "hello there"} and req["headers"]["x-trace"] == "t1"
    assert req["trigger"] == {"type": "http", "path": base + "/items/:id", "method": "GET"}


def test_string_body_with_a_content_type_and_form_bodies_passed_raw(worker: Any, web: Http) -> None:
    route(worker, "GET", "/text", lambda req: {"body": "plain words", "headers": {"Content-Type": "text/plain"}})
    status, hdrs, body = web.until("GET", "/text", 200)
    assert body == b"plain words" and hdrs["content-type"] == "text/plain"
    seen: list[dict] = []
    route(worker, "POST", "/form", lambda req: seen.append(req) or {"body": {"ok": True}})
    status, _, _ = web.until("POST", "/form", 200, raw=b"a=1&b=2",
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200 and seen[-1]["body"] is None  # not JSON: the raw bytes are on request_body


def test_invalid_json_is_a_null_body_not_an_error(worker: Any, web: Http) -> None:
    seen: list[Any] = []
    route(worker, "POST", "/json-bad", lambda req: seen.append(req["body"]) or {"body": 1})
    status, _, _ = web.until("POST", "/json-bad", 200, raw=b"{not json",
                             headers={"Content-Type": "application/json"})
    assert status == 200 and seen[-1] is None


def test_condition_false_is_422_and_an_error_500(worker: Any, web: Http) -> None:
    cond = f"web::cond-{uuid.uuid4().hex[:6]}"
    worker.register_function(cond, lambda req: req["query_params"].get("ok") == "yes")
    route(worker, "GET", "/guarded", lambda req: {"body": "in"}, condition_function_id=cond)
    assert web.until("GET", "/guarded?ok=yes", 200)[2] == b'"in"'
    status, _, body = web("GET", "/guarded?ok=no")
    assert status == 422 and json.loads(body) == {
        "error": {"code": "CONDITION_NOT_MET", "message": "Request condition not met"}, "skipped": True}


def test_middleware_continue_respond_and_order(worker: Any, web: Http) -> None:
    calls: list[str] = []

    def first(data):
        calls.append("first")
        assert "body" not in data["request"] and data["phase"] == "preHandler"
        return {"action": "continue"}

    def gate(data):
        calls.append("gate")
        if data["request"]["headers"].get("authorization") != "Bearer ok":
            return {"action": "respond", "response": {"status_code": 401, "body": {"error": "no"}}}
        return {"action": "continue"}
    m1, m2 = f"web::mw1-{uuid.uuid4().hex[:6]}", f"web::mw2-{uuid.uuid4().hex[:6]}"
    worker.register_function(m1, first)
    worker.register_function(m2, gate)
    route(worker, "GET", "/secret", lambda req: calls.append("handler") or {"body": "s"},
          middleware_function_ids=[m1, m2])
    status, _, body = web.until("GET", "/secret", 401)
    assert (status, json.loads(body)) == (401, {"error": "no"}) and calls[-2:] == ["first", "gate"]
    calls.clear()
    assert web("GET", "/secret", headers={"Authorization": "Bearer ok"})[0] == 200
    assert calls == ["first", "gate", "handler"]


def test_a_route_conflict_is_refused_and_the_first_route_still_serves(worker: Any, web: Http) -> None:
    route(worker, "GET", "/users/:id", lambda req: {"body": "first"})
    assert web.until("GET", "/users/7", 200)[2] == b'"first"'
    fid = f"web::{uuid.uuid4().hex[:8]}"
    worker.register_function(fid, lambda req: {"body": "second"})
    worker.register_trigger({"type": "http", "function_id": fid,
                             "config": {"api_path": "/users/:userId", "http_method": "GET"}})
    time.sleep(0.3)
    assert web("GET", "/users/7")[2] == b'"first"'


def test_health_is_ours_only_when_bound(worker: Any, web: Http) -> None:
    assert web("GET", "/health")[0] == 404  # the engine owns no path
    _, ref = route(worker, "GET", "/health", lambda req: {"body": {"status": "ok"}})
    assert web.until("GET", "/health", 200)[0] == 200
    ref.unregister()
    status, _, body = web.until("GET", "/health", 404)
    assert status == 404 and json.loads(body) == {"error": {"code": "NOT_FOUND", "message": "Not Found"}}


def test_405_has_allow_and_a_preflight_is_answered(worker: Any, web: Http) -> None:
    route(worker, "PUT", "/only-put", lambda req: {"body": 1})
    status, hdrs, body = web.until("POST", "/only-put", 405)
    assert status == 405 and hdrs["allow"] == "PUT" and body == b""
    status, hdrs, _ = web("OPTIONS", "/only-put", headers={"Origin": "https://app",
                                                            "Access-Control-Request-Method": "PUT"})
    assert status == 200 and hdrs["access-control-allow-origin"] == "*"


def test_a_slow_handler_is_504_and_a_dying_worker_500(engine: Engine, worker: Any, web: Http) -> None:
    route(worker, "GET", "/slow", lambda req: time.sleep(3) or {"body": 1})
    status, _, body = web.until("GET", "/slow", 504)
    assert (status, body) == (504, b"")

    import subprocess
    import sys
    code = ("import os, sys, time, iii\n"
            "w = iii.register_worker(os.environ['III_URL'])\nw.wait_connected(10)\n"
            "w.register_function('web::dies', lambda req: os._exit(1))\n"
            "w.register_trigger({'type': 'http', 'function_id': 'web::dies', "
            "'config': {'api_path': '/dies', 'http_method': 'GET'}})\n"
            "print('ready', flush=True)\ntime.sleep(30)\n")
    p = subprocess.Popen([sys.executable, "-c", code], env={"III_URL": engine.url, "PATH": "/usr/bin:/bin"},
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        status, _, body = web.until("GET", "/dies", 500)
        assert status == 500 and json.loads(body)["error"]["code"] == "invocation_stopped"
    finally:
        p.kill()
        p.wait(5)


def test_a_killed_http_process_comes_back_with_its_routes(engine: Engine, worker: Any) -> None:
    route(worker, "GET", "/survives", lambda req: {"body": "still here"})
    web = Http(engine.http_port)  # type: ignore[attr-defined]
    assert web.until("GET", "/survives", 200)[0] == 200
    old = engine.kill("http")
    engine.wait_running("http", 5, not_pid=old)
    deadline = time.monotonic() + 5
    while True:
        try:
            out = Http(engine.http_port)("GET", "/survives")  # type: ignore[attr-defined]
            if out[0] == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "routes did not come back"
        time.sleep(0.05)
    assert out[2] == b'"still here"'


@needs_seed_page
def test_the_seed_page_http_trigger_py_runs_verbatim(engine: Engine, web: Http) -> None:
    worker = seed_worker("http_trigger.py", engine.url)
    try:
        status, hdrs, body = web.until("POST", "/math/multiply", 200, body={"a": 2, "b": 3})
        assert (status, json.loads(body), hdrs["content-type"]) == (200, {"result": 6}, "application/json")
    finally:
        worker.stop()
