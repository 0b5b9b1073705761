"""Two engine hosts sharing one Redis queue (issue 19): a job enqueued through A runs on a
worker on B with the queue's retries, backoff, DLQ and FIFO order per group while both hosts
consume; chaos: 10,000 acknowledged enqueues through A while A's queue process, then A's
gateway, then all of A are killed with kill -9 (B processes what A had leased once the lease
expires), and again with a kill -9 of redis-server (restarted on its port and dir,
``appendfsync always``). Duplicates are counted and printed; losses fail the test.

Only the ``iii-queue`` block is on Redis here (the queue is what is under test); the config is
otherwise a reference-style one.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from tests.e2e.test_queue_chaos import Consumer, Producer, seen_ids
from tests.harness import QUEUE_READY
from tests.twohosts import two_hosts
from tests.wsclient import RawClient, fid, ok

QUEUES = {
    "jobs": {"max_retries": 3, "backoff_ms": 100, "concurrency": 4},
    "pay": {"type": "fifo", "message_group_field": "tx", "max_retries": 5, "backoff_ms": 50,
            "concurrency": 4},
    "chaos": {"concurrency": 32, "max_retries": 1000, "backoff_ms": 20},
}


def queue_only(lease_ms: int = 3000) -> str:
    return ("- name: iii-queue\n  config:\n    queue_configs: " + json.dumps(QUEUES) + "\n"
            "    adapter: {name: redis, config: {redis_url: \"{redis_url}\", lease_ms: %d, "
            "heartbeat_ms: 500}}\n" % lease_ms)


def enqueue(w: RawClient, fn: str, data, queue: str) -> dict:
    return w.call(fn, data, action={"type": "enqueue", "queue": queue})


def fail(w: RawClient, inv: dict) -> None:
    w.send({"type": "invocationresult", "invocation_id": inv["invocation_id"],
            "function_id": inv["function_id"], "error": {"code": "boom", "message": "forced failure"}})


def test_a_job_enqueued_through_a_runs_on_b_with_retries_backoff_dlq_and_fifo(redis_server) -> None:
    with two_hosts(redis_server, queue_only(), wait_for=QUEUE_READY) as (a, b):
        with RawClient.declared(a.url, "producer-a") as pa, RawClient.declared(b.url, "worker-b") as wb:
            fn = fid("only.on.b")
            wb.register_function(fn)
            time.sleep(0.3)
            ok(enqueue(pa, fn, {"n": 1}, "jobs"))
            times = []
            for _ in range(3):  # runs on B; retried with backoff; then the DLQ
                inv = wb.next_call(fn, timeout=10)
                assert inv["data"] == {"n": 1}
                times.append(time.monotonic())
                fail(wb, inv)
            gaps = [y - x for x, y in zip(times, times[1:])]
            assert gaps[0] >= 0.09 and gaps[1] >= 0.19, gaps
            deadline = time.monotonic() + 5
            msgs: list = []
            while time.monotonic() < deadline and not msgs:
                time.sleep(0.05)
                msgs = ok(pa.call("engine::queue::dlq_messages", {"topic": "jobs"}))  # read through A
            assert [m["retries"] for m in msgs] == [3]
            assert ok(pa.call("iii::queue::redrive", {"queue": "jobs"}))["redriven"] == 1
            wb.answer(wb.next_call(fn, timeout=10), None)

        # FIFO per group across hosts, both hosts consuming: workers on A and on B.
        fn = fid("pay.both")
        log: list[tuple[float, str, str, int, str]] = []
        lock = threading.Lock()
        stop = threading.Event()

        def consume(url: str, host: str, fail_first: set) -> None:
            with RawClient.declared(url, f"w-{host}") as w:
                w.register_function(fn)
                ready.release()
                while not stop.is_set():
                    try:
                        inv = w.next_call(fn, timeout=0.5)
                    except Exception:
                        continue
                    d = inv["data"]
                    with lock:
                        log.append((time.monotonic(), "start", d["tx"], d["seq"], host))
                        first = (d["tx"], d["seq"]) in fail_first
                        fail_first.discard((d["tx"], d["seq"]))
                    time.sleep(0.03)
                    with lock:
                        log.append((time.monotonic(), "end", d["tx"], d["seq"], host))
                    if first:
                        fail(w, inv)
                    else:
                        w.answer(inv, None)

        ready = threading.Semaphore(0)
        failing = {("g0", 0), ("g2", 3)}
        threads = [threading.Thread(target=consume, args=(u, h, failing), daemon=True)
                   for u, h in ((a.url, "A"), (b.url, "B"))]
        for t in threads:
            t.start()
        for _ in threads:
            assert ready.acquire(timeout=10)
        time.sleep(0.5)
        with RawClient.declared(a.url, "producer-a2") as pa:
            for seq in range(6):
                for g in range(4):
                    ok(enqueue(pa, fn, {"tx": f"g{g}", "seq": seq}, "pay"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with lock:
                done = {(e[2], e[3]) for e in log if e[1] == "end"}
            if len(done) == 24 and not failing:
                break
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join(5)
        with lock:
            events = sorted(log)
        assert len({(e[2], e[3]) for e in events if e[1] == "end"}) == 24
        hosts = Counter(e[4] for e in events if e[1] == "start")
        assert hosts["A"] > 0 and hosts["B"] > 0, hosts  # both hosts consumed
        for g in range(4):
            starts = [e[3] for e in events if e[1] == "start" and e[2] == f"g{g}"]
            # in order; a failed head is retried before the next job of its group
            assert starts == sorted(starts), (g, starts)
        busy: Counter[str] = Counter()
        parallel = 0
        for e in events:  # a group's head is leased by one host at a time; groups overlap
            busy[e[2]] += 1 if e[1] == "start" else -1
            assert busy[e[2]] <= 1, e
            parallel = max(parallel, sum(1 for v in busy.values() if v))
        assert parallel >= 2, "groups never ran in parallel"


# ---- chaos --------------------------------------------------------------------------------

N_JOBS = 10_000


class ReconnectingProducer(Producer):
    """The chaos producer that reconnects when A's gateway dies under it."""

    async def run_all(self, url_of, deadline: float) -> None:
        while (self.todo or self.pending) and time.monotonic() < deadline:
            self.url = url_of()
            try:
                await self.run(deadline)
            except Exception:
                pass
            for _, (pid, _) in list(self.pending.items()):
                self._fail(pid, "disconnected")
            self.pending.clear()
            if self.todo:
                await asyncio.sleep(0.2)


