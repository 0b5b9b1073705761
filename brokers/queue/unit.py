"""Unit descriptor of the queue broker: one process holding durable data (LMDB)."""
from __future__ import annotations

from brokers.queue.config import parse, stores
from brokers.kit.units import Unit

UNIT = Unit(
    name="queue",
    worker_names=("iii-queue", "queue"),
    main="brokers.queue.service:main",
    storage=True,
    parse_config=parse,
    stores=stores,
)
