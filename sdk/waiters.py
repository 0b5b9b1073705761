"""Cross-thread hand-offs of the SDK: batched mailboxes into an event loop, and call waiters.

Why: a ``loop.call_soon_threadsafe`` per call wakes the target loop once per call; under
load (16 calls in flight, many handler threads) the wake-ups, not the work, dominate. A
``Mailbox`` wakes its loop once per batch: posters append to a deque and only the first
poster after a drain schedules the drain.

Invariants:
- ``Mailbox.post`` may be called from any thread; every posted item runs exactly once, on
  the mailbox's loop, in posting order. The ``scheduled`` flag is cleared *before* the
  drain starts, so an item appended while a drain runs is either taken by that drain or
  schedules a new one (never lost). Relies on the GIL making deque append/popleft and an
  attribute store atomic.
- A waiter settles at most once; later settles are ignored (``done()`` is True).
- ``SyncWaiter`` is a bare lock (no Condition, no callbacks): the blocked caller thread is
  woken by one lock release. ``LoopWaiter`` settles an ``asyncio.Future`` of another loop
  through that loop's mailbox.
"""
from __future__ import annotations

import _thread
import asyncio
import logging
import weakref
from collections import deque
from typing import Any, Callable

log = logging.getLogger(__name__)


class Mailbox:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._items: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._scheduled = False
        self.after_drain: Callable[[], None] | None = None

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Any thread: run ``fn(*args)`` on the loop soon. Raises RuntimeError if it is closed."""
        if self.loop.is_closed():  # checked first: a drain scheduled before the close never runs
            raise RuntimeError("Event loop is closed")
        self._items.append((fn, args))
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        items = self._items
        while items:
            fn, args = items.popleft()
            try:
                fn(*args)
            except Exception:  # one failing item must not strand the rest
                log.exception("SDK operation failed")
        if self.after_drain is not None:
            self.after_drain()


_loop_mailboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Mailbox] = weakref.WeakKeyDictionary()


def mailbox_of(loop: asyncio.AbstractEventLoop) -> Mailbox:
    """The mailbox of a caller's loop (one per loop, created on first use)."""
    box = _loop_mailboxes.get(loop)
    if box is None:
        box = _loop_mailboxes[loop] = Mailbox(loop)
    return box


class SyncWaiter:
    """The result slot of one blocking ``trigger``: a lock the caller waits on."""

    __slots__ = ("_lock", "_done", "_value", "_exc")

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._lock.acquire()
        self._done = False
        self._value: Any = None
        self._exc: BaseException | None = None

    def done(self) -> bool:
        return self._done

    def set_result(self, value: Any) -> None:
        if not self._done:
            self._value, self._done = value, True
            self._lock.release()

    def set_exception(self, exc: BaseException) -> None:
        if not self._done:
            self._exc, self._done = exc, True
            self._lock.release()

    def wait(self, timeout: float) -> bool:
        """True once settled, False if ``timeout`` seconds passed first."""
        return self._lock.acquire(timeout=timeout)

    def result(self) -> Any:
        if self._exc is not None:
            raise self._exc
        return self._value


def settle(waiter: Any, value: Any, exc: BaseException | None) -> None:
    """Settle any waiter (``SyncWaiter``, ``LoopWaiter``, a future) with ``exc`` if set, else
    ``value``; a settled one (a future whose awaiting task was cancelled) and None are skipped."""
    if waiter is None or waiter.done():
        return
    if exc is not None:
        waiter.set_exception(exc)
    else:
        waiter.set_result(value)


class LoopWaiter:
    """Settles ``fut`` (a future of another event loop) through that loop's mailbox."""

    __slots__ = ("_fut", "_box", "_done")

    def __init__(self, fut: asyncio.Future[Any]) -> None:
        self._fut = fut
        self._box = mailbox_of(fut.get_loop())
        self._done = False

    def done(self) -> bool:
        return self._done

    def _post(self, value: Any, exc: BaseException | None) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._box.post(settle, self._fut, value, exc)
        except RuntimeError:
            pass  # the caller's loop is closed: nobody is waiting any more

    def set_result(self, value: Any) -> None:
        self._post(value, None)

    def set_exception(self, exc: BaseException) -> None:
        self._post(None, exc)
