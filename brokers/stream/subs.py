"""The subscriber socket's pure part (workers-a §3.5, §3.6): client messages, who gets a
push, and the auth function's request.

``Subscriptions`` holds every connection's subscriptions and an index by (stream, group),
so a push looks at the subscriptions of its own group only. ``targets(message)`` gives
each connection that gets the message once per matching subscription (§3.5: a connection
with two matching subscriptions receives it twice), in no promised order across
connections; within one connection pushes keep the order of ``targets`` calls.

Invariants: a subscription id is unique per connection (a re-join replaces it); a closed
connection holds nothing afterwards (``drop`` returns what it held, for the leave triggers).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import orjson


@dataclass(frozen=True)
class Subscription:
    """One ``join``: a group, or one item of it (``item`` set)."""

    id: str
    stream: str
    group: str
    item: str | None = None


class Subscriptions:
    """Every subscription of this process, by connection and by (stream, group)."""

    def __init__(self) -> None:
        self.by_conn: dict[str, dict[str, Subscription]] = {}
        self.by_group: dict[tuple[str, str], dict[tuple[str, str], Subscription]] = {}

    def add(self, conn: str, sub: Subscription) -> Subscription | None:
        """Hold ``sub`` for ``conn``; returns the subscription of the same id it replaced."""
        old = self.remove(conn, sub.id)
        self.by_conn.setdefault(conn, {})[sub.id] = sub
        self.by_group.setdefault((sub.stream, sub.group), {})[(conn, sub.id)] = sub
        return old

    def remove(self, conn: str, sub_id: str) -> Subscription | None:
        subs = self.by_conn.get(conn)
        sub = subs.pop(sub_id, None) if subs else None
        if sub is None:
            return None
        if not subs:
            del self.by_conn[conn]
        group = self.by_group[(sub.stream, sub.group)]
        del group[(conn, sub_id)]
        if not group:
            del self.by_group[(sub.stream, sub.group)]
        return sub

    def drop(self, conn: str) -> list[Subscription]:
        """Forget a closed connection; returns what it still held."""
        held = list(self.by_conn.get(conn, {}).values())
        for sub in held:
            self.remove(conn, sub.id)
        return held

    def targets(self, stream: str, group: str, item: str | None) -> Iterator[str]:
        """The connection of every subscription that gets a message about ``item``:
        a group subscription gets all of its group, an item one only its item's."""
        group_subs = self.by_group.get((stream, group))
        if not group_subs:
            return
        for (conn, _), sub in group_subs.items():
            if sub.item is None or sub.item == item:
                yield conn

    def __len__(self) -> int:
        return sum(len(s) for s in self.by_conn.values())


# ---------------------------------------------------------------- client messages


@dataclass(frozen=True)
class ClientMessage:
    """A decoded ``join`` or ``leave``."""

    kind: str
    sub: Subscription


def parse_client(data: str | bytes) -> ClientMessage | None | str:
    """A client frame: a ``ClientMessage``, None for a blank frame or another type, or a
    string saying why it was not understood (logged and ignored, §3.5)."""
    if isinstance(data, str) and not data.strip() or isinstance(data, bytes) and not data.strip():
        return None
    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return f"undecodable JSON: {exc}"
    if not isinstance(msg, dict) or msg.get("type") not in ("join", "leave"):
        return f"not a join or leave message: {str(msg)[:80]}"
    body = msg.get("data")
    if not isinstance(body, dict):
        return "join/leave without a data object"
    fields = {}
    for key in ("subscriptionId", "streamName", "groupId"):
        value = body.get(key)
        if not isinstance(value, str):
            return f"{msg['type']}: missing or non-string {key}"
        fields[key] = value
    item = body.get("id")
    if item is not None and not isinstance(item, str):
        return f"{msg['type']}: id is not a string"
    return ClientMessage(msg["type"], Subscription(fields["subscriptionId"], fields["streamName"],
                                                   fields["groupId"], item))


# ---------------------------------------------------------------- auth (§3.6)


def query_params(query: str) -> dict[str, list[str]]:
    """Raw split on ``&`` and ``=``: no percent-decoding, empty keys skipped."""
    out: dict[str, list[str]] = {}
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key:
            out.setdefault(key, []).append(value)
    return out


def auth_request(headers: Iterator[tuple[str, str]] | Mapping[str, str], path: str,
                 addr: str) -> dict[str, Any]:
    """The auth function's input for one upgrade request (``path`` with its query)."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    only, _, query = path.partition("?")
    return {"headers": {name.lower(): value for name, value in items}, "path": only or "/",
            "query_params": query_params(query), "addr": addr}


def auth_context(result: Any) -> Any:
    """The connection's context from the auth function's answer; anything that is not an
    object gives none (the connection is accepted all the same)."""
    return result.get("context") if isinstance(result, dict) else None
