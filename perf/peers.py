"""The peers: what a user would pick instead of the engine, measured in the same run (issue 20).

``peer_rows(harness, emit, wanted)`` starts a private ``redis-server`` (AOF on, ``appendfsync
always``: acknowledged means on disk, as the engine's stores; a free loopback port, a temp
dir) and measures, every client its own process (perf/peer_workers.py):

| peer row | what it does | engine row it stands beside |
|---|---|---|
| ``redis_set`` / ``redis_get`` | redis-py asyncio + hiredis, pooled connections, 1 / 16 coroutines each awaiting its own ``SET`` / ``GET`` of 100 keys (gets read keys written first) | ``state_set`` / ``state_get``, same in flight |
| ``dramatiq_end_to_end`` | Dramatiq, Redis broker, 16 producer threads ``actor.send`` back to back; one worker process, 8 worker threads (Dramatiq's default) | ``queue_end_to_end`` |
| ``celery_end_to_end`` | Celery, Redis broker, ``acks_late=True``, ``send_task`` from 16 threads; one worker process, solo pool, ``worker_prefetch_multiplier`` ``CELERY_PREFETCH`` | ``queue_end_to_end`` |
| ``grpc_unary`` | grpcio aio, one unary method echoing its bytes (a generic handler, no protoc), 1 / 16 calls in flight on one channel | ``ws_roundtrip``, same in flight |

Queue rows use the engine's definition: a window of enqueueing at 16 in flight, then
deliveries / (last delivery - window start), after the deliveries settled; ``lost`` =
enqueued - delivered; p50/p99 here = each message's enqueue -> processed latency. Windows go
through the harness (``Harness._runs``), so the quietness guard covers them (redis-server,
servers, workers and load generators are all children of the harness process).

``attach_peers(rows)`` puts, on every engine row with a peer (``PAIRINGS``), its ratios to
that peer (``peers`` in the JSON; ``x <peer>`` and the issue-20 goal in the note).
Invariant: whatever fails, everything ``peer_rows`` started is stopped before it returns.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any, Callable, Iterable

from . import core, peer_workers
from .harness import Callee, Harness, row
from .servers import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
EXTRA_HINT = "pip install -e '.[perf-peers]'"
INFLIGHTS = (1, 16)
QUEUE_INFLIGHT = 16
DRAMATIQ_THREADS = 8
CELERY_PREFETCH = 1
QUEUE_VARIANT = "16 in flight"

# (engine bench, engine variant, peer target, peer bench, peer variant, goal): goal is
# (ratio key, least ratio) from issue 20, or None.
PAIRINGS: tuple[tuple[str, str, str, str, str, tuple[str, float] | None], ...] = (
    ("state_set", "1 in flight", "redis", "redis_set", "1 in flight", ("p50_us", round(1 / 1.2, 3))),
    ("state_set", "16 in flight", "redis", "redis_set", "16 in flight", ("throughput", 1.0)),
    ("state_get", "1 in flight", "redis", "redis_get", "1 in flight", None),
    ("state_get", "16 in flight", "redis", "redis_get", "16 in flight", ("throughput", 1.0)),
    ("queue_end_to_end", "1 producer x16 in flight", "dramatiq", "dramatiq_end_to_end", QUEUE_VARIANT,
     ("throughput", 3.0)),
    ("queue_end_to_end", "16 producers x1 in flight", "dramatiq", "dramatiq_end_to_end", QUEUE_VARIANT, None),
    ("queue_end_to_end", "1 producer x16 in flight", "celery", "celery_end_to_end", QUEUE_VARIANT, None),
    ("queue_end_to_end", "16 producers x1 in flight", "celery", "celery_end_to_end", QUEUE_VARIANT, None),
    ("ws_roundtrip", "1 in flight", "grpc", "grpc_unary", "1 in flight", None),
    ("ws_roundtrip", "16 in flight", "grpc", "grpc_unary", "16 in flight", ("throughput", 3.0)),
)
LABELS = {"redis_set": "Redis SET", "redis_get": "Redis GET", "dramatiq_end_to_end": "Dramatiq",
          "celery_end_to_end": "Celery acks_late", "grpc_unary": "gRPC unary"}
"""How an engine row's note names its peer."""
PACKAGES = {"redis": ("redis", "hiredis"), "dramatiq": ("dramatiq", "redis"), "celery": ("celery", "redis"),
            "grpc": ("grpc",)}


