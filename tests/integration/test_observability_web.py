"""The metrics endpoint on a real listening socket, driven by a real HTTP client: /metrics
content type and body, /healthz, /readyz flipping with the readiness callable, 404s, HEAD,
a failing callable, and close releasing the port."""
from __future__ import annotations

import socket
from typing import AsyncIterator

import aiohttp
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from brokers.kit import listen
from brokers.observability.prom import exposition
from brokers.observability.web import MetricsServer

STATS = {"gateway-0": {"process": "gateway-0", "unit": "gateway", "pid": 1, "t": 100.0,
                       "cpu_s": 1.0, "rss": 10, "dropped": 0, "ready": True,
                       "calls": {"math::add": [2, 0, [0] * 15, 0.0]}, "gauges": {},
                       "counters": {}}}


class Rig:
    def __init__(self) -> None:
        self.sock = listen.bind("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.ready_state: tuple[bool, dict] = (False, {"ready": False, "processes": {
            "state": "no stats yet"}})
        self.fail = False
        self.server = MetricsServer(self.sock, self.metrics, self.ready)

    def metrics(self) -> bytes:
        if self.fail:
            raise RuntimeError("boom")
        return exposition(STATS, 100.5)

    def ready(self) -> tuple[bool, dict]:
        if self.fail:
            raise RuntimeError("boom")
        return self.ready_state


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = Rig()
    await r.server.start()
    try:
        yield r
    finally:
        await r.server.close()


async def test_metrics_is_prometheus_text_with_its_content_type(rig: Rig) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(rig.url + "/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == CONTENT_TYPE_LATEST
            text = await resp.text()
        async with http.head(rig.url + "/metrics") as resp:
            assert resp.status == 200 and await resp.read() == b""
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    [sample] = fams["iii_function_calls"].samples
    assert sample.labels == {"function_id": "math::add"} and sample.value == 2


async def test_healthz_and_readyz_flip_with_the_callable(rig: Rig) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(rig.url + "/healthz") as resp:
            assert resp.status == 200 and await resp.json() == {"status": "ok"}
        async with http.get(rig.url + "/readyz") as resp:
            assert resp.status == 503
            assert await resp.json() == {"ready": False, "processes": {"state": "no stats yet"}}
        rig.ready_state = (True, {"ready": True, "processes": {"state": "ok"}})
        async with http.get(rig.url + "/readyz") as resp:
            assert resp.status == 200 and (await resp.json())["ready"] is True
        async with http.head(rig.url + "/readyz") as resp:
            assert resp.status == 200
        rig.ready_state = (False, {"ready": False, "processes": {"state": "pid 7 is not alive"}})
        async with http.get(rig.url + "/readyz") as resp:
            assert resp.status == 503
            assert (await resp.json())["processes"] == {"state": "pid 7 is not alive"}


async def test_other_paths_are_404_and_other_methods_405(rig: Rig) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/", "/metrics/x", "/health", "/readyz/"):
            async with http.get(rig.url + path) as resp:
                assert resp.status == 404, path
        async with http.head(rig.url + "/nope") as resp:
            assert resp.status == 404
        async with http.post(rig.url + "/metrics", data=b"x") as resp:
            assert resp.status == 405


async def test_a_failing_callable_is_a_500_or_503_and_the_server_lives_on(rig: Rig) -> None:
    rig.fail = True
    async with aiohttp.ClientSession() as http:
        async with http.get(rig.url + "/metrics") as resp:
            assert resp.status == 500
        async with http.get(rig.url + "/readyz") as resp:
            assert resp.status == 503 and (await resp.json())["ready"] is False
        rig.fail = False
        async with http.get(rig.url + "/metrics") as resp:
            assert resp.status == 200


async def test_close_stops_serving_and_frees_the_port() -> None:
    r = Rig()
    await r.server.start()
    async with aiohttp.ClientSession() as http:
        async with http.get(r.url + "/healthz") as resp:
            assert resp.status == 200
    await r.server.close()
    await r.server.close()  # idempotent
    again = socket.socket()
    again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        again.bind(("127.0.0.1", r.port))
    finally:
        again.close()
