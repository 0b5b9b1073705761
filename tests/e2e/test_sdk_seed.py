"""Every Python example of the seed page, run unchanged against the real engine.

Each example is read from the page itself (``tests/seedpage.py``) and runs as its own worker
process (``seed/run_seed.py``) with ``III_URL`` set; the test then calls the functions the
example registered, through our SDK in this process, and checks the results the page
documents. ``trigger_enqueue.py`` runs against its own engine with an ``iii-queue`` worker
holding the ``payment`` queue of ``conf/iii-config.yaml``. Every Python block of the page is
either run by a test (``RUN_BY``) or listed in ``NOT_YET_RUNNABLE`` with the reason. Without
the page beside the repository, every test here is reported as skipped, with that reason.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from iii import InvocationError
from tests.harness import STATE_READY, STATE_WORKER_YAML, Engine, WorkerProcess, running_engine
from tests.sdkclient import our_worker, trigger_when_found
from tests.seedpage import block_titles, needs_seed_page, seed_block, seed_worker

pytestmark = needs_seed_page

E2E = Path(__file__).resolve().parent
RUN_BY = {
    "math_add.py": "test_sdk_seed.py",
    "trigger.py": "test_sdk_seed.py",
    "trigger_void.py": "test_sdk_seed.py",
    "cross_language.py": "test_sdk_seed.py",
    "unregister.py": "test_sdk_seed.py",
    "trigger_enqueue.py": "test_queue_seed.py",
    # its cron binding waits for a cron worker the engine does not have yet; the test calls
    # math::aggregation itself
    "cron_trigger.py": "test_state_seed_py.py",
    "state_trigger.py": "test_http_functions_refusals.py",
    "http_trigger.py": "test_http_worker.py",
}
"""Python block of the page -> the test module (in tests/e2e) that runs it."""
NOT_YET_RUNNABLE = {
    "http_invoked.py": "its endpoint is a public HTTPS host (hooks.provider.example.com) and it "
                       "hard-codes ws://localhost:49134; the same registration against a local "
                       "receiver runs in test_http_functions_engine.py",
}


def test_every_seed_python_block_is_run_or_classified():
    titles = block_titles("python")
    assert len(titles) == len(set(titles)), titles
    assert not set(RUN_BY) & set(NOT_YET_RUNNABLE)
    assert set(titles) == set(RUN_BY) | set(NOT_YET_RUNNABLE)
    for title in titles:
        compile(seed_block(title), title, "exec")  # the page's code is valid Python as written
    for title, module in RUN_BY.items():
        assert f'"{title}"' in (E2E / module).read_text(), f"{module} does not run {title}"


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    """The default engine plus the iii-state worker (math::add stores its result in state)."""
    with running_engine(extra_workers_yaml=STATE_WORKER_YAML, wait_for=STATE_READY) as eng:
        yield eng


@pytest.fixture
def seeds(engine: Any) -> Iterator[Any]:
    started: list[WorkerProcess] = []

    def start(title: str) -> WorkerProcess:
        s = seed_worker(title, engine.url)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def client(engine: Any) -> Iterator[Any]:
    with our_worker(engine.url, "seed-test-client") as iii:
        yield iii


call = trigger_when_found


def test_math_add_returns_id_and_result_and_stores_it(seeds: Any, client: Any):
    seeds("math_add.py")  # its own top-level trigger of math::add already ran (or it would have died)
    out = call(client, "math::add", {"a": 2, "b": 3})
    assert set(out) == {"id", "result"} and out["result"] == 5
    assert client.trigger({"function_id": "state::get", "payload": {"scope": "math", "key": out["id"]}}) == 5


def test_math_add_log_entry_is_listed_with_its_data_and_the_span_of_the_call(seeds: Any, client: Any):
    """Issue 16: the example's ``logger.info("Math add completed", {id, result})`` reaches
    ``engine::logs::list`` with the data as attributes, in the span of that math::add call
    (our SDK's ``execute math::add``, a child of the engine's ``call math::add``)."""
    seeds("math_add.py")
    out = call(client, "math::add", {"a": 20, "b": 22})
    deadline = time.monotonic() + 15
    while True:
        logs = client.trigger({"function_id": "engine::logs::list", "payload": {}})["logs"]
        entry = next((e for e in logs if e["body"] == "Math add completed"
                      and e["attributes"].get("id") == out["id"]), None)
        if entry is not None or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert entry is not None, logs
    assert entry["attributes"] == {"id": out["id"], "result": 42} and entry["severity_text"] == "INFO"
    assert entry["trace_id"] and entry["span_id"]
    while True:  # the SDK's span arrives in its next telemetry batch
        tree = client.trigger({"function_id": "engine::traces::tree", "payload": {"trace_id": entry["trace_id"]}})
        spans = []
        todo = list(tree["roots"])
        while todo:
            node = todo.pop()
            spans.append(node)
            todo.extend(node["children"])
        execute = next((sp for sp in spans if sp["span_id"] == entry["span_id"]), None)
        if execute is not None or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert execute is not None and execute["name"] == "execute math::add", spans
    engine_span = next(sp for sp in spans if sp["span_id"] == execute["parent_span_id"])
    assert engine_span["name"] == "call math::add" and engine_span["service_name"] == "iii"


def test_trigger_math_calculate_gets_result_5(seeds: Any, client: Any):
    seeds("math_add.py")
    worker = seeds("trigger.py")
    out = call(client, "math::calculate", {"a": 2, "b": 3})
    assert out["result"] == 5
    text = worker.stop()
    assert "'result': 5" in text  # the example prints what math::add returned


def test_cross_language_double_gets_10(seeds: Any, client: Any):
    seeds("math_add.py")
    seeds("cross_language.py")
    assert call(client, "math::double", {"value": 5})["result"] == 10


def test_trigger_void_returns_nothing_and_still_runs_add(seeds: Any, client: Any):
    seeds("math_add.py")
    seeds("trigger_void.py")
    before = client.trigger({"function_id": "state::list", "payload": {"scope": "math"}})
    assert call(client, "math::calculate-async", {"a": 20, "b": 22}) is None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        after = client.trigger({"function_id": "state::list", "payload": {"scope": "math"}})
        if 42 in after and after.count(42) > before.count(42):
            break
        time.sleep(0.05)
    assert after.count(42) == before.count(42) + 1


def test_unregister_removes_function(seeds: Any, client: Any):
    seeds("unregister.py")
    deadline = time.monotonic() + 5
    while True:  # unregisterfunction is sent right after registerfunction: wait until it lands
        with pytest.raises(InvocationError) as info:
            client.trigger({"function_id": "orders::create", "payload": {"body": {"item": "x"}}})
        if info.value.code == "function_not_found" or time.monotonic() > deadline:
            break
    assert info.value.code == "function_not_found"
