"""JSON encoding of protocol frames (protocol.md §1.3, §2, §10.4).

Invariants: compact UTF-8 JSON (orjson when installed, else the stdlib); NaN/Infinity are
written as null (Node workers cannot parse them); a frame above 64 MiB is refused with
``payload_too_large`` before it reaches a socket; an unencodable value raises
``InvocationError(serialization_error)`` so the caller can turn it into an error result.
"""
from __future__ import annotations

import json
import math
from typing import Any

from sdk import errors
from sdk.errors import InvocationError

MAX_MESSAGE_BYTES = 64 * 1024 * 1024

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is an install requirement
    _orjson = None


def _default(value: Any) -> Any:
    # pydantic models (what 0.25 handlers often return) and other common containers
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _clean(value: Any) -> Any:
    """Stdlib path only: NaN/Infinity to null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def encode(msg: dict[str, Any], *, invocation_id: str | None = None, function_id: str | None = None) -> str:
    try:
        if _orjson is not None:
            text = _orjson.dumps(msg, default=_default, option=_orjson.OPT_NON_STR_KEYS).decode()
        else:
            text = json.dumps(_clean(msg), default=_default, separators=(",", ":"),
                              ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvocationError(errors.SERIALIZATION_ERROR, f"message is not JSON serializable: {exc}",
                              function_id=function_id, invocation_id=invocation_id) from None
    # len() counts characters; only measure bytes when the text could be over the limit
    if len(text) * 4 > MAX_MESSAGE_BYTES and len(text.encode()) > MAX_MESSAGE_BYTES:
        raise InvocationError(errors.PAYLOAD_TOO_LARGE,
                              f"serialized JSON is over {MAX_MESSAGE_BYTES} bytes; use channels",
                              function_id=function_id, invocation_id=invocation_id)
    return text


def decode(raw: str | bytes) -> Any:
    """Parse a frame; raises ValueError. Accepts NaN tokens (older Python peers emit them)."""
    if _orjson is not None:
        try:
            return _orjson.loads(raw)
        except _orjson.JSONDecodeError:
            pass  # maybe NaN/Infinity: the stdlib accepts those
    return json.loads(raw)
