"""Unit descriptor of the HTTP worker: ingress on its own port, ``processes`` of them."""
from __future__ import annotations

from brokers.http.config import parse
from brokers.kit.units import Unit

UNIT = Unit(
    name="http",
    worker_names=("iii-http", "http"),
    main="brokers.http.service:main",
    ingress=True,
    parse_config=parse,
    instances=lambda cfg: cfg["processes"],
    listens=lambda cfg: [(cfg["host"], cfg["port"])],
)
