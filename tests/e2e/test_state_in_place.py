"""``state::*`` served by the gateway on the state store in place (brokers/state/inplace.py).

With the state process frozen (SIGSTOP), reads and writes through the gateway are still
answered, with the state process's own results and errors. A state trigger fires for a
write made in place (the gateway hands the batch's events to the state process), with the
event the state process would have made, once the state process runs again; a scope made
and emptied in place is listed by ``state::list_groups``. With the in-memory store nothing
is served in place: a read waits for the state process.
"""
from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager
from typing import Iterator

import pytest

from tests.harness import Engine
from tests.wsclient import RawClient, fid, ok

LMDB_STATE = """
- name: iii-state
  config: {}
"""
MEMORY_STATE = """
- name: iii-state
  config:
    adapter:
      name: kv
      config:
        store_method: in_memory
"""


@contextmanager
def frozen(eng: Engine, name: str) -> Iterator[None]:
    pid = eng.pid(name)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def start(engine_factory, yaml: str) -> Engine:
    return engine_factory(extra_workers_yaml=yaml, wait_for="state::get",
                          wait_data={"scope": "reads", "key": "none"})


def test_reads_and_writes_are_answered_while_the_state_process_is_frozen(engine_factory) -> None:
    eng = start(engine_factory, LMDB_STATE)
    with RawClient.declared(eng.url) as c:
        ok(c.call("state::set", {"scope": "reads", "key": "k", "value": {"n": 1}}))
        with frozen(eng, "state"):
            assert ok(c.call("state::get", {"scope": "reads", "key": "k"}, timeout=3)) == {"n": 1}
            assert ok(c.call("state::set", {"scope": "reads", "key": "k", "value": {"n": 2}}, timeout=3)) == {
                "old_value": {"n": 1}, "new_value": {"n": 2}}
            assert ok(c.call("state::update", {"scope": "reads", "key": "k",
                                               "ops": [{"type": "increment", "path": "n", "by": 3}]},
                             timeout=3))["new_value"] == {"n": 5}
            ok(c.call("state::set", {"scope": "reads", "key": "nul", "value": None}, timeout=3))
            answer = c.call("state::get", {"scope": "reads", "key": "nul"}, timeout=3)
            assert ok(answer) is None and "result" not in answer  # a stored null, as the state process says it
            assert ok(c.call("state::delete", {"scope": "reads", "key": "nul"}, timeout=3)) is None
            assert ok(c.call("state::get", {"scope": "reads", "key": "absent"}, timeout=3)) is None
            bad = c.call("state::get", {"scope": "reads"}, timeout=3)["error"]
            assert bad["code"] == "deserialization_error" and "state::get" in bad["message"], bad
            bad = c.call("state::set", {"scope": "reads", "key": "k"}, timeout=3)["error"]
            assert bad["code"] == "deserialization_error", bad
        # After the thaw, the state process reads what the gateway wrote.
        assert ok(c.call("state::list", {"scope": "reads"})) == [{"n": 5}]
    assert "served in place from" in eng.log_tail()


