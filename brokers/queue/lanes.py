"""One internal queue ("lane"): which of its jobs may be handed out, and when.

A lane holds its live jobs (ready, delayed for a retry, or leased to a consumer) and its
DLQ. Pure data structure: time is passed in, nothing is persisted here (core.py records
the writes).

Standard lane: ready jobs go out oldest ``seq`` first (a retry keeps its original ``seq``,
so when it is due it goes before newer jobs), at most ``concurrency`` leased at once.

FIFO lane: jobs are split into message groups (``Job.group_id``; a lane without a group
field is one group). Only the head of a group may be leased, so a group has at most one
job in flight and a failing head blocks its group until it succeeds or goes to the DLQ
(retry "inline"); different groups run in parallel up to ``concurrency``. The ready group
whose head is oldest goes first.

Invariants: a live job is in exactly one of ``_ready`` (standard), a group deque (FIFO),
``_delayed`` or ``_leased``; ``_delayed``/``_ready``/``_ready_groups`` are heaps that may hold
stale entries, which are skipped lazily (cheaper than deleting from a heap).
"""
from __future__ import annotations

import heapq
from collections import deque

from brokers.queue.jobs import Job


class Lane:
    """Scheduling state of one named queue or one durable-topic subscriber."""

    def __init__(self, key: str, *, name: str, topic: str | None, fifo: bool,
                 concurrency: int, max_attempts: int, backoff_ms: int,
                 group_field: str | None = None, active: bool = True) -> None:
        self.key = key
        self.name = name
        """Display name: the queue name, or the topic for a subscriber lane."""
        self.topic = topic
        self.fifo = fifo
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.backoff_ms = backoff_ms
        self.group_field = group_field
        self.active = active
        """False for a subscriber lane nobody subscribes to (its jobs wait, persisted)."""
        self.condition_function_id: str | None = None
        self.jobs: dict[str, Job] = {}
        self.dlq: dict[str, Job] = {}
        self._leased: set[str] = set()
        self._ready: list[tuple[int, str]] = []
        self._delayed: list[tuple[int, int, str]] = []
        self._groups: dict[str | None, deque[str]] = {}
        self._ready_groups: list[tuple[int, str | None]] = []

    # -- state changes -------------------------------------------------------------
    def add(self, job: Job, now: int) -> None:
        """A new, restored or redriven live job."""
        self.jobs[job.id] = job
        if job.process_at is not None and job.process_at <= now:
            job.process_at = None
        if self.fifo:
            group = self._groups.setdefault(job.group_id, deque())
            group.append(job.id)
            if len(group) == 1:
                self._head_changed(job.group_id, now)
        elif job.process_at is not None and job.process_at > now:
            heapq.heappush(self._delayed, (job.process_at, job.seq, job.id))
        else:
            heapq.heappush(self._ready, (job.seq, job.id))

    def take(self, now: int, max_seq: int | None = None) -> list[Job]:
        """Lease every job that may go out now; returns them oldest first.

        ``max_seq``: only jobs with ``seq <= max_seq`` (the durable ones, see core.poll).
        Both ready heaps are ordered by ``seq``, so the first newer entry ends the pass.
        """
        if not self.active or len(self._leased) >= self.concurrency:
            return []
        self._release_due(now)
        out: list[Job] = []
        heap = self._ready_groups if self.fifo else self._ready
        while heap and len(self._leased) < self.concurrency:
            if max_seq is not None and heap[0][0] > max_seq:
                break
            if self.fifo:
                seq, gid = heapq.heappop(heap)
                group = self._groups.get(gid)
                if not group:
                    continue
                job = self.jobs[group[0]]
                if job.seq != seq or job.id in self._leased:
                    continue  # stale entry
            else:
                _, jid = heapq.heappop(heap)
                job = self.jobs.get(jid)
                if job is None or jid in self._leased:
                    continue
            self._leased.add(job.id)
            out.append(job)
        return out

    def ack(self, job_id: str, now: int) -> Job | None:
        """The leased job succeeded: forget it. Returns it, or None if unknown."""
        if job_id not in self._leased:
            return None
        self._leased.discard(job_id)
        job = self.jobs.pop(job_id)
        self._pop_head(job, now)
        return job

    def nack(self, job_id: str, error: str, now: int) -> Job | None:
        """The leased job failed: schedule its retry or move it to the DLQ.

        Returns the changed job (``failed_at`` set when it went to the DLQ), or None.
        """
        if job_id not in self._leased:
            return None
        self._leased.discard(job_id)
        job = self.jobs[job_id]
        job.attempts_made += 1
        job.max_attempts = self.max_attempts  # the lane's current budget decides (§1.5)
        job.error = error
        if job.attempts_made >= self.max_attempts:
            del self.jobs[job_id]
            job.failed_at = now
            job.process_at = None
            self.dlq[job_id] = job
            self._pop_head(job, now)
            return job
        job.process_at = now + self.backoff_ms * 2 ** (job.attempts_made - 1)
        if self.fifo:
            self._head_changed(job.group_id, now)  # same head, now delayed: group blocked
        else:
            heapq.heappush(self._delayed, (job.process_at, job.seq, job.id))
        return job

    def release(self, job_id: str, now: int) -> bool:
        """Return a leased job to ready without counting an attempt (outcome unknown)."""
        if job_id not in self._leased:
            return False
        self._leased.discard(job_id)
        job = self.jobs[job_id]
        if self.fifo:
            self._head_changed(job.group_id, now)
        else:
            heapq.heappush(self._ready, (job.seq, job.id))
        return True

    def drop(self, job_id: str, now: int) -> bool:
        """Forget a live job that was never stored (its commit failed): as if never added."""
        job = self.jobs.pop(job_id, None)
        if job is None:
            return False
        self._leased.discard(job_id)
        if self.fifo:
            group = self._groups.get(job.group_id)
            if group and job_id in group:
                was_head = group[0] == job_id
                group.remove(job_id)
                if was_head or not group:
                    self._head_changed(job.group_id, now)
        return True  # heap entries of a standard lane go stale and are skipped

    def take_dlq(self, job_id: str) -> Job | None:
        return self.dlq.pop(job_id, None)

    # -- views ---------------------------------------------------------------------
    @property
    def leased(self) -> int:
        return len(self._leased)

    def next_due(self) -> int | None:
        """The earliest retry time still waiting, or None."""
        while self._delayed:
            at, seq, jid = self._delayed[0]
            job = self.jobs.get(jid)
            if job is not None and job.process_at == at and jid not in self._leased:
                return at
            heapq.heappop(self._delayed)
        return None

    def has_ready(self) -> bool:
        return bool(self._ready_groups if self.fifo else self._ready)

    # -- internals -----------------------------------------------------------------
    def _release_due(self, now: int) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            at, seq, jid = heapq.heappop(self._delayed)
            job = self.jobs.get(jid)
            if job is None or job.process_at != at or jid in self._leased:
                continue
            job.process_at = None
            if self.fifo:
                heapq.heappush(self._ready_groups, (job.seq, job.group_id))
            else:
                heapq.heappush(self._ready, (job.seq, job.id))

    def _head_changed(self, gid: str | None, now: int) -> None:
        group = self._groups.get(gid)
        if not group:
            self._groups.pop(gid, None)
            return
        head = self.jobs[group[0]]
        if head.process_at is not None and head.process_at > now:
            heapq.heappush(self._delayed, (head.process_at, head.seq, head.id))
        else:
            head.process_at = None
            heapq.heappush(self._ready_groups, (head.seq, gid))

    def _pop_head(self, job: Job, now: int) -> None:
        if not self.fifo:
            return
        group = self._groups.get(job.group_id)
        if group and group[0] == job.id:
            group.popleft()
            self._head_changed(job.group_id, now)
