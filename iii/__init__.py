"""iii: the worker SDK's public names, lazily re-exported from ``sdk``; nothing else.

Importing ``iii`` loads no zmq, lmdb, msgpack or engine module: the names resolve on first
attribute access through the module ``__getattr__`` below (PEP 562). ``iii.iii_types`` is
the public module of the wire types (``sdk.types``); ``iii.channels`` and ``iii.helpers``
(channels, ``create_channel``) are submodules, loaded only when imported. The engine lives
in ``brokers``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "register_worker": "sdk.worker",
    "III": "sdk.worker",
    "FunctionRef": "sdk.worker",
    "TriggerRef": "sdk.worker",
    "TriggerTypeRef": "sdk.worker",
    "Logger": "sdk.logger",
    "InitOptions": "sdk.options",
    "OtelConfig": "sdk.options",
    "ReconnectionConfig": "sdk.options",
    "DEFAULT_ENGINE_URL": "sdk.options",
    "InvocationError": "sdk.errors",
    "RegistrationRejectedError": "sdk.errors",
    "TriggerAction": "sdk.types",
    "TriggerActionVoid": "sdk.types",
    "TriggerActionEnqueue": "sdk.types",
    "TriggerConfig": "sdk.types",
    "HttpInvocationConfig": "sdk.types",
    "HttpAuthBearer": "sdk.types",
    "HttpAuthHmac": "sdk.types",
    "HttpAuthApiKey": "sdk.types",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from sdk.types import (  # noqa: F401
        HttpAuthApiKey, HttpAuthBearer, HttpAuthHmac, HttpInvocationConfig, TriggerAction,
        TriggerActionEnqueue, TriggerActionVoid, TriggerConfig,
    )
    from sdk.errors import InvocationError, RegistrationRejectedError  # noqa: F401
    from sdk.logger import Logger  # noqa: F401
    from sdk.options import DEFAULT_ENGINE_URL, InitOptions, OtelConfig, ReconnectionConfig  # noqa: F401
    from sdk.worker import III, FunctionRef, TriggerRef, TriggerTypeRef, register_worker  # noqa: F401


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        # AttributeError (not ImportError) so `from iii import core` falls back to the submodule.
        raise AttributeError(f"module 'iii' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value  # cache: the next access skips this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
