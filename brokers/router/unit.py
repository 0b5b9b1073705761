"""Unit descriptor of the router (``iii-engine-functions``): always one process."""
from __future__ import annotations

from iii.core.units import Unit

UNIT = Unit(
    name="router",
    worker_names=("iii-engine-functions",),
    main="brokers.router.service:main",
    always=True,
)
