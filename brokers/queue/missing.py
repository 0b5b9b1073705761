"""Jobs whose target function is not registered: one WARNING per (lane, function), and the
``missing_functions`` view of ``engine::queue::topic_stats``.

The semantics stay the reference's (workers-b §1.4, §1.9, and its e2e test "a message for
a nonexistent function is nacked without blocking later messages"): a delivery to a
function nobody registered is a failed attempt (``function_not_found``), retried with
backoff and moved to the DLQ when the attempts are spent. Holding such jobs until the
function appears would instead keep a FIFO group blocked forever behind a typo, and keep
jobs for a retired function out of the DLQ, where an operator looks for them. This module
only makes the wait visible.

Pure: the shell says which (lane, namespace, function) missed and hands in a
``has_route(namespace, function_id)`` predicate; nothing here reads a clock or a socket.

Invariants: ``missed`` is True once per (lane, namespace, function) while that function
stays unregistered; ``routed`` forgets every function that has a route again, so one that
comes and goes is reported each time it goes.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

from brokers.queue.lanes import Lane

HasRoute = Callable[[str, str], bool]
MissKey = tuple[str, str, str]
"""(lane key, namespace, function id)."""


class MissingFunctions:
    """Which (lane, function) pairs have been reported missing."""

    def __init__(self) -> None:
        self._reported: set[MissKey] = set()

    def missed(self, lane_key: str, namespace: str, function_id: str) -> bool:
        """A delivery found no such function; True if this is news (warn now)."""
        key = (lane_key, namespace, function_id)
        if key in self._reported:
            return False
        self._reported.add(key)
        return True

    def routed(self, has_route: HasRoute) -> None:
        """The route table changed: functions that exist again may be reported again."""
        if self._reported:
            self._reported = {k for k in self._reported if not has_route(k[1], k[2])}


def waiting_count(lane: Lane, namespace: str, function_id: str) -> int:
    """Live jobs (ready, retrying or in flight) of ``lane`` for that function."""
    return sum(1 for j in lane.jobs.values() if j.function_id == function_id and j.namespace == namespace)


def warning(lane: Lane, namespace: str, function_id: str) -> str:
    """The line logged when a lane's deliveries start finding no such function."""
    where = f"queue {lane.name!r}" if lane.topic is None else f"topic {lane.topic!r}"
    fn = repr(function_id) + (f" in namespace {namespace!r}" if namespace != "default" else "")
    fifo = "; in this FIFO queue its message group waits behind it" if lane.fifo else ""
    return (f"{where}: function {fn} is not registered; its jobs fail with function_not_found, "
            f"are retried (at most {max(lane.max_attempts, 1)} attempts, backoff from {lane.backoff_ms} ms) "
            f"and then go to the DLQ{fifo}; register the function, and redrive the DLQ "
            f"(iii::queue::redrive) for jobs that got there "
            f"({waiting_count(lane, namespace, function_id)} stored)")


def missing_functions(lanes: Iterable[Lane], has_route: HasRoute) -> list[dict[str, Any]]:
    """Functions that live jobs of ``lanes`` wait for and that are not registered now,
    with how many jobs each (DLQ entries are counted by ``dlq_depth``, not here)."""
    counts: dict[tuple[str, str], int] = {}
    for lane in lanes:
        for job in lane.jobs.values():
            key = (job.function_id, job.namespace)
            counts[key] = counts.get(key, 0) + 1
    return [{"function_id": fid, "namespace": ns, "jobs": n}
            for (fid, ns), n in sorted(counts.items()) if not has_route(ns, fid)]
