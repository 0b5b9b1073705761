"""Every example in ``examples/`` runs against a real engine, exits with 0 and says what it showed.

One engine for the module, started from ``conf/iii-config.yaml`` itself (the config the
examples' docstrings and the README tell a reader to start), with only its port, host and
directories replaced by the test's own: so the examples meet the same workers (state, queue,
pub/sub) and the same named queues (``default``, ``payment``) a reader gets. Each example runs
as a subprocess with ``III_URL`` set, as a reader would run it, and must print the lines in
``EXPECTED``. An example without an entry there fails ``test_every_example_has_a_test``.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from typing import Iterator

import pytest

from tests.harness import REPO, STATE_READY, Engine, WorkerProcess, free_port, running_engine
from tests.sdkclient import our_worker, trigger_when_found
from tests.wsclient import wait_for_function

EXAMPLES = REPO / "examples"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

EXPECTED: dict[str, list[str]] = {
    "hello_worker.py": [
        r"connected to ws://127\.0\.0\.1:\d+",
        r"greet::hello answered: Hello, iii!",
    ],
    "calls.py": [
        r"sync call: orders::checkout returned total 14\.5 \(it asked orders::price\)",
        r"void call: trigger returned None at once",
        r"void call: orders::audit then ran on its own with total 14\.5",
        r"a raising handler: InvocationError code=invocation_failed message='no price for kite'",
        r"an unknown function: InvocationError code=function_not_found",
    ],
    "state.py": [
        r"set: \{'old_value': None, 'new_value': \{'count': 3\}\}",
        r"set: \{'old_value': None, 'new_value': \{'count': 1\}\}",
        r"get apples: \{'count': 3\}",
        r"update apples \(\+2\): \{'old_value': \{'count': 3\}, 'new_value': \{'count': 5\}\}",
        r"list: \[1, 5\]",
        r"delete pears, it was: \{'count': 1\}",
        r"trigger: state:created apples: None -> \{'count': 3\}",
        r"trigger: state:created pears: None -> \{'count': 1\}",
        r"trigger: state:updated apples: \{'count': 3\} -> \{'count': 5\}",
        r"trigger: state:deleted pears: \{'count': 1\} -> None",
        r"trigger: state:deleted apples: \{'count': 5\} -> None",
    ],
    "queue_jobs.py": [
        rf"enqueued ada@example\.com to 'default': messageReceiptId {UUID}",
        rf"enqueued bob@example\.com to 'default': messageReceiptId {UUID}",
        r"  emails::send ada@example\.com: attempt 1 fails \(the queue will retry\)",
        r"  emails::send bob@example\.com: attempt 1 fails \(the queue will retry\)",
        r"  emails::send ada@example\.com: attempt 2 sent 'welcome'",
        r"  emails::send bob@example\.com: attempt 2 sent 'receipt'",
        r"both jobs done after 4 deliveries",
    ],
    "durable_topic.py": [
        r"topic 'order\.placed' has 2 subscribers",
        r"published order A-17: iii::durable::publish returned None",
        r"billing::invoice handled order A-17 after 1 deliveries",
        r"shipping::reserve handled order A-17 after 2 deliveries",
    ],
    "pubsub.py": [
        r"published ada to 'user\.signed-up': publish returned None",
        r"published bob to 'user\.signed-up': publish returned None",
        r"welcome::email received user ada",
        r"welcome::email received user bob",
        r"welcome::metrics received user ada",
        r"welcome::metrics received user bob",
    ],
    "custom_trigger_type.py": [
        r"provider: clock::on-tick bound: 3 ticks every 100 ms",
        r"provider: tick 1 -> clock::on-tick answered \{'seen': 1\}",
        r"provider: tick 2 -> clock::on-tick answered \{'seen': 2\}",
        r"provider: tick 3 -> clock::on-tick answered \{'seen': 3\}",
        r"provider: binding removed",
        r"consumer: clock::on-tick ran for ticks \[1, 2, 3\]",
    ],
    "unregister.py": [
        r"registered: orders::create answered \{'id': '123', 'item': 'pen'\}",
        r"registered: 1 trigger bound to orders::create",
        r"trigger\.unregister\(\): 0 triggers bound to orders::create",
        r"fn_ref\.unregister\(\): calling orders::create now fails with function_not_found",
    ],
    "discovery.py": [
        r"function catalog::search: 'Find items by prefix' \(worker example-catalog\)",
        r"worker example-catalog: runtime python, functions \['catalog::search'\]",
        r"trigger types: cron, durable:subscriber, http, log, state, stream, stream:join, stream:leave, subscribe, trace",
    ],
    "cron.py": [
        r"bound reports::every-second to cron '\* \* \* \* \* \*'",
        r"tick 1: cron job scheduled at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00, ran at \S+\+00:00",
        r"tick 2: cron job scheduled at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00, ran at \S+\+00:00",
        r"unregistered the trigger after 2 ticks; job_id was the trigger's id: True",
    ],
}
"""Example -> regular expressions that must each match a whole line of its stdout."""

# conf/iii-config.yaml's placeholders that would point a test engine at the reader's own
# port and directories.
OWN = {"${III_PORT:49134}": "{port}", "${III_HOST:0.0.0.0}": "127.0.0.1",
       "${III_RUNTIME_DIR:/tmp/iii-run}": "{runtime_dir}", "${III_DATA_DIR:./data}": "{data_dir}",
       "${III_HTTP_HOST:0.0.0.0}": "127.0.0.1"}


def default_config_text() -> str:
    """``conf/iii-config.yaml`` with the test engine's port, host and directories."""
    text = (REPO / "conf" / "iii-config.yaml").read_text()
    for placeholder, value in OWN.items():
        assert placeholder in text, f"conf/iii-config.yaml no longer has {placeholder}"
        text = text.replace(placeholder, value)
    for port in ("${III_HTTP_PORT:3111}", "${III_STREAM_PORT:3112}"):  # no fixed port in a test
        assert port in text, f"conf/iii-config.yaml no longer has {port}"
        text = text.replace(port, str(free_port()))
    return text.replace("${III_STREAM_HOST:0.0.0.0}", "127.0.0.1")


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with running_engine(config_text=default_config_text(), wait_for=STATE_READY) as eng:
        # the other brokers register their functions on their own schedule
        wait_for_function(eng.url, "engine::queue::list_topics", {})
        wait_for_function(eng.url, "publish", {"topic": "warmup", "data": None})
        yield eng


