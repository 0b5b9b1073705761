"""Unit descriptor of the HTTP-invoked functions broker: one process for ``iii-http-functions``
(nothing durable: its functions are re-sent by the router whenever it starts)."""
from __future__ import annotations

from brokers.http_functions.config import parse
from brokers.kit.units import Unit

UNIT = Unit(
    name="http_functions",
    worker_names=("iii-http-functions",),
    main="brokers.http_functions.service:main",
    parse_config=parse,
)
