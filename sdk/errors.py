"""The SDK's exceptions and the error codes it produces itself (protocol.md Appendix B).

Invariant: every failed call surfaces as ``InvocationError`` with a string ``code``, except a
fatal worker-name rejection, which is ``RegistrationRejectedError``. Kept free of engine
imports (``brokers``) so that a worker process never loads engine code.
"""
from __future__ import annotations

from typing import Any

TIMEOUT = "TIMEOUT"
SHUTDOWN = "SHUTDOWN"
UNKNOWN = "UNKNOWN"
INVOCATION_FAILED = "invocation_failed"
FUNCTION_NOT_FOUND = "function_not_found"
FUNCTION_NOT_INVOKABLE = "function_not_invokable"
PAYLOAD_TOO_LARGE = "payload_too_large"
SERIALIZATION_ERROR = "serialization_error"
TRIGGER_REGISTRATION_FAILED = "trigger_registration_failed"


class InvocationError(Exception):
    """A call failed: ``code`` is machine-readable, ``stacktrace`` is the remote traceback.

    ``str(err)`` never includes the stacktrace (it may carry internal paths).
    """

    def __init__(
        self,
        code: str,
        message: str,
        stacktrace: str | None = None,
        *,
        function_id: str | None = None,
        invocation_id: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.stacktrace = stacktrace
        self.function_id = function_id
        self.invocation_id = invocation_id

    def body(self) -> dict[str, Any]:
        """This error as a wire ErrorBody."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.stacktrace:
            out["stacktrace"] = self.stacktrace
        return out


class RegistrationRejectedError(Exception):
    """The engine refused this worker (e.g. WORKER_NAMESPACE_CONFLICT); terminal, no reconnect."""

    def __init__(self, code: str, namespace: str, worker_name: str, owner_worker_id: str) -> None:
        super().__init__(
            f"{code}: worker '{worker_name}' rejected in namespace '{namespace}' "
            f"(owned by '{owner_worker_id}')"
        )
        self.code = code
        self.namespace = namespace
        self.worker_name = worker_name
        self.owner_worker_id = owner_worker_id


def from_wire(error: Any, *, function_id: str | None, invocation_id: str | None) -> InvocationError:
    """An ErrorBody from the wire as an exception; malformed bodies become code ``UNKNOWN``."""
    if isinstance(error, dict):
        code = error.get("code")
        message = error.get("message")
        stacktrace = error.get("stacktrace")
        return InvocationError(
            code if isinstance(code, str) else UNKNOWN,
            message if isinstance(message, str) else "<no message>",
            stacktrace if isinstance(stacktrace, str) else None,
            function_id=function_id,
            invocation_id=invocation_id,
        )
    return InvocationError(UNKNOWN, str(error), function_id=function_id, invocation_id=invocation_id)
