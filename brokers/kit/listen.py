"""Listening TCP sockets: bound once by the supervisor, inherited by the processes serving them.

Only the processes of one engine may share a port. ``SO_REUSEPORT`` cannot promise that:
the kernel lets any process of the same user join the port, so a second engine started on
the same config silently took half of the new connections. Instead the supervisor binds
each listening address once (without ``SO_REUSEPORT``), keeps the socket open for its
whole life, and hands the descriptor to every child that serves it (all gateway processes
accept from one queue, as with systemd socket activation). Anyone else binding the port
gets ``EADDRINUSE``, and so do we when someone else holds it: ``PortInUse``, one line.

The hand-over is the environment variable ``III_LISTEN_FDS`` (``host:port=fd,...``); a
process started alone (``iii-supervisor run NAME``) finds no entry and binds by itself.

Invariants: a socket is never bound with ``SO_REUSEPORT``; ``SO_REUSEADDR`` is set (a
restart must not wait for TIME_WAIT); an inherited descriptor is used only for the exact
``host:port`` it was bound to.
"""
from __future__ import annotations

import errno
import os
import socket
from typing import Iterable, Mapping

ENV = "III_LISTEN_FDS"
BACKLOG = 1024


class PortInUse(OSError):
    """The address is held by another program (or another engine)."""


class ListenError(OSError):
    """The address cannot be bound for another reason (bad host, no permission)."""


def key(host: str, port: int) -> str:
    return f"{host}:{port}"


def bind(host: str, port: int) -> socket.socket:
    """A listening, non-blocking TCP socket on ``host:port``; raises ``PortInUse``/``ListenError``."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host in ("", "::"):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(exc.errno, f"port {port} is already in use ({host}:{port})") from None
        raise ListenError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def bind_all(addresses: Iterable[tuple[str, int]]) -> dict[str, socket.socket]:
    """Bind each distinct address once; on any failure close what was bound and raise."""
    out: dict[str, socket.socket] = {}
    try:
        for host, port in addresses:
            if key(host, port) not in out:
                out[key(host, port)] = bind(host, port)
    except OSError:
        for sock in out.values():
            sock.close()
        raise
    return out


def env_value(sockets: Mapping[str, socket.socket]) -> str:
    """The ``III_LISTEN_FDS`` value handing ``sockets`` to a child (their fds are inherited)."""
    return ",".join(f"{k}={s.fileno()}" for k, s in sockets.items())


def listener(host: str, port: int, env: Mapping[str, str] | None = None) -> socket.socket:
    """The socket this process serves ``host:port`` on: inherited from the supervisor, or
    bound here when the process runs alone."""
    env = os.environ if env is None else env
    for item in filter(None, env.get(ENV, "").split(",")):
        name, _, fd = item.rpartition("=")
        if name == key(host, port):
            sock = socket.socket(fileno=int(fd))
            sock.setblocking(False)
            return sock
    return bind(host, port)
