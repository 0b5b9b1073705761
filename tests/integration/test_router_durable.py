"""Durable bindings (``engine::register_trigger``, protocol §6.4) in a real engine: they
outlive their caller's connection, a ``kill -9`` of the router and a whole-engine stop and
start on the same data dir, keep their id, reach their provider again, and an
``engine::unregister_trigger`` stays done across a restart. A corrupt bindings file is set
aside and does not stop the router.

A raw worker is the provider of a custom trigger type; another raw client is the binder.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
import uuid
from typing import Iterator

import pytest

from tests.harness import Engine, running_engine, start_engine
from tests.wsclient import Frame, RawClient, ok

CONFIG = """\
engine:
  runtime_dir: {runtime_dir}
  data_dir: %s
workers:
  - name: iii-worker-manager
    config:
      host: 127.0.0.1
      port: {port}
"""
"""An engine config whose data dir is fixed: ``Engine.stop`` removes the runtime dir, and
the harness's default data dir lives inside it."""


def bindings_file(eng: Engine) -> str:
    return os.path.join(eng.data_dir, "router", "triggers.json")


def provide(url: str, ttype: str) -> RawClient:
    """A declared worker providing ``ttype``, returned once the router lists the type."""
    w = RawClient.declared(url, f"provider-{ttype}")
    w.send({"type": "registertriggertype", "id": ttype, "description": "durable test type"})
    wait_type_listed(w, ttype)
    return w


