"""Coalescing for the ``trace`` trigger type (workers-b §4.5).

Owns: the window of spans that arrived since the last fan-out and the per-binding match of that
window. Spans are offered as they land in the store; ``due(now, bindings)`` closes the window
once ``window_s`` has passed since its first span and returns one ``{"trace_ids": [...]}``
payload per binding with at least one match. The shell invokes each binding's function
fire-and-forget and arms a timer for ``next_deadline()``.

Pure: no clock, no I/O; ``now`` is epoch (or monotonic) seconds supplied by the caller.

Exclusions (loop prevention, as the reference): context-free internal spans (no parent and
``iii.function.kind=internal`` or an ``engine::`` function id), spans whose ``function_id`` is
an observability function, and spans whose ``function_id`` is the function of any ``trace``
binding (delivering a trigger produces a span of that function; it must not re-fire).
Binding function ids are read at ``due`` time, so a binding added or removed mid-window takes
effect for that window.

Matching: config ``service_name`` and ``status`` are optional, compared case-insensitively and
exactly, ANDed; the payload lists the distinct trace ids of the matching spans, sorted.
"""
from __future__ import annotations

from typing import Iterable

OBSERVABILITY_PREFIXES = (  # the reference's telemetry::is_observability_function_id
    "engine::log::", "engine::logs::", "engine::traces::", "engine::metrics::", "engine::rollups::",
    "engine::health::", "engine::sampling::", "engine::baggage::", "engine::alerts::", "iii-observability::",
)


def _attr(span: dict, key: str) -> str | None:
    for pair in span.get("attributes", ()):
        if len(pair) == 2 and pair[0] == key:
            return pair[1]
    return None


def _is_internal(span: dict) -> bool:
    function_id = _attr(span, "function_id")
    return _attr(span, "iii.function.kind") == "internal" or bool(function_id and function_id.startswith("engine::"))


def is_observability_function(function_id: str) -> bool:
    return function_id.startswith(OBSERVABILITY_PREFIXES)


class TraceCoalescer:
    """Trailing window of offered spans; see the module docstring."""

    def __init__(self, window_s: float = 0.3) -> None:
        self.window_s = window_s
        self._window: list[tuple[str, str, str, str | None]] = []  # (trace_id, service, status, function_id)
        self._opened: float | None = None

    def offer(self, spans: Iterable[dict], now: float) -> None:
        """Add the spans that just landed in the store (already-excluded ones are dropped here)."""
        for span in spans:
            try:
                trace_id, service, status = span["trace_id"], span["service_name"], span["status"]
            except (KeyError, TypeError):
                continue
            function_id = _attr(span, "function_id")
            if span.get("parent_span_id") is None and _is_internal(span):
                continue
            if function_id is not None and is_observability_function(function_id):
                continue
            self._window.append((trace_id, str(service), str(status), function_id))
            if self._opened is None:
                self._opened = now

    def next_deadline(self) -> float | None:
        """When the open window closes; None while nothing is waiting."""
        return None if self._opened is None else self._opened + self.window_s

    def due(self, now: float, bindings: dict[str, dict]) -> list[tuple[str, dict]]:
        """Close the window if it is due: (binding_id, {"trace_ids": [...]}) per matching binding."""
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return []
        window, self._window, self._opened = self._window, [], None
        trigger_fns = {b.get("function_id") for b in bindings.values() if isinstance(b, dict)}
        window = [item for item in window if item[3] is None or item[3] not in trigger_fns]
        fires: list[tuple[str, dict]] = []
        for binding_id, binding in bindings.items():
            if not isinstance(binding, dict) or binding.get("trigger_type", "trace") != "trace":
                continue
            config = binding.get("config") or {}
            service = config.get("service_name") if isinstance(config, dict) else None
            status = config.get("status") if isinstance(config, dict) else None
            service = service.lower() if isinstance(service, str) else None
            status = status.lower() if isinstance(status, str) else None
            trace_ids = sorted({
                trace_id for trace_id, span_service, span_status, _ in window
                if (service is None or span_service.lower() == service)
                and (status is None or span_status.lower() == status)
            })
            if trace_ids:
                fires.append((binding_id, {"trace_ids": trace_ids}))
        return fires

    def __len__(self) -> int:
        return len(self._window)
