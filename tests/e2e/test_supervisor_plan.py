"""Children run on the supervisor's plan (issue 10, item 7): a process respawned after a
crash runs on the config the engine was started with, not on the config file as it is now.

Shape: a real engine with iii-queue (queue ``orders``, a config of its own) and iii-state;
the test overwrites (or removes) the config file under it, ``kill -9``s a broker and checks
that the respawned one is RUNNING and serves as before: ``engine::queue::topic_stats`` shows
the original ``orders`` config, a state key written before the kill reads back. Before the
plan, each child re-read the file: a broken file sent the queue broker to FATAL, a changed
one gave the engine two configs at once.

The engine is asked for its status with ``--runtime-dir``: ``status --config`` reads the
file to find the engine, and that file is what these tests break.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

import pytest

from tests.harness import REPO, STATE_WORKER_YAML, Engine, EngineError, supervisor_cmd
from tests.wsclient import RawClient, ok

pytestmark = pytest.mark.slow

ORDERS = {"max_retries": 4, "concurrency": 3, "backoff_ms": 70, "type": "standard"}
CHANGED = {"max_retries": 9, "concurrency": 1, "backoff_ms": 5000, "type": "standard"}
BROKEN = "workers:\n  - name: iii-queue\n    config: {queue_configs: 42\n"  # not even YAML


def status(eng: Engine) -> dict[str, Any]:
    out = subprocess.run(supervisor_cmd() + ["status", "--runtime-dir", eng.runtime_dir, "--json"],
                         capture_output=True, text=True, timeout=10, cwd=REPO)
    if out.returncode != 0:
        raise EngineError(f"status failed ({out.returncode}): {out.stderr or out.stdout}")
    return json.loads(out.stdout)


def proc(eng: Engine, name: str) -> dict[str, Any]:
    return next(p for p in status(eng)["processes"] if p["name"] == name)


def kill_and_wait_running(eng: Engine, name: str, timeout: float = 10.0) -> dict[str, Any]:
    """``kill -9`` process ``name``; its entry once it is RUNNING again with a new pid."""
    old = proc(eng, name)["pid"]
    os.kill(old, 9)
    deadline = time.monotonic() + timeout
    entry: dict[str, Any] = {}
    while time.monotonic() < deadline:
        entry = proc(eng, name)
        if entry["state"] == "RUNNING" and entry["pid"] not in (None, old):
            return entry
        time.sleep(0.05)
    raise AssertionError(f"{name} not RUNNING again within {timeout}s: {entry}\n{eng.log_tail()}")


def orders_config(w: RawClient) -> dict[str, Any]:
    frame = w.wait_answered("engine::queue::topic_stats", {"topic": "orders"}, within=10)
    return ok(frame)["config"]


@pytest.fixture
def eng(engine_factory) -> Engine:
    return engine_factory(queues={"orders": ORDERS}, extra_workers_yaml=STATE_WORKER_YAML,
                          wait_for="engine::queue::topic_stats", wait_data={"topic": "orders"})


def test_respawns_run_on_the_plan_when_the_file_is_broken_or_gone(eng):
    with RawClient.worker(eng.url) as w:
        before = orders_config(w)
        assert {k: before[k] for k in ORDERS} == ORDERS
        ok(w.call_when_found("state::set", {"scope": "plan", "key": "k", "value": {"n": 1}}))

    with open(eng.config_path, "w") as fh:
        fh.write(BROKEN)
    kill_and_wait_running(eng, "queue")
    kill_and_wait_running(eng, "state")
    with RawClient.worker(eng.url) as w:
        assert orders_config(w) == before
        assert ok(w.wait_answered("state::get", {"scope": "plan", "key": "k"})) == {"n": 1}

    os.unlink(eng.config_path)  # a child that opened the file could not start at all
    entry = kill_and_wait_running(eng, "queue")
    assert entry["restarts"] == 2 and entry["last_exit"] == -9
    with RawClient.worker(eng.url) as w:
        assert orders_config(w) == before
    after = status(eng)
    assert not [p for p in after["processes"] if p["state"] != "RUNNING"]
    assert after["plan"]["generation"] == 1
    assert after["plan"]["config"] == os.path.abspath(eng.config_path)


def test_a_respawn_does_not_pick_up_a_changed_valid_file(eng):
    with RawClient.worker(eng.url) as w:
        before = orders_config(w)
    text = open(eng.config_path).read()
    changed = text.replace(json.dumps({"orders": ORDERS}),
                           json.dumps({"orders": CHANGED, "extra": CHANGED}))
    assert changed != text
    with open(eng.config_path, "w") as fh:
        fh.write(changed)
    check = subprocess.run(supervisor_cmd() + ["check", eng.config_path], capture_output=True,
                           text=True, timeout=20, cwd=REPO)
    assert check.returncode == 0, check.stderr  # a valid config: the engine just ignores it

    kill_and_wait_running(eng, "queue")
    with RawClient.worker(eng.url) as w:
        assert orders_config(w) == before
        extra = ok(w.wait_answered("engine::queue::topic_stats", {"topic": "extra"}))
        assert extra["config"] is None  # a plain topic: the edit's queue does not exist
    assert status(eng)["plan"]["generation"] == 1
