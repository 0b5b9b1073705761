"""Calls routed across engine hosts (issue 19): two hosts on one Redis, a raw worker on A
calling a function registered only on B; local preferred; gateway to gateway, past the
cluster processes; a host, and a host's gateway, killed with kill -9.

The hosts' config is reference-style (only ``iii-state`` on the ``redis`` adapter): that
alone makes each engine a cluster host (``brokers/cluster``)."""
from __future__ import annotations

import os
import signal
import statistics
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Iterator

import psutil
import pytest

from tests.twohosts import two_hosts
from tests.wsclient import RawClient

STATE_ON_REDIS = """\
- name: iii-state
  config:
    adapter: {name: redis, config: {redis_url: "{redis_url}"}}
"""
WINDOW_S = 3.0 + 1.0 + 1.0
"""The cluster's default heartbeat ttl, one heartbeat, and a margin."""


def fid(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def hosts(redis_server):
    with two_hosts(redis_server, STATE_ON_REDIS) as (a, b):
        yield a, b


def serve(callee: RawClient, answer=lambda inv: {"host": "B", "echo": inv.get("data")}, count: int = 1,
          timeout: float = 15.0) -> threading.Thread:
    def run() -> None:
        for _ in range(count):
            inv = callee.recv_until(lambda f: f.get("type") == "invokefunction", timeout)
            callee.answer(inv, answer(inv))
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def listed(url: str, function_id: str) -> bool:
    with RawClient.declared(url, "lister") as c:
        rows = c.call("engine::functions::list", {}, timeout=5)["result"]["functions"]
    return any(r["function_id"] == function_id for r in rows)


def wait_until(pred, within: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < within:
        if pred():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"not within {within}s: {what}")


def wait_direct(host, peer: str, within: float = 10.0) -> None:
    """Until ``host``'s gateway has said it calls ``peer`` (``<host>/<node>``) directly: the
    other host's gateway is known there (the first calls may go through the relay before)."""
    def known() -> bool:
        lines = [ln for ln in host.log_tail(400000).splitlines() if "of other hosts directly:" in ln]
        return bool(lines) and peer in lines[-1].rsplit("directly:", 1)[1].strip().split(", ")
    wait_until(known, within, f"{peer} known to the gateway directly")


def test_a_worker_on_A_calls_a_function_registered_only_on_B(hosts) -> None:
    a, b = hosts
    fn = fid("onb::echo")
    with RawClient.worker(b.url) as callee, RawClient.declared(a.url, "caller-a") as caller:
        callee.register_function(fn)
        callee.declare("callee-b")
        t = serve(callee)
        res = caller.call_when_found(fn, {"x": 1}, within=10)["result"]
        t.join(5)
        assert res["host"] == "B"
        assert res["echo"]["x"] == 1
        assert res["echo"]["_caller_worker_id"] == caller.worker_id
        assert listed(a.url, fn)


def test_an_error_result_crosses_hosts_as_it_is(hosts) -> None:
    a, b = hosts
    fn = fid("onb::fail")
    with RawClient.worker(b.url) as callee, RawClient.declared(a.url, "caller-a") as caller:
        callee.register_function(fn)
        callee.declare("callee-b")

        def run() -> None:
            inv = callee.recv_until(lambda f: f.get("type") == "invokefunction", 15)
            callee.send({"type": "invocationresult", "invocation_id": inv["invocation_id"], "function_id": fn,
                         "error": {"code": "boom", "message": "it broke on B"}})
        t = threading.Thread(target=run, daemon=True)
        t.start()
        frame = caller.call_when_found(fn, {}, within=10)
        t.join(5)
        err = frame.get("error")
        assert err and err["code"] == "boom" and "broke on B" in err["message"]


def test_a_function_on_both_hosts_is_served_locally(hosts) -> None:
    a, b = hosts
    fn = fid("both::where")
    with RawClient.worker(b.url) as on_b, RawClient.worker(a.url) as on_a, \
            RawClient.declared(a.url, "caller-a") as caller:
        on_b.register_function(fn)
        on_b.declare("on-b")
        t = serve(on_b)
        assert caller.call_when_found(fn, {}, within=10)["result"]["host"] == "B"
        t.join(5)
        on_a.register_function(fn)
        on_a.declare("on-a")
        ta = serve(on_a, answer=lambda inv: {"host": "A"}, count=5)
        wait_until(lambda: listed(a.url, fn), 5, "listed on A")
        time.sleep(0.3)
        assert [caller.call(fn, {}, timeout=5)["result"]["host"] for _ in range(5)] == ["A"] * 5
        ta.join(5)
        # B sees its own worker's function, not A's
        with RawClient.declared(b.url, "caller-b") as cb:
            tb = serve(on_b)
            assert cb.call(fn, {}, timeout=5)["result"]["host"] == "B"
            tb.join(5)
        # A's worker leaves: A's calls go to B again
        on_a.close()

        tb = serve(on_b, timeout=10)

        def remote_again() -> bool:
            frame = caller.call(fn, {}, timeout=5)
            return (frame.get("result") or {}).get("host") == "B"
        wait_until(remote_again, 10, "B serves again once A's worker left")
        tb.join(5)


def test_a_workers_call_goes_gateway_to_gateway_past_both_cluster_processes(hosts) -> None:
    """The direct path: with both hosts' cluster processes frozen (well inside the heartbeat
    ttl), a call from A's worker still reaches B's worker and comes back."""
    a, b = hosts
    fn = fid("direct::echo")
    with RawClient.worker(b.url) as callee, RawClient.declared(a.url, "caller-a") as caller:
        callee.register_function(fn)
        callee.declare("callee-b")
        t = serve(callee, count=21)
        caller.call_when_found(fn, {}, within=10)
        wait_direct(a, "B/gateway")
        frozen = [psutil.Process(a.pid("cluster")), psutil.Process(b.pid("cluster"))]
        for p in frozen:
            p.suspend()
        try:
            got = [caller.call(fn, {"i": i}, timeout=5)["result"]["echo"]["i"] for i in range(20)]
        finally:
            for p in frozen:
                p.resume()
        t.join(5)
        assert got == list(range(20))


STATE_ON_REDIS_BUILTIN_QUEUE = STATE_ON_REDIS + """\
- name: iii-queue
  config:
    queue_configs: {"default": {"max_retries": 1, "concurrency": 4}}
"""


def test_an_engine_process_reaches_another_hosts_worker_through_the_cluster_relay(redis_server) -> None:
    """Not a gateway's call: A's own (builtin) queue delivers a job to a function only B's
    worker serves, through A's cluster process, B's cluster process and B's gateway."""
    with two_hosts(redis_server, STATE_ON_REDIS_BUILTIN_QUEUE) as (a, b), \
            reachable(a, b, "relay::job", direct=False) as (fn, caller, callee):
        t = serve(callee, answer=lambda inv: {"job": inv.get("data")})
        receipt = caller.call(fn, {"n": 7}, action={"type": "enqueue", "queue": "default"})
        assert receipt.get("error") is None, receipt
        t.join(10)
        assert not t.is_alive(), "B's worker never got the job A's queue delivered"


@contextmanager
def reachable(a, b, stem: str, direct: bool = True) -> Iterator[tuple]:
    """B's worker serves a fresh function that A's worker has called once already, and
    (``direct``) A's gateway calls B's directly: ``(fn, caller on A, callee on B)``."""
    fn = fid(stem)
    with RawClient.worker(b.url) as callee, RawClient.declared(a.url, "caller-a") as caller:
        callee.register_function(fn)
        callee.declare("callee-b")
        t = serve(callee)
        caller.call_when_found(fn, {}, within=10)
        t.join(5)
        if direct:
            wait_direct(a, f"{b.host_id}/gateway")
        yield fn, caller, callee


def test_gateways_take_calls_on_the_configured_ports_else_through_the_relay(redis_server) -> None:
    """``engine.cluster.gateway_ports``: B's gateway listens on its one port; A's one port is
    taken, so A's gateway says so and has no endpoint: calls between A's workers and B's go
    through the cluster processes, both ways."""
    import json
    import socket

    import redis
    from tests.harness import free_port
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    busy, free = taken.getsockname()[1], free_port()
    try:
        with two_hosts(redis_server, STATE_ON_REDIS, clusters=(f"{{gateway_ports: '{busy}-{busy}'}}",
                                                               f"{{gateway_ports: '{free}-{free}'}}")) as (a, b), \
                reachable(a, b, "ports::onb", direct=False) as (fn, caller, callee), \
                reachable(b, a, "ports::ona", direct=False):
            entry = redis.Redis.from_url(a.redis_url)
            nodes = {h: json.loads(entry.get(f"iii:cluster:host:{h}"))["nodes"] for h in ("A", "B")}
            assert nodes["A"] == {} and nodes["B"]["gateway"][0] == f"tcp://127.0.0.1:{free}", nodes
            assert "no port of" in a.log_tail()
            t = serve(callee)
            assert caller.call(fn, {}, timeout=5)["result"]["host"] == "B"
            t.join(5)
    finally:
        taken.close()


@contextmanager
def call_in_flight(redis_server, stem: str, inv_id: str) -> Iterator[tuple]:
    """Fresh hosts A and B and ``reachable``; then a call of A's worker (``inv_id``) is
    delivered and not answered yet: ``(a, b, fn, caller, callee, inv)``."""
    with two_hosts(redis_server, STATE_ON_REDIS) as (a, b), reachable(a, b, stem) as (fn, caller, callee):
        caller.send({"type": "invokefunction", "invocation_id": inv_id, "function_id": fn, "data": {}})
        inv = callee.recv_until(lambda f: f.get("invocation_id") == inv_id, 10)
        yield a, b, fn, caller, callee, inv


def test_kill_9_of_Bs_gateway_stops_the_call_waiting_on_it_from_A(redis_server) -> None:
    """B's gateway restarts with a new endpoint: A's gateways get a RESET of its old one."""
    with call_in_flight(redis_server, "gwdies::slow", "inv-gw") as (a, b, fn, caller, callee, inv):
        old = b.kill("gateway")
        frame = caller.recv_until(lambda f: f.get("invocation_id") == "inv-gw", WINDOW_S + 5)
        assert frame["error"]["code"] == "invocation_stopped"
        b.wait_running("gateway", 10, not_pid=old)


def test_kill_9_of_As_cluster_process_loses_no_answer_in_flight(redis_server) -> None:
    """A cluster process that restarts (within the heartbeat ttl) ends no gateway's life: a
    call from A's worker delivered to B's worker meanwhile still gets its answer."""
    with call_in_flight(redis_server, "clusterdies::slow", "inv-kept") as (a, b, fn, caller, callee, inv):
        old = a.kill("cluster")
        a.wait_running("cluster", 10, not_pid=old)
        time.sleep(1.5)  # B has read A's new entry (another cluster epoch) by now
        callee.answer(inv, {"late": True})
        frame = caller.recv_until(lambda f: f.get("invocation_id") == "inv-kept", 10)
        assert frame.get("result") == {"late": True}, frame
        t = serve(callee)  # and the next call goes as before
        assert caller.call_when_found(fn, {}, within=10)["result"]["host"] == "B"
        t.join(5)


def test_round_trip_cross_host_against_same_host(hosts) -> None:
    a, b = hosts
    fn_b, fn_a = fid("rt::b"), fid("rt::a")
    n = 300
    with RawClient.worker(b.url) as on_b, RawClient.worker(a.url) as on_a, \
            RawClient.declared(a.url, "caller-a") as caller:
        on_b.register_function(fn_b)
        on_b.declare("rt-b")
        on_a.register_function(fn_a)
        on_a.declare("rt-a")
        tb = serve(on_b, answer=lambda inv: 1, count=n + 1)
        ta = serve(on_a, answer=lambda inv: 1, count=n + 1)
        caller.call_when_found(fn_b, {}, within=10)
        caller.call_when_found(fn_a, {}, within=10)
        out = {}
        for name, fn in (("same", fn_a), ("cross", fn_b)):
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                caller.call(fn, {}, timeout=5)
                times.append(time.perf_counter() - t0)
            out[name] = statistics.median(times) * 1e6
        ta.join(5)
        tb.join(5)
        print(f"\nround trip p50, 1 in flight (raw client): same-host {out['same']:.0f} us, "
              f"cross-host {out['cross']:.0f} us")


def test_kill_9_of_B_stops_its_callers_and_withdraws_its_functions(redis_server) -> None:
    with call_in_flight(redis_server, "dies::slow", "inv-dies") as (a, b, fn, caller, callee, inv):
        # B's worker never answers; the whole engine B goes at once: its supervisor's
        # group and any child that left it.
        # Frozen first: a child's PDEATHSIG is SIGTERM, and one that ran its handler
        # before our SIGKILL reached it would say goodbye (a host that crashes cannot)
        procs = [psutil.Process(b.proc.pid), *psutil.Process(b.proc.pid).children(recursive=True)]
        for p in procs:
            try:
                p.suspend()
            except psutil.Error:
                pass
        killed = time.monotonic()
        os.killpg(b.proc.pid, signal.SIGKILL)
        for p in procs:
            try:
                p.kill()
            except psutil.Error:
                pass
        frame = caller.recv_until(lambda f: f.get("invocation_id") == "inv-dies", WINDOW_S + 2)
        stopped_after = time.monotonic() - killed
        assert frame["error"]["code"] == "invocation_stopped"
        assert 1.0 < stopped_after < WINDOW_S  # by the heartbeat, not by a goodbye
        gone_after = wait_until(lambda: not listed(a.url, fn), WINDOW_S, "B's function leaves A's list")
        print(f"\nkill -9 of B: caller stopped after {stopped_after:.2f}s, listing clean "
              f"{stopped_after + gone_after:.2f}s after the kill")
        assert caller.call(fn, {}, timeout=5)["error"]["code"] == "function_not_found"