def kill_all(eng) -> None:
    """kill -9 every process of an engine host (supervisor and children)."""
    procs = [psutil.Process(eng.proc.pid)]
    try:
        procs += procs[0].children(recursive=True)
    except psutil.Error:
        pass
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass


async def chaos_run(redis_server, schedule, label: str, budget: float = 75.0) -> dict:
    t0 = time.monotonic()
    with two_hosts(redis_server, queue_only(), wait_for=QUEUE_READY) as (a, b):
        outs = [Path(b.runtime_dir) / "consumed-b.txt"]
        consumers = [Consumer(b.url, str(outs[0]))]

        def consumer_on_a() -> None:
            out = Path(b.runtime_dir) / f"consumed-a{len(outs)}.txt"
            outs.append(out)
            consumers.append(Consumer(a.url, str(out)))

        consumer_on_a()
        producer = ReconnectingProducer(a.url, N_JOBS)
        done: list[tuple[str, float]] = []

        async def chaos() -> None:
            for at, what in schedule:
                while len(producer.acked) < at:
                    await asyncio.sleep(0.005)
                await asyncio.to_thread(what, a, consumer_on_a)
                done.append((what.__name__, round(time.monotonic() - t0, 1)))

        try:
            task = asyncio.ensure_future(chaos())
            await producer.run_all(lambda: a.url, t0 + budget - 25)
            await asyncio.wait_for(task, 20)
            acked = producer.acked
            assert len(acked) == N_JOBS, f"only {len(acked)} acknowledged: {producer.failures}"
            deadline = t0 + budget

            def seen() -> Counter:
                total: Counter[int] = Counter()
                for o in outs:
                    total.update(seen_ids(o))
                return total
            got = seen()
            while time.monotonic() < deadline and not acked <= got.keys():
                await asyncio.sleep(0.2)
                got = seen()
        finally:
            for c in consumers:
                c.kill()
        lost = sorted(acked - got.keys())
        summary = {"run": label, "acknowledged": len(acked), "processed_unique": len(got),
                   "duplicates": sum(got.values()) - len(got), "lost": len(lost),
                   "enqueue_retries": dict(producer.failures), "events": done,
                   "total_s": round(time.monotonic() - t0, 1)}
        print("two-host queue chaos:", json.dumps(summary))
        assert len(done) == len(schedule), summary
        assert not lost, f"{len(lost)} acknowledged jobs never processed (first {lost[:10]}): {summary}"
        return summary


def kill_queue_of_a(a, consumer_on_a) -> None:
    pid = a.kill("queue")
    a.wait_running("queue", 10, not_pid=pid)


def kill_gateway_of_a(a, consumer_on_a) -> None:
    pid = a.kill("gateway")
    a.wait_running("gateway", 10, not_pid=pid)
    a.wait_accepting(10)
    consumer_on_a()  # A's worker died with its gateway: a new one, so that A leases again


def kill_all_of_a(a, consumer_on_a) -> None:
    kill_all(a)


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_chaos_kill_9_of_a_queue_gateway_then_host(redis_server) -> None:
    await chaos_run(redis_server, [(2_500, kill_queue_of_a), (5_000, kill_gateway_of_a),
                                   (N_JOBS, kill_all_of_a)], "kill A")


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_chaos_kill_9_of_redis_server() -> None:
    from tests.redisserver import RedisServer
    server = RedisServer(appendfsync="always")  # private: the session's server is shared

    def kill_redis(a, consumer_on_a) -> None:
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(5)
        time.sleep(0.5)
        server.start()  # same port and dir: the AOF is replayed

    try:
        await chaos_run(server, [(4_000, kill_redis)], "kill redis-server")
    finally:
        server.stop()
