"""Unit descriptor of the pub/sub broker: one process, nothing durable."""
from __future__ import annotations

from brokers.pubsub.config import parse
from brokers.kit.units import Unit

UNIT = Unit(
    name="pubsub",
    worker_names=("iii-pubsub", "pubsub"),
    main="brokers.pubsub.service:main",
    parse_config=parse,
)
