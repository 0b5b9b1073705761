"""The stream broker process: ``stream::*`` on the bus, group-committed to LMDB, the
``stream``, ``stream:join`` and ``stream:leave`` trigger types, and the subscriber socket
(``socket.py``).

Writes: decoded at once (bad input fails alone), then submitted to the kit's
``GroupCommitter`` over the state broker's store (one transaction and one fsync per batch,
on the ``stream-writer`` thread); a writer is answered only after its batch is on disk.
After the commit each write's event (§3.4) goes, in commit order, to the matching
``stream`` bindings and then to the subscribers. ``stream::send`` stores nothing and
emits at once.

Custom providers (§3.2): when ``stream::<op>(<stream>)`` is routed, ``set``, ``get``,
``delete``, ``update``, ``list`` and ``list_groups`` of that stream are forwarded to it with
the caller's input; a write's answer is checked (``core.custom_result``) and its event
fires from it. The sync of a join reads through the provider too.

Trigger fan-out: one queue per ``stream`` binding, delivered in order by one task, the
condition first (§0), each call awaited for at most ``core.CALL_TIMEOUT_S``; a slow
handler holds up only its own binding. Join bindings are awaited in turn at each join
(any ``{unauthorized: true}`` refuses it); leave bindings fire without waiting.

On the ``redis`` adapter (``redis_store.py``, issue 19) there is no local store and no
committer: each write is one Lua script on the shared Redis that also announces its event;
this process pushes to its subscribers only what it receives on ``stream::events`` (a write
through any host, this one included, reaches every host's subscribers once) and fires its
``stream`` bindings only from what it reads of ``iii:stream-changes`` with its host's own
consumer group (each event once per host, acknowledged after it is queued for its bindings).
A join subscribes, then reads the group from Redis and sends the sync (a push may come just
before the sync: at least once, never missed).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

import orjson
from typing import Any, Sequence
from urllib.parse import urlsplit

from brokers.kit.broker import NO_TRACE, Broker, BusFactory, Call, Trace, run
from brokers.kit.commit import GroupCommitter
from brokers.kit.errors import EngineError
from brokers.kit.ops import MISSING
from brokers.kit import listen, redisconn
from brokers.kit.redisconn import Backoff
from brokers.kit.units import RunContext
from brokers.state.core import Outcome, Write
from brokers.state.store import LmdbStore, Store, batch_failure, open_store
from brokers.stream import core
from brokers.stream.config import store_path
from brokers.stream.redis_store import CHANGES, EVENTS_CHANNEL, RedisStreams, is_redis_error
from brokers.stream.socket import SubscriberServer
from brokers.stream.subs import Subscription

log = logging.getLogger(__name__)

_DESCRIPTIONS = {
    core.SET: "Set a value in a stream", core.GET: "Get a value from a stream",
    core.DELETE: "Delete a value from a stream", core.UPDATE: "Update a stream value with ops",
    core.LIST: "List the items of a stream group", core.LIST_GROUPS: "List the groups of a stream",
    core.LIST_ALL: "List every stream and its groups", core.SEND: "Send a custom event to a stream",
}


class StreamBroker(Broker):
    """``iii-stream``: one process, one store, one writer, one subscriber socket."""

    worker_name = "iii-stream"

    def __init__(self, ctx: RunContext, *, bus: BusFactory | None = None) -> None:
        super().__init__(ctx, bus=bus)
        self.cfg: dict[str, Any] = ctx.config
        self.store: Store | None = None
        self.committer: GroupCommitter[tuple[Write, Trace], Outcome] | None = None
        self.socket = SubscriberServer(self, self.cfg)
        self.by_stream: dict[str, dict[str, tuple[core.TriggerConfig, dict]]] = {}
        self.joins: dict[str, dict] = {}
        self.leaves: dict[str, dict] = {}
        self._queues: dict[str, deque] = {}
        self._listener: Any = None
        self.redis: RedisStreams | None = None
        self._tasks: list[asyncio.Task] = []
        self._events_ready = asyncio.Event()

    @staticmethod
    def now_ms() -> int:
        return int(time.time() * 1000)

    # ------------------------------------------------------------ lifecycle

    async def setup(self) -> None:
        self._listener = listen.listener(self.cfg["host"], self.cfg["port"])  # fail fast
        if self.cfg["store"] == "redis":
            self.redis = RedisStreams(redisconn.connect(self.cfg["redis_url"], socket_connect_timeout=5))
            self.host = redisconn.host_id()
            await self._create_group()
            log.info("iii-stream on Redis at %s (host %s)", _shown(self.cfg["redis_url"]), self.host)
        else:
            path = store_path(self.cfg, self.ctx.data_dir)
            self.store = open_store(path)
            if path is None:
                log.warning("iii-stream uses the in-memory store: nothing is persisted")
            else:
                log.info("iii-stream store at %s", path)
            thread = "stream-writer" if isinstance(self.store, LmdbStore) else None
            self.committer = GroupCommitter(self._apply, name="stream", thread=thread,
                                            settle=core.write_result, committed=self._committed,
                                            failed=lambda item, exc: _failure(item[0], exc))
        handlers = {core.SET: self._write, core.DELETE: self._write, core.UPDATE: self._write,
                    core.GET: self._get, core.LIST: self._list, core.LIST_GROUPS: self._list_groups,
                    core.LIST_ALL: self._list_all, core.SEND: self._send}
        for fn, handler in handlers.items():
            self.function(fn, handler, description=_DESCRIPTIONS[fn], input=core.INPUTS[fn])
        self.trigger_type(core.TRIGGER_TYPE, "Stream change trigger", on_register=self._on_bind,
                          on_unregister=self._on_unbind, config=core.TRIGGER_CONFIG)
        self.trigger_type(core.JOIN, "Stream subscription join trigger",
                          on_register=lambda b: self.joins.__setitem__(b["id"], b),
                          on_unregister=lambda tid: self.joins.pop(tid, None))
        self.trigger_type(core.LEAVE, "Stream subscription leave trigger",
                          on_register=lambda b: self.leaves.__setitem__(b["id"], b),
                          on_unregister=lambda tid: self.leaves.pop(tid, None))

    async def started(self) -> None:
        await super().started()
        if self.redis is not None:
            self._tasks = [asyncio.ensure_future(self._events_loop()),
                           asyncio.ensure_future(self._changes_loop())]
            try:  # subscribers connecting from now on miss no event
                await asyncio.wait_for(self._events_ready.wait(), 5.0)
            except asyncio.TimeoutError:
                log.error("iii-stream: not yet subscribed to %s on Redis; retrying", EVENTS_CHANNEL)
        await self.socket.start(self._listener)
        log.info("%s serving stream subscribers on %s:%s", self.name, self.cfg["host"], self.cfg["port"])

    async def stopping(self) -> None:
        await self.socket.close()

    async def teardown(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except BaseException:  # cancelled, or already logged
                pass
        if self.redis is not None:
            await self.redis.r.aclose()
        if self.committer is not None:
            try:
                await self.committer.flush()
            except Exception:  # logged by the committer; its callers got the error
                pass
            self.committer.close()
        if self.store is not None:
            self.store.close()

    # ------------------------------------------------------------ delegation (§3.2)

    def _provider(self, function_id: str, stream: str) -> str | None:
        name = f"{function_id}({stream})"
        return name if self.routes.get("default", name) is not None else None

    async def _delegated_write(self, fn: str, provider: str, call: Call, args: dict) -> Any:
        try:
            result = await self.call(provider, call.data, timeout=core.CALL_TIMEOUT_S,
                                     traceparent=call.traceparent, baggage=call.baggage)
        except EngineError as exc:
            raise core.failure(fn, exc.message) from None
        except asyncio.TimeoutError:
            raise core.failure(fn, "timed out") from None
        out = core.custom_result(fn, result)
        item = args["item_id"]
        new = out.get("new_value") if fn != core.DELETE else None
        old = MISSING if out.get("old_value") is None else out["old_value"]
        event = core.event_of(fn, args["stream_name"], args["group_id"], item, old, new, self.now_ms())
        if event is not None:
            if self.redis is not None:
                await self._redis_read(fn, self.redis.emit(event, call.trace))
            else:
                self.emit(event, call.trace)
        return out

    # ------------------------------------------------------------ functions

    def _write(self, call: Call) -> Any:
        fn = call.function_id
        args = core.INPUTS[fn].parse(call.data)
        provider = self._provider(fn, args["stream_name"])
        if provider is not None:
            return self._delegated_write(fn, provider, call, args)
        if self.redis is not None:
            return self._redis_write(fn, call, args)
        return self.committer.submit((core.decode_write(fn, call.data), call.trace))

    async def _redis_write(self, fn: str, call: Call, args: dict) -> Any:
        write = core.decode_write(fn, call.data)
        try:
            outcome = await self.redis.write(write, args["stream_name"], args["group_id"], call.trace,
                                             self.now_ms())
        except Exception as exc:
            if not is_redis_error(exc):
                raise
            raise core.failure(fn, f"redis: {exc}") from None
        return core.write_result(outcome)

    async def _redis_read(self, fn: str, awaitable: Any) -> Any:
        try:
            return await awaitable
        except Exception as exc:
            if not is_redis_error(exc):
                raise
            raise core.failure(fn, f"redis: {exc}") from None

    def _get(self, call: Call) -> Any:
        args = core.INPUTS[core.GET].parse(call.data)
        provider = self._provider(core.GET, args["stream_name"])
        if provider is not None:
            return self.call(provider, call.data, timeout=core.CALL_TIMEOUT_S)
        if self.redis is not None:
            return self._redis_read(core.GET, self.redis.get(args["stream_name"], args["group_id"], args["item_id"]))
        value = self.store.get(core.scope_of(args["stream_name"], args["group_id"]), args["item_id"])
        return None if value is MISSING else value

    def _list(self, call: Call) -> Any:
        args = core.INPUTS[core.LIST].parse(call.data)
        provider = self._provider(core.LIST, args["stream_name"])
        if provider is not None:
            return self.call(provider, call.data, timeout=core.CALL_TIMEOUT_S)
        if self.redis is not None:
            return self._redis_read(core.LIST, self.redis.list(args["stream_name"], args["group_id"]))
        return self.store.list(core.scope_of(args["stream_name"], args["group_id"]))

    def _list_groups(self, call: Call) -> Any:
        args = core.INPUTS[core.LIST_GROUPS].parse(call.data)
        provider = self._provider(core.LIST_GROUPS, args["stream_name"])
        if provider is not None:
            return self.call(provider, call.data, timeout=core.CALL_TIMEOUT_S)
        if self.redis is not None:
            return self._redis_read(core.LIST_GROUPS, self.redis.list_groups(args["stream_name"]))
        return core.list_groups_result(args["stream_name"], self.store.list_groups())

    def _list_all(self, call: Call) -> Any:
        core.INPUTS[core.LIST_ALL].parse(call.data)
        if self.redis is not None:
            return self._redis_read(core.LIST_ALL, self.redis.list_all())
        return core.list_all_result(self.store.list_groups())

    def _send(self, call: Call) -> Any:
        args = core.INPUTS[core.SEND].parse(call.data)
        if self.redis is not None:
            return self._redis_read(core.SEND, self.redis.emit(core.send_event(args, self.now_ms()), call.trace))
        self.emit(core.send_event(args, self.now_ms()), call.trace)
        return None

    # ------------------------------------------------------------ the subscriber socket's reads

    def snapshot_now(self, sub: Subscription) -> tuple[bool, Any]:
        """``(True, None)`` when a provider serves the stream, else ``(False, the sync data)``."""
        fn = core.GET if sub.item is not None else core.LIST
        if self._provider(fn, sub.stream) is not None or self.redis is not None:
            return True, None
        scope = core.scope_of(sub.stream, sub.group)
        if sub.item is None:
            return False, self.store.list(scope)
        value = self.store.get(scope, sub.item)
        return False, None if value is MISSING else value

    async def snapshot_custom(self, sub: Subscription) -> Any:
        """The sync data from the stream's custom provider, or from Redis."""
        fn = core.GET if sub.item is not None else core.LIST
        if self.redis is not None and self._provider(fn, sub.stream) is None:
            if sub.item is not None:
                return await self.redis.get(sub.stream, sub.group, sub.item)
            return await self.redis.list(sub.stream, sub.group)
        data: dict[str, Any] = {"stream_name": sub.stream, "group_id": sub.group}
        if sub.item is not None:
            data["item_id"] = sub.item
        return await self.call(f"{fn}({sub.stream})", data, timeout=core.CALL_TIMEOUT_S)

    # ------------------------------------------------------------ events

    def _apply(self, batch: list[tuple[Write, Trace]]) -> list[Outcome]:
        """One batch in one transaction (on the writer thread); nothing stored if it raises."""
        return self.store.apply_batch([write for write, _ in batch])

    def _committed(self, batch: list[tuple[Write, Trace]], outcomes: Sequence[Outcome]) -> None:
        now = self.now_ms()
        for (_, trace), outcome in zip(batch, outcomes):
            event = core.outcome_event(outcome, now)
            if event is not None:
                self.emit(event, trace)

    def emit(self, message: dict[str, Any], trace: Trace = NO_TRACE) -> None:
        """Triggers first, then subscribers (§3.1); neither makes the writer wait. Trigger
        calls carry the writer's ``traceparent``/``baggage`` (protocol §9.1)."""
        self.fire_triggers(message, trace)
        self.socket.push(message)

    def fire_triggers(self, message: dict[str, Any], trace: Trace = NO_TRACE) -> None:
        """Queue ``message`` for every matching ``stream`` binding of this process."""
        for cfg, binding in self.by_stream.get(message["streamName"], {}).values():
            if cfg.matches(message):
                self._enqueue(binding, cfg, (message, trace))

    # ------------------------------------------------------------ redis: the two feeds

    async def _create_group(self) -> None:
        """This host's consumer group on the change stream (created once, from now on)."""
        try:
            await self.redis.r.xgroup_create(CHANGES, self.host, id="$", mkstream=True)
        except Exception as exc:
            if not is_redis_error(exc):
                raise
            if "BUSYGROUP" in str(exc):
                return
            log.error("iii-stream: cannot create consumer group %s on Redis: %s", self.host, exc)

    async def _events_loop(self) -> None:
        """``stream::events`` -> this host's subscriber sockets."""
        backoff = Backoff()
        while True:
            pubsub = self.redis.r.pubsub()
            try:
                await pubsub.subscribe(EVENTS_CHANNEL)
                self._events_ready.set()
                backoff.reset()
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is None or msg.get("type") != "message":
                        continue
                    data = msg["data"]
                    try:
                        message = orjson.loads(data)
                        self.socket.push(message, raw=data)
                    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                        log.warning("iii-stream: unusable event on %s skipped: %s", EVENTS_CHANNEL, exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("iii-stream: %s subscription lost (%s); again in %.1fs", EVENTS_CHANNEL, exc, backoff.delay)
                await backoff.pause()
            finally:
                try:
                    await pubsub.aclose()
                except Exception:
                    pass

    async def _changes_loop(self) -> None:
        """``iii:stream-changes`` (this host's consumer group) -> this host's stream bindings.
        Entries delivered before a crash and not acknowledged are read again first."""
        await self.routes_known.wait()
        r, backoff, start = self.redis.r, Backoff(), "0"
        while True:
            try:
                resp = await r.xreadgroup(self.host, self.host, {CHANGES: start}, count=512,
                                          block=None if start == "0" else 1000)
                entries = [e for _, batch in resp or () for e in batch]
                if start == "0" and not entries:
                    start = ">"
                    continue
                ids = []
                for entry_id, fields in entries:
                    ids.append(entry_id)
                    if not fields:  # a pending entry trimmed away meanwhile
                        continue
                    try:
                        message = orjson.loads(fields[b"m"])
                    except (orjson.JSONDecodeError, KeyError) as exc:
                        log.warning("iii-stream: unusable change entry %s skipped: %s", entry_id, exc)
                        continue
                    trace = tuple((fields.get(k) or b"").decode() or None for k in (b"tp", b"bg"))
                    self.fire_triggers(message, trace)  # type: ignore[arg-type]
                if ids:
                    await r.xack(CHANGES, self.host, *ids)
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if "NOGROUP" in str(exc):
                    await self._create_group()
                log.warning("iii-stream: reading %s failed (%s); again in %.1fs", CHANGES, exc, backoff.delay)
                await backoff.pause()

    def _on_bind(self, binding: dict) -> None:
        cfg = core.parse_trigger_config(binding["config"])
        self._on_unbind(binding["id"])
        self.by_stream.setdefault(cfg.stream_name, {})[binding["id"]] = (cfg, binding)

    def _on_unbind(self, trigger_id: str) -> None:
        for stream, bound in list(self.by_stream.items()):
            if bound.pop(trigger_id, None) is not None and not bound:
                del self.by_stream[stream]

    def _enqueue(self, binding: dict, cfg: core.TriggerConfig, event: tuple[dict, Trace]) -> None:
        queue = self._queues.get(binding["id"])
        if queue is not None:
            queue.append(event)  # its task is running and delivers in order
            return
        self._queues[binding["id"]] = deque([event])
        asyncio.ensure_future(self._deliver(binding, cfg))

    async def _deliver(self, binding: dict, cfg: core.TriggerConfig) -> None:
        queue = self._queues[binding["id"]]
        try:
            while queue:
                await self._fire(binding, cfg, *queue.popleft())
        finally:
            del self._queues[binding["id"]]

    async def _fire(self, binding: dict, cfg: core.TriggerConfig, message: dict, trace: Trace) -> None:
        namespace = binding.get("namespace") or "default"
        traceparent, baggage = trace
        if cfg.condition_function_id:
            try:
                verdict = await self.call(cfg.condition_function_id, message, namespace=namespace,
                                          traceparent=traceparent, baggage=baggage,
                                          timeout=core.CALL_TIMEOUT_S)
            except Exception as exc:  # an erroring condition skips the handler (§0)
                log.error("stream trigger %s: condition %s failed: %s", binding["id"],
                          cfg.condition_function_id, exc or "timed out")
                return
            if not core.condition_allows(verdict):
                return
        try:
            await self.call(binding["function_id"], message, namespace=namespace,
                            metadata=binding.get("metadata"), traceparent=traceparent,
                            baggage=baggage, timeout=core.CALL_TIMEOUT_S)
        except Exception as exc:  # logged only; never reaches the writer
            log.warning("stream trigger %s: handler %s failed: %s", binding["id"],
                        binding["function_id"], exc or "timed out")

    async def authorize_join(self, sub: Subscription, context: Any) -> bool:
        """Every join binding in turn, awaited; False when one answers ``unauthorized: true``."""
        payload = core.join_payload(sub.id, sub.stream, sub.group, sub.item, context)
        for binding in list(self.joins.values()):
            try:
                result = await self.call(binding["function_id"], payload,
                                         namespace=binding.get("namespace") or "default",
                                         metadata=binding.get("metadata"), timeout=core.CALL_TIMEOUT_S)
            except Exception as exc:  # logged; counts as authorized (§3.3)
                log.warning("stream:join trigger %s failed: %s", binding["id"], exc or "timed out")
                continue
            if core.refuses(result):
                return False
        return True

    def fire_leave(self, sub: Subscription, context: Any) -> None:
        """Every leave binding, results ignored, nobody waits."""
        if self.leaves:
            payload = core.join_payload(sub.id, sub.stream, sub.group, sub.item, context)
            asyncio.ensure_future(self._leave(payload))

    async def _leave(self, payload: dict) -> None:
        for binding in list(self.leaves.values()):
            try:
                await self.call(binding["function_id"], payload,
                                namespace=binding.get("namespace") or "default",
                                metadata=binding.get("metadata"), timeout=core.CALL_TIMEOUT_S)
            except Exception as exc:
                log.warning("stream:leave trigger %s failed: %s", binding["id"], exc or "timed out")


def _failure(write: Write, exc: BaseException) -> EngineError:
    """A failed batch, in the words of each caller's own function (§3.1)."""
    state_err = batch_failure(write, exc)
    detail = state_err.message.split(": ", 1)[-1]
    return core.failure(core.FUNCTION_OF[write.kind], detail)


def _shown(url: str) -> str:
    """A Redis URL fit for a log line: its password left out."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return parts._replace(netloc=user + netloc).geturl()


def main(ctx: RunContext) -> None:
    """Process entry point (``UNIT.main``)."""
    run(StreamBroker, ctx)
