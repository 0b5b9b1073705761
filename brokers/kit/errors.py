"""The engine's root exception and the stable error codes it puts on the wire.

Every error that reaches a worker carries a ``code`` from protocol.md Appendix B or
workers-a/b; the message is for humans. Invariant: nothing raises a bare Exception across a
process boundary; it becomes an ``EngineError`` and then an ErrorBody.
"""
from __future__ import annotations

from typing import Any

FUNCTION_NOT_FOUND = "function_not_found"
INVOCATION_STOPPED = "invocation_stopped"
INVOCATION_FAILED = "invocation_failed"
ENQUEUE_ERROR = "enqueue_error"
INVALID_NAMESPACE = "INVALID_NAMESPACE"
DESERIALIZATION_ERROR = "deserialization_error"
SERIALIZATION_ERROR = "serialization_error"
TRIGGER_REGISTRATION_FAILED = "trigger_registration_failed"
UNREGISTER_FAILED = "unregister_failed"
NOT_FOUND = "NOT_FOUND"
INVALID_ARGUMENTS = "INVALID_ARGUMENTS"
PAYLOAD_TOO_LARGE = "payload_too_large"
TIMEOUT = "TIMEOUT"


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
