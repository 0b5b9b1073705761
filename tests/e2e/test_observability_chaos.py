"""The observability worker under harm (issue 16): its process killed with ``kill -9`` while
calls flow, and an alert webhook to a private address under the default URL guard.

What it shows: with 16 sync calls in flight between two workers through the engine, a
``kill -9`` of the observability process costs no call (none fails, none is lost); once
the supervisor has restarted it, the stores answer again, new spans are stored, and the
telemetry the gateway could not hand over meanwhile is counted
(``iii_telemetry_dropped_total``). Latencies before, around and after the kill are printed
for the record only (the machine is noisy: no timing ratio is asserted). And the default
``webhook_security`` (private addresses blocked) refuses a webhook to 127.0.0.1: the
rule fires, no POST arrives.

One engine for the module (Prometheus on a free port, one webhook alert rule, no
``webhook_security``): the webhook test runs first, before the kill resets the alert state.
"""
from __future__ import annotations

import json
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

import pytest

from tests.harness import Engine, free_port, running_engine
from tests.obscheck import connect_pair, http_get, poll, sample, scrape
from tests.receiver import Receiver
from tests.wsclient import RawClient, fid, ok

IN_FLIGHT = 16
LOAD_S = 4.0
KILL_AT_S = 1.5


def chaos_yaml(prom_port: int, hook_url: str) -> str:
    return f"""\
- name: iii-state
  config: {{}}
- name: iii-observability
  config:
    prometheus_host: 127.0.0.1
    prometheus_port: {prom_port}
    alerts:
      - name: private-webhook
        metric: iii.invocations.total
        operator: ">"
        threshold: 0
        cooldown_seconds: 60
        action: {{type: webhook, url: "{hook_url}"}}
"""


@dataclass
class Rig:
    engine: Engine
    prom: str
    receiver: Receiver


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    receiver = Receiver()
    port = free_port()
    try:
        with running_engine(extra_workers_yaml=chaos_yaml(port, receiver.url("/hook")),
                            wait_for="engine::health::check") as eng:
            yield Rig(eng, f"http://127.0.0.1:{port}", receiver)
    finally:
        receiver.close()


def test_a_webhook_to_a_private_address_is_refused_by_default(rig: Rig) -> None:
    fn = fid("obs::private-hook")
    caller, callee = connect_pair(rig.engine, fn)  # a counted call: the rule's value > 0
    with caller, callee:
        poll(lambda: ok(caller.call("engine::metrics::list", {}))["engine_metrics"]["invocations"]["total"] >= 1,
             10, "a counted invocation")
        ok(caller.call("engine::alerts::evaluate", {}))
        listed = poll(lambda: (lambda r: r if r["alerts"] and r["alerts"][0]["last_triggered"] else None)(
            ok(caller.call("engine::alerts::list", {}))), 15, "the webhook rule fired")
        assert listed["alerts"][0]["name"] == "private-webhook" and listed["alerts"][0]["firing"] is True, listed
        poll(lambda: "/hook refused" in rig.engine.log_tail(), 10,
             "the refusal logged by the observability process")
        print("\n" + next(line for line in rig.engine.log_tail().splitlines() if "/hook refused" in line))
        # a refused URL is not retried: nothing may arrive (attempts would come within 1 s)
        time.sleep(2.0)
        assert rig.receiver.requests.empty(), rig.receiver.requests.get_nowait()


