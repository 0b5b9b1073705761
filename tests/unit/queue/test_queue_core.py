"""QueueCore with plain values: retries, backoff, DLQ, redrive, FIFO, fan-out, recovery."""
from __future__ import annotations

import itertools

import pytest

from brokers.queue import inspect
from brokers.queue.config import parse
from brokers.queue.core import QueueCore
from brokers.queue.inputs import EnqueueRequest
from brokers.queue.jobs import Job
from brokers.queue.topics import parse_subscription
from brokers.kit.errors import EngineError


def make_core(queues: dict | None = None) -> QueueCore:
    ids = itertools.count(1)
    cfg = parse({"queue_configs": queues or {}}, "w")
    return QueueCore(cfg["queue_configs"], new_id=lambda: f"j{next(ids)}")


def req(queue: str, data, fn: str = "svc::fn", receipt: str = "r") -> EnqueueRequest:
    return EnqueueRequest(queue=queue, function_id=fn, data=data, message_id=receipt)


def delivered(core: QueueCore, now: int) -> list[Job]:
    core.take_writes()  # the shell commits before delivering
    return [d.job for d in core.poll(now).deliveries]


def test_enqueue_unknown_queue_and_fifo_group_field() -> None:
    core = make_core({"payment": {"type": "fifo", "message_group_field": "tx"}})
    with pytest.raises(EngineError) as err:
        core.enqueue(req("nope", {}), 0)
    assert err.value.code == "enqueue_error" and "'nope' not found" in err.value.message
    with pytest.raises(EngineError) as err:
        core.enqueue(req("payment", {"amount": 1}), 0)
    assert err.value.code == "enqueue_error" and "requires field 'tx'" in err.value.message
    with pytest.raises(EngineError) as err:
        core.enqueue(req("payment", {"tx": None}), 0)
    assert "must not be null" in err.value.message
    job = core.enqueue(req("payment", {"tx": "a"}, receipt="rcpt"), 0)
    assert job.message_id == "rcpt" and job.group_id == "a"
    assert core.take_writes() == [(job.id, job)]


def test_success_removes_the_job() -> None:
    core = make_core()
    job = core.enqueue(req("default", {"x": 1}), 0)
    [got] = delivered(core, 0)
    assert got.id == job.id and got.data == {"x": 1}
    assert delivered(core, 0) == []  # leased, not handed out twice
    assert core.succeeded(job.id, 5)
    assert core.take_writes() == [(job.id, None)]
    assert inspect.topic_stats(core, "default")["depth"] == 0


def test_retries_with_exponential_backoff_then_dlq() -> None:
    core = make_core({"orders": {"max_retries": 4, "backoff_ms": 50}})
    job = core.enqueue(req("orders", {"n": 1}), 1000)
    times = []
    now = 1000
    for _ in range(4):
        poll = core.poll(now)
        assert [d.job.id for d in poll.deliveries] == [job.id]
        times.append(now)
        core.failed(job.id, "invocation_failed: boom", now)
        wake = core.poll(now).wake_at
        if wake is None:
            break
        assert core.poll(wake - 1).deliveries == []  # not before its time
        now = wake
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps == [50, 100, 200]
    assert len(times) == 4
    [entry] = inspect.dlq_messages(core, "orders")
    assert entry["id"] == job.id and entry["payload"] == {"n": 1} and entry["retries"] == 4
    assert entry["error"] == "invocation_failed: boom" and entry["failed_at"] == 1
    assert job.dlq_view()["job"]["max_attempts"] == 4
    stats = inspect.topic_stats(core, "orders")
    assert (stats["depth"], stats["consumer_count"], stats["dlq_depth"]) == (0, 10, 1)


def test_max_retries_zero_means_one_attempt() -> None:
    core = make_core({"once": {"max_retries": 0}})
    job = core.enqueue(req("once", 1), 0)
    delivered(core, 0)
    moved = core.failed(job.id, "x", 0)
    assert moved is not None and moved.failed_at == 0 and moved.attempts_made == 1
    assert core.poll(10**9).deliveries == []


def test_missing_target_function_retries_then_dlq_without_blocking_others() -> None:
    core = make_core({"q": {"max_retries": 2, "backoff_ms": 10, "concurrency": 1}})
    ghost = core.enqueue(req("q", 1, fn="no::such"), 0)
    other = core.enqueue(req("q", 2, fn="svc::ok"), 0)
    [first] = delivered(core, 0)
    assert first.id == ghost.id
    core.failed(ghost.id, "function_not_found: Function no::such not found", 0)
    [nxt] = delivered(core, 0)  # the other job is not blocked by the retry (standard)
    assert nxt.id == other.id
    core.succeeded(other.id, 1)
    [again] = delivered(core, 10)
    assert again.id == ghost.id
    assert core.failed(ghost.id, "function_not_found: x", 10).failed_at == 10
    assert [m["id"] for m in inspect.dlq_messages(core, "q")] == [ghost.id]


