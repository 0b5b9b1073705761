"""The worker's own gauges (``b"MTRC"`` frames; names of workers-b.md §4.3):
``iii.worker.memory.rss.bytes``, ``iii.worker.cpu.percent`` (process CPU time over wall
time since the previous sample, 100 = one core), ``iii.worker.event_loop.lag.ms`` (the
largest delay of the SDK loop's 1 s probe since the previous sample) and
``iii.worker.uptime.seconds``.

Invariants: no clock of its own (the caller passes monotonic seconds, process CPU seconds
and the wall time in ns); reading RSS never raises (``/proc/self/statm`` on Linux, else
``getrusage``'s peak, else 0); no psutil needed.
"""
from __future__ import annotations

import os
import sys
from typing import Any

from sdk import otlp


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)
    except Exception:
        return 0


class WorkerMetrics:
    def __init__(self, start: float, cpu_s: float) -> None:
        self.start = start
        self._prev = (start, cpu_s)
        self._lag_ms = 0.0

    def lag(self, ms: float) -> None:
        """Record one loop-lag probe (kept: the largest since the last sample)."""
        self._lag_ms = max(self._lag_ms, ms)

    def sample(self, now: float, cpu_s: float, now_ns: int, attrs: dict[str, Any] | None = None,
               rss: int | None = None) -> list[dict[str, Any]]:
        prev_now, prev_cpu = self._prev
        wall = now - prev_now
        cpu_pct = max(0.0, (cpu_s - prev_cpu) / wall * 100.0) if wall > 0 else 0.0
        self._prev = (now, cpu_s)
        lag, self._lag_ms = self._lag_ms, 0.0
        return [
            otlp.gauge("iii.worker.memory.rss.bytes", rss_bytes() if rss is None else rss, "By",
                       "Resident set size of the worker process", now_ns, attrs),
            otlp.gauge("iii.worker.cpu.percent", cpu_pct, "%",
                       "Process CPU time over wall time since the previous sample", now_ns, attrs),
            otlp.gauge("iii.worker.event_loop.lag.ms", max(0.0, lag), "ms",
                       "Largest SDK event loop delay since the previous sample", now_ns, attrs),
            otlp.gauge("iii.worker.uptime.seconds", max(0.0, now - self.start), "s",
                       "Seconds since the worker started", now_ns, attrs),
        ]