@dataclass
class Load:
    """16 caller connections, each making sync calls back to back; one callee answering."""

    engine: Engine
    fn: str
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (sent at, seconds)
    failures: list[Any] = field(default_factory=list)
    sent: int = 0
    answered: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, t0: float, until: threading.Event) -> None:
        caller0, callee = connect_pair(self.engine, self.fn)
        callers = [caller0] + [RawClient.declared(self.engine.url, f"obs-load-{i}") for i in range(1, IN_FLIGHT)]
        serving = threading.Thread(target=self._serve, args=(callee,), daemon=True)
        serving.start()
        threads = [threading.Thread(target=self._call, args=(c, t0, until), daemon=True) for c in callers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.stop.set()
        serving.join(10)
        for c in callers + [callee]:
            c.close()

    def _serve(self, callee: RawClient) -> None:
        while not self.stop.is_set():
            try:
                frame = callee.recv(timeout=0.2)
            except TimeoutError:
                continue
            if frame.get("type") == "invokefunction" and frame.get("function_id") == self.fn:
                callee.answer(frame, {"echo": frame["data"]["n"]})

    def _call(self, caller: RawClient, t0: float, until: threading.Event) -> None:
        while not until.is_set():
            n = uuid.uuid4().hex
            with self.lock:
                self.sent += 1
            start = time.monotonic()
            try:
                res = caller.call(self.fn, {"n": n}, timeout=10)
            except Exception as exc:  # a timeout is a lost call
                with self.lock:
                    self.failures.append(repr(exc))
                return
            took = time.monotonic() - start
            with self.lock:
                if res.get("error") is not None or res.get("result") != {"echo": n}:
                    self.failures.append(res)
                else:
                    self.answered += 1
                    self.latencies.append((start - t0, took))


def _summary(latencies: list[tuple[float, float]], lo: float, hi: float) -> str:
    window = sorted(took for at, took in latencies if lo <= at < hi)
    if not window:
        return "no calls"
    p99 = window[min(len(window) - 1, int(len(window) * 0.99))]
    return (f"{len(window)} calls, p50 {statistics.median(window) * 1000:.1f} ms, "
            f"p99 {p99 * 1000:.1f} ms, max {window[-1] * 1000:.1f} ms")


def test_calls_keep_flowing_through_a_kill_of_the_observability_process(rig: Rig) -> None:
    eng = rig.engine
    load = Load(eng, fid("obs::under-load"))
    until = threading.Event()
    t0 = time.monotonic()
    runner = threading.Thread(target=load.run, args=(t0, until), daemon=True)
    runner.start()
    poll(lambda: load.answered >= IN_FLIGHT, 20, "the load running")
    loaded_at = time.monotonic() - t0
    time.sleep(KILL_AT_S)  # pacing the load, not an assertion
    killed_at = time.monotonic() - t0
    pid = eng.kill("observability")
    eng.wait_running("observability", 20, not_pid=pid)
    back_at = time.monotonic() - t0
    while time.monotonic() - t0 < max(loaded_at + LOAD_S, back_at + 2.0):
        time.sleep(0.05)  # pacing: the load keeps going past the restart
    until.set()
    runner.join(60)
    assert not runner.is_alive(), "the load did not finish"
    print(f"\nload: {load.sent} sent, {load.answered} answered, kill at {killed_at:.2f}s, "
          f"observability RUNNING again at {back_at:.2f}s")
    print(f"  before the kill:  {_summary(load.latencies, loaded_at, killed_at)}")
    print(f"  kill..restart+1s: {_summary(load.latencies, killed_at, back_at + 1.0)}")
    print(f"  after:            {_summary(load.latencies, back_at + 1.0, 1e9)}")
    assert load.failures == [], load.failures[:5]
    assert load.answered == load.sent, (load.sent, load.answered)
    assert any(killed_at <= at < back_at for at, _ in load.latencies), "no call made while it was down"

    # the stores answer again and store what comes
    with RawClient.declared(eng.url, "obs-after-kill") as w:
        health = w.wait_answered("engine::health::check", {}, within=15)["result"]
        assert health["status"] == "healthy", health
    fn = fid("obs::after-restart")
    trace = uuid.uuid4().hex
    caller, callee = connect_pair(eng, fn)
    with caller, callee:
        inv = str(uuid.uuid4())
        caller.send({"type": "invokefunction", "function_id": fn, "invocation_id": inv, "data": {},
                     "traceparent": f"00-{trace}-{uuid.uuid4().hex[:16]}-01"})
        callee.answer(callee.next_call(fn, timeout=10), {"ok": True})
        ok(caller.recv_until(lambda f: f.get("invocation_id") == inv, timeout=10))
        spans = poll(lambda: ok(caller.call("engine::traces::list", {"trace_id": trace}))["spans"], 10,
                     "a span stored after the restart")
        assert spans[0]["name"] == f"call {fn}" and spans[0]["status"] == "ok", spans

    # what the gateway could not hand over while it was down is counted
    def dropped() -> float | None:
        status, _ = http_get(rig.prom + "/healthz")
        if status != 200:
            return None
        return sample(scrape(rig.prom), "iii_telemetry_dropped_total", process="gateway")
    count = poll(dropped, 10, "iii_telemetry_dropped_total{process=gateway} > 0 after the restart")
    print(f"  telemetry dropped by the gateway: {count:.0f}")
    status, body = poll(lambda: (lambda r: r if r[0] == 200 else None)(http_get(rig.prom + "/readyz")),
                        10, "/readyz 200 after the restart")
    assert json.loads(body)["ready"] is True, body
