"""wire: what it parses it can encode again. Deep nesting is refused as undecodable (the
stdlib fallback raised RecursionError, which closed the connection; 254-1024 levels parsed
but could not be re-encoded, so the call was lost), and a >64-bit integer is a float on
every path (the NaN-tolerant fallback kept a Python int that orjson then refused)."""
from __future__ import annotations

import pytest

from brokers.kit import wire


@pytest.mark.parametrize("depth", [129, 300, 1000, 100_000])
def test_too_deep_is_a_value_error(depth: int) -> None:
    raw = b"[" * depth + b"]" * depth
    for parse in (wire.loads, wire.parse):
        with pytest.raises(ValueError, match="nested deeper than 128"):
            parse(raw)
        with pytest.raises(ValueError):
            parse(raw.decode())


def test_the_deepest_accepted_message_encodes_again_inside_envelopes() -> None:
    value = wire.loads(b"[" * 128 + b"]" * 128)
    # the engine wraps a payload a few times (invoke, a trigger event): still encodable
    wire.dumps({"a": {"b": {"c": {"d": [value]}}}})


def test_big_integers_become_floats_on_both_paths() -> None:
    for raw in (b'{"n": 123456789012345678901234567890}',
                b'{"n": 123456789012345678901234567890, "x": NaN}'):
        value = wire.loads(raw)
        assert isinstance(value["n"], float)
        wire.dumps(value)  # encodes again
    assert wire.loads(b'{"n": 18446744073709551615}')["n"] == 2 ** 64 - 1  # u64 stays an int


def test_stamp_caller_sets_or_removes_the_engine_key() -> None:
    assert wire.stamp_caller({"a": 1, wire.CALLER_KEY: "forged"}, "W1") == {"a": 1, wire.CALLER_KEY: "W1"}
    assert wire.stamp_caller({"a": 1, wire.CALLER_KEY: "forged"}, None) == {"a": 1}
    assert wire.stamp_caller([1], "W1") == [1]
