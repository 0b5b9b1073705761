"""The outgoing HTTP call of an HTTP-invoked function: the guard, one lookup, the request.

One pooled ``aiohttp`` session per process (keep-alive, no cap on connections, as the
reference's client). Every call runs the URL guard again (``guard``), resolves the host
once with the event loop's resolver and connects to the address that passed the check:
the request goes to ``scheme://<ip>:<port>/path`` with the ``Host`` header and the TLS
server name (SNI and certificate check) of the URL's host, so no second lookup happens
and a rebinding DNS server cannot redirect the connection to a blocked address. The pool
key holds the address and the TLS name, so a kept-alive connection is reused only for
the host it was opened for. Redirects are never followed.

Errors are the reference's codes (workers-b §3.3): ``url_validation_failed``,
``http_request_failed`` (connect, DNS, TLS, timeout: the message says ``timed out`` or
``connect``), ``http_response_failed`` (reading the body). A message names the URL
without its userinfo (``user:password@`` is cut).
"""
from __future__ import annotations

import asyncio
import socket
import time
import uuid
from typing import Any, Awaitable, Callable

import aiohttp

from brokers.http_functions import core, guard
from brokers.http_functions.config import Security
from brokers.kit.errors import HTTP_REQUEST_FAILED, HTTP_RESPONSE_FAILED, EngineError

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``(host, port) -> addresses``: the one lookup of a call (tests put a fake one here)."""


def shown_url(url: str) -> str:
    """``url`` for messages and logs: without ``user:password@``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, tail = rest.partition("/")
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{tail}"


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


class Client:
    """Makes the calls; ``start`` opens the pool on the running loop, ``close`` shuts it."""

    def __init__(self, security: Security, *, resolve: Resolver = system_resolve,
                 clock: Callable[[], float] | None = None) -> None:
        self.security = security
        self.resolve = resolve
        self.clock = clock or time.time
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, use_dns_cache=False,
                                         keepalive_timeout=90)
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=True, cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept-Encoding"))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def check(self, url: str, connect: bool = True) -> tuple[guard.Target, guard.IPAddress | None]:
        """The guard of §3.4 with its one lookup: the target and the address to use.
        ``connect`` False (a registration): look the host up only for the private-IP check."""
        target = guard.parse_target(url, self.security)
        if not connect and target.ip is None and not self.security.block_private_ips:
            return target, None
        addrs = None
        if target.ip is None:
            try:
                addrs = await self.resolve(target.host, target.port)
            except (OSError, UnicodeError):
                addrs = None
        return target, guard.pick_address(target, addrs, self.security)

    async def call(self, function_id: str, spec: core.Invocation, auth: core.Auth | None,
                   data: Any) -> Any:
        """One invocation: the function's result, or raises its coded EngineError."""
        target, ip = await self.check(spec.url)
        req = core.build_request(function_id, spec, auth, data, int(self.clock()), str(uuid.uuid4()))
        headers = [("host", target.host_header), ("accept", "*/*"), *req.headers]
        shown = shown_url(spec.url)
        session = self._session
        assert session is not None, "Client.start() first"
        try:
            resp = await session.request(
                req.method, target.url_for(ip), data=req.body, headers=headers,
                allow_redirects=False, timeout=aiohttp.ClientTimeout(total=spec.timeout_s),
                server_hostname=target.host if target.scheme == "https" else None)
        except asyncio.TimeoutError:
            raise EngineError(HTTP_REQUEST_FAILED,
                              f"error sending request for url ({shown}): operation timed out") from None
        except aiohttp.ClientConnectorError as exc:
            os_err = exc.os_error
            detail = f"{os_err.strerror or os_err} (os error {os_err.errno})" if os_err.errno else str(os_err)
            raise EngineError(HTTP_REQUEST_FAILED, f"error sending request for url ({shown}): "
                                                   f"client error (Connect): tcp connect error: {detail}") from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise EngineError(HTTP_REQUEST_FAILED,
                              f"error sending request for url ({shown}): {exc or type(exc).__name__}") from None
        try:
            body = await resp.read()
        except asyncio.TimeoutError:
            raise EngineError(HTTP_RESPONSE_FAILED, "error decoding response body: operation timed out") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineError(HTTP_RESPONSE_FAILED,
                              f"error decoding response body: {exc or type(exc).__name__}") from None
        finally:
            resp.release()
        return core.map_response(resp.status, body)
