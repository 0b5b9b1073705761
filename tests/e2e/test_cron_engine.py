"""The cron worker in the real engine (``iii-cron`` in the config): a per-second job fires
with the §6.4 payload and waits for its handler, bad bindings get the reference's errors
(over the WebSocket and from ``engine::register_trigger``), and across ``kill -9`` of the
cron process, ``kill -9`` of the router and a whole-engine restart every binding fires again
and no tick fires twice (each delivery's ``scheduled_time`` is seen once).

A raw protocol client plays the worker, so that each delivery and each
``triggerregistrationresult`` is seen as the engine sent it.
"""
from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import signal
import tempfile
import time
from typing import Any, Iterator

import pytest

from tests.harness import Engine, running_engine, start_engine
from tests.wsclient import RawClient, fid, ok

CRON_YAML = "- name: iii-cron\n"
SCHEDULED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$")
ACTUAL = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3}|\.\d{6}|\.\d{9})?\+00:00$")


def wait_cron(url: str, within: float = 10.0) -> None:
    """Until the cron process has registered its trigger type."""
    deadline = time.monotonic() + within
    with RawClient.worker(url) as c:
        while True:
            types = ok(c.call_when_found("engine::triggers::list", {}))["triggers"]
            if any(t["id"] == "cron" for t in types):
                return
            assert time.monotonic() < deadline, f"no cron trigger type: {types}"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with running_engine(extra_workers_yaml=CRON_YAML) as eng:
        wait_cron(eng.url)
        yield eng


def bind(w: RawClient, fn: str, expression: Any, **extra: Any) -> str:
    tid = f"cron-{fn}"
    w.send({"type": "registertrigger", "id": tid, "trigger_type": "cron", "function_id": fn,
            "config": {"expression": expression}, **extra})
    return tid


def deliveries(w: RawClient, fn: str, seconds: float, others: dict[str, list] | None = None) -> list[dict]:
    """Every call of ``fn`` within ``seconds``; every call is answered at once (a cron job
    waits for its answer), those of other functions kept in ``others`` by function id."""
    out, deadline = [], time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            frame = w.recv_until(lambda f: f.get("type") == "invokefunction", timeout=left)
        except TimeoutError:
            break
        w.answer(frame, {"seen": True})
        if frame["function_id"] == fn:
            out.append(frame)
        elif others is not None:
            others.setdefault(frame["function_id"], []).append(frame)
    return out


def ticks(frames: list[dict]) -> list[str]:
    return [f["data"]["scheduled_time"] for f in frames]


def test_a_per_second_job_fires_with_the_payload_and_is_listed(engine: Engine) -> None:
    fn = fid("jobs::tick")
    with RawClient.declared(engine.url, "cron-e2e") as w:
        w.register_function(fn)
        tid = bind(w, fn, "* * * * * *", metadata={"team": "ops"})
        got = deliveries(w, fn, 3.2)
        assert len(got) >= 2, got
        for frame in got:
            data = frame["data"]
            assert list(data) == ["trigger", "job_id", "scheduled_time", "actual_time"]
            assert (data["trigger"], data["job_id"]) == ("cron", tid)
            assert SCHEDULED.match(data["scheduled_time"]) and ACTUAL.match(data["actual_time"]), data
            late = dt.datetime.fromisoformat(data["actual_time"]) - dt.datetime.fromisoformat(data["scheduled_time"])
            assert 0 <= late.total_seconds() < 0.5, data
            assert frame["metadata"] == {"team": "ops"} and frame.get("invocation_id")
        seconds = [dt.datetime.fromisoformat(t).timestamp() for t in ticks(got)]
        assert all(b - a >= 1 for a, b in zip(seconds, seconds[1:])), ticks(got)
        assert not [f for f in w.backlog if f.get("type") == "triggerregistrationresult"], w.backlog
        listed = ok(w.call("engine::registered-triggers::list", {"trigger_type": "cron"}))
        assert {"id": tid, "function_id": fn, "config": {"expression": "* * * * * *"}}.items() <= \
            next(r for r in listed["registered_triggers"] if r["id"] == tid).items()
        info = ok(w.call("engine::registered-triggers::info", {"id": tid}))
        assert info["trigger"]["id"] == "cron" and info["trigger"]["worker_name"] == "iii-cron"


