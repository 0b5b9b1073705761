"""The request object an HTTP trigger's function receives (workers-b §2.4), built purely.

Invariants, each as the spec words it: ``query_params`` is a flat map, percent-decoded,
the last of a repeated key winning; ``path_params`` are the raw segments; ``headers`` have
lower-case names and single string values (the last of a repeated name wins; a value
that is not visible ASCII becomes ``""``); ``path`` and ``trigger.path`` are the
registered pattern, not the URL path; ``method`` is upper case; ``body`` is parsed only
when the content type contains ``application/json`` (invalid or empty JSON is null) and
is null otherwise; ``request_body`` and ``response`` are channel refs on every request.
"""
from __future__ import annotations

from typing import Any, Iterable
from urllib.parse import unquote_plus

import orjson

from brokers.http.routes import Route, path_params


def query_params(query: bytes | str | None) -> dict[str, str]:
    """``a=1&b=x%20y&a=2`` -> ``{"a": "2", "b": "x y"}``."""
    if not query:
        return {}
    text = query.decode("latin-1") if isinstance(query, bytes) else query
    out: dict[str, str] = {}
    for pair in text.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        out[unquote_plus(name)] = unquote_plus(value)
    return out


def _visible(value: bytes) -> str:
    """The header value if every byte is visible ASCII (or a space/tab), else ``""``."""
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return ""
    return text if all(c == "\t" or " " <= c <= "~" for c in text) else ""


def headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    return {name.decode("latin-1").lower(): _visible(value) for name, value in raw}


def is_json(content_type: str | None) -> bool:
    return content_type is not None and "application/json" in content_type.lower()


def json_body(raw: bytes) -> Any:
    """The parsed body of a JSON request; null when it is empty or not JSON."""
    if not raw.strip():
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def build(route: Route, segments: list[str], method: str, query: bytes | str | None,
          hdrs: dict[str, str], body: Any, request_body: dict | None,
          response: dict | None) -> dict[str, Any]:
    """The ``HttpRequest`` of §2.4 (``body`` already decided by the caller)."""
    out: dict[str, Any] = {
        "query_params": query_params(query),
        "path_params": path_params(route, segments),
        "headers": hdrs,
        "path": route.api_path,
        "method": method,
        "body": body,
        "trigger": {"type": "http", "path": route.api_path, "method": method},
    }
    if request_body is not None:
        out["request_body"] = request_body
    if response is not None:
        out["response"] = response
    return out


def middleware_input(method: str, query: bytes | str | None, hdrs: dict[str, str],
                     params: dict[str, str]) -> dict[str, Any]:
    """What every middleware function receives (§2.6): no body, an empty context."""
    return {"phase": "preHandler",
            "request": {"path_params": params, "query_params": query_params(query),
                        "headers": hdrs, "method": method},
            "context": {}}


def without_channels(request: dict[str, Any]) -> dict[str, Any]:
    """What a route's condition function receives: the request minus its channel refs."""
    return {k: v for k, v in request.items() if k not in ("request_body", "response")}


def span_attributes(route: Route, method: str, query: bytes | str | None, hdrs: dict[str, str],
                    path: str | None = None) -> dict[str, Any]:
    """The server span's attributes (workers-b §2.9), before the response's status code."""
    q = query.decode("latin-1") if isinstance(query, bytes) else (query or "")
    scheme = hdrs.get("x-forwarded-proto") or "http"
    host = hdrs.get("host", "")
    url_path = path if path is not None else route.api_path
    attrs: dict[str, Any] = {
        "http.request.method": method, "http.route": route.api_path, "url.path": url_path, "url.query": q,
        "url.scheme": scheme, "url.full": f"{scheme}://{host}{url_path}{'?' + q if q else ''}",
        "server.address": host, "user_agent.original": hdrs.get("user-agent", ""),
        "iii.function.kind": "internal" if route.function_id.startswith("engine::") else "user",
        "function_id": route.function_id}
    if "content-type" in hdrs:
        attrs["http.request.header.content_type"] = hdrs["content-type"]
    if "content-length" in hdrs:
        attrs["http.request.body.size"] = hdrs["content-length"]
    return attrs
