"""The Redis queue's key layout and the small values stored under it (``redis_scripts``
documents the keys): lane settings, ready-set keys, job rows; pure, no I/O."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import msgpack

from brokers.kit import frames
from brokers.queue.jobs import Job

PREFIX = "iii:queue:"
REMOTE_NODE = frames.CLUSTER
"""The owner of remote route entries: a job is taken only for a function served here."""
SEP = "\x1f"
BROKER_TYPE = "builtin"
ORPHAN_SWEEPS = 2
"""Sweeps a ready set must stay without any host routing its function before any host
takes it (its deliveries then fail with function_not_found)."""
_pack = msgpack.Packer(use_bin_type=True).pack


def now_ms() -> int:
    return int(time.time() * 1000)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(slots=True)
class LaneCfg:
    key: str
    name: str
    topic: str | None
    fifo: bool
    concurrency: int
    max_attempts: int
    backoff_ms: int
    condition_function_id: str | None = None
    function_id: str | None = None
    namespace: str | None = None

    def settings(self) -> bytes:
        return _pack({"name": self.name, "topic": self.topic, "fifo": self.fifo,
                      "concurrency": self.concurrency, "max_attempts": self.max_attempts,
                      "backoff_ms": self.backoff_ms, "condition": self.condition_function_id,
                      "function_id": self.function_id, "namespace": self.namespace})

    @classmethod
    def from_settings(cls, key: str, raw: bytes) -> LaneCfg:
        d = msgpack.unpackb(raw, raw=False)
        return cls(key, d["name"], d["topic"], d["fifo"], d["concurrency"], d["max_attempts"],
                   d["backoff_ms"], d.get("condition"), d.get("function_id"), d.get("namespace"))


def ready_key(lane: str, namespace: str, function_id: str) -> str:
    return f"{PREFIX}r:{lane}{SEP}{namespace}{SEP}{function_id}"


def parse_ready_key(rk: str) -> tuple[str, str, str]:
    lane, ns, fid = rk[len(PREFIX) + 2:].split(SEP, 2)
    return lane, ns, fid


def decode_job(row: list) -> Job:
    """A take's row ``[id, rec, att, max, bo, seq]`` -> Job."""
    job_id, rec, att, mx, bo, seq = row
    fields = msgpack.unpackb(rec, raw=False)
    return Job(id=_s(job_id), seq=int(seq), max_attempts=int(mx), backoff_ms=int(bo),
               attempts_made=int(att), **fields)
