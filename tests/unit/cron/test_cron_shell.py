"""The cron broker shell on the in-memory bus: it announces the ``cron`` trigger type,
refuses bad bindings with the reference's words, fires a per-second job with the §6.4
payload (awaiting each answer: a tick that passes while the handler runs is skipped),
keeps a binding the restarted router delivers again and drops one it does not."""
from __future__ import annotations

import asyncio
import datetime as dt
import time

import orjson
import pytest

from brokers.cron import service
from brokers.cron.service import CronBroker
from brokers.cron.unit import UNIT
from brokers.kit import frames, wire
from brokers.kit.localbus import LocalHub, Peer
from tests.localshell import answer, context, registrations, route, running

MEMORY = {"adapter": {"name": "kv", "config": {"store_method": "in_memory"}}}


def bind(router: Peer, tid: str, config: object, fn: str = "jobs::tick", **extra: object) -> None:
    router.send("cron", frames.down(None), wire.dumps(
        {"type": "registertrigger", "id": tid, "trigger_type": "cron", "function_id": fn,
         "config": config, **extra}))


async def result(router: Peer, tid: str) -> dict:
    """The provider's answer to binding ``tid`` (other UP frames, announcements, skipped)."""
    while True:
        _, _, body = await router.next(frames.UP)
        msg = orjson.loads(body)
        if msg["type"] == "triggerregistrationresult" and msg["id"] == tid:
            return msg


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


async def started(hub: LocalHub, raw_config: object = MEMORY):
    router, gw = hub.peer(frames.ROUTER), hub.peer("gw")
    ctx = context(UNIT, raw_config, peers=("gw",))
    return router, gw, running(CronBroker, ctx, hub)


async def test_announces_the_cron_trigger_type_with_its_config_schema() -> None:
    hub = LocalHub()
    router, gw, run = await started(hub)
    async with run:
        [tt] = registrations(router)["registertriggertype"]
        assert tt["id"] == "cron" and tt["description"] == "Cron-based scheduled triggers"
        schema = tt["trigger_request_format"]
        assert schema["required"] == ["expression"]
        assert set(schema["properties"]) == {"expression", "condition_function_id"}
        assert "registerfunction" not in registrations(router)


@pytest.mark.parametrize("config, message", [
    ({}, "Cron expression is required"),
    (None, "Cron expression is required"),
    ({"expression": ""}, "Cron expression is required"),
    ({"expression": 5}, "Cron expression is required"),
    ({"expression": "* * * * *"}, "Invalid cron expression '* * * * *': * * * * *\n         ^\n"),
    ({"expression": "* * * * * 0"}, "Invalid cron expression '* * * * * 0': * * * * * 0\n          ^\n"
                                    "Days of Week must be greater than or equal to 1. ('0' specified.)"),
])
async def test_a_bad_binding_is_refused_with_the_references_words(config, message) -> None:
    hub = LocalHub()
    router, gw, run = await started(hub)
    async with run:
        router.received.clear()
        bind(router, "bad", config)
        msg = await result(router, "bad")
        assert msg["error"] == {"code": "trigger_registration_failed", "message": message}


async def test_a_per_second_job_fires_with_the_payload_and_waits_for_its_handler() -> None:
    hub = LocalHub()
    router, gw, run = await started(hub)
    async with run as cron:
        route(router, ["cron"], "jobs::tick", "gw", "W1")
        router.received.clear()
        bind(router, "j1", {"expression": "* * * * * *"}, metadata={"m": 1}, namespace="default")
        assert "error" not in await result(router, "j1")

        _, header, body = await gw.next(frames.INV, timeout=2.5)
        got = time.time()
        msg = orjson.loads(body)
        assert (header["fn"], header["to"]) == ("jobs::tick", "W1") and header["rn"] == "cron"
        data = msg["data"]
        assert list(data) == ["trigger", "job_id", "scheduled_time", "actual_time"]
        assert (data["trigger"], data["job_id"]) == ("cron", "j1")
        assert msg["metadata"] == {"m": 1}
        scheduled, actual = parse_time(data["scheduled_time"]), parse_time(data["actual_time"])
        assert data["scheduled_time"].endswith("+00:00") and scheduled.microsecond == 0
        assert 0 <= (actual - scheduled).total_seconds() < 0.5
        assert abs(got - actual.timestamp()) < 0.5

        # Not answered: the job is running, so the next ticks are skipped, not queued.
        await asyncio.sleep(1.3)
        assert frames.INV not in gw.kinds()
        answer(gw, header, {"ignored": True})
        _, header2, body2 = await gw.next(frames.INV, timeout=2.5)
        later = parse_time(orjson.loads(body2)["data"]["scheduled_time"])
        assert (later - scheduled).total_seconds() >= 2  # no catch-up of the skipped ticks
        answer(gw, header2, None)
        assert cron.runs >= 1


async def test_a_condition_that_answers_false_skips_the_handler() -> None:
    hub = LocalHub()
    router, gw, run = await started(hub)
    async with run:
        route(router, ["cron"], "jobs::tick", "gw", "W1")
        route(router, ["cron"], "jobs::allowed", "gw", "W1")
        bind(router, "j1", {"expression": "* * * * * *", "condition_function_id": "jobs::allowed"})
        _, header, body = await gw.next(frames.INV, timeout=2.5)
        assert header["fn"] == "jobs::allowed"
        cond_data = orjson.loads(body)["data"]
        answer(gw, header, False)
        _, header, body = await gw.next(frames.INV, timeout=2.5)
        assert header["fn"] == "jobs::allowed"  # the next tick asks again; no handler call
        answer(gw, header, None)  # null proceeds
        _, header, body = await gw.next(frames.INV, timeout=2.5)
        assert header["fn"] == "jobs::tick"
        assert set(orjson.loads(body)["data"]) == set(cond_data)


async def test_a_router_restart_keeps_redelivered_jobs_and_drops_the_others(monkeypatch) -> None:
    monkeypatch.setattr(service, "REPLAY_WINDOW_S", 0.3)
    hub = LocalHub()
    router, gw, run = await started(hub)
    async with run as cron:
        for tid in ("keep", "gone"):
            bind(router, tid, {"expression": "0 0 0 1 1 ?"})
            assert "error" not in await result(router, tid)
        keep = cron.scheduler.jobs["keep"]
        bind(router, "keep", {"expression": "0 0 12 * * ?"})  # a different binding, same id
        assert (await result(router, "keep"))["error"]["message"] == "Cron job 'keep' is already registered"

        router.send("cron", frames.hello("router-epoch-2"))  # the router restarted
        await router.next(frames.HELLO)
        bind(router, "keep", {"expression": "0 0 0 1 1 ?"})  # its replay: the same binding
        assert "error" not in await result(router, "keep")
        assert cron.scheduler.jobs["keep"] is keep
        await asyncio.sleep(0.5)
        assert set(cron.scheduler.jobs) == {"keep"}
        assert set(cron.trigger_types["cron"].bindings) == {"keep"}
