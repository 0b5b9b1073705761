"""The engine's root exception and the stable error codes it puts on the wire.

Every error that reaches a worker carries a ``code`` from protocol.md Appendix B or
workers-a/b; the message is for humans. Invariant: nothing raises a bare Exception across a
process boundary; it becomes an ``EngineError`` and then an ErrorBody.
"""
from __future__ import annotations

from typing import Any

# -- calls (protocol.md Appendix B) ------------------------------------------------------
FUNCTION_NOT_FOUND = "function_not_found"
INVOCATION_STOPPED = "invocation_stopped"
INVOCATION_FAILED = "invocation_failed"
INVALID_RESPONSE = "invalid_response"
"""A result frame from another process that does not decode."""
UNKNOWN = "UNKNOWN"
"""An error that came as a bare string instead of an ErrorBody."""
DESERIALIZATION_ERROR = "deserialization_error"
SERIALIZATION_ERROR = "serialization_error"
PAYLOAD_TOO_LARGE = "payload_too_large"
TIMEOUT = "TIMEOUT"
ENQUEUE_ERROR = "enqueue_error"
CALLEE_OVERLOADED = "callee_overloaded"
"""Ours, not the reference's (issue 11): more than the send budget already waits to be sent
to the callee (it reads slower than it is called). The call was not delivered, so a retry
later is safe; void calls in that state are dropped and counted instead."""

# -- HTTP-invoked functions (workers-b §3) ---------------------------------------------------
URL_VALIDATION_FAILED = "url_validation_failed"
HTTP_REQUEST_FAILED = "http_request_failed"
HTTP_RESPONSE_FAILED = "http_response_failed"
HTTP_ERROR = "http_error"
SECRET_NOT_FOUND = "secret_not_found"
TOKEN_NOT_FOUND = "token_not_found"
API_KEY_NOT_FOUND = "api_key_not_found"
MODULE_UNAVAILABLE = "module_unavailable"
"""The reference's code (its admin API) for "HTTP functions module not loaded"."""

# -- registrations ------------------------------------------------------------------------
INVALID_NAMESPACE = "INVALID_NAMESPACE"
WORKER_NAMESPACE_CONFLICT = "WORKER_NAMESPACE_CONFLICT"
FUNCTION_NAMESPACE_CONFLICT = "FUNCTION_NAMESPACE_CONFLICT"
TRIGGER_REGISTRATION_FAILED = "trigger_registration_failed"
TRIGGER_TYPE_NOT_FOUND = "trigger_type_not_found"
UNREGISTER_FAILED = "unregister_failed"

# -- engine::* built-ins (workers-a §5) ---------------------------------------------------
NOT_FOUND = "NOT_FOUND"
INVALID_ARGUMENTS = "INVALID_ARGUMENTS"

# -- state (workers-a §2) -------------------------------------------------------------------
SET_ERROR = "SET_ERROR"
UPDATE_ERROR = "UPDATE_ERROR"
DELETE_ERROR = "DELETE_ERROR"

# -- stream (workers-a §3.1) -----------------------------------------------------------------
STREAM_SET_ERROR = "STREAM_SET_ERROR"
STREAM_GET_ERROR = "STREAM_GET_ERROR"
STREAM_DELETE_ERROR = "STREAM_DELETE_ERROR"
STREAM_UPDATE_ERROR = "STREAM_UPDATE_ERROR"
STREAM_GET_GROUP_ERROR = "STREAM_GET_GROUP_ERROR"
STREAM_LIST_GROUPS_ERROR = "STREAM_LIST_GROUPS_ERROR"
STREAM_LIST_ALL_ERROR = "STREAM_LIST_ALL_ERROR"
STREAM_SEND_ERROR = "STREAM_SEND_ERROR"
JSON_ERROR = "JSON_ERROR"

# -- queue and pub/sub (workers-a §4, workers-b §1) -----------------------------------------
TOPIC_NOT_SET = "topic_not_set"
QUEUE_NOT_SET = "queue_not_set"
MESSAGE_ID_NOT_SET = "message_id_not_set"
TOPIC_REQUIRED = "topic_required"
REDRIVE_FAILED = "redrive_failed"
REDRIVE_MESSAGE_FAILED = "redrive_message_failed"
DISCARD_MESSAGE_FAILED = "discard_message_failed"
PUBLISH_FAILED = "publish_failed"
"""Ours, after its siblings (workers-b §1.5 names no code for a publish that could not be
stored): ``iii::durable::publish`` whose job did not reach the disk (e.g. disk full)."""


class EngineError(Exception):
    """An error with a stable machine-readable ``code``."""

    def __init__(self, code: str, message: str, stacktrace: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.stacktrace = stacktrace

    def body(self) -> dict[str, Any]:
        """The protocol ErrorBody for this error."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.stacktrace:
            out["stacktrace"] = self.stacktrace
        return out


def deserialization_error(function_id: str, detail: str) -> EngineError:
    """The error every built-in raises for input that does not fit its shape (workers-a §0)."""
    return EngineError(DESERIALIZATION_ERROR, f"Failed to deserialize input for {function_id}: {detail}")


class NotServedHere(Exception):
    """A process declines to serve, in place, a call of a function another process owns
    (the store cannot be opened here just now): the call goes to the owner instead."""
