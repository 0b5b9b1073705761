"""The pure parts of channels (``sdk.channel_refs``): the ref, finding and resolving refs in
payloads, the channel URL, cutting a write into frames."""
from __future__ import annotations

import json

import pytest

from sdk.channel_refs import (
    MAX_FRAME_SIZE, ChannelDirection, ChannelItem, StreamChannelRef, build_channel_url,
    extract_channel_refs, frames, is_channel_ref, resolve_refs,
)
from sdk.codec import encode

R = {"channel_id": "c1", "access_key": "k1", "direction": "read"}
W = {"channel_id": "c2", "access_key": "k2", "direction": "write"}


def test_is_channel_ref_needs_all_three_fields() -> None:
    assert is_channel_ref(R) and is_channel_ref(W)
    assert is_channel_ref({**R, "extra": 1})
    assert not is_channel_ref({**R, "direction": "both"})
    assert not is_channel_ref({"channel_id": "c", "access_key": 5, "direction": "read"})
    assert not is_channel_ref({"channel_id": "c", "direction": "read"})
    assert not is_channel_ref([R]) and not is_channel_ref("c1")


def test_ref_from_wire_and_back() -> None:
    ref = StreamChannelRef.from_wire(R)
    assert (ref.channel_id, ref.access_key, ref.direction) == ("c1", "k1", "read")
    assert ref.model_dump() == R and ref.model_dump(mode="json") == R
    assert StreamChannelRef.from_wire(ref) is ref
    with pytest.raises(ValueError):
        StreamChannelRef.from_wire({"channel_id": "c"})
    with pytest.raises(ValueError):
        StreamChannelRef("c", "k", "sideways")  # type: ignore[arg-type]
    # a payload may carry the ref object itself: it encodes as the wire dict
    assert json.loads(encode({"payload": {"reader": ref}})) == {"payload": {"reader": R}}


def test_extract_channel_refs_paths() -> None:
    data = {"a": R, "items": [1, {"w": W}], "plain": {"x": 1}}
    assert extract_channel_refs(data) == [("a", StreamChannelRef.from_wire(R)),
                                          ("items[1].w", StreamChannelRef.from_wire(W))]
    assert extract_channel_refs([R]) == [("[0]", StreamChannelRef.from_wire(R))]
    assert extract_channel_refs(R) == [("", StreamChannelRef.from_wire(R))]
    assert extract_channel_refs({"n": 1}) == []


def test_resolve_refs_replaces_refs_and_copies_only_their_containers() -> None:
    made: list[StreamChannelRef] = []

    def make(ref: StreamChannelRef) -> str:
        made.append(ref)
        return f"live:{ref.channel_id}"

    untouched = {"body": {"k": [1, 2]}, "headers": {"a": "b"}}
    data = {"request_body": R, "response": W, "nested": [{"x": R}, (W, 3)], "other": untouched}
    out = resolve_refs(data, make)
    assert out == {"request_body": "live:c1", "response": "live:c2",
                   "nested": [{"x": "live:c1"}, ("live:c2", 3)], "other": untouched}
    assert out["other"] is untouched and data["request_body"] is R  # the input is not mutated
    assert len(made) == 4
    assert resolve_refs(R, make) == "live:c1"


def test_resolve_refs_without_refs_is_the_same_object() -> None:
    def make(ref: StreamChannelRef) -> None:
        raise AssertionError("no ref here")

    for data in ({"a": 1, "b": [1, {"c": "d"}]}, [1, 2, {"x": ()}], (1, [2]), "s", 5, None):
        assert resolve_refs(data, make) is data


@pytest.mark.parametrize("base,expected", [
    ("ws://h:1", "ws://h:1/ws/channels/cid?key=k/%3D&dir=read"),
    ("ws://h:1/", "ws://h:1/ws/channels/cid?key=k/%3D&dir=read"),
    ("ws://h:1?token=t&x=1", "ws://h:1/ws/channels/cid?token=t&x=1&key=k/%3D&dir=read"),
])
def test_channel_url(base: str, expected: str) -> None:
    assert build_channel_url(base, "cid", "k/=", "read") == expected


def test_frames_cut_writes_into_at_most_64_kib() -> None:
    assert MAX_FRAME_SIZE == 64 * 1024
    small = b"abc"
    assert list(frames(small)) == [small] and next(frames(small)) is small
    assert [bytes(f) for f in frames(b"")] == [b""]
    exact = bytes(MAX_FRAME_SIZE)
    assert list(frames(exact)) == [exact]
    data = bytes(range(256)) * (MAX_FRAME_SIZE * 3 // 256) + b"tail"
    parts = list(frames(data))
    assert [len(p) for p in parts] == [MAX_FRAME_SIZE] * 3 + [4]
    assert b"".join(parts) == data
    assert [len(p) for p in frames(bytearray(MAX_FRAME_SIZE + 1))] == [MAX_FRAME_SIZE, 1]


def test_channel_item_and_direction() -> None:
    assert ChannelItem.text_item("hi").is_text and not ChannelItem.text_item("hi").is_binary
    assert ChannelItem.binary_item(b"x").is_binary
    with pytest.raises(ValueError):
        ChannelItem()
    with pytest.raises(ValueError):
        ChannelItem(text="a", binary=b"b")
    assert ChannelDirection.READ == "read" and ChannelDirection("write") is ChannelDirection.WRITE

