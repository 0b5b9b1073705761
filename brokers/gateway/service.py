"""The gateway process: the WebSocket listener and the bus, around ``GatewayCore``.

Several gateway processes serve one port: the supervisor binds it once and each of them
accepts from the inherited socket (``brokers.kit.listen``); each is a node on the bus of
its own. Writes to a worker use the same synchronous path as ``websockets.broadcast``
(frame into the protocol, bytes into the transport) so relaying a call costs no task.

What one worker can make the gateway hold is bounded (issue 11; the limits are config.py's):
- calls to a worker with more than ``send_budget_bytes`` waiting to be sent to it are
  refused by the core (calls.py). ``Conn.queued`` is set here, from the transport's buffer,
  at every flush and when the buffer drains to half the budget (the transport's low-water
  mark, ``sockets.WorkerSocket.resume_writing``); no call into the shell on the hot path;
- a worker with more than twice its budget waiting is not read until it drains: it does
  not read its answers, and each call it sends would queue one more. Twice, not once: a
  callee that answers from its read loop must keep being read while calls to it are
  refused, or it and the gateway would wait on each other;
- a worker whose budget stays full for ``send_stall_close_ms`` is closed (1008, a log
  line), and so is one that sends more than ``max_held_bytes`` before its namespace is
  fixed (what the core holds for it then, §4.4);
- WebSocket pings every ``ping_interval_ms`` (§1.4 allows them; every SDK answers): no pong
  within ``ping_timeout_ms`` closes a dead peer (websockets' keepalive). A peer over its
  budget gets no ping until it drains (websockets waits for the buffer first); the stall
  timer closes that one.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import socket
import uuid
from http import HTTPStatus
from typing import Any, Callable

import zmq
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.protocol import State

from brokers.cluster.config import gateway_endpoints
from brokers.gateway import auth, rbac
from brokers.gateway.conns import Conn
from brokers.gateway.core import TELEMETRY_PREFIXES, GatewayCore
from brokers.gateway.sockets import HELD_OVERHEAD, WorkerSocket, drop
from brokers.kit import frames, listen
from brokers.kit.channels import hub as channels, table as channel_table
from brokers.kit.bus import Bus
from brokers.kit.process import BusFactory, Process, run
from brokers.kit.units import RunContext
from brokers.state import inplace
from brokers.state.inplace import InPlace
from brokers.supervisor.units import node_serving

log = logging.getLogger(__name__)

ROUTES_WAIT_S = 2.0
CHANNELS_CREATE = "engine::channels::create"
CHANNEL_WRITE_LIMIT = 256 * 1024
"""Bytes a channel socket's transport buffers before ``send`` waits (four 64 KiB chunks)."""
SUMMARY_EVERY_S = 1.0
"""At most one 'drained: N calls refused' line per worker per this many seconds."""
DRAIN_POLL_S = 0.01
"""How often a draining gateway looks whether its calls in flight are done."""


