"""The subscriber socket's pure part (workers-a §3.5/§3.6): delivery filter, client
messages, auth input; and the frame written once for every subscriber."""
from __future__ import annotations

from websockets.frames import Frame
from websockets.streams import StreamReader

from brokers.stream.socket import text_frame
from brokers.stream.subs import (ClientMessage, Subscription, Subscriptions, auth_context, auth_request,
                                 parse_client, query_params)


def test_delivery_filter_group_item_and_twice_for_two_subscriptions() -> None:
    subs = Subscriptions()
    subs.add("c1", Subscription("s1", "chat", "room"))
    subs.add("c2", Subscription("s2", "chat", "room", "m1"))
    subs.add("c3", Subscription("s3", "chat", "other"))
    subs.add("c1", Subscription("s4", "chat", "room", "m1"))
    assert sorted(subs.targets("chat", "room", "m1")) == ["c1", "c1", "c2"]
    assert sorted(subs.targets("chat", "room", "m2")) == ["c1"]
    assert sorted(subs.targets("chat", "room", None)) == ["c1"]  # id-less send: group subscriptions only
    assert list(subs.targets("chat", "nobody", None)) == []


def test_rejoin_replaces_and_drop_returns_what_was_held() -> None:
    subs = Subscriptions()
    subs.add("c1", Subscription("s1", "chat", "room"))
    old = subs.add("c1", Subscription("s1", "chat", "room2"))
    assert old == Subscription("s1", "chat", "room")
    assert list(subs.targets("chat", "room", None)) == []
    assert subs.remove("c1", "nope") is None
    assert subs.drop("c1") == [Subscription("s1", "chat", "room2")]
    assert subs.by_conn == {} and subs.by_group == {} and len(subs) == 0


def test_client_messages() -> None:
    join = '{"type":"join","data":{"subscriptionId":"s1","streamName":"chat","groupId":"g","id":"m"}}'
    assert parse_client(join) == ClientMessage("join", Subscription("s1", "chat", "g", "m"))
    assert parse_client(join.encode()) == ClientMessage("join", Subscription("s1", "chat", "g", "m"))
    leave = '{"type":"leave","data":{"subscriptionId":"s1","streamName":"chat","groupId":"g"}}'
    assert parse_client(leave) == ClientMessage("leave", Subscription("s1", "chat", "g"))
    assert parse_client("   ") is None
    for bad in ("{", "[]", '{"type":"join"}', '{"type":"join","data":{"subscriptionId":1}}',
                '{"type":"other","data":{}}'):
        assert isinstance(parse_client(bad), str)


def test_auth_request_and_context() -> None:
    assert query_params("token=abc&a=1&a=2&c&=x&d=%20") == {"token": ["abc"], "a": ["1", "2"], "c": [""],
                                                            "d": ["%20"]}
    req = auth_request([("Authorization", "Bearer t"), ("X-A", "1")], "/?token=abc", "127.0.0.1:5")
    assert req == {"headers": {"authorization": "Bearer t", "x-a": "1"}, "path": "/",
                   "query_params": {"token": ["abc"]}, "addr": "127.0.0.1:5"}
    assert auth_context({"context": {"user": "u"}}) == {"user": "u"}
    assert auth_context(None) is None and auth_context("x") is None and auth_context({}) is None


def _parse(data: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    gen = Frame.parse(reader.read_exact, mask=False)
    try:
        next(gen)
    except StopIteration as done:
        return done.value
    raise AssertionError("incomplete frame")


def test_text_frame_lengths() -> None:
    for n in (0, 1, 125, 126, 65535, 65536, 200_000):
        payload = b"x" * n
        frame = _parse(text_frame(payload))
        assert frame.data == payload and frame.fin and frame.opcode.name == "TEXT"
