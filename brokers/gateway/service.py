"""The gateway process: the WebSocket listener and the bus, around ``GatewayCore``.

Several gateway processes serve one port: the supervisor binds it once and each of them
accepts from the inherited socket (``brokers.kit.listen``); each is a node on the bus of
its own. Writes to a worker use the same synchronous path as ``websockets.broadcast``
(frame into the protocol, bytes into the transport) so relaying a call costs no task.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from brokers.gateway.core import GatewayCore
from brokers.kit import listen
from brokers.kit.process import BusFactory, Process, run
from brokers.kit.units import RunContext

log = logging.getLogger(__name__)

ROUTES_WAIT_S = 2.0


class Gateway(Process):
    """Implements the core's Outbox with real sockets (``send``, the bus, is the base's)."""

    def __init__(self, ctx: RunContext, *, bus: BusFactory | None = None) -> None:
        super().__init__(ctx, bus=bus)
        self.cfg = ctx.config
        self.core = GatewayCore(ctx.process, self, self.epoch)
        self.sockets: dict[str, ServerConnection] = {}
        self._dirty: dict[str, ServerConnection] = {}
        self.grace_s = ctx.engine.registration_namespace_grace_ms / 1000  # env already applied
        self.loop: asyncio.AbstractEventLoop | None = None
        self._listener: socket.socket | None = None
        self._server: Any = None

    def on_frame(self, sender: str, header: dict, body: bytes) -> None:
        self.core.on_frame(sender, header, body)

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
            chunks = sock.protocol.data_to_send()
            if all(chunks):
                sock.transport.writelines(chunks)
            else:  # an empty chunk means half-close: let websockets handle it
                for chunk in chunks:
                    if chunk:
                        sock.transport.write(chunk)
                    elif sock.transport.can_write_eof():
                        sock.transport.write_eof()

    def close(self, conn: str) -> None:
        sock = self.sockets.get(conn)
        if sock is not None:
            asyncio.ensure_future(sock.close())

    def arm_grace(self, conn: str) -> None:
        assert self.loop is not None
        self.loop.call_later(self.grace_s, self.core.grace_expired, conn)

    # ---- WebSocket side -------------------------------------------------------------------

    @staticmethod
    def route_request(connection: ServerConnection, request):
        if request.path.startswith("/ws/channels/"):
            return connection.respond(HTTPStatus.NOT_FOUND, "channels are not available yet\n")
        return None

    async def handle(self, sock: ServerConnection) -> None:
        if sock.request.path.split("?", 1)[0].rstrip("/") == "/otel":
            try:
                async for _ in sock:  # telemetry: read and dropped until observability lands
                    pass
            except ConnectionClosed:  # a worker leaving, cleanly or not, is no error
                pass
            return
        conn_id = str(uuid.uuid4())
        peer = sock.remote_address[0] if sock.remote_address else None
        self.sockets[conn_id] = sock
        self.core.open(conn_id, peer)
        on_message = self.core.on_message
        recv = sock.recv
        try:
            while True:  # bytes even for text frames: no UTF-8 decode and re-encode per message
                on_message(conn_id, await recv(decode=False))
        except ConnectionClosed:
            pass
        except Exception as exc:  # a broken socket is a disconnect, nothing more
            log.debug("connection %s ended: %r", conn_id, exc)
        finally:
            self.sockets.pop(conn_id, None)
            self.core.closed(conn_id)

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
        self.hello(fresh=True)
        await self._routes_known()
        self._server = await serve(
            self.handle, sock=self._listener, compression=None,
            max_size=self.cfg["max_message_bytes"], max_queue=64, ping_interval=None,
            open_timeout=self.cfg["handshake_timeout_ms"] / 1000,
            process_request=self.route_request)
        log.info("%s listening on %s:%s", self.name, self.cfg["host"], self.cfg["port"])

    async def stopping(self) -> None:
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()


def main(ctx: RunContext) -> None:
    """Entry point of a gateway process."""
    run(Gateway, ctx)
