"""Cron with the OFFICIAL SDKs (npm ``iii-sdk`` 0.22.1, PyPI ``iii-sdk`` 0.25.0) against our
engine with iii-cron: a function bound with ``registerTrigger({type: 'cron', ...})`` is
called every second with the §6.4 payload, and after ``kill -9`` of the cron process the
SDK's binding (replayed by the router) fires again, with no tick twice."""
from __future__ import annotations

import datetime as dt
import signal
import time
from typing import Callable, Iterator

import pytest

from tests.cronchecks import PER_SECOND, check_payload, check_ticks
from tests.harness import Engine, running_engine
from tests.interop.sdkworkers import SdkWorker
from tests.wsclient import RawClient, ok

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with running_engine(extra_workers_yaml="- name: iii-cron\n") as eng:
        yield eng


def cron_worker(spawn: Callable[..., SdkWorker], sdk: str, fn: str) -> SdkWorker:
    return spawn(sdk, [{"op": "register", "function_id": fn},
                       {"op": "bind", "trigger_type": "cron", "function_id": fn,
                        "config": {"expression": PER_SECOND}}])


def calls(w: SdkWorker, fn: str, n: int, timeout: float = 5.0) -> list[dict]:
    return [w.expect(lambda e: e.get("event") == "called" and e.get("function_id") == fn,
                     timeout, f"cron call {i + 1} of {fn}")["data"] for i in range(n)]


@pytest.mark.parametrize("sdk", ["node", "python"])
def test_a_per_second_job_calls_the_sdk_function_with_the_payload(
        engine: Engine, spawn: Callable[..., SdkWorker], sdk: str) -> None:
    fn = f"cron::{sdk}::tick"
    w = cron_worker(spawn, sdk, fn)
    payloads = calls(w, fn, 3)
    for p in payloads:
        check_payload(p)
    assert len({p["job_id"] for p in payloads}) == 1
    check_ticks(payloads)
    with RawClient.worker(engine.url) as c:
        rows = ok(c.call("engine::registered-triggers::list", {"function_id": fn}))["registered_triggers"]
        assert [(r["id"], r["trigger_type"]) for r in rows] == [(payloads[0]["job_id"], "cron")]


@pytest.mark.parametrize("sdk", ["node", "python"])
def test_kill_9_of_cron_fires_the_sdk_binding_again_and_no_tick_twice(
        engine: Engine, spawn: Callable[..., SdkWorker], sdk: str) -> None:
    fn = f"cron::{sdk}::survivor"
    w = cron_worker(spawn, sdk, fn)
    before = calls(w, fn, 2)
    old = engine.kill("cron", signal.SIGKILL)
    engine.wait_running("cron", timeout=5, not_pid=old)
    restarted = time.time()
    after = calls(w, fn, 3, timeout=6)
    seen = [p["scheduled_time"] for p in before + after]
    assert len(seen) == len(set(seen)), seen
    assert any(dt.datetime.fromisoformat(p["scheduled_time"]).timestamp() > restarted for p in after), seen
    check_ticks(before + after)
