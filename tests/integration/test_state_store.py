"""The LMDB state store on a real environment in a temp dir: group-commit batches,
durability across close/reopen, map growth from a tiny map, scope encoding."""
from __future__ import annotations

import shutil
import tempfile

import pytest

from brokers.state.core import Write
from brokers.kit.errors import EngineError
from brokers.kit.ops import MISSING, parse_ops
from brokers.state.store import LmdbStore


@pytest.fixture
def path():
    d = tempfile.mkdtemp(prefix="iii-state-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def upd(scope, key, ops):
    return Write("update", scope, key, ops=tuple(parse_ops(ops)))


def test_batch_applies_in_order_in_one_commit(path):
    store = LmdbStore(path)
    out = store.apply_batch([
        Write("set", "s", "k", value={"n": 1}),
        upd("s", "k", [{"type": "increment", "path": "n", "by": 2}]),
        Write("delete", "s", "gone"),
        Write("set", "s", "gone", value=None),
        Write("delete", "s", "k"),
        upd("s", "k", [{"type": "increment", "path": "", "by": 7}]),
    ])
    assert store.commits == 1
    assert [(o.old, o.new) for o in out] == [
        (MISSING, {"n": 1}), ({"n": 1}, {"n": 3}), (MISSING, MISSING), (MISSING, None),
        ({"n": 3}, MISSING), (MISSING, 7)]
    assert store.get("s", "k") == 7
    assert store.get("s", "gone") is None  # stored JSON null exists
    assert store.get("s", "nope") is MISSING
    store.close()


def test_durable_across_reopen(path):
    store = LmdbStore(path)
    store.apply_batch([Write("set", "a", str(i), value={"i": i}) for i in range(50)])
    store.apply_batch([Write("set", "b", "x", value=None), Write("delete", "a", "7")])
    store.close()
    again = LmdbStore(path)
    assert again.get("a", "3") == {"i": 3}
    assert again.get("a", "7") is MISSING
    assert again.get("b", "x") is None
    assert len(again.list("a")) == 49
    assert again.list_groups() == ["a", "b"]
    again.close()


def test_map_grows_from_tiny_size(path):
    store = LmdbStore(path, map_size=64 * 1024)
    blob = "x" * 4000
    for batch in range(10):
        store.apply_batch([Write("set", "big", f"{batch}-{i}", value=blob) for i in range(50)])
    assert store.env.info()["map_size"] > 64 * 1024
    assert len(store.list("big")) == 500
    store.close()
    again = LmdbStore(path, map_size=64 * 1024)  # a smaller request keeps the grown file
    assert again.get("big", "9-49") == blob
    again.close()


def test_scopes_with_separator_bytes_and_long_keys(path):
    store = LmdbStore(path)
    scopes = ["a", "a\x00", "a\x01", "a\x00b", "", "é"]
    store.apply_batch([Write("set", s, "k", value=s) for s in scopes])
    for s in scopes:
        assert store.list(s) == [s]
    long_key = "k" * 2000
    store.apply_batch([Write("set", "a", long_key, value="long")])
    assert store.get("a", long_key) == "long"
    assert sorted(store.list("a")) == ["a", "long"]
    assert store.list_groups() == sorted(scopes)
    store.close()
    again = LmdbStore(path)
    assert again.list_groups() == sorted(scopes)  # from the data, not from memory
    again.close()


def test_list_groups_keeps_emptied_scopes_until_restart(path):
    store = LmdbStore(path)
    store.apply_batch([Write("set", "tmp", "k", value=1)])
    store.apply_batch([Write("delete", "tmp", "k")])
    assert store.list("tmp") == []
    assert store.list_groups() == ["tmp"]
    store.close()
    again = LmdbStore(path)
    assert again.list_groups() == []
    again.close()


def test_failed_write_does_not_spoil_the_batch(path):
    store = LmdbStore(path)
    out = store.apply_batch([
        Write("set", "s", "ok1", value=1),
        Write("set", "s", "huge", value=2**70),  # not storable as JSON by orjson
        Write("set", "s" * 600, "k", value=1),  # scope too long even for the digest form
        Write("set", "s", "ok2", value=2),
    ])
    assert [o.failure is None for o in out] == [True, False, False, True]
    assert out[1].failure.code == "SET_ERROR"
    assert store.get("s", "huge") is MISSING
    assert store.list("s") == [1, 2]
    store.close()


def test_open_reader_sees_snapshot_and_does_not_block_writer(path):
    store = LmdbStore(path)
    store.apply_batch([Write("set", "s", "k", value="before")])
    reader = store.env.begin()
    store.apply_batch([Write("set", "s", "k", value="after")])  # would hang if readers blocked
    assert reader.get(b"s\x00k") == b'"before"'
    reader.abort()
    assert store.get("s", "k") == "after"
    store.close()


def test_env_is_opened_durable(path):
    store = LmdbStore(path)
    flags = store.env.flags()
    assert flags["sync"] and flags["metasync"]
    store.close()


def test_map_past_its_cap_fails_the_batch_with_set_error(path):
    store = LmdbStore(path, map_size=64 * 1024, max_map_size=128 * 1024)
    store.apply_batch([Write("set", "s", "kept", value=1)])
    with pytest.raises(EngineError) as err:
        store.apply_batch([Write("set", "big", str(i), value="x" * 4000) for i in range(100)])
    assert err.value.code == "SET_ERROR"
    assert str(err.value.message) == "Failed to set value: LMDB map would exceed 131072 bytes"
    assert store.list("big") == [] and store.get("s", "kept") == 1
    assert store.commits == 1
    store.close()
