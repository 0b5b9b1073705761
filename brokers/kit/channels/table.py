"""The channels a process is home to (protocol.md §8): create, attach rules, lifetime. Pure.

A channel lives in the process that created it, its *home* (the gateway that answered
``engine::channels::create``, or the HTTP worker for its request and response channels);
its two ends may attach on any process that serves channel sockets. The home is written
into the channel id, so that any process finds it without asking anyone: the id is a
uuid4 whose first eight hex digits are the CRC-32 of the home's process name
(``home_of`` maps them back through the plan's process names).

Rules (§8.2, §8.4): an unknown id, a wrong key or a freed channel is "not found" (HTTP 404
before the upgrade); each end is taken once (a second socket is upgraded and closed);
a channel is freed once both ends have closed, and the sweep frees channels older than
``SWEEP_AGE_S`` with an end never attached.
"""
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable

DEFAULT_BUFFER = 64
MIN_BUFFER, MAX_BUFFER = 1, 1024
SWEEP_AGE_S = 300.0
SWEEP_EVERY_S = 60.0
DIRECTIONS = ("read", "write")

OK, NOT_FOUND, TAKEN = "ok", "not_found", "taken"


def clamp_buffer(value: Any) -> int:
    """``buffer_size`` in messages: 64 when unset (or not a number), clamped to 1..1024."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return DEFAULT_BUFFER
    return int(min(max(value, MIN_BUFFER), MAX_BUFFER))


def _tag(process: str) -> str:
    return f"{zlib.crc32(process.encode()):08x}"


def _uuid4_hex() -> str:
    """32 hex digits of a random uuid4 (version and variant bits set): ``uuid.uuid4()``
    without its object, a fifth of the cost (the HTTP worker makes four per request)."""
    n = int.from_bytes(os.urandom(16), "big") & ~(0xF000 << 64) & ~(0xC000 << 48) | (0x4000 << 64) | (0x8000 << 48)
    return f"{n:032x}"


def _dashed(h: str) -> str:
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_id(home: str, tag: str | None = None) -> str:
    """A fresh uuid4 naming ``home`` in its first eight hex digits."""
    return _dashed((tag or _tag(home)) + _uuid4_hex()[8:])


def new_key() -> str:
    return _dashed(_uuid4_hex())


def id_bytes(channel_id: str) -> bytes:
    """The 16 bytes of a channel id (ValueError if it is not one)."""
    if len(channel_id) != 36:
        raise ValueError(channel_id)
    return bytes.fromhex(channel_id.replace("-", ""))


def home_of(channel_id: str, processes: Iterable[str]) -> str | None:
    """The process among ``processes`` whose channel ``channel_id`` is, if any."""
    tag = channel_id[:8]
    return next((p for p in processes if _tag(p) == tag), None)


def refs(channel_id: str, key: str) -> dict[str, dict[str, str]]:
    """The result of ``engine::channels::create`` (§8.1)."""
    return {"writer": {"channel_id": channel_id, "access_key": key, "direction": "write"},
            "reader": {"channel_id": channel_id, "access_key": key, "direction": "read"}}


@dataclass
class Channel:
    id: str
    key: str
    cap: int
    """``buffer_size``: messages held between the writer's socket and the reader's."""
    created: float
    taken: set[str] = field(default_factory=set)
    closed: set[str] = field(default_factory=set)


class Table:
    """The channels of one home process."""

    def __init__(self, home: str) -> None:
        self.home = home
        self.tag = _tag(home)
        self.channels: dict[str, Channel] = {}

    def create(self, buffer_size: Any, now: float) -> Channel:
        ch = Channel(new_id(self.home, self.tag), new_key(), clamp_buffer(buffer_size), now)
        self.channels[ch.id] = ch
        return ch

    def check(self, channel_id: str, key: str, direction: str) -> str:
        """Whether an end may attach: ``OK``, ``NOT_FOUND`` or ``TAKEN``."""
        ch = self.channels.get(channel_id)
        if ch is None or ch.key != key or direction not in DIRECTIONS:
            return NOT_FOUND
        return TAKEN if direction in ch.taken else OK

    def take(self, channel_id: str, key: str, direction: str) -> tuple[str, Channel | None]:
        """``check``, then mark the end taken when it is ``OK``."""
        verdict = self.check(channel_id, key, direction)
        ch = self.channels.get(channel_id)
        if verdict == OK:
            ch.taken.add(direction)
        return verdict, ch

    def end_closed(self, channel_id: str, direction: str) -> bool:
        """An end's socket is gone; True when that freed the channel."""
        ch = self.channels.get(channel_id)
        if ch is None:
            return False
        ch.closed.add(direction)
        if len(ch.closed) == 2:
            del self.channels[channel_id]
            return True
        return False

    def free(self, channel_id: str) -> None:
        self.channels.pop(channel_id, None)

    def sweep(self, now: float) -> list[Channel]:
        """Free the channels older than ``SWEEP_AGE_S`` with an end never attached."""
        old = [ch for ch in self.channels.values()
               if now - ch.created > SWEEP_AGE_S and len(ch.taken) < 2]
        for ch in old:
            del self.channels[ch.id]
        return old
