"""The process model under failure (issue 2): gateway and router are separate OS processes,
and `kill -9` of either is repaired by the supervisor without touching the SDK workers.

Restart: the process is RUNNING again with a new pid within 1 s. Service: an official Node
worker and an official Python worker that were connected before the kill are calling each
other again within a few seconds, with no restart of theirs (they reconnect by themselves
after a gateway crash; a router crash must not even disconnect them).
"""
from __future__ import annotations

import signal
import time
import uuid

import psutil
import pytest

from tests.interop.sdkworkers import SdkWorker, check_installed

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def test_gateway_and_router_are_separate_processes(engine):
    gw, rt = engine.pid("gateway"), engine.pid("router")
    sup = engine.proc.pid
    assert len({gw, rt, sup}) == 3
    for pid in (gw, rt):
        proc = psutil.Process(pid)
        assert proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
        # children of the supervisor, not threads of it
        assert sup in [p.pid for p in proc.parents()]
    listening = {c.laddr.port for c in psutil.Process(gw).net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN}
    assert engine.port in listening, "the gateway process owns the worker port"


@pytest.fixture
def pair(engine):
    """A Node callee and a Python callee, each also a caller of the other."""
    check_installed()
    n_fn, p_fn = f"crash::node-{uuid.uuid4().hex[:6]}", f"crash::py-{uuid.uuid4().hex[:6]}"
    node = SdkWorker("node", engine.url, register=[{"op": "register", "function_id": n_fn,
                                                     "kind": "add"}])
    py = SdkWorker("python", engine.url, register=[{"op": "register", "function_id": p_fn,
                                                     "kind": "add"}])
    try:
        node.ready()
        py.ready()
        assert py.call_when_found(n_fn, {"a": 1, "b": 1})["result"] == {"c": 2}
        assert node.call_when_found(p_fn, {"a": 1, "b": 2})["result"] == {"c": 3}
        yield node, py, n_fn, p_fn
    finally:
        node.stop()
        py.stop()


def serving_again(node, py, n_fn, p_fn, within: float) -> float:
    """Seconds until both directions answer again (fails after ``within``)."""
    t0 = time.monotonic()
    for caller, fn in ((py, n_fn), (node, p_fn)):
        while True:
            ev = caller.trigger(fn, {"a": 20, "b": 1}, timeout_ms=2000, timeout=5)
            if ev["ok"]:
                assert ev["result"] == {"c": 21}
                break
            assert time.monotonic() - t0 < within, f"not serving after {within}s: {ev}"
            time.sleep(0.2)
    return time.monotonic() - t0


@pytest.mark.parametrize("victim", ["gateway", "router"])
def test_kill_9_restarted_within_1s_and_workers_serve_again(engine, pair, victim):
    node, py = pair[0], pair[1]
    node_pid, py_pid = node.proc.pid, py.proc.pid

    old = engine.kill(victim, signal.SIGKILL)
    killed_at = time.time()
    entry = engine.wait_running(victim, timeout=3, not_pid=old)
    # Measured from the new process's start time: `status` itself is a subprocess whose
    # latency must not count against the supervisor.
    restarted_after = psutil.Process(entry["pid"]).create_time() - killed_at
    assert restarted_after < 1.0, f"{victim} respawned {restarted_after:.2f}s after kill -9"
    assert entry["pid"] != old and entry.get("restarts", 1) >= 1

    took = serving_again(*pair, within=10)
    assert took < 10
    # Same worker processes: nobody restarted them.
    assert node.proc.poll() is None and py.proc.poll() is None
    assert (node.proc.pid, py.proc.pid) == (node_pid, py_pid)


def test_two_gateway_processes_share_the_port_and_route_between_them(engine_factory):
    """`processes: 2`: two gateway processes on one port; calls work whichever one a worker
    lands on (the kernel spreads connections over SO_REUSEPORT listeners)."""
    check_installed()
    eng = engine_factory(gateway_processes=2)
    names = {p["name"] for p in eng.status()}
    assert {"gateway-0", "gateway-1", "router"} <= names, names
    assert eng.pid("gateway-0") != eng.pid("gateway-1")
    workers = []
    try:
        fns = []
        for i in range(4):
            fn = f"multi::add{i}-{uuid.uuid4().hex[:6]}"
            fns.append(fn)
            workers.append(SdkWorker("node" if i % 2 else "python", eng.url,
                                     register=[{"op": "register", "function_id": fn,
                                                "kind": "add"}]))
        for w in workers:
            w.ready()
        # Which gateway holds each worker is up to the kernel: check the spread happened.
        holders = set()
        for gw in ("gateway-0", "gateway-1"):
            conns = psutil.Process(eng.pid(gw)).net_connections("tcp")
            if any(c.status == psutil.CONN_ESTABLISHED and c.laddr.port == eng.port for c in conns):
                holders.add(gw)
        for caller in workers:
            for i, fn in enumerate(fns):
                ev = caller.call_when_found(fn, {"a": i, "b": 100})
                assert ev["ok"] and ev["result"] == {"c": i + 100}, (caller, fn, ev, holders)
    finally:
        for w in workers:
            w.stop()