class Gateway(Process):
    """Implements the core's Outbox with real sockets (``send``, the bus, is the base's)."""

    def __init__(self, ctx: RunContext, *, bus: BusFactory | None = None) -> None:
        super().__init__(ctx, bus=bus)
        self.cfg = ctx.config
        self.core = GatewayCore(ctx.process, self, self.epoch, self.telemetry)
        self.channels = channels.Hub(ctx.process, ctx.peers, ctx.runtime_dir, self.send)
        self.core.local_functions[CHANNELS_CREATE] = self._create_channel
        self.in_place = InPlace.for_engine(ctx.engine.shared, ctx.data_dir, self.send)
        """``state::*`` on the state store in place (None when it is not on LMDB here)."""
        if self.in_place is not None:
            for fid, handler in self.in_place.handlers().items():
                self.core.in_place[fid] = (inplace.OWNER, handler)
        self.core.http_functions_node = node_serving("iii-http-functions", ctx.peers)
        if self.cfg.get("rbac") is not None:
            self.core.rules = rbac.Rules(self.cfg["rbac"])
            self.core.hook_timeout_s = self.core.rules.hook_timeout_s
        self.core.middleware = self.cfg.get("middleware_function_id")
        self.guarded = self.core.rules is not None or self.core.middleware is not None
        """A listener with RBAC: every connection is authenticated and has a session."""
        self.sockets: dict[str, WorkerSocket] = {}
        self._dirty: dict[str, WorkerSocket] = {}
        self.grace_s = ctx.engine.registration_namespace_grace_ms / 1000  # env already applied
        self.budget = self.cfg["send_budget_bytes"]
        self.core.send_budget = self.budget
        self.read_limit = 2 * self.budget
        self.stall_s = self.cfg["send_stall_close_ms"] / 1000
        self.close_timeout_s = self.cfg["close_timeout_ms"] / 1000
        self.max_held = self.cfg["max_held_bytes"]
        self.loop: asyncio.AbstractEventLoop | None = None
        self._listener: socket.socket | None = None
        self._server: Any = None

    def on_frame(self, sender: str, header: dict, body: bytes) -> None:
        kind = header.get("k")
        if kind == frames.CHAN:
            self.channels.on_notice(sender, header)
            return
        if kind == frames.INV and "ra" in header:
            self._learn(header)
        elif kind == frames.PEERS:
            self._peers(header)
        elif kind == frames.RESET:
            node = header.get("node")
            if node == frames.CLUSTER:
                self._announce()  # a new cluster process: it does not know our endpoint yet
            elif isinstance(node, str) and "/" in node:
                self.bus.forget(node)  # another host's gateway whose life ended (cluster core.Lives)
        self.core.on_frame(sender, header, body)

    # ---- calls from and to other hosts' gateways (issue 19) -------------------------------

    def _listen_remote(self) -> None:
        """On a cluster host: also take frames over TCP from the other hosts' gateways, on
        the cluster's interface (brokers/cluster/config.py ``gateway_endpoints``)."""
        if frames.CLUSTER not in self.ctx.peers or not isinstance(self.bus, Bus):
            return
        host, binds = gateway_endpoints(self.ctx.engine.shared.get(frames.CLUSTER))
        for bind in binds:
            try:
                bound = self.bus.bind_tcp(bind)
                break
            except zmq.ZMQError as exc:
                last = exc
        else:
            log.error("%s: no port of %s-%s to take calls from other hosts on (%s); they reach its workers "
                      "through the cluster process", self.name, binds[0], binds[-1].rsplit(":", 1)[1], last)
            return
        self.core.remote_addr = f"tcp://{host}:{bound.rsplit(':', 1)[1]}"
        self._announce()

    def _announce(self) -> None:
        if self.core.remote_addr is not None:
            self.send(frames.CLUSTER, frames.endpoint(self.core.remote_addr, self.epoch))

    def _peers(self, header: dict) -> None:
        """The cluster's table of the other hosts' gateways: dialled (a moved one is
        dialled anew). One that left the table is still answered (its host's cluster
        process may be restarting) until a RESET says its life ended."""
        table = header.get("peers") or {}
        for peer, addr in table.items():
            self.bus.dial(peer, addr)
        self.bus.remote_id = str(header.get("as")).encode()
        if set(table) != set(self.core.remote_peers):
            log.info("%s calls the gateways of other hosts directly: %s", self.name,
                     ", ".join(sorted(table)) or "none")

    def _learn(self, header: dict) -> None:
        """A call from another host's gateway says where its answer goes: a gateway that
        just started may call us before our cluster process has read its host's entry."""
        rn, ra = header.get("rn"), header.get("ra")
        if isinstance(rn, str) and isinstance(ra, str) and "/" in rn and self.bus.remote.get(rn) != ra:
            self.bus.dial(rn, ra)

    def _create_channel(self, data: Any) -> dict:
        return self.channels.create(data.get("buffer_size") if isinstance(data, dict) else None)

    # ---- Outbox --------------------------------------------------------------------------

    def ws(self, conn: str, data: bytes) -> None:
        sock = self.sockets.get(conn)
        if sock is None or sock.protocol.state is not State.OPEN:
            return
        sock.protocol.send_text(data)
        # Frames written in one loop pass leave in one writev per connection, not one
        # syscall each (a third of the gateway's time went to writes under load).
        if not self._dirty:
            self.loop.call_soon(self._flush)
        self._dirty[conn] = sock

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, {}
        for sock in dirty.values():
            # empty when websockets flushed the protocol itself meanwhile (its own send_data:
            # a pong, a close); uvloop refuses even an empty writelines after a half-close
            chunks = sock.protocol.data_to_send()
            if not chunks:
                pass
            elif all(chunks):
                sock.transport.writelines(chunks)
            else:  # an empty chunk means half-close: let websockets handle it
                for chunk in chunks:
                    if chunk:
                        sock.transport.write(chunk)
                    elif sock.transport.can_write_eof():
                        sock.transport.write_eof()
            if sock.conn is not None:  # the truth again, for the core's budget check
                sock.conn.queued = sock.transport.get_write_buffer_size()

    def close(self, conn: str) -> None:
        sock = self.sockets.get(conn)
        if sock is not None:
            asyncio.ensure_future(sock.close())

    def arm_grace(self, conn: str) -> None:
        assert self.loop is not None
        self.loop.call_later(self.grace_s, self.core.grace_expired, conn)

    # ---- the send budget (see the module docstring) ----------------------------------------

    def over_budget(self, sock: WorkerSocket) -> None:
        if sock.stall is None:
            sock.stall = self.loop.call_later(self.stall_s, self._stalled, sock)

    def drained(self, sock: WorkerSocket) -> None:
        if sock.stall is not None:
            sock.stall.cancel()
            sock.stall = None
        conn = sock.conn
        if conn is not None:
            conn.queued = sock.transport.get_write_buffer_size()
            now = self.loop.time()
            if (conn.refused or conn.dropped) and now - sock.summary_at >= SUMMARY_EVERY_S:
                log.info("worker %s drained: %d calls refused and %d void calls dropped while it was "
                         "over its send budget", conn.id, conn.refused, conn.dropped)
                conn.refused = conn.dropped = 0
                sock.summary_at = now
        if sock.reading_paused:
            sock.reading_paused = False
            sock.transport.resume_reading()

    def _stalled(self, sock: WorkerSocket) -> None:
        """Its budget stayed full for ``send_stall_close_ms``: close it. The close frame
        queues behind what it has not read, so the socket is aborted after the close
        timeout whatever the peer does (websockets' close would wait for a drain)."""
        sock.stall = None
        conn = sock.conn
        log.warning("closing worker %s (1008): %d bytes have waited to be sent to it for %.0f s (send budget "
                    "%d); %d calls refused and %d void calls dropped meanwhile",
                    conn.id if conn else "(telemetry socket)", sock.transport.get_write_buffer_size(),
                    self.stall_s, self.budget, conn.refused if conn else 0, conn.dropped if conn else 0)
        asyncio.ensure_future(sock.close(CloseCode.POLICY_VIOLATION, "send budget full for too long"))
        self.loop.call_later(self.close_timeout_s, sock.transport.abort)

    def _read_paused(self, sock: WorkerSocket) -> None:
        """Stop reading ``sock`` while more than twice its budget waits to be sent to it
        (``drained`` reads it again)."""
        if not sock.reading_paused and sock.transport.get_write_buffer_size() > self.read_limit:
            sock.reading_paused = True
            sock.transport.pause_reading()

    # ---- WebSocket side -------------------------------------------------------------------

    async def route_request(self, connection: WorkerSocket, request):
        """Channel sockets (§8.2) are admitted before the upgrade: 404 when unknown."""
        asked = channels.parse_path(request.path)
        if asked is None:
            connection.direct = request.path.split("?", 1)[0].rstrip("/") != "/otel"
            return None
        verdict, end = await self.channels.admit(*asked)
        if verdict == channel_table.NOT_FOUND:
            return connection.respond(HTTPStatus.NOT_FOUND, "Channel not found\n")
        connection.channel = (verdict, end, asked[2])
        return None

    async def handle(self, sock: WorkerSocket) -> None:
        if sock.channel is not None:
            verdict, end, direction = sock.channel
            # what is acked to the channel's home must be near the reader, not in our buffer
            sock.transport.set_write_buffer_limits(high=CHANNEL_WRITE_LIMIT)
            if verdict == channel_table.TAKEN:  # upgraded, then closed (§8.2)
                await sock.close(CloseCode.POLICY_VIOLATION, "channel end already taken")
            else:
                await self.channels.serve(sock, end, direction)
            return
        session = None
        if self.guarded and (session := await auth.authenticate(self.core, sock)) is None:
            return  # refused (AUTH_ERROR) and closed
        if sock.request.path.split("?", 1)[0].rstrip("/") == "/otel":
            blob = self.telemetry.blob
            try:  # telemetry (§9.2): binary frames to observability, text frames dropped
                async for data in sock:
                    if isinstance(data, bytes) and data[:4] in TELEMETRY_PREFIXES:
                        blob(data)
            except ConnectionClosed:  # a worker leaving, cleanly or not, is no error
                pass
            return
        if sock.deliver is drop:
            return  # refused while its auth call ran, or gone
        conn_id = str(uuid.uuid4())
        peer = sock.remote_address[0] if sock.remote_address else None
        self.sockets[conn_id] = sock
        conn = sock.conn = self.core.open(conn_id, peer)
        conn.rbac = session
        sock.deliver = self._deliverer(sock, conn)
        try:
            early, sock.early = sock.early, []
            for data in early:
                sock.deliver(data)  # drop once it was refused
            await sock.wait_closed()
        finally:
            sock.deliver = drop
            self.sockets.pop(conn_id, None)
            if conn.refused or conn.dropped:
                log.info("worker %s gone: %d calls refused and %d void calls dropped while it was over its "
                         "send budget", conn_id, conn.refused, conn.dropped)
            self.core.closed(conn_id)

    def _deliverer(self, sock: WorkerSocket, conn: Conn) -> Callable[[bytes], None]:
        """What ``sock`` calls with each message: the core's ``on_message`` (bytes even for
        text frames: no UTF-8 decode and re-encode), with what this connection sent before
        its namespace was fixed counted against ``max_held_bytes``, and reading paused
        while it is far over its send budget."""
        on_message = self.core.on_message
        conn_id = conn.id
        held = 0

        def deliver(data: bytes) -> None:
            nonlocal held
            try:
                if conn.ns is None:  # the core holds what it sends until its namespace is fixed
                    before = len(conn.buffer)
                    on_message(conn_id, data)
                    if len(conn.buffer) > before:
                        held += len(data) + HELD_OVERHEAD
                        if held > self.max_held:
                            sock.refuse("before the namespace was fixed")
                else:
                    on_message(conn_id, data)
            except Exception:  # the core's bug must not take websockets' read path down
                log.exception("message of worker %s dropped", conn_id)
            if sock.paused:  # over its budget (one attribute test per message otherwise)
                self._read_paused(sock)
        return deliver

    async def _routes_known(self) -> None:
        """Listen only once the routes are known: a worker connecting at once would find
        no ``engine::*`` function. A router that does not answer soon is not waited for."""
        deadline = self.loop.time() + ROUTES_WAIT_S
        while not self.core.synced and self.loop.time() < deadline:
            await asyncio.sleep(0.005)
        if not self.core.synced:
            log.warning("no route table from the router within %.0f s; accepting workers anyway",
                        ROUTES_WAIT_S)

    async def setup(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._listener = listen.listener(self.cfg["host"], self.cfg["port"])  # fail fast

    async def started(self) -> None:
        self.channels.start()
        self.hello(fresh=True)
        self._listen_remote()
        await self._routes_known()
        self._server = await serve(
            self.handle, sock=self._listener, compression=None,
            max_size=self.cfg["max_message_bytes"], max_queue=64,
            ping_interval=self.cfg["ping_interval_ms"] / 1000,
            ping_timeout=self.cfg["ping_timeout_ms"] / 1000,
            close_timeout=self.close_timeout_s, write_limit=(self.budget, self.budget // 2),
            create_connection=functools.partial(WorkerSocket, self),  # type: ignore[arg-type]
            open_timeout=self.cfg["handshake_timeout_ms"] / 1000,
            process_request=self.route_request,
            backlog=listen.BACKLOG)  # asyncio would re-listen the shared socket at 100
        log.info("%s listening on %s:%s", self.name, self.cfg["host"], self.cfg["port"])

    def telemetry_figures(self) -> dict[str, Any]:
        core = self.core
        return {"ready": self._server is not None,
                "gauges": {"worker_connections": [[{}, len(core.conns)]]},
                "counters": {"worker_spawns_total": [[{}, core.opened]], "worker_deaths_total": [[{}, core.gone]]}}

    def in_flight(self) -> int:
        """Calls of this gateway's workers not answered yet: made by one of them (to any
        node), or delivered to one of them by a caller elsewhere who waits; a call between
        two of its own workers counts once."""
        n = 0
        for conn in self.core.conns.values():
            n += len(conn.outgoing)
            n += sum(1 for entry in conn.delivered.values()
                     if entry[0] is not None and entry[0] != self.name)
        return n

    async def stopping(self) -> None:
        """Drain: stop accepting at once (the listener closes: once every holder of the
        port has closed it, a new connection is refused), let the calls in flight finish
        for up to ``engine.stop_timeout_ms`` while the bus and the connections stay open
        (other processes stop after the ingress ones), then close the connections."""
        if self._server is not None:
            self._server.server.close()  # the asyncio server: no more accept()
        if self._listener is not None and self._listener.fileno() != -1:
            self._listener.close()
        if self._server is not None:
            timeout = self.ctx.engine.stop_timeout_ms / 1000
            deadline = self.loop.time() + timeout
            left = self.in_flight()
            if left:
                log.info("%s draining: %d calls in flight (up to %.1f s)", self.name, left, timeout)
            while left and self.loop.time() < deadline:
                await asyncio.sleep(DRAIN_POLL_S)
                left = self.in_flight()
            if left:
                log.warning("%s: %d calls still in flight after %.1f s; closing the connections",
                            self.name, left, timeout)
            if self.in_place is not None:  # writes accepted in place are committed and answered
                await self.in_place.flush()
            self._server.close(close_connections=True)
            await self._server.wait_closed()
        self.channels.close()
        if self.in_place is not None:
            self.in_place.close()


def main(ctx: RunContext) -> None:
    """Entry point of a gateway process."""
    run(Gateway, ctx)
