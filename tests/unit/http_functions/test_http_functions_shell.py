"""The http_functions process on the in-memory bus: registrations from the router, a refused
one answered to its worker and failing every call with its code, calls made over HTTP to a
real local server, unregister."""
from __future__ import annotations

import uuid
from typing import Any

import orjson
from aiohttp import web

from brokers.http_functions.service import HttpFunctions
from brokers.http_functions.unit import UNIT
from brokers.kit import frames, wire
from brokers.kit.localbus import LocalHub, Peer
from tests.localshell import context, running

LOCAL = {"security": {"url_allowlist": ["127.0.0.1"], "require_https": False, "block_private_ips": False}}


def make(environ: dict[str, str]):
    return lambda ctx, bus: HttpFunctions(ctx, bus=bus, environ=environ)


def register(router: Peer, fid: str, invocation: dict, conn: str = "A") -> None:
    router.send("http_functions", frames.down(conn), wire.dumps({
        "type": "registerfunction", "id": fid, "invocation": invocation, "namespace": "default",
        "owner_node": "gw"}))


async def call(gw: Peer, fid: str, data: Any, conn: str = "A") -> dict:
    inv_id = str(uuid.uuid4())
    gw.send("http_functions", frames.inv(inv_id, fid, conn, "gw", "caller"), wire.invoke(inv_id, fid, data))
    _, _, body = await gw.next(frames.RES, where=lambda h: h.get("id") == inv_id)
    return orjson.loads(body)


async def test_refused_registrations_answer_the_worker_and_every_caller() -> None:
    hub = LocalHub()
    router, gw = hub.peer(frames.ROUTER), hub.peer("gw")
    async with running(make({}), context(UNIT, None, peers=("gw",)), hub):
        register(router, "ext::http", {"url": "http://example.com/x"})
        _, header, body = await gw.next(frames.DOWN)
        assert header == {"k": "down", "c": "A"}
        assert orjson.loads(body) == {"type": "error", "function_id": "ext::http", "namespace": "default",
                                      "error": {"code": "url_validation_failed", "message": "HTTPS is required"}}
        out = await call(gw, "ext::http", {})
        assert out["error"] == {"code": "url_validation_failed", "message": "HTTPS is required"}
        register(router, "ext::tok", {"url": "https://8.8.8.8/x", "auth": {"type": "bearer", "token_key": "NOPE"}})
        _, _, body = await gw.next(frames.DOWN)
        assert orjson.loads(body)["error"] == {"code": "token_not_found", "message": "Token not found: NOPE"}
        assert (await call(gw, "ext::tok", {}))["error"]["code"] == "token_not_found"
        assert (await call(gw, "ext::tok", {}, conn="B"))["error"]["code"] == "function_not_found"


async def test_calls_go_over_http_with_the_secret_and_stop_after_unregister() -> None:
    seen: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        seen.append({"auth": request.headers.get("Authorization"), "body": await request.json()})
        return web.json_response({"sent": True})

    app = web.Application()
    app.router.add_post("/notify", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    hub = LocalHub()
    router, gw = hub.peer(frames.ROUTER), hub.peer("gw")
    try:
        async with running(make({"PROVIDER_API_TOKEN": "tok-123"}), context(UNIT, LOCAL, peers=("gw",)), hub):
            register(router, "notifications::send", {
                "url": f"http://127.0.0.1:{port}/notify", "method": "POST", "timeout_ms": 5000,
                "auth": {"type": "bearer", "token_key": "PROVIDER_API_TOKEN"}})
            out = await call(gw, "notifications::send", {"channel": "#alerts"})
            assert out["result"] == {"sent": True}
            assert seen == [{"auth": "Bearer tok-123", "body": {"channel": "#alerts"}}]
            router.send("http_functions", frames.down("A"),
                        wire.dumps({"type": "unregisterfunction", "id": "notifications::send"}))
            assert (await call(gw, "notifications::send", {}))["error"]["code"] == "function_not_found"
            assert not [h for _, h, _ in gw.received if h["k"] == frames.DOWN]  # nothing refused
    finally:
        await runner.cleanup()
