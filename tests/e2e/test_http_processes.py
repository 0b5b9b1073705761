"""The HTTP worker as two processes on one port (``processes: 2``), and its body limit.

Both HTTP processes get every route (the router delivers each binding to both); the test
finds, from the kernel's socket tables, which process accepted each of its connections and
requires answers from both, plain and streamed. ``max_body_bytes`` answers 413 and closes.
"""
from __future__ import annotations

import http.client
import json
import time
import uuid
from typing import Iterator

import psutil
import pytest

from tests.harness import Engine, free_port, running_engine
from tests.sdkclient import our_worker


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    port = free_port()
    with running_engine(extra_workers_yaml=f"- name: iii-http\n  config: {{host: 127.0.0.1, port: {port}, "
                                           "processes: 2, max_body_bytes: 4096}\n") as eng:
        eng.http_port = port  # type: ignore[attr-defined]
        yield eng


def http_pids(eng: Engine) -> list[int]:
    return [p["pid"] for p in eng.status() if p["name"].startswith("http")]


def holder(conn: http.client.HTTPConnection, pids: list[int]) -> int | None:
    port = conn.sock.getsockname()[1]
    for pid in pids:
        if any(c.raddr and c.raddr.port == port for c in psutil.Process(pid).net_connections("tcp")):
            return pid
    return None


def test_both_http_processes_serve_every_route(engine: Engine) -> None:
    pids = http_pids(engine)
    assert len(pids) == 2
    path = f"/both/{uuid.uuid4().hex[:6]}"
    with our_worker(engine.url, "both-http") as iii:
        iii.register_function("both::hello", lambda req: {"status_code": 200, "body": {"hi": req["path_params"]["x"]}})
        iii.register_trigger({"type": "http", "function_id": "both::hello",
                              "config": {"api_path": f"{path}/:x", "http_method": "GET"}})
        served: dict[int, int] = {}
        deadline = time.monotonic() + 20
        while len(served) < 2 and time.monotonic() < deadline:
            conn = http.client.HTTPConnection("127.0.0.1", engine.http_port, timeout=10)  # type: ignore[attr-defined]
            conn.connect()
            pid = holder(conn, pids)
            conn.request("GET", f"{path}/{len(served)}")
            r = conn.getresponse()
            body = r.read()
            if r.status == 200 and pid is not None:
                assert json.loads(body) == {"hi": str(len(served))}
                served[pid] = served.get(pid, 0) + 1
            conn.close()
        assert set(served) == set(pids), served


def test_a_body_over_max_body_bytes_is_413(engine: Engine) -> None:
    path = f"/limit/{uuid.uuid4().hex[:6]}"
    with our_worker(engine.url, "limit-http") as iii:
        iii.register_function("limit::post", lambda req: {"status_code": 200, "body": {"ok": True}})
        iii.register_trigger({"type": "http", "function_id": "limit::post",
                              "config": {"api_path": path, "http_method": "POST"}})
        deadline = time.monotonic() + 10
        while True:
            conn = http.client.HTTPConnection("127.0.0.1", engine.http_port, timeout=10)  # type: ignore[attr-defined]
            conn.request("POST", path, body=b"{}", headers={"content-type": "application/json"})
            r = conn.getresponse()
            r.read()
            if r.status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert r.status == 200
        conn = http.client.HTTPConnection("127.0.0.1", engine.http_port, timeout=10)  # type: ignore[attr-defined]
        conn.request("POST", path, body=b"x" * 5000, headers={"content-type": "application/octet-stream"})
        r = conn.getresponse()
        assert r.status == 413
        assert r.getheader("connection") == "close"
