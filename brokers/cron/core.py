"""Cron jobs and when each fires (workers-a §6.1, §6.3, §6.4): one timer heap for every job.

Pure: time comes in (``now`` in epoch seconds, ``actual_ns`` in epoch nanoseconds); the
shell (``service.py``) arms one timer for ``next_wake()``, takes ``due(now)``, runs the
lock, condition and handler of each returned ``Fire`` and reports ``finished``. Effects are
returned values (the ``Fire`` list), never callbacks.

Scheduling, the reference's loop per job with one heap instead of one task per job (10,000
jobs cost a heap entry each): a job's next time is the first fire time strictly after
"now"; when it is due it leaves the heap until its run has finished (lock, condition,
handler awaited), and only then is its next time computed, again strictly after now. So a
job never overlaps itself, ticks that pass while it runs are skipped (no catch-up, no
queue), and a job late by several ticks fires once.

``floor``: no tick at or before it fires. It is the latest scheduled time this engine has
fired, loaded from disk at start (``store.FiredMark``) and advanced by ``due``; the shell
stores it before invoking. "Strictly after now" alone already keeps a restarted process from
firing a tick twice; the floor also holds when the wall clock steps back (NTP, a restore).

Bindings are keyed by trigger id. The router delivers a binding again when it restarts
(its replay) or when this process re-announces its trigger type: the same binding again is
accepted as it is (the job keeps its schedule and its run). A different binding under a
live id is the reference's ``Cron job '<id>' is already registered``, except during a
replay (``begin_replay``): the restarted router's view replaces ours, and jobs it does not
deliver again within the window are dropped (``sweep``), since their owners went away while
it was down.

Invariants: ``jobs`` holds one ``Job`` per trigger id; a heap entry is live only while its
job is current and its ``seq`` matches (removal and rescheduling leave stale entries that
``next_wake``/``due`` discard); a running job has no live heap entry.
"""
from __future__ import annotations

import datetime as dt
import functools
import heapq
from dataclasses import dataclass, field
from typing import Any

from brokers.cron.grammar import CronSyntaxError
from brokers.cron.schedule import Schedule
from brokers.kit.errors import NOT_FOUND, TRIGGER_REGISTRATION_FAILED, EngineError
from brokers.kit.inputs import STR, Field, Input

TRIGGER_TYPE = "cron"
DESCRIPTION = "Cron-based scheduled triggers"
CONFIG = Input(TRIGGER_TYPE, "CronTriggerConfig",
               Field("expression", STR, description="6 or 7 fields, seconds first, UTC: "
                     "second minute hour day-of-month month day-of-week [year], or @daily ..."),
               Field("condition_function_id", STR, required=False,
                     description="Called with the payload first; JSON false skips the tick"))
"""A binding's config; it is decoded by ``job_spec`` with the reference's own messages
(a missing or non-string expression is "Cron expression is required", not serde's words)."""


@dataclass(frozen=True)
class JobSpec:
    """What a binding asks for."""

    id: str
    function_id: str
    namespace: str
    expression: str
    schedule: Schedule
    condition_function_id: str | None = None
    metadata: Any = None


@dataclass(eq=False)
class Job:
    spec: JobSpec
    next_at: int | None = None
    running: bool = False
    confirmed: bool = True
    """False from ``begin_replay`` until the restarted router delivers it again."""
    seq: int = 0


@dataclass(frozen=True)
class Fire:
    """Run ``job`` for its tick at ``scheduled`` (epoch seconds); report ``finished``."""

    job: Job
    scheduled: int


def job_spec(binding: dict) -> JobSpec:
    """A ``registertrigger`` binding as a job, or the reference's registration error."""
    config = binding.get("config")
    config = config if isinstance(config, dict) else {}
    expression = config.get("expression")
    if not isinstance(expression, str) or not expression:
        raise EngineError(TRIGGER_REGISTRATION_FAILED, "Cron expression is required")
    try:
        schedule = Schedule.parse(expression)
    except CronSyntaxError as exc:
        raise EngineError(TRIGGER_REGISTRATION_FAILED,
                          f"Invalid cron expression '{expression}': {exc}") from None
    condition = config.get("condition_function_id")
    return JobSpec(binding["id"], binding["function_id"], binding.get("namespace") or "default",
                   expression, schedule, condition if isinstance(condition, str) and condition else None,
                   binding.get("metadata"))


