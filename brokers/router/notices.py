"""Why a trigger binding waits: the WARNING a user reads when a binding is parked.

Owns: which built-in worker provides each built-in trigger type (workers-a §1.4), the
text that says why a parked binding waits (this engine lacks that worker; the config does
not enable it; it is enabled but has not registered the type yet; nobody registered the
type, with a did-you-mean; the type lives in another namespace), the quiet windows of
peers replaying to a restarted router, and a per-trigger-type throttle.

Pure: time comes in as ``now`` (monotonic seconds); methods return the lines to log and
the shell (``service.py``) logs them.

Invariants:
  * a binding replayed to a restarted router yields no line: it was reported when the
    user bound it. A peer's replay runs from its answer to our HELLO to its ACK request
    (the empty UP of ``frames.ACK``), at most ``REPLAY_WINDOW_S``; the router's own
    durable store is loaded before the shell listens to ``Registry.on_parked``;
  * at most one line per trigger type every ``WARN_INTERVAL_S``: the bindings of that type
    parked meanwhile are counted, and one summary line names how many still wait when the
    window ends (none if they have all been delivered by then). A worker that binds fifty
    ``http`` routes before iii-http exists, or a gateway restart after which every SDK
    binds again, makes two lines, not fifty.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Collection, Iterable

from brokers.router.core import Binding, Key, Registry

WARN_INTERVAL_S = 60.0
REPLAY_WINDOW_S = 10.0

# Config names of the built-in workers (workers-a §1.4).
TRIGGER_TYPE_WORKERS = {
    "http": "iii-http", "cron": "iii-cron", "state": "iii-state",
    "stream": "iii-stream", "stream:join": "iii-stream", "stream:leave": "iii-stream",
    "subscribe": "iii-pubsub", "durable:subscriber": "iii-queue",
    "log": "iii-observability", "trace": "iii-observability",
    "configuration": "configuration",
    "engine::functions-available": "iii-engine-functions",
    "engine::workers-available": "iii-engine-functions",
}


def q(value: object) -> str:
    """A user-given name quoted for a log line: control characters escaped, long ones cut."""
    text = str(value)
    return repr(text if len(text) <= 120 else text[:117] + "...")


def worker_sets(units: Iterable, entries: Iterable) -> tuple[frozenset[str], frozenset[str]]:
    """(worker names this engine has a unit for, worker names the config runs).

    ``units``: ``brokers.kit.units.Unit`` values (``discover()``); ``entries``: the config's
    ``WorkerEntry`` list. Units marked ``always`` run whatever the config says.
    """
    units = list(units)
    have = frozenset(w for u in units for w in u.worker_names)
    enabled = {w for u in units if u.always for w in u.worker_names}
    enabled.update(w for e in entries if e.unit is not None for w in e.unit.worker_names)
    return have, frozenset(enabled)


def why_waiting(binding: Binding, registered: Collection[Key], have: Collection[str],
                enabled: Collection[str]) -> str:
    """Why ``binding`` has no provider, and what would give it one."""
    ttype = binding.trigger_type
    elsewhere = sorted({ns for ns, tid in registered if tid == ttype})
    if elsewhere:
        looked = [binding.trigger_ns] if binding.trigger_ns is not None else \
            list(dict.fromkeys([binding.home_ns, "default"]))
        return (f"trigger type {q(ttype)} is registered in namespace "
                f"{', '.join(q(ns) for ns in elsewhere)}, not in {' or '.join(q(ns) for ns in looked)}; "
                f"it will be delivered when a worker registers it there")
    worker = TRIGGER_TYPE_WORKERS.get(ttype)
    if worker is None:
        text = f"no worker has registered trigger type {q(ttype)}; it will be delivered when one does"
        guess = difflib.get_close_matches(ttype, sorted(set(TRIGGER_TYPE_WORKERS) | {t for _, t in registered}),
                                          n=1, cutoff=0.6)
        return text + (f" (did you mean {q(guess[0])}?)" if guess else "")
    text = f"no worker provides trigger type {q(ttype)}; it is provided by the {worker} worker, "
    if worker not in have:
        text += "which this engine does not have yet"
    elif worker not in enabled:
        text += f"which is not enabled in this config (add '- name: {worker}' under workers:)"
    else:
        text += "which is enabled but has not registered it yet (starting or restarting?); " \
                "it will be delivered when it does"
    if binding.trigger_ns not in (None, "default"):
        text += f"; note that {worker} registers it in namespace 'default', not {q(binding.trigger_ns)}"
    return text


def parked_line(binding: Binding, reason: str) -> str:
    where = f" in namespace {q(binding.target_ns)}" if binding.target_ns != "default" else ""
    return (f"trigger {q(binding.id)} (type {q(binding.trigger_type)}, function "
            f"{q(binding.function_id)}{where}) is waiting: {reason}")


@dataclass
class _Window:
    ends_at: float
    held: list[Binding] = field(default_factory=list)
    """Bindings parked after the window's first line, reported at its end."""