@pytest.mark.parametrize("expression, message", [
    (None, "Cron expression is required"),
    ("", "Cron expression is required"),
    ("*/5 * * * *", "Invalid cron expression '*/5 * * * *': */5 * * * *\n           ^\n"),
    ("0 0 0 * * 0", "Invalid cron expression '0 0 0 * * 0': 0 0 0 * * 0\n          ^\n"
                    "Days of Week must be greater than or equal to 1. ('0' specified.)"),
])
def test_a_bad_binding_is_refused_to_the_worker(engine: Engine, expression, message) -> None:
    fn = fid("jobs::bad")
    with RawClient.declared(engine.url, "cron-bad") as w:
        tid = bind(w, fn, expression)
        answer = w.recv_until(lambda f: f.get("type") == "triggerregistrationresult", 5)
        assert answer == {"type": "triggerregistrationresult", "id": tid, "trigger_type": "cron",
                          "function_id": fn, "error": {"code": "trigger_registration_failed",
                                                       "message": message}}


def test_engine_register_trigger_answers_the_error_and_stores_nothing(engine: Engine) -> None:
    with RawClient.declared(engine.url, "cron-durable-bad") as w:
        frame = w.call("engine::register_trigger", {"trigger_type": "cron", "function_id": "f",
                                                     "config": {"expression": "@every 5s"}})
        assert frame["error"] == {"code": "trigger_registration_failed",
                                  "message": "Invalid cron expression '@every 5s': @every 5s\n^\n"}
        listed = ok(w.call("engine::registered-triggers::list", {"function_id": "f"}))
        assert listed["registered_triggers"] == []


def test_kill_9_of_cron_reschedules_every_binding_and_fires_no_tick_twice(engine: Engine) -> None:
    fn, durable_fn = fid("jobs::live"), fid("jobs::durable")
    with RawClient.declared(engine.url, "cron-kill") as w:
        w.register_function(fn)
        w.register_function(durable_fn)
        bind(w, fn, "* * * * * *")
        did = ok(w.call("engine::register_trigger", {"trigger_type": "cron", "function_id": durable_fn,
                                                     "config": {"expression": "* * * * * *"}}))["id"]
        others: dict[str, list] = {}
        before = deliveries(w, fn, 2.2, others)
        old = engine.kill("cron", signal.SIGKILL)
        engine.wait_running("cron", timeout=5, not_pid=old)
        killed_at = time.time()
        after = deliveries(w, fn, 4.0, others)
        assert before and len(after) >= 2, (ticks(before), ticks(after))
        seen = ticks(before) + ticks(after)
        assert len(seen) == len(set(seen)), seen
        durable = others.get(durable_fn, [])
        assert {f["data"]["job_id"] for f in durable} == {did}
        assert len(ticks(durable)) == len(set(ticks(durable))), ticks(durable)
        restarted = [t for t in ticks(durable) if dt.datetime.fromisoformat(t).timestamp() > killed_at]
        assert len(restarted) >= 2, ticks(durable)  # the durable binding fires in the new process
        ok(w.call("engine::unregister_trigger", {"id": did}))


def test_kill_9_of_the_router_keeps_the_jobs_without_a_refusal_or_a_double_tick(engine: Engine) -> None:
    fn = fid("jobs::router")
    with RawClient.declared(engine.url, "cron-router") as w:
        w.register_function(fn)
        tid = bind(w, fn, "* * * * * *")
        before = deliveries(w, fn, 1.6)
        old = engine.kill("router", signal.SIGKILL)
        engine.wait_running("router", timeout=5, not_pid=old)
        after = deliveries(w, fn, 4.0)
        seen = ticks(before) + ticks(after)
        assert before and len(after) >= 3 and len(seen) == len(set(seen)), seen
        assert not [f for f in w.backlog if f.get("type") == "triggerregistrationresult"], w.backlog
        assert "already registered" not in engine.log_tail(10**7)
        assert f"cron job {tid} dropped" not in engine.log_tail(10**7)


def test_a_whole_engine_restart_fires_a_durable_binding_again_and_no_tick_twice() -> None:
    data_dir = tempfile.mkdtemp(prefix="iii-cron-data-", dir="/tmp")
    os.chmod(data_dir, 0o700)
    config = ("engine:\n  runtime_dir: {runtime_dir}\n  data_dir: " + data_dir + "\n"
              "workers:\n  - name: iii-worker-manager\n    config: {host: 127.0.0.1, port: {port}}\n"
              "  - name: iii-cron\n")
    fn, seen = fid("jobs::restart"), []
    try:
        for life in range(2):
            eng = start_engine(config_text=config)
            try:
                wait_cron(eng.url)
                with RawClient.declared(eng.url, "cron-restart") as w:
                    w.register_function(fn)
                    if life == 0:
                        ok(w.call("engine::register_trigger", {"trigger_type": "cron", "function_id": fn,
                                                               "config": {"expression": "* * * * * *"}}))
                    got = deliveries(w, fn, 2.5)
                    assert got, f"life {life}: no delivery\n{eng.log_tail()}"
                    seen += ticks(got)
            finally:
                eng.stop()
        assert len(seen) == len(set(seen)), seen
        assert os.path.getsize(os.path.join(data_dir, "cron", "fired")) == 16
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
