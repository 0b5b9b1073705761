"""The user code the SDK calls, and how: function handlers and trigger-type providers.

Owns every decision a handler's shape makes (sync or async, whether and how it receives
the metadata sidecar, which methods a provider must have) and what a raising handler
becomes on the wire. Pure: ``inspect`` only, no loop, no threads; the shell runs what this
decides.

Invariants:
- Decided once per function handler, at registration (``HandlerSpec``).
- Async means a coroutine function, or an object whose ``__call__`` is one: it runs on the
  SDK loop; anything else runs in the handler pool (so it may block in ``iii.trigger``).
- Only a parameter literally named ``metadata`` receives the sidecar (protocol.md §5.6).
- A handler that raises ``InvocationError`` (its own, or an inner call's re-raised) answers
  with that error's code and message as they are.
"""
from __future__ import annotations

import inspect
import traceback
from typing import Any, Callable

from sdk import errors

# ProviderCall.kind -> the provider's method for it
PROVIDER_METHODS = {"register": "register_trigger", "unregister": "unregister_trigger"}


def is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


def metadata_mode(fn: Callable[..., Any]) -> str:
    """How the sidecar is passed: ``"positional"`` (the second positional parameter is
    ``metadata``), ``"keyword"`` (keyword-only ``metadata``) or ``"none"``."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return "none"
    param = params.get("metadata")
    if param is None:
        return "none"
    if param.kind == inspect.Parameter.KEYWORD_ONLY:
        return "keyword"
    positional = [p for p in params.values()
                  if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    return "positional" if len(positional) >= 2 and positional[1].name == "metadata" else "none"


class HandlerSpec:
    """A user handler with what the shell needs to call it (decided once, at registration)."""

    __slots__ = ("fn", "is_async", "meta_mode")

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.is_async = is_async(fn)
        self.meta_mode = metadata_mode(fn)

    def call(self, data: Any, metadata: Any) -> Any:
        if self.meta_mode == "positional":
            return self.fn(data, metadata)
        if self.meta_mode == "keyword":
            return self.fn(data, metadata=metadata)
        return self.fn(data)


def check_provider(handler: Any) -> None:
    """A trigger-type provider needs both methods (sync or async); raise TypeError if not."""
    for method in PROVIDER_METHODS.values():
        if not callable(getattr(handler, method, None)):
            raise TypeError(f"trigger type handler needs a {method}() method")


def provider_method(handler: Any, kind: str) -> Callable[..., Any]:
    """The provider's method for a ``ProviderCall`` of ``kind``."""
    return getattr(handler, PROVIDER_METHODS[kind])


def handler_error_body(exc: BaseException) -> dict[str, Any]:
    """What a raising handler becomes on the wire (protocol.md §5.7): an ``InvocationError``
    keeps its code and message (``str()`` of one is ``"code: message"``: the caller would see
    the code twice); anything else is ``invocation_failed`` with ``str(exc)``. The stacktrace
    is always this handler's."""
    if isinstance(exc, errors.InvocationError):
        code, message = exc.code, exc.message
    else:
        code, message = errors.INVOCATION_FAILED, str(exc)
    return {
        "code": code,
        "message": message,
        "stacktrace": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }


def provider_error_body(exc: BaseException) -> dict[str, Any]:
    """What a raising ``register_trigger`` becomes in ``triggerregistrationresult``."""
    return {"code": errors.TRIGGER_REGISTRATION_FAILED, "message": str(exc)}
