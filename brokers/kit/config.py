"""The engine config: an iii ``config.yaml`` read as it is, plus our ``engine:`` block.

Owns: ``${VAR}`` / ``${VAR:default}`` expansion on the raw text (workers-a §1.5), the strict
top level (§1.2), worker entries with ``name#N`` renaming and deprecated-name conflicts
(§1.3), the catalogue of built-in names (§1.4), each entry's ``config`` validated by the
unit that serves it, ``plan()``: the ordered list of engine processes, and
``EngineConfig.settings()``: the engine-wide part every process is handed.

Invariants: every problem is a ``ConfigError`` whose message starts with the path of the
offending key (``workers[2].config.port: expected int, got str``); loading reads the file
and the environment and nothing else (units are passed in, so tests can inject their own);
``plan()`` lists storage units first and ingress units last, and process names are unique.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple

import yaml

from brokers.kit.schema import ConfigError, Field, validate
from brokers.kit.units import EngineSettings, Unit, WorkerRef

log = logging.getLogger(__name__)

ENGINE_VERSION = "0.1.0"

# workers-a §1.5: NAME up to the first ':' or '}', default up to the next '}'.
_PLACEHOLDER = re.compile(r"\$\{([^}:]+)(?::([^}]*))?\}")

DEFAULT_GRACE_MS = 5000
DEFAULT_STOP_TIMEOUT_MS = 10000
"""``engine.stop_timeout_ms``: how long a stopping process lets in-flight calls finish."""

# Built-in names of workers-a §1.4. A listed name with no unit in this engine is accepted
# with a warning, so an iii config.yaml written for the reference engine still boots.
CATALOGUE = (
    "iii-worker-manager", "configuration", "iii-engine-functions", "iii-observability",
    "iii-telemetry", "iii-http", "iii-state", "iii-stream", "iii-pubsub", "iii-cron",
    "iii-queue", "iii-http-functions", "iii-exec", "iii-bridge",
)
# Unprefixed names of the docs (§1.9) map to the built-ins; both in one file is an error.
ALIASES = {"http": "iii-http", "cron": "iii-cron", "queue": "iii-queue",
           "state": "iii-state", "pubsub": "iii-pubsub"}

# sun_path is ~107 bytes; leave room for "/<process>.sock" under the runtime dir.
MAX_RUNTIME_DIR = 80

_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

_ENTRY_FIELDS = {
    "name": Field(str),
    "image": Field(str, None),
    "config": Field(object, None),
}


@dataclass
class WorkerEntry:
    """One ``workers[]`` / ``modules[]`` entry after renaming and unit lookup."""

    name: str
    """Unique name: the first ``iii-state`` keeps it, later ones are ``iii-state#1``, ..."""
    path: str
    """Where it came from, e.g. ``workers[2]`` (error messages name it)."""
    raw_config: Any
    unit: Unit | None = None
    """The unit serving it; None for a catalogue name this engine does not run yet."""
    config: Any = None
    """``unit.parse_config(raw_config, path + ".config")``."""

    @property
    def kind(self) -> str:
        """The worker type: the part before ``#``."""
        return self.name.split("#", 1)[0]


@dataclass
class EngineConfig:
    """A validated config file."""

    path: str
    workers: list[WorkerEntry]
    registration_namespace_grace_ms: int
    runtime_dir: str
    data_dir: str
    log_level: str = "info"
    log_format: str = "text"
    stop_timeout_ms: int = DEFAULT_STOP_TIMEOUT_MS
    warnings: list[str] = field(default_factory=list)
    cluster: Any = None
    """The raw ``engine.cluster`` block (validated by the cluster unit), or None."""

    def unit_config(self, unit: Unit) -> Any:
        """The validated config of ``unit``: its first entry's, else what the rest of the
        config implies for it (``implied``, see ``plan``), else its defaults."""
        for entry in self.workers:
            if entry.unit is not None and entry.unit.name == unit.name:
                return entry.config
        implied = getattr(unit, "implied", None)
        raw = implied(self) if implied is not None else None
        if raw is not None:
            return unit.parse_config(raw, getattr(unit, "implied_path", f"<{unit.name}>"))
        return unit.parse_config(None, f"<{unit.name} defaults>")

    def settings(self, log_level: str | None = None, log_format: str | None = None
                 ) -> EngineSettings:
        """The engine-wide settings a process runs with; ``log_level`` / ``log_format``
        override the file's (``start --log-level``), so the whole engine logs alike.
        The worker list keeps names and units only: no process gets another's config."""
        return EngineSettings(
            config_path=self.path, runtime_dir=self.runtime_dir, data_dir=self.data_dir,
            registration_namespace_grace_ms=self.registration_namespace_grace_ms,
            log_level=log_level or self.log_level, log_format=log_format or self.log_format,
            stop_timeout_ms=self.stop_timeout_ms,
            workers=tuple(WorkerRef(e.name, e.path, e.unit) for e in self.workers))


