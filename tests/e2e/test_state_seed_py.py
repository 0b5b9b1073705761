"""The seed page's `math::add` and `math::aggregation` Python examples on our SDK against the
real engine with iii-state: every add is stored with ``state::set`` and the aggregation
(``state::list`` of scope ``math``) counts and sums exactly what was stored.

The blocks ``math_add.py`` and ``cron_trigger.py`` are read from the page itself
(``tests/seedpage.py``) and run unchanged as worker processes through ``seed/run_seed.py``;
without the page beside the repository the test is reported as skipped. ``cron_trigger.py``
also binds a cron trigger; the engine has no cron worker yet, so the test calls
``math::aggregation`` itself instead of waiting for the schedule.
"""
from __future__ import annotations

from typing import Iterator

import pytest

from tests.harness import STATE_READY, STATE_WORKER_YAML, Engine, running_engine
from tests.seedchecks import check_math_add_and_aggregation
from tests.seedpage import needs_seed_page, seed_worker
from tests.wsclient import RawClient

pytestmark = needs_seed_page


@pytest.fixture
def engine() -> Iterator[Engine]:
    with running_engine(extra_workers_yaml=STATE_WORKER_YAML, wait_for=STATE_READY) as eng:
        yield eng


def test_math_add_and_aggregation_through_our_sdk(engine: Engine) -> None:
    workers = []
    try:
        for title in ("math_add.py", "cron_trigger.py"):
            workers.append(seed_worker(title, engine.url))
        with RawClient.worker(engine.url) as c:
            check_math_add_and_aggregation(c)
    finally:
        for w in workers:
            w.stop()
