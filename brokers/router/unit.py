"""Unit descriptor of the router (``iii-engine-functions``): always one process."""
from __future__ import annotations

from brokers.kit.frames import ROUTER
from brokers.router.durable import store_path
from brokers.kit.units import Unit

UNIT = Unit(
    name=ROUTER,
    worker_names=("iii-engine-functions",),
    main="brokers.router.service:main",
    always=True,
    stores=lambda cfg, data_dir: {"router": store_path(data_dir)},
)
