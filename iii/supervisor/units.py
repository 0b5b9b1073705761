"""Which units this engine can run: the ``brokers`` package's, plus test-only extras.

``III_TEST_UNITS`` (``module:ATTR,module:ATTR``) adds units from outside ``brokers``; it
exists only so that tests can run the real supervisor on trivial processes, and is
inherited by the children so ``run`` sees the same units; ``III_TEST_UNITS_ONLY=1`` leaves
the brokers out (so a test engine does not also start the real gateway). Invariant: a unit from the env
never silently replaces a broker's unit of the same name (that is an error).
"""
from __future__ import annotations

import importlib
import os
from typing import Mapping

from iii.core.schema import ConfigError
from iii.core.units import Unit, discover

TEST_UNITS_ENV = "III_TEST_UNITS"


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
