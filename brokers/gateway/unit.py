"""Unit descriptor of the gateway: ingress, several processes sharing the port."""
from __future__ import annotations

from brokers.gateway.config import parse
from brokers.kit.units import Unit

UNIT = Unit(
    name="gateway",
    worker_names=("iii-worker-manager",),
    main="brokers.gateway.service:main",
    always=True,
    ingress=True,
    parse_config=parse,
    instances=lambda cfg: cfg["processes"],
    listens=lambda cfg: [(cfg["host"], cfg["port"])],
)
