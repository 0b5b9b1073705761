"""Which engine spans are kept: ratio sampling, rules by operation and service, parent-based.

workers-b.md §4.6: rules are tried in order and the first match wins; ``operation`` and
``service`` are globs (``*``, ``?``) over the span's name and its service's name (a rule
with ``service`` never matches a span without one); without a match the default ratio is
``sampling.default``, else ``sampling_ratio``, else 1.0. Parent-based (the default): a call
that arrives with a ``traceparent`` follows its sampled flag, so a trace is kept or dropped
whole. ``rate_limit.max_traces_per_second`` caps new root traces with a token bucket.

Pure: the clock is passed in (``now``, seconds) and the random draw is the caller's.
A decision for a span name is computed once and cached (span names are few: one per
function id), so the per-call cost is one dict lookup.
"""
from __future__ import annotations

import fnmatch
import re
from typing import Any, Mapping


def _glob(pattern: Any) -> re.Pattern[str] | None:
    return re.compile(fnmatch.translate(pattern)) if isinstance(pattern, str) else None


class Sampler:
    """Sampling settings of one process (from the observability config, shared to all)."""

    __slots__ = ("default", "rules", "parent_based", "rate", "_tokens", "_at", "_cache")

    def __init__(self, ratio: float = 1.0, rules: list[Mapping[str, Any]] | None = None,
                 parent_based: bool = True, max_traces_per_second: float | None = None) -> None:
        self.default = min(1.0, max(0.0, float(ratio)))
        self.rules = [(_glob(r.get("operation")), _glob(r.get("service")), min(1.0, max(0.0, float(r.get("rate", 1.0)))))
                      for r in rules or ()]
        self.parent_based = parent_based
        self.rate = max_traces_per_second
        self._tokens = float(max_traces_per_second or 0)
        self._at = 0.0
        self._cache: dict[tuple[str, str | None], float] = {}

    @property
    def always(self) -> bool:
        """Every root is kept: no draw needed (the default, ratio 1.0 and no rules)."""
        return self.default >= 1.0 and not self.rules and self.rate is None

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None) -> Sampler:
        """The sampler of the observability config's ``sampling_ratio`` and ``sampling``."""
        settings = settings or {}
        sampling = settings.get("sampling") or {}
        ratio = sampling.get("default", settings.get("sampling_ratio", 1.0))
        limit = (sampling.get("rate_limit") or {}).get("max_traces_per_second")
        return cls(1.0 if ratio is None else ratio, sampling.get("rules"),
                   sampling.get("parent_based", True), limit)

    def ratio(self, name: str, service: str | None = "iii") -> float:
        """The ratio for a new root span named ``name`` of ``service``."""
        key = (name, service)
        ratio = self._cache.get(key)
        if ratio is None:
            ratio = self.default
            for operation, svc, rate in self.rules:
                if operation is not None and not operation.match(name):
                    continue
                if svc is not None and (service is None or not svc.match(service)):
                    continue
                ratio = rate
                break
            self._cache[key] = ratio
        return ratio

    def root(self, name: str, draw: float, now: float, service: str | None = "iii") -> bool:
        """Whether a new root trace starting with span ``name`` is kept; ``draw`` is a
        uniform random number in [0, 1)."""
        ratio = self.ratio(name, service)
        if ratio < 1.0 and draw >= ratio:
            return False
        if self.rate is None:
            return True
        self._tokens = min(float(self.rate), self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True
