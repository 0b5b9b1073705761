"""The update-ops test vectors of workers-a §2.2 (worked examples) and §8
(state_stream_update_e2e), ported one by one, plus the engine's own unit vectors."""
from __future__ import annotations

import pytest

from brokers.kit.ops import (
    DOC_URL, I64_MAX, I64_MIN, MISSING, OpsDecodeError, apply_update_ops, parse_ops,
)


def run(old, ops):
    return apply_update_ops(old, parse_ops(ops))


def ok(old, ops):
    value, errors = run(old, ops)
    assert errors == []
    return value


def codes(errors):
    return [(e["op_index"], e["code"]) for e in errors]


def inc(path, by):
    return {"type": "increment", "path": path, "by": by}


def dec(path, by):
    return {"type": "decrement", "path": path, "by": by}


def app(path, value):
    return {"type": "append", "path": path, "value": value}


def merge(path, value):
    return {"type": "merge", "path": path, "value": value}


def setop(path, value):
    return {"type": "set", "path": path, "value": value}


# ------------------------------------------------ §2.2 worked examples


def test_increment_existing_and_missing():
    assert ok({"count": 2}, [inc("count", 3), inc("missing", 3)]) == {"count": 5, "missing": 3}


def test_decrement_reports_not_number_and_continues():
    value, errors = run({"count": 5, "bad": "value"}, [dec("count", 3), dec("bad", 1), dec("missing", 3)])
    assert value == {"count": 2, "bad": "value", "missing": -3}
    assert codes(errors) == [(1, "decrement.not_number")]


def test_append_concatenates_string():
    assert ok({"transcript": "hello"}, [app("transcript", " world")]) == {"transcript": "hello world"}


def test_nested_append_creates_intermediates():
    assert ok({}, [app(["session", "abc", "events"], "first")]) == {"session": {"abc": {"events": ["first"]}}}


def test_nested_append_replaces_array_intermediate():
    assert ok({"a": [1, 2, 3]}, [app(["a", "b"], 42)]) == {"a": {"b": [42]}}


def test_nested_merge_replaces_garbage_intermediate():
    value = ok({"sessions": {"abc": "garbage"}}, [merge(["sessions", "abc"], {"author": "alice"})])
    assert value == {"sessions": {"abc": {"author": "alice"}}}


def test_root_append_on_missing_key():
    assert ok(MISSING, [app("", "hello")]) == "hello"
    assert ok(MISSING, [app("", {"k": 1})]) == [{"k": 1}]


def test_mixed_batch_keeps_successes_and_indexes():
    ops = [inc("bad", 1), setop("__proto__", True), app("events", "chunk"), setop("ok", True)]
    value, errors = run({"bad": "value", "events": {}}, ops)
    assert value == {"bad": "value", "events": {}, "ok": True}
    assert codes(errors) == [(0, "increment.not_number"), (1, "set.path.proto_polluted"), (2, "append.type_mismatch")]


# ------------------------------------------------ §8 state_stream_update_e2e


def test_two_merges_across_calls_accumulate_siblings():
    first = ok(MISSING, [merge("session", {"a": 1})])
    assert ok(first, [merge("session", {"b": 2})]) == {"session": {"a": 1, "b": 2}}


def test_null_intermediate_replaced_during_nested_merge():
    assert ok({"a": None}, [merge(["a", "b"], {"x": 1})]) == {"a": {"b": {"x": 1}}}


def test_merge_remove_merge_recreates_field():
    ops = [merge("f", {"a": 1}), {"type": "remove", "path": "f"}, merge("f", {"b": 2})]
    assert ok({}, ops) == {"f": {"b": 2}}


def test_proto_polluted_merge_path_still_writes_empty_object():
    value, errors = run(MISSING, [merge(["__proto__"], {"x": 1})])
    assert value == {}
    assert codes(errors) == [(0, "merge.path.proto_polluted")]


@pytest.mark.parametrize("op", [
    setop("__proto__", 1), app("__proto__", "x"), inc("__proto__", 1), dec("__proto__", 1),
    {"type": "remove", "path": "__proto__"},
])
def test_proto_path_per_op(op):
    value, errors = run({}, [op])
    assert value == {}
    assert codes(errors) == [(0, f"{op['type']}.path.proto_polluted")]
    assert errors[0]["doc_url"] == DOC_URL
    assert "__proto__" in errors[0]["message"]


