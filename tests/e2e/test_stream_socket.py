"""The stream worker's subscriber socket end to end (workers-a §3.5/§3.6): a real engine
with ``iii-stream``, a plain ``websockets`` client as a browser would use it, and a raw
protocol worker (in a thread) that answers the auth function and the join/leave triggers.

Join a group and an item: sync first, then create/update/delete/event pushes filtered per
subscription; leave; the auth function's context in join and leave payloads; a join a
trigger refuses gets the ``unauthorized`` wrapper and no pushes; a disconnect fires a leave
per subscription; only ``/`` is routed. Then ``stream`` triggers (payload, filters,
condition). The slow subscriber: one stops reading while 100,000 events are written; the
others get every one in order, the stream process stays small, and the slow one gets what
was queued before its close, then 1008 "subscriber too slow".
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any, Callable, Iterator

import psutil
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.harness import Engine, free_port, running_engine
from tests.wsclient import RawClient, ok

BOUND = 256 * 1024


class Responder:
    """A worker on its own thread: answers every call of its functions with ``handlers``
    and keeps each call's ``(function_id, data)`` in ``calls``."""

    def __init__(self, url: str, handlers: dict[str, Callable[[Any], Any]]) -> None:
        self.client = RawClient.declared(url, "stream-responder")
        self.handlers = handlers
        self.calls: list[tuple[str, Any]] = []
        for fn in handlers:
            self.client.register_function(fn)
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def bind(self, trigger_type: str, fn: str, config: Any = None) -> str:
        tid = f"t-{uuid.uuid4().hex[:8]}"
        self.client.send({"type": "registertrigger", "id": tid, "trigger_type": trigger_type,
                          "function_id": fn, "config": config or {}})
        return tid

    def _run(self) -> None:
        while not self._stop:
            try:
                frame = self.client.recv(timeout=0.2)
            except TimeoutError:
                continue
            except ConnectionClosed:
                return
            if frame.get("type") != "invokefunction":
                continue
            fn, data = frame["function_id"], frame.get("data")
            self.calls.append((fn, data))
            if frame.get("invocation_id"):
                self.client.answer(frame, self.handlers[fn](data))

    def seen(self, fn: str, pred: Callable[[Any], bool] = lambda d: True) -> list[Any]:
        return [d for f, d in list(self.calls) if f == fn and pred(d)]

    def wait(self, fn: str, pred: Callable[[Any], bool] = lambda d: True, n: int = 1,
             within: float = 5.0) -> list[Any]:
        deadline = time.monotonic() + within
        while len(found := self.seen(fn, pred)) < n:
            assert time.monotonic() < deadline, f"{fn}: {len(found)} of {n} calls: {self.calls[-5:]}"
            time.sleep(0.02)
        return found

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.client.close()


def _auth(data: Any) -> Any:
    token = data["query_params"].get("token")
    return {"context": {"token": token[0], "ua": data["headers"].get("x-client")}} if token else {}


def _join(data: Any) -> Any:
    return {"unauthorized": True} if data["subscription_id"].startswith("deny") else {"ok": True}


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    sp = free_port()
    yaml = (f"- name: iii-stream\n  config:\n    host: 127.0.0.1\n    port: {sp}\n"
            f"    auth_function: test::auth\n    max_send_queue_bytes: {BOUND}\n"
            "    close_timeout_ms: 120000\n")
    with running_engine(extra_workers_yaml=yaml) as eng:
        eng.stream_port = sp  # type: ignore[attr-defined]
        with RawClient.worker(eng.url) as c:
            ok(c.call_when_found("stream::list_all", {}))
        yield eng


@pytest.fixture(scope="module")
def responder(engine: Engine) -> Iterator[Responder]:
    r = Responder(engine.url, {"test::auth": _auth, "test::join": _join, "test::leave": lambda d: None,
                               "test::on_stream": lambda d: None,
                               "test::cond": lambda d: d["id"] != "skip-me"})
    r.bind("stream:join", "test::join")
    r.bind("stream:leave", "test::leave")
    # bound once a probe join reaches the join trigger
    deadline = time.monotonic() + 10
    while not r.seen("test::join"):
        assert time.monotonic() < deadline, "stream:join binding never fired"
        with subscriber(engine) as ws:
            join(ws, "probe", "probe", "probe")
            recv(ws)
    yield r
    r.close()


