"""The observability process's HTTP endpoint: ``/metrics``, ``/healthz``, ``/readyz``.

Owns: an aiohttp server on a socket that is already bound and listening (the supervisor
binds the port and hands the descriptor over, see ``brokers.kit.listen``; a process
started alone gets it from ``listen.listener``). What is served comes from two callables,
so this shell holds no metric or readiness logic of its own (that is ``prom``).

Invariants:
- ``GET``/``HEAD /metrics``: 200, ``prometheus_client.CONTENT_TYPE_LATEST``, the bytes of
  ``metrics()``; ``/healthz``: 200 ``{"status": "ok"}`` while the process serves at all;
  ``/readyz``: 200 when ``ready()`` says ready, else 503, the readiness dict as JSON;
- any other path is 404, another method on these paths 405 (aiohttp's routing);
- a callable that raises gives a 500 and one logged traceback, never a dead server;
- no access log line per request; ``close`` stops accepting and closes the socket.
"""
from __future__ import annotations

import logging
import socket
from typing import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

_NO_STORE = {"Cache-Control": "no-store"}


class MetricsServer:
    """Serves ``metrics`` and ``ready`` over HTTP on the listening socket ``sock``."""

    def __init__(self, sock: socket.socket, metrics: Callable[[], bytes],
                 ready: Callable[[], tuple[bool, dict]]) -> None:
        self._sock = sock
        self._metrics = metrics
        self._ready = ready
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._handle_metrics)
        app.router.add_get("/healthz", self._handle_healthz)
        app.router.add_get("/readyz", self._handle_readyz)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.SockSite(runner, self._sock).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self._sock.close()

    async def _handle_metrics(self, request: web.Request) -> web.Response:
        try:
            body = self._metrics()
        except Exception:
            log.exception("metrics exposition failed")
            return web.Response(status=500, text="metrics exposition failed\n")
        # CONTENT_TYPE_LATEST carries its own charset parameter: pass it as a header
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST,
                                                **_NO_STORE})

    async def _handle_healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"}, headers=_NO_STORE)

    async def _handle_readyz(self, request: web.Request) -> web.Response:
        try:
            ok, detail = self._ready()
        except Exception:
            log.exception("readiness check failed")
            return web.json_response({"ready": False, "error": "readiness check failed"},
                                     status=503, headers=_NO_STORE)
        return web.json_response(detail, status=200 if ok else 503, headers=_NO_STORE)
