"""State core: input decoding and its error codes, call results, events, trigger configs,
exercised through the in-memory store (same interface as the LMDB one)."""
from __future__ import annotations

import pytest

from brokers.state import core
from brokers.state.core import Read, Write, decode_call
from brokers.kit.ops import MISSING
from brokers.state.store import MemoryStore
from brokers.kit.errors import EngineError


def call(store, fn, payload, max_value_bytes=None):
    """Decode, apply, and shape a result the way the service does."""
    req = decode_call(fn, payload, max_value_bytes)
    if isinstance(req, Write):
        (outcome,) = store.apply_batch([req])
        return core.write_result(outcome), core.event_for(outcome)
    if req.kind == "get":
        return core.get_result(store.get(req.scope, req.key)), None
    if req.kind == "list":
        return store.list(req.scope), None
    return core.list_groups_result(store.list_groups()), None


@pytest.mark.parametrize("fn, payload, detail", [
    (core.SET, None, "invalid type: null, expected struct StateSetInput"),
    (core.SET, {"key": "k", "value": 1}, "missing field `scope`"),
    (core.SET, {"scope": "s", "key": "k"}, "missing field `value`"),
    (core.SET, {"scope": 1, "key": "k", "value": 1}, "invalid type: integer `1`, expected a string"),
    (core.SET, {"scope": "s", "key": "k", "value": 1, "data": 2}, "duplicate field `value`"),
    (core.GET, {"scope": "s"}, "missing field `key`"),
    (core.DELETE, [], "invalid type: sequence, expected struct StateDeleteInput"),
    (core.UPDATE, {"scope": "s", "key": "k"}, "missing field `ops`"),
    (core.UPDATE, {"scope": "s", "key": "k", "ops": [{"type": "nope"}]}, "unknown variant `nope`"),
    (core.LIST, {}, "missing field `scope`"),
    (core.LIST_GROUPS, None, "invalid type: null, expected struct StateListGroupsInput"),
])
def test_bad_input_is_deserialization_error_and_writes_nothing(fn, payload, detail):
    store = MemoryStore()
    with pytest.raises(EngineError) as info:
        call(store, fn, payload)
    assert info.value.code == "deserialization_error"
    assert info.value.message.startswith(f"Failed to deserialize input for {fn}: ")
    assert detail in info.value.message
    assert store.data == {} and store.commits == 0


def test_set_get_and_data_alias():
    store = MemoryStore()
    result, event = call(store, core.SET, {"scope": "users", "key": "u1", "value": {"n": 1}, "_caller_worker_id": "w"})
    assert result == {"old_value": None, "new_value": {"n": 1}}
    assert event == {"type": "state", "event_type": "state:created", "scope": "users", "key": "u1",
                     "old_value": None, "new_value": {"n": 1}}
    result, event = call(store, core.SET, {"scope": "users", "key": "u1", "data": "v2"})
    assert result == {"old_value": {"n": 1}, "new_value": "v2"}
    assert event["event_type"] == "state:updated"
    assert call(store, core.GET, {"scope": "users", "key": "u1"})[0] == "v2"
    assert call(store, core.GET, {"scope": "users", "key": "zz"})[0] is None


def test_stored_null_exists():
    store = MemoryStore()
    call(store, core.SET, {"scope": "s", "key": "k", "value": None})
    result, event = call(store, core.SET, {"scope": "s", "key": "k", "value": 1})
    assert result == {"old_value": None, "new_value": 1}
    assert event["event_type"] == "state:updated"


def test_delete_fires_even_when_missing():
    store = MemoryStore()
    result, event = call(store, core.DELETE, {"scope": "s", "key": "k"})
    assert result is None
    assert event == {"type": "state", "event_type": "state:deleted", "scope": "s", "key": "k",
                     "old_value": None, "new_value": None}
    call(store, core.SET, {"scope": "s", "key": "k", "value": [1]})
    result, event = call(store, core.DELETE, {"scope": "s", "key": "k"})
    assert result == [1] and event["old_value"] == [1] and event["new_value"] is None
    assert store.get("s", "k") is MISSING


