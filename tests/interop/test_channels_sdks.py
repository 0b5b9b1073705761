"""Channels with the official SDKs (issue 12): the npm ``iii-sdk`` and the PyPI ``iii-sdk``, each
in its own runtime, on an engine with two gateway processes.

A sender makes a channel, writes 300 KB in 64 KiB writes with text messages between them and
passes the reader ref to a processor of the other (or the same) SDK, which ``readAll``s it; a
round trip passes a reader and a writer, and the processor streams every chunk back with a
progress message each. Then 10 MB through a channel whose two sockets sit on different
gateway processes (the test checks which gateway accepted each socket, from the kernel's
socket tables, before it lets the transfer start).
"""
from __future__ import annotations

import json
import os
import subprocess
import uuid
from typing import Iterator

import psutil
import pytest

from tests.harness import Engine, running_engine
from tests.interop.sdkworkers import NODE_DIR, OFFICIAL_PY

pytestmark = pytest.mark.interop

HERE = os.path.dirname(__file__)
SIZE = 300_000
RUNNERS = {
    "python": [str(OFFICIAL_PY), os.path.join(HERE, "official_py", "channels.py")],
    "node": ["node", os.path.join(NODE_DIR, "channels.mjs")],
}


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with running_engine(gateway_processes=2) as eng:
        yield eng


def start(sdk: str, url: str, *args: str) -> subprocess.Popen:
    # the official Python SDK must not see our venv's `iii`: run it from outside the repo
    return subprocess.Popen(RUNNERS[sdk] + list(args), cwd="/tmp", env=dict(os.environ, III_URL=url),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def line(proc: subprocess.Popen) -> dict:
    out = proc.stdout.readline()
    if not out:
        proc.kill()
        raise AssertionError(f"no output; stderr: {proc.stderr.read()[-3000:]}")
    return json.loads(out)


@pytest.fixture(scope="module")
def processors(engine: Engine) -> Iterator[dict[str, str]]:
    """One serving worker per SDK: sdk -> its function prefix."""
    procs, prefixes = [], {}
    for sdk in RUNNERS:
        prefix = f"chan-{sdk}-{uuid.uuid4().hex[:6]}"
        proc = start(sdk, engine.url, "serve", prefix)
        assert line(proc) == {"ready": True}
        procs.append(proc)
        prefixes[sdk] = prefix
    yield prefixes
    for proc in procs:
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def run(sdk: str, url: str, *args: str) -> dict:
    proc = subprocess.run(RUNNERS[sdk] + list(args), cwd="/tmp", env=dict(os.environ, III_URL=url),
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    assert proc.returncode == 0 and lines, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    return json.loads(lines[-1])


PAIRS = [("python", "python"), ("node", "node"), ("python", "node"), ("node", "python")]


@pytest.mark.parametrize("sender,processor", PAIRS, ids=[f"{a}-to-{b}" for a, b in PAIRS])
def test_sender_to_processor_read_all_with_text_messages(engine: Engine, processors, sender, processor) -> None:
    out = run(sender, engine.url, "send", f"{processors[processor]}::digest", str(SIZE))
    assert out["result"]["bytes"] == SIZE
    assert out["result"]["sha256"] == out["sha256"]
    assert out["result"]["messages"] == ["message at chunk 1", "message at chunk 3"]


@pytest.mark.parametrize("caller,worker", PAIRS, ids=[f"{a}-to-{b}" for a, b in PAIRS])
def test_both_ways_the_worker_streams_every_chunk_back_with_progress(engine: Engine, processors, caller, worker) -> None:
    out = run(caller, engine.url, "roundtrip", f"{processors[worker]}::invert", str(SIZE))
    assert out["ok"] and out["bytes"] == SIZE
    chunks = out["result"]["chunks"]
    assert chunks >= 1
    assert out["messages"] == [{"type": "progress", "chunks": n} for n in range(1, chunks + 1)] + \
        [{"type": "done", "chunks": chunks}]


def test_ten_megabytes_between_two_gateway_processes_with_the_python_sdk(engine: Engine) -> None:
    gateways = [p["pid"] for p in engine.status() if p["name"].startswith("gateway")]
    proc = start("python", engine.url, "pinned", str(10 * 1024 * 1024))
    try:
        for _ in range(40):
            ports = line(proc)["ports"]
            holders = [next((pid for pid in gateways for c in psutil.Process(pid).net_connections("tcp")
                             if c.raddr and c.raddr.port == port), None) for port in ports]
            assert None not in holders, (ports, holders)
            if holders[0] != holders[1]:
                break
            proc.stdin.write("again\n")
            proc.stdin.flush()
        else:
            raise AssertionError("the two sockets never landed on different gateways")
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert line(proc) == {"bytes": 10 * 1024 * 1024, "ok": True}
    finally:
        proc.kill()
        proc.wait()
