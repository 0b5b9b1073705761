"""A loopback TCP proxy that can cut the worker side of its connections and nothing else.

Used to make an SDK worker reconnect while the engine still holds its old connection (a
network drop as the engine sees it later, or never): exactly the case ``reattach`` exists for
(spec §4.7). Without this the engine would see a clean close first and ``reattach`` would find
nothing to retire.

Invariants: bytes are relayed unchanged in both directions; ``drop_clients`` closes only the
client-facing sockets and keeps their upstream sockets open (held in ``orphans``) until
``close``; the proxy thread never outlives ``close``.
"""
from __future__ import annotations

import selectors
import socket
import threading


class TcpProxy:
    """``127.0.0.1:<port>`` relaying to ``upstream_port``."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}"
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.orphans: list[socket.socket] = []
        self.accepted = 0
        self._lock = threading.Lock()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.listener, selectors.EVENT_READ)
        self._wake_r, self._wake_w = socket.socketpair()
        self._sel.register(self._wake_r, selectors.EVENT_READ)
        self._running = True
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        peers: dict[socket.socket, socket.socket] = {}
        while self._running:
            for key, _ in self._sel.select(0.2):
                sock = key.fileobj
                if sock is self._wake_r:
                    self._wake_r.recv(64)
                    with self._lock:
                        live = {s for p in self.pairs for s in p}
                    for s in list(peers):
                        if s not in live:
                            self._forget(s, peers)
                    continue
                if sock is self.listener:
                    client, _ = self.listener.accept()
                    up = socket.create_connection(self.upstream)
                    for s in (client, up):
                        s.setblocking(False)
                        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        self._sel.register(s, selectors.EVENT_READ)
                    peers[client], peers[up] = up, client
                    with self._lock:
                        self.pairs.append((client, up))
                        self.accepted += 1
                    continue
                other = peers.get(sock)  # type: ignore[arg-type]
                try:
                    data = sock.recv(65536)  # type: ignore[union-attr]
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data or other is None:
                    self._close_pair(sock, peers)  # type: ignore[arg-type]
                    continue
                try:
                    other.setblocking(True)
                    other.sendall(data)
                    other.setblocking(False)
                except OSError:
                    self._close_pair(sock, peers)  # type: ignore[arg-type]

    def _forget(self, s: socket.socket, peers: dict[socket.socket, socket.socket]) -> None:
        try:
            self._sel.unregister(s)
        except (KeyError, ValueError):
            pass
        peers.pop(s, None)

    def _close_pair(self, s: socket.socket, peers: dict[socket.socket, socket.socket]) -> None:
        other = peers.get(s)
        for x in (s, other):
            if x is not None:
                self._forget(x, peers)
                x.close()
        with self._lock:
            self.pairs = [p for p in self.pairs if s not in p]

    def drop_clients(self) -> int:
        """Close every client-facing socket; keep (and stop relaying) their upstream ones."""
        with self._lock:
            pairs, self.pairs = self.pairs, []
        for client, up in pairs:
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            client.close()
            self.orphans.append(up)
        self._wake_w.send(b"x")
        return len(pairs)

    def close(self) -> None:
        self._running = False
        self._wake_w.send(b"x")
        self._thread.join(2)
        with self._lock:
            pairs, self.pairs = self.pairs, []
        for s in [x for p in pairs for x in p] + self.orphans + [self.listener, self._wake_r,
                                                                 self._wake_w]:
            try:
                s.close()
            except OSError:
                pass
