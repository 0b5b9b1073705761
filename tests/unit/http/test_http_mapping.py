"""The request object (workers-b §2.4) and the response mapping (§2.5-§2.7)."""
from __future__ import annotations

import orjson

from brokers.http import request as rq
from brokers.http import response as rs
from brokers.http.routes import Route, RouteTable


def test_request_object_exactly() -> None:
    t = RouteTable()
    t.add(Route("t", "POST", "/users/:id", "f"))
    route, seg = t.match("POST", "/users/a%2Fb")
    hdrs = rq.headers([(b"Content-Type", b"application/json"), (b"X-A", b"1"), (b"x-a", b"2"),
                       (b"X-Bin", "caf\u00e9".encode()), (b"X-Ctl", b"a\x01b")])
    assert hdrs == {"content-type": "application/json", "x-a": "2", "x-bin": "", "x-ctl": ""}
    out = rq.build(route, seg, "POST", b"q=x%20y&q=z&e=&f", hdrs, {"k": 1},
                   {"channel_id": "c", "access_key": "k", "direction": "read"},
                   {"channel_id": "c2", "access_key": "k2", "direction": "write"})
    assert out == {
        "query_params": {"q": "z", "e": "", "f": ""}, "path_params": {"id": "a%2Fb"},
        "headers": hdrs, "path": "/users/:id", "method": "POST", "body": {"k": 1},
        "trigger": {"type": "http", "path": "/users/:id", "method": "POST"},
        "request_body": {"channel_id": "c", "access_key": "k", "direction": "read"},
        "response": {"channel_id": "c2", "access_key": "k2", "direction": "write"}}
    assert set(rq.without_channels(out)) == set(out) - {"request_body", "response"}
    assert rq.json_body(b"") is None and rq.json_body(b"{bad") is None and rq.json_body(b"[1]") == [1]
    assert rq.is_json("Application/JSON; charset=utf-8") and not rq.is_json("text/plain")


def test_response_body_rules_in_their_order() -> None:
    def reply(result):
        r = rs.from_result(result)
        return r.status, dict(r.headers), r.body
    ct = b"content-type"
    assert reply({"status_code": 201, "body": {"a": 1}}) == (201, {ct: b"application/json"}, b'{"a":1}')
    assert reply({"headers": {"Content-Type": "text/plain"}, "body": "hi"})[2] == b"hi"
    assert reply({"headers": {"content-type": "text/plain"}, "body": None})[2] == b""
    assert reply({"headers": {"Content-Type": "text/csv"}, "body": [1, 2]})[2] == b"[1,2]"
    assert reply({"body": "hello"})[2] == b'"hello"'
    assert reply({"body": None})[2] == b"null"
    assert reply({})[2] == b"{}" and reply({})[0] == 200
    assert reply({"status_code": 1000})[0] == 200 and reply({"status_code": "201"})[0] == 200
    hdrs = rs.from_result({"headers": ["X-A: 1", "bad", 5, "X-B:  two "]}).headers
    assert (b"X-A", b"1") in hdrs and (b"X-B", b"two") in hdrs and len(hdrs) == 3  # + content-type
    assert rs.headers_of({"bad name": "x", "X-N": 5, "X-Ok": "v\r\nInjected: 1"}) == []


def test_envelopes() -> None:
    e = rs.error(500, "boom", "it broke", with_id=True)
    body = orjson.loads(e.body)
    assert e.status == 500 and body["error"]["code"] == "boom" and len(body["error"]["error_id"]) <= 12
    assert orjson.loads(rs.not_found().body) == {"error": {"code": "NOT_FOUND", "message": "Not Found"}}
    assert orjson.loads(rs.condition_not_met().body) == {
        "error": {"code": "CONDITION_NOT_MET", "message": "Request condition not met"}, "skipped": True}
    assert rs.timeout().status == 504 and rs.timeout().body == b""
    m = rs.method_not_allowed(["GET", "POST"])
    assert (m.status, m.headers, m.body) == (405, [(b"allow", b"GET, POST")], b"")
    mw = rs.from_middleware({"status_code": 401, "body": {"e": 1}, "headers": {"x": "y"}})
    assert mw.status == 401 and mw.body == b'{"e":1}' and (b"x", b"y") in mw.headers
    assert rs.from_middleware({}).body == b"null"
