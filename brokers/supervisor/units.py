"""Which units this engine can run: the ``brokers`` package's (each package with a
``unit.py``), plus test-only extras.

``III_TEST_UNITS`` (``module:ATTR,module:ATTR``) adds units from outside ``brokers``; it
exists only so that tests can run the real supervisor on trivial processes, and is
inherited by the children so ``run`` sees the same units; ``III_TEST_UNITS_ONLY=1`` leaves
the brokers out (so a test engine does not also start the real gateway). Invariant: a unit from the env
never silently replaces a broker's unit of the same name (that is an error).
"""
from __future__ import annotations

import importlib
import os
import pkgutil
from typing import Mapping

from brokers.kit.schema import ConfigError
from brokers.kit.units import Unit

TEST_UNITS_ENV = "III_TEST_UNITS"


def discover() -> dict[str, Unit]:
    """All units of the installed ``brokers`` package, by unit name."""
    import brokers

    found: dict[str, Unit] = {}
    for mod in pkgutil.iter_modules(brokers.__path__):
        if not mod.ispkg:
            continue
        try:
            module = importlib.import_module(f"brokers.{mod.name}.unit")
        except ModuleNotFoundError as exc:
            if exc.name == f"brokers.{mod.name}.unit":
                continue
            raise
        unit = getattr(module, "UNIT", None)
        if isinstance(unit, Unit):
            found[unit.name] = unit
    return found


def node_serving(worker_name: str, peers: list[str]) -> str | None:
    """The process of this engine that serves config worker ``worker_name`` (a unit of one
    process, named as its unit), or None when the config does not enable it."""
    name = next((u.name for u in discover().values() if worker_name in u.worker_names), None)
    return name if name in peers else None


def available(env: Mapping[str, str] | None = None) -> dict[str, Unit]:
    """Every unit by name: discovered brokers, then ``III_TEST_UNITS``."""
    env = os.environ if env is None else env
    units = {} if env.get(TEST_UNITS_ENV + "_ONLY") == "1" else discover()
    for ref in filter(None, (s.strip() for s in env.get(TEST_UNITS_ENV, "").split(","))):
        module, _, attr = ref.partition(":")
        try:
            unit = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"{TEST_UNITS_ENV}: cannot load {ref!r}: {exc}") from None
        if not isinstance(unit, Unit):
            raise ConfigError(f"{TEST_UNITS_ENV}: {ref!r} is not a Unit")
        if unit.name in units:
            raise ConfigError(f"{TEST_UNITS_ENV}: unit {unit.name!r} already exists")
        units[unit.name] = unit
    return units
