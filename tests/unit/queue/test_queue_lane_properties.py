"""Random outcome sequences against QueueCore: no job lost or duplicated while live, at
most ``concurrency`` in flight, at most one per FIFO group, FIFO order kept per group."""
from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from brokers.queue.config import parse
from brokers.queue.core import QueueCore
from brokers.queue.inputs import EnqueueRequest


@settings(max_examples=150, deadline=None)
@given(fifo=st.booleans(), concurrency=st.integers(1, 4),
       groups=st.lists(st.integers(0, 2), min_size=1, max_size=12),
       outcomes=st.lists(st.booleans(), min_size=60, max_size=60))
def test_random_outcomes_keep_invariants(fifo, concurrency, groups, outcomes) -> None:
    qcfg = {"concurrency": concurrency, "max_retries": 3, "backoff_ms": 10}
    if fifo:
        qcfg.update(type="fifo", message_group_field="g")
    ids = itertools.count()
    core = QueueCore(parse({"queue_configs": {"q": qcfg}}, "w")["queue_configs"],
                     new_id=lambda: f"j{next(ids)}")
    for i, g in enumerate(groups):
        core.enqueue(EnqueueRequest("q", "f", {"g": g, "i": i}, "r"), 0)
    finished: list[dict] = []
    """Every job that left the queue (acked or moved to the DLQ), in that order."""
    leased: dict[str, dict] = {}
    now, step = 0, iter(outcomes * 10)
    for _ in range(400):
        for d in core.poll(now).deliveries:
            assert d.job.id not in leased
            leased[d.job.id] = d.job.data
        assert len(leased) <= concurrency
        if fifo:
            in_flight = [data["g"] for data in leased.values()]
            assert len(in_flight) == len(set(in_flight))
        if not leased:
            wake = core.poll(now).wake_at
            if wake is None:
                break
            now = wake
            continue
        jid = sorted(leased)[0]
        data = leased.pop(jid)
        if next(step):
            assert core.succeeded(jid, now)
            finished.append(data)
        elif core.failed(jid, "x", now).failed_at is not None:
            finished.append(data)
        now += 3
    assert not leased
    assert sorted(d["i"] for d in finished) == list(range(len(groups)))  # none lost or doubled
    if fifo:
        for g in set(groups):
            # a group's jobs leave (acked or DLQ) strictly in enqueue order
            order = [d["i"] for d in finished if d["g"] == g]
            assert order == sorted(order)
