"""The router's side (brokers/router/core.py): an ``invocation`` registration is routed to
the http_functions process and handed to it, replaced, dropped with its owner, re-sent when
that process restarts; without the process it is refused with an ``error`` frame."""
from __future__ import annotations

from typing import Any

import orjson

from brokers.router.core import Registry

A, B = ("gw1", "A"), ("gw1", "B")
INV = {"url": "https://hooks.example/notify", "method": "POST",
       "auth": {"type": "bearer", "token_key": "PROVIDER_API_TOKEN"}}


class Rec(Registry):
    def __init__(self, http_node: str | None = "http_functions") -> None:
        self.sent: list[tuple[str, dict, Any]] = []
        peers = ["router", "gw1"] + ([http_node] if http_node else [])
        super().__init__("router", peers, lambda n, h, b=b"": self.sent.append((n, dict(h), orjson.loads(b) if b else None)),
                         lambda binding, payload: None, http_node=http_node)
        for owner in (A, B):
            self.connect(owner, "t", None, 0)
        self.sent.clear()

    def take(self, kind: str | None = None, node: str | None = None) -> list[tuple[str, dict, Any]]:
        out = [s for s in self.sent if (kind is None or s[1]["k"] == kind) and (node is None or s[0] == node)]
        self.sent.clear()
        return out


def register(reg: Rec, owner, fid: str = "notifications::send", **extra: Any) -> None:
    reg.up(owner, "default", {"type": "registerfunction", "id": fid, "invocation": INV, **extra})


def test_an_invocation_registration_is_routed_to_the_http_process_and_handed_to_it() -> None:
    reg = Rec()
    register(reg, A, description="POST notification")
    sent = reg.take()
    downs = [(n, h, b) for n, h, b in sent if h["k"] == "down"]
    assert downs == [("http_functions", {"k": "down", "c": "A"}, {
        "type": "registerfunction", "id": "notifications::send", "invocation": INV,
        "description": "POST notification", "namespace": "default", "owner_node": "gw1"})]
    routes = {n: h["ops"] for n, h, _ in sent if h["k"] == "routes"}
    assert routes == {"gw1": [["+", "default", "notifications::send", "http_functions", "A"]],
                      "http_functions": [["+", "default", "notifications::send", "http_functions", "A"]]}
    assert reg.snapshot()[-1] == ["+", "default", "notifications::send", "http_functions", "A"]
    assert reg.functions[("default", "notifications::send")].owner == A  # listed as the worker's


def test_the_owner_keeps_the_id_and_loses_it_when_it_disconnects() -> None:
    reg = Rec()
    register(reg, A)
    reg.take()
    register(reg, B)
    [(node, _, body)] = reg.take("down")
    assert (node, body["type"], body["owner_worker_id"]) == ("gw1", "registrationrejected", "A")
    reg.disconnect(A)
    sent = reg.take()
    assert ("http_functions", {"k": "down", "c": "A"}, {"type": "unregisterfunction", "id": "notifications::send"}) in sent
    assert [h["ops"] for n, h, _ in sent if h["k"] == "routes" and n == "gw1"] == [
        [["-", "default", "notifications::send", "http_functions", "A"]]]
    assert ("default", "notifications::send") not in reg.functions


def test_unregister_and_a_switch_to_a_handler_drop_it_from_the_http_process() -> None:
    reg = Rec()
    register(reg, A)
    reg.take()
    reg.up(A, "default", {"type": "registerfunction", "id": "notifications::send"})  # now a handler
    sent = reg.take()
    assert sent[0] == ("http_functions", {"k": "down", "c": "A"},
                       {"type": "unregisterfunction", "id": "notifications::send"})
    assert [h["ops"] for n, h, _ in sent if n == "gw1" and h["k"] == "routes"] == [
        [["+", "default", "notifications::send", "gw1", "A"]]]
    register(reg, A)
    reg.take()
    reg.up(A, "default", {"type": "unregisterfunction", "id": "notifications::send"})
    sent = reg.take()
    assert sent[0][2] == {"type": "unregisterfunction", "id": "notifications::send"}
    assert [h["ops"] for n, h, _ in sent if n == "gw1"] == [[["-", "default", "notifications::send",
                                                               "http_functions", "A"]]]


def test_a_restarted_http_process_gets_every_registration_again() -> None:
    reg = Rec()
    reg.hello("http_functions", "e1", "iii-http-functions", 0)
    register(reg, A)
    register(reg, B, fid="other::fn")
    reg.take()
    reg.hello("http_functions", "e2", "iii-http-functions", 0)
    downs = sorted((h["c"], b["id"]) for n, h, b in reg.take("down", "http_functions"))
    assert downs == [("A", "notifications::send"), ("B", "other::fn")]


def test_without_the_http_process_the_worker_gets_an_error_frame_and_nothing_is_registered() -> None:
    reg = Rec(http_node=None)
    register(reg, A)
    assert reg.take() == [("gw1", {"k": "down", "c": "A"}, {
        "type": "error", "function_id": "notifications::send", "namespace": "default",
        "error": {"code": "module_unavailable", "message": "HTTP functions module not loaded: the "
                  "engine's config does not enable iii-http-functions"}})]
    assert reg.functions == {}
