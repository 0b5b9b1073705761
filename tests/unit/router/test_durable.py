"""brokers/router/durable.py: the snapshot format (pure functions) and the file shell on a
temp dir: round trip, atomic replace, corrupt files set aside, records changed only after
a successful write."""
from __future__ import annotations

import logging
import os

import orjson
import pytest

from brokers.router import durable
from brokers.router.durable import CorruptFile, DurableBindings, decode, encode, record

CALL = {"trigger_type": "custom::tick", "function_id": "svc::on-tick", "config": {"every": 5},
        "metadata": {"team": "a"}, "trigger_namespace": None, "ignored": "extra key"}


def test_record_keeps_the_registration_fields_and_the_given_id() -> None:
    rec = record("b-1", {**CALL, "id": "caller-chosen"})
    assert rec == {"id": "b-1", "trigger_type": "custom::tick", "function_id": "svc::on-tick",
                   "config": {"every": 5}, "metadata": {"team": "a"}, "trigger_namespace": None}


def test_encode_decode_round_trip_sorted_by_id() -> None:
    recs = [record("b-2", CALL), record("b-1", {**CALL, "trigger_namespace": "ns1", "config": None})]
    raw = encode(recs)
    assert [r["id"] for r in orjson.loads(raw)["bindings"]] == ["b-1", "b-2"]
    assert decode(raw) == {r["id"]: r for r in recs}
    assert encode(reversed(recs)) == raw


def test_empty_snapshot() -> None:
    assert decode(encode([])) == {}


@pytest.mark.parametrize("raw, why", [
    (b"", "not JSON"),
    (b'{"version": 1, "bindings": [', "not JSON"),
    (b"[]", "expected"),
    (b'{"version": 2, "bindings": []}', "expected"),
    (b'{"version": 1, "bindings": {}}', "expected"),
    (b'{"version": 1, "bindings": [{"id": "x", "trigger_type": "t"}]}', "bindings[0]"),
    (b'{"version": 1, "bindings": [{"id": "", "trigger_type": "t", "function_id": "f"}]}', "bindings[0]"),
    (b'{"version": 1, "bindings": [7]}', "bindings[0]"),
    (b'{"version": 1, "bindings": [{"id": "x", "trigger_type": "t", "function_id": "f",'
     b' "trigger_namespace": 3}]}', "trigger_namespace"),
    (b'{"version": 1, "bindings": [{"id": "x", "trigger_type": "t", "function_id": "f"},'
     b' {"id": "x", "trigger_type": "t", "function_id": "g"}]}', "duplicate"),
])
def test_decode_rejects_what_it_did_not_write(raw: bytes, why: str) -> None:
    with pytest.raises(CorruptFile, match=why.replace("[", r"\[").replace("]", r"\]")):
        decode(raw)


def test_store_path_is_the_routers_own_subdirectory() -> None:
    assert durable.store_path("/var/lib/iii") == "/var/lib/iii/router/triggers.json"


# ---- the file shell ----------------------------------------------------------------------

def test_add_remove_survive_a_new_instance(tmp_path) -> None:
    path = durable.store_path(str(tmp_path))
    store = DurableBindings(path)
    assert store.load() == []
    store.add(record("b-1", CALL))
    store.add(record("b-2", CALL))
    assert store.remove("b-1") is True
    assert store.remove("b-1") is False
    assert "b-2" in store and "b-1" not in store
    again = DurableBindings(path)
    assert [r["id"] for r in again.load()] == ["b-2"]
    assert not os.path.exists(path + ".tmp")


def test_a_stale_temp_file_is_ignored_and_removed(tmp_path) -> None:
    path = durable.store_path(str(tmp_path))
    DurableBindings(path).add(record("b-1", CALL))
    with open(path + ".tmp", "wb") as f:
        f.write(b'{"version": 1, "bindings": [')  # a crash mid-write
    assert [r["id"] for r in DurableBindings(path).load()] == ["b-1"]
    assert not os.path.exists(path + ".tmp")


def test_a_corrupt_file_is_logged_set_aside_and_replaced_on_next_write(tmp_path, caplog) -> None:
    path = durable.store_path(str(tmp_path))
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(b"\x00garbage")
    store = DurableBindings(path)
    with caplog.at_level(logging.ERROR, logger="brokers.router.durable"):
        assert store.load() == []
    assert "unusable" in caplog.text and path + ".corrupt" in caplog.text
    with open(path + ".corrupt", "rb") as f:
        assert f.read() == b"\x00garbage"
    assert not os.path.exists(path)
    store.add(record("b-1", CALL))
    assert list(DurableBindings(path).load()) == [record("b-1", CALL)]


def test_an_unreadable_path_is_logged_and_not_fatal(tmp_path, caplog) -> None:
    path = durable.store_path(str(tmp_path))
    os.makedirs(path)  # a directory where the file should be: open() fails with EISDIR
    with caplog.at_level(logging.ERROR, logger="brokers.router.durable"):
        assert DurableBindings(path).load() == []
    assert "cannot be read" in caplog.text
    assert os.path.isdir(path + ".corrupt")


def test_a_failed_write_changes_nothing(tmp_path) -> None:
    path = durable.store_path(str(tmp_path))
    store = DurableBindings(path)
    store.add(record("b-1", CALL))
    os.makedirs(path + ".tmp")  # the temp file cannot be opened for writing
    with pytest.raises(OSError):
        store.add(record("b-2", CALL))
    with pytest.raises(OSError):
        store.remove("b-1")
    assert list(store.records) == ["b-1"]
    os.rmdir(path + ".tmp")
    assert [r["id"] for r in DurableBindings(path).load()] == ["b-1"]
