"""Idempotent state writes (issue 11, item 9): a write retried after an unknown outcome
(``invocation_stopped``) with the same ``idempotency_key`` is answered with the first
write's outcome and writes and fires nothing again; keys expire and are swept."""
from __future__ import annotations

import shutil
import tempfile

import orjson
import pytest

from brokers.kit.ops import MISSING, parse_ops
from brokers.state import store as state_store
from brokers.state.core import Write, decode_call
from brokers.state.store import IDEM, IDEM_TTL_MS, LmdbStore, MemoryStore


@pytest.fixture(params=["lmdb", "memory"])
def store(request):
    if request.param == "memory":
        yield MemoryStore()
        return
    d = tempfile.mkdtemp(prefix="iii-state-")
    s = LmdbStore(d)
    yield s
    s.close()
    shutil.rmtree(d, ignore_errors=True)


def test_a_retry_gets_the_first_outcome_and_changes_nothing(store) -> None:
    first = Write("set", "s", "k", value=1, idempotency_key="op-1")
    (a,) = store.apply_batch([first])
    assert (a.old, a.new, a.replayed) == (MISSING, 1, False)
    store.apply_batch([Write("set", "s", "k", value=2)])  # someone else writes meanwhile
    (b,) = store.apply_batch([Write("set", "s", "k", value=1, idempotency_key="op-1")])
    assert (b.old, b.new, b.replayed) == (MISSING, 1, True)
    assert store.get("s", "k") == 2  # the retry did not write again
    inc = Write("update", "s", "n", ops=tuple(parse_ops([{"type": "increment", "path": "", "by": 5}])),
                idempotency_key="op-2")
    for _ in range(3):
        store.apply_batch([inc])
    assert store.get("s", "n") == 5  # applied once however often it is retried
    (c,) = store.apply_batch([Write("set", "s", "k", value=9, idempotency_key="op-1-other-key")])
    assert not c.replayed and store.get("s", "k") == 9
    assert store.list_groups() == ["s"] and sorted(store.list("s"), key=str) == [5, 9]


def test_the_key_is_per_scope_and_key(store) -> None:
    store.apply_batch([Write("set", "a", "k", value=1, idempotency_key="same")])
    (out,) = store.apply_batch([Write("set", "b", "k", value=2, idempotency_key="same")])
    assert not out.replayed and store.get("b", "k") == 2


def test_expired_keys_no_longer_count_and_are_swept() -> None:
    d = tempfile.mkdtemp(prefix="iii-state-")
    try:
        s = LmdbStore(d)
        s.apply_batch([Write("set", "s", f"k{i}", value=i, idempotency_key=f"old-{i}") for i in range(40)])
        old = {"at": 0, "errors": [], "new": 0}

        def age(txn):
            cur = txn.cursor()
            cur.set_range(IDEM)
            for key in [k for k, _ in cur if k.startswith(IDEM)]:
                txn.put(key, orjson.dumps(old))
        s.lmdbenv.write(age)
        (again,) = s.apply_batch([Write("set", "s", "k0", value=7, idempotency_key="old-0")])
        assert not again.replayed and s.get("s", "k0") == 7  # expired: a new write
        for _ in range(3):  # a few commits sweep them all (32 per commit)
            s.apply_batch([Write("set", "s", "x", value=1)])
        with s.lmdbenv.read() as txn:
            cur = txn.cursor()
            left = [k for k, _ in cur if k.startswith(IDEM)] if cur.set_range(IDEM) else []
        assert len(left) == 1  # only old-0's fresh record
        s.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_the_input_takes_an_optional_string_key() -> None:
    w = decode_call("state::set", {"scope": "s", "key": "k", "value": 1, "idempotency_key": "x"})
    assert w.idempotency_key == "x"
    assert decode_call("state::delete", {"scope": "s", "key": "k"}).idempotency_key is None
    with pytest.raises(Exception) as info:
        decode_call("state::set", {"scope": "s", "key": "k", "value": 1, "idempotency_key": 5})
    assert "expected a string" in str(info.value)
    assert state_store.IDEM_TTL_MS == IDEM_TTL_MS == 24 * 3600 * 1000