class Planned(NamedTuple):
    """One OS process of the engine."""

    process: str
    unit: Unit
    config: Any


def _unset(name: str) -> str:
    return f"__III_UNSET_{name}__"


def expand_env(text: str, env: Mapping[str, str], missing: list[str] | None = None) -> str:
    """Expand ``${NAME}`` / ``${NAME:default}`` in ``text``; a set variable wins even if empty.
    An unset NAME without a default is an error, or, given ``missing``, is recorded there
    and left as a marker (for commands that read only part of the file)."""

    def one(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is None and missing is not None:
            missing.append(name)
            return _unset(name)
        if default is None:
            raise ConfigError(f"Environment variable '{name}' not set and no default provided")
        return ENGINE_VERSION if default == "__III_ENGINE_VERSION__" else default

    return _PLACEHOLDER.sub(one, text)


def read(path: str, env: Mapping[str, str] | None = None,
         missing: list[str] | None = None) -> dict[str, Any]:
    """The file's top-level mapping after env expansion (see ``expand_env``) and YAML parsing."""
    env = os.environ if env is None else env
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise ConfigError(f"Config file not found: '{path}'") from None
    except OSError as exc:
        raise ConfigError(f"Failed to read config file '{path}': {exc}") from None
    try:
        data = yaml.safe_load(expand_env(text, env, missing))
    except ConfigError as exc:
        raise ConfigError(f"Failed to parse config file '{path}': {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"Failed to parse config file '{path}': {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"Failed to parse config file '{path}': expected a mapping at the top level")
    return data


def load(path: str, units: Mapping[str, Unit], env: Mapping[str, str] | None = None) -> EngineConfig:
    """Load and validate the config at ``path`` against the given units (by unit name)."""
    env = os.environ if env is None else env
    data = read(path, env)
    allowed = ("workers", "modules", "registration_namespace_grace_ms", "engine")
    for key in data:
        if key not in allowed:
            raise ConfigError(f"{key}: unknown top-level key (allowed: {', '.join(allowed)})")
    warnings: list[str] = []
    raw_entries: list[tuple[str, Any]] = []
    for key in ("workers", "modules"):  # modules are appended after workers (§1.2)
        if key not in data:
            continue
        items = data[key]
        if not isinstance(items, list):
            got = "null" if items is None else type(items).__name__
            raise ConfigError(f"{key}: expected list, got {got}")
        raw_entries += [(f"{key}[{i}]", item) for i, item in enumerate(items)]
    workers = _entries(raw_entries, units, warnings)
    grace = _grace(data.get("registration_namespace_grace_ms", DEFAULT_GRACE_MS), env)
    engine = _engine_block(data.get("engine"), env)
    return EngineConfig(path=os.path.abspath(path), workers=workers,
                        registration_namespace_grace_ms=grace, warnings=warnings, **engine)


def _entries(raw_entries: list[tuple[str, Any]], units: Mapping[str, Unit],
             warnings: list[str]) -> list[WorkerEntry]:
    by_worker_name = {w: u for u in units.values() for w in u.worker_names}
    seen: dict[str, int] = {}
    out: list[WorkerEntry] = []
    for where, raw in raw_entries:
        entry = validate(raw, _ENTRY_FIELDS, where)
        name = entry["name"]
        unit = by_worker_name.get(name) or by_worker_name.get(ALIASES.get(name, ""))
        builtin = unit is not None or name in CATALOGUE or name in ALIASES
        if not builtin:
            raise ConfigError(f"{where}.name: unknown worker '{name}' (external workers are not "
                              f"supported; built-ins: {', '.join(CATALOGUE)})")
        if entry["image"] is not None:
            raise ConfigError(f"{where}.image: Worker '{name}' is a built-in worker and cannot "
                              f"have an 'image' field")
        count = seen.get(name, 0)
        seen[name] = count + 1
        unique = name if count == 0 else f"{name}#{count}"
        item = WorkerEntry(name=unique, path=where, raw_config=entry["config"], unit=unit)
        if unit is None:
            warnings.append(f"{where}: worker '{name}' is not available in this engine yet; skipped")
        else:
            item.config = unit.parse_config(entry["config"], f"{where}.config")
        out.append(item)
    _deprecated_conflicts(seen)
    return out


def _deprecated_conflicts(seen: Mapping[str, int]) -> None:
    """workers-a §1.3: a deprecated name next to its replacement fails, one line per pair."""
    lines = [f"- '{old}' is the deprecated name for '{new}', but both are present. "
             f"Remove '{old}' from your configuration."
             for new, old in ALIASES.items() if new in seen and old in seen]
    if lines:
        raise ConfigError("workers: Duplicate worker configurations:\n" + "\n".join(lines))


def _grace(value: Any, env: Mapping[str, str]) -> int:
    override = env.get("III_NAMESPACE_GRACE_MS")
    if override not in (None, ""):
        try:
            value = int(override)
        except ValueError:
            raise ConfigError(f"III_NAMESPACE_GRACE_MS: expected int, got '{override}'") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"registration_namespace_grace_ms: expected int, got {type(value).__name__}")
    if value < 0:
        raise ConfigError("registration_namespace_grace_ms: must be >= 0")
    return value


DEFAULT_RUNTIME_DIR = "/tmp/iii-run"
RUNTIME_DIR_ENV = "III_RUNTIME_DIR"


def runtime_dir_for(configured: str | None, env: Mapping[str, str]) -> tuple[str, str]:
    """The one rule for where an engine's runtime dir is, used by every command:
    ``engine.runtime_dir`` of its config, else ``$III_RUNTIME_DIR``, else ``/tmp/iii-run``.
    Returns the absolute dir and which of the three gave it (for messages)."""
    if configured:
        return os.path.abspath(configured), "engine.runtime_dir"
    if env.get(RUNTIME_DIR_ENV):
        return os.path.abspath(env[RUNTIME_DIR_ENV]), f"${RUNTIME_DIR_ENV}"
    return DEFAULT_RUNTIME_DIR, "the default"


def resolve_path(value: str) -> str:
    """A path from the config: relative ones are relative to the working directory the
    engine was started in, as in the reference engine (children inherit it)."""
    return os.path.normpath(os.path.abspath(value))


def locate_runtime_dir(path: str, env: Mapping[str, str] | None = None) -> str:
    """The runtime dir of the engine started on the config at ``path``, without validating
    the rest of the file: a ``${VAR}`` that only the starting shell had is no error unless
    ``engine.runtime_dir`` itself needs it."""
    env = os.environ if env is None else env
    missing: list[str] = []
    block = read(path, env, missing).get("engine") or {}
    configured = block.get("runtime_dir") if isinstance(block, dict) else None
    names = [n for n in missing if isinstance(configured, str) and _unset(n) in configured]
    if names:
        raise ConfigError(f"engine.runtime_dir: needs ${{{names[0]}}}, which is not set here; "
                          f"set it or pass --runtime-dir")
    return runtime_dir_for(configured if isinstance(configured, str) else None, env)[0]


def _engine_block(raw: Any, env: Mapping[str, str]) -> dict[str, Any]:
    fields = {
        "runtime_dir": Field(str, None),
        "data_dir": Field(str, None),
        "log_level": Field(str, "info", check=lambda v: None if v.lower() in _LOG_LEVELS
                           else f"must be one of {', '.join(_LOG_LEVELS)}"),
        "log_format": Field(str, "text", check=lambda v: None if v in ("text", "json")
                            else "must be text or json"),
        "stop_timeout_ms": Field(int, DEFAULT_STOP_TIMEOUT_MS,
                                 check=lambda v: None if v >= 0 else "must be >= 0"),
        "cluster": Field(dict, None),
    }
    block = validate(raw, fields, "engine")
    runtime_dir, _ = runtime_dir_for(block["runtime_dir"], env)
    if len(runtime_dir.encode()) > MAX_RUNTIME_DIR:
        raise ConfigError(f"engine.runtime_dir: '{runtime_dir}' is too long for ipc socket paths "
                          f"({len(runtime_dir.encode())} bytes, at most {MAX_RUNTIME_DIR})")
    return {"runtime_dir": runtime_dir, "data_dir": resolve_path(block["data_dir"] or "./data"),
            "log_level": block["log_level"].lower(), "log_format": block["log_format"],
            "stop_timeout_ms": block["stop_timeout_ms"], "cluster": block["cluster"]}


MULTI_ENTRY_KINDS = ("iii-worker-manager",)
"""Worker types whose every entry is its own set of processes (several listeners, one
registry); another unit listed twice runs once, with its first entry's config."""


def plan(cfg: EngineConfig, units: Mapping[str, Unit]) -> list[Planned]:
    """The engine's processes in start order: storage, then the others, ingress last.

    Units with ``always=True`` run even when the config does not list them; within a group
    the order is: always-units first, then the order of the file. A unit listed twice runs
    once with its first entry's config (a warning is recorded for the others), except the
    ``MULTI_ENTRY_KINDS``: each later ``iii-worker-manager`` entry is a listener of its own,
    its processes named ``gateway-<port>`` (``gateway-<port>-<i>`` for several); the first
    entry keeps the names of a single one.
    """
    order: list[Unit] = [u for u in units.values() if u.always]
    # A unit no entry names, planned because the rest of the config calls for it (the
    # cluster process: any redis adapter, or an engine.cluster block).
    implied = [u for u in units.values() if getattr(u, "implied", None) is not None
               and not u.always and u.implied(cfg) is not None]
    extra: dict[str, list[WorkerEntry]] = {}
    for entry in cfg.workers:
        if entry.unit is None:
            continue
        if entry.unit in order and entry.kind != entry.name:
            if entry.kind in MULTI_ENTRY_KINDS:
                extra.setdefault(entry.unit.name, []).append(entry)
                continue
            msg = (f"{entry.path}: '{entry.name}' would be a second {entry.unit.name} instance; "
                   f"only the first entry is used")
            if msg not in cfg.warnings:
                cfg.warnings.append(msg)
        if entry.unit not in order:
            order.append(entry.unit)
    order += [u for u in implied if u not in order]
    groups = ([u for u in order if u.storage], [u for u in order if not u.storage and not u.ingress],
              [u for u in order if u.ingress and not u.storage])
    out: list[Planned] = []
    for unit in (u for group in groups for u in group):
        config = cfg.unit_config(unit)
        out += _instances(unit.name, unit, config)
        for entry in extra.get(unit.name, ()):
            port = entry.config.get("port") if isinstance(entry.config, dict) else None
            base = f"{unit.name}-{port}" if port is not None else f"{unit.name}-{entry.name.split('#', 1)[1]}"
            if any(p.process == base or p.process.startswith(base + "-") for p in out):
                base = f"{unit.name}-{entry.name.split('#', 1)[1]}x"
            out += _instances(base, unit, entry.config)
    return out


def _instances(base: str, unit: Unit, config: Any) -> list[Planned]:
    count = unit.instances(config)
    if count > 1:
        return [Planned(f"{base}-{i}", unit, config) for i in range(count)]
    return [Planned(base, unit, config)]
