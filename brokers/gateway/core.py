"""The gateway's protocol core: WebSocket messages and bus frames in, effects out.

No sockets and no event loop here: effects go through an ``Outbox`` (``ws`` to write to a
connection, ``send`` to send a bus frame, ``close`` to drop a connection, ``arm_grace`` to
start the namespace timer). The shell in ``service.py`` implements it; tests use a recorder.

``GatewayCore`` owns the connections' life (open, close, the namespace grace) and reads
each message and frame once, handing it to one of its two halves: the call relay
(``calls.py``: the hot path, and its invariants) and the registrations with their order
fence (``registrations.py``). Their shared state is ``conns.GatewayState``.
"""
from __future__ import annotations

import logging
import uuid

from brokers.gateway.calls import CallRelay
from brokers.gateway.conns import Conn, Outbox
from brokers.gateway.hooks import Hooks
from brokers.gateway.messages import MESSAGES
from brokers.gateway.registrations import Registrations
from brokers.kit import frames, wire
from brokers.kit.decode import DecodeError
from brokers.kit.frames import ROUTER
from brokers.kit.pending import Pending
from brokers.kit.routes import RouteTable
from brokers.kit.telemetry import Recorder

log = logging.getLogger(__name__)

REGISTRATIONS = frozenset({"registerfunction", "unregisterfunction", "registertrigger", "unregistertrigger",
                           "registertriggertype", "unregistertriggertype", "registerservice"})
KEPT = REGISTRATIONS | {"triggerregistrationresult"}
"""Messages whose content the engine stores (so it must be able to encode it again)."""
TELEMETRY_PREFIXES = (b"OTLP", b"MTRC", b"LOGS")
DROPS_LOGGED = 5
DROPS_EVERY = 1000


