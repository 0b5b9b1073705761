"""``state::get`` answered by the gateway from the state store in place (brokers/state/reader.py).

The state process is frozen (SIGSTOP) after a write was acknowledged: a read through the
gateway still answers with that write, bad input still gets the state process's own error,
and a write waits for the state process (it is the only writer) and is acknowledged once
it runs again. With the in-memory store nothing can be read in place: a read waits for
the state process like a write.
"""
from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from typing import Iterator

import pytest

from tests.harness import Engine
from tests.wsclient import RawClient, ok

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


def set_frame(key: str, value: object) -> dict:
    return {"type": "invokefunction", "function_id": "state::set", "invocation_id": f"set-{key}",
            "data": {"scope": "reads", "key": key, "value": value}}


def test_reads_are_answered_while_the_state_process_is_frozen(engine_factory) -> None:
    eng = engine_factory(extra_workers_yaml=LMDB_STATE, wait_for="state::get",
                         wait_data={"scope": "reads", "key": "none"})
    with RawClient.declared(eng.url) as c:
        ok(c.call("state::set", {"scope": "reads", "key": "k", "value": {"n": 1}}))
        ok(c.call("state::set", {"scope": "reads", "key": "nul", "value": None}))
        with frozen(eng, "state"):
            assert ok(c.call("state::get", {"scope": "reads", "key": "k"}, timeout=3)) == {"n": 1}
            assert ok(c.call("state::get", {"scope": "reads", "key": "absent"}, timeout=3)) is None
            answer = c.call("state::get", {"scope": "reads", "key": "nul"}, timeout=3)
            assert ok(answer) is None and "result" not in answer  # a stored null, as the state process says it
            bad = c.call("state::get", {"scope": "reads"}, timeout=3)["error"]
            assert bad["code"] == "deserialization_error" and "state::get" in bad["message"], bad
            # A write needs the state process: no answer while it is frozen.
            c.send(set_frame("k", {"n": 2}))
            with pytest.raises(TimeoutError):
                c.recv_until(lambda f: f.get("invocation_id") == "set-k", timeout=0.5)
        ok(c.recv_until(lambda f: f.get("invocation_id") == "set-k", timeout=5))
        assert ok(c.call("state::get", {"scope": "reads", "key": "k"})) == {"n": 2}
    assert "state::get served in place from" in eng.log_tail()


def test_the_in_memory_store_is_read_by_the_state_process_only(engine_factory) -> None:
    eng = engine_factory(extra_workers_yaml=MEMORY_STATE, wait_for="state::get",
                         wait_data={"scope": "reads", "key": "none"})
    with RawClient.declared(eng.url) as c:
        ok(c.call("state::set", {"scope": "reads", "key": "k", "value": 1}))
        with frozen(eng, "state"):
            c.send({"type": "invokefunction", "function_id": "state::get", "invocation_id": "get-k",
                    "data": {"scope": "reads", "key": "k"}})
            with pytest.raises(TimeoutError):
                c.recv_until(lambda f: f.get("invocation_id") == "get-k", timeout=0.5)
        assert ok(c.recv_until(lambda f: f.get("invocation_id") == "get-k", timeout=5)) == 1
    assert "served in place" not in eng.log_tail()