def test_concurrency_limit() -> None:
    core = make_core({"q": {"concurrency": 3}})
    jobs = [core.enqueue(req("q", i), 0) for i in range(5)]
    assert [j.id for j in delivered(core, 0)] == [j.id for j in jobs[:3]]
    assert delivered(core, 0) == []
    core.succeeded(jobs[0].id, 1)
    assert [j.id for j in delivered(core, 1)] == [jobs[3].id]


def test_fifo_order_within_group_under_failures_groups_in_parallel() -> None:
    core = make_core({"pay": {"type": "fifo", "message_group_field": "g", "concurrency": 5,
                              "backoff_ms": 100, "max_retries": 3}})
    for seq in range(3):
        for group in ("a", "b"):
            core.enqueue(req("pay", {"g": group, "seq": seq}), 0)
    processed: dict[str, list[int]] = {"a": [], "b": []}
    fail_once = {("a", 0)}
    now = 0
    for _ in range(20):
        batch = delivered(core, now)
        # at most one job per group in flight: groups run in parallel, never a group twice
        assert len({j.data["g"] for j in batch}) == len(batch)
        for job in batch:
            key = (job.data["g"], job.data["seq"])
            if key in fail_once:
                fail_once.discard(key)
                core.failed(job.id, "boom", now)
            else:
                processed[job.data["g"]].append(job.data["seq"])
                core.succeeded(job.id, now)
        if not batch:
            wake = core.poll(now).wake_at
            if wake is None:
                break
            now = wake
    # the failing head blocked group a (no overtaking by a1/a2), group b went on
    assert processed == {"a": [0, 1, 2], "b": [0, 1, 2]}


def test_fifo_failing_head_goes_to_dlq_then_group_continues() -> None:
    core = make_core({"pay": {"type": "fifo", "message_group_field": "g", "max_retries": 1}})
    bad = core.enqueue(req("pay", {"g": 1, "seq": 0}), 0)
    good = core.enqueue(req("pay", {"g": 1, "seq": 1}), 0)
    assert [j.id for j in delivered(core, 0)] == [bad.id]
    core.failed(bad.id, "boom", 0)
    assert [j.id for j in delivered(core, 0)] == [good.id]


def test_redrive_resets_attempts_and_redelivers() -> None:
    core = make_core({"orders": {"max_retries": 1}})
    jobs = [core.enqueue(req("orders", i), 0) for i in range(3)]
    for job in delivered(core, 0):
        core.failed(job.id, "x", 0)
    assert inspect.topic_stats(core, "orders")["dlq_depth"] == 3
    assert core.redrive("orders", 5) == 3
    writes = dict(core.take_writes())
    assert all(writes[j.id].attempts_made == 0 and writes[j.id].failed_at is None for j in jobs)
    again = delivered(core, 5)
    assert [j.id for j in again] == [j.id for j in jobs]
    assert core.redrive("orders", 5) == 0


def test_redrive_message_and_discard_message() -> None:
    core = make_core({"q": {"max_retries": 1}})
    a, b = core.enqueue(req("q", "a"), 0), core.enqueue(req("q", "b"), 0)
    for job in delivered(core, 0):
        core.failed(job.id, "x", 0)
    assert core.redrive_message("q", "nope", 1) == 0
    assert core.redrive_message("q", a.id, 1) == 1
    assert core.discard_message("q", b.id) == 1
    assert core.discard_message("q", b.id) == 0
    assert (b.id, None) in core.take_writes()
    assert [j.id for j in delivered(core, 1)] == [a.id]
    assert inspect.topic_stats(core, "q")["dlq_depth"] == 0


def sub(trigger: str, fn: str, topic: str = "orders.created", ns: str = "default", **cfg):
    return parse_subscription(trigger, fn, ns, {"topic": topic, **cfg})


def test_durable_fanout_each_subscriber_own_job_and_retries() -> None:
    core = make_core()
    core.subscribe(sub("t1", "email::send", queue_config={"maxRetries": 0}))
    audit = {"maxRetries": 2, "backoffDelayMs": 10}
    core.subscribe(sub("t2", "audit::log", queue_config=audit))
    core.subscribe(sub("t3", "audit::log", queue_config=audit))  # a replica: shares the lane
    jobs = core.publish("orders.created", {"id": 7}, 0)
    assert sorted(j.function_id for j in jobs) == ["audit::log", "email::send"]
    got = delivered(core, 0)
    assert sorted(j.function_id for j in got) == ["audit::log", "email::send"]
    for job in got:
        core.failed(job.id, "boom", 0)
    # email had 1 attempt -> DLQ; audit retries after 10 ms, 3 attempts in all
    assert [m["payload"] for m in inspect.dlq_messages(core, "orders.created")] == [{"id": 7}]
    [retry] = delivered(core, 10)
    assert retry.function_id == "audit::log" and retry.attempts_made == 1
    topics = inspect.list_topics(core)
    assert {"name": "orders.created", "broker_type": "builtin", "subscriber_count": 3} in topics


