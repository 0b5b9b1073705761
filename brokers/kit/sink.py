"""The telemetry path between the engine's processes and the observability process.

Every process has a ``Link``: a ZeroMQ PUSH socket to ``ipc://<runtime_dir>/telemetry.sink``,
which the observability process binds with a PULL socket (``Sink``). Every ``FLUSH_S`` the
link sends what its ``Recorder`` buffered (engine span records, SDK telemetry frames) as one
msgpack message, and every ``STATS_S`` it adds the process's stats (cumulative call counters,
CPU and RSS, its own gauges and counters) — the figures Prometheus and ``/readyz`` show.

A separate socket, not the bus: telemetry must never wait behind calls nor hold memory for
an observability process that is down or slow. The PUSH socket has ``IMMEDIATE`` (nothing
is queued for a peer that is not connected) and a small high-water mark, and is written
NOBLOCK; whatever cannot be sent at once is dropped and counted in ``Recorder.dropped``
(shown as ``iii_telemetry_dropped_total``). The call path never waits for any of it.

Message: ``{"p": process, "u": unit, "pid": pid, "svc": service name, "spans": [record...],
"blobs": [bytes...], "stats": {...} | None}``; stats as in ``Link.stats``.
"""
from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Callable

import msgpack
import psutil
import zmq

from brokers.kit.telemetry import Recorder

log = logging.getLogger(__name__)

FLUSH_S = 0.1
STATS_S = 1.0
SEND_HWM = 32
"""Batches waiting in the PUSH socket (each up to FLUSH_S of one process's telemetry)."""
DRAIN_BATCH = 256

Gauges = Callable[[], dict[str, Any]]
"""A process's own figures: ``{"gauges": {name: [[labels, value]...]}, "counters": {...},
"ready": bool}`` (any key may be left out)."""


def endpoint(runtime_dir: str) -> str:
    return f"ipc://{os.path.join(runtime_dir, 'telemetry.sink')}"


class Link:
    """This process's end of the telemetry path (started on the running loop)."""

    def __init__(self, process: str, unit: str, runtime_dir: str, recorder: Recorder,
                 gauges: Gauges | None = None, service: str = "iii") -> None:
        self.process, self.unit, self.recorder, self.gauges = process, unit, recorder, gauges
        self._endpoint = endpoint(runtime_dir)
        self._service = service
        self._sock: zmq.Socket | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proc = psutil.Process()
        self._stats_at = 0.0
        self._packer = msgpack.Packer(use_bin_type=True)

    def start(self) -> None:
        if not self.recorder.on:
            return
        sock = self._sock = zmq.Context.instance().socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.SNDHWM, SEND_HWM)
        sock.setsockopt(zmq.RECONNECT_IVL, 50)  # ipc: a retry costs nothing; spans wait on it
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 200)
        sock.connect(self._endpoint)
        self._loop = asyncio.get_running_loop()
        self._timer = self._loop.call_later(FLUSH_S, self._tick)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._sock is not None:
            self.flush()
            self._sock.close(0)
            self._sock = None

    def _tick(self) -> None:
        try:
            self.flush()
        finally:
            self._timer = self._loop.call_later(FLUSH_S, self._tick)  # type: ignore[union-attr]

    def stats(self) -> dict[str, Any]:
        """The cumulative figures of this process (contract: brokers/observability)."""
        stats = self.recorder.stats()
        try:
            cpu = self._proc.cpu_times()
            stats["cpu_s"] = cpu.user + cpu.system
            stats["rss"] = self._proc.memory_info().rss
        except psutil.Error:  # pragma: no cover - our own process
            pass
        stats["ready"] = True
        if self.gauges is not None:
            stats.update(self.gauges())
        return stats

    def flush(self) -> None:
        """Send what is buffered (and the stats when due); drop and count what cannot go."""
        if self._sock is None:
            return
        spans, blobs = self.recorder.take()
        now = self._loop.time() if self._loop is not None else 0.0
        stats = None
        if now - self._stats_at >= STATS_S:
            self._stats_at = now
            stats = self.stats()
        if not spans and not blobs and stats is None:
            return
        msg = {"p": self.process, "u": self.unit, "pid": os.getpid(), "svc": self._service,
               "spans": spans, "blobs": blobs, "stats": stats}
        try:
            self._sock.send(self._packer.pack(msg), zmq.NOBLOCK, copy=False)
        except zmq.Again:  # observability down or behind: dropped, counted, never queued
            self.recorder.dropped += len(spans) + len(blobs)
        except (TypeError, ValueError) as exc:  # a record that msgpack refuses: a bug, not a stop
            log.error("telemetry batch of %d spans not sent: %s", len(spans), exc)
            self.recorder.dropped += len(spans) + len(blobs)


class Sink:
    """The observability process's end: reads every process's batches on the loop."""

    def __init__(self, runtime_dir: str, on_batch: Callable[[dict], None]) -> None:
        self._endpoint = endpoint(runtime_dir)
        self._on_batch = on_batch
        self._sock: zmq.Socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tick: asyncio.TimerHandle | None = None
        self._scheduled = False
        self.received = 0
        self.undecodable = 0

    def start(self) -> None:
        sock = self._sock = zmq.Context.instance().socket(zmq.PULL)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 256)
        path = self._endpoint[len("ipc://"):]
        if os.path.exists(path):  # a socket file of our previous life
            os.unlink(path)
        sock.bind(self._endpoint)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.getsockopt(zmq.FD), self._drain)
        self._safety()

    def close(self) -> None:
        if self._sock is None:
            return
        if self._tick is not None:
            self._tick.cancel()
        self._loop.remove_reader(self._sock.getsockopt(zmq.FD))  # type: ignore[union-attr]
        self._sock.close(0)
        self._sock = None

    def _safety(self) -> None:
        self._drain()
        self._tick = self._loop.call_later(0.2, self._safety)  # type: ignore[union-attr]

    def _drain(self) -> None:
        # Edge-triggered FD, as on the bus: read until EAGAIN, in slices.
        self._scheduled = False
        if self._sock is None:
            return
        for _ in range(DRAIN_BATCH):
            try:
                data = self._sock.recv(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return
            try:
                batch = msgpack.unpackb(data, raw=False, strict_map_key=False)
            except (ValueError, msgpack.UnpackException):
                self.undecodable += 1
                continue
            if not isinstance(batch, dict):
                self.undecodable += 1
                continue
            self.received += 1
            try:
                self._on_batch(batch)
            except Exception:
                log.exception("telemetry batch from %r not ingested", batch.get("p"))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._drain)  # type: ignore[union-attr]
