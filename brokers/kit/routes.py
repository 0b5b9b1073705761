"""The local copy of the route table that every process keeps.

The router owns the registry and publishes changes as ROUTES frames; every process applies
them here, so a call is sent straight to the process owning the target and the router is
not a hop on the call path. A route maps ``(namespace, function_id)`` to
``(node, connection)``: the process that owns the function and, on a gateway, the
WebSocket connection (``None`` when the process itself implements it).
"""
from __future__ import annotations

from typing import Iterable

Route = tuple[str, "str | None"]


class RouteTable:
    """``(namespace, function_id) -> (node, conn)``, updated only by router ops."""

    __slots__ = ("_routes",)

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], Route] = {}

    def get(self, namespace: str, function_id: str) -> Route | None:
        """The owner of a function, or None."""
        return self._routes.get((namespace, function_id))

    def apply(self, ops: Iterable[list]) -> None:
        """Apply router ops: ``["=", ...]`` clears, ``["+", ns, fn, node, conn]`` sets,
        ``["-", ns, fn, node, conn]`` removes the entry if it still points at that owner."""
        routes = self._routes
        for op in ops:
            kind = op[0]
            if kind == "=":
                routes.clear()
            elif kind == "+":
                routes[(op[1], op[2])] = (op[3], op[4])
            elif kind == "-":
                key = (op[1], op[2])
                if routes.get(key) == (op[3], op[4]):
                    del routes[key]

    def items(self) -> Iterable[tuple[tuple[str, str], Route]]:
        """Every ``((namespace, function_id), route)``."""
        return self._routes.items()

    def namespaces_of(self, function_id: str) -> list[str]:
        """Namespaces where ``function_id`` exists (only used to explain a miss)."""
        return sorted(ns for (ns, fid) in self._routes if fid == function_id)

    def owned_by(self, node: str) -> list[tuple[str, str]]:
        """Keys of every route owned by ``node``."""
        return [key for key, (n, _) in self._routes.items() if n == node]

    def __len__(self) -> int:
        return len(self._routes)


def not_found_message(function_id: str, namespace: str, elsewhere: list[str]) -> str:
    """The engine's exact ``function_not_found`` message (protocol.md §5.2)."""
    msg = f"Function {function_id} not found in namespace {namespace}."
    if elsewhere:
        msg += f" It is registered in namespace(s): {', '.join(elsewhere)}."
    return msg
