"""A queue job, its stored record, and the names of internal queues.

A ``Job`` is one delivery obligation: "invoke ``function_id`` in ``namespace`` with
``data``" for one internal queue (``lane``). Named queues use the lane key
``__fn_queue::<name>``; a durable-topic subscriber uses ``join_ns("<topic>::<fn>", ns)``
as in the reference engine (workers-b §1.5).

Invariants: ``seq`` is unique and increasing per broker (it orders jobs, also across a
restart, since the largest stored ``seq`` is restored); a job is in the DLQ exactly when
``failed_at`` is set. The record is msgpack (plain dicts), so the store never needs this
class to read its data.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

import msgpack

FN_QUEUE_PREFIX = "__fn_queue::"


@dataclass(slots=True)
class Job:
    id: str
    lane: str
    function_id: str
    data: Any
    seq: int
    created_at: int
    """Enqueue time, unix ms."""
    max_attempts: int
    backoff_ms: int
    namespace: str = "default"
    topic: str | None = None
    """The durable topic of a subscriber copy; None for a named-queue job."""
    message_id: str | None = None
    """The producer's ``messageReceiptId`` (named queues); None for topic copies."""
    attempts_made: int = 0
    """Failed deliveries so far (see core.py: how attempts are counted)."""
    process_at: int | None = None
    """Not before this unix ms (set while waiting for a retry)."""
    group_id: str | None = None
    """FIFO message group (the canonical text of the group field's value)."""
    traceparent: str | None = None
    baggage: str | None = None
    failed_at: int | None = None
    """Unix ms of the move to the DLQ; None while the job is live."""
    error: str | None = None
    """Why the last attempt failed (``"<code>: <message>"``), kept in the DLQ."""

    def to_record(self) -> bytes:
        # Not dataclasses.asdict: that deep-copies ``data``, the largest part of the job.
        return _pack({name: getattr(self, name) for name in _FIELDS})

    @classmethod
    def from_record(cls, raw: bytes) -> Job:
        return cls(**msgpack.unpackb(raw, raw=False))

    def dlq_view(self) -> dict[str, Any]:
        """The reference's DLQ entry shape (workers-b §1.4), for logs and inspection."""
        job: dict[str, Any] = {
            "id": self.id, "queue": self.lane, "data": self.data,
            "attempts_made": self.attempts_made, "max_attempts": self.max_attempts,
            "backoff_delay_ms": self.backoff_ms, "created_at": self.created_at,
            "process_at": self.process_at, "group_id": self.group_id,
            "traceparent": self.traceparent, "baggage": self.baggage,
            "function_id": self.function_id, "message_id": self.message_id,
        }
        if self.namespace != "default":
            job["namespace"] = self.namespace
        return {"job": job, "error": self.error, "failed_at": self.failed_at}


_FIELDS = tuple(f.name for f in fields(Job))
_pack = msgpack.Packer(use_bin_type=True).pack


def new_uuid4() -> str:
    """A random (version 4) UUID string, ~4x cheaper than ``str(uuid.uuid4())``: two of
    these per job (job id, delivery invocation id) are on the hot path."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def fn_queue_key(name: str) -> str:
    """The lane key of a named queue."""
    return FN_QUEUE_PREFIX + name


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("@", "\\@")


def join_ns(name: str, namespace: str) -> str:
    """``name@namespace`` with ``@`` and ``\\`` inside the operands backslash-escaped."""
    return f"{_escape(name)}@{_escape(namespace)}"


def subscriber_lane_key(topic: str, function_id: str, namespace: str) -> str:
    """The lane shared by every trigger of one (namespace, function) on ``topic``."""
    return join_ns(f"{topic}::{function_id}", namespace)


def group_key(value: Any) -> str:
    """A stable text for a FIFO group value: strings as they are, others as JSON.

    The NUL prefix keeps the number 1 and the string "1" in different groups.
    """
    if isinstance(value, str):
        return value
    import json  # only for non-string group values, which are rare

    return "\0" + json.dumps(value, sort_keys=True, separators=(",", ":"))
