"""Engine spans and call counters of one process, and the SDK telemetry it hands on (issue 16).

Every engine process that routes calls (gateways for their workers' calls, brokers for the
calls they make: trigger fan-out, queue deliveries, HTTP requests) keeps a ``Recorder``.
``begin`` opens a call: it decides sampling (``sampling.Sampler``), makes the engine's
span ``call <function_id>`` as a child of the caller's ``traceparent`` (or the root of a
new trace), and returns the ``traceparent`` and ``baggage`` the callee gets: the engine's
span as parent, so that the callee's SDK span sits under the engine's (protocol §9.1), and
the baggage entry ``iii.function.id`` set to the target. ``finish`` closes it: the call is
counted (calls, errors, a duration histogram per function id: Prometheus), and a sampled
span is buffered as a record (format in ``span_record``) until the sink link takes the batch.

The observability functions themselves (``engine::log::*``, ``engine::traces::*``, ...) are
neither traced nor counted (workers-b.md §4.3), so reading traces adds none.

Invariants: pure (the clock is ``time.time_ns``, read once per event, and nothing else);
the buffers are bounded: past ``MAX_SPANS`` records or ``MAX_BLOB_BYTES`` of SDK frames
between two takes, what comes is dropped and counted in ``dropped``, never queued.
"""
from __future__ import annotations

import os
import re
from bisect import bisect_left
from random import getrandbits, random
from time import time, time_ns
from typing import Any, Mapping

from brokers.kit.sampling import Sampler

