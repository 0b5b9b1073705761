"""The HTTP worker with the official Node SDK (issue 13): the seed page's http-trigger.ts
verbatim, and the official SDK tests' shapes (``node/http_node.mjs``) answered over real HTTP
(``http.client``) through an engine with two gateway processes and iii-http: path and query
parameters, custom status, a string body with its Content-Type, raw JSON through
``request_body``, urlencoded and multipart bodies passed raw, 10 MB streamed up and back
down, and server-sent events arriving one by one.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests import webclient
from tests.harness import Engine, WorkerProcess, free_port, running_engine
from tests.seedpage import needs_seed_page, seed_block

pytestmark = pytest.mark.interop

NODE_DIR = Path(__file__).resolve().parent / "node"
SCRIPT = NODE_DIR / "http_node.mjs"
PREFIX = f"/n{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    port = free_port()
    with running_engine(gateway_processes=2,
                        extra_workers_yaml=f"- name: iii-http\n  config: {{host: 127.0.0.1, port: {port}}}\n") as eng:
        eng.http_port = port  # type: ignore[attr-defined]
        w = WorkerProcess(["node", str(SCRIPT), PREFIX], eng.url, cwd=NODE_DIR, stderr_apart=True)
        try:
            w.wait_line("READY", 20)
            yield eng
        finally:
            w.stop()


def call(eng: Engine, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    return webclient.request(eng.http_port, method, path, body, headers)  # type: ignore[attr-defined]


@needs_seed_page
def test_the_script_holds_the_seed_http_trigger_verbatim() -> None:
    assert seed_block("http-trigger.ts") in SCRIPT.read_text()


def test_the_seed_multiply_answers_with_its_header(engine: Engine) -> None:
    r = call(engine, "POST", "/math/multiply", json.dumps({"a": 2, "b": 3}).encode(),
             {"content-type": "application/json"})
    assert (r.status, json.loads(r.read()), r.getheader("content-type")) == (200, {"result": 6}, "application/json")


def test_path_query_custom_status_and_a_string_body_with_its_content_type(engine: Engine) -> None:
    r = call(engine, "GET", f"{PREFIX}/items/abc123?q=hello")
    assert (r.status, json.loads(r.read())) == (200, {"id": "abc123", "q": "hello"})
    r = call(engine, "POST", f"{PREFIX}/created", b'{"x":1}', {"content-type": "application/json"})
    assert (r.status, json.loads(r.read())) == (201, {"got": {"x": 1}})
    r = call(engine, "GET", f"{PREFIX}/text")
    assert (r.status, r.getheader("content-type"), r.read()) == (200, "text/plain", b"plain words")


def test_raw_json_through_request_body_beside_the_parsed_body(engine: Engine) -> None:
    raw = '{"z":2,"a":1}'
    r = call(engine, "POST", f"{PREFIX}/raw", raw.encode(), {"content-type": "application/json"})
    assert r.status == 200
    assert json.loads(r.read()) == {"parsed": {"z": 2, "a": 1}, "raw": raw}


@pytest.mark.parametrize("ctype,body", [
    ("application/x-www-form-urlencoded", b"name=John+Doe&active=true"),
    ("multipart/form-data; boundary=XyZ",
     b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
     b"Content-Type: text/plain\r\n\r\nhello file\r\n--XyZ--\r\n"),
], ids=["urlencoded", "multipart"])
def test_form_bodies_pass_raw_through_request_body(engine: Engine, ctype: str, body: bytes) -> None:
    r = call(engine, "POST", f"{PREFIX}/echo", body, {"content-type": ctype})
    assert (r.status, r.getheader("content-type"), r.read()) == (200, ctype, body)


def test_ten_megabytes_up_and_streamed_back_down(engine: Engine) -> None:
    assert call(engine, "POST", f"{PREFIX}/echo", b"ping").read() == b"ping"
    up = os.urandom(10 * 1024 * 1024)
    r = call(engine, "POST", f"{PREFIX}/echo", up, {"content-type": "application/octet-stream"})
    down = r.read()
    assert r.status == 200 and hashlib.sha256(down).digest() == hashlib.sha256(up).digest()


def test_server_sent_events_arrive_one_by_one(engine: Engine) -> None:
    r = call(engine, "GET", f"{PREFIX}/sse")
    assert r.status == 200 and r.getheader("content-type") == "text/event-stream"
    seen, stamps = [], []
    buf = b""
    while len(seen) < 3:
        chunk = r.read1(4096)
        assert chunk, seen
        buf += chunk
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            seen.append(event)
            stamps.append(time.monotonic())
    assert seen == [f'id: {i}\ndata: {{"n":{i}}}'.encode() for i in (1, 2, 3)]
    assert stamps[2] - stamps[0] > 0.1  # streamed as written (100 ms apart), not buffered to the end
