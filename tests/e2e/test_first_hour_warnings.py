"""The words a user needs in the first hour (issue 9, item 7), read from the real engine's
log: a trigger bound to a type nobody provides (``cron``, not enabled in this config; a typo)
says why it waits, once, and not again when a restarted router gets it replayed; a queued
job for an unregistered function says so once per (queue, function), again after the
function came and went, and ``engine::queue::topic_stats`` shows both what it waits for
and the queue's config.

The engine runs without iii-state in its config, so a ``state`` binding names the line to
add; the queue is the ``payment`` queue of ``conf/iii-config.yaml``.
"""
from __future__ import annotations

import re
import signal
import time
import uuid

import pytest

from tests.harness import PAYMENT_QUEUES, QUEUE_READY, Engine, running_engine
from tests.wsclient import RawClient, fid, ok


@pytest.fixture(scope="module")
def engine():
    with running_engine(queues=PAYMENT_QUEUES, wait_for=QUEUE_READY) as eng:
        yield eng


def log_lines(eng: Engine, needle: str) -> list[str]:
    return [line for line in eng.log_tail(10**8).splitlines() if needle in line]


def wait_log(eng: Engine, needle: str, count: int = 1, within: float = 10.0) -> list[str]:
    """Until at least ``count`` log lines contain ``needle``; returns them."""
    deadline = time.monotonic() + within
    while len(lines := log_lines(eng, needle)) < count:
        assert time.monotonic() < deadline, f"{count} x {needle!r} not logged in {within}s:\n{eng.log_tail()}"
        time.sleep(0.05)
    return lines


def bind(w: RawClient, ttype: str, fn: str) -> str:
    bid = f"{ttype}-{uuid.uuid4().hex[:8]}"
    w.send({"type": "registertrigger", "id": bid, "trigger_type": ttype, "function_id": fn,
            "config": {"expression": "*/5 * * * * *"}})
    return bid


def test_bindings_without_a_provider_say_why_and_a_router_restart_stays_quiet(engine) -> None:
    with RawClient.declared(engine.url, "first-hour") as w:
        cron = bind(w, "cron", "jobs::tick")
        [line] = wait_log(engine, f"trigger '{cron}'")
        assert "WARNING" in line, line
        assert line.endswith(
            f"trigger '{cron}' (type 'cron', function 'jobs::tick') is waiting: no worker provides "
            "trigger type 'cron'; it is provided by the iii-cron worker, which is not enabled in this "
            "config (add '- name: iii-cron' under workers:)")

        state = bind(w, "state", "users::changed")
        [line] = wait_log(engine, f"trigger '{state}'")
        assert line.endswith("it is provided by the iii-state worker, which is not enabled in this "
                             "config (add '- name: iii-state' under workers:)"), line

        # A typo, bound durably through engine::register_trigger.
        typo = ok(w.call("engine::register_trigger", {"trigger_type": "crno", "function_id": "jobs::tick",
                                                      "config": {}}))["id"]
        [line] = wait_log(engine, f"trigger '{typo}'")
        assert line.endswith(f"trigger '{typo}' (type 'crno', function 'jobs::tick') is waiting: no worker "
                             "has registered trigger type 'crno'; it will be delivered when one does "
                             "(did you mean 'cron'?)"), line

        # kill -9 of the router: the gateway replays the live bindings, the router reloads the
        # durable one; all three were reported when they were made, and are not again.
        old = engine.kill("router", signal.SIGKILL)
        engine.wait_running("router", timeout=5, not_pid=old)
        deadline = time.monotonic() + 10
        while True:
            listed = w.call_when_found("engine::registered-triggers::list", {}).get("result") or {}
            ids = {t["id"] for t in listed.get("registered_triggers", [])}
            if {cron, state, typo} <= ids:
                break
            assert time.monotonic() < deadline, f"bindings not back after the restart: {listed}"
            time.sleep(0.1)
        time.sleep(0.5)
        for bid in (cron, state, typo):
            assert len(log_lines(engine, f"trigger '{bid}'")) == 1, engine.log_tail()

        # A new binding after the replay is news again.
        late = bind(w, "cron", "jobs::late")
        wait_log(engine, f"trigger '{late}'")


def test_jobs_for_an_unregistered_function_warn_once_and_topic_stats_says_so(engine) -> None:
    fn = fid("orders::process-order")
    needle = f"queue 'payment': function '{fn}' is not registered"
    with RawClient.declared(engine.url, "producer") as producer:
        for i in range(3):
            ok(producer.call(fn, {"transaction_id": "tx-1", "n": i}, action={"type": "enqueue", "queue": "payment"}))
        [line] = wait_log(engine, needle)
        cfg = PAYMENT_QUEUES["payment"]
        assert "WARNING" in line and (
            f"its jobs fail with function_not_found, are retried (at most {cfg['max_retries']} attempts, "
            f"backoff from {cfg['backoff_ms']} ms) and then go to the DLQ") in line, line
        assert re.search(r"\(\d stored\)$", line), line
        stats = ok(producer.call("engine::queue::topic_stats", {"topic": "payment"}))
        # The spec's fields, and two more: the functions its jobs wait for, and the config
        # (the reference answers config: null; see inspect.py).
        assert stats["depth"] == 3 and stats["consumer_count"] == cfg["concurrency"] and stats["dlq_depth"] == 0
        assert stats["missing_functions"] == [{"function_id": fn, "namespace": "default", "jobs": 3}]
        assert stats["config"] == {**cfg, "poll_interval_ms": 100,
                                   "max_priority": None, "priority_field": None}
        time.sleep(0.5)  # retries keep failing meanwhile: still one line
        assert len(log_lines(engine, needle)) == 1

        # The function shows up: its jobs run. Then it goes away, and the next job warns again.
        with RawClient.declared(engine.url, "orders-worker") as consumer:
            consumer.register_function(fn)
            for _ in range(3):
                consumer.answer(consumer.next_call(fn, timeout=15), {"paid": True})
        ok(producer.call(fn, {"transaction_id": "tx-2"}, action={"type": "enqueue", "queue": "payment"}))
        wait_log(engine, needle, count=2)
        stats = ok(producer.call("engine::queue::topic_stats", {"topic": "payment"}))
        assert stats["missing_functions"] == [{"function_id": fn, "namespace": "default", "jobs": 1}]


def test_topic_stats_of_the_payment_queue_shows_its_config_unlike_the_reference(engine) -> None:
    # Deliberately not the reference's ``config: null`` (workers-b §1.6) for a named queue;
    # a plain topic keeps null.
    with RawClient.declared(engine.url, "inspector") as w:
        payment = ok(w.call("engine::queue::topic_stats", {"topic": "payment"}))["config"]
        assert payment["type"] == "fifo" and payment["message_group_field"] == "transaction_id"
        assert payment["max_retries"] == 10 and payment["concurrency"] == 2
        assert ok(w.call("engine::queue::topic_stats", {"topic": fid("no.such.topic")}))["config"] is None
