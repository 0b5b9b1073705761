"""Input shapes of the queue broker's functions, declared once with the kit (``INPUTS``).

Every parser takes the raw decoded payload and returns plain values or raises
``EngineError``: ``deserialization_error`` for a payload that does not fit its shape
(workers-a §0: not an object, missing field, wrong type), the function's own code for an
empty name (workers-b §1.5, §1.6). Unknown fields (``_caller_worker_id``) are ignored.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from brokers.kit import errors
from brokers.kit.inputs import ANY, STR, UINT, Field, Input

ENQUEUE = "engine::queue::enqueue"
PUBLISH = "iii::durable::publish"
REDRIVE = "iii::queue::redrive"
REDRIVE_MESSAGE = "iii::queue::redrive_message"
DISCARD_MESSAGE = "iii::queue::discard_message"
LIST_TOPICS = "engine::queue::list_topics"
TOPIC_STATS = "engine::queue::topic_stats"
DLQ_TOPICS = "engine::queue::dlq_topics"
DLQ_MESSAGES = "engine::queue::dlq_messages"


@dataclass(frozen=True, slots=True)
class EnqueueRequest:
    queue: str
    function_id: str
    data: Any
    message_id: str
    namespace: str = "default"
    traceparent: str | None = None
    baggage: str | None = None


_QUEUE = Field("queue", STR, aliases=("topic",), empty=(errors.QUEUE_NOT_SET, "Queue name is required"))
_TOPIC = Field("topic", STR, aliases=("queue",), empty=(errors.TOPIC_REQUIRED, "topic is required"))
_MESSAGE = Field("message_id", STR, empty=(errors.MESSAGE_ID_NOT_SET, "Message ID is required"),
                 description="The DLQ message id (from dlq_messages)")
_OPT_STR = dict(kind=STR, required=False)

INPUTS = {
    ENQUEUE: Input(
        ENQUEUE, "EnqueueInput",
        Field("queue", STR, empty=(errors.ENQUEUE_ERROR, "queue is required")),
        Field("function_id", STR, empty=(errors.ENQUEUE_ERROR, "function_id is required")),
        Field("data", ANY),
        Field("messageReceiptId", STR, empty=(errors.ENQUEUE_ERROR, "messageReceiptId is required")),
        Field("namespace", **_OPT_STR, default="default"),
        Field("traceparent", **_OPT_STR), Field("baggage", **_OPT_STR)),
    PUBLISH: Input(PUBLISH, "DurablePublishInput",
                   Field("topic", STR, empty=(errors.TOPIC_NOT_SET, "Topic is not set")),
                   Field("data", ANY)),
    REDRIVE: Input(REDRIVE, "RedriveInput", _QUEUE),
    REDRIVE_MESSAGE: Input(REDRIVE_MESSAGE, "RedriveMessageInput", _QUEUE, _MESSAGE),
    DISCARD_MESSAGE: Input(DISCARD_MESSAGE, "DiscardMessageInput", _QUEUE, _MESSAGE),
    TOPIC_STATS: Input(TOPIC_STATS, "TopicStatsInput", _TOPIC),
    DLQ_MESSAGES: Input(DLQ_MESSAGES, "DlqMessagesInput", _TOPIC,
                        Field("offset", UINT, required=False, default=0),
                        Field("limit", UINT, required=False, default=50)),
}
"""The input of each queue function, declared once (parser, errors, request_format);
``list_topics`` and ``dlq_topics`` take any input."""


def enqueue(raw: Any) -> EnqueueRequest:
    """``engine::queue::enqueue`` input (protocol §5.5); empty names are ``enqueue_error``."""
    a = INPUTS[ENQUEUE].parse(raw)
    return EnqueueRequest(queue=a["queue"], function_id=a["function_id"], data=a["data"],
                          message_id=a["messageReceiptId"], namespace=a["namespace"] or "default",
                          traceparent=a["traceparent"], baggage=a["baggage"])


def publish(raw: Any) -> tuple[str, Any]:
    """``iii::durable::publish {topic, data}`` -> (topic, data)."""
    a = INPUTS[PUBLISH].parse(raw)
    return a["topic"], a["data"]


def queue_name(fid: str, raw: Any) -> str:
    """``{queue}`` (alias ``topic``) of the redrive family."""
    return INPUTS[fid].parse(raw)["queue"]


def queue_and_message(fid: str, raw: Any) -> tuple[str, str]:
    """``{queue (alias topic), message_id}`` of redrive_message / discard_message."""
    a = INPUTS[fid].parse(raw)
    return a["queue"], a["message_id"]


def topic_name(fid: str, raw: Any) -> str:
    """``{topic}`` (alias ``queue``) of topic_stats / dlq_messages."""
    return INPUTS[fid].parse(raw)["topic"]


def dlq_page(raw: Any) -> tuple[str, int, int]:
    """``{topic, offset=0, limit=50}`` of dlq_messages."""
    a = INPUTS[DLQ_MESSAGES].parse(raw)
    return a["topic"], a["offset"], a["limit"]
