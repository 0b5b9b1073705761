"""The pub/sub broker's ``redis`` adapter (issue 19): topics on one Redis shared by every host.

``publish`` is ``PUBLISH <topic> <data JSON>`` on the raw topic name (the reference's layout:
a reference engine on the same Redis sees the same messages); the JSON is the published
``data`` as it is, no envelope. Each host's pub/sub process SUBSCRIBEs exactly the topics its
local ``subscribe`` triggers name (``want``), and UNSUBSCRIBEs a topic when its last trigger
goes; what arrives is delivered to the local triggers of that topic. So one publish through
any host reaches each subscriber trigger on every host once; the publishing host delivers
only what comes back from Redis, never a local copy as well.

Order: publishes leave in the order they were made (one writer task, one pipeline per batch);
Redis delivers one connection's messages in order, so a subscriber sees one publisher's
messages in order. Subscription changes go out from one task, in order, so a trigger bound
and unbound quickly leaves nothing subscribed. A lost connection is made again and every
wanted topic subscribed again (messages published meanwhile are not received: pub/sub keeps
nothing, as in the reference).

What is lost on the way: the publisher's trace context (the raw topic carries only the data);
a message published before a host's SUBSCRIBE reached Redis is not delivered on that host.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from brokers.kit.redisconn import Backoff

log = logging.getLogger(__name__)

BATCH = 512


class RedisTopics:
    """Publisher and subscriber of one process on one Redis client."""

    def __init__(self, client: Any, deliver: Callable[[str, bytes], None]) -> None:
        self.r = client
        self.deliver = deliver
        self._out: list[tuple[str, bytes]] = []
        self._out_ready = asyncio.Event()
        self._wanted: set[str] = set()
        self._have: set[str] = set()
        self._changed = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._pubsub: Any = None
        self._tasks: list[asyncio.Task] = []
        self.published = 0
        self.received = 0

    def start(self) -> None:
        self._pubsub = self.r.pubsub()
        self._tasks = [asyncio.ensure_future(self._writer()), asyncio.ensure_future(self._subscriber()),
                       asyncio.ensure_future(self._reader())]

    async def close(self) -> None:
        if self._out:  # what was published before the stop still goes out
            try:
                await asyncio.wait_for(self._flush(), 2.0)
            except Exception as exc:
                log.warning("pubsub: %d publishes not sent at stop: %s", len(self._out), exc)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except BaseException:
                pass
        if self._pubsub is not None:
            try:
                await self._pubsub.aclose()
            except Exception:
                pass
        await self.r.aclose()

    # ------------------------------------------------------------ publishing

    def publish(self, topic: str, data: bytes) -> None:
        """Queue one PUBLISH; it leaves with the next batch, in order."""
        self._out.append((topic, data))
        self._out_ready.set()

    async def _flush(self) -> None:
        while self._out:
            batch, self._out = self._out[:BATCH], self._out[BATCH:]
            pipe = self.r.pipeline(transaction=False)
            for topic, data in batch:
                pipe.publish(topic, data)
            try:
                await pipe.execute()
                self.published += len(batch)
            except Exception:
                self._out = batch + self._out  # sent again once Redis answers
                raise

    async def _writer(self) -> None:
        backoff = Backoff()
        while True:
            await self._out_ready.wait()
            self._out_ready.clear()
            try:
                await self._flush()
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("pubsub: PUBLISH to Redis failed (%s); %d waiting, again in %.1fs",
                            exc, len(self._out), backoff.delay)
                await backoff.pause()
                self._out_ready.set()

    # ------------------------------------------------------------ subscribing

    def want(self, topics: set[str]) -> None:
        """The topics this process's triggers name now; (un)subscribed soon, in order."""
        if topics != self._wanted:
            self._wanted = set(topics)
            self._changed.set()

    async def _subscriber(self) -> None:
        backoff = Backoff()
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                add = sorted(self._wanted - self._have)
                drop = sorted(self._have - self._wanted)
                if add:
                    await self._pubsub.subscribe(*add)
                    self._have.update(add)
                    self._subscribed.set()
                if drop:
                    await self._pubsub.unsubscribe(*drop)
                    self._have.difference_update(drop)
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("pubsub: SUBSCRIBE on Redis failed (%s); again in %.1fs", exc, backoff.delay)
                await backoff.pause()
                self._changed.set()

    async def _reader(self) -> None:
        backoff = Backoff()
        while True:
            await self._subscribed.wait()
            try:
                msg = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a connection past redis-py's retries: a new one
                log.warning("pubsub: Redis subscription lost (%s); subscribing again in %.1fs", exc, backoff.delay)
                await backoff.pause()
                old, self._pubsub = self._pubsub, self.r.pubsub()
                self._have.clear()
                self._subscribed.clear()
                self._changed.set()
                try:
                    await old.aclose()
                except Exception:
                    pass
                continue
            if msg is None or msg.get("type") != "message":
                continue
            self.received += 1
            channel = msg["channel"]
            self.deliver(channel.decode() if isinstance(channel, bytes) else channel, msg["data"])
