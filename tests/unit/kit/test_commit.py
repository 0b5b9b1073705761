"""The kit's group committer with a fake batch function: one batch at a time, writes that
arrive meanwhile form the next, acks only after the commit, a failed batch fails exactly
its callers, per-call results, barriers, and no asyncio task per call (or per batch)."""
from __future__ import annotations

import asyncio
import threading

import pytest

from brokers.kit.commit import GroupCommitter


class Recorder:
    """A batch function that records its batches and can be held inside a commit."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.threads: set[str] = set()
        self.fail_on = fail_on
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.running = 0
        self.max_running = 0

    def __call__(self, items: list[str]) -> list[str]:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        self.threads.add(threading.current_thread().name)
        self.entered.set()
        self.gate.wait(5)
        self.running -= 1
        self.batches.append(list(items))
        if self.fail_on is not None and self.fail_on in items:
            raise RuntimeError("disk on fire")
        return [f"done:{item}" for item in items]


async def until(flag: threading.Event) -> None:
    await asyncio.get_running_loop().run_in_executor(None, flag.wait, 5)


@pytest.mark.parametrize("thread", ["test-commit", None])
async def test_one_batch_per_loop_iteration_each_caller_its_own_result(thread):
    rec = Recorder()
    committer = GroupCommitter(rec, name="t", thread=thread)
    futs = [committer.submit(f"w{i}") for i in range(5)]
    assert await asyncio.gather(*futs) == [f"done:w{i}" for i in range(5)]
    assert rec.batches == [[f"w{i}" for i in range(5)]]
    assert committer.batches == 1
    committer.close()


async def test_writes_arriving_during_a_commit_form_the_next_batch_and_acks_follow_commits():
    rec = Recorder()
    rec.gate.clear()
    committer = GroupCommitter(rec, name="t", thread="test-commit")
    first = committer.submit("a")
    await until(rec.entered)                  # batch [a] is inside its transaction
    later = [committer.submit("b"), committer.submit("c")]
    await asyncio.sleep(0.05)
    assert not first.done() and not any(f.done() for f in later)  # nothing acked before its commit
    rec.gate.set()
    assert await first == "done:a"
    assert await asyncio.gather(*later) == ["done:b", "done:c"]
    assert rec.batches == [["a"], ["b", "c"]]
    assert rec.max_running == 1
    committer.close()


async def test_futures_resolve_in_submission_order():
    committer = GroupCommitter(Recorder(), name="t", thread="test-commit")
    order: list[int] = []
    futs = []
    for i in range(50):
        fut = committer.submit(str(i))
        fut.add_done_callback(lambda f, i=i: order.append(i))
        futs.append(fut)
        if i % 7 == 0:
            await asyncio.sleep(0)  # spread the calls over several batches
    await asyncio.gather(*futs)
    await asyncio.sleep(0)
    assert order == list(range(50))
    committer.close()


async def test_a_failed_commit_fails_exactly_the_callers_of_its_batch():
    rec = Recorder(fail_on="bad")
    rec.gate.clear()
    committer = GroupCommitter(rec, name="t", thread="test-commit")
    doomed = [committer.submit("bad"), committer.submit("x")]
    await until(rec.entered)
    survivor = committer.submit("y")          # arrives during the failing commit
    rec.gate.set()
    for fut in doomed:
        with pytest.raises(RuntimeError, match="disk on fire"):
            await fut
    assert await survivor == "done:y"
    assert rec.batches == [["bad", "x"], ["y"]]
    assert committer.batches == 1             # the failed batch is not counted
    committer.close()


async def test_settle_failure_fails_only_that_caller():
    def settle(result: str) -> str:
        if result == "done:poison":
            raise ValueError("not storable")
        return result.upper()

    committer = GroupCommitter(Recorder(), name="t", thread=None, settle=settle)
    a, b, c = (committer.submit(x) for x in ("a", "poison", "c"))
    assert await a == "DONE:A" and await c == "DONE:C"
    with pytest.raises(ValueError):
        await b


async def test_committed_hook_runs_after_the_acks_and_cannot_stop_the_committer():
    seen: list[tuple[list[str], list[str], bool]] = []
    futs: list[asyncio.Future] = []

    def committed(items, results):
        seen.append((items, list(results), all(f.done() for f in futs)))
        raise RuntimeError("hook bug")

    committer = GroupCommitter(Recorder(), name="t", thread="test-commit", committed=committed)
    futs.append(committer.submit("a"))
    await futs[0]
    futs.append(committer.submit("b"))
    assert await futs[1] == "done:b"
    assert seen == [(["a"], ["done:a"], True), (["b"], ["done:b"], True)]
    committer.close()


async def test_no_task_per_call_nor_per_batch():
    rec = Recorder()
    rec.gate.clear()
    committer = GroupCommitter(rec, name="t", thread="test-commit")
    before = asyncio.all_tasks()
    futs = [committer.submit(str(i)) for i in range(100)]
    await until(rec.entered)
    futs += [committer.submit(str(i)) for i in range(100, 200)]
    assert asyncio.all_tasks() == before
    rec.gate.set()
    await asyncio.gather(*futs)
    assert asyncio.all_tasks() == before
    assert len(rec.batches) == 2
    committer.close()


async def test_barrier_waits_for_earlier_writes_without_a_transaction_of_its_own():
    rec = Recorder()
    committer = GroupCommitter(rec, name="t", thread="test-commit")
    idle = committer.barrier()
    assert idle.done()                        # nothing pending: at once
    rec.gate.clear()
    write = committer.submit("a")
    await until(rec.entered)
    barrier = committer.barrier()
    await asyncio.sleep(0.05)
    assert not barrier.done()
    rec.gate.set()
    await barrier
    assert write.done()
    assert rec.batches == [["a"]]             # the barrier added no batch
    committer.submit("b")
    await committer.flush()
    assert rec.batches == [["a"], ["b"]]
    committer.close()


async def test_commits_run_on_one_dedicated_thread_or_inline():
    threaded = Recorder()
    committer = GroupCommitter(threaded, name="t", thread="test-commit")
    for i in range(3):
        await committer.submit(str(i))
    committer.close()
    assert len(threaded.threads) == 1 and threaded.threads.pop().startswith("test-commit")
    inline = Recorder()
    committer = GroupCommitter(inline, name="t", thread=None)
    await committer.submit("x")
    assert inline.threads == {threading.current_thread().name}


async def test_failed_gives_each_caller_of_a_failed_batch_its_own_error():
    committer = GroupCommitter(Recorder(fail_on="bad"), name="t", thread=None,
                               failed=lambda item, exc: KeyError(f"{item}: {exc}"))
    futs = [committer.submit("bad"), committer.submit("x")]
    barrier = committer.barrier()
    errors = [await asyncio.gather(f, return_exceptions=True) for f in futs]
    assert [repr(e[0]) for e in errors] == ["KeyError('bad: disk on fire')",
                                            "KeyError('x: disk on fire')"]
    with pytest.raises(RuntimeError, match="disk on fire"):  # a barrier gets it as it is
        await barrier


async def test_a_failure_that_repeats_is_one_error_line_then_a_count_and_no_traceback(caplog, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("brokers.kit.commit.time.monotonic", lambda: clock[0])
    committer = GroupCommitter(Recorder(fail_on="bad"), name="state", thread=None)
    with caplog.at_level("WARNING", logger="brokers.kit.commit"):
        for _ in range(5):  # a full disk fails every batch
            await asyncio.gather(committer.submit("bad"), return_exceptions=True)
            clock[0] += 1.0
        clock[0] += 10.0
        await asyncio.gather(committer.submit("bad"), return_exceptions=True)
        assert await committer.submit("ok") == "done:ok"
        assert await committer.submit("ok2") == "done:ok2"
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [
        ("ERROR", "state commit failed (1 callers fail with it): disk on fire"),
        ("ERROR", "state commit failed (1 callers fail with it): disk on fire "
                  "(4 more failed batches not logged)"),
        ("WARNING", "state commits succeed again (after 6 failed batches)"),
    ]
    assert not any(r.exc_info for r in caplog.records)