def test_unsubscribe_one_of_two_leaves_the_other() -> None:
    core = make_core()
    core.subscribe(sub("t1", "a::fn"))
    core.subscribe(sub("t2", "b::fn"))
    assert core.unsubscribe("t1")
    assert [j.function_id for j in core.publish("orders.created", 1, 0)] == ["b::fn"]
    assert not core.unsubscribe("t1")


def test_publish_without_subscribers_and_topic_without_config() -> None:
    core = make_core()
    assert core.publish("nobody", 1, 0) == []
    assert parse_subscription("t", "f", "default", {}) is None
    with pytest.raises(EngineError) as err:
        parse_subscription("t", "f", "default", {"topic": "x", "queue_config": {"maxRetries": -1}})
    assert err.value.code == "trigger_registration_failed"


def test_subscriber_fifo_retries_inline() -> None:
    core = make_core()
    core.subscribe(sub("t1", "f", queue_config={"type": "fifo", "backoffDelayMs": 5}))
    first, second = core.publish("orders.created", 1, 0), core.publish("orders.created", 2, 0)
    [a] = delivered(core, 0)
    assert a.data == 1
    core.failed(a.id, "x", 0)
    assert delivered(core, 1) == []  # the retry blocks the next message
    assert [j.data for j in delivered(core, 5)] == [1]


def test_restore_makes_leased_jobs_ready_again() -> None:
    core = make_core({"q": {"backoff_ms": 100}})
    a, b, c = (core.enqueue(req("q", i), 0) for i in range(3))
    stored = dict(core.take_writes())
    core.poll(0)  # all three leased, then the broker dies
    core.failed(c.id, "x", 0)
    stored.update(core.take_writes())
    fresh = make_core({"q": {"backoff_ms": 100}})
    fresh.restore([Job.from_record(j.to_record()) for j in stored.values() if j], 10)
    assert [j.id for j in delivered(fresh, 10)] == [a.id, b.id]  # c waits for its retry
    assert [j.id for j in delivered(fresh, 100)] == [c.id]
    new = fresh.enqueue(req("q", 9), 100)
    assert new.seq > c.seq


def test_inspection_shapes() -> None:
    core = make_core({"orders": {}})
    core.subscribe(sub("t1", "f", topic="events"))
    names = {t["name"] for t in inspect.list_topics(core)}
    assert names == {"events", "orders", "default"}
    dlq = {d["topic"]: d for d in inspect.dlq_topics(core)}
    assert set(dlq) == {"orders", "default", "events"}
    assert inspect.topic_stats(core, "events")["consumer_count"] == 1
    assert inspect.dlq_messages(core, "orders") == []


def test_poll_hands_out_only_durable_jobs() -> None:
    core = make_core({"q": {"concurrency": 10}})
    first = core.enqueue(req("q", {"n": 1}), 0)
    durable = core.last_seq  # the shell takes the writes here and commits them
    core.take_writes()
    second = core.enqueue(req("q", {"n": 2}), 0)
    assert [d.job.id for d in core.poll(0, durable).deliveries] == [first.id]
    assert core.poll(0, durable).deliveries == []  # the second waits for its commit
    core.failed(first.id, "boom: x", 0)  # a retry keeps its old seq: still deliverable
    assert [d.job.id for d in core.poll(10**6, durable).deliveries] == [first.id]
    assert [d.job.id for d in core.poll(10**6, core.last_seq).deliveries] == [second.id]


def test_new_uuid4_is_a_random_rfc4122_v4_uuid() -> None:
    import uuid

    from brokers.queue.jobs import new_uuid4

    ids = [new_uuid4() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        u = uuid.UUID(text)
        assert str(u) == text and u.version == 4 and u.variant == uuid.RFC_4122


@pytest.mark.parametrize("fifo", [False, True])
def test_jobs_of_a_failed_commit_never_run_and_the_rest_does(fifo: bool) -> None:
    """An enqueuer told its commit failed must not see its job run once a later commit
    moves the durable mark past it (seen on a full disk)."""
    queues = {"q": {"type": "fifo", "message_group_field": "g"} if fifo else {}}
    core = make_core(queues)
    core.enqueue(req("q", {"g": "a", "n": 0}), 0)
    first = core.take_writes()  # committed
    after = core.last_seq
    core.enqueue(req("q", {"g": "a", "n": 1}), 1)
    core.enqueue(req("q", {"g": "b", "n": 2}), 1)
    failed = core.take_writes()  # this commit fails
    assert core.abandon(failed, after, 2) == 2
    core.enqueue(req("q", {"g": "a", "n": 3}), 3)
    core.take_writes()  # committed: the durable mark passes the abandoned seqs
    assert [j.data["n"] for j in delivered(core, 4)] == ([0] if fifo else [0, 3])
    assert first and core.abandon([], after, 5) == 0
