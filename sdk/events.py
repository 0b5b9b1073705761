"""What the sans-I/O core hands its shell: the events of ``Core.receive``, ``expire`` and
``shutdown``, one small dataclass each.

Invariants: events are plain values (no I/O, no loop); the shell acts on them in the order
they are returned. A handler or waiter inside an event is opaque here: the core stores
what the shell gave it and hands it back unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sdk.errors import RegistrationRejectedError
from sdk.types import TriggerConfig


@dataclass(slots=True)
class Completion:
    """Settle ``waiter`` with ``result`` or raise ``error``."""

    waiter: Any
    result: Any = None
    error: BaseException | None = None


@dataclass(slots=True)
class Invoke:
    """Run ``handler`` for an incoming call; answer only if ``invocation_id`` is set."""

    invocation_id: str | None
    function_id: str
    handler: Any
    data: Any
    metadata: Any
    traceparent: str | None
    baggage: str | None


@dataclass(slots=True)
class ProviderCall:
    """Call the trigger-type ``handler``'s register_trigger / unregister_trigger."""

    kind: str  # "register" | "unregister"
    handler: Any
    trigger: TriggerConfig


@dataclass(slots=True)
class Fatal:
    """The engine rejected this worker for good: stop reconnecting."""

    error: RegistrationRejectedError
