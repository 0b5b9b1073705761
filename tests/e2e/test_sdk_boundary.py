"""The boundary between the SDK and the engine: a worker written with ``import iii`` loads
no module of ``brokers``, no ``zmq`` and no ``lmdb``, whatever it does. Shown on the seed
page's Python examples, run verbatim against the real engine (skipped with the reason
when the page is not beside the repository), and on every program in ``examples/``.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from tests.harness import PAYMENT_QUEUES, QUEUE_READY, REPO, STATE_WORKER_YAML, Engine, running_engine
from tests.seedpage import needs_seed_page, seed_worker

ENGINE_MODULES = ("brokers", "zmq", "lmdb")
SEED_EXAMPLES = ["math_add.py", "trigger.py", "trigger_void.py", "cross_language.py",
                 "unregister.py", "trigger_enqueue.py", "cron_trigger.py"]
WRAPPER = """
import runpy, sys
sys.argv = [sys.argv[1]] + sys.argv[2:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in {mods!r})
    print("ENGINE-MODULES " + ",".join(loaded), flush=True)
""".format(mods=ENGINE_MODULES)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with running_engine(queues=PAYMENT_QUEUES, extra_workers_yaml=STATE_WORKER_YAML
                        + "- name: iii-pubsub\n- name: iii-cron\n", wait_for=QUEUE_READY) as eng:
        yield eng


@needs_seed_page
@pytest.mark.parametrize("title", SEED_EXAMPLES)
def test_seed_examples_load_no_engine_module(engine: Engine, title: str) -> None:
    worker = seed_worker(title, engine.url)
    try:
        line = next(l for l in worker.lines if l.startswith("SEED-ENGINE-MODULES"))
    finally:
        worker.stop()
    assert line.split(" ", 1)[1].strip() == "", line


@pytest.mark.parametrize("example", sorted(p.name for p in (REPO / "examples").glob("*.py")))
def test_examples_load_no_engine_module(engine: Engine, example: str) -> None:
    out = subprocess.run([sys.executable, "-c", WRAPPER, str(REPO / "examples" / example)],
                         capture_output=True, text=True, timeout=60,
                         env={"III_URL": engine.url, "PATH": "/usr/bin:/bin"}, cwd=REPO)
    lines = [l for l in out.stdout.splitlines() if l.startswith("ENGINE-MODULES")]
    assert out.returncode == 0 and lines == ["ENGINE-MODULES "], (out.returncode, out.stdout[-2000:],
                                                               out.stderr[-2000:])
