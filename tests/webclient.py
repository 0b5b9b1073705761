"""A real HTTP client for the HTTP worker's tests (``http.client``, one connection per call)."""
from __future__ import annotations

import http.client
import time


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            within: float = 5.0, timeout: float = 30.0) -> http.client.HTTPResponse:
    """One request on a fresh connection, repeated while it is 404 for up to ``within``
    seconds (a route lands asynchronously after its ``registertrigger``)."""
    deadline = time.monotonic() + within
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        if r.status != 404 or time.monotonic() > deadline:
            return r
        r.read()
        time.sleep(0.05)
