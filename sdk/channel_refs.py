"""Channel references and the pure parts of channels (protocol.md §2.1, §8), behind
``iii.channels`` / ``iii.helpers``.

Owns the ref's shape (``StreamChannelRef``: ``channel_id``, ``access_key``, ``direction``),
recognising refs inside payloads, the channel socket's URL, and how a byte write is cut
into frames. Pure: no sockets, no loop; ``sdk.channels`` does the I/O.

Invariants:
- A ref is a dict whose ``channel_id`` and ``access_key`` are strings and whose
  ``direction`` is ``"read"`` or ``"write"`` (the official SDK's ``is_channel_ref``).
- ``resolve_refs`` copies only the containers on the way to a ref: a payload without refs
  comes back as the very same object (no allocation on the call path).
- A channel URL keeps a query already on the engine URL (``?token=…``) in front of its own
  ``key`` and ``dir``.
- ``frames`` yields views of at most ``MAX_FRAME_SIZE`` bytes, in order, and one (possibly
  empty) frame for a write of at most that size.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any, Callable, Iterator, Literal
from urllib.parse import quote

MAX_FRAME_SIZE = 64 * 1024


class ChannelDirection(str, Enum):
    """Direction of a channel ref; the values are the wire's ``direction``."""

    READ = "read"
    WRITE = "write"


@dataclass(frozen=True)
class StreamChannelRef:
    """One end of a channel: what ``engine::channels::create`` answers and payloads carry.

    JSON-encodable as it is (a payload may carry it: ``{"writer": channel.writer_ref}``);
    ``model_dump()`` gives the wire dict, as the official SDK's pydantic model does.
    """

    channel_id: str
    access_key: str
    direction: Literal["read", "write"]

    def __post_init__(self) -> None:
        if not isinstance(self.channel_id, str) or not isinstance(self.access_key, str):
            raise ValueError("channel_id and access_key must be strings")
        if self.direction not in ("read", "write"):
            raise ValueError(f"direction must be 'read' or 'write', not {self.direction!r}")

    @classmethod
    def from_wire(cls, raw: Any) -> StreamChannelRef:
        if isinstance(raw, StreamChannelRef):
            return raw
        if not is_channel_ref(raw):
            raise ValueError("not a channel ref: needs channel_id, access_key and direction read|write")
        return cls(raw["channel_id"], raw["access_key"], raw["direction"])

    def model_dump(self, mode: str = "python") -> dict[str, str]:
        return asdict(self)


@dataclass
class ChannelItem:
    """One frame of a channel: exactly one of ``text`` (a message) or ``binary`` (bytes)."""

    text: str | None = None
    binary: bytes | None = None

    def __post_init__(self) -> None:
        if (self.text is None) == (self.binary is None):
            raise ValueError("ChannelItem requires exactly one of `text` or `binary`")

    @classmethod
    def text_item(cls, value: str) -> ChannelItem:
        return cls(text=value, binary=None)

    @classmethod
    def binary_item(cls, value: bytes) -> ChannelItem:
        return cls(text=None, binary=value)

    @property
    def is_text(self) -> bool:
        return self.text is not None

    @property
    def is_binary(self) -> bool:
        return self.binary is not None


def is_channel_ref(value: Any) -> bool:
    return (isinstance(value, dict)
            and isinstance(value.get("channel_id"), str)
            and isinstance(value.get("access_key"), str)
            and value.get("direction") in ("read", "write"))


def extract_channel_refs(data: Any) -> list[tuple[str, StreamChannelRef]]:
    """Every ref in a nested value as ``(path, ref)``: ``a.b`` for fields, ``a[0]`` for items."""
    refs: list[tuple[str, StreamChannelRef]] = []
    _extract(data, "", refs)
    return refs


def _extract(data: Any, prefix: str, refs: list[tuple[str, StreamChannelRef]]) -> None:
    if is_channel_ref(data):
        refs.append((prefix, StreamChannelRef.from_wire(data)))
    elif isinstance(data, dict):
        for key, value in data.items():
            _extract(value, f"{prefix}.{key}" if prefix else str(key), refs)
    elif isinstance(data, list):
        for i, item in enumerate(data):
            _extract(item, f"{prefix}[{i}]", refs)


def resolve_refs(data: Any, make: Callable[[StreamChannelRef], Any]) -> Any:
    """``data`` with every ref replaced by ``make(ref)``; the same object if it holds none."""
    if isinstance(data, dict):
        if "access_key" in data and is_channel_ref(data):
            return make(StreamChannelRef.from_wire(data))
        out: Any = None
        for key, value in data.items():
            if isinstance(value, _CONTAINERS):
                new = resolve_refs(value, make)
                if new is not value:
                    if out is None:
                        out = dict(data)
                    out[key] = new
        return data if out is None else out
    if isinstance(data, (list, tuple)):
        out = None
        for i, value in enumerate(data):
            if isinstance(value, _CONTAINERS):
                new = resolve_refs(value, make)
                if new is not value:
                    if out is None:
                        out = list(data)
                    out[i] = new
        if out is None:
            return data
        return out if isinstance(data, list) else tuple(out)
    return data


_CONTAINERS = (dict, list, tuple)


def build_channel_url(engine_ws_base: str, channel_id: str, access_key: str, direction: str) -> str:
    """``<engine url>/ws/channels/<id>?[engine query&]key=<key>&dir=<direction>``."""
    base, _, query = engine_ws_base.partition("?")
    query = "&".join(part for part in (query, f"key={quote(access_key)}", f"dir={direction}") if part)
    return f"{base.rstrip('/')}/ws/channels/{channel_id}?{query}"


def frames(data: bytes | bytearray | memoryview) -> Iterator[bytes | memoryview]:
    """The frames of one binary write: ``data`` itself when it fits, else views of ≤ 64 KiB."""
    if len(data) <= MAX_FRAME_SIZE:
        yield data
        return
    view = memoryview(data)
    for offset in range(0, len(view), MAX_FRAME_SIZE):
        yield view[offset:offset + MAX_FRAME_SIZE]
