"""Shared fixtures: a real engine per module (``engine``) and on demand (``engine_factory``).

Invariants: every engine a fixture starts is stopped at its teardown, whatever the test did;
when a test fails, the tail of every live engine's supervisor log is attached to its report
(section "iii-supervisor log"), so a failure in CI shows what the engine said.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

# `tests.harness` must import the same way whether pytest runs as `python -m pytest` (cwd on
# sys.path) or as the `pytest` script (only tests/ on sys.path).
_REPO = str(Path(__file__).resolve().parent.parent)
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

# Every engine the tests start runs an observability process; its Prometheus port (9464 by
# default) would be shared by engines running side by side: off, unless a test's config
# names a port (tests/e2e/test_observability_*).
os.environ.setdefault("III_PROMETHEUS_PORT", "0")

from tests import harness  # noqa: E402
from tests.harness import Engine, running_engine, start_engine  # noqa: E402


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for eng in list(harness.LIVE):
            report.sections.append((f"iii-supervisor log ({eng.config_path})", eng.log_tail()))


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    """One engine (default config, one gateway process) shared by a test module."""
    with running_engine() as eng:
        yield eng


@pytest.fixture
def engine_factory() -> Iterator[Callable[..., Engine]]:
    """``engine_factory(**start_engine_kwargs)``: engines stopped at the test's teardown."""
    started: list[Engine] = []

    def make(**kw: Any) -> Engine:
        eng = start_engine(**kw)
        started.append(eng)
        return eng

    try:
        yield make
    finally:
        for eng in reversed(started):
            eng.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Any]:
    """One private redis-server for the session (tests/redisserver.py): a real server, AOF on."""
    from tests.redisserver import RedisServer
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()
