"""The channel ring (brokers/kit/channels/ring.py) on a plain buffer: records in order,
wrap-around, full and idle signalling, and the segment names of segment.py."""
from __future__ import annotations

import os

import pytest

from brokers.kit.channels import ring, segment

CH = b"c" * 16


def make(capacity: int = 4096) -> tuple[ring.RingWriter, ring.RingReader]:
    buf = bytearray(ring.segment_size(capacity))
    ring.init(buf, capacity)
    return ring.RingWriter(buf), ring.RingReader(buf)


def test_records_come_out_in_order_with_kind_flags_and_channel() -> None:
    w, r = make()
    assert w.put(CH, 1, b"hello") and w.put(b"d" * 16, 2, b"", ring.MORE)
    assert r.get() == (CH, 1, 0, b"hello")
    assert r.get() == (b"d" * 16, 2, ring.MORE, b"")
    assert r.get() is None


def test_a_record_wraps_around_the_end_and_a_header_never_does() -> None:
    w, r = make()
    for n in range(200):  # sizes that walk every offset of the data area
        data = bytes([n % 251]) * (n * 37 % 900)
        assert w.put(CH, 2, data)
        assert r.get() == (CH, 2, 0, data)


def test_full_ring_refuses_then_stall_asks_for_room() -> None:
    w, r = make()
    while w.put(CH, 2, b"x" * 500):
        pass
    assert w.stall()  # still full: the reader owes a notice
    assert r.producer_waits() and not r.producer_waits()  # one notice per stall
    r.get()
    assert w.put(CH, 2, b"x" * 500)


def test_idle_and_wanted_pair_up_one_wake_per_sleep() -> None:
    w, r = make()
    assert r.idle()  # empty: the reader sleeps
    assert w.put(CH, 1, b"a") and w.wanted() and not w.wanted()
    assert not r.idle()  # a record is there: read on, no sleep
    assert r.get() is not None


def test_capacity_must_be_a_power_of_two() -> None:
    with pytest.raises(ValueError):
        ring.segment_size(5000)


def test_segments_are_private_named_by_pid_and_swept_by_tag() -> None:
    tag = segment.engine_tag(f"/tmp/test-ring-{os.getpid()}")
    name = segment.segment_name(tag, os.getpid(), 1)
    seg = segment.create(name, ring.segment_size(4096))
    try:
        path = os.path.join(segment.SHM_DIR, name)
        assert os.stat(path).st_mode & 0o777 == 0o600
        assert segment.sweep(segment.engine_tag("/elsewhere")) == [] and os.path.exists(path)
        assert segment.sweep(tag, os.getpid() + 1) == []
        assert segment.sweep(tag, os.getpid()) == [name] and not os.path.exists(path)
    finally:
        seg.close()
    with pytest.raises(ValueError):
        segment.attach("../etc/passwd")
