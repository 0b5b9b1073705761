"""Crash test of state writes served in place by the gateway (issue 20): 4,000 acknowledged
``state::set`` calls, 16 in flight, while the GATEWAY, which now commits them to the state
store itself, is killed with ``kill -9`` three times.

As in test_state_crash.py (same client, lanes and read-back): each lane owns its keys and
has one call in flight, so the last acknowledged value of a key is well defined. A call
whose connection died with the gateway is retried with the same value on a new connection
once the supervisor has restarted the gateway. After the last ack every key must hold its
last acknowledged value, read back with ``state::list`` (the state process) and
``state::get`` (the new gateway, in place).
"""
from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from tests.harness import Engine, start_engine
from tests.integration.test_state_crash import STATE_YAML, Client

pytestmark = pytest.mark.slow

TOTAL = 4_000
LANES = 16
KEYS_PER_LANE = 20
KILLS_AT = (800, 2_000, 3_200)
BUDGET = 40.0
RETRYABLE = {"invocation_stopped", "function_not_found", "timeout", "disconnected"}


class Reconnecting:
    """One connection at a time; a call on a dead one fails as ``disconnected``, and the
    next call opens a new one (all lanes share it)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client: Client | None = None
        self._opening: asyncio.Future | None = None
        self.reconnects = 0

    async def _current(self) -> Client:
        while self.client is None:
            if self._opening is None:
                self._opening = asyncio.ensure_future(self._open())
            await asyncio.shield(self._opening)
        return self.client

    async def _open(self) -> None:
        try:
            while True:
                try:
                    self.client = await Client.open(self.url)
                    return
                except OSError:
                    await asyncio.sleep(0.05)
        finally:
            self._opening = None

    async def call(self, function_id: str, data: Any, timeout: float = 3.0) -> dict:
        client = await self._current()
        if client.reader.done():
            self._drop(client)
            return {"error": {"code": "disconnected"}}
        try:
            frame = await client.call(function_id, data, timeout)
        except Exception:
            frame = {"error": {"code": "disconnected"}}
        if client.reader.done():  # the gateway went away: this answer may never come
            self._drop(client)
            if frame.get("error"):
                return {"error": {"code": "disconnected"}}
        return frame

    def _drop(self, client: Client) -> None:
        if client.reader.done() and not client.reader.cancelled():
            client.reader.exception()  # the connection's end, expected here
        if self.client is client:
            self.client = None
            self.reconnects += 1
            for fut in client.waiting.values():
                if not fut.done():
                    fut.set_result({"error": {"code": "disconnected"}})


async def drive(engine: Engine, scope: str) -> dict[str, Any]:
    conn = Reconnecting(engine.url)
    expect: dict[str, dict] = {}
    acked, issued = [0], [0]
    retried = [0]
    kills: list[int] = []
    deadline = time.monotonic() + BUDGET

    async def lane(n: int) -> None:
        mine = 0
        while issued[0] < TOTAL:
            seq = issued[0]
            issued[0] += 1
            key = f"l{n}-k{mine % KEYS_PER_LANE}"
            mine += 1
            value = {"key": key, "seq": seq}
            while True:
                assert time.monotonic() < deadline, f"over budget: {acked[0]} acked"
                frame = await conn.call("state::set", {"scope": scope, "key": key, "value": value})
                err = frame.get("error")
                if not err:
                    assert frame["result"]["new_value"] == value, frame
                    expect[key] = value
                    acked[0] += 1
                    break
                assert err.get("code") in RETRYABLE, frame
                retried[0] += 1
                await asyncio.sleep(0.02)

    async def killer() -> None:
        for mark in KILLS_AT:
            while acked[0] < mark:
                await asyncio.sleep(0.005)
            pid = await asyncio.to_thread(engine.kill, "gateway")
            kills.append(pid)
            await asyncio.to_thread(engine.wait_running, "gateway", 15.0, not_pid=pid)

    async def answered(function_id: str, data: Any) -> dict:
        """The read-back, retried like a write while the last restart settles."""
        while True:
            frame = await conn.call(function_id, data, timeout=10.0)
            err = frame.get("error")
            if not err or err.get("code") not in RETRYABLE or time.monotonic() > deadline:
                assert not err, frame
                return frame
            await asyncio.sleep(0.02)

    await asyncio.gather(killer(), *(lane(n) for n in range(LANES)))
    listed = await answered("state::list", {"scope": scope})
    stored = {v["key"]: v for v in listed["result"]}
    gets = [await answered("state::get", {"scope": scope, "key": k}) for k in expect]
    got = {k: f.get("result") for k, f in zip(expect, gets)}
    if conn.client is not None:
        await conn.client.close()
    return {"acked": acked[0], "retried": retried[0], "kills": kills, "reconnects": conn.reconnects,
            "lost_list": sorted(k for k, v in expect.items() if stored.get(k) != v),
            "lost_get": sorted(k for k, v in expect.items() if got[k] != v), "keys": len(expect)}


def test_acked_in_place_sets_survive_kill_9_of_the_gateway():
    engine = start_engine(extra_workers_yaml=STATE_YAML)
    try:
        out = asyncio.run(drive(engine, f"gwcrash-{uuid.uuid4().hex[:6]}"))
        log = engine.log_tail(10**7)
    finally:
        engine.stop()
    print(f"\nin-place crash test: {out['acked']} acked, {out['retried']} retried, "
          f"{out['reconnects']} reconnects, kills {out['kills']}")
    assert "served in place from" in log  # the writes did go through the gateway's own commits
    assert out["acked"] == TOTAL and len(out["kills"]) == len(KILLS_AT)
    assert out["reconnects"] >= 1  # its connections did die with the gateway
    assert out["keys"] == LANES * KEYS_PER_LANE
    assert out["lost_list"] == [] and out["lost_get"] == [], out
