"""The asyncio shell over a real WebSocket against an in-process fake engine."""
from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Iterator

import pytest

from iii import InitOptions, InvocationError, Logger, ReconnectionConfig, TriggerAction, register_worker
from sdk.worker import III
from tests.unit.sdk.fake_engine import FakeEngine


@pytest.fixture
def eng() -> Iterator[FakeEngine]:
    e = FakeEngine()
    yield e
    e.stop()


def worker(url: str, **kw: Any) -> III:
    kw.setdefault("reconnection_config", ReconnectionConfig(initial_delay_ms=50, max_delay_ms=200))
    return register_worker(url, InitOptions(daemon=True, **kw))


def wait_for(pred: Any, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_register_worker_returns_at_once_and_calls_before_connect_are_queued(eng: FakeEngine):
    t0 = time.monotonic()
    iii = worker(eng.url)
    iii.register_function("math::add", lambda d: {"result": d["a"] + d["b"]})
    assert time.monotonic() - t0 < 0.5
    try:
        assert iii.trigger({"function_id": "math::add", "payload": {"a": 2, "b": 3}}) == {"result": 5}
    finally:
        iii.shutdown()


def test_sync_handler_may_block_in_trigger_and_async_gets_metadata(eng: FakeEngine):
    iii = worker(eng.url)
    seen: list[Any] = []

    def add(data):  # sync handler: runs in the pool, blocks in trigger
        iii.trigger({"function_id": "state::set", "payload": {"scope": "math", "key": "k", "value": data["a"] + data["b"]}})
        return {"result": data["a"] + data["b"]}

    async def outer(data, metadata=None):
        seen.append((metadata, threading.current_thread().name))
        return await iii.trigger_async({"function_id": "math::add", "payload": data})

    iii.register_function("math::add", add)
    iii.register_function("math::outer", outer)
    try:
        assert iii.trigger({"function_id": "math::outer", "payload": {"a": 1, "b": 4}, "metadata": {"m": 1}}) == {"result": 5}
        assert eng.state[("math", "k")] == 5
        assert seen == [({"m": 1}, "iii-sdk-loop")]
        assert iii.trigger({"function_id": "math::add", "payload": {"a": 1, "b": 1},
                            "action": TriggerAction.Void()}) is None
    finally:
        iii.shutdown()


def test_trigger_async_from_another_loop_and_errors(eng: FakeEngine):
    iii = worker(eng.url)

    def boom(_data):
        raise RuntimeError("boom")

    iii.register_function("math::boom", boom)

    async def main() -> None:
        with pytest.raises(InvocationError) as info:
            await iii.trigger_async({"function_id": "math::boom", "payload": {}})
        assert info.value.code == "invocation_failed" and info.value.message == "boom"
        assert "RuntimeError: boom" in info.value.stacktrace
        with pytest.raises(InvocationError) as nf:
            await iii.trigger_async({"function_id": "nope::x", "payload": {}})
        assert nf.value.code == "function_not_found"

    try:
        asyncio.run(main())
    finally:
        iii.shutdown()


def test_an_inner_error_re_raised_by_a_handler_reaches_the_caller_unchanged(eng: FakeEngine):
    iii = worker(eng.url)

    def price(data):
        raise ValueError(f"no price for {data['item']}")

    def quote(data):
        return iii.trigger({"function_id": "shop::price", "payload": data})  # raises; not caught

    iii.register_function("shop::price", price)
    iii.register_function("shop::quote", quote)
    try:
        with pytest.raises(InvocationError) as info:
            iii.trigger({"function_id": "shop::quote", "payload": {"item": "kite"}})
        assert info.value.code == "invocation_failed"
        assert info.value.message == "no price for kite"
    finally:
        iii.shutdown()


def test_client_timeout_and_shutdown_fails_pending(eng: FakeEngine):
    iii = worker(eng.url)
    release = threading.Event()
    iii.register_function("slow::x", lambda d: release.wait(5))
    try:
        t0 = time.monotonic()
        with pytest.raises(InvocationError) as info:
            iii.trigger({"function_id": "slow::x", "payload": {}, "timeout_ms": 200})
        assert info.value.code == "TIMEOUT" and 0.15 < time.monotonic() - t0 < 1.0
        errors: list[BaseException] = []

        def call() -> None:
            try:
                iii.trigger({"function_id": "slow::x", "payload": {}})
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        t = threading.Thread(target=call)
        t.start()
        wait_for(lambda: len(iii.core.pending) == 1)
    finally:
        iii.shutdown()  # before the handler is released, or its answer could win the race
        release.set()
    t.join(5)
    assert isinstance(errors[0], InvocationError) and errors[0].code == "SHUTDOWN"


def test_reconnect_reattaches_and_replays(eng: FakeEngine):
    iii = worker(eng.url)
    iii.register_function("math::add", lambda d: {"result": d["a"] + d["b"]})
    try:
        assert iii.trigger({"function_id": "math::add", "payload": {"a": 2, "b": 3}}) == {"result": 5}
        first_id = iii.worker_id
        eng.drop_all()
        wait_for(lambda: len(eng.frames) == 2 and len(eng.frames[1]) >= 3)
        replay = eng.frames[1]
        assert replay[0]["type"] == "reattach" and replay[0]["previous_worker_id"] == first_id
        assert replay[0]["reattach_token"]
        assert replay[1] == {"id": "math::add", "type": "registerfunction"}
        assert replay[2]["function_id"] == "engine::workers::register"
        assert iii.trigger({"function_id": "math::add", "payload": {"a": 1, "b": 1}}) == {"result": 2}
        assert iii.worker_id != first_id
    finally:
        iii.shutdown()


def test_logger_falls_back_to_python_logging(eng: FakeEngine, caplog: pytest.LogCaptureFixture):
    iii = worker(eng.url)
    try:
        assert iii.wait_connected(5)
        with caplog.at_level("INFO", logger="iii"):
            Logger().info("Math add completed", {"id": "x", "result": 5})
            time.sleep(0.2)  # the probe answers: the engine has no engine::log::*
            Logger().info("second", {"n": 2})
        assert 'Math add completed {"id": "x", "result": 5}' in caplog.text and "second" in caplog.text
        assert not any(f.get("function_id", "").startswith("engine::log::") for f in eng.frames[0])
    finally:
        iii.shutdown()


def test_logger_uses_engine_log_functions_when_present_and_telemetry_is_off():
    eng = FakeEngine(log_functions=True)
    iii = worker(eng.url, otel={"enabled": False})  # with telemetry on, logs go to /otel
    try:
        assert iii.wait_connected(5)
        Logger().info("probe")  # starts the probe, goes to Python logging
        wait_for(lambda: iii.engine_log_functions())
        Logger().info("Math add completed", {"result": 5})
        wait_for(lambda: any(f.get("function_id") == "engine::log::info" for f in eng.frames[0]))
        [frame] = [f for f in eng.frames[0] if f.get("function_id") == "engine::log::info"]
        assert frame["data"] == {"message": "Math add completed", "data": {"result": 5}}
        assert frame["action"] == {"type": "void"} and "invocation_id" not in frame
    finally:
        iii.shutdown()
        eng.stop()


def test_trigger_type_provider_answers(eng: FakeEngine):
    iii = worker(eng.url)
    got: list[Any] = []

    class Handler:
        async def register_trigger(self, config):
            got.append(config)
            if config.config.get("url") == "bad":
                raise ValueError("bad url")

        def unregister_trigger(self, config):
            got.append(("un", config.id))

    iii.register_trigger_type({"id": "webhook", "description": "Webhook trigger"}, Handler())
    try:
        assert iii.wait_connected(5)
        # the fake engine records a connection once its handler runs, after our handshake
        wait_for(lambda: eng.frames and any(f.get("type") == "registertriggertype" for f in eng.frames[0]))
        eng.send_to(0, {"type": "registertrigger", "id": "b1", "trigger_type": "webhook",
                        "function_id": "math::add", "config": {"url": "/hook"}})
        eng.send_to(0, {"type": "registertrigger", "id": "b2", "trigger_type": "webhook",
                        "function_id": "math::add", "config": {"url": "bad"}})
        eng.send_to(0, {"type": "unregistertrigger", "id": "b1", "trigger_type": "webhook"})
        wait_for(lambda: len([f for f in eng.frames[0] if f.get("type") == "triggerregistrationresult"]) == 2)
        res = [f for f in eng.frames[0] if f.get("type") == "triggerregistrationresult"]
        assert res[0] == {"type": "triggerregistrationresult", "id": "b1", "trigger_type": "webhook",
                          "function_id": "math::add"}
        assert res[1]["error"] == {"code": "trigger_registration_failed", "message": "bad url"}
        wait_for(lambda: ("un", "b1") in got)
    finally:
        iii.shutdown()


def test_function_and_trigger_refs_unregister(eng: FakeEngine):
    iii = worker(eng.url)
    try:
        assert iii.wait_connected(5)
        ref = iii.register_function("orders::create", lambda d: 1)
        trig = iii.register_trigger({"type": "http", "function_id": "orders::create",
                                     "config": {"api_path": "/orders", "http_method": "POST"}})
        ref.unregister()
        trig.unregister()
        with pytest.raises(ValueError):
            iii.register_function("iii::mine", lambda d: 1)
        wait_for(lambda: eng.frames and any(f.get("type") == "unregistertrigger" for f in eng.frames[0]))
        kinds = [f["type"] for f in eng.frames[0] if f["type"] != "invokefunction"]
        assert kinds == ["registerfunction", "registertrigger", "unregisterfunction", "unregistertrigger"]
        reg = [f for f in eng.frames[0] if f["type"] == "registertrigger"][0]
        assert reg["trigger_type"] == "http" and reg["config"] == {"api_path": "/orders", "http_method": "POST"}
        assert "orders::create" not in eng.owners
        iii.register_function("orders::create", lambda d: 2)  # the id is free again
        assert iii.trigger({"function_id": "orders::create", "payload": {}}) == 2
    finally:
        iii.shutdown()


def test_many_threads_and_a_foreign_loop_call_at_once_and_each_gets_its_own_answer(eng: FakeEngine):
    iii = worker(eng.url)

    async def echo(data):
        return {"n": data["n"], "t": data["t"]}

    iii.register_function("echo::x", echo)
    wrong: list[Any] = []

    def lane(t: int) -> None:
        for n in range(150):
            out = iii.trigger({"function_id": "echo::x", "payload": {"n": n, "t": t}})
            if out != {"n": n, "t": t}:
                wrong.append(out)

    async def async_lanes() -> list[Any]:
        return await asyncio.gather(*(iii.trigger_async({"function_id": "echo::x", "payload": {"n": n, "t": -1}})
                                      for n in range(300)))
    try:
        threads = [threading.Thread(target=lane, args=(t,)) for t in range(16)]
        for th in threads:
            th.start()
        results = asyncio.run(async_lanes())
        for th in threads:
            th.join(20)
        assert not any(th.is_alive() for th in threads)
        assert wrong == []
        assert results == [{"n": n, "t": -1} for n in range(300)]
        assert iii.core.pending == {}
    finally:
        iii.shutdown()


def test_run_on_running_loop_needs_no_thread_of_its_own(eng: FakeEngine):
    with pytest.raises(RuntimeError):  # outside a running loop the option is refused
        worker(eng.url, run_on_running_loop=True)

    async def main() -> None:
        before = {t.name for t in threading.enumerate()}
        iii = worker(eng.url, run_on_running_loop=True)
        loop_thread = threading.current_thread().name
        seen: list[str] = []

        async def double(data):
            seen.append(threading.current_thread().name)
            return data["n"] * 2

        def add_then_double(data):  # a def handler (pool thread) blocking on a call back to the loop
            return iii.trigger({"function_id": "math::double", "payload": {"n": data["a"] + data["b"]}})

        iii.register_function("math::double", double)
        iii.register_function("math::add-double", add_then_double)
        try:
            assert await iii.wait_connected_async(5)
            assert "iii-sdk-loop" not in {t.name for t in threading.enumerate()} - before
            assert await iii.trigger_async({"function_id": "math::double", "payload": {"n": 4}}) == 8
            assert await iii.trigger_async({"function_id": "math::add-double", "payload": {"a": 1, "b": 2}}) == 6
            assert await asyncio.gather(*(iii.trigger_async({"function_id": "math::double", "payload": {"n": n}})
                                          for n in range(50))) == [2 * n for n in range(50)]
            assert set(seen) == {loop_thread}
            with pytest.raises(RuntimeError):
                iii.trigger({"function_id": "math::double", "payload": {"n": 1}})  # would block the loop
        finally:
            await iii.shutdown_async()
        with pytest.raises(InvocationError) as info:
            await iii.trigger_async({"function_id": "math::double", "payload": {"n": 1}})
        assert info.value.code == "SHUTDOWN"

    asyncio.run(main())
