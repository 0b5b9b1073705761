"""HTTP requests and responses through channels (issue 13, workers-b §2.4-§2.5) on the real
engine: a raw worker handles the route and uses the request's ``request_body`` and
``response`` channel refs over real channel sockets; a real HTTP client (``http.client``)
on the HTTP port. The engine runs two gateway processes, so the worker's channel sockets
reach the HTTP process's channels across processes.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import threading
import time
import uuid
from typing import Iterator

import pytest
from websockets.sync.client import connect

from tests.harness import Engine, free_port, running_engine
from tests import webclient
from tests.wsclient import RawClient

pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager")


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    port = free_port()
    with running_engine(gateway_processes=2,
                        extra_workers_yaml=f"- name: iii-http\n  config: {{host: 127.0.0.1, port: {port}, "
                                           "default_timeout: 3000}\n") as eng:
        eng.http_port = port  # type: ignore[attr-defined]
        yield eng


class Route:
    """A raw worker serving one http route; ``handle(call)`` runs per request in a thread."""

    def __init__(self, eng: Engine, method: str, handle) -> None:
        self.eng = eng
        self.path = f"/stream/{uuid.uuid4().hex[:8]}"
        self.fid = f"web::{uuid.uuid4().hex[:8]}"
        self.worker = RawClient.declared(eng.url, name=f"streamer-{uuid.uuid4().hex[:6]}")
        self.worker.register_function(self.fid)
        self.worker.send({"type": "registertrigger", "id": str(uuid.uuid4()), "trigger_type": "http",
                          "function_id": self.fid, "config": {"api_path": self.path, "http_method": method}})
        self.handle = handle
        self.errors: list[BaseException] = []
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                call = self.worker.next_call(self.fid, timeout=0.5)
            except TimeoutError:
                continue
            except Exception:
                return
            try:
                self.worker.answer(call, self.handle(self, call["data"]))
            except BaseException as exc:  # reported by the test
                self.errors.append(exc)

    def channel(self, ref: dict):
        return connect(f"{self.eng.url.rstrip('/')}/ws/channels/{ref['channel_id']}?key={ref['access_key']}"
                       f"&dir={ref['direction']}", max_size=None)

    def close(self) -> None:
        self._stop = True
        self.thread.join(2)
        self.worker.close()


def request(eng: Engine, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None) -> http.client.HTTPResponse:
    return webclient.request(eng.http_port, method, path, body, headers, timeout=15)  # type: ignore[attr-defined]


def test_every_request_carries_both_channel_refs_and_a_streamed_response(engine: Engine) -> None:
    def handle(route: Route, req: dict) -> None:
        assert req["request_body"]["direction"] == "read" and req["response"]["direction"] == "write"
        with route.channel(req["response"]) as out:
            out.send(json.dumps({"type": "set_status", "status_code": 201}))
            out.send(json.dumps({"type": "set_headers", "headers": {"content-type": "application/octet-stream",
                                                                   "x-stream": "yes", "x-bad": 5}}))
            out.send(b"part one, ")
            out.send("a text frame after the start is not body")
            out.send(b"part two")
        return None

    route = Route(engine, "GET", handle)
    try:
        r = request(engine, "GET", route.path)
        assert r.status == 201
        assert r.getheader("x-stream") == "yes" and r.getheader("x-bad") is None
        assert r.getheader("content-type") == "application/octet-stream"
        assert r.getheader("transfer-encoding") == "chunked"
        assert r.read() == b"part one, part two"
        assert route.errors == []
    finally:
        route.close()


def test_ten_megabytes_up_and_ten_down_through_the_channels(engine: Engine) -> None:
    up = os.urandom(10 * 1024 * 1024)

    def handle(route: Route, req: dict) -> dict:
        with route.channel(req["request_body"]) as body:
            got = bytearray()
            try:
                while True:
                    got += body.recv(timeout=20)
            except Exception:
                pass
        with route.channel(req["response"]) as out:
            for i in range(0, len(got), 64 * 1024):
                out.send(bytes(got[i:i + 64 * 1024]))
        return None

    route = Route(engine, "POST", handle)
    try:
        assert request(engine, "POST", route.path, body=b"x").read() == b"x"  # the route is in place
        r = request(engine, "POST", route.path, body=up, headers={"content-type": "application/octet-stream"})
        down = r.read()
        assert r.status == 200
        assert len(down) == len(up) and hashlib.sha256(down).digest() == hashlib.sha256(up).digest()
    finally:
        route.close()


def test_server_sent_events_reach_the_client_one_by_one(engine: Engine) -> None:
    release = threading.Event()

    def handle(route: Route, req: dict) -> None:
        with route.channel(req["response"]) as out:
            out.send(json.dumps({"type": "set_headers", "headers": {"content-type": "text/event-stream"}}))
            out.send(b"data: first\n\n")
            release.wait(10)  # the client must see the first event before the second is written
            out.send(b"data: second\n\n")
        return None

    route = Route(engine, "GET", handle)
    try:
        r = request(engine, "GET", route.path)
        assert r.getheader("content-type") == "text/event-stream"
        first = r.read1(64) if hasattr(r, "read1") else r.read(15)
        assert first == b"data: first\n\n"
        release.set()
        assert r.read() == b"data: second\n\n"
    finally:
        release.set()
        route.close()


def test_the_first_binary_chunk_decides_before_the_handler_returns(engine: Engine) -> None:
    release = threading.Event()

    def handle(route: Route, req: dict) -> dict:
        out = route.channel(req["response"])
        out.send(b"streamed first")
        out.close()
        release.wait(10)  # the handler is still running when the client has its answer
        return {"status_code": 418, "body": {"ignored": True}}  # too late: the response started

    route = Route(engine, "GET", handle)
    try:
        r = request(engine, "GET", route.path)
        assert (r.status, r.read()) == (200, b"streamed first")
        assert not release.is_set()
    finally:
        release.set()
        route.close()


def test_a_result_first_wins_and_an_unclaimed_response_is_200_empty_without_the_timeout(engine: Engine) -> None:
    def handle(route: Route, req: dict):
        return {"status_code": 202, "body": {"ok": 1}} if req["method"] == "POST" else None

    route = Route(engine, "POST", handle)
    other = Route(engine, "GET", handle)
    try:
        r = request(engine, "POST", route.path, body=b"{}", headers={"content-type": "application/json"})
        assert (r.status, json.loads(r.read())) == (202, {"ok": 1})
        t0 = time.monotonic()
        r = request(engine, "GET", other.path)
        assert (r.status, json.loads(r.read())) == (200, {})
        assert time.monotonic() - t0 < 2.5  # the 1 s claim grace, not the 3 s timeout
    finally:
        route.close()
        other.close()


def test_a_claimed_response_that_never_starts_times_out_with_504(engine: Engine) -> None:
    holder: list = []

    def handle(route: Route, req: dict) -> None:
        holder.append(route.channel(req["response"]))  # claimed, nothing written, not closed
        return None

    route = Route(engine, "GET", handle)
    try:
        r = request(engine, "GET", route.path)
        assert r.status == 504
    finally:
        for ws in holder:
            ws.close()
        route.close()


def test_a_response_socket_that_attaches_just_after_the_null_result_still_streams(engine: Engine) -> None:
    # what the official Node SDK's http() handlers do: the result overtakes the lazy connect
    def late(route: Route, ref: dict) -> None:
        time.sleep(0.3)
        with route.channel(ref) as out:
            out.send(json.dumps({"type": "set_status", "status_code": 207}))
            out.send(b"late but streamed")

    def handle(route: Route, req: dict) -> None:
        threading.Thread(target=late, args=(route, req["response"]), daemon=True).start()
        return None

    route = Route(engine, "GET", handle)
    try:
        r = request(engine, "GET", route.path)
        assert (r.status, r.read()) == (207, b"late but streamed")
    finally:
        route.close()
