"""wire: a 100,000-level frame is a ValueError (the stdlib fallback raised RecursionError,
which closed the connection), a value too deep to encode again is found by ``too_deep``,
and a >64-bit integer is a float on every path (the NaN-tolerant fallback kept a Python
int that orjson then refused)."""
from __future__ import annotations

import orjson
import pytest

from brokers.kit import wire


def test_a_frame_too_deep_to_parse_is_a_value_error() -> None:
    raw = "[" * 100_000 + "]" * 100_000
    for parse in (wire.loads, wire.parse):
        with pytest.raises(ValueError, match="nested too deep"):
            parse(raw)
        with pytest.raises(ValueError):
            parse(raw.encode())


def test_what_parses_but_cannot_be_encoded_again_is_found() -> None:
    deep = wire.loads(b"[" * 300 + b"]" * 300)  # orjson parses 1024 levels, encodes 254
    with pytest.raises(orjson.JSONEncodeError):
        wire.dumps(deep)
    assert wire.too_deep(deep) and wire.too_deep({"a": deep})
    ok = wire.loads(b"[" * wire.MAX_DEPTH + b"]" * wire.MAX_DEPTH)
    assert not wire.too_deep(ok)
    wire.dumps({"a": {"b": {"c": {"d": [ok]}}}})  # room for the engine's envelopes


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


def test_a_lone_surrogate_is_refused_like_serde_json_refuses_it() -> None:
    # the stdlib would accept it, and orjson could never encode the string again: a
    # binding holding one broke the router at every replay (found by the fuzz test)
    with pytest.raises(ValueError, match="lone surrogate"):
        wire.loads(b'{"config":{"x":"a\\ud800"},"n":NaN}')
    assert wire.parse(b'{"s":"\\ud83d\\ude00","n":NaN}')[0]["s"] == "\N{GRINNING FACE}"


def test_an_integer_beyond_a_double_is_refused_not_a_crash() -> None:
    # float() of it overflowed and the exception ended the worker's connection (fuzz test)
    with pytest.raises(ValueError, match="out of range"):
        wire.parse(b'{"n":1' + b"0" * 400 + b',"x":NaN}')