def test_set_field_on_string_root():
    value, errors = run("text", [setop("field", 1)])
    assert value == "text"
    assert codes(errors) == [(0, "set.target_not_object")]
    assert errors[0]["message"] == "Cannot set at path 'field': target is string, expected object."


def test_append_string_onto_number_and_onto_string_root():
    value, errors = run({"n": 1}, [app("n", "x")])
    assert value == {"n": 1} and codes(errors) == [(0, "append.type_mismatch")]
    value, errors = run("root", [app("events", "x")])
    assert value == "root" and codes(errors) == [(0, "append.target_not_object")]


def test_numeric_ops_on_string_and_string_root():
    value, errors = run({"name": "x"}, [inc("name", 1), dec("name", 1)])
    assert codes(errors) == [(0, "increment.not_number"), (1, "decrement.not_number")]
    assert errors[0]["message"] == "Expected number at path 'name', got string."
    value, errors = run("s", [inc("f", 1), dec("f", 1), {"type": "remove", "path": "f"}])
    assert value == "s"
    assert codes(errors) == [(0, "increment.target_not_object"), (1, "decrement.target_not_object"),
                             (2, "remove.target_not_object")]


def test_remove_missing_field_is_silent():
    assert ok({}, [{"type": "remove", "path": "nope"}]) == {}


def test_dotted_append_path_is_literal_key():
    value = ok({"entityId": {"buffer": ["nested"]}}, [app("entityId.buffer", "flat")])
    assert value == {"entityId": {"buffer": ["nested"]}, "entityId.buffer": "flat"}


def test_nested_append_onto_object_leaf_mismatch():
    value, errors = run({"a": {"b": {}}}, [app(["a", "b"], "x")])
    assert value == {"a": {"b": {}}} and codes(errors) == [(0, "append.type_mismatch")]


def test_nested_append_pushes_onto_nested_array():
    assert ok({"entityId": {"buffer": ["a"]}}, [app(["entityId", "buffer"], "b")]) == {"entityId": {"buffer": ["a", "b"]}}


def test_nested_append_missing_leaf_is_array_even_for_strings():
    assert ok({"entityId": {}}, [app(["entityId", "buffer"], "x")]) == {"entityId": {"buffer": ["x"]}}
    assert ok({}, [app("buffer", "x")]) == {"buffer": "x"}


def test_proto_segment_mid_path_rejected_without_mutation():
    value, errors = run({"a": 1}, [app(["x", "__proto__", "y"], 1)])
    assert value == {"a": 1} and codes(errors) == [(0, "append.path.proto_polluted")]


def test_partial_failure_keeps_prior_and_later_successes():
    ops = [app(["a", "l"], 1), app(["a", "__proto__"], 2), app(["a", "l"], 3)]
    value, errors = run({}, ops)
    assert value == {"a": {"l": [1, 3]}} and codes(errors) == [(1, "append.path.proto_polluted")]


def test_append_onto_empty_array_field_and_root():
    assert ok({"f": []}, [app("f", 1)]) == {"f": [1]}
    assert ok([], [{"type": "append", "value": 1}]) == [1]


def test_nested_append_through_array_intermediate_replaces_with_object():
    assert ok({"a": ["x"]}, [app(["a", "b", "c"], 1)]) == {"a": {"b": {"c": [1]}}}


# ------------------------------------------------ the engine's unit vectors


def test_numbers():
    assert ok({"count": 1.5}, [inc("count", 2), dec("count", 1)]) == {"count": 2.5}
    assert ok({"count": I64_MAX}, [inc("count", 1)]) == {"count": I64_MAX + 1}
    big = I64_MAX + 10
    assert ok({"i": big, "d": big}, [inc("i", 1), dec("d", 1)]) == {"i": big + 1, "d": big - 1}
    assert ok({}, [dec("count", I64_MIN)]) == {"count": 2**63}
    assert ok(2, [inc("", 3)]) == 5 and ok(5, [dec("", 3)]) == 2
    value, errors = run({"n": I64_MIN}, [dec("n", 1)])
    assert value == {"n": I64_MIN} and codes(errors) == [(0, "decrement.not_number")]


