"""Group commit: many callers' writes, one transaction, one fsync, then all the acks.

``GroupCommitter(apply, ...)`` collects what callers ``submit`` and hands it, as one list,
to ``apply(items) -> results`` (one transaction of the store; ``results[i]`` belongs to
``items[i]``). Each caller holds a future of its own result.

Invariants:
  * at most one batch runs at a time; items submitted meanwhile form the next batch, which
    starts as soon as the running one is settled (so the fsync latency sets the batch size);
  * a caller's future resolves only after ``apply`` returned for its batch, i.e. after the
    commit; futures resolve in submission order;
  * when ``apply`` raises, exactly the callers of that batch fail with its exception; the
    next batch runs as usual;
  * ``apply`` runs on ONE dedicated thread (``thread`` names it): an LMDB write transaction
    must stay on its thread, and LMDB releases the GIL, so the loop serves reads and new
    calls meanwhile. ``thread=None`` runs it inline on the loop (in-memory stores).

Hot path: a ``submit`` is one future and a list append (under a lock the writer thread
shares). The writer thread takes the batch itself: after a commit it hands that batch's
results to the loop (ONE ``call_soon_threadsafe`` per batch, the only thread hop) and at
once takes everything that arrived during the commit as the next batch, without waiting
for the loop to settle the previous one (profiled: the round trip through the loop
before the next batch could start was most of a batch's wall time at 16 in flight). Only
an idle writer is woken, by one ``call_soon`` per loop iteration (so everything submitted
in the same loop iteration joins the batch). No asyncio task exists, per call or per batch.

``settle(result) -> value`` (optional) turns a result into the caller's value on the loop; if
it raises, only that caller fails (e.g. one write of the batch could not be stored).
``committed(items, results)`` (optional) runs on the loop after a batch's callers are
settled (e.g. trigger fan-out, which must see writes in commit order).
``failed(item, exc) -> exception`` (optional) turns a failed batch's exception into what
that item's caller gets (e.g. the error code of its own kind of write); barriers get ``exc``.

A failed batch is one ERROR line, never a traceback (a full disk is not a bug of ours):
the same failure again within ``QUIET_S`` is counted, not logged, and said with the next
line; the first commit after failures says that commits succeed again.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Callable, Generic, Sequence, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

QUIET_S = 10.0
"""How long the same commit failure is not logged again (a full disk fails every batch)."""


class GroupCommitter(Generic[T, R]):
    """Batches concurrent ``submit`` calls into one ``apply`` at a time."""

    def __init__(self, apply: Callable[[list[T]], Sequence[R]], *, name: str, thread: str | None = None,
                 settle: Callable[[R], Any] | None = None,
                 committed: Callable[[list[T], Sequence[R]], None] | None = None,
                 failed: Callable[[T, BaseException], BaseException] | None = None) -> None:
        self.name = name
        self._apply = apply
        self._settle_one = settle
        self._committed = committed
        self._failed = failed
        self._thread_name = thread
        self._items: list[T] = []
        self._futs: list[asyncio.Future[Any]] = []
        self._barriers: list[asyncio.Future[None]] = []
        self._busy = False
        """Inline mode: a batch is scheduled or running: new items wait for the next one."""
        # -- threaded mode: everything below is shared with the writer thread under _lock
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle = True
        """The writer waits for work (it must be woken); False while it commits."""
        self._kick_due = False
        self._closing = False
        self._outstanding = 0
        """Items submitted and not yet settled on the loop (loop thread only)."""
        self._taken_barriers: list[asyncio.Future[None]] | None = None
        """The barrier list of the batch the writer took last (settled with it)."""
        self.batches = 0
        """Committed batches (failed ones not counted)."""
        self.failures = 0
        """Failed batches since the last committed one."""
        self._logged: tuple[str, float] | None = None
        """The failure last logged and when (monotonic); None while commits succeed."""
        self._quiet = 0
        """Failed batches since then that were not logged."""

    def submit(self, item: T) -> asyncio.Future[Any]:
        """A future of ``item``'s result, resolved once the batch holding it is committed."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if self._thread_name is None:
            self._items.append(item)
            self._futs.append(fut)
            if not self._busy:
                self._busy = True
                loop.call_soon(self._run)
            return fut
        if self._thread is None:
            self._start(loop)
        self._outstanding += 1
        with self._lock:
            self._items.append(item)
            self._futs.append(fut)
            if not self._idle or self._kick_due:
                return fut  # the writer takes it after its commit, or the kick is on its way
            self._kick_due = True
        loop.call_soon(self._kick)
        return fut

    def barrier(self) -> asyncio.Future[None]:
        """A future resolved once everything submitted before it is committed (failed with
        its batch), without a transaction of its own; done at once when nothing is pending."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._thread_name is None:
            if self._busy:
                self._barriers.append(fut)
            else:
                fut.set_result(None)
            return fut
        if not self._outstanding:
            fut.set_result(None)
            return fut
        with self._lock:
            if self._items or self._taken_barriers is None:
                self._barriers.append(fut)  # goes with the next batch
            else:  # everything before it is in the batch the writer took last
                self._taken_barriers.append(fut)
        return fut

    async def flush(self) -> None:
        """Wait until every item submitted so far is committed (raises if its batch failed)."""
        await self.barrier()

    def close(self) -> None:
        """Stop the commit thread (after its running batch); ``flush`` first to keep items."""
        thread = self._thread
        if thread is None:
            return
        with self._lock:
            self._closing = True
            self._wake.notify()
        thread.join()
        self._thread = None

    # ------------------------------------------------------------ the writer thread

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._writer, name=f"{self._thread_name}_0", daemon=True)
        self._thread.start()

    def _kick(self) -> None:
        with self._lock:
            self._kick_due = False
            if self._idle and self._items:
                self._wake.notify()

    def _writer(self) -> None:
        loop = self._loop
        assert loop is not None
        lock, wake = self._lock, self._wake
        while True:
            with lock:
                while not self._items:
                    if self._closing:
                        return
                    self._idle = True
                    wake.wait()
                self._idle = False
                items, futs, barriers = self._items, self._futs, self._barriers
                self._items, self._futs, self._barriers = [], [], []
                self._taken_barriers = barriers
            try:
                results: Any = self._apply(items)
                exc: BaseException | None = None
            except BaseException as e:  # noqa: BLE001 (handed to the loop, which fails the batch)
                results, exc = None, e
            try:
                loop.call_soon_threadsafe(self._deliver, items, futs, barriers, results, exc)
            except RuntimeError:  # the loop is closed: nobody will read these
                pass

    def _deliver(self, items: list[T], futs: list[asyncio.Future[Any]], barriers: list[asyncio.Future[None]],
                 results: Sequence[R] | None, exc: BaseException | None) -> None:
        self._outstanding -= len(items)
        if self._taken_barriers is barriers:
            with self._lock:
                if self._taken_barriers is barriers:
                    self._taken_barriers = None
        if exc is not None:
            self._fail(items, futs, barriers, exc)
        else:
            self._settle(items, futs, barriers, results)  # type: ignore[arg-type]

    # ------------------------------------------------------------ inline batches

    def _run(self) -> None:
        """Start the next batch, or go idle when none is pending."""
        while self._items:
            items, futs, barriers = self._items, self._futs, self._barriers
            self._items, self._futs, self._barriers = [], [], []
            try:
                results = self._apply(items)
            except Exception as exc:
                self._fail(items, futs, barriers, exc)
            else:
                self._settle(items, futs, barriers, results)
        barriers, self._barriers = self._barriers, []
        self._busy = False
        for fut in barriers:  # nothing after them: everything before them is settled
            if not fut.done():
                fut.set_result(None)

    def _settle(self, items: list[T], futs: list[asyncio.Future[Any]], barriers: list[asyncio.Future[None]],
                results: Sequence[R]) -> None:
        if len(results) != len(items):
            self._fail(items, futs, barriers, RuntimeError(
                f"{self.name} commit returned {len(results)} results for {len(items)} items"))
            return
        self.batches += 1
        if self.failures:
            log.warning("%s commits succeed again (after %d failed batches)", self.name,
                        self.failures)
            self.failures, self._logged, self._quiet = 0, None, 0
        settle = self._settle_one
        for fut, result in zip(futs, results):
            if fut.done():  # the caller gave up (cancelled); its write is stored all the same
                continue
            if settle is None:
                fut.set_result(result)
                continue
            try:
                value = settle(result)
            except Exception as exc:
                fut.set_exception(exc)
            else:
                fut.set_result(value)
        for fut in barriers:
            if not fut.done():
                fut.set_result(None)
        if self._committed is not None:
            try:
                self._committed(items, results)
            except Exception:  # the acks are out; a broken hook must not stop the commits
                log.exception("%s: after-commit hook failed", self.name)

    def _fail(self, items: list[T], futs: list[asyncio.Future[Any]], barriers: list[asyncio.Future[None]],
              exc: BaseException) -> None:
        self._log_failure(len(items), exc)
        for item, fut in zip(items, futs):
            if not fut.done():
                fut.set_exception(exc if self._failed is None else self._failed(item, exc))
        for fut in barriers:
            if not fut.done():
                fut.set_exception(exc)

    def _log_failure(self, callers: int, exc: BaseException) -> None:
        self.failures += 1
        text, now = str(exc) or type(exc).__name__, time.monotonic()
        if self._logged is not None and self._logged[0] == text and now - self._logged[1] < QUIET_S:
            self._quiet += 1
            return
        also = f" ({self._quiet} more failed batches not logged)" if self._quiet else ""
        log.error("%s commit failed (%d callers fail with it): %s%s", self.name, callers, text, also)
        self._logged, self._quiet = (text, now), 0
