"""Registrations of a connection with a session: allowances, the three hooks, the prefix.

Each registration message of such a connection (once its namespace is fixed, §4.4) waits
for the one before it (``Session.tail``), so they still reach the router in arrival order;
then the session's allowances are checked, the listener's hook for its kind is called
(Appendix C: input and rewrites), ``function_registration_prefix`` is applied, and the
message, rewritten, goes on as any registration (``registrations.py``). A hook that fails,
times out or answers anything but an object denies: the registration is dropped, with a
log line (the reference drops silently). A trigger whose target the session may not call
is refused ``FORBIDDEN`` (``triggerregistrationresult``).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from brokers.gateway import rbac
from brokers.gateway.conns import Conn
from brokers.gateway.guard import FORBIDDEN, Guard
from brokers.kit import wire
from brokers.kit.errors import EngineError

log = logging.getLogger(__name__)


class Hooks(Guard):
    """The registration half of the RBAC guard."""

    def _guard_registration(self, conn: Conn, msg: dict, raw: bytes) -> None:
        s = conn.rbac
        prev = s.tail
        s.tail = asyncio.ensure_future(self._registration_in_turn(conn, msg, prev))

    async def _registration_in_turn(self, conn: Conn, msg: dict, prev: Any) -> None:
        if prev is not None and not prev.done():
            try:
                await prev
            except Exception:  # noqa: BLE001 - its own failure was logged
                pass
        try:
            out = await self._checked(conn, msg)
        except Exception:  # noqa: BLE001 - a bug here must not stop the connection's next ones
            log.exception("registration of %s from %s failed", msg.get("id"), conn.id)
            return
        if out is not None and self.conns.get(conn.id) is conn:
            self._forward_registration(conn, out, wire.dumps(out), True)

    def _drop(self, conn: Conn, msg: dict, why: str) -> None:
        log.warning("dropping %s %r of worker %s: %s", msg.get("type"), msg.get("id"), conn.id, why)

    async def _rewritten(self, conn: Conn, msg: dict, key: str, data: dict, fields: dict[str, type],
                         id_field: str) -> bool:
        """Ask the hook ``key`` (when the listener has one) about ``msg`` and apply the rewrite
        it answered (``id_field`` renames ``msg["id"]``); False when it denied: dropped."""
        hook = self.rules.hooks.get(key) if self.rules is not None else None
        if not hook:
            return True
        try:
            answer: Any = await self.engine_call_for(hook, data, self.hook_timeout_s)
        except EngineError as exc:  # a failing or silent hook denies
            answer = exc
        rewrite = rbac.hook_rewrite(answer, fields)
        if rewrite is None:
            self._drop(conn, msg, f"denied by {hook}: {_why(answer)}")
            return False
        if id_field in rewrite:
            msg["id"] = rewrite.pop(id_field)
        msg.update(rewrite)
        return True

    async def _checked(self, conn: Conn, msg: dict) -> dict | None:
        """The message to register (rewritten), or None when it is dropped."""
        s = conn.rbac
        kind = msg["type"]
        if kind == "registerfunction":
            if not s.may_register_functions:
                self._drop(conn, msg, "function registration not allowed for this session")
                return None
            if not await self._rewritten(conn, msg, "on_function_registration_function_id", {
                    "function_id": msg["id"], "description": msg.get("description"),
                    "metadata": msg.get("metadata"), "namespace": conn.ns, "context": s.context},
                    {"function_id": str, "description": str, "metadata": object}, "function_id"):
                return None
            if s.prefix is not None:
                own = msg["id"]
                msg["id"] = f"{s.prefix}::{own}"
                s.aliases[msg["id"]] = own
            return msg
        if kind == "unregisterfunction":
            if s.prefix is not None and isinstance(msg.get("id"), str):
                msg["id"] = f"{s.prefix}::{msg['id']}"
            return msg
        if kind == "registertriggertype":
            if not s.may_register_types:
                self._drop(conn, msg, "trigger type registration not allowed for this session")
                return None
            if not await self._rewritten(conn, msg, "on_trigger_type_registration_function_id", {
                    "trigger_type_id": msg["id"], "description": msg.get("description"), "context": s.context},
                    {"trigger_type_id": str, "description": str}, "trigger_type_id"):
                return None
            return msg
        if kind == "registertrigger":
            return await self._checked_trigger(conn, msg)
        return msg

    async def _checked_trigger(self, conn: Conn, msg: dict) -> dict | None:
        s = conn.rbac
        if s.trigger_types is not None and msg["trigger_type"] not in s.trigger_types:
            self._drop(conn, msg, f"trigger type {msg['trigger_type']!r} not allowed for this session")
            return None
        target_ns = msg.get("namespace") or "default"
        if not await self._rewritten(conn, msg, "on_trigger_registration_function_id", {
                "trigger_id": msg["id"], "trigger_type": msg["trigger_type"], "function_id": msg["function_id"],
                "config": msg.get("config"), "metadata": msg.get("metadata"), "namespace": target_ns,
                "context": s.context},
                {"trigger_id": str, "trigger_type": str, "function_id": str, "config": object}, "trigger_id"):
            return None
        if s.prefix is not None:
            msg["function_id"] = f"{s.prefix}::{msg['function_id']}"
        fid = msg["function_id"]
        verdict = rbac.decide(s, self.rules, fid, target_ns)
        if verdict is None:
            route = self.routes.get(target_ns, fid)
            meta = None if route is None else await self.function_meta(fid, target_ns, route)
            verdict = rbac.decide_meta(s, self.rules, fid, target_ns, meta)
        if not verdict:
            self._drop(conn, msg, f"function {fid!r} not allowed in namespace {target_ns!r}")
            if self.conns.get(conn.id) is conn:
                self.out.ws(conn.id, wire.dumps({
                    "type": "triggerregistrationresult", "id": msg["id"], "trigger_type": msg["trigger_type"],
                    "function_id": fid, "error": {"code": FORBIDDEN, "message":
                                                  f"function '{fid}' not allowed in namespace '{target_ns}'"}}))
            return None
        return msg


def _why(answer: Any) -> str:
    if isinstance(answer, EngineError):
        return f"{answer.code}: {answer.message}"[:200]
    return f"answered {type(answer).__name__}, not an object"