def missing_packages(target: str) -> list[str]:
    return [m for m in PACKAGES[target] if importlib.util.find_spec(m) is None]


class PeerRedis:
    """A private redis-server: AOF on, ``appendfsync always``, no RDB snapshots, a free
    loopback port, data in a fresh temp dir (on /tmp, as the engine's data dir). A child of
    this process, so the quietness guard counts its CPU as ours."""

    PREFIX = "iii-peer-redis-"

    def __init__(self, appendfsync: str = "always") -> None:
        if not os.path.exists(REDIS_SERVER):
            raise RuntimeError("redis-server is not installed (scripts/setup-dev.sh installs Debian's)")
        self.appendfsync = appendfsync
        self.dir = tempfile.mkdtemp(prefix=self.PREFIX, dir="/tmp")
        self.port = free_port()
        self.log = os.path.join(self.dir, "redis.log")
        self.start()

    def args(self) -> list[str]:
        """The server's command line (the same again restarts it on its port and data)."""
        return [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
                "--appendonly", "yes", "--appendfsync", self.appendfsync, "--save", "", "--logfile", self.log]

    def start(self) -> None:
        """Run the server (again, after a kill) and wait until it answers PING."""
        self.proc = subprocess.Popen(self.args(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def _wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = open(self.log).read()[-600:] if os.path.exists(self.log) else ""
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {tail}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING within 10 s")

    def command(self, *args: str) -> bytes:
        """One inline command on a fresh connection (CONFIG GET, FLUSHALL): the raw reply."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall((" ".join(args) + "\r\n").encode())
            time.sleep(0.05)
            return s.recv(4096)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


def _na(target: str, bench: str, variant: str, reason: str, status: str = "n/a") -> dict[str, Any]:
    return {"target": target, "bench": bench, "variant": variant, "status": status,
            "reason": ("not available: " if status == "n/a" else "") + reason}


def peer_windows(h: Harness, label: str, target: Callable[..., None], spec: dict[str, Any],
                 before: Callable[[], None] | None = None,
                 after: Callable[[dict[str, Any]], None] | None = None) -> tuple[str, Any]:
    """``Harness.windows`` for a peer load generator (``target(conn, spec)``)."""
    parent, child = h.ctx.Pipe()
    spec = {"seconds": h.settings.seconds, "warmup": h.settings.warmup, **spec}
    proc = h._spawn(target, child, spec)
    try:
        first = h._recv(parent, proc, 60)
        if first["status"] != "ready":
            return first["status"], first.get("reason", "")
        return h._runs(label, parent, proc, spec["seconds"] + 60, before, after)
    finally:
        proc.join(5)
        h.stop(proc)


def wanted_targets(wanted: Callable[[str], bool] | Iterable[str] | None) -> list[str]:
    """Peer targets whose engine bench is wanted (all when ``wanted`` is None)."""
    if wanted is None:
        want = lambda name: True  # noqa: E731
    elif callable(wanted):
        want = wanted
    else:
        names = set(wanted)
        want = names.__contains__
    out: list[str] = []
    for bench, _, target, *_ in PAIRINGS:
        if want(bench) and target not in out:
            out.append(target)
    return out


def peer_rows(h: Harness, emit: Callable[[dict[str, Any]], None],
              wanted: Callable[[str], bool] | Iterable[str] | None = None) -> None:
    """Measure every peer whose engine bench is wanted; emit one row per figure."""
    targets = wanted_targets(wanted)
    redis_srv: PeerRedis | None = None
    before = list(h.children)  # baseline servers of the run stay up; only ours are stopped
    try:
        if {"redis", "dramatiq", "celery"} & set(targets):
            h.progress("starting redis-server (appendfsync always)")
            try:
                redis_srv = PeerRedis()
            except Exception as exc:
                reason = f"redis-server: {type(exc).__name__}: {exc}"
                for t in targets:
                    if t != "grpc":
                        _emit_na(emit, t, reason, "error")
                targets = [t for t in targets if t == "grpc"]
        for t in targets:
            missing = missing_packages(t)
            if missing:
                _emit_na(emit, t, f"{', '.join(missing)} not installed ({EXTRA_HINT})")
                continue
            try:
                if t == "redis":
                    redis_bench(h, emit, redis_srv)
                elif t in ("dramatiq", "celery"):
                    queue_bench(h, emit, redis_srv, t)
                else:
                    grpc_bench(h, emit)
            except Exception as exc:
                _emit_na(emit, t, f"{type(exc).__name__}: {exc}", "error")
            finally:
                _stop_new(h, before)
    finally:
        _stop_new(h, before)
        if redis_srv is not None:
            redis_srv.stop()


def _stop_new(h: Harness, before: list[Any]) -> None:
    for proc in [p for p in h.children if p not in before]:
        h.stop(proc)


def _emit_na(emit: Callable[[dict[str, Any]], None], target: str, reason: str, status: str = "n/a") -> None:
    seen = set()
    for _, _, t, bench, variant, _ in PAIRINGS:
        if t == target and (bench, variant) not in seen:
            seen.add((bench, variant))
            emit(_na(t, bench, variant, reason, status))


# -- the peers --------------------------------------------------------------------------------
def redis_bench(h: Harness, emit: Callable[[dict[str, Any]], None], srv: PeerRedis) -> None:
    fsync = srv.command("CONFIG", "GET", "appendfsync").split()[-1].decode()
    for op in ("set", "get"):
        for n in INFLIGHTS:
            variant = f"{n} in flight"
            spec = {"kind": f"redis_{op}", "url": srv.url(0), "inflight": n}
            r = row("redis", f"redis_{op}", variant,
                    peer_windows(h, f"redis {op.upper()} {variant}", peer_workers.loadgen_main, spec),
                    h.settings)
            r["note"] = f"redis-py asyncio + hiredis, appendfsync {fsync}"
            emit(r)


def grpc_bench(h: Harness, emit: Callable[[dict[str, Any]], None]) -> None:
    port = free_port()
    ready = h.ctx.Event()
    server = h._spawn(peer_workers.grpc_server_main, port, ready)
    if not ready.wait(20):
        raise RuntimeError("gRPC server did not start")
    try:
        for n in INFLIGHTS:
            variant = f"{n} in flight"
            spec = {"kind": "grpc", "url": f"127.0.0.1:{port}", "inflight": n}
            r = row("grpc", "grpc_unary", variant,
                    peer_windows(h, f"grpc unary {variant}", peer_workers.loadgen_main, spec), h.settings)
            r["note"] = "grpcio aio, generic handler, bytes echo"
            emit(r)
    finally:
        h.stop(server)


def queue_bench(h: Harness, emit: Callable[[dict[str, Any]], None], srv: PeerRedis, kind: str) -> None:
    """Enqueue at 16 in flight for a window; deliveries counted by one worker process."""
    db = 1 if kind == "dramatiq" else 2
    srv.command("FLUSHALL")  # no leftovers of an earlier peer
    url = srv.url(db)
    counter = h.ctx.Value("q", 0, lock=False)
    last = h.ctx.Value("d", 0.0, lock=False)
    parent, child = h.ctx.Pipe()
    ready = h.ctx.Event()
    if kind == "dramatiq":
        worker = h._spawn(peer_workers.dramatiq_worker_main, url, DRAMATIQ_THREADS, counter, last, child, ready)
        shape = f"1 worker process x{DRAMATIQ_THREADS} threads"
    else:
        worker = h._spawn(peer_workers.celery_worker_main, url, CELERY_PREFETCH, counter, last, child, ready)
        shape = f"acks_late, 1 worker process, solo pool, prefetch {CELERY_PREFETCH}"
    try:
        if not ready.wait(30):
            raise RuntimeError(f"{kind} worker did not start")
        callee = Callee(worker, counter, last, None)
        state: dict[str, Any] = {}

        def before() -> None:
            state["c0"] = callee.settled(timeout=30.0)  # the warm-up's messages drained
            parent.send("stats")  # resets the worker's latencies
            parent.recv()

        def after(run: dict[str, Any]) -> None:
            enqueued = run["ops"] - run["errors"]
            delivered = callee.settled(quiet_for=0.5, timeout=30.0) - state["c0"]
            span = max(last.value - run["started_monotonic"], 1e-6)
            parent.send("stats")
            lat = parent.recv() if parent.poll(10) else {}
            run["enqueue_throughput"], run["enqueue_p50_us"] = run["throughput"], run["p50_us"]
            run["e2e_throughput"] = round(delivered / span, 1) if delivered else 0.0
            run["e2e_p50_us"], run["e2e_p99_us"] = lat.get("p50_us"), lat.get("p99_us")
            run["lost"] = max(0, enqueued - delivered)

        spec = {"kind": kind, "url": url, "inflight": QUEUE_INFLIGHT}
        out = peer_windows(h, f"{kind} queue {QUEUE_VARIANT}", peer_workers.producer_main, spec,
                           before=before, after=after)
        r = row(kind, f"{kind}_end_to_end", QUEUE_VARIANT, out, h.settings,
                keys=("e2e_throughput", "e2e_p50_us", "e2e_p99_us", "lost", "enqueue_throughput",
                      "enqueue_p50_us"))
        if r.get("status") == "ok":
            m = r["metrics"]
            r["metrics"] = {"throughput": m.get("e2e_throughput"), "p50_us": m.get("e2e_p50_us"),
                            "p99_us": m.get("e2e_p99_us"), "lost": m.get("lost"),
                            "enqueue_throughput": m.get("enqueue_throughput"),
                            "enqueue_p50_us": m.get("enqueue_p50_us")}
            if not r["metrics"]["throughput"]:
                r.update(status="error", reason="no message processed")
            r["note"] = (f"{shape}; p50/p99 = enqueue -> processed; enqueue {m.get('enqueue_throughput', 0):,.0f}/s "
                         f"(p50 {m.get('enqueue_p50_us', 0):,.0f} us); lost {m.get('lost', 0):.0f}")
        emit(r)
    finally:
        try:
            parent.send("stop")
        except (OSError, BrokenPipeError):
            pass
        worker.join(5)
        h.stop(worker)


# -- pairing ------------------------------------------------------------------------------------
def attach_peers(rows: list[dict[str, Any]]) -> None:
    """On each engine row with a peer in ``rows``: ``peers`` (JSON) and a note per peer."""
    by_key = {(r["target"], r["bench"], r.get("variant", "")): r for r in rows}
    for bench, variant, target, pbench, pvariant, goal in PAIRINGS:
        eng = by_key.get(("engine", bench, variant))
        peer = by_key.get((target, pbench, pvariant))
        if eng is None or peer is None:
            continue
        entry: dict[str, Any] = {"peer": f"{target} {pbench} {pvariant}"}
        if eng.get("status") == "ok" and peer.get("status") == "ok":
            ratio = core.compare(eng["metrics"], peer["metrics"])
            entry["ratio"] = ratio
            parts = [f"x {'thrpt' if k == 'throughput' else 'p50'} {v:.2f}"
                     for k, v in ratio.items() if k in ("throughput", "p50_us") and v is not None]
            text = f"vs {LABELS[pbench]} {pvariant}: {', '.join(parts)}"
            if goal is not None and ratio.get(goal[0]) is not None:
                met = ratio[goal[0]] >= goal[1]
                entry["goal"] = {"key": goal[0], "least": goal[1], "met": met}
                text += (f" (goal x {'thrpt' if goal[0] == 'throughput' else 'p50'} >= {goal[1]:.2f}: "
                         f"{'met' if met else 'NOT met'})")
        else:
            text = f"vs {LABELS[pbench]} {pvariant}: no ratio (peer {peer.get('status')}, engine {eng.get('status')})"
        eng.setdefault("peers", []).append(entry)
        eng["note"] = "; ".join(filter(None, (eng.get("note"), text)))
