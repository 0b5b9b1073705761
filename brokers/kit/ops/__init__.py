"""The update-ops language of ``state::update`` and ``stream::update`` (workers-a §2.2).

Two steps, both pure, each one function per op kind behind a dispatch table:

* ``parse_ops(raw)`` decodes the JSON ``ops`` array into ``Op`` tuples (``parse.PARSERS``);
  a shape error raises ``OpsDecodeError`` and the whole call fails with
  ``deserialization_error``, nothing written.
* ``apply_update_ops(old, ops)`` applies the ops in order to a private copy of ``old``
  (``MISSING`` when no value is stored) and returns ``(new_value, errors)``
  (``apply.APPLIERS``). A failing op is skipped and reported with its index; later ops
  still run.

Invariants: neither input is mutated; values from ops are copied before they are stored;
``MISSING`` never appears in a result. A new op kind is one parser and one applier, added
to both tables.
"""
from __future__ import annotations

from brokers.kit.ops.apply import (
    APPLIERS, DOC_URL, MAX_PATH_DEPTH, MAX_SEGMENT_BYTES, MAX_VALUE_DEPTH, MAX_VALUE_KEYS, PROTO_KEYS,
    apply_update_ops,
)
from brokers.kit.ops.parse import PARSERS, Op, OpsDecodeError, parse_op, parse_ops
from brokers.kit.ops.values import I64_MAX, I64_MIN, MISSING, U64_MAX, add_number, clone, json_depth, type_name

__all__ = [
    "APPLIERS", "DOC_URL", "I64_MAX", "I64_MIN", "MAX_PATH_DEPTH", "MAX_SEGMENT_BYTES",
    "MAX_VALUE_DEPTH", "MAX_VALUE_KEYS", "MISSING", "Op", "OpsDecodeError", "PARSERS",
    "PROTO_KEYS", "U64_MAX", "add_number", "apply_update_ops", "clone", "json_depth",
    "parse_op", "parse_ops", "type_name",
]
