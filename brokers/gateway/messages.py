"""The messages a worker sends (protocol.md §3), each declared once with the input kit.

The gateway checks every message against its declaration before acting on it; one that
does not fit (a missing field, a wrong type) is logged and dropped, and the connection
stays open (§1.3: never a reply). Unknown fields are ignored (§2), and so are unknown
types (``MESSAGES`` has no entry: nothing to check, nothing to do). A missing ``data``,
``config`` or ``result`` is null (§2).

Lenient where an SDK is: ``registertriggertype.description`` is required by the spec but
an omission is accepted. ``invokefunction.namespace`` of any type gets through: a caller
waiting on a blank or non-string one is answered ``INVALID_NAMESPACE`` (calls.py), which
a drop would not do.
"""
from __future__ import annotations

from brokers.kit.inputs import ANY, OBJ, STR, Field, Input

_ID = Field("id", STR)


def _opt(name: str, kind=STR) -> Field:
    return Field(name, kind, required=False)


_TRACE = (_opt("traceparent"), _opt("baggage"))

MESSAGES = {m.owner: m for m in (
    Input("invokefunction", "InvokeFunction", Field("function_id", STR), _opt("invocation_id"),
          _opt("data", ANY), _opt("action", OBJ), _opt("namespace", ANY), _opt("metadata", ANY),
          *_TRACE),
    Input("invocationresult", "InvocationResult", Field("invocation_id", STR), _opt("function_id"),
          _opt("result", ANY), _opt("error", ANY), *_TRACE),
    Input("registerfunction", "RegisterFunction", _ID, _opt("description"),
          _opt("request_format", ANY), _opt("response_format", ANY), _opt("metadata", ANY),
          _opt("invocation", OBJ)),
    Input("unregisterfunction", "UnregisterFunction", _ID),
    Input("registertrigger", "RegisterTrigger", _ID, Field("trigger_type", STR),
          Field("function_id", STR), _opt("config", ANY), _opt("metadata", ANY),
          _opt("namespace"), _opt("trigger_namespace")),
    Input("unregistertrigger", "UnregisterTrigger", _ID, _opt("trigger_type")),
    Input("registertriggertype", "RegisterTriggerType", _ID, _opt("description"),
          _opt("trigger_request_format", ANY), _opt("call_request_format", ANY), _opt("namespace")),
    Input("unregistertriggertype", "UnregisterTriggerType", _ID, _opt("namespace")),
    Input("triggerregistrationresult", "TriggerRegistrationResult", _ID, _opt("trigger_type"),
          _opt("function_id"), _opt("error", ANY)),
    Input("registerservice", "RegisterService", _ID, _opt("name"), _opt("description"),
          _opt("parent_service_id")),
    Input("reattach", "Reattach", _opt("previous_worker_id"), _opt("reattach_token")),
    Input("ping", "Ping"),
)}
"""Every message type a worker may send, by ``type``."""
