"""The seed page's `math::add` and `math::aggregation` Python examples on our SDK against the
real engine with iii-state: every add is stored with ``state::set`` and the aggregation
(``state::list`` of scope ``math``) counts and sums exactly what was stored.

The examples run unchanged as worker processes through ``seed/run_seed.py`` (saved by the SDK
work). ``cron_trigger.py`` also binds a cron trigger; the engine has no cron worker yet, so
the test calls ``math::aggregation`` itself instead of waiting for the schedule.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

from tests.harness import STATE_READY, STATE_WORKER_YAML, Engine, WorkerProcess, running_engine
from tests.seedchecks import check_math_add_and_aggregation
from tests.wsclient import RawClient

SEED = Path(__file__).resolve().parent / "seed"


def seed_worker(name: str, url: str) -> WorkerProcess:
    """One seed example as a worker process, ready once it printed ``SEED-READY``."""
    w = WorkerProcess([sys.executable, str(SEED / "run_seed.py"), name], url)
    w.wait_line("SEED-READY", 15)
    return w


@pytest.fixture
def engine() -> Iterator[Engine]:
    with running_engine(extra_workers_yaml=STATE_WORKER_YAML, wait_for=STATE_READY) as eng:
        yield eng


def test_math_add_and_aggregation_through_our_sdk(engine: Engine) -> None:
    workers = [seed_worker("math_add.py", engine.url), seed_worker("cron_trigger.py", engine.url)]
    try:
        with RawClient.worker(engine.url) as c:
            check_math_add_and_aggregation(c)
    finally:
        for w in workers:
            w.stop()
