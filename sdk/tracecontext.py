"""W3C trace context for the SDK (protocol.md §9.1): the span a handler runs in, and what
outgoing calls carry.

Owns the ``traceparent`` format (``00-<32 hex trace id>-<16 hex span id>-<2 hex flags>``),
id generation, the ``Span`` value (what ``sdk.otlp`` encodes) and the contextvar holding the
current span. A handler of an incoming call runs inside its own ``execute <function_id>``
span (INTERNAL): a child of the received ``traceparent`` (same trace id, a new span id, the
received span id as parent), or the root of a new trace when the call carried none, as the
official SDKs do. Calls made while a span is current carry that span's traceparent and the
baggage received with it; calls outside any handler carry neither.

Invariants: pure (no I/O, no loop, no clock: times are passed in); a malformed traceparent
is treated as absent, never an error; ids are lower-case hex, never all zeros; the
contextvar is only set around user code (``run_in`` for threads, ``run_coro_in`` for tasks),
so the SDK's own loop never sees a current span.
"""
from __future__ import annotations

import contextvars
import os
import random
import re
from typing import Any, Awaitable, Callable

STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
KIND_INTERNAL = 1  # OTLP SpanKind: 1 INTERNAL, 2 SERVER, 3 CLIENT
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16

_current: contextvars.ContextVar[Span | None] = contextvars.ContextVar("iii_current_span", default=None)
_random = random.Random()  # seeded from os.urandom; ids need uniqueness, not secrecy
_rand = _random.getrandbits
if hasattr(os, "register_at_fork"):  # a forked child must not repeat its parent's ids
    os.register_at_fork(after_in_child=_random.seed)


def parse_traceparent(value: Any) -> tuple[str, str, int] | None:
    """``(trace_id, span_id, flags)`` of a W3C traceparent, or None when it is not one."""
    if not isinstance(value, str):
        return None
    m = _TRACEPARENT.fullmatch(value.strip().lower())
    if m is None:
        return None
    version, trace_id, span_id, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return trace_id, span_id, int(flags, 16)


def format_traceparent(trace_id: str, span_id: str, flags: int = 1) -> str:
    return "00-%s-%s-%02x" % (trace_id, span_id, flags & 0xFF)


def new_trace_id() -> str:
    return "%032x" % (_rand(128) or 1)  # %-format: 3x faster than an f-string here


def new_span_id() -> str:
    return "%016x" % (_rand(64) or 1)


class Span:
    """One finished-or-running span. ``end_ns == 0`` while it runs."""

    __slots__ = ("trace_id", "span_id", "parent_span_id", "name", "kind", "flags", "baggage",
                 "start_ns", "end_ns", "status", "status_message", "attributes", "sink")

    def __init__(self, trace_id: str, span_id: str, parent_span_id: str | None, name: str, *,
                 start_ns: int, flags: int = 1, baggage: str | None = None, kind: int = KIND_INTERNAL,
                 attributes: dict[str, Any] | None = None) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_span_id = parent_span_id
        self.name = name
        self.kind = kind
        self.flags = flags
        self.baggage = baggage
        self.start_ns = start_ns
        self.end_ns = 0
        self.status = STATUS_UNSET
        self.status_message: str | None = None
        self.attributes = attributes if attributes is not None else {}
        self.sink: Any = None  # the telemetry of the worker running it (Logger reports there)

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 1)

    @property
    def traceparent(self) -> str:
        return format_traceparent(self.trace_id, self.span_id, self.flags)

    def end(self, end_ns: int, error: BaseException | None = None) -> None:
        """Close the span: status error (with the exception's text) or ok."""
        if self.end_ns:
            return
        self.end_ns = max(end_ns, self.start_ns)
        if error is not None:
            self.status = STATUS_ERROR
            self.status_message = str(error) or type(error).__name__
            self.attributes.setdefault("exception.type", type(error).__name__)
        else:
            self.status = STATUS_OK


def child_span(name: str, traceparent: Any, baggage: Any, start_ns: int,
               attributes: dict[str, Any] | None = None) -> Span:
    """The span of a handler: a child of ``traceparent`` if valid, else a new trace's root."""
    bag = baggage if isinstance(baggage, str) and baggage.strip() else None
    parent = parse_traceparent(traceparent) if traceparent else None
    if parent is None:
        return Span(new_trace_id(), new_span_id(), None, name, start_ns=start_ns, baggage=bag,
                    attributes=attributes)
    trace_id, parent_id, flags = parent
    return Span(trace_id, new_span_id(), parent_id, name, start_ns=start_ns, flags=flags, baggage=bag,
                attributes=attributes)


def current_span() -> Span | None:
    return _current.get()


def outgoing() -> tuple[str | None, str | None]:
    """``(traceparent, baggage)`` an outgoing call carries now: the current span's, or none."""
    span = _current.get()
    if span is None:
        return None, None
    return span.traceparent, span.baggage


def run_in(span: Span, fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn(*args)`` with ``span`` current (on this thread, for this call only)."""
    token = _current.set(span)
    try:
        return fn(*args)
    finally:
        _current.reset(token)


async def run_coro_in(span: Span, coro: Awaitable[Any]) -> Any:
    """Await ``coro`` with ``span`` current (a task has its own context copy: set, not leak)."""
    _current.set(span)
    return await coro