def test_null_fields_are_not_numbers():
    value, errors = run({"inc": None, "dec": None}, [inc("inc", 1), dec("dec", 1)])
    assert value == {"inc": None, "dec": None}
    assert codes(errors) == [(0, "increment.not_number"), (1, "decrement.not_number")]


def test_zero_by_still_checks_type():
    value, errors = run({"bad": "value", "count": 2}, [inc("bad", 0), dec("count", 0)])
    assert value == {"bad": "value", "count": 2} and codes(errors) == [(0, "increment.not_number")]


def test_root_set_and_remove():
    assert ok({"": "x", "keep": True}, [{"type": "set", "path": ""}]) == None  # noqa: E711
    assert ok({"": "x", "keep": True}, [{"type": "remove", "path": ""}]) is None


def test_root_increment_on_missing_key_starts_from_by():
    assert ok(MISSING, [inc("", 4)]) == 4
    assert ok(MISSING, [dec("", 4)]) == -4
    value, errors = run({}, [inc("", 4)])
    assert codes(errors) == [(0, "increment.not_number")] and value == {}


def test_appends():
    assert ok({"events": []}, [app("events", ["nested", "array"])]) == {"events": [["nested", "array"]]}
    assert ok({"s": None, "a": None}, [app("s", "chunk"), app("a", {"k": 1})]) == {"s": "chunk", "a": [{"k": 1}]}
    value, errors = run({"t": "hello"}, [app("t", {"not": "string"})])
    assert value == {"t": "hello"}
    assert errors[0]["message"] == "Expected string append value at path 't', got object."


def test_merges():
    for path in (None, "", []):
        op = {"type": "merge", "value": {"b": 2}} if path is None else merge(path, {"b": 2})
        assert ok({"a": 1}, [op]) == {"a": 1, "b": 2}
    assert ok("leaf", [{"type": "merge", "value": {"a": 1}}]) == "leaf"
    assert ok({"a": {"b": {"p": True}}}, [merge(["a.b"], {"x": 1})]) == {"a": {"b": {"p": True}}, "a.b": {"x": 1}}
    value, errors = run({"a": 1}, [merge("foo", "not-an-object")])
    assert value == {"a": 1} and codes(errors) == [(0, "merge.value.not_an_object")]


def test_merge_validation_bounds():
    cases = [
        ([f"k{i}" for i in range(33)], {"x": 1}, "merge.path.too_deep"),
        (["a" * 257], {"x": 1}, "merge.path.segment_too_long"),
        (["a", ""], {"x": 1}, "merge.path.empty_segment"),
        ("foo", {"__proto__": {"p": True}}, "merge.value.proto_polluted"),
        ("foo", {f"k{i}": i for i in range(1025)}, "merge.value.too_many_keys"),
    ]
    deep: dict = {}
    for _ in range(17):
        deep = {"n": deep}
    cases.append(("foo", deep, "merge.value.too_deep"))
    for path, value, code in cases:
        out, errors = run({}, [merge(path, value)])
        assert out == {} and codes(errors) == [(0, code)]
    _, errors = run({}, [app("a" * 257, "x")])
    assert codes(errors) == [(0, "append.path.segment_too_long")]


def test_ops_are_not_mutated_or_aliased():
    ops = parse_ops([merge("a", {"list": []}), app(["a", "list"], 1)])
    old = {"keep": [1]}
    value, _ = apply_update_ops(old, ops)
    assert value == {"keep": [1], "a": {"list": [1]}}
    assert ops[0].value == {"list": []} and old == {"keep": [1]}


@pytest.mark.parametrize("raw, detail", [
    (None, "invalid type: null, expected a sequence"),
    ([{"path": "x"}], "missing field `type`"),
    ([{"type": "frob"}], "unknown variant `frob`"),
    ([{"type": "set"}], "missing field `path`"),
    ([{"type": "increment", "path": "x", "by": 1.5}], "invalid type: floating point `1.5`, expected i64"),
    ([{"type": "increment", "path": "x", "by": 2**63}], "expected i64"),
    ([{"type": "merge", "path": "x"}], "missing field `value`"),
    ([{"type": "append", "path": 3, "value": 1}], "untagged enum MergePath"),
    (["set"], "expected internally tagged enum UpdateOp"),
])
def test_bad_ops_fail_decoding(raw, detail):
    with pytest.raises(OpsDecodeError, match=detail.replace("(", r"\(")):
        parse_ops(raw)