def example_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("III_")}
    return {**env, "III_URL": url, "PYTHONUNBUFFERED": "1"}


def run_example(name: str, url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=REPO,
                          env=example_env(url), capture_output=True, text=True, timeout=timeout)


def test_every_example_has_a_test() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_and_shows_its_feature(engine: Engine, name: str) -> None:
    out = run_example(name, engine.url)
    report = f"exit {out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr[-3000:]}"
    assert out.returncode == 0, report
    lines = out.stdout.splitlines()
    missing = [p for p in EXPECTED[name] if not any(re.fullmatch(p, line) for line in lines)]
    assert not missing, f"lines not printed: {missing}\n{report}"


def test_hello_worker_serves_until_ctrl_c(engine: Engine) -> None:
    cmd = [sys.executable, str(EXAMPLES / "hello_worker.py"), "--serve"]
    worker = WorkerProcess(cmd, engine.url, cwd=REPO, env=example_env(engine.url),
                           name="hello_worker.py --serve")
    try:
        worker.wait_line("serving greet::hello")
        with our_worker(engine.url, "examples-test-client") as client:
            answer = trigger_when_found(client, "greet::hello", {"name": "test"})
        assert answer == {"message": "Hello, test!"}
        worker.proc.send_signal(signal.SIGINT)
        assert worker.proc.wait(10) == 0, worker.output()
    finally:
        text = worker.stop()
    assert "stopped" in text.splitlines()[-1], text


def test_hello_worker_without_an_engine_exits_1() -> None:
    url = f"ws://127.0.0.1:{free_port()}"  # nothing listens there
    out = run_example("hello_worker.py", url, "--connect-timeout", "0.5", timeout=30)
    assert out.returncode == 1, out
    assert f"could not reach the engine at {url}" in out.stderr, out.stderr
