"""What a reload changes: two plan generations in, each process's fate out.

``diff(old, new)`` sorts every process of either plan into one of four:

    added      in the new plan only: started
    removed    in the old plan only: stopped
    changed    in both, and what it runs on differs: restarted (stop, then start)
    unchanged  in both, same: keeps running, its pid and its connections

What a process "runs on" is its spec (``plan.ChildSpec``) less what does not change its
behaviour: the generation and the time the plan was made, and two things every spec
carries about the *other* processes, which a reload that adds or removes one changes in
every spec:

- ``peers`` (every process name). Most processes tolerate a peer list that is out of date:
  the bus connects to whichever node it is asked to send to, and a new process says HELLO
  to the router itself. Two units are bound to the peer list, and are ``changed`` whenever
  the set of processes changes (``PEER_BOUND``): the router (it fans routes, HELLOs and
  resets out to its peers, and its parked-trigger notices know the config's workers) and
  observability (its readiness is computed over every peer). A process that looks a peer up
  by worker name (``node_serving``: the gateway's and the router's iii-http-functions node)
  is ``changed`` when that lookup's answer differs (``LOOKUPS``).
- ``engine.workers`` (the config's worker list, names and units only): read by the router
  alone, which is peer-bound; other processes ignore it.

- ``engine.shared`` per sharing unit: the state unit's entry counts for the gateways only
  (``SHARED_BY``), every other entry for every process.

Everything else of ``engine`` (the log level, the data dir, the shared sampling settings,
the stop timeout, ...) counts for every process: a change restarts them all.

Pure: plain data in, a ``Diff`` out; no files, no clock.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import orjson

PEER_BOUND = frozenset({"router", "observability"})
"""Units whose processes are restarted when the set of processes changes."""
LOOKUPS: Mapping[str, tuple[str, ...]] = {"router": ("iii-http-functions",),
                                          "gateway": ("iii-http-functions",)}
"""Unit -> the config worker names whose serving process it looks up in its peers."""
SHARED_BY: Mapping[str, tuple[str, ...]] = {"state": ("gateway",)}
"""``engine.shared`` entries only some units read: unit sharing -> units reading it. The
state unit's (its store's place and value limit) is read by the gateways, which serve
``state::*`` in place; the others (observability's sampling) by every process."""
IGNORED = ("generation", "planned_at", "peers", "format")
"""Spec fields that never make a process ``changed`` by themselves."""


@dataclass(frozen=True)
class Diff:
    """Process names by fate; ``added`` and ``changed`` in the new plan's start order."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    reasons: Mapping[str, str] | None = None
    """Why each changed process is (``config``, ``engine.log_level``, ``peers``, ...)."""

    @property
    def empty(self) -> bool:
        """Nothing to start, stop or restart."""
        return not (self.added or self.removed or self.changed)

    def info(self) -> dict[str, Any]:
        return {"added": list(self.added), "removed": list(self.removed),
                "changed": list(self.changed), "unchanged": list(self.unchanged),
                "reasons": dict(self.reasons or {})}


def _decode(spec: bytes | Mapping[str, Any]) -> dict[str, Any]:
    return dict(orjson.loads(spec)) if isinstance(spec, (bytes, bytearray)) else dict(spec)


def lookup(worker_name: str, peers: list[str], units: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The process among ``peers`` serving config worker ``worker_name`` (as ``node_serving``),
    given ``units``: unit name -> ``{"worker_names": [...]}``."""
    name = next((u for u, d in units.items() if worker_name in d.get("worker_names", ())), None)
    return name if name in peers else None


def why_changed(old: Mapping[str, Any], new: Mapping[str, Any],
                units: Mapping[str, Mapping[str, Any]] | None = None) -> str | None:
    """Why a process of spec ``old`` must restart to run on ``new`` (None: it need not).
    ``units`` (unit name -> ``{"worker_names": [...]}``) serves the ``LOOKUPS`` test."""
    if old.get("unit") != new.get("unit"):
        return "unit"
    if old.get("config") != new.get("config"):
        return "config"
    unit = new.get("unit")
    old_engine, new_engine = dict(old.get("engine") or {}), dict(new.get("engine") or {})
    bound = unit in PEER_BOUND
    for key in sorted(set(old_engine) | set(new_engine)):
        if key == "workers" and not bound:
            continue
        if key == "shared":
            why = _shared_changed(unit, old_engine.get(key) or {}, new_engine.get(key) or {})
            if why is not None:
                return why
            continue
        if old_engine.get(key) != new_engine.get(key):
            return f"engine.{key}"
    old_peers, new_peers = list(old.get("peers") or ()), list(new.get("peers") or ())
    if bound and set(old_peers) != set(new_peers):
        return "peers"
    for worker in LOOKUPS.get(unit, ()):
        if units is not None and lookup(worker, old_peers, units) != lookup(worker, new_peers, units):
            return f"peers ({worker})"
    for key in sorted(set(old) | set(new)):
        if key not in IGNORED and key not in ("unit", "config", "engine") and old.get(key) != new.get(key):
            return key
    return None


def _shared_changed(unit: Any, old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    for owner in sorted(set(old) | set(new)):
        readers = SHARED_BY.get(owner)
        if readers is not None and unit not in readers:
            continue
        if old.get(owner) != new.get(owner):
            return f"engine.shared.{owner}"
    return None


def diff(old: Mapping[str, bytes | Mapping[str, Any]], new: Mapping[str, bytes | Mapping[str, Any]],
         units: Mapping[str, Mapping[str, Any]] | None = None) -> Diff:
    """The fate of every process of ``old`` and ``new`` (process name -> its spec, encoded
    or decoded; ``new`` in start order)."""
    added, changed, unchanged = [], [], []
    reasons: dict[str, str] = {}
    for name, spec in new.items():
        if name not in old:
            added.append(name)
            continue
        why = why_changed(_decode(old[name]), _decode(spec), units)
        if why is None:
            unchanged.append(name)
        else:
            changed.append(name)
            reasons[name] = why
    removed = [name for name in old if name not in new]
    return Diff(tuple(added), tuple(removed), tuple(changed), tuple(unchanged), reasons)


def plans(old: Any, new: Any, units: Mapping[str, Any] | None = None) -> Diff:
    """``diff`` of two ``plan.Plan`` generations; ``units``: unit name -> ``Unit`` (for the
    lookups; each unit's ``worker_names``)."""
    described = None if units is None else {
        name: {"worker_names": list(getattr(u, "worker_names", ()))} for name, u in units.items()}
    return diff(dict(old.specs), dict(new.specs), described)
