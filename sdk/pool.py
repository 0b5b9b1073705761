"""The thread pool that runs sync ``def`` handlers off the SDK loop.

Why not ``concurrent.futures.ThreadPoolExecutor``: it refuses new work once the main thread
has finished (its atexit hook runs at interpreter shutdown), and a worker script's main
thread typically finishes right after registering its functions while the non-daemon loop
thread keeps serving. Invariants: threads are daemon and started lazily up to ``max_threads``
(a new one only when none is idle); a job's outcome goes to its ``on_done(value, exc)``,
called on the pool thread (the shell posts it to its loop's mailbox, batching the hops
back); a job never raises into the pool.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import Any, Callable

from sdk.waiters import settle

log = logging.getLogger(__name__)


class HandlerPool:
    def __init__(self, max_threads: int = 64, name: str = "iii-handler") -> None:
        self.max_threads = max_threads
        self.name = name
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._closed = False

    def run(self, loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Loop thread: run ``fn(*args)`` on a pool thread; the future settles on ``loop``."""
        fut: asyncio.Future[Any] = loop.create_future()

        def done(value: Any, exc: BaseException | None) -> None:
            try:
                loop.call_soon_threadsafe(settle, fut, value, exc)
            except RuntimeError:
                pass  # the loop is closed: the worker shut down meanwhile
        self.submit(fn, args, done)
        return fut

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...],
               on_done: Callable[[Any, BaseException | None], None]) -> None:
        """Run ``fn(*args)`` on a pool thread, then ``on_done(value, exc)`` on that thread."""
        self._jobs.put((fn, args, on_done))
        with self._lock:
            if self._idle == 0 and self._threads < self.max_threads and not self._closed:
                self._threads += 1
                threading.Thread(target=self._work, name=f"{self.name}-{self._threads}", daemon=True).start()
            elif self._idle > 0:
                self._idle -= 1  # an idle thread will take this job

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, args, on_done = job
            try:
                value, exc = fn(*args), None
            except BaseException as e:  # noqa: BLE001 - handed to on_done
                value, exc = None, e
            try:
                on_done(value, exc)
            except Exception:  # on_done must not kill the pool thread
                log.exception("handler completion failed")
            value = exc = job = fn = args = on_done = None  # drop references before blocking on the next job
            with self._lock:
                self._idle += 1

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            for _ in range(self._threads):
                self._jobs.put(None)
