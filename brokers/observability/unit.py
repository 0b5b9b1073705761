"""Unit descriptor of the observability process: always planned (the reference injects
``iii-observability``), its sampling settings shared with every process, and the
Prometheus port handed over by the supervisor like every listening port."""
from __future__ import annotations

from brokers.kit.units import Unit
from brokers.observability.config import listens, parse, shares

UNIT = Unit(
    name="observability",
    worker_names=("iii-observability", "observability"),
    main="brokers.observability.service:main",
    always=True,
    parse_config=parse,
    listens=listens,
    shares=shares,
)
