"""The queue store on real LMDB: durability across a kill -9, recovery of leased jobs,
map growth, and group commit."""
from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap

import pytest

from brokers.queue.config import parse
from brokers.queue.core import QueueCore
from brokers.queue.inputs import EnqueueRequest
from brokers.kit.lmdbenv import MapLimitError
from brokers.queue.store import LmdbStore, encode, open_committer


@pytest.fixture
def lmdb_dir():
    path = tempfile.mkdtemp(prefix="iii-q-", dir="/tmp")
    yield os.path.join(path, "queue")
    shutil.rmtree(path, ignore_errors=True)


def make_core(ids=None) -> QueueCore:
    ids = ids or itertools.count(1)
    cfg = parse({"queue_configs": {"q": {"backoff_ms": 100, "max_retries": 2},
                                   "f": {"type": "fifo", "message_group_field": "g"}}}, "w")
    return QueueCore(cfg["queue_configs"], new_id=lambda: f"job-{next(ids)}")


def req(queue: str, data) -> EnqueueRequest:
    return EnqueueRequest(queue=queue, function_id="svc::fn", data=data, message_id="r")


def test_recovery_on_open_redelivers_leased_jobs(lmdb_dir) -> None:
    store = LmdbStore(lmdb_dir)
    core = make_core()
    jobs = [core.enqueue(req("q", {"n": i}), 0) for i in range(4)]
    fifo = [core.enqueue(req("f", {"g": "x", "n": i}), 0) for i in range(2)]
    store.commit(encode(core.take_writes()))
    leased = {d.job.id for d in core.poll(0).deliveries}
    assert leased == {j.id for j in jobs} | {fifo[0].id}
    core.succeeded(jobs[0].id, 1)             # acked: gone for good
    core.failed(jobs[1].id, "boom", 1)        # waits for its retry at 101
    core.failed(jobs[1].id, "stale", 1)       # not leased any more: ignored
    store.commit(encode(core.take_writes()))
    store.close()                             # jobs[2], jobs[3], fifo[0] were in flight

    store = LmdbStore(lmdb_dir)
    fresh = make_core(itertools.count(100))
    fresh.restore(store.load(), 50)
    again = [d.job for d in fresh.poll(50).deliveries]
    assert {j.id for j in again} == {jobs[2].id, jobs[3].id, fifo[0].id}
    assert [d.job.id for d in fresh.poll(101).deliveries] == [jobs[1].id]
    assert fresh.enqueue(req("q", 1), 200).seq > max(j.seq for j in jobs + fifo)
    store.close()


def test_dlq_survives_restart(lmdb_dir) -> None:
    store = LmdbStore(lmdb_dir)
    core = make_core()
    job = core.enqueue(req("q", "x"), 0)
    for now in (0, 100):
        core.poll(now)
        core.failed(job.id, "boom", now)
    store.commit(encode(core.take_writes()))
    store.close()
    store = LmdbStore(lmdb_dir)
    fresh = make_core()
    fresh.restore(store.load(), 200)
    assert fresh.poll(10**6).deliveries == []
    assert fresh.redrive("q", 300) == 1
    store.commit(encode(fresh.take_writes()))
    [again] = fresh.poll(300).deliveries
    assert again.job.id == job.id and again.job.attempts_made == 0
    store.close()


def test_committed_writes_survive_kill_9(lmdb_dir) -> None:
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {os.getcwd()!r})
        from tests.integration.test_queue_store import make_core, req
        from brokers.queue.store import LmdbStore, encode
        store = LmdbStore({lmdb_dir!r})
        core = make_core()
        for batch in range(10):
            for i in range(50):
                core.enqueue(req("q", {{"b": batch, "i": i}}), 0)
            store.commit(encode(core.take_writes()))
        print("committed", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "committed" in proc.stdout
    store = LmdbStore(lmdb_dir)
    assert len(store.load()) == 500
    store.close()


def test_map_grows_when_full(lmdb_dir) -> None:
    store = LmdbStore(lmdb_dir, map_size=256 * 1024)
    core = make_core()
    for _ in range(8):
        for _ in range(20):
            core.enqueue(req("q", "x" * 4000), 0)
        store.commit(encode(core.take_writes()))
    assert store.map_size() > 256 * 1024
    assert len(store.load()) == 160
    store.close()


def test_map_past_its_cap_refuses_the_batch(lmdb_dir) -> None:
    store = LmdbStore(lmdb_dir, map_size=64 * 1024, max_map_size=128 * 1024)
    core = make_core()
    core.enqueue(req("q", "kept"), 0)
    store.commit(encode(core.take_writes()))
    for _ in range(100):
        core.enqueue(req("q", "x" * 4000), 0)
    with pytest.raises(MapLimitError):
        store.commit(encode(core.take_writes()))
    assert [j.data for j in store.load()] == ["kept"]
    assert store.map_size() == 128 * 1024
    store.close()


def test_group_commit_batches_concurrent_callers(lmdb_dir) -> None:
    store = LmdbStore(lmdb_dir)
    committer = open_committer(store)
    core = make_core()

    async def one(i: int) -> None:
        core.enqueue(req("q", i), 0)
        await committer.submit(encode(core.take_writes()))

    async def main() -> None:
        await asyncio.gather(*(one(i) for i in range(200)))

    asyncio.run(main())
    committer.close()
    assert len(store.load()) == 200
    assert store.commits < 200  # callers shared transactions
    store.close()
