"""The HTTP route table (workers-b §2.2): matching, static over parameter, conflicts,
replacement, ownership on remove, 404 vs 405, and a lookup cost that does not grow."""
from __future__ import annotations

import time

import pytest

from brokers.http.routes import Route, RouteConflict, RouteTable, path_params


def route(bid: str, method: str, path: str, fn: str = "f") -> Route:
    return Route(bid, method, path, fn)


def test_match_static_beats_parameter_and_params_are_raw() -> None:
    t = RouteTable()
    t.add(route("a", "GET", "/users/:id", "by_id"))
    t.add(route("b", "GET", "users/me", "me"))  # leading slash optional
    t.add(route("c", "GET", "/users/:id/posts/:postId", "post"))
    r, seg = t.match("GET", "/users/me")
    assert r.function_id == "me"
    r, seg = t.match("GET", "/users/hello%20world")
    assert r.function_id == "by_id" and path_params(r, seg) == {"id": "hello%20world"}
    r, seg = t.match("GET", "/users/me/posts/7")  # backtracks from the static branch
    assert r.function_id == "post" and path_params(r, seg) == {"id": "me", "postId": "7"}


def test_trailing_slash_root_and_empty_segments() -> None:
    t = RouteTable()
    t.add(route("a", "GET", "/"))
    t.add(route("b", "GET", "/items"))
    t.add(route("c", "GET", "/things/:id"))
    assert t.match("GET", "/")[0].binding_id == "a"
    assert t.match("GET", "/items/") == (None, [])  # trailing slash is significant
    assert t.match("GET", "/things/") == (None, [])  # a parameter is never empty


def test_404_and_405_with_allowed_methods_and_head_falls_back_to_get() -> None:
    t = RouteTable()
    t.add(route("a", "GET", "/x"))
    t.add(route("b", "DELETE", "/x"))
    assert t.match("POST", "/x") == (None, ["DELETE", "GET"])
    assert t.match("POST", "/y") == (None, [])
    assert t.match("HEAD", "/x")[0].binding_id == "a"


def test_same_method_and_path_replaces_and_a_stale_remove_is_ignored() -> None:
    t = RouteTable()
    t.add(route("a", "GET", "/x", "old"))
    replaced = t.add(route("b", "GET", "/x", "new"))
    assert replaced.binding_id == "a" and t.match("GET", "/x")[0].function_id == "new"
    assert t.remove("a") is None  # a no longer holds the route
    assert t.match("GET", "/x")[0].function_id == "new"
    assert t.remove("b").binding_id == "b" and t.match("GET", "/x") == (None, []) and len(t) == 0


def test_same_shape_with_other_parameter_names_is_refused_across_methods() -> None:
    t = RouteTable()
    t.add(route("a", "GET", "/users/:id"))
    for method in ("GET", "POST"):
        with pytest.raises(RouteConflict) as info:
            t.add(route("b", method, "/users/:userId"))
        assert str(info.value) == (
            f"Route '{method} /users/:userId' conflicts with already-registered route 'GET /users/:id': "
            "routes with identical structure but different path-parameter names are not supported")
    t.add(route("c", "POST", "/users/:id"))  # same names: fine
    t.remove("a")
    t.remove("c")
    t.add(route("d", "GET", "/users/:userId"))  # the shape is free again


def test_braces_are_parameters_and_extracted() -> None:
    t = RouteTable()
    t.add(route("a", "GET", "/files/{name}"))
    r, seg = t.match("GET", "/files/a.txt")
    assert path_params(r, seg) == {"name": "a.txt"}


def test_lookup_time_does_not_grow_with_the_route_count() -> None:
    def cost(n: int) -> float:
        t = RouteTable()
        for i in range(n):
            t.add(route(f"b{i}", "GET", f"/api/v1/resource{i}/:id/items"))
        start = time.perf_counter()
        for _ in range(2000):
            t.match("GET", "/api/v1/resource0/42/items")
        return time.perf_counter() - start
    small, big = min(cost(1) for _ in range(3)), min(cost(1000) for _ in range(3))
    assert big < small * 3, (small, big)  # a linear scan would be ~1000x
