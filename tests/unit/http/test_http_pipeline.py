"""The request pipeline of workers-b §2.3 over fakes: middleware order and short-circuit,
condition, handler errors, timeouts, the concurrency limit, CORS preflight."""
from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from brokers.http.config import parse
from brokers.http.pipeline import Pipeline
from brokers.http.routes import Route, RouteTable
from brokers.kit.errors import EngineError


class Req:
    def __init__(self, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> None:
        self.method, self.path, self.query = method, path, b"a=1"
        self.raw_headers = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        self.headers = {k.lower(): v for k, v in self.raw_headers}
        self._body = body

    async def read(self) -> bytes:
        return self._body

    async def chunks(self):
        yield self._body


class Out:
    def __init__(self) -> None:
        self.started, self.reply = False, None

    def send(self, reply) -> None:
        self.started, self.reply = True, reply


def pipeline(invoke, **cfg: Any) -> tuple[Pipeline, RouteTable]:
    t = RouteTable()
    t.add(Route("t1", "POST", "/orders/:id", "orders::create", "shop", {"m": 1},
                cfg.pop("condition", None), tuple(cfg.pop("route_mw", ()))))
    return Pipeline(t, parse(cfg, "t"), invoke), t


async def run(p: Pipeline, req: Req) -> tuple[int, Any]:
    out = Out()
    await p(req, out)
    return out.reply.status, (orjson.loads(out.reply.body) if out.reply.body else None)


async def test_order_of_steps_and_what_each_sees() -> None:
    seen: list[tuple[str, Any, dict]] = []

    async def invoke(fid, data, *, namespace="default", metadata=None, timeout=None, traceparent=None, baggage=None):
        seen.append((fid, namespace, data))
        if fid == "orders::create":
            assert metadata == {"m": 1}
            return {"status_code": 201, "body": {"ok": data["body"]}}
        return True if fid == "cond" else {"action": "continue"}

    p, _ = pipeline(invoke, middleware=[{"function_id": "mw::b", "priority": 2},
                                        {"function_id": "mw::a", "priority": 1}],
                    condition="cond", route_mw=["mw::route"])
    status, body = await run(p, Req("POST", "/orders/7", b'{"n":1}', {"Content-Type": "application/json"}))
    assert (status, body) == (201, {"ok": {"n": 1}})
    assert [s[0] for s in seen] == ["mw::a", "mw::b", "cond", "mw::route", "orders::create"]
    assert all(ns == "shop" for _, ns, _ in seen)
    assert seen[0][2] == {"phase": "preHandler", "context": {}, "request": {
        "path_params": {"id": "7"}, "query_params": {"a": "1"},
        "headers": {"content-type": "application/json"}, "method": "POST"}}  # no body
    assert seen[2][2]["body"] == {"n": 1} and "response" not in seen[2][2]


async def test_respond_condition_false_and_errors() -> None:
    async def respond(fid, data, **kw):
        return {"action": "respond", "response": {"status_code": 401, "body": {"no": 1}}}
    p, _ = pipeline(respond, middleware=[{"function_id": "mw"}])
    assert await run(p, Req("POST", "/orders/1")) == (401, {"no": 1})

    async def cond_false(fid, data, **kw):
        return False if fid == "cond" else {"status_code": 200}
    p, _ = pipeline(cond_false, condition="cond")
    assert await run(p, Req("POST", "/orders/1")) == (
        422, {"error": {"code": "CONDITION_NOT_MET", "message": "Request condition not met"}, "skipped": True})

    async def fails(fid, data, **kw):
        raise EngineError("invocation_stopped", "Invocation stopped")
    p, _ = pipeline(fails)
    status, body = await run(p, Req("POST", "/orders/1"))
    assert status == 500 and body["error"]["code"] == "invocation_stopped" and "error_id" in body["error"]
    assert await run(p, Req("GET", "/orders/1")) == (405, None)
    assert (await run(p, Req("POST", "/nope")))[0] == 404


async def test_timeouts() -> None:
    async def slow(fid, data, *, timeout=None, **kw):
        await asyncio.sleep(timeout or 1)
        raise asyncio.TimeoutError
    p, _ = pipeline(slow, default_timeout=50, middleware=[{"function_id": "mw"}])
    assert await run(p, Req("POST", "/orders/1")) == (504, {"error": {"code": "MIDDLEWARE_TIMEOUT",
                                                                      "message": "Middleware timeout"}})

    async def hangs(fid, data, *, timeout=None, **kw):  # as Broker.call: a timeout raises
        await asyncio.wait_for(asyncio.sleep(10), timeout)
    p, _ = pipeline(hangs, default_timeout=50)
    assert await run(p, Req("POST", "/orders/1")) == (504, None)  # an empty body


async def test_null_result_without_a_response_channel_is_200_empty_object() -> None:
    async def none(fid, data, **kw):
        return None
    p, _ = pipeline(none)
    assert await run(p, Req("POST", "/orders/1")) == (200, {})


async def test_excess_requests_wait_for_a_slot() -> None:
    running, peak = 0, 0

    async def handler(fid, data, **kw):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return {"body": 1}
    p, _ = pipeline(handler, concurrency_request_limit=2)
    results = await asyncio.gather(*(run(p, Req("POST", "/orders/1")) for _ in range(6)))
    assert peak == 2 and all(r == (200, 1) for r in results)


@pytest.mark.parametrize("cors, origin, allowed", [(None, "https://a", b"*"),
                                                   ({"allowed_origins": ["https://a"]}, "https://a", b"https://a")])
async def test_preflight_is_answered_before_routing(cors, origin, allowed) -> None:
    async def never(*a, **kw):
        raise AssertionError("no function is called for a preflight")
    p, _ = pipeline(never, **({"cors": cors} if cors else {}))
    out = Out()
    await p(Req("OPTIONS", "/anything", headers={"Origin": origin, "Access-Control-Request-Method": "POST"}), out)
    hdrs = dict(out.reply.headers)
    assert out.reply.status == 200 and hdrs[b"access-control-allow-origin"] == allowed