def wait_type_listed(w: RawClient, ttype: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while True:
        frame = w.call_when_found("engine::triggers::list", {"prefix": ttype})
        if any(t["id"] == ttype for t in (frame.get("result") or {}).get("triggers", [])):
            return
        assert time.monotonic() < deadline, f"{ttype} never listed: {frame}"
        time.sleep(0.05)


def listed(w: RawClient, ttype: str) -> list[dict]:
    """``engine::registered-triggers::list`` for one type, once the router answers."""
    return ok(w.call_when_found("engine::registered-triggers::list", {"trigger_type": ttype}))[
        "registered_triggers"]


def register(binder: RawClient, provider: RawClient | None, ttype: str, fn: str) -> str:
    """``engine::register_trigger``; the provider (if any) accepts the binding it is sent."""
    inv = str(uuid.uuid4())
    binder.send({"type": "invokefunction", "function_id": "engine::register_trigger",
                 "invocation_id": inv,
                 "data": {"trigger_type": ttype, "function_id": fn, "config": {"every": 5}}})
    if provider is not None:
        sent = next_binding(provider, ttype)
        accept(provider, sent)
    answer = binder.recv_until(lambda f: f.get("type") == "invocationresult"
                               and f.get("invocation_id") == inv, 12.0)
    bid = ok(answer)["id"]
    if provider is not None:
        assert sent["id"] == bid and sent["function_id"] == fn and sent["config"] == {"every": 5}
    return bid


def next_binding(provider: RawClient, ttype: str, bid: str | None = None, timeout: float = 10.0) -> Frame:
    return provider.recv_until(lambda f: f.get("type") == "registertrigger" and f.get("trigger_type") == ttype
                               and (bid is None or f.get("id") == bid), timeout)


def accept(provider: RawClient, frame: Frame) -> None:
    provider.send({"type": "triggerregistrationresult", "id": frame["id"],
                   "trigger_type": frame["trigger_type"], "function_id": frame["function_id"]})


def restart_router(eng: Engine) -> None:
    old = eng.kill("router", signal.SIGKILL)
    eng.wait_running("router", timeout=5, not_pid=old)


def test_a_binding_survives_kill_9_of_the_router_and_unregister_sticks() -> None:
    ttype, fn = f"durable::tick-{uuid.uuid4().hex[:6]}", "durable::on-tick"
    with running_engine() as eng, provide(eng.url, ttype) as provider:
        with RawClient.declared(eng.url, "binder") as binder:
            bid = register(binder, provider, ttype, fn)
            # Acknowledged means on disk.
            with open(bindings_file(eng)) as f:
                assert [b["id"] for b in json.load(f)["bindings"]] == [bid]
        # The binder is gone: the binding is owner-less and stays.
        with RawClient.declared(eng.url, "observer") as obs:
            assert [r["id"] for r in listed(obs, ttype)] == [bid]

        restart_router(eng)
        # The restarted router learns the type from the gateway's replay and hands the
        # stored binding, same id, to its provider again.
        again = next_binding(provider, ttype, bid)
        assert again["function_id"] == fn and again["config"] == {"every": 5}
        accept(provider, again)
        with RawClient.declared(eng.url, "observer") as obs:
            rows = listed(obs, ttype)
            assert [(r["id"], r["function_id"], r["config"]) for r in rows] == [(bid, fn, {"every": 5})]
            info = ok(obs.call("engine::registered-triggers::info", {"id": bid}))
            assert info["trigger"]["id"] == ttype, "placed on its provider, not parked"

            assert ok(obs.call("engine::unregister_trigger", {"id": bid})) == {"removed": True}
            gone = provider.recv_until(lambda f: f.get("type") == "unregistertrigger", 5.0)
            assert gone["id"] == bid
            assert listed(obs, ttype) == []
            assert ok(obs.call("engine::unregister_trigger", {"id": bid})) == {"removed": False}

        restart_router(eng)
        with RawClient.declared(eng.url, "observer") as obs:
            wait_type_listed(obs, ttype)  # the provider's replay has reached the new router
            assert listed(obs, ttype) == []
        late = [f for f in provider.frames_within(0.5) if f.get("type") == "registertrigger"]
        assert late == [], "an unregistered binding came back"


@pytest.fixture
def data_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="iii-data-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_bindings_survive_an_engine_stop_and_start_on_the_same_data_dir(data_dir: str) -> None:
    ttype, fn, seen_fn = f"durable::cold-{uuid.uuid4().hex[:6]}", "durable::on-cold", "durable::on-worker"
    eng = start_engine(config_text=CONFIG % data_dir)
    try:
        with RawClient.declared(eng.url, "binder") as binder:
            parked = register(binder, None, ttype, fn)  # no provider yet: parked, still an id
            engine_bound = register(binder, None, "engine::workers-available", seen_fn)
    finally:
        eng.stop()

    eng = start_engine(config_text=CONFIG % data_dir)
    try:
        assert eng.data_dir != data_dir and os.path.exists(os.path.join(data_dir, "router", "triggers.json"))
        with RawClient.declared(eng.url, "target") as target:
            rows = listed(target, ttype)
            assert [(r["id"], r["function_id"]) for r in rows] == [(parked, fn)]
            # The engine's own trigger type: the binding fires again after the restart.
            target.register_function(seen_fn)
            with RawClient.declared(eng.url, "observer") as obs:
                wait_fn = obs.call_when_found("engine::functions::info", {"function_id": seen_fn})
                assert ok(wait_fn)["function_id"] == seen_fn
                with RawClient.declared(eng.url, "newcomer") as newcomer:
                    call = target.recv_until(lambda f: f.get("type") == "invokefunction"
                                             and f.get("function_id") == seen_fn
                                             and f["data"].get("worker_id") == newcomer.worker_id, 5.0)
                    assert call["data"]["event"] == "worker_connected"
            assert engine_bound in {r["id"] for r in ok(target.call(
                "engine::registered-triggers::list", {"include_internal": True}))["registered_triggers"]}
            # The provider arrives after the restart: the parked binding is handed to it.
            with provide(eng.url, ttype) as provider:
                sent = next_binding(provider, ttype, parked)
                assert sent["function_id"] == fn and sent["config"] == {"every": 5}
    finally:
        eng.stop()


def test_a_corrupt_bindings_file_is_set_aside_and_the_router_keeps_working() -> None:
    ttype = f"durable::bad-{uuid.uuid4().hex[:6]}"
    with running_engine() as eng, RawClient.declared(eng.url, "binder") as binder:
        register(binder, None, ttype, "durable::x")
        path = bindings_file(eng)
        with open(path, "wb") as f:
            f.write(b'{"version": 1, "bindings": [{"id": ')
        restart_router(eng)
        assert listed(binder, ttype) == []
        with open(path + ".corrupt", "rb") as f:
            assert f.read().startswith(b'{"version": 1')
        assert "unusable" in eng.log_tail()
        fresh = register(binder, None, ttype, "durable::y")
        with open(path) as f:
            assert [b["id"] for b in json.load(f)["bindings"]] == [fresh]
