"""Unit descriptor of the state broker: one storage process for ``iii-state``."""
from __future__ import annotations

from brokers.state.config import parse, shares, stores
from brokers.kit.units import Unit

UNIT = Unit(
    name="state",
    worker_names=("iii-state", "state"),
    main="brokers.state.service:main",
    storage=True,
    parse_config=parse,
    stores=stores,
    shares=shares,
)
