"""Input shapes of the queue broker's functions, checked with the spec's codes.

Every parser takes the raw decoded payload and returns plain values or raises
``EngineError``: ``deserialization_error`` for a payload that does not fit its shape
(workers-a §0: not an object, missing field, wrong type), the function's own code for an
empty name (workers-b §1.5, §1.6). Unknown fields (``_caller_worker_id``) are ignored.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from brokers.kit import errors
from brokers.kit.errors import EngineError, deserialization_error

ENQUEUE = "engine::queue::enqueue"
PUBLISH = "iii::durable::publish"
REDRIVE = "iii::queue::redrive"
REDRIVE_MESSAGE = "iii::queue::redrive_message"
DISCARD_MESSAGE = "iii::queue::discard_message"
LIST_TOPICS = "engine::queue::list_topics"
TOPIC_STATS = "engine::queue::topic_stats"
DLQ_TOPICS = "engine::queue::dlq_topics"
DLQ_MESSAGES = "engine::queue::dlq_messages"

_MISSING = object()


@dataclass(frozen=True, slots=True)
class EnqueueRequest:
    queue: str
    function_id: str
    data: Any
    message_id: str
    namespace: str = "default"
    traceparent: str | None = None
    baggage: str | None = None


def _obj(fid: str, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        kind = "null" if raw is None else type(raw).__name__
        raise deserialization_error(fid, f"invalid type: {kind}, expected a map")
    return raw


def _field(fid: str, raw: dict[str, Any], names: tuple[str, ...], kind: type | None,
           required: bool = True, default: Any = None) -> Any:
    """The first present of ``names`` (a field and its aliases), type-checked."""
    for name in names:
        if name in raw:
            value = raw[name]
            if kind is not None and value is not None and (
                    not isinstance(value, kind) or isinstance(value, bool) and kind is int):
                raise deserialization_error(
                    fid, f"invalid type for `{name}`: {type(value).__name__}, expected {kind.__name__}")
            if value is None and kind is not None:
                if required:
                    raise deserialization_error(fid, f"invalid type for `{name}`: null")
                return default
            return value
    if required:
        raise deserialization_error(fid, f"missing field `{names[0]}`")
    return default


def enqueue(raw: Any) -> EnqueueRequest:
    """``engine::queue::enqueue`` input (protocol §5.5); empty names are ``enqueue_error``."""
    raw = _obj(ENQUEUE, raw)
    queue = _field(ENQUEUE, raw, ("queue",), str)
    function_id = _field(ENQUEUE, raw, ("function_id",), str)
    receipt = _field(ENQUEUE, raw, ("messageReceiptId",), str)
    data = _field(ENQUEUE, raw, ("data",), None)
    for value, what in ((queue, "queue"), (function_id, "function_id"), (receipt, "messageReceiptId")):
        if not value:
            raise EngineError(errors.ENQUEUE_ERROR, f"{what} is required")
    return EnqueueRequest(
        queue=queue, function_id=function_id, data=data, message_id=receipt,
        namespace=_field(ENQUEUE, raw, ("namespace",), str, False, None) or "default",
        traceparent=_field(ENQUEUE, raw, ("traceparent",), str, False),
        baggage=_field(ENQUEUE, raw, ("baggage",), str, False),
    )


def publish(raw: Any) -> tuple[str, Any]:
    """``iii::durable::publish {topic, data}`` -> (topic, data)."""
    raw = _obj(PUBLISH, raw)
    topic = _field(PUBLISH, raw, ("topic",), str)
    data = _field(PUBLISH, raw, ("data",), None)
    if not topic:
        raise EngineError(errors.TOPIC_NOT_SET, "Topic is not set")
    return topic, data


def queue_name(fid: str, raw: Any) -> str:
    """``{queue}`` (alias ``topic``) of the redrive family."""
    name = _field(fid, _obj(fid, raw), ("queue", "topic"), str)
    if not name:
        raise EngineError(errors.QUEUE_NOT_SET, "Queue name is required")
    return name


def queue_and_message(fid: str, raw: Any) -> tuple[str, str]:
    """``{queue (alias topic), message_id}`` of redrive_message / discard_message."""
    name = queue_name(fid, raw)
    message_id = _field(fid, raw, ("message_id",), str)
    if not message_id:
        raise EngineError(errors.MESSAGE_ID_NOT_SET, "Message ID is required")
    return name, message_id


def topic_name(fid: str, raw: Any) -> str:
    """``{topic}`` (alias ``queue``) of topic_stats / dlq_messages."""
    name = _field(fid, _obj(fid, raw), ("topic", "queue"), str)
    if not name:
        raise EngineError(errors.TOPIC_REQUIRED, "topic is required")
    return name


def dlq_page(raw: Any) -> tuple[str, int, int]:
    """``{topic, offset=0, limit=50}`` of dlq_messages."""
    name = topic_name(DLQ_MESSAGES, raw)
    offset = _field(DLQ_MESSAGES, raw, ("offset",), int, False, 0)
    limit = _field(DLQ_MESSAGES, raw, ("limit",), int, False, 50)
    if offset < 0 or limit < 0:
        raise deserialization_error(DLQ_MESSAGES, "offset and limit must be >= 0")
    return name, offset, limit
