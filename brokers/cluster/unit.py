"""Unit descriptor of the cluster process: planned when the config makes this engine a
host of a cluster (any ``redis`` adapter, or an ``engine.cluster`` block; see config.py),
without a ``workers[]`` entry of its own."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from brokers.cluster import config
from brokers.kit.units import Unit
from brokers.router.core import REMOTE_NODE


@dataclass(frozen=True)
class ImpliedUnit(Unit):
    """A unit that no ``workers[]`` entry names: ``implied(engine_config)`` gives its raw
    config when the rest of the config calls for it, None otherwise (read by
    ``brokers.kit.config.plan``)."""

    implied: Callable[[Any], Any] | None = None
    implied_path: str = "engine.cluster"
    """Where errors in the implied config point."""


UNIT = ImpliedUnit(
    name=REMOTE_NODE,
    worker_names=(),
    main="brokers.cluster.service:main",
    parse_config=config.parse,
    implied=config.implied,
    shares=config.shares,
)