def test_update_result_and_events():
    store = MemoryStore()
    result, event = call(store, core.UPDATE, {"scope": "s", "key": "k", "ops": []})
    assert result == {"old_value": None, "new_value": {}}  # always written back, no errors key
    assert event["event_type"] == "state:created"
    result, event = call(store, core.UPDATE, {"scope": "s", "key": "k", "ops": [
        {"type": "set", "path": "a", "value": "t"}, {"type": "increment", "path": "a", "by": 1}]})
    assert result["old_value"] == {} and result["new_value"] == {"a": "t"}
    assert [e["code"] for e in result["errors"]] == ["increment.not_number"]
    assert event["event_type"] == "state:updated"


def test_list_and_list_groups():
    store = MemoryStore()
    for key, value in (("b", 2), ("a", 1)):
        call(store, core.SET, {"scope": "math", "key": key, "value": value})
    call(store, core.SET, {"scope": "other", "key": "x", "value": 0})
    call(store, core.DELETE, {"scope": "other", "key": "x"})
    assert sorted(call(store, core.LIST, {"scope": "math"})[0]) == [1, 2]
    assert call(store, core.LIST, {"scope": "unknown"})[0] == []
    assert call(store, core.LIST_GROUPS, {})[0] == {"groups": ["math", "other"]}


def test_max_value_bytes():
    store = MemoryStore()
    with pytest.raises(EngineError) as info:
        call(store, core.SET, {"scope": "s", "key": "k", "value": "123456789"}, max_value_bytes=8)
    assert info.value.code == "VALUE_TOO_LARGE"
    assert info.value.message == "value of 11 bytes exceeds the configured max_value_bytes limit of 8"
    assert store.data == {}
    assert call(store, core.SET, {"scope": "s", "key": "k", "value": "1234"}, max_value_bytes=8)[0]["new_value"] == "1234"
    # update is not size-guarded
    result, _ = call(store, core.UPDATE, {"scope": "s", "key": "k", "ops": [{"type": "set", "path": "", "value": "x" * 50}]},
                     max_value_bytes=8)
    assert result["new_value"] == "x" * 50


def test_store_failure_raises_from_write_result():
    store = MemoryStore()
    (outcome,) = store.apply_batch([Write("set", "s", "k", value=2**70)])
    with pytest.raises(EngineError) as info:
        core.write_result(outcome)
    assert info.value.code == "SET_ERROR"


def test_memory_batch_is_ordered():
    store = MemoryStore()
    out = store.apply_batch([Write("set", "s", "k", value=1), Write("set", "s", "k", value=2), Write("delete", "s", "k")])
    assert [(o.old, o.new) for o in out] == [(MISSING, 1), (1, 2), (2, MISSING)]
    assert store.commits == 1


def test_trigger_config():
    cfg = core.parse_trigger_config({"scope": "users", "key": None, "extra": 1})
    assert cfg == core.TriggerConfig(scope="users")
    assert cfg.matches("users", "anything") and not cfg.matches("other", "x")
    assert core.parse_trigger_config({"scope": "a", "key": "k"}).matches("a", "k")
    assert not core.parse_trigger_config({"key": "k"}).matches("a", "j")
    assert core.parse_trigger_config({"condition_function_id": "c"}).condition_function_id == "c"
    for bad in ({"scope": 123}, None, "x"):
        with pytest.raises(EngineError) as info:
            core.parse_trigger_config(bad)
        assert info.value.code == "trigger_registration_failed"
        assert info.value.message.startswith("Failed to parse trigger config: ")


def test_condition_rule():
    assert core.condition_allows(True) and core.condition_allows(None)
    assert core.condition_allows(0) and core.condition_allows("false") and core.condition_allows({})
    assert not core.condition_allows(False)


def test_reads_decode():
    assert decode_call(core.GET, {"scope": "s", "key": "k"}) == Read("get", "s", "k")
    assert decode_call(core.LIST_GROUPS, {}) == Read("list_groups")
