"""The seed page's call examples in TypeScript on the OFFICIAL npm ``iii-sdk`` 0.22.1, as
written: trigger.ts, trigger-void.ts, cross-language.ts and unregister.ts, each read from the
page at test time and run by ``node/run_ts_seed.mjs`` (the TypeScript compiler, the page's
``iii`` and a stand-in ``Logger``). ``math::add`` is served by a worker of our Python SDK, as
the cross-language example means it: "might be implemented in Python".
"""
from __future__ import annotations

import queue
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.harness import Engine, WorkerProcess, running_engine
from tests.sdkclient import our_worker
from tests.seedpage import needs_seed_page, seed_block
from tests.wsclient import RawClient

pytestmark = [pytest.mark.interop, needs_seed_page]

NODE_DIR = Path(__file__).resolve().parent / "node"


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with running_engine() as eng:
        yield eng


@pytest.fixture(scope="module")
def adds(engine: Engine) -> Iterator["queue.Queue[dict]"]:
    calls: queue.Queue[dict] = queue.Queue()

    def add(data: dict) -> dict:
        calls.put(data)
        return {"result": data["a"] + data["b"]}

    with our_worker(engine.url, "python-math") as iii:
        iii.register_function("math::add", add)
        yield calls


def run_block(engine: Engine, title: str) -> WorkerProcess:
    w = WorkerProcess(["node", str(NODE_DIR / "run_ts_seed.mjs"), title], engine.url, cwd=NODE_DIR,
                      stderr_apart=True, stdin_text=seed_block(title), name=title)
    w.wait_line("SEED-READY", 20)
    return w


def call_when_found(engine: Engine, fid: str, data: Any) -> dict:
    with RawClient.declared(engine.url, f"caller-{fid.replace('::', '-')}") as c:
        return c.call_when_found(fid, data, within=10)


def test_trigger_ts_calls_math_add_and_returns_its_result(engine: Engine, adds) -> None:
    w = run_block(engine, "trigger.ts")
    try:
        assert call_when_found(engine, "math::calculate", {"a": 2, "b": 3}).get("result") == {"result": 5}
        assert w.wait_error("Result"), w.output()  # the page's logger.info line
    finally:
        w.stop()


def test_trigger_void_ts_returns_nothing_and_math_add_still_runs(engine: Engine, adds) -> None:
    while not adds.empty():
        adds.get_nowait()
    w = run_block(engine, "trigger-void.ts")
    try:
        answer = call_when_found(engine, "math::calculate-async", {"a": 4, "b": 1})
        assert "error" not in answer and answer.get("result") is None, answer
        assert adds.get(timeout=5)["a"] == 4
    finally:
        w.stop()


def test_cross_language_ts_doubles_through_a_python_math_add(engine: Engine, adds) -> None:
    w = run_block(engine, "cross-language.ts")
    try:
        assert call_when_found(engine, "math::double", {"value": 5}).get("result") == {"result": 10}
    finally:
        w.stop()


def test_unregister_ts_leaves_neither_the_function_nor_its_trigger(engine: Engine) -> None:
    w = run_block(engine, "unregister.ts")
    try:
        time.sleep(0.5)
        with RawClient.declared(engine.url, "lister") as c:
            functions = c.call("engine::functions::list", {})["result"]["functions"]
            assert "orders::create" not in [f["function_id"] for f in functions]
            bindings = c.call("engine::registered-triggers::list", {})["result"]
            assert "orders::create" not in str(bindings), bindings
    finally:
        w.stop()
