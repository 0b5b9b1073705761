"""Checks of the seed page's examples shared by the tests that run them on different SDKs."""
from __future__ import annotations

from tests.wsclient import RawClient, ok


def check_math_add_and_aggregation(c: RawClient) -> None:
    """``math::add`` stores each result in state; ``math::aggregation`` sums them
    (the page's own top-level ``add(2, 3)`` has stored 5 already)."""
    assert ok(c.call_when_found("state::list", {"scope": "math"})) == [5]
    ids = {}
    for a, b in ((1, 2), (10, 20), (0.5, 0.25)):
        out = ok(c.call_when_found("math::add", {"a": a, "b": b}))
        assert out["result"] == a + b
        ids[out["id"]] = a + b
    for key, value in ids.items():
        assert ok(c.call("state::get", {"scope": "math", "key": key})) == value
    agg = ok(c.call_when_found("math::aggregation", {}))
    values = [5, 3, 30, 0.75]
    assert agg == {"count": 4, "sum": sum(values), "average": sum(values) / 4}
