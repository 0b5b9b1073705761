"""The supervisor's plan: the engine as validated once at start, and each process's part.

A child used to re-read the config file on every (re)spawn: an edit followed by a crash
left the engine on two configs, or the respawn FATAL on a bad edit. Now the supervisor
validates the file once, makes a ``Plan`` of it and hands each child its ``ChildSpec`` as
bytes (``runner.py`` carries them on an inherited descriptor); a respawn runs on the plan
the engine runs, whatever the file says now. A later ``reload`` makes the next generation
from the file and swaps it into the runner; processes spawned after that get the new one.

Owns: ``Plan`` (one generation: the processes in start order, the engine settings, every
process's encoded spec), ``ChildSpec`` (what one process needs, as plain data) and its
codec (JSON, versioned by ``FORMAT``), and ``ChildSpec.context``: the spec turned back
into a ``RunContext`` in the child, its unit looked up by name (units are code).

Invariants:
- a plan never changes once made; every spec is encoded when the plan is made, so a config
  that cannot be handed to a process fails ``start`` and ``check`` before anything runs,
  with a ``ConfigError`` naming the key;
- a spec is plain data (str-keyed mappings, lists, str, int, finite float, bool, None), so
  what a child decodes equals what the supervisor validated;
- a spec holds its own unit's config and no other unit's; nothing here logs a config or a
  spec (either may carry values expanded from env vars), and their reprs leave configs out;
- pure: no files, no descriptors, no clock of its own (``now`` comes in).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

import orjson

from brokers.kit.config import EngineConfig, Planned
from brokers.kit.schema import ConfigError
from brokers.kit.units import EngineSettings, RunContext, Unit, WorkerRef

FORMAT = 1
"""The spec layout's version. A child runs the code on disk; if the tree was updated under
a running supervisor, a spec of another layout is refused rather than misread."""


class PlanError(ValueError):
    """A spec a child cannot run on: not a spec, another ``FORMAT``, an unknown unit."""


@dataclass(frozen=True)
class ChildSpec:
    """What one process needs to start: exactly what travels to it (``encode``)."""

    generation: int
    """Which plan of this supervisor (1 at start; a reload makes the next)."""
    planned_at: float
    """When the plan was made (epoch seconds)."""
    process: str
    unit: str
    """The unit's name; the child looks the unit up (``brokers.supervisor.units``)."""
    config: Any = field(repr=False)
    """This unit's validated config."""
    engine: dict[str, Any]
    """``EngineSettings`` as plain data, its workers as ``{name, path, unit}``."""
    peers: list[str]

    def encode(self) -> bytes:
        return orjson.dumps({"format": FORMAT, **{f.name: getattr(self, f.name) for f in fields(self)}})

    @classmethod
    def decode(cls, data: bytes) -> ChildSpec:
        """The spec in ``data``; ``PlanError`` if it is not one of this ``FORMAT``."""
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise PlanError(f"the plan handed to this process is not readable: {exc}") from None
        if not isinstance(raw, dict) or raw.pop("format", None) != FORMAT:
            raise PlanError(f"the plan handed to this process is not of format {FORMAT} "
                            f"(supervisor and process from different versions?)")
        try:
            return cls(**raw)
        except TypeError as exc:
            raise PlanError(f"the plan handed to this process is malformed: {exc}") from None

    def context(self, units: Mapping[str, Unit]) -> RunContext:
        """The ``RunContext`` of this spec, its units looked up in ``units`` by name."""
        def unit(name: str) -> Unit:
            if name not in units:
                raise PlanError(f"the plan names unit {name!r}, which this process does not "
                                f"have (units: {', '.join(units)})")
            return units[name]

        engine = dict(self.engine)
        engine["workers"] = tuple(
            WorkerRef(w["name"], w["path"], None if w["unit"] is None else unit(w["unit"]))
            for w in engine["workers"])
        settings = EngineSettings(**engine)
        return RunContext(process=self.process, unit=unit(self.unit), config=self.config,
                          engine=settings, runtime_dir=settings.runtime_dir,
                          data_dir=settings.data_dir, peers=list(self.peers))


@dataclass(frozen=True)
class Plan:
    """One generation of the engine: what every process runs on until the next."""

    generation: int
    planned_at: float
    engine: EngineSettings
    processes: tuple[Planned, ...] = field(repr=False)
    """In start order (``brokers.kit.config.plan``)."""
    specs: Mapping[str, bytes] = field(repr=False)
    """Every process's encoded ``ChildSpec``, by process name."""

    @classmethod
    def make(cls, cfg: EngineConfig, planned: list[Planned], *, now: float,
             generation: int = 1, log_level: str | None = None,
             log_format: str | None = None) -> Plan:
        """The plan of a validated config; ``ConfigError`` if a part cannot be handed over."""
        settings = cfg.settings(log_level, log_format)
        shared = {}
        for p in planned:
            if p.unit.shares is not None and p.unit.name not in shared:
                shared[p.unit.name] = p.unit.shares(p.config)
        settings = replace(settings, shared=shared)
        engine = {f.name: getattr(settings, f.name) for f in fields(settings)}
        engine["workers"] = [
            {"name": w.name, "path": w.path, "unit": None if w.unit is None else w.unit.name}
            for w in settings.workers]
        peers = [p.process for p in planned]
        specs: dict[str, bytes] = {}
        for p in planned:
            _check_plain(p.config, _config_path(cfg, p.unit))
            spec = ChildSpec(generation, now, p.process, p.unit.name, p.config, engine, peers)
            try:
                specs[p.process] = spec.encode()
            except orjson.JSONEncodeError as exc:  # e.g. an int beyond 64 bits
                raise ConfigError(f"{_config_path(cfg, p.unit)}: cannot be handed to the "
                                  f"{p.process} process: {exc}") from None
        return cls(generation, now, settings, tuple(planned), specs)

    def spec(self, process: str) -> bytes:
        """The encoded spec of ``process`` (what its child decodes)."""
        return self.specs[process]

    def process(self, name: str) -> Planned:
        """The planned process ``name`` (its unit and config, for the supervisor's side)."""
        for p in self.processes:
            if p.process == name:
                return p
        raise KeyError(name)

    def info(self) -> dict[str, Any]:
        """What ``status`` shows of the plan."""
        return {"generation": self.generation, "planned_at": self.planned_at,
                "config": self.engine.config_path}


def _config_path(cfg: EngineConfig, unit: Unit) -> str:
    """Where ``unit``'s config came from, for messages: ``workers[2].config``."""
    for entry in cfg.workers:
        if entry.unit is not None and entry.unit.name == unit.name:
            return f"{entry.path}.config"
    return f"<{unit.name} defaults>"


def _check_plain(value: Any, path: str) -> None:
    """Raise ``ConfigError`` at the first value a child would not get back as it is."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{path}: {value} cannot be handed to a process (not finite)")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_plain(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{path}: key {key!r} cannot be handed to a process "
                                  f"(keys must be strings)")
            _check_plain(item, f"{path}.{key}")
    else:
        raise ConfigError(f"{path}: a {type(value).__name__} cannot be handed to a process "
                          f"(plain data only: mappings, lists, strings, numbers, booleans, null)")
