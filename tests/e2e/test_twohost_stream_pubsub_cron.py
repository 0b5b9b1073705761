"""Two engine hosts on one Redis (issue 19), each a real supervisor with ``iii-stream``,
``iii-pubsub`` and ``iii-cron`` on the ``redis`` adapter (reference-style blocks, the
session's private redis-server):

- a stream subscriber on B's socket sees a write through A (and a trigger bound by a worker
  on B fires once for it);
- a publish through A reaches a subscriber worker on A and one on B exactly once each;
- cron ``* * * * * *`` bound from a worker on each host with one trigger id fires once per
  tick across the hosts (ticks counted by their scheduled time in the payload).
"""
from __future__ import annotations

import json
import time
import uuid
from collections import Counter

import pytest
import redis as redis_sync
from websockets.sync.client import connect

from tests.twohosts import two_hosts
from tests.wsclient import RawClient

WORKERS = """\
- name: iii-stream
  config:
    port: {stream_port}
    host: 127.0.0.1
    adapter: {name: redis, config: {redis_url: "{redis_url}"}}
- name: iii-pubsub
  config:
    adapter: {name: redis, config: {redis_url: "{redis_url}"}}
- name: iii-cron
  config:
    adapter: {name: redis, config: {redis_url: "{redis_url}"}}
"""


@pytest.fixture(scope="module")
def hosts(redis_server):
    with two_hosts(redis_server, WORKERS, wait_for="stream::list_all", env={}) as (a, b):
        yield a, b


def calls_of(w: RawClient, fn: str, seconds: float) -> list[dict]:
    """Every call of ``fn`` within ``seconds``, each answered at once."""
    out = []
    for frame in w.frames_within(seconds):
        if frame.get("type") == "invokefunction" and frame["function_id"] == fn:
            out.append(frame)
            if frame.get("invocation_id"):
                w.answer(frame, None)
    return out


def test_a_stream_subscriber_on_b_sees_a_write_through_a(hosts) -> None:
    a, b = hosts
    group = f"g-{uuid.uuid4().hex[:8]}"
    with RawClient.declared(b.url, "audit-on-b") as wb, RawClient.declared(a.url, "writer-on-a") as wa:
        wb.register_function("audit::on_b")
        wb.send({"type": "registertrigger", "id": f"t-{group}", "trigger_type": "stream",
                 "function_id": "audit::on_b", "config": {"stream_name": "chat", "group_id": group}})
        time.sleep(0.5)  # trigger registration has no success ack
        with connect(f"ws://127.0.0.1:{b.stream_port}/", compression=None) as ws:
            ws.send(json.dumps({"type": "join", "data": {"subscriptionId": "s1", "streamName": "chat",
                                                          "groupId": group}}))
            assert json.loads(ws.recv(timeout=5))["event"] == {"type": "sync", "data": []}
            out = wa.call("stream::set", {"stream_name": "chat", "group_id": group, "item_id": "m1",
                                          "data": {"text": "hi"}})
            assert out.get("result") == {"old_value": None, "new_value": {"text": "hi"}}, out
            push = json.loads(ws.recv(timeout=5))
            assert (push["streamName"], push["groupId"], push["id"], push["event"]) == (
                "chat", group, "m1", {"type": "create", "data": {"text": "hi"}})
            with pytest.raises(TimeoutError):
                ws.recv(timeout=0.5)  # once
        got = calls_of(wb, "audit::on_b", 2.0)
        assert [f["data"]["event"] for f in got] == [{"type": "create", "data": {"text": "hi"}}]
        # read through B what was written through A
        assert wb.call("stream::get", {"stream_name": "chat", "group_id": group, "item_id": "m1"}).get(
            "result") == {"text": "hi"}
    r = redis_sync.Redis.from_url(a.redis_url)
    assert json.loads(r.hget(f"stream:chat:{group}", "m1")) == {"text": "hi"}


def test_a_publish_through_a_reaches_a_subscriber_on_each_host_once(hosts) -> None:
    a, b = hosts
    topic = f"news-{uuid.uuid4().hex[:8]}"
    r = redis_sync.Redis.from_url(a.redis_url)
    with RawClient.declared(a.url, "sub-on-a") as wa, RawClient.declared(b.url, "sub-on-b") as wb:
        for w, fn in ((wa, "news::on_a"), (wb, "news::on_b")):
            w.register_function(fn)
            w.send({"type": "registertrigger", "id": f"t-{fn}", "trigger_type": "subscribe",
                    "function_id": fn, "config": {"topic": topic}})
        deadline = time.monotonic() + 10
        while r.pubsub_numsub(topic)[0][1] < 2:  # both hosts' SUBSCRIBE reached Redis
            assert time.monotonic() < deadline, r.pubsub_numsub(topic)
            time.sleep(0.05)
        out = wa.call("publish", {"topic": topic, "data": {"n": 1}})
        assert "error" not in out, out
        got_a = calls_of(wa, "news::on_a", 1.5)
        got_b = calls_of(wb, "news::on_b", 0.5)
        assert [f["data"] for f in got_a] == [{"n": 1}]
        assert [f["data"] for f in got_b] == [{"n": 1}]


def test_cron_bound_from_both_hosts_fires_once_per_tick(hosts) -> None:
    a, b = hosts
    fn = f"tick::{uuid.uuid4().hex[:8]}"
    with RawClient.declared(a.url, "cron-a") as wa, RawClient.declared(b.url, "cron-b") as wb:
        for w in (wa, wb):
            w.register_function(fn)
            w.send({"type": "registertrigger", "id": "every-second", "trigger_type": "cron",
                    "function_id": fn, "config": {"expression": "* * * * * *"}})
        seen: list[tuple[str, str]] = []
        deadline = time.monotonic() + 6.5
        while time.monotonic() < deadline:  # both workers, answered at once
            for name, w in (("A", wa), ("B", wb)):
                for frame in calls_of(w, fn, 0.05):
                    assert frame["data"]["job_id"] == "every-second"
                    seen.append((name, frame["data"]["scheduled_time"]))
    ticks = Counter(t for _, t in seen)
    assert len(ticks) >= 5, seen
    assert all(n == 1 for n in ticks.values()), sorted(ticks.items())
    r = redis_sync.Redis.from_url(a.redis_url)
    owners = {k.decode(): r.get(k).decode() for k in r.scan_iter("cron_lock:every-second:*")}
    assert len(owners) >= len(ticks) and set(owners.values()) <= {"A", "B"}
