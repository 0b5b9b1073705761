"""The base of every engine process on the bus: node name, epoch, bus, HELLO, stop, loop.

A process is ``Process(ctx, bus=...)``: its node name is ``ctx.process``; its epoch (pid
and start time) tells the router a restart from a replay; its bus is the ZeroMQ ``Bus``,
or whatever ``bus`` builds instead (``localbus.LocalHub.factory`` in tests). ``serve``
runs the life of the process:

    setup()      open stores, declare functions; before the bus reads anything
    bus.start()  bind and read; then ``started()`` (a broker announces itself, a gateway
                 waits for its routes and opens its listener)
    ...          until SIGTERM/SIGINT or ``stop()``
    stopping()   stop taking work (a gateway closes its listener)
    bus.close()  then ``teardown()``: flush and close stores

``run(factory, ctx)`` is the body of every process entry point: uvloop, serve until done.

Process hygiene (``brokers.kit.hygiene``), for every entry point (the supervisor's ``start``
and each ``run``): ``harden()`` once, first thing: umask 077 (whatever the engine creates, ipc sockets
included, is its owner's alone) and the soft ``RLIMIT_NOFILE`` raised to the hard limit
(a gateway holds one descriptor per connection; 1024 stopped it at ~995). Stores make
their directories with ``private_dir`` and their files with ``private_file``: 0700 and
0600 whatever the umask, and a looser one found on disk (a store from before, a copied
tree) is tightened and logged once, at its open.

Invariants: frames reach ``on_frame`` only after ``setup``; nothing is sent to the bus
after ``bus.close``; ``hello`` is the only place a process's HELLO is built.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import Any, Callable, Protocol

from brokers.kit import frames, notify
from brokers.kit.bus import Bus, FrameHandler
from brokers.kit.frames import ROUTER
from brokers.kit.sink import Link
from brokers.kit.telemetry import Recorder
from brokers.kit.units import RunContext

log = logging.getLogger(__name__)


class BusLike(Protocol):
    def start(self) -> None: ...
    def send(self, peer: str, header: dict, body: bytes = b"") -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


BusFactory = Callable[[str, str, FrameHandler], BusLike]
"""``(node name, runtime dir, frame handler) -> bus``: ``Bus`` itself, or a test's stub."""


STOP_MARGIN_S = 5.0
"""How long ``stopping`` may take past the engine's stop timeout, and ``teardown`` at all."""


class Process:
    """One engine process on the bus."""

    worker_name: str | None = None
    """Sent in HELLO by processes that own functions as themselves (brokers)."""

    def __init__(self, ctx: RunContext, *, bus: BusFactory | None = None) -> None:
        self.ctx = ctx
        self.name = ctx.process
        self.epoch = f"{os.getpid()}-{time.time_ns()}"
        self.bus: BusLike = (bus or Bus)(self.name, ctx.runtime_dir, self.on_frame)
        self._stop = asyncio.Event()
        tracing = ctx.engine.shared.get("observability")
        self.telemetry = Recorder(tracing, on=tracing is not None and bus is None)
        """Engine spans and call counters of this process (off without an observability
        process, and on a test's stub bus)."""
        self.link = Link(self.name, ctx.unit.name, ctx.runtime_dir, self.telemetry, self.telemetry_figures,
                         (tracing or {}).get("service_name", "iii"))

    # ---- hooks ----------------------------------------------------------------------

    def on_frame(self, sender: str, header: dict, body: bytes) -> None:
        """One frame from ``sender``; subclasses dispatch on ``header["k"]``."""

    async def setup(self) -> None:
        """Before the bus starts: open stores, declare functions."""

    async def started(self) -> None:
        """After the bus started: say HELLO (default), announce, open listeners."""
        self.hello(fresh=True)

    async def stopping(self) -> None:
        """Asked to stop, bus still open: stop taking work."""

    async def teardown(self) -> None:
        """After the bus closed: flush and close stores."""

    def telemetry_figures(self) -> dict[str, Any]:
        """This process's own gauges and counters for Prometheus (``sink.Gauges``)."""
        return {}

    # ---- life -----------------------------------------------------------------------

    def send(self, node: str, header: dict, body: bytes = b"") -> None:
        """Queue a frame for ``node`` (sent at the end of this loop pass)."""
        self.bus.send(node, header, body)

    def hello(self, fresh: bool = False) -> None:
        """Tell the router who we are; ``fresh``: our first HELLO since this start."""
        self.send(ROUTER, frames.hello(self.epoch, self.worker_name, fresh=fresh))

    async def serve(self) -> None:
        """Run until SIGTERM/SIGINT or ``stop()``."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._stop.set)
            except (RuntimeError, ValueError):  # not the main thread (tests): stop() only
                pass
        await self.setup()
        self.bus.start()
        self.link.start()
        await self.started()
        log.info("%s ready", self.name)
        notify.ready()  # systemd Type=notify: READY=1 only once the process serves
        watchdog = notify.Watchdog().start()
        await self._stop.wait()
        notify.stopping()  # as soon as the stop is seen, before the drain
        watchdog.stop()
        self._second_signal_exits(loop)
        limit = self.ctx.engine.stop_timeout_ms / 1000 + STOP_MARGIN_S
        try:  # a stop that hangs (a store, a peer that never answers) must not keep us alive
            await asyncio.wait_for(self.stopping(), limit)
        except asyncio.TimeoutError:
            log.error("%s: stopping took over %.0f s; closing anyway", self.name, limit)
        self.link.close()
        self.bus.close()
        try:
            await asyncio.wait_for(self.teardown(), STOP_MARGIN_S)
        except asyncio.TimeoutError:
            log.error("%s: teardown took over %.0f s; exiting anyway", self.name, STOP_MARGIN_S)

    def _second_signal_exits(self, loop: asyncio.AbstractEventLoop) -> None:
        """A second SIGTERM/SIGINT skips the drain: the process exits at once (the
        supervisor's second signal means the same)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, os._exit, 1)
            except (RuntimeError, ValueError):
                pass

    def stop(self) -> None:
        """Ask ``serve`` to return."""
        self._stop.set()


def run(factory: Callable[[RunContext], Any], ctx: RunContext) -> None:
    """Entry point body of a process: uvloop when available, serve until signalled."""
    try:
        import uvloop
        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a hard dependency on Linux
        loop_factory = None

    async def main() -> None:
        await factory(ctx).serve()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())

