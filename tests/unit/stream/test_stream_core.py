"""The stream core (workers-a §3): inputs, result shapes, events, scopes, trigger configs,
custom provider answers."""
from __future__ import annotations

import pytest

from brokers.kit.errors import EngineError
from brokers.kit.ops import MISSING
from brokers.state.store import MemoryStore
from brokers.stream import core

NOW = 1_700_000_000_000


def test_scopes_round_trip_names_with_colons_and_digits() -> None:
    for stream, group in [("chat", "room-1"), ("iii:devtools:state", "g:1"), ("", ""),
                          ("3:ab", "x"), ("a", "12:3"), ("ü", "ß")]:
        assert core.split_scope(core.scope_of(stream, group)) == (stream, group)
    assert core.split_scope("plain") is None
    assert core.split_scope("9:ab") is None


def test_list_all_lists_names_with_colons_as_themselves() -> None:
    scopes = [core.scope_of("iii:devtools:state", "b"), core.scope_of("iii:devtools:state", "a"),
              core.scope_of("chat", "room"), core.scope_of("iii", "x")]
    assert core.list_all_result(scopes) == {
        "stream": [{"id": "chat", "groups": ["room"]}, {"id": "iii", "groups": ["x"]},
                   {"id": "iii:devtools:state", "groups": ["a", "b"]}],
        "count": 3}
    assert core.list_groups_result("iii", scopes) == ["x"]


def _run(store: MemoryStore, fn: str, payload: dict) -> tuple[object, dict | None]:
    [outcome] = store.apply_batch([core.decode_write(fn, payload)])
    return core.write_result(outcome), core.outcome_event(outcome, NOW)


def test_set_update_delete_results_and_events() -> None:
    store = MemoryStore()
    at = {"stream_name": "chat", "group_id": "room", "item_id": "m1"}
    result, event = _run(store, core.SET, {**at, "data": {"text": "hi"}})
    assert result == {"old_value": None, "new_value": {"text": "hi"}}
    assert event == {"type": "stream", "timestamp": NOW, "streamName": "chat", "groupId": "room",
                     "id": "m1", "event": {"type": "create", "data": {"text": "hi"}}}
    result, event = _run(store, core.UPDATE, {**at, "ops": [{"type": "set", "path": "n", "value": 1},
                                                          {"type": "increment", "path": "text", "by": 1}]})
    assert result["old_value"] == {"text": "hi"} and result["new_value"] == {"text": "hi", "n": 1}
    assert [e["code"] for e in result["errors"]] == ["increment.not_number"]
    assert event["event"] == {"type": "update", "data": {"text": "hi", "n": 1}}
    result, event = _run(store, core.DELETE, at)
    assert result == {"old_value": {"text": "hi", "n": 1}}
    assert event["event"] == {"type": "delete", "data": {"text": "hi", "n": 1}}
    result, event = _run(store, core.DELETE, at)  # a missing item: nothing fires
    assert result == {"old_value": None} and event is None


def test_update_of_a_missing_item_creates_it_from_an_empty_object() -> None:
    store = MemoryStore()
    at = {"stream_name": "s", "group_id": "g", "item_id": "i"}
    result, event = _run(store, core.UPDATE, {**at, "ops": []})
    assert result == {"old_value": None, "new_value": {}}
    assert event["event"] == {"type": "create", "data": {}}


def test_a_stored_null_exists() -> None:
    store = MemoryStore()
    at = {"stream_name": "s", "group_id": "g", "item_id": "i"}
    _run(store, core.SET, {**at, "data": None})
    result, event = _run(store, core.SET, {**at, "data": 1})
    assert result == {"old_value": None, "new_value": 1} and event["event"]["type"] == "update"


def test_inputs_are_checked_with_serde_words() -> None:
    with pytest.raises(EngineError) as exc:
        core.decode_write(core.SET, {"stream_name": "s", "group_id": "g", "item_id": "i"})
    assert exc.value.code == "deserialization_error"
    assert exc.value.message == "Failed to deserialize input for stream::set: missing field `data`"
    with pytest.raises(EngineError) as exc:
        core.INPUTS[core.LIST_ALL].parse(None)
    assert exc.value.code == "deserialization_error"


def test_send_event_carries_its_own_type_and_optional_id() -> None:
    args = core.INPUTS[core.SEND].parse({"stream_name": "s", "group_id": "g", "type": "typing",
                                         "data": {"who": "a"}})
    assert core.send_event(args, NOW) == {
        "type": "stream", "timestamp": NOW, "streamName": "s", "groupId": "g", "id": None,
        "event": {"type": "event", "event": {"type": "typing", "data": {"who": "a"}}}}


def test_trigger_config_filters() -> None:
    cfg = core.parse_trigger_config({"stream_name": "s", "group_id": "g", "item_id": "i", "extra": 1})
    msg = core.wrapper("s", "g", "i", {"type": "create", "data": 1}, NOW)
    assert cfg.matches(msg)
    assert not cfg.matches({**msg, "id": None})
    assert not cfg.matches({**msg, "groupId": "h"})
    anyone = core.parse_trigger_config({"stream_name": "s", "group_id": "", "item_id": ""})
    assert anyone.matches({**msg, "id": None, "groupId": "x"})
    for bad in (None, [], {"group_id": "g"}, {"stream_name": 5}):
        with pytest.raises(EngineError) as exc:
            core.parse_trigger_config(bad)
        assert exc.value.code == "trigger_registration_failed"
        assert exc.value.message.startswith("Failed to deserialize stream trigger")


def test_custom_results_are_checked() -> None:
    assert core.custom_result(core.SET, {"old_value": None, "new_value": 1}) == {"old_value": None, "new_value": 1}
    assert core.custom_result(core.DELETE, {"old_value": 2, "x": 1}) == {"old_value": 2}
    assert core.custom_result(core.UPDATE, {"new_value": 1, "errors": []}) == {"old_value": None, "new_value": 1}
    for fn, bad, code in [(core.SET, None, "STREAM_SET_ERROR"), (core.SET, 5, "JSON_ERROR"),
                          (core.SET, {"old_value": 1}, "JSON_ERROR"),
                          (core.UPDATE, {"new_value": 1, "errors": 3}, "JSON_ERROR"),
                          (core.DELETE, None, "STREAM_DELETE_ERROR")]:
        with pytest.raises(EngineError) as exc:
            core.custom_result(fn, bad)
        assert exc.value.code == code
    with pytest.raises(EngineError) as exc:
        core.custom_result(core.UPDATE, None)
    assert exc.value.message == "Failed to update value: Function returned no result"


def test_join_verdicts_and_conditions() -> None:
    assert core.refuses({"unauthorized": True})
    for ok in (None, {}, {"unauthorized": "yes"}, {"unauthorized": False}, True, []):
        assert not core.refuses(ok)
    assert not core.condition_allows(False)
    assert core.condition_allows(None) and core.condition_allows(0)
    assert core.join_payload("s1", "st", "g", None, {"u": 1}) == {
        "subscription_id": "s1", "stream_name": "st", "group_id": "g", "id": None, "context": {"u": 1}}


def test_a_store_failure_gets_the_stream_code() -> None:
    from brokers.state.core import Outcome, Write
    out = Outcome(Write("set", core.scope_of("s", "g"), "i"), MISSING, MISSING,
                  failure=EngineError("SET_ERROR", "Failed to set value: no space left on device"))
    with pytest.raises(EngineError) as exc:
        core.write_result(out)
    assert (exc.value.code, exc.value.message) == ("STREAM_SET_ERROR", "Failed to set value: no space left on device")
