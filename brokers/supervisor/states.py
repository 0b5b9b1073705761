"""The process states of supervisor(8), which operators already know.

Invariants: a process is in exactly one state; it has a pid only in STARTING, RUNNING and
STOPPING; FATAL is left only by an operator's ``restart``.

    STOPPED   not running, not wanted (before start, or after a requested stop)
    STARTING  spawned, not yet up for ``startsecs``
    RUNNING   up for at least ``startsecs``
    BACKOFF   exited unexpectedly; waiting for its restart time
    STOPPING  asked to stop (SIGTERM sent), waiting for it to exit
    EXITED    exited on its own with code 0 while autorestart is off
    FATAL     kept crashing during ``startsecs`` more than ``startretries`` times, or
              exited with ``EXIT_NO_RETRY``
"""
from __future__ import annotations

import enum

EXIT_NO_RETRY = 3
"""A child's exit code for "I cannot start and trying again would not help" (its port is
taken, its store path is unusable): the supervisor marks it FATAL at once."""


class ProcState(str, enum.Enum):
    """A process's state; the value is its name, so it prints and serialises as itself."""

    STOPPED = "STOPPED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    EXITED = "EXITED"
    FATAL = "FATAL"

    @property
    def alive(self) -> bool:
        """True in the states where an OS process exists."""
        return self in (ProcState.STARTING, ProcState.RUNNING, ProcState.STOPPING)

    def __str__(self) -> str:
        return self.value
