"""Crash test of the state store: 10,000 acknowledged ``state::set`` calls, pipelined 16 in
flight over the raw protocol, while the state process is killed with ``kill -9`` several times.

The client is 16 lanes on one WebSocket; each lane owns its own keys and has at most one call
in flight, so "the last acknowledged value of a key" is well defined: a lane moves to its next
write only once the current one is acknowledged, and a call that fails while the state process
is gone (``invocation_stopped``, ``function_not_found`` while its route is withdrawn, or a
client-side timeout) is retried with the same value. After the last ack, every key must hold
exactly its last acknowledged value, read back both with one ``state::list`` of the scope and
with a ``state::get`` per key. Bounded: the whole test gives up after ~30 s.
"""
from __future__ import annotations

import asyncio
import collections
import threading
import time
import uuid
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect

from tests.harness import Engine, start_engine

pytestmark = pytest.mark.slow

TOTAL = 10_000
LANES = 16
KEYS_PER_LANE = 50           # each key is overwritten ~12 times
KILLS_AT = (1_500, 3_500, 5_500, 7_500)   # acked counts at which the state process is killed
CALL_TIMEOUT = 3.0
BUDGET = 30.0
RETRYABLE = {"invocation_stopped", "function_not_found", "timeout"}

STATE_YAML = """
- name: iii-state
  config: {}
"""


class Client:
    """One raw worker-protocol connection with calls matched by ``invocation_id``."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.waiting: dict[str, asyncio.Future] = {}
        self.reader = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, url: str) -> "Client":
        ws = await connect(url, compression=None, max_size=None, ping_interval=None)
        while orjson.loads(await ws.recv()).get("type") != "workerregistered":
            pass
        return cls(ws)

    async def _read(self) -> None:
        async for raw in self.ws:
            frame = orjson.loads(raw)
            fut = self.waiting.pop(frame.get("invocation_id"), None)
            if fut is not None and not fut.done():
                fut.set_result(frame)

    async def call(self, function_id: str, data: Any, timeout: float = CALL_TIMEOUT) -> dict:
        """The ``invocationresult`` frame; a timeout is reported as error code ``timeout``."""
        inv = str(uuid.uuid4())
        fut = asyncio.get_running_loop().create_future()
        self.waiting[inv] = fut
        await self.ws.send(orjson.dumps({"type": "invokefunction", "function_id": function_id,
                                         "invocation_id": inv, "data": data}).decode())
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            self.waiting.pop(inv, None)
            return {"error": {"code": "timeout", "message": f"no answer in {timeout}s"}}

    async def close(self) -> None:
        self.reader.cancel()
        await self.ws.close()


def killer(engine: Engine, acked: list[int], stop: threading.Event, log: list[tuple]) -> None:
    """Kill -9 the state process each time the acked count passes a mark; wait for its restart."""
    for mark in KILLS_AT:
        while acked[0] < mark:
            if stop.wait(0.005):
                return
        pid = engine.kill("state")
        t0 = time.monotonic()
        entry = engine.wait_running("state", timeout=15.0, not_pid=pid)
        log.append((mark, pid, entry["pid"], round(time.monotonic() - t0, 3)))


async def drive(engine: Engine, scope: str) -> dict[str, Any]:
    client = await Client.open(engine.url)
    expect: dict[str, dict] = {}
    acked = [0]
    issued = [0]
    retries: collections.Counter[str] = collections.Counter()
    stop = threading.Event()
    kills: list[tuple] = []
    deadline = time.monotonic() + BUDGET

    async def lane(n: int) -> None:
        mine = 0
        while True:
            seq = issued[0]
            if seq >= TOTAL:
                return
            issued[0] += 1
            key = f"l{n}-k{mine % KEYS_PER_LANE}"
            mine += 1
            value = {"key": key, "seq": seq}
            while True:
                if time.monotonic() > deadline:
                    raise AssertionError(f"over budget: {acked[0]} acked, retries {dict(retries)}")
                frame = await client.call("state::set", {"scope": scope, "key": key, "value": value})
                err = frame.get("error")
                if not err:
                    assert frame["result"]["new_value"] == value, frame
                    expect[key] = value
                    acked[0] += 1
                    break
                if err.get("code") not in RETRYABLE:
                    raise AssertionError(f"non-retryable failure: {frame}")
                retries[err["code"]] += 1
                if err["code"] == "function_not_found":
                    await asyncio.sleep(0.02)  # the route is back once the new process registers

    t0 = time.monotonic()
    kill_thread = asyncio.ensure_future(asyncio.to_thread(killer, engine, acked, stop, kills))
    try:
        await asyncio.gather(*(lane(n) for n in range(LANES)))
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        await kill_thread

    # Read back: one list of the scope (values carry their key), then one get per key.
    listed = await client.call("state::list", {"scope": scope}, timeout=10.0)
    assert not listed.get("error"), listed
    stored = {v["key"]: v for v in listed["result"]}
    gets = await asyncio.gather(*(client.call("state::get", {"scope": scope, "key": k}, timeout=10.0)
                                  for k in expect))
    got = {k: f.get("result") for k, f in zip(expect, gets)}
    await client.close()
    lost_list = sorted(k for k, v in expect.items() if stored.get(k) != v)
    lost_get = sorted(k for k, v in expect.items() if got[k] != v)
    return {"acked": acked[0], "retried": sum(retries.values()), "retries": dict(retries),
            "kills": kills, "lost_list": lost_list, "lost_get": lost_get, "keys": len(expect),
            "extra": sorted(set(stored) - set(expect)), "elapsed": round(elapsed, 2)}


def test_acked_sets_survive_repeated_kill_9():
    engine = start_engine(extra_workers_yaml=STATE_YAML)
    try:
        out = asyncio.run(drive(engine, f"crash-{uuid.uuid4().hex[:6]}"))
    finally:
        engine.stop()
    print(f"\nstate crash test: acked={out['acked']} retried={out['retried']} {out['retries']} "
          f"lost={len(out['lost_list'])} keys={out['keys']} kills={out['kills']} "
          f"elapsed={out['elapsed']}s")
    assert out["acked"] == TOTAL
    assert len(out["kills"]) == len(KILLS_AT), out["kills"]
    assert out["keys"] == LANES * KEYS_PER_LANE
    assert out["lost_list"] == [] and out["lost_get"] == [], out
    assert out["extra"] == []