class ParkedNotices:
    """Decides which parked bindings get a line, and writes it."""

    def __init__(self, have: Collection[str], enabled: Collection[str], *,
                 interval: float = WARN_INTERVAL_S, replay_window: float = REPLAY_WINDOW_S) -> None:
        self.have, self.enabled = have, enabled
        self.interval, self.replay_window = interval, replay_window
        self._replaying: dict[str, float] = {}
        """peer node -> end of its replay window."""
        self._windows: dict[str, _Window] = {}

    # ---- replays to a restarted router -------------------------------------------------

    def replaying(self, node: str, now: float) -> None:
        """``node`` answered our HELLO: the registrations that follow are its replay."""
        self._replaying[node] = now + self.replay_window

    def replayed(self, node: str) -> None:
        """``node`` asked for its ACK: its replay is over, what follows is new."""
        self._replaying.pop(node, None)

    def _quiet(self, node: str | None, now: float) -> bool:
        end = self._replaying.get(node) if node is not None else None
        if end is not None and now >= end:
            del self._replaying[node]  # type: ignore[arg-type]
            return False
        return end is not None

    # ---- lines -------------------------------------------------------------------------

    def parked(self, binding: Binding, source: str | None, reg: Registry, now: float) -> list[str]:
        """A binding from ``source`` (a peer node; None for ``engine::register_trigger``)
        was just parked in ``reg``: the lines to log now (none during a replay or while
        its type's window is open)."""
        if self._quiet(source, now):
            return []
        lines = self.due(now, reg)
        window = self._windows.get(binding.trigger_type)
        if window is not None:
            window.held.append(binding)
            return lines
        self._windows[binding.trigger_type] = _Window(now + self.interval)
        lines.append(parked_line(binding, why_waiting(binding, reg.trigger_types.keys(), self.have, self.enabled)))
        return lines

    def due(self, now: float, reg: Registry) -> list[str]:
        """Summary lines of the windows that have ended by ``now``."""
        lines: list[str] = []
        for ttype, window in list(self._windows.items()):
            if now >= window.ends_at:
                del self._windows[ttype]
                lines += self._close(ttype, window, reg)
        return lines

    def next_due(self) -> float | None:
        """When ``due`` has a summary to write (a window holding bindings ends)."""
        ends = [w.ends_at for w in self._windows.values() if w.held]
        return min(ends) if ends else None

    def _close(self, ttype: str, window: _Window, reg: Registry) -> list[str]:
        # Only those still parked: the type may have been registered since.
        waiting = [b for b in window.held if b.provider is None and reg.bindings.get(b.id) is b]
        if not waiting:
            return []
        n = len(waiting)
        names = list(dict.fromkeys(b.function_id for b in waiting))
        shown = ", ".join(q(name) for name in names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        reason = why_waiting(waiting[0], reg.trigger_types.keys(), self.have, self.enabled)
        return [f"{n} more trigger binding{'s' if n != 1 else ''} of type {q(ttype)} "
                f"{'are' if n != 1 else 'is'} waiting (parked in the last {self.interval:g} s; "
                f"function{'s' if len(names) != 1 else ''} {shown}): {reason}"]
