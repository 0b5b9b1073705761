"""The client shell against a real local HTTP server (aiohttp.web on 127.0.0.1): the
request as sent, the pinned address, no redirects, timeouts, refused connections."""
from __future__ import annotations

import asyncio
import socket
from typing import Any, AsyncIterator

import pytest
from aiohttp import web

from brokers.http_functions import core
from brokers.http_functions.client import Client, shown_url
from brokers.http_functions.config import Security
from brokers.kit.errors import EngineError

LOCAL = Security(url_allowlist=("127.0.0.1", "*.test"), require_https=False, block_private_ips=False)


@pytest.fixture
async def server() -> AsyncIterator[Any]:
    seen: list[dict[str, Any]] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append({"method": request.method, "path": request.path_qs, "raw": list(request.raw_headers),
                     "headers": {k.lower(): v for k, v in request.headers.items()}, "body": await request.read()})
        return web.json_response({"got": True})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1)
        return web.Response()

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/echo")

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_route("*", "/slow", slow)
    app.router.add_route("*", "/redirect", redirect)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield type("S", (), {"port": port, "seen": seen})
    await runner.cleanup()


async def client(security: Security = LOCAL, names: dict[str, list[str]] | None = None) -> Client:
    lookups: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        lookups.append(host)
        if host not in (names or {}):
            raise socket.gaierror(-2, "Name or service not known")
        return (names or {})[host]

    c = Client(security, resolve=resolve, clock=lambda: 1700000000.5)
    c.lookups = lookups  # type: ignore[attr-defined]
    await c.start()
    return c


async def test_the_request_reaches_the_validated_address_with_the_names_host_header(server: Any) -> None:
    c = await client(names={"hooks.test": ["127.0.0.1"]})
    try:
        spec = core.parse_invocation({"url": f"http://hooks.test:{server.port}/echo?q=1", "method": "PUT",
                                      "headers": {"X-Service": "iii-worker"}})
        auth = core.resolve_auth(core.AuthRef("hmac", "S"), {"S": "secret"})
        assert await c.call("orders::hook", spec, auth, {"a": 1}) == {"got": True}
        [req] = server.seen
        assert req["method"] == "PUT" and req["path"] == "/echo?q=1" and req["body"] == b'{"a":1}'
        h = req["headers"]
        assert h["host"] == f"hooks.test:{server.port}"
        assert h["x-iii-function-path"] == "orders::hook" and h["x-iii-timestamp"] == "1700000000"
        assert h["x-service"] == "iii-worker" and h["content-type"] == "application/json"
        assert h["x-iii-signature"] == core.sign(b'{"a":1}', "secret", 1700000000)
        names = [k.decode().lower() for k, _ in req["raw"]]
        order = ["content-type", "x-iii-function-path", "x-iii-invocation-id", "x-iii-timestamp",
                 "x-service", "x-iii-signature"]
        assert [n for n in names if n in order] == order
        assert c.lookups == ["hooks.test"]  # type: ignore[attr-defined]  # once, by us
    finally:
        await c.close()


async def test_a_rebinding_name_is_checked_on_every_call(server: Any) -> None:
    names = {"flip.test": ["93.184.216.34"]}
    strict_local = Security(url_allowlist=("*.test",), require_https=False, block_private_ips=True)
    c = await client(strict_local, names)
    try:
        target, ip = await c.check(f"http://flip.test:{server.port}/echo")
        assert str(ip) == "93.184.216.34"
        names["flip.test"] = ["127.0.0.1"]  # the DNS answer changes after the first check
        spec = core.parse_invocation({"url": f"http://flip.test:{server.port}/echo"})
        with pytest.raises(EngineError) as info:
            await c.call("f", spec, None, {})
        assert (info.value.code, info.value.message) == ("url_validation_failed", "Private IP blocked")
        assert server.seen == []
    finally:
        await c.close()


async def test_redirects_are_not_followed(server: Any) -> None:
    c = await client()
    try:
        spec = core.parse_invocation({"url": f"http://127.0.0.1:{server.port}/redirect"})
        assert await c.call("f", spec, None, {}) is None  # 302 with a non-JSON body: success, null
        assert server.seen == []
    finally:
        await c.close()


async def test_timeout_and_refused_connection_are_http_request_failed(server: Any) -> None:
    c = await client()
    try:
        spec = core.parse_invocation({"url": f"http://127.0.0.1:{server.port}/slow", "timeout_ms": 100})
        with pytest.raises(EngineError) as info:
            await c.call("f", spec, None, {})
        assert info.value.code == "http_request_failed" and "timed out" in info.value.message
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead = s.getsockname()[1]
        spec = core.parse_invocation({"url": f"http://127.0.0.1:{dead}/x"})
        with pytest.raises(EngineError) as info:
            await c.call("f", spec, None, {})
        assert info.value.code == "http_request_failed" and "connect" in info.value.message.lower()
        spec = core.parse_invocation({"url": "http://nowhere.test/x"})
        with pytest.raises(EngineError) as info:
            await c.call("f", spec, None, {})
        assert info.value.code == "http_request_failed" and "dns error" in info.value.message
    finally:
        await c.close()


def test_shown_url_cuts_userinfo() -> None:
    assert shown_url("https://u:secret@h.example:8/p?x") == "https://h.example:8/p?x"
    assert shown_url("https://h.example/a@b") == "https://h.example/a@b"
