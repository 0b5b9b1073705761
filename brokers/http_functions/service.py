"""The iii-http-functions process: serves the HTTP-invoked functions the router hands it.

The router owns the registration (the claim on the id, the route, the removal with the
owner's connection) and sends this process, as a DOWN frame, the worker's
``registerfunction`` with ``namespace`` and ``owner_node`` added; ``c`` is the owner's
connection, which is also the ``to`` of every call routed here, so ``(c, id)`` names the
function. ``unregisterfunction`` drops it. The router sends them all again when this
process (re)starts, so nothing is stored.

A registration is checked as the reference does (workers-b §3.1): the URL guard, then the
secrets read once from this process's environment (the engine's). A refused one is logged
at ERROR, answered to its worker with an ``error`` frame
``{"type":"error","error":{code,message},"function_id","namespace"}`` (the one E->W message
the protocol has for an error outside a call; every SDK ignores an unknown type, so none
breaks on it), and kept, so that every call of it fails with the same code
(``url_validation_failed``, ``secret_not_found``, ...) instead of ``function_not_found``.
Calls that arrive while the first check (its DNS lookup) runs wait for it.

Secrets stay in ``core.Auth`` values: no log line, error or frame here carries one.
"""
from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from brokers.http_functions import core
from brokers.http_functions.client import Client, shown_url
from brokers.http_functions.config import security
from brokers.kit import errors, frames, redact, wire
from brokers.kit.broker import Broker, BusFactory, run
from brokers.kit.errors import EngineError
from brokers.kit.units import RunContext

log = logging.getLogger(__name__)

Key = tuple["str | None", str]


@dataclass
class Entry:
    """One HTTP-invoked function, as registered."""

    function_id: str
    namespace: str
    owner: tuple[str | None, str | None]
    message: dict = field(repr=False)
    spec: core.Invocation | None = None
    auth: core.Auth | None = field(default=None, repr=False)
    refused: EngineError | None = None
    checked: asyncio.Future | None = None
    """Done once the registration's URL check has run (calls wait for it)."""


class HttpFunctions(Broker):
    worker_name = "iii-http-functions"

    def __init__(self, ctx: RunContext, *, bus: BusFactory | None = None, client: Client | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        super().__init__(ctx, bus=bus)
        self.client = client or Client(security(ctx.config))
        self.environ = os.environ if environ is None else environ
        self.entries: dict[Key, Entry] = {}

    async def setup(self) -> None:
        await self.client.start()

    async def teardown(self) -> None:
        await self.client.close()

    # ---- registrations from the router ---------------------------------------------------

    def _on_down(self, sender: str, header: dict, body: bytes) -> None:
        try:
            msg = wire.loads(body)
        except ValueError:
            return
        kind = msg.get("type") if isinstance(msg, dict) else None
        key = (header.get("c"), msg.get("id") if isinstance(msg, dict) else None)
        if kind == "registerfunction" and isinstance(key[1], str):
            self.register(key, msg)
        elif kind == "unregisterfunction":
            self.entries.pop(key, None)
        else:
            super()._on_down(sender, header, body)

    def register(self, key: Key, msg: dict) -> Entry:
        """Install (or replace) a function and start its check. The same registration again
        (the router re-sends them all when either process restarts) keeps the entry: its
        check is not run, nor its refusal sent, twice."""
        current = self.entries.get(key)
        if current is not None and current.message == msg:
            return current
        entry = Entry(key[1], msg.get("namespace") or "default", (msg.get("owner_node"), key[0]), msg)
        self.entries[key] = entry
        try:
            entry.spec = core.parse_invocation(msg.get("invocation"))
            entry.auth = core.resolve_auth(entry.spec.auth, self.environ)
            redact.note_auth(entry.spec.auth)  # its secrets never reach a log line, whatever their names
        except EngineError as exc:
            self._refuse(entry, exc)
            return entry
        entry.checked = asyncio.ensure_future(self._check(key, entry))
        return entry

    async def _check(self, key: Key, entry: Entry) -> None:
        assert entry.spec is not None
        try:
            await self.client.check(entry.spec.url, connect=False)
        except EngineError as exc:
            if self.entries.get(key) is entry:  # not replaced or dropped meanwhile
                self._refuse(entry, exc)

    def _refuse(self, entry: Entry, exc: EngineError) -> None:
        entry.refused = exc
        url = shown_url(entry.spec.url) if entry.spec is not None else "?"
        log.warning("HTTP-invoked function %s (namespace %s, %s) not registered: %s: %s",
                  entry.function_id, entry.namespace, url, exc.code, exc.message)
        node, conn = entry.owner
        if node is not None and conn is not None:
            self.send(node, frames.down(conn), wire.dumps({
                "type": "error", "error": {"code": exc.code, "message": exc.message},
                "function_id": entry.function_id, "namespace": entry.namespace}))

    # ---- calls ------------------------------------------------------------------------------

    def _on_inv(self, sender: str, header: dict, body: bytes) -> None:
        entry = self.entries.get((header.get("to"), header["fn"]))
        if entry is None:
            self._reply_error(header, EngineError(errors.FUNCTION_NOT_FOUND,
                                                  f"Function {header['fn']} not found"))
            return
        try:
            msg = wire.loads(body)
        except ValueError as exc:
            self._reply_error(header, errors.deserialization_error(header["fn"], str(exc)))
            return
        asyncio.ensure_future(self._run_async(header, self.invoke(entry, msg.get("data"))))

    async def invoke(self, entry: Entry, data: Any) -> Any:
        if entry.checked is not None and not entry.checked.done():
            await asyncio.shield(entry.checked)
        if entry.refused is not None:
            raise entry.refused
        assert entry.spec is not None
        return await self.client.call(entry.function_id, entry.spec, entry.auth, data)


def main(ctx: RunContext) -> None:
    """Entry point of the iii-http-functions process."""
    run(HttpFunctions, ctx)
