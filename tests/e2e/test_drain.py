"""Drain on SIGTERM of the supervisor: ingress stops accepting at once, the calls in flight
finish (up to ``engine.stop_timeout_ms``), then the engine stops, storage last."""
from __future__ import annotations

import socket
import threading
import time
import uuid
from typing import Any

from brokers.supervisor import control
from tests.harness import running_engine
from tests.wsclient import RawClient, fid

CALLS = 100
DELAY_S = 1.0


class SlowWorker(threading.Thread):
    """A raw worker whose function answers each call ``DELAY_S`` after it arrived."""

    def __init__(self, url: str, fn: str) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.ws = RawClient.declared(url, "drain-worker")
        self.ws.register_function(fn)
        self.received = 0
        self.answered = 0
        self.stop = threading.Event()

    def run(self) -> None:
        due: list[tuple[float, dict[str, Any]]] = []
        while not self.stop.is_set():
            now = time.monotonic()
            while due and due[0][0] <= now:
                _, call = due.pop(0)
                self.ws.answer(call, {"slow": call["data"]["i"]})
                self.answered += 1
            try:
                call = self.ws.next_call(self.fn, timeout=0.02)
            except TimeoutError:
                continue
            except Exception:  # the connection closed: the engine stopped
                return
            due.append((time.monotonic() + DELAY_S, call))
            self.received += 1


def refused(port: int) -> bool:
    """Whether a new TCP connection to the gateway's port is refused."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def test_sigterm_drains_the_calls_in_flight_and_refuses_new_connections() -> None:
    with running_engine() as eng:
        fn = fid("drain::slow")
        worker = SlowWorker(eng.url, fn)
        caller = RawClient.declared(eng.url, "drain-caller")
        try:
            worker.start()
            assert caller.call_when_found(fn, {"i": -1}).get("error") is None
            ids = [str(uuid.uuid4()) for _ in range(CALLS)]
            for i, inv in enumerate(ids):
                caller.send({"type": "invokefunction", "function_id": fn, "invocation_id": inv,
                             "data": {"i": i}})
            deadline = time.monotonic() + 10
            while worker.received < CALLS + 1 and time.monotonic() < deadline:
                time.sleep(0.005)
            assert worker.received == CALLS + 1
            assert worker.answered == 1  # the 100 are in flight
            eng.proc.send_signal(15)  # type: ignore[union-attr]
            signalled = time.monotonic()

            seen_refused = None  # a new connection during the drain: refused
            while time.monotonic() - signalled < DELAY_S * 0.8:
                if refused(eng.port):
                    seen_refused = time.monotonic() - signalled
                    break
                time.sleep(0.02)
            assert seen_refused is not None, "new connections were not refused during the drain"
            assert worker.answered == 1, "the drain was over before the refusal was seen"

            results: dict[str, Any] = {}
            while len(results) < CALLS:
                frame = caller.recv_until(lambda f: f.get("type") == "invocationresult", 10)
                if frame["invocation_id"] in ids:
                    results[frame["invocation_id"]] = frame
            errors = [f for f in results.values() if f.get("error") is not None]
            assert not errors, errors[:3]
            assert sorted(f["result"]["slow"] for f in results.values()) == list(range(CALLS))
            assert eng.proc.wait(timeout=30) == 0  # type: ignore[union-attr]
            log = eng.log_tail()
            assert "gateway draining: 100 calls in flight" in log, log
            assert "still in flight" not in log
            assert "killing" not in log
        finally:
            worker.stop.set()
            worker.ws.close()
            caller.close()


def test_stop_command_without_drain_kills_at_once() -> None:
    with running_engine() as eng:
        fn = fid("drain::slow")
        worker = SlowWorker(eng.url, fn)
        caller = RawClient.declared(eng.url, "drain-caller")
        try:
            worker.start()
            assert caller.call_when_found(fn, {"i": -1}).get("error") is None
            caller.send({"type": "invokefunction", "function_id": fn, "invocation_id": "x",
                         "data": {"i": 0}})
            deadline = time.monotonic() + 5
            while worker.received < 2 and time.monotonic() < deadline:
                time.sleep(0.005)
            started = time.monotonic()
            control.call(eng.runtime_dir, "stop", {"drain": False})
            assert eng.proc.wait(timeout=10) == 0  # type: ignore[union-attr]
            assert time.monotonic() - started < DELAY_S
            assert worker.answered == 1
        finally:
            worker.stop.set()
            worker.ws.close()
            caller.close()


def test_a_second_sigterm_skips_the_drain() -> None:
    with running_engine() as eng:
        fn = fid("drain::slow")
        worker = SlowWorker(eng.url, fn)
        caller = RawClient.declared(eng.url, "drain-caller")
        try:
            worker.start()
            assert caller.call_when_found(fn, {"i": -1}).get("error") is None
            caller.send({"type": "invokefunction", "function_id": fn, "invocation_id": "x",
                         "data": {"i": 0}})
            deadline = time.monotonic() + 5
            while worker.received < 2 and time.monotonic() < deadline:
                time.sleep(0.005)
            started = time.monotonic()
            eng.proc.send_signal(15)  # type: ignore[union-attr]
            time.sleep(0.2)  # the gateway is draining now
            eng.proc.send_signal(15)  # type: ignore[union-attr]
            assert eng.proc.wait(timeout=10) == 0  # type: ignore[union-attr]
            assert time.monotonic() - started < DELAY_S
            assert worker.answered == 1
            assert "kill now" in eng.log_tail()
        finally:
            worker.stop.set()
            worker.ws.close()
            caller.close()