DURATION_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Histogram bounds of call durations, in seconds (Prometheus ``le``)."""
MAX_SPANS = 50_000
MAX_BLOB_BYTES = 8 * 1024 * 1024
OBSERVABILITY_PREFIXES = ("engine::log::", "engine::logs::", "engine::traces::", "engine::metrics::",
                          "engine::rollups::", "engine::health::", "engine::sampling::", "engine::baggage::",
                          "engine::alerts::")
BUILTIN_PREFIXES = ("engine::", "state::", "stream::", "configuration::", "iii::", "iii-http::", "iii-state::",
                    "iii-pubsub::", "iii-stream::", "iii-cron::", "iii-queue::", "iii-observability::", "bridge.",
                    "motia::", "steps::")
BUILTIN_IDS = frozenset({"publish", "motia_step_get"})
UNSET, OK, ERROR = 0, 1, 2
_ODD = frozenset("13579bdf")
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}\Z").match
POOL_BYTES = 6144
"""Random bytes drawn at once for span and trace ids (256 calls' worth)."""
CALL_FIELDS = ("iii.worker.id", "iii.caller.worker_id", "iii.invocation.id", "iii.call.mode")
"""What a call's record carries at 10..13, which the store turns into attributes (with
``function_id`` and ``iii.function.kind``) and the name ``call <function_id>``."""

SpanRecord = list
"""``[trace_id, span_id, parent_span_id|None, name|None, start_ns, end_ns, status,
attributes|None, status_description|None, function_id|None, *CALL_FIELDS]``; a call's name
and attributes are None (the store derives them from its function id and ``CALL_FIELDS``); unsampled calls carry ``trace_id`` None and
are counted only; a span that is not a call (``span``) has no function id and is not counted. The sink sends records as they are; the store reads the first nine fields."""


def function_kind(function_id: str) -> str | None:
    """``internal`` for the engine's built-ins, ``user`` otherwise; None for the
    observability functions, which are never traced."""
    if function_id.startswith(OBSERVABILITY_PREFIXES):
        return None
    if function_id.startswith(BUILTIN_PREFIXES) or function_id in BUILTIN_IDS:
        return "internal"
    return "user"


def parse_traceparent(value: Any) -> tuple[str, str, bool] | None:
    """``(trace_id, parent span id, sampled)`` of a W3C ``traceparent``; None if it is not one."""
    if value.__class__ is not str or _TRACEPARENT(value) is None:
        return None
    return value[3:35], value[36:52], value[54] in _ODD


def with_function_id(baggage: Any, function_id: str) -> str:
    """``baggage`` with the entry ``iii.function.id`` replaced or added (protocol §9.1)."""
    entry = "iii.function.id=" + function_id
    if baggage.__class__ is not str or not baggage:
        return entry
    kept = [part for part in baggage.split(",") if part.split("=", 1)[0].strip() != "iii.function.id"]
    kept.append(entry)
    return ",".join(kept)


class Recorder:
    """One process's engine spans, call counters and pending SDK telemetry."""

    __slots__ = ("on", "sampler", "spans", "calls", "blobs", "blob_bytes", "dropped", "_kinds", "_always", "_pool",
                 "_at")

    def __init__(self, settings: Mapping[str, Any] | None = None, on: bool = True) -> None:
        self.on = on and bool(settings is None or settings.get("enabled", True))
        self.sampler = Sampler.from_settings(settings)
        self.spans: list[SpanRecord] = []
        self.calls: dict[str, list] = {}
        """``function_id -> [count, errors, buckets (len(DURATION_BOUNDS)+1), seconds]``, cumulative."""
        self.blobs: list[bytes] = []
        self.blob_bytes = 0
        self.dropped = 0
        self._kinds: dict[str, str | None] = {}
        self._always = self.sampler.always
        self._pool = ""
        self._at = 0

    # ---- calls ------------------------------------------------------------------------

    def begin(self, function_id: str, traceparent: Any = None, baggage: Any = None
              ) -> tuple[SpanRecord | None, Any, Any]:
        """Open a call of ``function_id``: ``(record, traceparent, baggage)`` for the
        callee; record None when the call is not observed (observability off, or an
        observability function). The hot path of every routed call: ids come from a pool
        of random hex, the attributes are filled in by the store (``CALL_FIELDS``)."""
        kinds = self._kinds
        kind = kinds[function_id] if function_id in kinds else kinds.setdefault(function_id, function_kind(function_id))
        if kind is None or not self.on:
            return None, traceparent, baggage
        now = time_ns()
        parent = None
        if traceparent is not None or baggage is not None:
            baggage = with_function_id(baggage, function_id)
            if traceparent.__class__ is str and _TRACEPARENT(traceparent) is not None:
                parent = traceparent[36:52]
                if self.sampler.parent_based and traceparent[54] not in _ODD:
                    return [None, None, None, None, now, 0, UNSET, None, None, function_id, None, None, None,
                            None], traceparent, baggage
        if (parent is None or not self.sampler.parent_based) and not self._always and not self.sampler.root("call " + function_id, random(), now / 1e9):
            return [None, None, None, None, now, 0, UNSET, None, None, function_id, None, None, None,
                    None], traceparent, baggage
        pool, at = self._pool, self._at
        if at + 48 > len(pool):
            pool = self._pool = os.urandom(POOL_BYTES).hex()
            at = 0
        self._at = at + 48
        trace = traceparent[3:35] if parent is not None else pool[at:at + 32]
        span = pool[at + 32:at + 48]
        return ([trace, span, parent, None, now, 0, UNSET, None, None, function_id, None, None, None, None],
                "00-" + trace + "-" + span + "-01", baggage)

    def finish(self, rec: SpanRecord, error: bool = False, void: bool = False, description: str | None = None
               ) -> None:
        """Close the call of ``rec``: count it and keep its span if sampled. A void call
        ends when it is handed on (nobody learns how it went): status unset, no duration."""
        fid = rec[9]
        calls = None
        if fid is not None:
            calls = self.calls.get(fid)
            if calls is None:
                calls = self.calls[fid] = [0, 0, [0] * (len(DURATION_BOUNDS) + 1), 0.0]
            calls[0] += 1
        if void:
            rec[5] = rec[4]
        else:
            end = rec[5] = time_ns()
            if calls is not None:
                seconds = (end - rec[4]) / 1e9
                calls[2][bisect_left(DURATION_BOUNDS, seconds)] += 1
                calls[3] += seconds
                if error:
                    calls[1] += 1
            if error:
                rec[6] = ERROR
                rec[8] = description
            else:
                rec[6] = OK
        if rec[0] is not None:
            if len(self.spans) < MAX_SPANS:
                self.spans.append(rec)
            else:
                self.dropped += 1

    def span(self, name: str, traceparent: Any, attributes: dict[str, Any]) -> tuple[SpanRecord | None, Any]:
        """Open a span that is not a call (an HTTP request): ``(record, traceparent of
        the span)``; finish it with ``finish``; not counted as a call (its calls are)."""
        if not self.on:
            return None, traceparent
        now = time_ns()
        parent = parse_traceparent(traceparent) if traceparent is not None else None
        if parent is not None and self.sampler.parent_based:
            sampled = parent[2]
        else:
            sampled = self.sampler.root(name, random(), now / 1e9)
        if not sampled:
            return [None, None, None, None, now, 0, UNSET, None, None, None], traceparent
        trace = parent[0] if parent is not None else "%032x" % getrandbits(128)
        span = "%016x" % getrandbits(64)
        return ([trace, span, parent[1] if parent is not None else None, name, now, 0, UNSET, attributes, None, None],
                f"00-{trace}-{span}-01")

    # ---- SDK telemetry ----------------------------------------------------------------

    def blob(self, data: bytes) -> None:
        """An SDK telemetry frame (``OTLP``/``LOGS``/``MTRC`` + OTLP JSON), handed on as it is."""
        if not self.on:
            return
        if self.blob_bytes + len(data) > MAX_BLOB_BYTES:
            self.dropped += 1
            return
        self.blobs.append(data)
        self.blob_bytes += len(data)

    def take(self) -> tuple[list[SpanRecord], list[bytes]]:
        """Everything buffered since the last take (the sink link sends it)."""
        spans, blobs = self.spans, self.blobs
        self.spans, self.blobs, self.blob_bytes = [], [], 0
        return spans, blobs

    def stats(self) -> dict[str, Any]:
        """The cumulative part of this process's stats (see ``sink.Link``)."""
        return {"t": time(), "calls": self.calls, "dropped": self.dropped}
