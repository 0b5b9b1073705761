"""The state broker process: ``state::*`` on the bus, group-committed to LMDB, and the
``state`` trigger type.

Write path (group commit, the kit's ``GroupCommitter``): a write call is decoded at once
(bad input fails alone and writes nothing), then submitted. Everything submitted while no
batch runs goes to ONE ``store.apply_batch`` on the dedicated ``state-writer`` thread (one
transaction, one fsync; LMDB releases the GIL, so reads and new calls are served meanwhile
and pile up into the next batch), and only after that commit are the batch's calls
resolved, each with its own outcome, so every ack follows its fsync. The in-memory store
applies its batches inline on the loop.

Trigger fan-out: after a commit, each successful write's event goes to the matching
bindings (filters read at commit time). Events queue per (binding, scope, key) and one
task per queue delivers them in commit order, condition first (§0: only JSON ``false`` or
a condition error skips), each handler awaited for at most ``TRIGGER_CALL_TIMEOUT_S``; so a
stuck handler delays only its own binding, never another worker's. Handler errors are
logged, never returned to writers, and the writer never waits for fan-out. Both calls carry the ``traceparent``/``baggage``
of the write that caused the event (protocol §9.1; we create no spans).

Served in place (issue 20, inplace.py): with the LMDB store, the gateways answer a
worker's ``state::get/set/update/delete`` themselves on this same store, group-committed by
the same ``store.group_committer``, and send each committed batch's events here (frame
``EVENTS``): ``_on_events`` counts their scopes and fans them out as this process's own
commits are. What still comes here: those calls from other engine processes (a queue
delivery, a trigger), ``state::list``, ``state::list_groups``, a gateway's calls before it
could open the store, and every call with the in-memory store or Redis. Why: a call through
this process crossed the bus twice on top of the WebSocket round trip; on this 2-core VM
each crossing costs cross-CPU wake-ups of the loop and ZeroMQ's I/O threads, more than
the write itself (issue 20, same-run ratios: state::set at 16 in flight went from 0.42x to
0.77x of Redis SET with ``appendfsync always``, state::get from 0.50x to 1.21x). What is
left per write is LMDB's commit: two fdatasyncs (data pages, then the meta page; one would
risk losing or corrupting an acked write on power loss), 590-640 us p50 idle here against
270-290 us for one append and fdatasync, which is Redis's way.
With ``adapter: {name: redis}`` the store is Redis (redis_store.py), shared by every engine
host on it: each write is one script that also appends the change event to a capped Redis
stream, and triggers fire from that stream on every host (redis_events.py) instead of after
the commit here, so a binding on any host fires once per write through any host. The
fan-out below (queues per binding and key, conditions, timeouts) is the same for both.

Profile with ``III_STATE_PROFILE=/path``: cProfile of the loop thread, dumped to
``/path.<pid>`` on a clean stop.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Sequence

import orjson

from brokers.state import core
from brokers.state.config import store_path
from brokers.state import inplace
from brokers.state.store import Store, group_committer, open_store
from brokers.kit.commit import GroupCommitter
from brokers.kit.broker import Broker, BusFactory, Call, Trace, run
from brokers.kit.errors import EngineError
from brokers.kit.units import RunContext

if TYPE_CHECKING:  # redis is imported only by a process that uses it
    from brokers.state.redis_store import RedisStore

log = logging.getLogger(__name__)

PROFILE_ENV = "III_STATE_PROFILE"
BINDINGS_GRACE_S = 0.5
"""Redis adapter: how long after the first route table the event reader waits before it
fires, so the bindings the router sends again after a restart are installed first."""
TRIGGER_CALL_TIMEOUT_S = 30.0
"""A trigger's condition or handler that has not answered by then is given up (logged):
the next event of that binding and key goes out."""

_DESCRIPTIONS = {
    core.SET: "Set a value in state", core.GET: "Get a value from state",
    core.DELETE: "Delete a value from state", core.UPDATE: "Update a value in state with ops",
    core.LIST: "List all values in a scope", core.LIST_GROUPS: "List all scopes",
}


class StateBroker(Broker):
    """``iii-state``: one process, one store, one writer."""

    worker_name = "iii-state"

    def __init__(self, ctx: RunContext, *, bus: BusFactory | None = None) -> None:
        super().__init__(ctx, bus=bus)
        self.cfg: dict[str, Any] = ctx.config
        self.store: Store | None = None
        self.committer: GroupCommitter[tuple[core.Write, Trace], core.Outcome] | None = None
        self.state_triggers: dict[str, tuple[core.TriggerConfig, dict, float]] = {}
        """Binding id -> (its config, the binding, when it was bound: monotonic; events of
        writes committed in place before that do not fire it, ``_on_events``)."""
        self._events: dict[tuple[str, str], deque] = {}
        self.batches = 0
        self._profile: Any = None
        self.redis: RedisStore | None = None
        self._reader: asyncio.Task | None = None
        self.events: Any = None
        """Redis adapter: the reader of the cluster's change events (redis_events.py)."""

    # ------------------------------------------------------------ lifecycle

    async def setup(self) -> None:
        if os.environ.get(PROFILE_ENV):  # cProfile of the loop thread, dumped at teardown
            import cProfile
            self._profile = cProfile.Profile()
            self._profile.enable()
        if self.cfg["store"] == "redis":
            await self._setup_redis()
            return
        path = store_path(self.cfg, self.ctx.data_dir)
        self.store = open_store(path)
        if path is None:
            log.warning("iii-state uses the in-memory store: nothing is persisted")
        else:
            log.info("iii-state store at %s", path)
        self.committer = group_committer(self.store, self._committed)
        self._kinds[inplace.EVENTS] = self._on_events
        self._declare(self._write_handler, self._get, self._list, self._list_groups)

    def _declare(self, write_handler: Any, get: Any, list_: Any, list_groups: Any) -> None:
        for fn in (core.SET, core.DELETE, core.UPDATE):
            self.function(fn, write_handler(fn), description=_DESCRIPTIONS[fn],
                          input=core.INPUTS[fn])
        for fn, handler in ((core.GET, get), (core.LIST, list_), (core.LIST_GROUPS, list_groups)):
            self.function(fn, handler, description=_DESCRIPTIONS[fn], input=core.INPUTS[fn])
        self.trigger_type(core.TRIGGER_TYPE, "State change trigger", on_register=self._on_bind,
                          on_unregister=self._on_unbind, config=core.TRIGGER_CONFIG)

    async def _setup_redis(self) -> None:
        from brokers.kit.redisconn import host_id
        from brokers.state.redis_events import EventReader
        from brokers.state.redis_store import EVENTS_KEY, RedisStore, describe
        self.redis = RedisStore(self.cfg["redis_url"], events_maxlen=self.cfg["events_maxlen"])
        self.events = EventReader(self.redis.client, host_id(), self._stream_event, stream=EVENTS_KEY)
        try:
            await self.redis.ping()
            # Before the trigger type is announced: no write after a binding is missed.
            await self.events.ensure_group()
            log.info("iii-state store on redis at %s", describe(self.cfg["redis_url"]))
        except Exception as exc:  # writes fail with their *_ERROR until Redis answers
            log.error("iii-state: redis at %s does not answer: %s", describe(self.cfg["redis_url"]), exc)
        self._declare(self._redis_write_handler, self._redis_get, self._redis_list,
                      self._redis_list_groups)

    async def started(self) -> None:
        await super().started()
        if self.redis is not None:
            self._reader = asyncio.ensure_future(self._read_events())

    async def _read_events(self) -> None:
        try:
            await asyncio.wait_for(self.routes_known.wait(), 10)
        except asyncio.TimeoutError:
            pass
        await asyncio.sleep(BINDINGS_GRACE_S)
        log.info("iii-state: firing state triggers from %s as consumer group %s",
                 self.events.stream.decode(), self.events.group)
        await self.events.run()

    async def teardown(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except BaseException:
                pass
        if self.redis is not None:
            try:
                await self.redis.close()
            except Exception as exc:
                log.warning("iii-state: closing redis: %s", exc)
        if self.committer is not None:
            # Commit whatever was accepted before the stop; no ack can leave any more.
            try:
                await self.committer.flush()
            except Exception:  # logged by the committer; the batch's callers got the error
                pass
            self.committer.close()
        if self.store is not None:
            self.store.close()
        if self._profile is not None:
            self._profile.disable()
            self._profile.dump_stats(f"{os.environ[PROFILE_ENV]}.{os.getpid()}")

    # ------------------------------------------------------------ functions

    def _write_handler(self, function_id: str):
        def handler(call: Call) -> asyncio.Future:
            write = core.decode_call(function_id, call.data, self.cfg["max_value_bytes"])
            return self.committer.submit((write, call.trace))
        return handler

    def _get(self, call: Call) -> Any:
        req = core.decode_call(core.GET, call.data)
        return core.raw_get_result(self.store.get_raw(req.scope, req.key))

    def _list(self, call: Call) -> Any:
        req = core.decode_call(core.LIST, call.data)
        return self.store.list(req.scope)

    def _list_groups(self, call: Call) -> Any:
        core.decode_call(core.LIST_GROUPS, call.data)
        return core.list_groups_result(self.store.list_groups())

    # ------------------------------------------------------------ functions on redis

    def _redis_write_handler(self, function_id: str):
        def handler(call: Call) -> asyncio.Future:
            write = core.decode_call(function_id, call.data, self.cfg["max_value_bytes"])
            done = asyncio.get_running_loop().create_future()

            def settle(fut: asyncio.Future) -> None:
                if done.done():
                    return
                if fut.cancelled():
                    done.cancel()
                    return
                try:
                    done.set_result(core.write_result(fut.result()))
                except BaseException as exc:
                    done.set_exception(exc)
            self.redis.submit(write, call.trace).add_done_callback(settle)
            return done
        return handler

    async def _redis_get(self, call: Call) -> Any:
        req = core.decode_call(core.GET, call.data)
        try:
            value = await self.redis.get(req.scope, req.key)
        except Exception as exc:
            raise EngineError("GET_ERROR", f"Failed to get value: {exc}") from None
        return core.get_result(value)

    async def _redis_list(self, call: Call) -> Any:
        req = core.decode_call(core.LIST, call.data)
        try:
            return await self.redis.list(req.scope)
        except Exception as exc:
            raise EngineError("LIST_ERROR", f"Failed to list values: {exc}") from None

    async def _redis_list_groups(self, call: Call) -> Any:
        core.decode_call(core.LIST_GROUPS, call.data)
        try:
            groups = await self.redis.list_groups()
        except Exception as exc:
            raise EngineError("LIST_GROUPS_ERROR", f"Failed to list groups: {exc}") from None
        return core.list_groups_result(groups)

    def _stream_event(self, scope: str, key: str, event: dict, trace: Trace) -> None:
        """One change from the cluster's event stream (any host's write): fire this host's
        bindings."""
        if self.cfg["triggers_enabled"] and self.state_triggers:
            self._enqueue(scope, key, lambda: event, trace)

    # ------------------------------------------------------------ group commit

    def _committed(self, batch: list[tuple[core.Write, Trace]], outcomes: Sequence[core.Outcome]) -> None:
        """After the batch's calls are answered: count it, fan its events out in commit order."""
        self.batches += 1
        if self.cfg["triggers_enabled"] and self.state_triggers:
            for (_, trace), outcome in zip(batch, outcomes):
                if outcome.failure is None and not outcome.replayed:
                    self._enqueue_event(outcome, trace)

    def _on_events(self, sender: str, header: dict, body: bytes) -> None:
        """A batch a gateway committed in place (inplace.py): its scopes, and its events
        fanned out as this process's own commits are."""
        self.store.note_scopes(header.get("scopes") or ())
        if not (self.cfg["triggers_enabled"] and self.state_triggers):
            return
        try:
            events = orjson.loads(body)
        except orjson.JSONDecodeError:
            log.warning("iii-state: undecodable change events from %s dropped", sender)
            return
        for scope, key, event, traceparent, baggage, at in events:
            self._enqueue(scope, key, lambda event=event: event, (traceparent, baggage), committed_at=at)

    # ------------------------------------------------------------ triggers

    def _on_bind(self, binding: dict) -> None:
        self.state_triggers[binding["id"]] = (core.parse_trigger_config(binding["config"]), binding,
                                              time.monotonic())
        log.info("state trigger %s bound to %s", binding["id"], binding["function_id"])

    def _on_unbind(self, trigger_id: str) -> None:
        self.state_triggers.pop(trigger_id, None)

    def _enqueue_event(self, outcome: core.Outcome, trace: Trace) -> None:
        self._enqueue(outcome.write.scope, outcome.write.key, lambda: core.event_for(outcome), trace)

    def _enqueue(self, scope: str, key: str, make_event: Any, trace: Trace,
                 committed_at: float | None = None) -> None:
        """``committed_at`` (monotonic, this host's clock): when a gateway committed the
        write in place; a binding made after that does not fire for it, as a binding made
        after one of this process's own commits does not."""
        event = None
        for cfg, binding, bound_at in self.state_triggers.values():
            if not cfg.matches(scope, key) or (committed_at is not None and bound_at > committed_at):
                continue
            event = event or make_event()
            # One queue per (binding, key): its events go out in commit order, and a
            # handler that is slow or never answers holds up only its own binding.
            slot = (binding["id"], scope, key)
            pending = self._events.get(slot)
            if pending is not None:
                pending.append((event, trace))  # its task is running and delivers in order
                continue
            self._events[slot] = deque([(event, trace)])
            asyncio.ensure_future(self._deliver(slot, cfg, binding))

    async def _deliver(self, slot: tuple[str, str, str], cfg: core.TriggerConfig, binding: dict) -> None:
        pending = self._events[slot]
        try:
            while pending:
                event, trace = pending.popleft()
                await self._fire(cfg, binding, event, trace)
        finally:
            del self._events[slot]

    async def _fire(self, cfg: core.TriggerConfig, binding: dict, event: dict, trace: Trace) -> None:
        namespace = binding.get("namespace") or "default"
        traceparent, baggage = trace
        if cfg.condition_function_id:
            try:
                verdict = await self.call(cfg.condition_function_id, event, namespace=namespace,
                                          traceparent=traceparent, baggage=baggage,
                                          timeout=TRIGGER_CALL_TIMEOUT_S)
            except Exception as exc:  # an erroring condition skips the handler (§0)
                log.error("state trigger %s: condition %s failed: %s", binding["id"],
                          cfg.condition_function_id, exc or "timed out")
                return
            if not core.condition_allows(verdict):
                return
        try:
            await self.call(binding["function_id"], event, namespace=namespace,
                            metadata=binding.get("metadata"), traceparent=traceparent, baggage=baggage,
                            timeout=TRIGGER_CALL_TIMEOUT_S)
        except Exception as exc:  # logged only; never reaches the writer
            log.warning("state trigger %s: handler %s failed: %s", binding["id"],
                        binding["function_id"], exc or "timed out")


def main(ctx: RunContext) -> None:
    """Process entry point (``UNIT.main``)."""
    run(StateBroker, ctx)
