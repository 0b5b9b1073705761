"""A Registry that records what it sends and fires, and the owners the router tests use.

Peers: ``gw1``, ``gw2`` (gateways) and ``queue`` (a broker). Connection owners are
``(gateway, conn_id)``; a broker owns things as ``(node, None)``. Helpers speak the frames
the router service turns into Registry calls.
"""
from __future__ import annotations

from typing import Any

import orjson

from brokers.router.core import Registry

A = ("gw1", "A")
B = ("gw1", "B")
C = ("gw2", "C")
P = ("gw2", "P")  # a worker that provides trigger types
Q = ("gw1", "Q")  # another provider


class Reg(Registry):
    """A Registry that records what it sends and fires."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict, bytes]] = []
        self.fired: list[tuple[str, Any]] = []
        self.route_ops: list[list] = []
        super().__init__("router", ["router", "gw1", "gw2", "queue"],
                         lambda node, header, body=b"": self.sent.append((node, dict(header), body)),
                         lambda binding, payload: self.fired.append((binding.id, payload)))
        self.on_route_ops = self.route_ops.append
        self.parked: list[str] = []
        """Ids of the bindings handed to ``on_parked``, in order."""
        self.on_parked = lambda binding: self.parked.append(binding.id)

    def take(self) -> list[tuple[str, dict, bytes]]:
        out, self.sent = self.sent, []
        return out

    def down(self, owner: tuple[str, str | None]) -> list[dict]:
        """Messages sent (DOWN) to a connection since the last take (does not clear)."""
        return [orjson.loads(b) for n, h, b in self.sent if h["k"] == "down" and (n, h["c"]) == owner]

    def route_broadcasts(self) -> list[list]:
        """The ops of every ROUTES frame, once per broadcast (checked to reach every peer)."""
        routes = [(n, h["ops"]) for n, h, _ in self.sent if h["k"] == "routes"]
        by_ops: list[list] = []
        for i in range(0, len(routes), 3):
            group = routes[i:i + 3]
            assert sorted(n for n, _ in group) == ["gw1", "gw2", "queue"]
            assert all(ops == group[0][1] for _, ops in group)
            by_ops.append(group[0][1])
        return by_ops

    # the router service's reactions, spelled as frames arrive
    def conn(self, owner, token: str = "tok", ip: str | None = None) -> None:
        self.connect(owner, token, ip, 1000)

    def fn(self, owner, fid: str, ns: str = "default", **extra) -> None:
        self.up(owner, ns, {"type": "registerfunction", "id": fid, **extra})

    def tt(self, owner, tid: str, ns: str = "default", **extra) -> None:
        self.up(owner, ns, {"type": "registertriggertype", "id": tid, "description": tid, **extra})

    def bind(self, owner, bid: str, ttype: str, fid: str = "svc::f", ns: str = "default", **extra) -> None:
        self.up(owner, ns, {"type": "registertrigger", "id": bid, "trigger_type": ttype, "function_id": fid,
                            "config": {"c": 1}, **extra})
