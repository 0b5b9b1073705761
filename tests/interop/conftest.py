"""Fixtures of the interop tests: official-SDK workers started per test and always reaped.

Invariant: every worker ``spawn`` starts is stopped at the test's teardown; a failing test's
report carries each worker's events and stderr tail.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from tests.interop.sdkworkers import SdkWorker, check_installed

_LIVE: list[SdkWorker] = []


@pytest.fixture(scope="session", autouse=True)
def _official_sdks_installed() -> None:
    check_installed()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for w in list(_LIVE):
            report.sections.append((f"{w!r} events / stderr",
                                    f"{w.events[-20:]}\nnoise: {w.noise[-10:]}\n"
                                    f"{w.stderr_tail()}"))


@pytest.fixture
def spawn(engine: Any) -> Iterator[Callable[..., SdkWorker]]:
    """``spawn("node"|"python", register=[...], url=None)``: a ready official-SDK worker."""
    started: list[SdkWorker] = []

    def make(sdk: str, register: list[dict[str, Any]] | None = None, *, url: str | None = None,
             name: str | None = None, wait_ready: bool = True) -> SdkWorker:
        w = SdkWorker(sdk, url or engine.url, register=register, name=name)
        started.append(w)
        _LIVE.append(w)
        if wait_ready:
            w.ready()
        return w

    try:
        yield make
    finally:
        for w in started:
            w.stop()
            _LIVE.remove(w)
