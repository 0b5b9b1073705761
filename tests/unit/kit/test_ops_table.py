"""The update-ops dispatch tables: one parser and one applier per kind, the same kinds in
the engine's order, and each kind reached through its own function."""
from __future__ import annotations

from brokers.kit.ops import APPLIERS, MISSING, PARSERS, apply_update_ops, parse_ops
from brokers.kit.ops.apply import Doc


def test_tables_list_the_same_kinds_in_the_engines_order():
    assert list(PARSERS) == ["set", "merge", "increment", "decrement", "append", "remove"]
    assert list(APPLIERS) == list(PARSERS)


def test_each_kind_is_one_applier_on_a_doc():
    ops = {op.kind: op for op in parse_ops([
        {"type": "set", "path": "a", "value": 1}, {"type": "merge", "value": {"m": 1}},
        {"type": "increment", "path": "a", "by": 2}, {"type": "decrement", "path": "a", "by": 1},
        {"type": "append", "path": "l", "value": "x"}, {"type": "remove", "path": "m"},
    ])}
    doc = Doc({}, fresh=True)
    for kind in PARSERS:
        assert APPLIERS[kind](doc, ops[kind]) is None, kind
    assert doc.value == {"a": 2, "l": "x"} and not doc.fresh
    assert apply_update_ops(MISSING, list(ops.values())) == ({"a": 2, "l": "x"}, [])


def test_a_failing_applier_returns_its_failure_and_leaves_the_doc():
    (op,) = parse_ops([{"type": "increment", "path": "a", "by": 1}])
    doc = Doc({"a": "text"}, fresh=False)
    assert APPLIERS["increment"](doc, op) == ("increment.not_number", "Expected number at path 'a', got string.")
    assert doc.value == {"a": "text"}
