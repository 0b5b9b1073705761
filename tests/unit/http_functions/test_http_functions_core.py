"""The pure core (workers-b §3.1-§3.3): the invocation block, secrets by variable name,
the request's headers in the reference's order, the HMAC signature, the response table."""
from __future__ import annotations

import base64
import hashlib
import hmac

import orjson
import pytest

from brokers.http_functions import core
from brokers.kit.errors import EngineError


def test_invocation_defaults_and_refusals() -> None:
    spec = core.parse_invocation({"url": "https://x.example/fn"})
    assert (spec.method, spec.timeout_ms, spec.headers, spec.auth, spec.timeout_s) == ("POST", None, (), None, 30.0)
    assert core.parse_invocation({"url": "u", "timeout_ms": 100}).timeout_s == 0.1
    assert core.parse_invocation({"url": "u", "timeout_ms": 120_000}).timeout_s == 60.0  # client-wide cap
    full = core.parse_invocation({"url": "u", "method": "PUT", "headers": {"X-A": "b"},
                                  "auth": {"type": "api_key", "header": "X-Api-Key", "value_key": "K"}})
    assert full.headers == (("X-A", "b"),) and full.auth == core.AuthRef("api_key", "K", "X-Api-Key")
    for bad, words in [({}, "url is required"), ({"url": "u", "method": "post"}, "unknown method"),
                       ({"url": "u", "headers": {"a": 1}}, "headers"), ({"url": "u", "timeout_ms": "5"}, "timeout_ms"),
                       ({"url": "u", "auth": {"type": "basic"}}, "unknown auth type"),
                       ({"url": "u", "auth": {"type": "bearer"}}, "auth.token_key is required"), ("x", "object")]:
        with pytest.raises(EngineError, match=words) as info:
            core.parse_invocation(bad)
        assert info.value.code == "deserialization_error"


def test_secrets_resolve_from_the_environment_by_name_with_the_reference_codes() -> None:
    env = {"TOK": "t0k", "SEC": "s3c", "KEY": "k3y"}
    assert core.resolve_auth(core.AuthRef("bearer", "TOK"), env).secret == "Bearer t0k"
    api = core.resolve_auth(core.AuthRef("api_key", "KEY", "X-Api-Key"), env)
    assert (api.header, api.secret) == ("x-api-key", "k3y")
    assert "s3c" not in repr(core.resolve_auth(core.AuthRef("hmac", "SEC"), env))
    for ref, code, text in [(core.AuthRef("hmac", "NOPE"), "secret_not_found", "Secret not found: NOPE"),
                            (core.AuthRef("bearer", "NOPE"), "token_not_found", "Token not found: NOPE"),
                            (core.AuthRef("api_key", "NOPE", "h"), "api_key_not_found", "API key not found: NOPE")]:
        with pytest.raises(EngineError) as info:
            core.resolve_auth(ref, env)
        assert (info.value.code, info.value.message) == (code, text)


def test_hmac_is_the_spec_algorithm() -> None:
    body, secret, ts = b'{"a":1}', "shh", 1700000000
    msg = f"{ts}:{base64.b64encode(body).decode()}".encode()
    assert core.sign(body, secret, ts) == "sha256=" + hmac.new(b"shh", msg, hashlib.sha256).hexdigest()
    # a fixed vector, so that a change of the algorithm on both sides would still show
    assert core.sign(b"", "k", 0) == "sha256=" + hmac.new(b"k", b"0:", hashlib.sha256).hexdigest()


def test_the_request_headers_in_order_and_the_body_even_for_get() -> None:
    spec = core.parse_invocation({"url": "u", "method": "GET", "headers": {"X-Service": "iii-worker"}})
    auth = core.resolve_auth(core.AuthRef("hmac", "S"), {"S": "secret"})
    req = core.build_request("notifications::send", spec, auth, {"b": 1, "a": [1, 2]}, 1700000000, "inv-1")
    assert req.method == "GET" and req.body == b'{"b":1,"a":[1,2]}'
    assert req.headers == [
        ("content-type", "application/json"), ("x-iii-function-path", "notifications::send"),
        ("x-iii-invocation-id", "inv-1"), ("x-iii-timestamp", "1700000000"), ("x-service", "iii-worker"),
        ("x-iii-signature", core.sign(req.body, "secret", 1700000000))]
    bearer = core.resolve_auth(core.AuthRef("bearer", "T"), {"T": "tok"})
    assert core.build_request("f", spec, bearer, None, 1, "i").headers[-1] == ("authorization", "Bearer tok")
    assert core.build_request("f", spec, None, None, 1, "i").body == b"null"


@pytest.mark.parametrize("status,body,expected", [
    (200, b"", None), (204, b"", None), (200, b'{"ok":true}', {"ok": True}), (201, b"[1]", [1]),
    (302, b"<html>redirecting</html>", None), (301, b'{"moved":1}', {"moved": 1}), (100, b"", None)])
def test_successes(status: int, body: bytes, expected: object) -> None:
    assert core.map_response(status, body) == expected


@pytest.mark.parametrize("status,body,code,message", [
    (200, b"not-json", "invalid_response", "expected value at line 1 column 1"),
    (502, orjson.dumps({"error": {"code": "upstream_failure", "message": "gateway failed"}}),
     "upstream_failure", "gateway failed"),
    (500, b'{"error":{"message":"m"}}', "http_error", "m"),
    (500, b'{"error":{"code":"c"}}', "c", "HTTP request failed"),
    (500, b'{"error":null}', "http_error", "HTTP request failed"),
    (400, b"bad request", "http_error", "HTTP 400 Bad Request"),
    (413, b"", "http_error", "HTTP 413 Payload Too Large"),
    (404, b'{"detail":"x"}', "http_error", "HTTP 404 Not Found"),
    (599, b"", "http_error", "HTTP 599 <unknown status code>")])
def test_failures(status: int, body: bytes, code: str, message: str) -> None:
    with pytest.raises(EngineError) as info:
        core.map_response(status, body)
    assert (info.value.code, info.value.message) == (code, message)