class GatewayCore(Hooks, CallRelay, Registrations):
    """All connections of one gateway process and its copy of the routes."""

    def __init__(self, node: str, out: Outbox, epoch: str = "", telemetry: Recorder | None = None) -> None:
        self.node = node
        self.telemetry = telemetry if telemetry is not None else Recorder(on=False)
        self.epoch = epoch
        self.out = out
        self.routes = RouteTable()
        self.conns: dict[str, Conn] = {}
        self.local_functions = {}
        self.in_place = {}
        self.up_sent = 0
        """Sequence number of the last UP sent to the router."""
        self.up_acked = 0
        """The highest UP sequence number the router has applied (ACK)."""
        self.claims = {}
        self.synced = False
        """Whether a route table came from the router (the shell listens only then)."""
        self.drops: dict[str, int] = {}
        """Frames dropped per connection (for the log's rate limit)."""
        self.opened = self.gone = 0
        """Worker connections opened and closed since this process started (Prometheus)."""
        self.engine_calls = Pending()
        self.meta_cache = {}
        self.remote_peers = {}

    # ---- connection lifecycle -----------------------------------------------------------

    def open(self, conn_id: str, ip: str | None = None) -> Conn:
        """A worker connected (the shell picked ``conn_id`` and can already write to it)."""
        conn = Conn(conn_id, str(uuid.uuid4()), ip)
        self.conns[conn.id] = conn
        self.opened += 1
        self.out.send(ROUTER, frames.conn_open(conn.id, conn.token, ip))
        self.out.ws(conn.id, wire.dumps({"type": "workerregistered", "worker_id": conn.id,
                                         "reattach_token": conn.token}))
        self.out.arm_grace(conn.id)
        return conn

    def closed(self, conn_id: str) -> None:
        """The socket is gone: stop its calls, tell the router (§4.6)."""
        self.drops.pop(conn_id, None)
        conn = self.conns.pop(conn_id, None)
        if conn is None:
            return
        self.gone += 1
        self._stop_delivered(conn)
        self.routes.apply([["-", conn.ns, key, self.node, conn.id]
                           for kind, key in conn.held if kind == "registerfunction"])
        self.out.send(ROUTER, frames.conn_close(conn.id))

    def grace_expired(self, conn_id: str) -> None:
        conn = self.conns.get(conn_id)
        if conn is not None and conn.ns is None:
            self._fix_namespace(conn, "default")

    # ---- messages from a worker ---------------------------------------------------------

    def _dropped(self, conn_id: str, what: str, detail: str) -> None:
        """Log a dropped frame: the first few of a connection, then every 1000th with a
        count (a flood of garbage must not flood the log)."""
        n = self.drops[conn_id] = self.drops.get(conn_id, 0) + 1
        if n <= DROPS_LOGGED:
            log.warning("dropping %s from %s: %s", what, conn_id, detail)
        elif n % DROPS_EVERY == 0:
            log.warning("dropping %s from %s: %s (%d frames of this connection dropped so far)",
                        what, conn_id, detail, n)

    def on_message(self, conn_id: str, raw: str | bytes) -> None:
        conn = self.conns.get(conn_id)
        if conn is None:
            return
        if isinstance(raw, bytes) and raw[:4] in TELEMETRY_PREFIXES:
            self.telemetry.blob(raw)  # telemetry on the worker socket (§9.3): to observability
            return
        if not raw or raw.isspace():
            return  # empty / whitespace-only frames are ignored (§1.3), silently
        try:
            msg, clean = wire.parse(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            self._dropped(conn_id, "undecodable frame", str(exc)[:200])
            return
        if not isinstance(msg, dict):
            return
        kind = msg.get("type")
        shape = MESSAGES.get(kind) if isinstance(kind, str) else None
        if shape is None:
            return  # an unknown type is ignored (§2)
        try:
            shape.check(msg)
        except DecodeError as exc:
            self._dropped(conn_id, f"malformed {kind} frame", str(exc)[:200])
            return
        if kind in KEPT and len(raw) > 2 * wire.MAX_DEPTH and wire.too_deep(msg):
            # the engine keeps it and encodes it again later (listings, replays)
            self._dropped(conn_id, f"malformed {kind} frame", f"nested deeper than {wire.MAX_DEPTH} levels")
            return
        try:
            if kind == "invokefunction":
                self._invoke(conn, msg)
            elif kind == "invocationresult":
                self._result(conn, msg, raw if clean else wire.dumps(msg))
            elif kind in REGISTRATIONS:
                self._registration(conn, msg, raw if isinstance(raw, bytes) else raw.encode())
            elif kind in ("triggerregistrationresult", "reattach"):
                self._up(conn, wire.dumps(msg))
            elif kind == "ping":
                self.out.ws(conn.id, b'{"type":"pong"}')
        except (KeyError, TypeError, AttributeError) as exc:
            log.warning("dropping malformed %s frame from %s: %r", kind, conn_id, exc)

    # ---- frames from the bus ------------------------------------------------------------

    def on_frame(self, sender: str, header: dict, body: bytes) -> None:
        kind = header["k"]
        if kind == frames.INV:
            self._deliver(header, body)
        elif kind == frames.RES:
            self._relayed(header.get("to"), header["id"], body, header.get("e"))
        elif kind == frames.ROUTES:
            ops = header["ops"]
            self.routes.apply(ops)
            self.synced = True
            if ops and ops[0][0] == "=" and self.claims:
                self.reclaim()
        elif kind == frames.ACK:
            self.up_acked = max(self.up_acked, header["s"])
            if self.claims:
                self.acked_claims()
        elif kind == frames.DOWN:
            conn = self.conns.get(header.get("c"))
            if conn is not None:
                if body.startswith(b'{"type":"registrationrejected"'):
                    self._withdraw_claim(conn, body)
                self.out.ws(conn.id, body)
        elif kind == frames.METAOK:
            self._meta_ok(header)
        elif kind == frames.CLOSE:
            if header.get("c") in self.conns:
                self.out.close(header["c"])
                self.closed(header["c"])
        elif kind == frames.HELLO and sender == ROUTER:
            self.resync()
        elif kind == frames.RESET and header.get("node") != self.node:
            self._reset(header["node"])
        elif kind == frames.PEERS:
            self.remote_peers = header["peers"]
            self.remote_as = header["as"]
