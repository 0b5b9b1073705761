"""The processes of the peer benchmarks (perf/peers.py): load generators, a gRPC echo server,
a Dramatiq worker and a Celery worker, each its own OS process (multiprocessing, spawn).

Load generators speak the harness's caller protocol (harness._runs): they connect, warm up,
send ``{"status": "ready"}`` (or ``n/a`` / ``error`` with a reason), then measure one window
per ``{"cmd": "go"}`` and answer ``{"status": "ok", **window}``; any other command ends them.
Windows are measured like the engine's (``wire.measure``: ``inflight`` lanes issuing calls
back to back, every call's latency recorded, ``core.summarize_window``).

Queue workers count every processed message in shared values (``counter``, ``last`` = the
monotonic time of the latest), like the engine benchmarks' callee, and keep each message's
enqueue -> processed latency; on ``"stats"`` over their pipe they send and reset those
latencies. Invariant: every message carries the ``time.monotonic()`` taken just before its
enqueue call (CLOCK_MONOTONIC is system-wide on Linux, so it compares across processes).
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Any, Callable

import orjson

from . import core, wire

QUEUE_NAME = "bench"
TASK_NAME = "perf.bench_queue"
GRPC_METHOD = "/perf.Echo/Call"


# -- Redis SET / GET and the gRPC client: asyncio load generators ---------------------------
async def _async_loadgen(conn: Any, spec: dict[str, Any]) -> None:
    kind = spec["kind"]
    if kind in ("redis_set", "redis_get"):
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(spec["url"], max_connections=max(spec["inflight"], 1) * 2)
        if kind == "redis_get":  # reads must hit: write every key first (as state_get)
            for n in range(100):
                await client.set(f"bench:k{n}", orjson.dumps({"n": n}))

        async def one(c: Any, n: int) -> dict[str, Any]:
            try:
                if kind == "redis_set":
                    await c.set(f"bench:k{n % 100}", orjson.dumps({"n": n}))
                elif await c.get(f"bench:k{n % 100}") is None:
                    return {"error": "miss"}
            except Exception as exc:
                return {"error": f"{type(exc).__name__}: {exc}"}
            return {}

        async def close() -> None:
            await client.aclose()
    elif kind == "grpc":
        import grpc

        channel = grpc.aio.insecure_channel(spec["url"])
        await asyncio.wait_for(channel.channel_ready(), 10)
        client = channel.unary_unary(GRPC_METHOD)  # bytes in, bytes out: no serializers

        async def one(c: Any, n: int) -> dict[str, Any]:
            try:
                await c(orjson.dumps({"n": n}), timeout=30)
            except Exception as exc:
                return {"error": f"{type(exc).__name__}: {exc}"}
            return {}

        async def close() -> None:
            await channel.close()
    else:
        raise ValueError(f"unknown load generator kind {kind!r}")

    probe = await one(client, 0)
    if probe.get("error"):
        conn.send({"status": "error", "reason": f"{kind}: {probe['error']}"})
        await close()
        return
    await wire.measure([client], spec["inflight"], spec.get("warmup", 0.2), one)
    conn.send({"status": "ready"})
    loop = asyncio.get_running_loop()
    while True:
        cmd = await loop.run_in_executor(None, conn.recv)
        if cmd.get("cmd") != "go":
            break
        cpu0 = time.process_time()
        out = await wire.measure([client], spec["inflight"], cmd.get("seconds", spec["seconds"]), one)
        out["loadgen_cpu_s"] = round(time.process_time() - cpu0, 4)
        conn.send({"status": "ok", **out})
    await close()


def loadgen_main(conn: Any, spec: dict[str, Any]) -> None:
    try:
        if spec["kind"] == "grpc":  # grpc.aio runs its own poller: plain asyncio, not uvloop
            asyncio.run(_async_loadgen(conn, spec))
        else:
            wire.run_loop(_async_loadgen(conn, spec))
    except Exception as exc:  # reported, never raised across the process boundary
        conn.send({"status": "error", "reason": f"{type(exc).__name__}: {exc}"})


# -- gRPC echo server -----------------------------------------------------------------------
async def _grpc_server(port: int, ready: Any) -> None:
    import grpc

    async def echo(request: bytes, context: Any) -> bytes:
        return request

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "perf.Echo", {"Call": grpc.unary_unary_rpc_method_handler(echo)}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    ready.set()
    await server.wait_for_termination()


def grpc_server_main(port: int, ready: Any) -> None:
    """Serve until terminated: one unary method, the request bytes echoed back."""
    asyncio.run(_grpc_server(port, ready))


# -- queue producers (Dramatiq, Celery): threads, their clients are blocking ----------------
def dramatiq_broker(url: str) -> Any:
    from dramatiq.brokers.redis import RedisBroker
    return RedisBroker(url=url)


def dramatiq_actor(broker: Any, fn: Callable[..., None]) -> Any:
    import dramatiq
    return dramatiq.actor(fn, actor_name="bench_queue", queue_name=QUEUE_NAME, broker=broker,
                          max_retries=1)


def celery_app(url: str, prefetch: int = 1) -> Any:
    from celery import Celery
    app = Celery("perf_peer", broker=url, set_as_current=False)
    app.conf.update(task_acks_late=True, task_ignore_result=True, worker_prefetch_multiplier=prefetch,
                    task_default_queue=QUEUE_NAME, broker_pool_limit=64,
                    broker_connection_retry_on_startup=True, worker_hijack_root_logger=False,
                    worker_send_task_events=False, task_serializer="json", accept_content=["json"])
    return app


def _noop(n: int, t: float) -> None:  # the producer's declaration of the Dramatiq actor
    pass


def _sender(spec: dict[str, Any]) -> Callable[[int], None]:
    if spec["kind"] == "dramatiq":
        actor = dramatiq_actor(dramatiq_broker(spec["url"]), _noop)
        return lambda n: actor.send(n, time.monotonic())
    if spec["kind"] == "celery":
        app = celery_app(spec["url"])
        return lambda n: app.send_task(TASK_NAME, args=(n, time.monotonic()), queue=QUEUE_NAME)
    raise ValueError(f"unknown producer kind {spec['kind']!r}")


def measure_threads(send: Callable[[int], None], inflight: int, seconds: float) -> dict[str, Any]:
    """``wire.measure`` with blocking calls: ``inflight`` threads sending back to back."""
    latencies: list[int] = []
    errors = [0]
    counter = iter(range(1, 1 << 62))
    lock = threading.Lock()
    start = time.perf_counter()
    stop = start + seconds

    def lane() -> None:
        mine: list[int] = []
        while time.perf_counter() < stop:
            with lock:
                n = next(counter)
            t0 = time.perf_counter_ns()
            try:
                send(n)
            except Exception:
                with lock:
                    errors[0] += 1
            mine.append(time.perf_counter_ns() - t0)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=lane, daemon=True) for _ in range(inflight)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    out = core.summarize_window(latencies, elapsed, errors[0])
    out["started_monotonic"] = time.monotonic() - elapsed
    return out


def producer_main(conn: Any, spec: dict[str, Any]) -> None:
    logging.basicConfig(level=logging.ERROR)
    try:
        send = _sender(spec)
        send(0)  # the probe: one message, counted by the worker before the first window
        measure_threads(send, spec["inflight"], spec.get("warmup", 0.2))
        conn.send({"status": "ready"})
        while True:
            cmd = conn.recv()
            if cmd.get("cmd") != "go":
                break
            cpu0 = time.process_time()
            out = measure_threads(send, spec["inflight"], cmd.get("seconds", spec["seconds"]))
            out["loadgen_cpu_s"] = round(time.process_time() - cpu0, 4)
            conn.send({"status": "ok", **out})
    except Exception as exc:
        conn.send({"status": "error", "reason": f"{type(exc).__name__}: {exc}"})


# -- queue workers ---------------------------------------------------------------------------
class _Tally:
    """Processed messages: the shared counter and stamp, and enqueue -> processed latencies."""

    def __init__(self, counter: Any, last: Any) -> None:
        self.counter, self.last = counter, last
        self.lock = threading.Lock()
        self.latencies: list[float] = []

    def record(self, t_enqueued: float) -> None:
        now = time.monotonic()
        with self.lock:
            self.latencies.append(now - t_enqueued)
            self.counter.value += 1
            self.last.value = now

    def serve_stats(self, conn: Any) -> None:
        """Answer ``stats`` (latency percentiles since the last one, then reset) until told
        otherwise or the pipe closes."""
        while True:
            try:
                cmd = conn.recv()
            except (EOFError, OSError):
                return
            if cmd != "stats":
                return
            with self.lock:
                lat, self.latencies = self.latencies, []
            ordered = sorted(lat)
            conn.send({"count": len(ordered), "p50_us": round(core.percentile(ordered, 50) * 1e6, 1),
                       "p99_us": round(core.percentile(ordered, 99) * 1e6, 1)})


def dramatiq_worker_main(url: str, threads: int, counter: Any, last: Any, conn: Any, ready: Any) -> None:
    """One Dramatiq worker process with ``threads`` worker threads on queue ``bench``."""
    logging.basicConfig(level=logging.ERROR)
    from dramatiq import Worker

    tally = _Tally(counter, last)
    broker = dramatiq_broker(url)

    def bench_queue(n: int, t: float) -> None:
        tally.record(t)

    dramatiq_actor(broker, bench_queue)
    worker = Worker(broker, worker_threads=threads)
    worker.start()
    ready.set()
    try:
        tally.serve_stats(conn)
    finally:
        worker.stop(timeout=2000)
        broker.close()


def celery_worker_main(url: str, prefetch: int, counter: Any, last: Any, conn: Any, ready: Any) -> None:
    """One Celery worker process: solo pool (tasks run in this process), ``acks_late``,
    ``worker_prefetch_multiplier=prefetch``, no gossip/mingle/heartbeat."""
    logging.basicConfig(level=logging.ERROR)
    import warnings

    from celery import signals
    from celery.platforms import SecurityWarning

    warnings.filterwarnings("ignore", category=SecurityWarning)  # a root container's worker
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # its banner and "Warm shutdown" off the table

    tally = _Tally(counter, last)
    app = celery_app(url, prefetch)

    @app.task(name=TASK_NAME, ignore_result=True, acks_late=True)
    def bench_queue(n: int, t: float) -> None:
        tally.record(t)

    signals.worker_ready.connect(lambda **kw: ready.set(), weak=False)
    threading.Thread(target=tally.serve_stats, args=(conn,), daemon=True).start()
    app.worker_main(argv=["--quiet", "worker", "--pool=solo", "--concurrency=1", f"--prefetch-multiplier={prefetch}",
                          "--without-gossip", "--without-mingle", "--without-heartbeat",
                          "--loglevel=ERROR", "-Q", QUEUE_NAME])
