"""The quietness guard: how much CPU did processes outside the benchmark use meanwhile?

The machine is shared. For each measurement window we read the system-wide busy CPU time
and the CPU time of our own process tree (this harness, its load generators, the baseline
servers, the supervisor and every engine process it spawned); the difference, divided by
the wall time, is the foreign load in cores (core.foreign_cores). Invariant: a process of
ours that exists only part of the window is not subtracted, so the guard errs towards
calling a run noisy, never towards calling a noisy run quiet.
"""
from __future__ import annotations

import os
import time

import psutil

from . import core


def _busy_seconds() -> float:
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
                 + getattr(t, "steal", 0.0))


def _own_tree() -> dict[int, float]:
    """CPU seconds per pid of this process and all its descendants (reaped children too)."""
    out: dict[int, float] = {}
    me = psutil.Process(os.getpid())
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            out[proc.pid] = t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            continue
    return out


class CpuMeter:
    """start() before a window, stop() after it -> foreign load in cores."""

    def __init__(self) -> None:
        self._t0 = 0.0
        self._busy0 = 0.0
        self._own0: dict[int, float] = {}

    def start(self) -> None:
        self._own0 = _own_tree()
        self._busy0 = _busy_seconds()
        self._t0 = time.monotonic()

    def stop(self) -> float:
        wall = time.monotonic() - self._t0
        busy = _busy_seconds() - self._busy0
        own1 = _own_tree()
        own = sum(own1[pid] - cpu for pid, cpu in self._own0.items() if pid in own1)
        return round(core.foreign_cores(busy, own, wall), 3)
