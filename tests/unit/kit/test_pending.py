"""``Pending``: a node's restart takes exactly the calls that wait on it."""
from __future__ import annotations

from brokers.kit.pending import Pending


def test_stopped_takes_only_that_nodes_calls_once() -> None:
    p: Pending[str] = Pending()
    p.add("1", "state", "f1")
    p.add("2", "gw-1", "f2")
    p.add("3", "state", "f3")
    assert sorted(p.stopped("state")) == [("1", "f1"), ("3", "f3")]
    assert p.stopped("state") == [] and len(p) == 1 and "2" in p
    assert p.pop("2") == "f2" and p.pop("2") is None and len(p) == 0
