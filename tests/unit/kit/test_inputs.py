"""The input kit: serde's wording for every way an input can be wrong, defaults and aliases,
the empty-string codes, and the schema derived from the same declaration."""
from __future__ import annotations

import pytest

from brokers.kit.decode import DecodeError
from brokers.kit.errors import EngineError
from brokers.kit.inputs import ANY, ARR, BOOL, INT, OBJ, STR, UINT, Field, Input

SHAPE = Input("demo::fn", "DemoInput",
              Field("name", STR, empty=("name_not_set", "Name is not set")),
              Field("value", ANY, aliases=("data",)),
              Field("count", INT, required=False, default=7),
              Field("limit", UINT, required=False, default=50),
              Field("tags", ARR, required=False, items=STR),
              Field("flag", BOOL, required=False, default=False),
              Field("extra", OBJ, required=False))


@pytest.mark.parametrize("payload, detail", [
    (None, "invalid type: null, expected struct DemoInput"),
    ([], "invalid type: sequence, expected struct DemoInput"),
    ({"value": 1}, "missing field `name`"),
    ({"name": 5, "value": 1}, "invalid type: integer `5`, expected a string"),
    ({"name": None, "value": 1}, "invalid type: null, expected a string"),
    ({"name": "n"}, "missing field `value`"),
    ({"name": "n", "value": 1, "data": 2}, "duplicate field `value`"),
    ({"name": "n", "value": 1, "count": True}, "invalid type: boolean `true`, expected i64"),
    ({"name": "n", "value": 1, "count": 10 ** 30}, f"invalid value: integer `{10 ** 30}`, expected i64"),
    ({"name": "n", "value": 1, "limit": -1}, "invalid value: integer `-1`, expected u64"),
    ({"name": "n", "value": 1, "tags": ["a", 2]}, "invalid type: integer `2`, expected a string"),
    ({"name": "n", "value": 1, "extra": "x"}, 'invalid type: string "x", expected a map'),
])
def test_bad_inputs_are_described_as_serde_does(payload, detail) -> None:
    for check in (SHAPE.decode, SHAPE.check):  # check(): the same verdict, nothing copied
        with pytest.raises(DecodeError) as info:
            check(payload)
        assert str(info.value) == detail
    with pytest.raises(EngineError) as err:
        SHAPE.parse(payload)
    assert (err.value.code, err.value.message) == (
        "deserialization_error", f"Failed to deserialize input for demo::fn: {detail}")


def test_defaults_aliases_nulls_and_unknown_keys() -> None:
    out = SHAPE.parse({"name": "n", "data": None, "count": None, "other": 1, "_caller_worker_id": "w"})
    assert out == {"name": "n", "value": None, "count": 7, "limit": 50, "tags": None,
                   "flag": False, "extra": None}


def test_check_accepts_what_decode_accepts() -> None:
    for ok in ({"name": "n", "value": None}, {"name": "n", "data": 1, "tags": ["a"], "count": None}):
        assert SHAPE.check(ok) is None
        SHAPE.decode(ok)


def test_an_empty_name_has_its_own_code_after_the_shape_is_checked() -> None:
    with pytest.raises(EngineError) as err:
        SHAPE.parse({"name": "", "value": 1})
    assert (err.value.code, err.value.message) == ("name_not_set", "Name is not set")
    with pytest.raises(EngineError) as err:
        SHAPE.parse({"name": ""})  # the shape first: value is missing
    assert err.value.code == "deserialization_error"


def test_schema_comes_from_the_same_declaration() -> None:
    schema = SHAPE.schema()
    assert schema["required"] == ["name", "value"]
    assert schema["properties"]["name"] == {"type": "string"}
    assert schema["properties"]["value"] == {}
    assert schema["properties"]["limit"] == {"type": "integer", "minimum": 0}
    assert schema["properties"]["tags"] == {"type": "array", "items": {"type": "string"}}
