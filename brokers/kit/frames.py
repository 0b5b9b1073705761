"""Internal frames: what engine processes say to each other over the ZeroMQ bus.

A frame is a pair ``(header, body)``; the bus (``brokers.kit.bus``) sends the frames of one
loop pass to one peer as one message of length-prefixed records (the receiving ROUTER
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
    e    on a RES: the error code when the result is a failure (for the caller's span)
    ra   on an INV from another host's gateway: the TCP endpoint of its reply node ``rn``

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
    CHAN   node -> node           a channel ring notice (``op``: "ring" with the segment
                                  ``name`` and the sender's ``pid``, "wake", "room"; see
                                  ``brokers.kit.channels.link``)
    EP     gateway -> cluster     this gateway also receives on TCP ``addr`` (life ``epoch``):
                                  other hosts' gateways call its workers there directly
    PEERS  cluster -> gateway     the other hosts' gateways, ``peers`` = {"<host>/<node>":
                                  addr}, and ``as``: this gateway's name toward them. A
                                  route owned by the cluster node to ``<host>/<node>/<conn>``
                                  whose peer is listed is called there directly
    ACK    router -> gateway      every UP numbered up to ``s`` is applied and its route
                                  changes are sent. Until then the gateway sends its calls
                                  to other nodes through the router (INV with ``via``), so
                                  that they arrive after those route changes. An UP with
                                  an empty body only asks for an ACK (after a router restart).
"""
from __future__ import annotations

from typing import Any

import msgpack

ROUTER = "router"
"""The router's node name on the bus (every other node name comes from the plan)."""
CLUSTER = "cluster"
"""The node of the cluster process (brokers/cluster): owner of the routes to functions that
other engine hosts serve, which yield to any local owner."""

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
CHAN = "chan"
EP = "ep"
PEERS = "peers"

_packb = msgpack.Packer(use_bin_type=True).pack

Header = dict[str, Any]


# ---- one constructor per kind: the only place a header is spelled out -----------------

def inv(inv_id: str, fn: str, to: str | None, rn: str | None, rc: str | None,
        via: str | None = None, ra: str | None = None) -> Header:
    """Deliver an invokefunction to ``to``; the answer goes to (``rn``, ``rc``), none if
    ``rn`` is None; ``via``: sent to the router, which passes it on to that node; ``ra``:
    where ``rn`` listens, when it is on another host."""
    h = {"k": INV, "id": inv_id, "fn": fn, "to": to, "rn": rn, "rc": rc}
    if via is not None:
        h["via"] = via
    if ra is not None:
        h["ra"] = ra
    return h


def res(inv_id: str, to: str | None, error: str | None = None) -> Header:
    """Deliver an invocationresult to connection ``to`` of the receiving node; ``error``:
    its error code, when it is a failure (the caller's gateway closes its span with it)."""
    h = {"k": RES, "id": inv_id, "to": to}
    if error is not None:
        h["e"] = error
    return h


def up(conn: str | None, ns: str, seq: int | None = None) -> Header:
    """A registration message of connection ``conn`` (None: the node itself)."""
    h: Header = {"k": UP, "c": conn, "ns": ns}
    if seq is not None:
        h["s"] = seq
    return h


def conn_open(conn: str, token: str | None, ip: str | None) -> Header:
    return {"k": CONN, "c": conn, "ev": "open", "token": token, "ip": ip}


def conn_close(conn: str) -> Header:
    return {"k": CONN, "c": conn, "ev": "close"}


def meta(conn: str, inv_id: str | None, fixed: str | None) -> Header:
    """``engine::workers::register`` data of ``conn``; ``fixed``: its namespace if already fixed."""
    return {"k": META, "c": conn, "id": inv_id, "fixed": fixed}


def metaok(conn: str, ok: bool, ns: str, inv_id: str | None) -> Header:
    return {"k": METAOK, "c": conn, "ok": ok, "ns": ns, "id": inv_id}


def down(conn: str | None) -> Header:
    """Write the body to connection ``conn`` of the receiving node."""
    return {"k": DOWN, "c": conn}


def close(conn: str) -> Header:
    return {"k": CLOSE, "c": conn}


def routes(ops: list) -> Header:
    return {"k": ROUTES, "ops": ops}


def hello(epoch: str, worker: str | None = None, fresh: bool = False) -> Header:
    """A node's HELLO (``worker``: a broker's worker name; ``fresh``: its first since start)."""
    h: Header = {"k": HELLO, "epoch": epoch}
    if worker is not None:
        h["worker"] = worker
    if fresh:
        h["fresh"] = True
    return h


def endpoint(addr: str, epoch: str) -> Header:
    return {"k": EP, "addr": addr, "epoch": epoch}


def peers(table: dict[str, str], me: str) -> Header:
    return {"k": PEERS, "peers": table, "as": me}


def reset(node: str) -> Header:
    return {"k": RESET, "node": node}


def ack(seq: int) -> Header:
    return {"k": ACK, "s": seq}


def chan(op: str, **fields: Any) -> Header:
    return {"k": CHAN, "op": op, **fields}


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
