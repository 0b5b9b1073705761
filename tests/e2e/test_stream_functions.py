"""``stream::*`` in the real engine (workers-a §3.1/§3.2): the result shapes and codes over
the worker protocol, ``stream::list_all`` with stream names holding ``:`` (the reference
lists ``iii:devtools:state`` as ``iii``), a custom provider taking over one stream (also for
the subscriber's sync), and acknowledged writes surviving ``kill -9`` of the stream process.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any, Iterator

import pytest
from websockets.sync.client import connect

from tests.harness import Engine, free_port, running_engine
from tests.wsclient import RawClient, ok


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    sp = free_port()
    yaml = f"- name: iii-stream\n  config:\n    host: 127.0.0.1\n    port: {sp}\n"
    with running_engine(extra_workers_yaml=yaml) as eng:
        eng.stream_port = sp  # type: ignore[attr-defined]
        with RawClient.worker(eng.url) as c:
            ok(c.call_when_found("stream::list_all", {}))
        yield eng


def name() -> str:
    return f"fn-{uuid.uuid4().hex[:6]}"


def test_result_shapes_and_errors(engine: Engine) -> None:
    s = name()
    at = {"stream_name": s, "group_id": "g", "item_id": "i"}
    with RawClient.worker(engine.url) as c:
        assert ok(c.call("stream::get", at)) is None
        assert ok(c.call("stream::set", {**at, "data": {"a": 1}})) == {"old_value": None, "new_value": {"a": 1}}
        assert ok(c.call("stream::set", {**at, "data": None})) == {"old_value": {"a": 1}, "new_value": None}
        up = ok(c.call("stream::update", {**at, "ops": [{"type": "set", "path": "", "value": {"n": 1}},
                                                       {"type": "append", "path": "n", "value": 2}]}))
        assert up["old_value"] is None and up["new_value"] == {"n": 1}
        assert up["errors"][0]["code"] == "append.type_mismatch" and up["errors"][0]["op_index"] == 1
        assert ok(c.call("stream::update", {**at, "item_id": "new", "ops": []})) == {"old_value": None, "new_value": {}}
        assert sorted(ok(c.call("stream::list", {"stream_name": s, "group_id": "g"})), key=len) == [{}, {"n": 1}]
        assert ok(c.call("stream::list", {"stream_name": s, "group_id": "none"})) == []
        ok(c.call("stream::set", {**at, "group_id": "h", "data": 1}))
        assert sorted(ok(c.call("stream::list_groups", {"stream_name": s}))) == ["g", "h"]
        assert ok(c.call("stream::delete", at)) == {"old_value": {"n": 1}}
        assert ok(c.call("stream::delete", at)) == {"old_value": None}
        assert ok(c.call("stream::send", {"stream_name": s, "group_id": "g", "type": "t", "data": 1})) is None
        for fn, data, detail in [
                ("stream::set", {**at}, "missing field `data`"),
                ("stream::get", {"stream_name": s, "group_id": "g"}, "missing field `item_id`"),
                ("stream::update", {**at, "ops": 3}, None),
                ("stream::list", None, "invalid type: null, expected struct StreamGetGroupInput"),
                ("stream::send", {"stream_name": s, "group_id": "g", "data": 1}, "missing field `type`")]:
            err = c.call(fn, data)["error"]
            assert err["code"] == "deserialization_error", err
            assert err["message"].startswith(f"Failed to deserialize input for {fn}: ")
            if detail:
                assert err["message"].endswith(detail)


def test_list_all_lists_names_with_colons_whole(engine: Engine) -> None:
    tag = uuid.uuid4().hex[:6]
    names = [f"iii:devtools:{tag}", f"iii:{tag}", f"{tag}:a:b:c"]
    with RawClient.worker(engine.url) as c:
        for n in names:
            for g in ("g2", "g1:x"):
                ok(c.call("stream::set", {"stream_name": n, "group_id": g, "item_id": "i", "data": 1}))
        listed = ok(c.call("stream::list_all", {}))
        mine = [e for e in listed["stream"] if tag in e["id"]]
        assert mine == [{"id": n, "groups": ["g1:x", "g2"]} for n in sorted(names)]
        assert listed["count"] == len(listed["stream"])
        assert [e["id"] for e in listed["stream"]] == sorted(e["id"] for e in listed["stream"])
        assert sorted(ok(c.call("stream::list_groups", {"stream_name": f"iii:{tag}"}))) == ["g1:x", "g2"]


def test_a_custom_provider_takes_over_its_stream(engine: Engine) -> None:
    s = name()
    store: dict[str, Any] = {}
    with RawClient.declared(engine.url, "custom-stream") as p, RawClient.worker(engine.url) as c:
        for op in ("get", "set", "delete", "list", "list_groups", "update"):
            p.register_function(f"stream::{op}({s})")
        at = {"stream_name": s, "group_id": "g", "item_id": "i"}
        deadline = time.monotonic() + 10
        result: dict = {}

        def serve_one() -> Any:
            inv = p.next_call(*(f"stream::{op}({s})" for op in
                                ("get", "set", "delete", "list", "list_groups", "update")), timeout=5)
            op, data = inv["function_id"].split("::")[1].split("(")[0], inv["data"]
            key = f"{data.get('group_id')}/{data.get('item_id')}"
            if op == "set":
                out = {"old_value": store.get(key), "new_value": data["data"]}
                store[key] = data["data"]
            elif op == "get":
                out = store.get(key)
            elif op == "delete":
                out = {"old_value": store.pop(key, None)}
            elif op == "list":
                out = [v for k, v in store.items() if k.startswith(data["group_id"] + "/")]
            elif op == "list_groups":
                out = ["custom-group"]
            else:
                out = "not an object"  # a bad answer: JSON_ERROR
            p.answer(inv, out)
            return data

        # the provider is routed once the gateway's route reaches the stream process
        while True:
            c.send({"type": "invokefunction", "function_id": "stream::set", "invocation_id": "first",
                    "data": {**at, "data": {"v": 1}}})
            try:
                data = serve_one()
                break
            except TimeoutError:
                assert time.monotonic() < deadline, "the provider never got stream::set"
        assert data["data"] == {"v": 1} and data["stream_name"] == s
        result = ok(c.recv_until(lambda f: f.get("invocation_id") == "first"))
        assert result == {"old_value": None, "new_value": {"v": 1}}

        def through(fn: str, payload: Any) -> dict:
            inv = str(uuid.uuid4())
            c.send({"type": "invokefunction", "function_id": fn, "invocation_id": inv, "data": payload})
            serve_one()
            return c.recv_until(lambda f: f.get("invocation_id") == inv)

        assert ok(through("stream::get", at)) == {"v": 1}
        assert ok(through("stream::list", {"stream_name": s, "group_id": "g"})) == [{"v": 1}]
        assert ok(through("stream::list_groups", {"stream_name": s})) == ["custom-group"]
        err = through("stream::update", {**at, "ops": []})["error"]
        assert err["code"] == "JSON_ERROR" and err["message"].startswith("Failed to convert result to value")
        # the subscriber's sync reads through the provider, and its pushes follow its answers
        with connect(f"ws://127.0.0.1:{engine.stream_port}/", compression=None, legacy=True) as ws:  # type: ignore[attr-defined]
            ws.send(json.dumps({"type": "join", "data": {"subscriptionId": "x", "streamName": s,
                                                         "groupId": "g", "id": "i"}}))
            serve_one()
            assert json.loads(ws.recv(timeout=5))["event"] == {"type": "sync", "data": {"v": 1}}
            assert ok(through("stream::delete", at)) == {"old_value": {"v": 1}}
            assert json.loads(ws.recv(timeout=5))["event"] == {"type": "delete", "data": {"v": 1}}
        # list_all and send stay the engine's own
        assert all(e["id"] != s for e in ok(c.call("stream::list_all", {}))["stream"])


def test_acknowledged_writes_survive_kill_9_of_the_stream_process() -> None:
    sp = free_port()
    yaml = f"- name: iii-stream\n  config:\n    host: 127.0.0.1\n    port: {sp}\n"
    with running_engine(extra_workers_yaml=yaml) as eng:
        with RawClient.worker(eng.url) as c:
            ok(c.call_when_found("stream::list_all", {}))
        acked: dict[str, int] = {}
        stop = threading.Event()
        lock = threading.Lock()

        def writer(w: int) -> None:
            with RawClient.worker(eng.url) as c:
                n = 0
                while not stop.is_set():
                    item = f"w{w}-{n}"
                    while True:  # retried until acknowledged: a set of the same value is safe
                        frame = c.call("stream::set", {"stream_name": "durable", "group_id": "g",
                                                       "item_id": item, "data": n}, timeout=20)
                        if frame.get("error") is None:
                            break
                        time.sleep(0.02)
                    with lock:
                        acked[item] = n
                    n += 1

        threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(4)]
        for t in threads:
            t.start()
        for _ in range(3):
            time.sleep(1.0)
            pid = eng.kill("stream")
            eng.wait_running("stream", timeout=15, not_pid=pid)
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(30)
        with lock:
            expected = dict(acked)
        assert len(expected) > 100, f"only {len(expected)} writes acknowledged"
        pid = eng.kill("stream")
        eng.wait_running("stream", timeout=15, not_pid=pid)
        with RawClient.worker(eng.url) as c:
            frame = c.wait_answered("stream::list", {"stream_name": "durable", "group_id": "g"}, within=15)
            stored = sorted(ok(frame))
            got = {item: ok(c.call("stream::get", {"stream_name": "durable", "group_id": "g", "item_id": item}))
                   for item in expected}
        lost = {k: v for k, v in expected.items() if got[k] != v}
        assert not lost, f"{len(lost)} of {len(expected)} acknowledged writes lost"
        print(f"{len(expected)} acknowledged writes across 4 kill -9s, none lost")
        assert len(stored) >= len(expected)
