"""Reload by diff on the real engine: ``reload`` (control command, and SIGHUP) re-reads the
config, validates it, and starts added processes, restarts changed ones, stops removed
ones. Across every reload the gateway keeps its pid and a raw worker connected before it
keeps serving its function to another client, on the same connection; a broken config
is refused and nothing changes."""
from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from brokers.supervisor import control
from tests.harness import Engine, QUEUE_READY, free_port, running_engine
from tests.wsclient import RawClient, fid, wait_for_function

QUEUES = {"reload_q": {"max_retries": 3, "concurrency": 2, "type": "standard", "backoff_ms": 50}}
CRON = "- name: iii-cron\n  config: {}\n"


def reload(eng: Engine) -> dict[str, Any]:
    return control.call(eng.runtime_dir, "reload", timeout=15)


def supervisor_status(eng: Engine) -> dict[str, Any]:
    return control.call(eng.runtime_dir, "status", timeout=5)


def settled(eng: Engine, timeout: float = 20.0) -> dict[str, dict[str, Any]]:
    """Until no reload is under way and every process is RUNNING; the processes by name."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = supervisor_status(eng)
        procs = {p["name"]: p for p in status["processes"]}
        if not status["reloading"] and all(p["state"] == "RUNNING" for p in procs.values()):
            return procs
        time.sleep(0.05)
    raise AssertionError(f"engine not settled within {timeout} s: {status}\n{eng.log_tail(4000)}")


def edit(eng: Engine, old: str, new: str) -> None:
    path = Path(eng.config_path)
    text = path.read_text()
    assert old in text, text
    path.write_text(text.replace(old, new))


class Served:
    """A raw worker serving one function, and another client calling it."""

    def __init__(self, eng: Engine) -> None:
        self.fn = fid("reload::echo")
        self.worker = RawClient.declared(eng.url, "reload-worker")
        self.worker.register_function(self.fn)
        self.caller = RawClient.declared(eng.url, "reload-caller")
        self.worker_id = self.worker.worker_id

    def roundtrip(self, value: Any, within: float = 15.0) -> Any:
        """``caller`` calls ``fn``, ``worker`` answers: the result ``caller`` gets. Retried
        while the function is not found (a restarted router is replaying routes)."""
        deadline = time.monotonic() + within
        while True:
            inv = str(uuid.uuid4())
            self.caller.send({"type": "invokefunction", "function_id": self.fn,
                              "invocation_id": inv, "data": {"v": value}})
            try:
                call = self.worker.next_call(self.fn, timeout=1.0)
            except TimeoutError:
                call = None
            if call is not None:
                self.worker.answer(call, {"echo": call["data"]["v"]})
            frame = self.caller.recv_until(lambda f: f.get("type") == "invocationresult"
                                           and f.get("invocation_id") == inv, 5.0)
            err = frame.get("error")
            if err is None:
                assert call is not None
                return frame["result"]
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.fn} not callable after the reload: {frame}")
            time.sleep(0.1)

    def still_same_connection(self) -> None:
        assert self.worker.is_open and self.caller.is_open
        assert self.worker.welcome is not None and self.worker.worker_id == self.worker_id
        assert not [f for f in self.worker.backlog if f.get("type") == "workerregistered"]

    def close(self) -> None:
        self.worker.close()
        self.caller.close()


@pytest.fixture
def engine() -> Iterator[Engine]:
    with running_engine(queues=QUEUES, extra_workers_yaml=CRON, wait_for=QUEUE_READY) as eng:
        yield eng


@pytest.fixture
def served(engine: Engine) -> Iterator[Served]:
    s = Served(engine)
    assert s.roundtrip(1) == {"echo": 1}
    yield s
    s.close()


def test_reload_adds_an_http_worker_on_a_new_port(engine: Engine, served: Served) -> None:
    before = settled(engine)
    gateway = before["gateway"]["pid"]
    assert before["gateway"]["generation"] == 1
    port = free_port()
    with open(engine.config_path, "a") as fh:
        fh.write(f"  - name: iii-http\n    config: {{host: 127.0.0.1, port: {port}}}\n")
    result = reload(engine)
    assert result["generation"] == 2 and result["added"] == ["http"]
    assert "gateway" in result["unchanged"] and "queue" in result["unchanged"]
    after = settled(engine)
    assert after["gateway"]["pid"] == gateway and after["gateway"]["generation"] == 1
    assert after["http"]["generation"] == 2
    assert after["queue"]["pid"] == before["queue"]["pid"]
    assert supervisor_status(engine)["plan"]["generation"] == 2
    assert served.roundtrip(2) == {"echo": 2}
    served.still_same_connection()

    # the new port serves: a route registered by the worker that was connected before
    path = f"/reload/{uuid.uuid4().hex[:6]}"
    served.worker.send({"type": "registertrigger", "id": str(uuid.uuid4()), "trigger_type": "http",
                        "function_id": served.fn, "config": {"api_path": path, "http_method": "GET"}})
    answers: list[tuple[int, bytes]] = []

    def get() -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", path)
                r = conn.getresponse()
                answers.append((r.status, r.read()))
                if r.status == 200:
                    return
            except OSError:
                pass
            finally:
                conn.close()
            time.sleep(0.1)

    t = threading.Thread(target=get, daemon=True)
    t.start()
    deadline = time.monotonic() + 15
    while t.is_alive() and time.monotonic() < deadline:
        try:
            call = served.worker.next_call(served.fn, timeout=0.5)
        except TimeoutError:
            continue
        served.worker.answer(call, {"status_code": 200, "body": {"via": "http"}})
    t.join(5)
    assert answers and answers[-1][0] == 200, answers
    assert json.loads(answers[-1][1]) == {"via": "http"}
    assert engine.pid("gateway") == gateway


def test_reload_restarts_a_changed_queue(engine: Engine, served: Served) -> None:
    before = settled(engine)
    with RawClient.declared(engine.url, "reload-inspect") as w:
        stats = w.call("engine::queue::topic_stats", {"topic": "reload_q"})
        assert stats["result"]["config"]["max_retries"] == 3, stats
    edit(engine, '"max_retries": 3', '"max_retries": 7')
    edit(engine, '"concurrency": 2', '"concurrency": 5')
    result = reload(engine)
    assert result["changed"] == ["queue"] and result["reasons"] == {"queue": "config"}
    after = settled(engine)
    assert after["queue"]["pid"] != before["queue"]["pid"] and after["queue"]["generation"] == 2
    for name in ("gateway", "router", "cron"):
        assert after[name]["pid"] == before[name]["pid"] and after[name]["generation"] == 1
    wait_for_function(engine.url, QUEUE_READY)
    with RawClient.declared(engine.url, "reload-inspect") as w:
        stats = w.wait_answered("engine::queue::topic_stats", {"topic": "reload_q"})
        assert stats["result"]["config"]["max_retries"] == 7, stats
        assert stats["result"]["consumer_count"] == 5, stats
    assert served.roundtrip(3) == {"echo": 3}
    served.still_same_connection()


def test_sighup_removes_cron(engine: Engine, served: Served) -> None:
    before = settled(engine)
    cron = before["cron"]["pid"]
    edit(engine, "  - name: iii-cron\n    config: {}\n", "")
    engine.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    deadline = time.monotonic() + 15
    while "cron" in {p["name"] for p in engine.status()} and time.monotonic() < deadline:
        time.sleep(0.05)
    after = settled(engine)
    assert "cron" not in after
    assert supervisor_status(engine)["plan"]["generation"] == 2
    with pytest.raises(ProcessLookupError):
        for _ in range(100):  # reaped by the supervisor
            os.kill(cron, 0)
            time.sleep(0.05)
    assert after["gateway"]["pid"] == before["gateway"]["pid"]
    assert after["queue"]["pid"] == before["queue"]["pid"]
    assert served.roundtrip(4) == {"echo": 4}
    served.still_same_connection()


@pytest.mark.parametrize("broken", ["workers: [{name: iii-cron}\n",  # YAML error
                                    "bogus_key: 1\n",  # unknown top-level key
                                    ])
def test_a_broken_config_is_refused_and_nothing_changes(engine: Engine, served: Served,
                                                        broken: str) -> None:
    before = settled(engine)
    text = Path(engine.config_path).read_text()
    Path(engine.config_path).write_text(text + broken if broken.startswith("bogus") else broken)
    with pytest.raises(RuntimeError) as err:
        reload(engine)
    message = str(err.value)
    assert ("Failed to parse config file" in message if "[" in broken
            else "bogus_key: unknown top-level key" in message), message
    assert f"reload refused, the engine is unchanged: {message}" in engine.log_tail()
    time.sleep(0.5)
    after = settled(engine)
    assert {n: p["pid"] for n, p in after.items()} == {n: p["pid"] for n, p in before.items()}
    assert all(p["generation"] == 1 for p in after.values())
    assert supervisor_status(engine)["plan"]["generation"] == 1
    engine.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    time.sleep(0.5)
    assert {n: p["pid"] for n, p in settled(engine).items()} == {n: p["pid"] for n, p in before.items()}
    assert served.roundtrip(5) == {"echo": 5}
    served.still_same_connection()
