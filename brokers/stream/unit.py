"""Unit descriptor of the stream broker: one process for ``iii-stream``, its store and
its subscriber socket (the supervisor binds ``host:port`` and hands it over)."""
from __future__ import annotations

from brokers.kit.units import Unit
from brokers.stream.config import parse, stores

UNIT = Unit(
    name="stream",
    worker_names=("iii-stream", "stream"),
    main="brokers.stream.service:main",
    storage=True,
    parse_config=parse,
    listens=lambda cfg: [(cfg["host"], cfg["port"])],
    stores=stores,
)
