"""``state::*`` served in place by a gateway, on the state store itself (issue 20).

A gateway whose engine keeps state in the built-in LMDB store answers a worker's
``state::get``, ``state::set``, ``state::update`` and ``state::delete`` itself, on the same
LMDB environment the state process opens (LMDB serves readers and writers in many
processes; its write lock makes one writer at a time). A call then costs one WebSocket round
trip and, for a write, its commit, instead of two more bus hops to the state process and
back. Writes are group-committed here exactly as in the state process (the same
``store.group_committer``: one transaction and one fsync per batch, every ack after its
commit). After each commit the batch's change events go to the state process in a one-way
frame (``EVENTS``, several batches' within ``EVENTS_DELAY_S``), and it fires the ``state``
triggers from them as from its own commits. ``state::list`` and ``state::list_groups`` stay with the state process.

Invariants:
- the answer is the state process's own: input decoded by ``core.decode_call`` (same errors,
  same ``max_value_bytes``), results by ``core.write_result`` / ``core.raw_get_result``,
  failed batches worded by ``store.batch_failure``;
- acknowledged means committed: a write is answered after its batch's fsync; a read sees
  every write acknowledged before it was received (each read is a fresh read transaction);
- only the built-in LMDB store (``for_engine`` gives None for the in-memory store, Redis,
  or an engine without ``iii-state``); while the store cannot be opened here, a call raises
  ``NotServedHere`` and goes to the state process as before (a failed open is tried again
  after ``RETRY_S``);
- events: a gateway's committed batches reach the state process in commit order, within
  ``EVENTS_DELAY_S`` of their commit, and it also records their scopes. A write fires the
  bindings that existed when it was committed, not those made while its event was on its
  way (each event carries its commit time, and the state process each binding's); a
  binding removed while the event is on its way does not fire for it (``list_groups``). Two writers of one key
  at the same moment through two gateway processes (``processes`` > 1), or through a
  gateway and the state process, fire in the order their events arrive there, which can
  differ from their commit order. Events of writes committed while the state process is
  down are not fired (the bus drops frames for a peer that is gone); the writes
  themselves are durable.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Sequence

import lmdb
import orjson

from brokers.kit.broker import Trace
from brokers.kit.commit import GroupCommitter
from brokers.kit.errors import INVOCATION_FAILED, INVOCATION_STOPPED, EngineError, NotServedHere
from brokers.state import core
from brokers.state.config import store_path
from brokers.state.store import LmdbStore, group_committer

log = logging.getLogger(__name__)

RETRY_S = 1.0
"""How long after a failed open the store is tried again (each call meanwhile goes on)."""
OWNER = "state"
"""The state unit's name (its key in ``EngineSettings.shared``) and its process's node
name: a gateway serves ``state::*`` in place only while the route names that process."""
EVENTS_DELAY_S = 0.005
"""How long committed batches' events wait to be sent together (a trigger fires that much
later; the state process wakes once for several commits instead of once each)."""
EVENTS_MAX = 512
"""Events that leave at once, without waiting (each carries a value before and after)."""
EVENTS = "stev"
"""Frame kind, gateway -> state: committed batches' change events (header ``scopes``:
their scopes; body: ``[[scope, key, event, traceparent, baggage, committed_at], ...]``,
``committed_at`` monotonic: a binding made after it does not fire for that write)."""
WRITES = (core.SET, core.UPDATE, core.DELETE)

Done = Callable[[Any, "EngineError | None"], None]
"""How an in-place call is answered: ``done(result, None)`` or ``done(None, error)``."""
Handler = Callable[[Any, Trace, Done], None]
"""``handler(data, trace, done)``: ``trace`` is the call's (traceparent, baggage) as a
callee gets them; raises ``NotServedHere`` or an ``EngineError``, or answers ``done``."""


class InPlace:
    """The state store as one gateway process serves it."""

    def __init__(self, path: str, max_value_bytes: int | None,
                 send: Callable[[str, dict, bytes], None]) -> None:
        self.path = path
        self.max_value_bytes = max_value_bytes
        self._send = send
        self.store: LmdbStore | None = None
        self.committer: GroupCommitter | None = None
        self._retry_at = 0.0
        self._failed = False
        """An open failed already (logged once)."""
        self._events: list[list] = []
        """Events of committed batches not sent yet, in commit order."""
        self._scopes: set[str] = set()
        self._events_due: asyncio.TimerHandle | None = None

    @classmethod
    def for_engine(cls, shared: dict[str, Any], data_dir: str,
                   send: Callable[[str, dict, bytes], None]) -> InPlace | None:
        """This engine's state store served in place, or None when it is not on LMDB
        (``shared``: ``EngineSettings.shared``; ``send(node, header, body)``: the bus)."""
        cfg = shared.get(OWNER)
        if not cfg or cfg.get("store") != "lmdb":
            return None
        return cls(store_path(cfg, data_dir), cfg.get("max_value_bytes"), send)

    def handlers(self) -> dict[str, Handler]:
        """Function id -> its ``Handler``, for the gateway core's ``in_place``."""
        out: dict[str, Handler] = {core.GET: self.get}
        for fid in WRITES:
            out[fid] = self._writer(fid)
        return out

    # ------------------------------------------------------------ opening

    def _open(self) -> LmdbStore:
        now = time.monotonic()
        if now < self._retry_at:
            raise NotServedHere(self.path)
        try:
            store = LmdbStore(self.path)
        except (OSError, lmdb.Error) as exc:
            self._retry_at = now + RETRY_S
            # said once (e.g. a unit that may not write there); tried again quietly
            (log.debug if self._failed else log.warning)(
                "state store at %s cannot be opened here (%s): state calls go to the state process", self.path, exc)
            self._failed = True
            raise NotServedHere(self.path) from None
        self.store = store
        self.committer = group_committer(store, self._committed)
        log.info("state::get/set/update/delete served in place from %s", self.path)
        return store

    # ------------------------------------------------------------ calls

    def get(self, data: Any, trace: Trace, done: Done) -> None:
        req = core.decode_call(core.GET, data)
        store = self.store or self._open()
        try:
            raw = store.get_raw(req.scope, req.key)
        except lmdb.Error as exc:
            log.warning("state::get from %s failed here, sent to the state process: %s", self.path, exc)
            raise NotServedHere(self.path) from None
        done(core.raw_get_result(raw), None)

    def _writer(self, fid: str) -> Handler:
        def write(data: Any, trace: Trace, done: Done) -> None:
            w = core.decode_call(fid, data, self.max_value_bytes)
            if self.committer is None:
                self._open()
            self.committer.submit((w, trace)).add_done_callback(lambda fut: _answer(fut, done))
        return write

    def _committed(self, batch: list[tuple[core.Write, Trace]], outcomes: Sequence[core.Outcome]) -> None:
        """On the loop, after the batch's callers were answered: its events, for the state
        process, which fires the triggers (and counts the scopes for ``list_groups``).
        They leave together with those of the batches of the next ``EVENTS_DELAY_S``: one
        frame, and one wake-up of the state process, for several commits."""
        at = time.monotonic()  # one clock for every process of this host
        self._events.extend([o.write.scope, o.write.key, core.event_for(o), tp, bg, at]
                            for (_, (tp, bg)), o in zip(batch, outcomes) if o.failure is None and not o.replayed)
        self._scopes.update(w.scope for w, _ in batch)
        if len(self._events) >= EVENTS_MAX:
            self._send_events()
        elif self._events_due is None:
            self._events_due = asyncio.get_running_loop().call_later(EVENTS_DELAY_S, self._send_events)

    def _send_events(self) -> None:
        """What is waiting, now (also when the timer fires: cancelling it then is a no-op)."""
        if self._events_due is not None:
            self._events_due.cancel()
            self._events_due = None
        events, self._events = self._events, []
        scopes, self._scopes = sorted(self._scopes), set()
        if scopes:
            self._send(OWNER, {"k": EVENTS, "scopes": scopes}, orjson.dumps(events))

    # ------------------------------------------------------------ stop

    async def flush(self) -> None:
        """Wait for the writes accepted so far to be committed (and answered)."""
        if self.committer is not None:
            try:
                await self.committer.flush()
            except Exception:  # logged by the committer; its callers got the error
                pass
        self._send_events()

    def close(self) -> None:
        self._send_events()  # the bus is still up: the last events go out
        if self.committer is not None:
            self.committer.close()
            self.committer = None
        if self.store is not None:
            self.store.close()
            self.store = None


def _answer(fut: asyncio.Future, done: Done) -> None:
    if fut.cancelled():
        done(None, EngineError(INVOCATION_STOPPED, "Invocation stopped"))
        return
    exc = fut.exception()
    if exc is None:
        done(fut.result(), None)
    elif isinstance(exc, EngineError):
        done(None, exc)
    else:
        log.error("state write failed in place: %s", exc, exc_info=exc)
        done(None, EngineError(INVOCATION_FAILED, str(exc)))