def test_a_write_in_place_fires_the_state_trigger_and_counts_its_scope(engine_factory) -> None:
    eng = start(engine_factory, LMDB_STATE)
    handler, scope = fid("on-state"), fid("scope")
    with RawClient.declared(eng.url, "watcher") as w, RawClient.declared(eng.url, "writer") as c:
        w.register_function(handler)
        w.send({"type": "registertrigger", "id": fid("t"), "trigger_type": "state", "function_id": handler,
                "config": {"scope": scope}})
        deadline = time.monotonic() + 10
        while f"bound to {handler}" not in eng.log_tail():
            assert time.monotonic() < deadline, "the state trigger was never bound"
            time.sleep(0.05)
        with frozen(eng, "state"):
            ok(c.call("state::set", {"scope": scope, "key": "a", "value": 1}, timeout=3))
            ok(c.call("state::set", {"scope": scope, "key": "a", "value": 2}, timeout=3))
            with pytest.raises(TimeoutError):  # the state process fires it: not while frozen
                w.next_call(handler, timeout=0.3)
        events = []
        for _ in range(2):
            call = w.next_call(handler, timeout=5)
            w.answer(call, None)
            events.append(call["data"])
        assert [(e["event_type"], e["old_value"], e["new_value"]) for e in events] == [
            ("state:created", None, 1), ("state:updated", 1, 2)], events
        assert events[0]["type"] == "state" and events[0]["scope"] == scope and events[0]["key"] == "a"
        assert ok(c.call("state::delete", {"scope": scope, "key": "a"})) == 2
        w.answer(w.next_call(handler, timeout=5), None)
        assert scope in ok(c.call("state::list_groups", {}))["groups"]  # empty now, still a group


def test_the_in_memory_store_is_served_by_the_state_process_only(engine_factory) -> None:
    eng = start(engine_factory, MEMORY_STATE)
    with RawClient.declared(eng.url) as c:
        ok(c.call("state::set", {"scope": "reads", "key": "k", "value": 1}))
        with frozen(eng, "state"):
            c.send({"type": "invokefunction", "function_id": "state::get", "invocation_id": "get-k",
                    "data": {"scope": "reads", "key": "k"}})
            with pytest.raises(TimeoutError):
                c.recv_until(lambda f: f.get("invocation_id") == "get-k", timeout=0.5)
        assert ok(c.recv_until(lambda f: f.get("invocation_id") == "get-k", timeout=5)) == 1
    assert "served in place" not in eng.log_tail()


def test_two_gateway_processes_write_one_store(engine_factory) -> None:
    """Two gateway processes each commit in place to the one store (LMDB's write lock makes
    one transaction at a time): increments through both add up, nothing is lost, and the
    trigger sees every write once."""
    eng = engine_factory(extra_workers_yaml=LMDB_STATE, gateway_processes=2, wait_for="state::get",
                         wait_data={"scope": "reads", "key": "none"})
    handler, scope = fid("on-count"), fid("count")
    clients: list[RawClient] = []
    try:
        # Connections until both gateway processes have one (the kernel picks who accepts);
        # each says so on its first call served in place.
        while eng.log_tail().count("served in place from") < 2 or len(clients) < 6:
            assert len(clients) < 60, "every connection landed on one gateway process"
            c = RawClient.declared(eng.url, f"w{len(clients)}")
            clients.append(c)
            ok(c.call("state::get", {"scope": scope, "key": "n"}))
        watcher = clients[0]
        watcher.register_function(handler)
        watcher.send({"type": "registertrigger", "id": fid("t"), "trigger_type": "state",
                      "function_id": handler, "config": {"scope": scope}})
        deadline = time.monotonic() + 10
        while f"bound to {handler}" not in eng.log_tail():
            assert time.monotonic() < deadline, "the state trigger was never bound"
            time.sleep(0.05)
        writers = clients[1:]
        for n in range(20):  # 20 increments per writer, pipelined
            for c in writers:
                c.send({"type": "invokefunction", "function_id": "state::update", "invocation_id": f"u{n}",
                        "data": {"scope": scope, "key": "n", "ops": [{"type": "increment", "path": "v", "by": 1}]}})
        for c in writers:
            for n in range(20):
                ok(c.recv_until(lambda f, n=n: f.get("invocation_id") == f"u{n}", timeout=10))
        total = 20 * len(writers)
        assert ok(clients[1].call("state::get", {"scope": scope, "key": "n"})) == {"v": total}
        seen = []
        while len(seen) < total:
            call = watcher.next_call(handler, timeout=10)
            watcher.answer(call, None)
            seen.append(call["data"]["new_value"]["v"])
        assert sorted(seen) == list(range(1, total + 1))
    finally:
        for c in clients:
            c.close()
