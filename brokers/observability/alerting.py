"""Alert rules at work (workers-b.md §4.6): evaluated every 10 s and on
``engine::alerts::evaluate``; a rule that fires runs its action once per cooldown.

Actions: ``log`` (a warning line), ``function`` (a void call of ``path`` with the event and
``firing``; built-in ids refused), ``webhook`` (POST of the event, up to 3 attempts with
1 s / 2 s / 4 s pauses, 30 s timeout each, success = 2xx). A webhook URL passes the same
URL guard as HTTP-invoked functions (``brokers.http_functions.guard``: one DNS lookup,
the checked address is the one connected to); the observability block's
``webhook_security`` sets it (default: http allowed, private addresses blocked).

The values come from the engine's counters (the built-in metric names) or the SDK metrics
within the rule's window (``metrics.builtin_value`` / ``MetricStore.value_in_window``).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import aiohttp

from brokers.http_functions.client import Client, shown_url
from brokers.http_functions.config import Security
from brokers.kit.errors import EngineError
from brokers.observability.alerts import (AlertManager, function_action_refused, function_payload, public_event,
                                          webhook_payload)
from brokers.observability.metrics import builtin_value

if TYPE_CHECKING:
    from brokers.observability.service import Observability

log = logging.getLogger(__name__)

WEBHOOK_PAUSES_S = (1.0, 2.0, 4.0)
WEBHOOK_ATTEMPTS = 3
WEBHOOK_TIMEOUT_S = 30.0


class Alerting:
    """The alert manager of one observability process and its actions."""

    EVERY_S = 10.0

    def __init__(self, obs: Observability, rules: list[dict], security: dict[str, Any] | None = None) -> None:
        self.obs = obs
        self.manager = AlertManager(rules)
        sec = security or {}
        self.client = Client(Security(tuple(sec.get("url_allowlist") or ("*",)),
                                      sec.get("block_private_ips", True), sec.get("require_https", False)))
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task] = set()

    def list(self, now_ms: int) -> dict:
        return self.manager.list(now_ms)

    def tick(self) -> None:
        if self.manager.rules:
            self.evaluate_now(int(time.time() * 1000))

    def evaluate_now(self, now_ms: int) -> dict:
        """Evaluate every rule now and run the actions of those that fire."""
        engine = self.obs.engine_metrics()
        now_ns = now_ms * 1_000_000

        def value_of(rule: dict) -> float | None:
            value = builtin_value(rule["metric"], engine)
            if value is None:
                value = self.obs.metrics.value_in_window(rule["metric"], rule["window_seconds"], now_ns)
            return value

        events = self.manager.evaluate(now_ms, value_of)
        for event in events:
            self._act(event)
        return {"evaluated": True, "triggered_alerts": [public_event(e) for e in events], "timestamp": now_ms}

    def _act(self, event: dict) -> None:
        action = event["action"]
        kind = action.get("type")
        log.warning("alert %s firing: %s = %s (%s %s)", event["name"], event["metric"], event["value"],
                    event["operator"], event["threshold"])
        if kind == "function":
            refused = function_action_refused(action.get("path"))
            if refused:
                log.error("%s", refused)
                return
            self.obs.call_void(action["path"], function_payload(event))
        elif kind == "webhook":
            task = asyncio.ensure_future(self._webhook(action["url"], webhook_payload(event)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _webhook(self, url: str, payload: dict) -> None:
        shown = shown_url(url)
        for attempt in range(WEBHOOK_ATTEMPTS):
            try:
                target, ip = await self.client.check(url)
            except EngineError as exc:
                log.error("alert webhook %s refused: %s", shown, exc.message)
                return
            try:
                status = await self._post(target.url_for(ip), target.host_header, payload,
                                          target.host if target.scheme == "https" else None)
                if 200 <= status < 300:
                    return
                log.warning("alert webhook %s answered %d (attempt %d)", shown, status, attempt + 1)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                log.warning("alert webhook %s failed (attempt %d): %s", shown, attempt + 1, exc or type(exc).__name__)
            await asyncio.sleep(WEBHOOK_PAUSES_S[attempt])
        log.error("alert webhook %s gave up after %d attempts", shown, WEBHOOK_ATTEMPTS)

    async def _post(self, url: str, host: str, payload: dict, tls_name: str | None) -> int:
        if self._session is None:
            self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        async with self._session.post(url, json=payload, headers={"host": host}, allow_redirects=False,
                                      server_hostname=tls_name,
                                      timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_S)) as resp:
            return resp.status

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._session is not None:
            await self._session.close()
