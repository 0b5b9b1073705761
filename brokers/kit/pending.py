"""Calls a process waits for: by invocation id, each with the node that will answer it.

One idea, used by the gateway (per connection: the calls its worker made to other
processes) and by the broker base (its own calls): when a node restarts, every call
waiting on it will never be answered, so ``stopped(node)`` takes them out for the caller
to fail with ``invocation_stopped`` (protocol.md §4.6).

Invariant: an id is waiting at most once; ``pop`` and ``stopped`` remove what they return.
"""
from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Pending(Generic[T]):
    """``inv_id -> (node, item)``; ``item`` is what the caller needs to answer (a future,
    a function id)."""

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        self._calls: dict[str, tuple[str, T]] = {}

    def add(self, inv_id: str, node: str, item: T) -> None:
        self._calls[inv_id] = (node, item)

    def pop(self, inv_id: str) -> T | None:
        """The waiting call's item, removed; None if nothing waits under ``inv_id``."""
        entry = self._calls.pop(inv_id, None)
        return None if entry is None else entry[1]

    def stopped(self, node: str) -> list[tuple[str, T]]:
        """Remove and return ``(inv_id, item)`` of every call waiting on ``node``."""
        gone = [(inv_id, item) for inv_id, (n, item) in self._calls.items() if n == node]
        for inv_id, _ in gone:
            del self._calls[inv_id]
        return gone

    def __len__(self) -> int:
        return len(self._calls)

    def __contains__(self, inv_id: object) -> bool:
        return inv_id in self._calls
