"""Jobs for a function nobody registered (issue 9, item 7): the once-per-(queue, function)
warning, ``topic_stats.missing_functions``, and ``topic_stats.config`` of a named queue.

The retry semantics themselves (a missing function is a failed attempt, then the DLQ, as
in the reference) are pinned in test_queue_core.py."""
from __future__ import annotations

import itertools

from brokers.queue import inspect
from brokers.queue.config import parse
from brokers.queue.core import QueueCore
from brokers.queue.inputs import EnqueueRequest
from brokers.queue.missing import MissingFunctions, warning
from brokers.queue.topics import parse_subscription

PAYMENT = {"payment": {"max_retries": 10, "concurrency": 2, "type": "fifo",
                       "message_group_field": "transaction_id"}}


def make_core(queues: dict | None = None) -> QueueCore:
    ids = itertools.count(1)
    return QueueCore(parse({"queue_configs": queues or {}}, "w")["queue_configs"], new_id=lambda: f"j{next(ids)}")


def enqueue(core: QueueCore, queue: str, fn: str, data=None, ns: str = "default"):
    return core.enqueue(EnqueueRequest(queue=queue, function_id=fn, data=data or {"transaction_id": "t"},
                                       message_id="r", namespace=ns), 0)


def test_topic_stats_of_a_named_queue_answers_its_effective_config() -> None:
    # Deliberately not the reference, which answers ``config: null`` for every name
    # (workers-b §1.6): a named queue's config is the first thing a user wants to check.
    core = make_core(PAYMENT)
    assert inspect.topic_stats(core, "payment")["config"] == {
        "max_retries": 10, "concurrency": 2, "type": "fifo", "message_group_field": "transaction_id",
        "backoff_ms": 1000, "poll_interval_ms": 100, "max_priority": None, "priority_field": None}
    assert inspect.topic_stats(core, "default")["config"]["type"] == "standard"  # defaults filled in
    stats = inspect.topic_stats(core, "payment")
    stats["config"]["concurrency"] = 99  # a copy: the answer cannot change the queue
    assert core.configs["payment"]["concurrency"] == 2


def test_topic_stats_of_a_topic_keeps_config_null_and_the_spec_fields() -> None:
    core = make_core()
    core.subscribe(parse_subscription("t1", "f", "default", {"topic": "events"}))
    stats = inspect.topic_stats(core, "events")
    assert stats == {"depth": 0, "consumer_count": 1, "dlq_depth": 0, "config": None, "missing_functions": []}


def test_missing_functions_lists_unregistered_targets_of_live_jobs_with_counts() -> None:
    core = make_core(PAYMENT)
    for _ in range(3):
        enqueue(core, "payment", "orders::process-order")
    enqueue(core, "payment", "orders::refund", ns="billing")
    enqueue(core, "payment", "orders::audit")
    registered = {("default", "orders::audit")}
    stats = inspect.topic_stats(core, "payment", lambda ns, fid: (ns, fid) in registered)
    assert stats["depth"] == 5
    assert stats["missing_functions"] == [
        {"function_id": "orders::process-order", "namespace": "default", "jobs": 3},
        {"function_id": "orders::refund", "namespace": "billing", "jobs": 1}]



def test_jobs_in_the_dlq_wait_for_nothing() -> None:
    core = make_core({"q": {"max_retries": 1}})
    job = enqueue(core, "q", "no::such")
    assert inspect.topic_stats(core, "q", lambda ns, fid: False)["missing_functions"][0]["jobs"] == 1
    [d] = core.poll(0).deliveries
    core.failed(d.job.id, "function_not_found: x", 0)
    stats = inspect.topic_stats(core, "q", lambda ns, fid: False)
    assert (stats["dlq_depth"], stats["missing_functions"]) == (1, []) and job.failed_at == 0


def test_a_miss_is_news_once_per_queue_and_function_until_it_is_routed_again() -> None:
    seen = MissingFunctions()
    assert seen.missed("__fn_queue::payment", "default", "orders::process-order")
    assert not seen.missed("__fn_queue::payment", "default", "orders::process-order")
    assert seen.missed("__fn_queue::default", "default", "orders::process-order")  # another queue
    assert seen.missed("__fn_queue::payment", "billing", "orders::process-order")  # another namespace
    seen.routed(lambda ns, fid: False)  # still nowhere: nothing re-armed
    assert not seen.missed("__fn_queue::payment", "default", "orders::process-order")
    seen.routed(lambda ns, fid: ns == "default")  # it registered...
    assert seen.missed("__fn_queue::payment", "default", "orders::process-order")  # ...and went away
    assert not seen.missed("__fn_queue::payment", "billing", "orders::process-order")


def test_the_warning_says_what_happens_to_the_jobs_and_how_many_are_stored() -> None:
    core = make_core(PAYMENT)
    for _ in range(2):
        job = enqueue(core, "payment", "orders::process-order")
    line = warning(core.lanes[job.lane], "default", "orders::process-order")
    assert line == (
        "queue 'payment': function 'orders::process-order' is not registered; its jobs fail with "
        "function_not_found, are retried (at most 10 attempts, backoff from 1000 ms) and then go to "
        "the DLQ; in this FIFO queue its message group waits behind it; register the function, and "
        "redrive the DLQ (iii::queue::redrive) for jobs that got there (2 stored)")
    core.subscribe(parse_subscription("t1", "mail::send", "orders", {"topic": "signup"}))
    [copy] = core.publish("signup", {}, 0)
    line = warning(core.lanes[copy.lane], "orders", "mail::send")
    assert line.startswith("topic 'signup': function 'mail::send' in namespace 'orders' is not registered")
    assert "at most 3 attempts" in line and "FIFO" not in line and line.endswith("(1 stored)")
