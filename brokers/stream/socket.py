"""The subscriber WebSocket of ``iii-stream`` (workers-a §3.5, §3.6), around ``Subscriptions``.

Pushes go the way ``websockets.broadcast`` sends: the frame's bytes straight into each
transport, no task and no await per delivery. One write to many subscribers is encoded
once: the wrapper's JSON once, and its frame once too (a server frame is unmasked and we
negotiate no compression, so the bytes on the wire are the same for every connection).

Slow subscribers (better than the reference, whose shared 256-message channel makes every
subscriber miss events past it): each connection's transport buffer is its send queue,
bounded by ``max_send_queue_bytes``. A push that finds more than that waiting closes that
connection alone with **1008 "subscriber too slow"**: the close frame queues behind what
was already queued, so a reader that comes back gets every message before it, then the
close; one that never reads is cut after ``close_timeout_ms``. Nothing is dropped for any
other connection, and what one connection can make this process hold is the bound plus
one message.

Order: per connection, the sync of a join is written before any push that follows it;
pushes keep commit order. Client messages of one connection are handled one at a time.
The sync reads the store on the loop; a batch committed on the writer thread but not yet
settled on the loop is already in it, so its push may follow as well (a create for an item
the sync holds): at least once, never missed.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from brokers.kit import listen
from brokers.stream import core
from brokers.stream.subs import ClientMessage, Subscription, Subscriptions, auth_context, auth_request, parse_client

if TYPE_CHECKING:
    from brokers.stream.service import StreamBroker

log = logging.getLogger(__name__)

SLOW_CODE = 1008
SLOW_REASON = "subscriber too slow"


def text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented text frame (RFC 6455 §5.2) holding ``payload``."""
    n = len(payload)
    if n < 126:
        head = bytes((0x81, n))
    elif n < 65536:
        head = bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x81, 127)) + n.to_bytes(8, "big")
    return head + payload


class Subscriber(ServerConnection):
    """One subscriber connection: its id, its auth context, whether it is being closed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn_id = str(uuid.uuid4())
        self.context: Any = None
        self.closing = False


class SubscriberServer:
    """The listener, the connections and their subscriptions."""

    def __init__(self, broker: StreamBroker, cfg: dict[str, Any]) -> None:
        self.broker = broker
        self.bound = cfg["max_send_queue_bytes"]
        self.close_timeout_s = cfg["close_timeout_ms"] / 1000
        self.auth_function: str | None = cfg["auth_function"]
        self.subs = Subscriptions()
        self.conns: dict[str, Subscriber] = {}
        self._server: Any = None
        self.closed_slow = 0

    async def start(self, sock: Any) -> None:
        self._server = await serve(self.handle, sock=sock, compression=None,
                                   process_request=self._upgrade, create_connection=Subscriber,
                                   max_size=16 * 1024 * 1024, close_timeout=self.close_timeout_s,
                                   backlog=listen.BACKLOG)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()

    # ------------------------------------------------------------ pushes

    def push(self, message: dict[str, Any], raw: bytes | None = None) -> int:
        """Send ``message`` to every matching subscription; returns how many got it.
        ``raw``: its JSON when it came that way (from Redis), sent as it is."""
        targets = self.subs.targets(message["streamName"], message["groupId"], message["id"])
        frame = None
        n = 0
        for conn_id in targets:
            if frame is None:
                frame = text_frame(raw if raw is not None else orjson.dumps(message))
            sock = self.conns.get(conn_id)
            if sock is not None:
                self._write(sock, frame)
                n += 1
        return n

    def send_one(self, sock: Subscriber, message: dict[str, Any]) -> None:
        self._write(sock, text_frame(orjson.dumps(message)))

    def _write(self, sock: Subscriber, frame: bytes) -> None:
        if sock.closing or sock.protocol.state is not State.OPEN:
            return
        transport = sock.transport
        if transport.get_write_buffer_size() > self.bound:  # checked before: one big message
            self._too_slow(sock)                           # (a sync of a large group) passes
            return
        transport.write(frame)

    def _too_slow(self, sock: Subscriber) -> None:
        """Close this one connection: its close frame goes behind what it has not read."""
        sock.closing = True
        self.closed_slow += 1
        queued = sock.transport.get_write_buffer_size()
        log.warning("closing stream subscriber %s (%d %s): %d bytes wait to be sent to it "
                    "(max_send_queue_bytes %d)", sock.conn_id, SLOW_CODE, SLOW_REASON, queued, self.bound)
        sock.protocol.send_close(SLOW_CODE, SLOW_REASON)
        for chunk in sock.protocol.data_to_send():
            if chunk:
                sock.transport.write(chunk)
        asyncio.get_running_loop().call_later(self.close_timeout_s, sock.transport.abort)

    # ------------------------------------------------------------ connections

    async def _upgrade(self, sock: Subscriber, request: Any) -> Any:
        """Only ``/`` is routed; the auth function runs before the upgrade (§3.6)."""
        if request.path.split("?", 1)[0] != "/":
            return sock.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        if self.auth_function:
            addr = sock.remote_address
            where = f"{addr[0]}:{addr[1]}" if addr else ""
            try:
                result = await self.broker.call(self.auth_function,
                                                auth_request(request.headers.raw_items(), request.path, where),
                                                timeout=core.CALL_TIMEOUT_S)
            except Exception as exc:  # accepted without context all the same
                log.warning("stream auth function %s failed: %s", self.auth_function, exc or "timed out")
                result = None
            sock.context = auth_context(result)
        return None

    async def handle(self, sock: Subscriber) -> None:
        conn_id = sock.conn_id
        self.conns[conn_id] = sock
        try:
            async for data in sock:
                msg = parse_client(data)
                if msg is None:
                    continue
                if isinstance(msg, str):
                    log.info("stream subscriber %s: %s (ignored)", conn_id, msg)
                    continue
                if msg.kind == "join":
                    await self._join(sock, msg)
                else:
                    self._leave(sock, msg.sub)
        except ConnectionClosed:
            pass
        except Exception as exc:  # a broken socket is a disconnect
            log.debug("stream subscriber %s ended: %r", conn_id, exc)
        finally:
            del self.conns[conn_id]
            for sub in self.subs.drop(conn_id):
                self.broker.fire_leave(sub, sock.context)

    async def _join(self, sock: Subscriber, msg: ClientMessage) -> None:
        sub = msg.sub
        if not await self.broker.authorize_join(sub, sock.context):
            self.send_one(sock, core.wrapper(sub.stream, sub.group, sub.item, {"type": "unauthorized"},
                                             self.broker.now_ms()))
            return
        delegated, snapshot = self.broker.snapshot_now(sub)
        if delegated:  # a custom provider answers: subscribe, then read
            self.subs.add(sock.conn_id, sub)
            try:
                snapshot = await self.broker.snapshot_custom(sub)
            except Exception as exc:
                log.warning("stream sync of %s/%s failed: %s", sub.stream, sub.group, exc)
                snapshot = None if sub.item is not None else []
        else:  # read, subscribe and sync in one step: no push can fall between them
            self.subs.add(sock.conn_id, sub)
        self.send_one(sock, core.wrapper(sub.stream, sub.group, sub.item, {"type": "sync", "data": snapshot},
                                         self.broker.now_ms()))

    def _leave(self, sock: Subscriber, sub: Subscription) -> None:
        held = self.subs.remove(sock.conn_id, sub.id)
        self.broker.fire_leave(held or sub, sock.context)
