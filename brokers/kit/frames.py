"""Internal frames: what engine processes say to each other over the ZeroMQ bus.

A frame on the wire is the multipart message ``[header, body]`` (the receiving ROUTER
socket prepends the sender's node name). ``header`` is a small msgpack map that routing
reads; ``body`` is opaque bytes, in practice the worker-protocol JSON message exactly as
it will be written to (or was read from) a WebSocket, so a relay never re-encodes it.

Header keys (short on purpose, they are on every call):

    k    kind, one of the constants below
    id   invocation id
    fn   function id
    to   target connection id (worker_id) on the receiving node; None = the node itself
    rn   reply node for a result; None = nobody waits (void)
    rc   reply connection on ``rn``; None = the node itself
    c    connection id a registry message is about
    ns   the connection's namespace
    s    sequence number of a gateway's UP, echoed by the router's ACK
    via  on an INV sent to the router: the node to pass it on to (see ACK)

Kinds and who sends them:

    INV    any -> owner node      deliver ``body`` (an E->W invokefunction) to ``to``
    RES    owner -> reply node    deliver ``body`` (an invocationresult) to ``to``
    UP     node -> router         a registration message of connection ``c`` (body = its JSON)
    CONN   gateway -> router      connection ``c`` opened (``ev``="open") or closed ("close")
    META   gateway -> router      ``engine::workers::register`` data of ``c`` (body = JSON)
    METAOK router -> gateway      lease result for ``c``: ``ok`` bool, fixed ``ns``
    DOWN   router -> node         write ``body`` (a worker-protocol JSON) to connection ``c``
    CLOSE  router -> gateway      close connection ``c`` (after a fatal rejection)
    ROUTES router -> every node   route changes: ``ops`` = [[op, ns, fn, node, conn], ...]
                                  op "+" adds/replaces, "-" removes, "=" (first op) resets
    HELLO  node <-> router        a process (re)started with ``epoch``; the router answers a
                                  node's HELLO with a full ROUTES, a node answers the router's
                                  HELLO by replaying its registrations (router restart).
                                  ``fresh`` marks a node's first HELLO after its start: it
                                  gets its ROUTES even while a restarted router settles
    RESET  router -> every node   node ``node`` restarted: fail calls still waiting on it
    ACK    router -> gateway      every UP numbered up to ``s`` is applied and its route
                                  changes are sent. Until then the gateway sends its calls
                                  to other nodes through the router (INV with ``via``), so
                                  that they arrive after those route changes. An UP with
                                  an empty body only asks for an ACK (after a router restart).
"""
from __future__ import annotations

from typing import Any

import msgpack

INV = "inv"
RES = "res"
UP = "up"
CONN = "conn"
META = "meta"
METAOK = "metaok"
DOWN = "down"
CLOSE = "close"
ROUTES = "routes"
HELLO = "hello"
RESET = "reset"
ACK = "ack"

_packb = msgpack.Packer(use_bin_type=True).pack


def pack(header: dict[str, Any]) -> bytes:
    """Encode a header map."""
    return _packb(header)


def unpack(raw: bytes) -> dict[str, Any]:
    """Decode a header map; raises ValueError on garbage."""
    try:
        out = msgpack.unpackb(raw, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ValueError(f"bad frame header: {exc}") from None
    if not isinstance(out, dict) or "k" not in out:
        raise ValueError("bad frame header: not a map with a kind")
    return out
