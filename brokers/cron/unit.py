"""Unit descriptor of the cron broker: one process for ``iii-cron`` (its fired mark is a
16-byte file, not a store others wait for, so it starts with the ordinary brokers)."""
from __future__ import annotations

from brokers.cron.config import parse, stores
from brokers.kit.units import Unit

UNIT = Unit(
    name="cron",
    worker_names=("iii-cron", "cron"),
    main="brokers.cron.service:main",
    parse_config=parse,
    stores=stores,
)
