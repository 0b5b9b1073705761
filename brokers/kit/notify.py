"""sd_notify: telling systemd (or anything listening on ``$NOTIFY_SOCKET``) how we are.

A unit of ``Type=notify`` (``conf/systemd/iii@.service``) counts as started when its main
process sends ``READY=1``, and ``After=`` orderings wait for that, so a gateway started
after the state process finds it serving. The protocol is one unix datagram of
``KEY=VALUE`` lines to the socket named by ``$NOTIFY_SOCKET``: a path, or ``@name`` for
the abstract namespace (sd_notify(3)). No dependency on libsystemd or python-systemd.

What the engine sends, and when:
- ``READY=1`` once the process serves: right after ``Process.started()`` returns (a
  gateway is listening and accepting then); the supervisor, in single-unit mode, once
  every process is RUNNING;
- ``STOPPING=1`` when a stop is asked (SIGTERM), before the drain begins;
- ``WATCHDOG=1`` every half ``$WATCHDOG_USEC`` while the event loop turns (``Watchdog``),
  if the unit sets ``WatchdogSec=`` and ``$WATCHDOG_PID`` is absent or ours.

Invariants: nothing here raises (a missing or dead socket is a ``False`` return, logged
at debug level once per call at most); without ``$NOTIFY_SOCKET`` every call is a no-op
that returns ``False``; the supervisor's children never talk to its socket
(``child_env`` strips the variables: with ``NotifyAccess=main`` systemd would ignore
them and log a warning per message).
"""
from __future__ import annotations

import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Mapping, MutableMapping

if TYPE_CHECKING:  # asyncio only where a loop runs (not in the supervisor)
    import asyncio

log = logging.getLogger(__name__)

SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"
ENV_VARS = (SOCKET_ENV, WATCHDOG_USEC_ENV, WATCHDOG_PID_ENV)


def _address(value: str) -> str | None:
    """The ``connect`` address of a ``$NOTIFY_SOCKET`` value; None if it is not one we
    can use (empty, or a vsock ``vsock:`` address of a VM manager)."""
    if not value:
        return None
    if value[0] == "@":  # abstract namespace: a leading NUL byte on the wire
        return "\0" + value[1:]
    if value[0] == "/":
        return value
    return None


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (``"READY=1"``, or several ``KEY=VALUE`` lines) to ``$NOTIFY_SOCKET``.

    True if the datagram was sent; False without a socket or on any error (never raises:
    a lost notification must not take the process down)."""
    env = os.environ if env is None else env
    address = _address(env.get(SOCKET_ENV, ""))
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
        return True
    except (OSError, ValueError, UnicodeError) as exc:
        log.debug("sd_notify %r to %s failed: %s", state, env.get(SOCKET_ENV), exc)
        return False


def ready(status: str | None = None) -> bool:
    """``READY=1``: the process serves (``STATUS=`` too, if given)."""
    return notify("READY=1" if status is None else f"READY=1\nSTATUS={status}")


def stopping() -> bool:
    """``STOPPING=1``: a stop was asked; the drain begins."""
    return notify("STOPPING=1")


def watchdog() -> bool:
    """``WATCHDOG=1``: still alive (the event loop still turns)."""
    return notify("WATCHDOG=1")


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between two ``WATCHDOG=1`` (half the unit's ``WatchdogSec``), or None when
    no watchdog is asked of this process: no socket, no or a bad ``$WATCHDOG_USEC``, or a
    ``$WATCHDOG_PID`` that is another process's (sd_watchdog_enabled(3))."""
    env = os.environ if env is None else env
    if _address(env.get(SOCKET_ENV, "")) is None:
        return None
    try:
        usec = int(env.get(WATCHDOG_USEC_ENV, ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get(WATCHDOG_PID_ENV)
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 2e6


class Watchdog:
    """``WATCHDOG=1`` every ``interval`` seconds, if the unit asked for it.

    On an asyncio loop: ``start()`` once serving, ``stop()`` when stopping; the pings ride
    on the loop, so a loop blocked longer than ``WatchdogSec`` gets the process killed and
    restarted by systemd, which is the point. In a poll loop (the supervisor): call
    ``beat(now)`` every pass; it pings when due and returns when it is next due."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.interval = watchdog_interval(env)
        """None: no watchdog asked; every method is then a no-op."""
        self._handle: asyncio.TimerHandle | None = None
        self._next = 0.0

    @property
    def enabled(self) -> bool:
        return self.interval is not None

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> Watchdog:
        """Ping now and every ``interval`` on ``loop`` (the running one by default)."""
        if self.interval is None or self._handle is not None:
            return self
        import asyncio
        try:
            loop = loop or asyncio.get_running_loop()
        except RuntimeError:
            log.debug("watchdog: no running event loop; not started")
            return self
        self._tick(loop)
        return self

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        watchdog()
        assert self.interval is not None
        self._handle = loop.call_later(self.interval, self._tick, loop)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def beat(self, now: float | None = None) -> float | None:
        """Ping if due (monotonic ``now``); the next due time, or None without a watchdog."""
        if self.interval is None:
            return None
        now = time.monotonic() if now is None else now
        if now >= self._next:
            watchdog()
            self._next = now + self.interval
        return self._next


def child_env(env: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """``env`` without the notify variables (in place, and returned): for the processes a
    supervisor spawns, which must not speak for the unit (``NotifyAccess=main``)."""
    for name in ENV_VARS:
        env.pop(name, None)
    return env