class Scheduler:
    """Every cron job of this engine, and one heap of their next times."""

    def __init__(self, floor: int = 0) -> None:
        self.jobs: dict[str, Job] = {}
        self.floor = floor
        self.closed = False
        self._heap: list[tuple[int, int, Job]] = []
        self._seq = 0

    # ---- bindings ----------------------------------------------------------------------

    def add(self, spec: JobSpec, now: float) -> Job:
        """Bind a job (see the module doc for a binding delivered again)."""
        if self.closed:
            raise EngineError(TRIGGER_REGISTRATION_FAILED,
                              "cron scheduler is shutting down; the job was not registered")
        old = self.jobs.get(spec.id)
        if old is not None:
            if old.spec == spec:
                old.confirmed = True
                return old
            if old.confirmed:
                raise EngineError(TRIGGER_REGISTRATION_FAILED, f"Cron job '{spec.id}' is already registered")
        job = Job(spec)
        self.jobs[spec.id] = job  # an old run still going finishes as a stale job
        self._schedule(job, now)
        return job

    def remove(self, job_id: str) -> Job:
        job = self.jobs.pop(job_id, None)
        if job is None:
            raise EngineError(NOT_FOUND, f"Cron job '{job_id}' not found")
        return job

    def begin_replay(self) -> None:
        """The router restarted: every job waits to be delivered again."""
        for job in self.jobs.values():
            job.confirmed = False

    def sweep(self) -> list[str]:
        """End of the replay window: drop the jobs the router did not deliver again."""
        gone = [job_id for job_id, job in self.jobs.items() if not job.confirmed]
        for job_id in gone:
            del self.jobs[job_id]
        return gone

    # ---- time --------------------------------------------------------------------------

    def _schedule(self, job: Job, now: float) -> None:
        job.next_at = job.spec.schedule.next_after(max(now, self.floor))
        if job.next_at is not None:
            self._seq += 1
            job.seq = self._seq
            heapq.heappush(self._heap, (job.next_at, job.seq, job))

    def _live(self, seq: int, job: Job) -> bool:
        return job.seq == seq and not job.running and self.jobs.get(job.spec.id) is job

    def next_wake(self) -> int | None:
        """When the earliest job is due (epoch seconds), or None."""
        heap = self._heap
        while heap and not self._live(heap[0][1], heap[0][2]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def due(self, now: float) -> list[Fire]:
        """Every job due at ``now``, once each, taken off the heap until ``finished``."""
        out: list[Fire] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, seq, job = heapq.heappop(heap)
            if self._live(seq, job):
                job.running, job.next_at = True, None
                out.append(Fire(job, at))
                if at > self.floor:
                    self.floor = at
        return out

    def finished(self, job: Job, now: float) -> None:
        """A job's run is over (or its tick was skipped): schedule its next tick."""
        job.running = False
        if self.jobs.get(job.spec.id) is job:
            self._schedule(job, now)

    def current(self, job: Job) -> bool:
        return self.jobs.get(job.spec.id) is job


# ---- the payload (§6.4) ------------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def _second(secs: int) -> str:
    # every job of one tick shares its scheduled and actual second: format each once
    return dt.datetime.fromtimestamp(secs, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def rfc3339(ns: int) -> str:
    """UTC as chrono's ``to_rfc3339``: ``+00:00``, a fraction only when non-zero, in 3, 6 or
    9 digits (the fewest that hold it)."""
    secs, frac = divmod(ns, 1_000_000_000)
    text = _second(secs)
    if frac == 0:
        return text + "+00:00"
    if frac % 1_000_000 == 0:
        return f"{text}.{frac // 1_000_000:03d}+00:00"
    if frac % 1000 == 0:
        return f"{text}.{frac // 1000:06d}+00:00"
    return f"{text}.{frac:09d}+00:00"


def payload(job_id: str, scheduled: int, actual_ns: int) -> dict[str, Any]:
    """What the target (and the condition) receives."""
    return {"trigger": TRIGGER_TYPE, "job_id": job_id, "scheduled_time": rfc3339(scheduled * 1_000_000_000),
            "actual_time": rfc3339(actual_ns)}


def condition_allows(verdict: Any) -> bool:
    """Only JSON ``false`` skips (workers-a §0); anything else, null included, proceeds."""
    return verdict is not False
