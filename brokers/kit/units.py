"""Units: how a broker package tells the supervisor what process it is.

Each package ``brokers/<x>/`` has a module ``brokers/<x>/unit.py`` with a module-level
``UNIT``. The supervisor finds units by scanning the ``brokers`` package
(``brokers.supervisor.units.discover``), so a new broker is a new package and nothing else
in the tree changes.

Also owns what a child process is handed to start: ``RunContext``, with the engine-wide
``EngineSettings`` and the config's worker list as ``WorkerRef`` values.

Invariants: unit names are unique; ``worker_names`` of different units do not overlap;
a process name is the unit name, or ``<unit>-<i>`` when the unit runs several instances;
a ``RunContext`` holds this process's own config and no other unit's (a config may carry
values expanded from environment variables, i.e. secrets), and its repr leaves it out.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Unit:
    """One kind of engine process."""

    name: str
    """Process base name: ``gateway``, ``router``, ``state``, ..."""
    worker_names: tuple[str, ...]
    """Config ``workers[].name`` values that enable this unit (``iii-state``, ``state``)."""
    main: str
    """``module:function`` run in the child process as ``function(ctx: RunContext)``."""
    always: bool = False
    """Runs even when the config does not list it (router, gateway)."""
    ingress: bool = False
    """Takes outside traffic: started last, stopped first."""
    storage: bool = False
    """Holds durable data: started first, stopped last."""
    parse_config: Callable[[Any, str], Any] = lambda raw, path: raw
    """Validates this unit's ``config`` block; raises ConfigError naming ``path``."""
    instances: Callable[[Any], int] = lambda cfg: 1
    """How many processes of this unit the validated config asks for."""
    listens: Callable[[Any], list[tuple[str, int]]] = lambda cfg: []
    """The ``(host, port)`` addresses its processes serve; the supervisor binds each once
    and hands the socket to them (``brokers.kit.listen``)."""
    stores: Callable[[Any, str], dict[str, str]] = lambda cfg, data_dir: {}
    """Where its durable data lives (``{name: path}``), given its config and the data dir;
    shown by ``status`` and logged at start."""
    shares: Callable[[Any], dict[str, Any]] | None = None
    """What of its validated config every process of the engine runs with (plain data,
    no secrets), as ``EngineSettings.shared[<unit name>]``: the observability unit's
    sampling settings, which every process that routes calls applies."""


@dataclass(frozen=True)
class WorkerRef:
    """One ``workers[]`` entry of the config as a process sees it: which worker, served by
    which unit; its config stays with the process that runs it."""

    name: str
    """Unique name (``iii-state``, ``iii-state#1``)."""
    path: str
    """Where it came from, e.g. ``workers[2]``."""
    unit: Unit | None
    """The unit serving it; None for a catalogue name this engine does not run yet."""

    @property
    def kind(self) -> str:
        """The worker type: the part before ``#``."""
        return self.name.split("#", 1)[0]


@dataclass(frozen=True)
class EngineSettings:
    """The engine-wide settings every process runs with (``RunContext.engine``)."""

    config_path: str
    """The file the supervisor read (for messages; a child does not read it)."""
    runtime_dir: str
    data_dir: str
    registration_namespace_grace_ms: int
    log_level: str = "info"
    log_format: str = "text"
    stop_timeout_ms: int = 10000
    """How long a stopping process lets its in-flight calls finish (``engine.stop_timeout_ms``)."""
    workers: tuple[WorkerRef, ...] = ()
    """The config's worker entries, in file order (the router's warnings name them)."""
    shared: dict[str, Any] = field(default_factory=dict)
    """Unit name -> what that unit shares with every process (``Unit.shares``); a unit that
    is not planned shares nothing."""


@dataclass
class RunContext:
    """Everything a child process needs to start: its part of the supervisor's plan
    (``brokers.supervisor.plan``), with its unit looked up."""

    process: str
    """This process's name (node name on the bus), e.g. ``gateway-1``."""
    unit: Unit
    config: Any = field(repr=False)
    """This unit's validated config (output of ``unit.parse_config``)."""
    engine: EngineSettings
    runtime_dir: str
    data_dir: str
    peers: list[str] = field(default_factory=list)
    """Every process name of this engine, this one included."""


def load_main(unit: Unit) -> Callable[[RunContext], None]:
    """Import the entry function named by ``unit.main``."""
    module_name, _, func = unit.main.partition(":")
    return getattr(importlib.import_module(module_name), func)