def subscriber(engine: Engine, query: str = "", **kw: Any) -> ClientConnection:
    return connect(f"ws://127.0.0.1:{engine.stream_port}/{query}", compression=None,  # type: ignore[attr-defined]
                   open_timeout=10, legacy=True, **kw)


def join(ws: ClientConnection, sid: str, stream: str, group: str, item: str | None = None) -> None:
    data = {"subscriptionId": sid, "streamName": stream, "groupId": group}
    if item is not None:
        data["id"] = item
    ws.send(json.dumps({"type": "join", "data": data}))


def leave(ws: ClientConnection, sid: str, stream: str, group: str) -> None:
    ws.send(json.dumps({"type": "leave", "data": {"subscriptionId": sid, "streamName": stream,
                                                  "groupId": group}}))


def recv(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=timeout))


def quiet(ws: ClientConnection, seconds: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        ws.recv(timeout=seconds)


def call(c: RawClient, fn: str, data: Any) -> Any:
    return ok(c.call(fn, data))


def name() -> str:
    return f"s:{uuid.uuid4().hex[:6]}"


def test_group_and_item_subscriptions_sync_then_filtered_pushes(engine: Engine, responder: Responder) -> None:
    s = name()
    with RawClient.worker(engine.url) as c, subscriber(engine) as ws:
        call(c, "stream::set", {"stream_name": s, "group_id": "g", "item_id": "a", "data": {"v": 1}})
        join(ws, "grp", s, "g")
        sync = recv(ws)
        assert sync["type"] == "stream" and sync["streamName"] == s and sync["groupId"] == "g"
        assert sync["id"] is None and sync["event"] == {"type": "sync", "data": [{"v": 1}]}
        assert isinstance(sync["timestamp"], int)
        join(ws, "itm", s, "g", "a")
        assert recv(ws)["event"] == {"type": "sync", "data": {"v": 1}}
        join(ws, "missing", s, "g", "nope")
        assert recv(ws)["event"] == {"type": "sync", "data": None}
        leave(ws, "missing", s, "g")

        call(c, "stream::set", {"stream_name": s, "group_id": "g", "item_id": "b", "data": 2})
        m = recv(ws)
        assert (m["id"], m["event"]) == ("b", {"type": "create", "data": 2})
        quiet(ws)  # the item subscription is for "a" only

        call(c, "stream::update", {"stream_name": s, "group_id": "g", "item_id": "a",
                                   "ops": [{"type": "increment", "path": "v", "by": 2}]})
        both = [recv(ws), recv(ws)]  # two matching subscriptions: twice, without subscription id
        assert all(m["event"] == {"type": "update", "data": {"v": 3}} and m["id"] == "a" for m in both)
        assert all("subscriptionId" not in m for m in both)

        call(c, "stream::send", {"stream_name": s, "group_id": "g", "type": "typing", "data": {"x": 1}})
        m = recv(ws)
        assert (m["id"], m["event"]) == (None, {"type": "event", "event": {"type": "typing", "data": {"x": 1}}})
        quiet(ws)  # an id-less event reaches group subscriptions only
        call(c, "stream::send", {"stream_name": s, "group_id": "g", "id": "a", "type": "t", "data": None})
        assert [recv(ws)["id"], recv(ws)["id"]] == ["a", "a"]

        call(c, "stream::delete", {"stream_name": s, "group_id": "g", "item_id": "a"})
        assert [recv(ws)["event"], recv(ws)["event"]] == [{"type": "delete", "data": {"v": 3}}] * 2
        call(c, "stream::delete", {"stream_name": s, "group_id": "g", "item_id": "a"})  # missing: nothing
        call(c, "stream::set", {"stream_name": s, "group_id": "other", "item_id": "a", "data": 1})
        quiet(ws)

        leave(ws, "grp", s, "g")
        time.sleep(0.2)
        call(c, "stream::set", {"stream_name": s, "group_id": "g", "item_id": "c", "data": 1})
        call(c, "stream::set", {"stream_name": s, "group_id": "g", "item_id": "a", "data": 5})
        m = recv(ws)
        assert (m["id"], m["event"]) == ("a", {"type": "create", "data": 5})
        quiet(ws)


def test_auth_context_reaches_join_and_leave_payloads(engine: Engine, responder: Responder) -> None:
    s = name()
    with subscriber(engine, "?token=abc&x=1", additional_headers={"X-Client": "pytest"}) as ws:
        join(ws, "ctx-1", s, "g", "i")
        assert recv(ws)["event"]["type"] == "sync"
        [payload] = responder.wait("test::join", lambda d: d["subscription_id"] == "ctx-1")
        assert payload == {"subscription_id": "ctx-1", "stream_name": s, "group_id": "g", "id": "i",
                           "context": {"token": "abc", "ua": "pytest"}}
        leave(ws, "ctx-1", s, "g")
        [payload] = responder.wait("test::leave", lambda d: d["subscription_id"] == "ctx-1")
        assert payload["context"] == {"token": "abc", "ua": "pytest"}
    [auth] = responder.wait("test::auth", lambda d: d["query_params"].get("token") == ["abc"])
    assert auth["path"] == "/" and auth["query_params"] == {"token": ["abc"], "x": ["1"]}
    assert auth["headers"]["x-client"] == "pytest" and auth["addr"].startswith("127.0.0.1:")
    with subscriber(engine) as ws:  # no token: the auth answers {}, accepted without context
        join(ws, "ctx-2", s, "g")
        assert recv(ws)["event"]["type"] == "sync"
        [payload] = responder.wait("test::join", lambda d: d["subscription_id"] == "ctx-2")
        assert payload["context"] is None and payload["id"] is None


def test_a_refused_join_gets_the_unauthorized_wrapper_and_no_pushes(engine: Engine, responder: Responder) -> None:
    s = name()
    with RawClient.worker(engine.url) as c, subscriber(engine) as ws:
        join(ws, "deny-1", s, "g", "i")
        m = recv(ws)
        assert m["type"] == "stream" and m["event"] == {"type": "unauthorized"}
        assert (m["streamName"], m["groupId"], m["id"]) == (s, "g", "i")
        call(c, "stream::set", {"stream_name": s, "group_id": "g", "item_id": "i", "data": 1})
        quiet(ws)


def test_disconnect_fires_a_leave_for_every_subscription(engine: Engine, responder: Responder) -> None:
    s = name()
    with subscriber(engine, "?token=t2") as ws:
        for sid in ("dc-1", "dc-2", "dc-3"):
            join(ws, sid, s, "g", None if sid == "dc-1" else sid)
            assert recv(ws)["event"]["type"] == "sync"
    left = responder.wait("test::leave", lambda d: d["subscription_id"].startswith("dc-"), n=3)
    assert sorted(d["subscription_id"] for d in left) == ["dc-1", "dc-2", "dc-3"]
    assert all(d["context"] == {"token": "t2", "ua": None} and d["stream_name"] == s for d in left)


def test_only_the_root_path_is_routed_and_junk_is_ignored(engine: Engine, responder: Responder) -> None:
    with pytest.raises(InvalidStatus) as exc:
        with subscriber(engine, "stream/a/b/"):
            pass
    assert exc.value.response.status_code == 404
    with subscriber(engine) as ws:
        for junk in ("", "  ", "{bad", '{"type":"what"}', b'\x00\x01'):
            ws.send(junk)
        quiet(ws)
        join(ws, "after-junk", name(), "g")  # binary frames carry the same JSON too
        assert recv(ws)["event"] == {"type": "sync", "data": []}
        ws.send(json.dumps({"type": "join", "data": {"subscriptionId": "bin", "streamName": "x",
                                                     "groupId": "g"}}).encode())
        assert recv(ws)["event"] == {"type": "sync", "data": []}


def test_stream_triggers_get_the_wrapper_filtered_and_conditioned(engine: Engine, responder: Responder) -> None:
    s = name()
    responder.bind("stream", "test::on_stream", {"stream_name": s, "group_id": "g",
                                                 "condition_function_id": "test::cond"})
    with RawClient.worker(engine.url) as c:
        deadline = time.monotonic() + 10
        while not responder.seen("test::on_stream", lambda d: d["streamName"] == s):
            assert time.monotonic() < deadline, "stream binding never fired"
            call(c, "stream::set", {"stream_name": s, "group_id": "g", "item_id": "probe", "data": 0})
            time.sleep(0.1)
        call(c, "stream::set", {"stream_name": s, "group_id": "g", "item_id": "m", "data": {"t": 1}})
        call(c, "stream::set", {"stream_name": s, "group_id": "g", "item_id": "skip-me", "data": 1})
        call(c, "stream::set", {"stream_name": s, "group_id": "h", "item_id": "m", "data": 1})
        call(c, "stream::set", {"stream_name": name(), "group_id": "g", "item_id": "m", "data": 1})
        call(c, "stream::send", {"stream_name": s, "group_id": "g", "type": "ping", "data": 7})
        call(c, "stream::delete", {"stream_name": s, "group_id": "g", "item_id": "m"})
        got = responder.wait("test::on_stream", lambda d: d["streamName"] == s and d["id"] != "probe", n=3)
    time.sleep(0.3)
    got = responder.seen("test::on_stream", lambda d: d["streamName"] == s and d["id"] != "probe")
    assert [(d["groupId"], d["id"], d["event"]) for d in got] == [
        ("g", "m", {"type": "create", "data": {"t": 1}}),
        ("g", None, {"type": "event", "event": {"type": "ping", "data": 7}}),
        ("g", "m", {"type": "delete", "data": {"t": 1}})]
    assert all(d["type"] == "stream" and isinstance(d["timestamp"], int) for d in got)
    cond = responder.seen("test::cond", lambda d: d["streamName"] == s and d["id"] == "skip-me")
    assert cond and cond[0]["event"] == {"type": "create", "data": 1}  # the same payload as the handler's


def test_a_bad_stream_trigger_config_is_refused(engine: Engine, responder: Responder) -> None:
    with RawClient.declared(engine.url, "bad-binder") as w:
        w.register_function("test::nothing")
        w.send({"type": "registertrigger", "id": "bad-1", "trigger_type": "stream",
                "function_id": "test::nothing", "config": {"group_id": "g"}})
        res = w.recv_until(lambda f: f.get("type") == "triggerregistrationresult", timeout=10)
        assert res["error"]["code"] == "trigger_registration_failed"
        assert "Failed to deserialize stream trigger" in res["error"]["message"]


N_EVENTS = 100_000


def test_a_slow_subscriber_is_closed_alone_and_the_others_get_every_event(engine: Engine,
                                                                          responder: Responder) -> None:
    s = name()
    pad = "x" * 120
    fast = [subscriber(engine, max_queue=None) for _ in range(3)]
    slow = subscriber(engine, max_queue=4)
    for ws in fast + [slow]:
        join(ws, "sub", s, "g")
        assert recv(ws)["event"]["type"] == "sync"
    got: list[list[int]] = [[] for _ in fast]

    def reader(i: int) -> None:
        ws = fast[i]
        while len(got[i]) < N_EVENTS:
            m = json.loads(ws.recv(timeout=60))
            got[i].append(m["event"]["event"]["data"]["n"])

    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(len(fast))]
    for t in threads:
        t.start()
    proc = psutil.Process(engine.pid("stream"))
    rss0 = peak = proc.memory_info().rss
    with RawClient.worker(engine.url) as c:
        for start in range(0, N_EVENTS, 1000):
            for n in range(start, start + 1000):
                c.send({"type": "invokefunction", "function_id": "stream::send", "action": {"type": "void"},
                        "data": {"stream_name": s, "group_id": "g", "type": "tick", "data": {"n": n, "pad": pad}}})
            ok(c.call("stream::list_all", {}, timeout=30))  # the writes so far are handled
            peak = max(peak, proc.memory_info().rss)
    for t in threads:
        t.join(120)
    for i in range(len(fast)):
        assert got[i] == list(range(N_EVENTS)), f"subscriber {i}: {len(got[i])} events"
    # 100,000 events of ~200 bytes are 20 MB per subscriber; the slow one may hold its bound
    assert peak - rss0 < 48 * 1024 * 1024, f"stream process RSS grew by {(peak - rss0) >> 20} MiB"
    print(f"stream RSS {rss0 >> 20} -> peak {peak >> 20} MiB")
    # the slow one: what was queued before the close, in order, then 1008
    seen = []
    with pytest.raises(ConnectionClosed) as exc:
        while True:
            seen.append(json.loads(slow.recv(timeout=30))["event"]["event"]["data"]["n"])
    assert exc.value.rcvd is not None
    assert (exc.value.rcvd.code, exc.value.rcvd.reason) == (1008, "subscriber too slow")
    assert 0 < len(seen) < N_EVENTS and seen == list(range(len(seen)))
    print(f"slow subscriber got {len(seen)} of {N_EVENTS} events, then 1008")
    assert "closing stream subscriber" in engine.log_tail()
    for ws in fast:
        ws.close()
