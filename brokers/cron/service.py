"""The cron process (``iii-cron``): the ``cron`` trigger type on the bus, one timer for every job.

The I/O around ``core.Scheduler``: bindings from the router become jobs; one loop timer is
armed for ``next_wake()`` (capped at ``MAX_SLEEP_S``, so a wall clock stepped forward is
noticed soon); on waking, every due job's tick runs as the reference's loop runs it
(workers-a §6.3):

  1. the fired mark is stored (``store.FiredMark``, on the ``cron-mark`` thread) before any
     tick it covers is invoked, one ``fdatasync`` per tick second;
  2. the locks of the tick's jobs are taken at once (``locks.acquire_many``); a job whose lock
     is held skips this tick;
  3. the payload is built at that moment; a condition, if set, is called first in the
     binding's namespace with the same payload, and only JSON ``false`` or an error skips;
  4. the handler is called in the binding's namespace with the binding's metadata, and its
     answer awaited (a future and a callback per call, no task); its value is ignored;
  5. the lock is released and the job's next tick computed, strictly after now.

On the ``redis`` adapter (``redis_lock.py``) the lock of step 2 is one per job and tick in the
shared Redis, taken by one host only and never released (step 5 gives nothing back): each
tick of a trigger id bound on several hosts fires once across them.

Nothing fires before this process has its first route table: a restarted process would see
every function as missing. Failures are logged, the first of a streak per job as a WARNING,
then at DEBUG until the job succeeds again (a per-second job for a function that is gone
writes one line, not one a second).

After a router restart the router delivers every binding again: the same binding keeps its
job; jobs not delivered again within ``REPLAY_WINDOW_S`` are dropped (``core`` module doc).
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from brokers.cron import core
from brokers.cron.config import store_dir
from brokers.cron.locks import KvLocks
from brokers.cron.redis_lock import RedisLocks
from brokers.kit import redisconn
from brokers.cron.store import FiredMark
from brokers.kit.broker import Broker, BusFactory, run
from brokers.kit.errors import EngineError
from brokers.kit.units import RunContext

log = logging.getLogger(__name__)

MAX_SLEEP_S = 10.0
REPLAY_WINDOW_S = 10.0


class CronBroker(Broker):
    """``iii-cron``: one scheduler, one lock adapter, one fired mark."""

    worker_name = "iii-cron"

    def __init__(self, ctx: RunContext, *, bus: BusFactory | None = None) -> None:
        super().__init__(ctx, bus=bus)
        self.cfg: dict[str, Any] = ctx.config
        self.locks: Any
        if self.cfg.get("locks") == "redis":  # once per tick across hosts (redis_lock.py)
            client = redisconn.connect(self.cfg["redis_url"], socket_connect_timeout=5)
            self.locks = RedisLocks(client, redisconn.host_id(), self.cfg["lock_ttl_ms"])
        else:
            self.locks = KvLocks(self.cfg["lock_ttl_ms"], self.cfg["lock_index"])
        self.scheduler = core.Scheduler()
        self.mark: FiredMark | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: int | None = None
        self._arm_pending = False
        self._sweep_timer: asyncio.TimerHandle | None = None
        self._streaks: dict[str, int] = {}
        """job id -> failures in a row (the log throttle)."""
        self.runs = 0
        """Ticks whose run finished (invoked or skipped by its condition), for tests."""

    # ---- lifecycle ----------------------------------------------------------------------

    async def setup(self) -> None:
        path = store_dir(self.cfg, self.ctx.data_dir)
        if path is not None:
            self.mark = FiredMark(path)
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="cron-mark")
            self.scheduler.floor = self.mark.value
            log.info("iii-cron fired mark at %s", self.mark.path)
        else:
            log.warning("iii-cron keeps no fired mark (store_method: in_memory)")
        self.trigger_type(core.TRIGGER_TYPE, core.DESCRIPTION, on_register=self._on_bind,
                          on_unregister=self._on_unbind, config=core.CONFIG)

    async def started(self) -> None:
        await super().started()
        asyncio.ensure_future(self._arm_when_routed())

    async def _arm_when_routed(self) -> None:
        await self.routes_known.wait()
        self._arm()

    async def stopping(self) -> None:
        self.scheduler.closed = True
        for handle in (self._timer, self._sweep_timer):
            if handle is not None:
                handle.cancel()
        self._timer = self._sweep_timer = None

    async def teardown(self) -> None:
        if self._writer is not None:
            self._writer.shutdown(wait=True)
        if self.mark is not None:
            self.mark.close()
        if isinstance(self.locks, RedisLocks):
            await self.locks.close()

    # ---- bindings -----------------------------------------------------------------------

    def _on_bind(self, binding: dict) -> None:
        job = self.scheduler.add(core.job_spec(binding), time.time())
        spec = job.spec
        if job.next_at is None and not job.running:
            log.warning("cron job %s (%r -> %s) has no fire time left; it never fires",
                        spec.id, spec.expression, spec.function_id)
        else:
            log.info("cron job %s bound: %r -> %s", spec.id, spec.expression, spec.function_id)
        self._arm_soon()

    def _on_unbind(self, job_id: str) -> None:
        try:
            self.scheduler.remove(job_id)
        except EngineError as exc:
            log.debug("%s", exc.message)
        self._streaks.pop(job_id, None)

    def on_router_restart(self) -> None:
        self.scheduler.begin_replay()
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
        self._sweep_timer = asyncio.get_running_loop().call_later(REPLAY_WINDOW_S, self._sweep)

    def _sweep(self) -> None:
        self._sweep_timer = None
        bindings = self.trigger_types[core.TRIGGER_TYPE].bindings
        for job_id in self.scheduler.sweep():
            bindings.pop(job_id, None)
            self._streaks.pop(job_id, None)
            log.info("cron job %s dropped: the restarted router did not deliver it again", job_id)

    # ---- the timer ----------------------------------------------------------------------

    def _arm_soon(self) -> None:
        if not self._arm_pending:
            self._arm_pending = True
            asyncio.get_running_loop().call_soon(self._arm)

    def _arm(self) -> None:
        self._arm_pending = False
        if not self.routes_known.is_set() or self.scheduler.closed:
            return
        at = self.scheduler.next_wake()
        if self._timer is not None:
            if at == self._timer_at:
                return
            self._timer.cancel()
            self._timer = None
        if at is None:
            return
        delay = min(max(0.0, at - time.time()), MAX_SLEEP_S)
        self._timer_at = at
        self._timer = asyncio.get_running_loop().call_later(delay, self._wake)

    def _wake(self) -> None:
        self._timer = self._timer_at = None
        fires = self.scheduler.due(time.time())
        if fires:
            tick = max(f.scheduled for f in fires)
            if self.mark is not None and tick > self.mark.value:
                asyncio.ensure_future(self._store_then_fire(fires, tick))
            else:
                self._fire_all(fires)
        self._arm()

    async def _store_then_fire(self, fires: list[core.Fire], tick: int) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self._writer, self.mark.save, tick)
        except OSError as exc:  # the ticks still run: the mark guards clock steps only
            log.error("cron: cannot store the fired mark in %s: %s", self.mark.path, exc)
        self._fire_all(fires)

    # ---- one tick -----------------------------------------------------------------------

    def _fire_all(self, fires: list[core.Fire]) -> None:
        granted = self.locks.acquire_many([f.job.spec.id for f in fires], int(time.time() * 1000),
                                          [f.scheduled for f in fires])
        if inspect.isawaitable(granted):  # an adapter with a round trip (redis)
            asyncio.ensure_future(self._fire_when_locked(fires, granted))
            return
        self._start_granted(fires, granted)

    async def _fire_when_locked(self, fires: list[core.Fire], granted: Any) -> None:
        self._start_granted(fires, await granted)

    def _start_granted(self, fires: list[core.Fire], granted: list[bool]) -> None:
        for fire, ok in zip(fires, granted):
            if not ok:
                log.debug("cron job %s: lock held, tick %d skipped", fire.job.spec.id, fire.scheduled)
                self.scheduler.finished(fire.job, time.time())
            elif self.scheduler.closed:
                self._done(fire)
            else:
                self._start(fire)
        self._arm_soon()

    def _start(self, fire: core.Fire) -> None:
        spec = fire.job.spec
        data = core.payload(spec.id, fire.scheduled, time.time_ns())
        if spec.condition_function_id is None:
            self._invoke(fire, data)
            return
        fut = self._call(fire, spec.condition_function_id, data, None)
        if fut is not None:
            fut.add_done_callback(partial(self._after_condition, fire, data))

    def _after_condition(self, fire: core.Fire, data: dict, fut: asyncio.Future) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self._failed(fire, fire.job.spec.condition_function_id, fut, logging.ERROR)
            self._done(fire)
        elif not core.condition_allows(fut.result()):
            self._done(fire)
        else:
            self._invoke(fire, data)

    def _invoke(self, fire: core.Fire, data: dict) -> None:
        fut = self._call(fire, fire.job.spec.function_id, data, fire.job.spec.metadata)
        if fut is not None:
            fut.add_done_callback(partial(self._after_handler, fire))

    def _after_handler(self, fire: core.Fire, fut: asyncio.Future) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self._failed(fire, fire.job.spec.function_id, fut, logging.WARNING)
        else:
            streak = self._streaks.pop(fire.job.spec.id, 0)
            if streak:
                log.info("cron job %s: %s answered again after %d failed tick%s", fire.job.spec.id,
                         fire.job.spec.function_id, streak, "s" if streak > 1 else "")
        self._done(fire)

    def _call(self, fire: core.Fire, function_id: str, data: dict, metadata: Any) -> asyncio.Future | None:
        try:
            return self.call_future(function_id, data, namespace=fire.job.spec.namespace, metadata=metadata)
        except EngineError as exc:  # not routable: no call went out
            self._failed(fire, function_id, exc, logging.WARNING)
            self._done(fire)
            return None

    def _failed(self, fire: core.Fire, function_id: str | None, outcome: Any, level: int) -> None:
        exc = outcome if isinstance(outcome, BaseException) else (
            EngineError("invocation_stopped", "cancelled") if outcome.cancelled() else outcome.exception())
        job_id = fire.job.spec.id
        streak = self._streaks.get(job_id, 0) + 1
        self._streaks[job_id] = streak
        what = f"{getattr(exc, 'code', type(exc).__name__)}: {getattr(exc, 'message', exc)}"
        log.log(level if streak == 1 else logging.DEBUG, "cron job %s: %s failed at tick %s: %s%s",
                job_id, function_id, core.rfc3339(fire.scheduled * 1_000_000_000), what,
                " (further failures in a row are logged at debug)" if streak == 1 else "")

    def _done(self, fire: core.Fire) -> None:
        self.runs += 1
        self.locks.release(fire.job.spec.id)
        self.scheduler.finished(fire.job, time.time())
        self._arm_soon()


def main(ctx: RunContext) -> None:
    """Process entry point (``UNIT.main``)."""
    run(CronBroker, ctx)
