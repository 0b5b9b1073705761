"""The channel table (brokers/kit/channels/table.py): refs, clamping, attach rules, lifetime."""
from __future__ import annotations

import uuid

from brokers.kit.channels import table
from brokers.kit.channels.table import NOT_FOUND, OK, TAKEN, Table


def test_buffer_size_defaults_to_64_and_is_clamped() -> None:
    assert [table.clamp_buffer(v) for v in (None, "8", True, 0, -5, 1, 64, 5000, 7.9)] == \
        [64, 64, 64, 1, 1, 1, 64, 1024, 7]


def test_refs_share_id_and_key_and_the_id_names_its_home() -> None:
    t = Table("gateway-1")
    ch = t.create(None, 0.0)
    refs = table.refs(ch.id, ch.key)
    assert refs["writer"] == {"channel_id": ch.id, "access_key": ch.key, "direction": "write"}
    assert refs["reader"]["direction"] == "read" and refs["reader"]["channel_id"] == ch.id
    assert uuid.UUID(ch.id).version == 4 and uuid.UUID(ch.key).version == 4
    assert table.home_of(ch.id, ["gateway-0", "gateway-1", "http-0"]) == "gateway-1"
    assert table.home_of(str(uuid.uuid4()), ["gateway-0"]) is None


def test_each_end_is_taken_once_and_a_wrong_key_or_dir_is_not_found() -> None:
    t = Table("g")
    ch = t.create(4, 0.0)
    assert t.check(ch.id, "wrong", "read") == NOT_FOUND
    assert t.check(ch.id, ch.key, "sideways") == NOT_FOUND
    assert t.check("nope", ch.key, "read") == NOT_FOUND
    assert t.take(ch.id, ch.key, "read")[0] == OK
    assert t.take(ch.id, ch.key, "read")[0] == TAKEN
    assert t.take(ch.id, ch.key, "write")[0] == OK


def test_freed_when_both_ends_closed_and_swept_when_never_attached() -> None:
    t = Table("g")
    done, idle, half = t.create(1, 0.0), t.create(1, 0.0), t.create(1, 0.0)
    for d in ("read", "write"):
        t.take(done.id, done.key, d)
    t.take(half.id, half.key, "write")
    assert not t.end_closed(done.id, "write") and t.end_closed(done.id, "read")
    assert t.check(done.id, done.key, "read") == NOT_FOUND
    assert t.sweep(table.SWEEP_AGE_S - 1) == []
    assert {c.id for c in t.sweep(table.SWEEP_AGE_S + 1)} == {idle.id, half.id}
