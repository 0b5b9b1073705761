"""``state::get`` served in place by another process of the engine (the gateway).

A gateway that can read the state store answers a worker's ``state::get`` itself, from
the LMDB environment the state process writes (LMDB serves readers in many processes),
instead of sending it to the state process and back: a read then costs one WebSocket
round trip, not two more bus hops. The state process stays the only writer and the owner
of every other function.

Invariants:
- the answer is the state process's own: the input is decoded by ``core.decode_call`` (same
  errors), the value is the stored bytes (``core.raw_get_result``);
- a read sees every write acknowledged before it was received: a write is acknowledged
  after its commit, and each read is a fresh LMDB read transaction;
- only the built-in LMDB store is read here (``for_engine`` gives None for the in-memory
  store, Redis, or an engine without ``iii-state``); while the store cannot be opened or
  read (the state process has not created it yet), the read raises ``NotServedHere`` and
  the call goes to the state process as before. A failed open is tried again after
  ``RETRY_S``.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import lmdb

from brokers.kit.errors import NotServedHere
from brokers.state import core
from brokers.state.config import store_path
from brokers.state.store import LmdbStore

log = logging.getLogger(__name__)

RETRY_S = 1.0
"""How long after a failed open the store is tried again (each read meanwhile goes on)."""
OWNER = "state"
"""The state unit's name (its key in ``EngineSettings.shared``) and its process's node
name: a gateway serves ``state::get`` in place only while the route names that process."""


class StateReader:
    """Reads of one LMDB state store from outside the state process."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.store: LmdbStore | None = None
        self._retry_at = 0.0
        self.served = 0
        """Reads answered here (the rest went to the state process)."""

    @classmethod
    def for_engine(cls, shared: dict[str, Any], data_dir: str) -> StateReader | None:
        """The reader of this engine's state store, or None when it is not an LMDB store
        this process can read (``shared``: ``EngineSettings.shared``)."""
        cfg = shared.get(OWNER)
        if not cfg or cfg.get("store") != "lmdb":
            return None
        return cls(store_path(cfg, data_dir))

    def _open(self) -> LmdbStore:
        now = time.monotonic()
        if now < self._retry_at:
            raise NotServedHere(self.path)
        try:
            self.store = LmdbStore(self.path, readonly=True)
        except (OSError, lmdb.Error) as exc:
            self._retry_at = now + RETRY_S
            log.debug("state store at %s not readable here yet: %s", self.path, exc)
            raise NotServedHere(self.path) from None
        log.info("state::get served in place from %s", self.path)
        return self.store

    def get(self, data: Any) -> Any:
        """``state::get`` of ``data`` (the call's payload): its result, an ``EngineError``
        for bad input, or ``NotServedHere``."""
        req = core.decode_call(core.GET, data)
        store = self.store or self._open()
        try:
            raw = store.get_raw(req.scope, req.key)
        except lmdb.Error as exc:
            log.warning("state::get from %s failed here, sent to the state process: %s", self.path, exc)
            raise NotServedHere(self.path) from None
        self.served += 1
        return core.raw_get_result(raw)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None
