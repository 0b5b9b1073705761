"""The URL guard of HTTP-invoked functions (workers-b §3.4): pure, no sockets, no DNS.

A check has two halves around one DNS lookup that the shell makes:

    target = parse_target(url, security)     scheme, allowlist (host globs), or a refusal
    addrs  = <resolve target.host once>      skipped when the host is an IP literal
    ip     = pick_address(target, addrs, security)   the private-IP check, or a refusal

and the shell then connects to ``ip`` itself (Host header and TLS name from ``target``), so
the address that passed the check is the one connected to: no second lookup, so DNS
rebinding cannot swap in a blocked address between the check and the connect (the
reference resolves twice). Refusals are ``EngineError(url_validation_failed, <reason>)``
with the reference's exact reasons: ``Invalid URL``, ``HTTPS is required``, ``URL not in
allowlist``, ``Private IP blocked``, ``DNS lookup failed``.

Private (blocked) addresses, as the reference classifies them: IPv4 loopback 127/8, RFC 1918,
link-local 169.254/16, broadcast, the documentation /24s, 0.0.0.0; IPv6 ::1, fc00::/7,
fe80::/10, ::, ff00::/8; an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) is classified as
its IPv4 address. A hostname is blocked if any of its addresses is private.
"""
from __future__ import annotations

import fnmatch
import ipaddress
from dataclasses import dataclass
from typing import Iterable
from urllib.parse import urlsplit

from brokers.http_functions.config import Security
from brokers.kit.errors import HTTP_REQUEST_FAILED, URL_VALIDATION_FAILED, EngineError

INVALID_URL = "Invalid URL"
HTTPS_REQUIRED = "HTTPS is required"
NOT_ALLOWED = "URL not in allowlist"
PRIVATE_IP = "Private IP blocked"
DNS_FAILED = "DNS lookup failed"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_V4_BLOCKED = tuple(ipaddress.ip_network(n) for n in (
    "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
    "255.255.255.255/32", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "0.0.0.0/32"))
_V6_BLOCKED = tuple(ipaddress.ip_network(n) for n in (
    "::1/128", "fc00::/7", "fe80::/10", "::/128", "ff00::/8"))
_DEFAULT_PORTS = {"http": 80, "https": 443}


def refused(reason: str) -> EngineError:
    return EngineError(URL_VALIDATION_FAILED, reason)


@dataclass(frozen=True)
class Target:
    """Where a URL points, as the guard read it."""

    scheme: str
    host: str
    """The host as written (lower-cased, IPv6 without brackets): what is resolved, and the
    TLS server name."""
    port: int
    path: str
    """Path and query, what goes on the request line."""
    ip: IPAddress | None
    """The host when it is an IP literal (nothing to resolve)."""

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if _DEFAULT_PORTS.get(self.scheme) == self.port else f"{host}:{self.port}"

    def url_for(self, ip: IPAddress) -> str:
        """The URL with the validated address in place of the host."""
        host = f"[{ip}]" if ip.version == 6 else str(ip)
        return f"{self.scheme}://{host}:{self.port}{self.path}"


def is_private(ip: IPAddress) -> bool:
    """The reference's private-IP classification (module docstring)."""
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    nets = _V4_BLOCKED if ip.version == 4 else _V6_BLOCKED
    return any(ip in net for net in nets)


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def parse_target(url: str, security: Security) -> Target:
    """Steps 1-3 of the check: parse, scheme, allowlist; raises the refusal."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:  # a bad port, an unbalanced bracket
        raise refused(INVALID_URL) from None
    scheme = parts.scheme.lower()
    if not scheme:
        raise refused(INVALID_URL)
    if security.require_https and scheme != "https":
        raise refused(HTTPS_REQUIRED)
    if scheme not in _DEFAULT_PORTS or not host or any(c in host for c in " \t\r\n/\\"):
        raise refused(INVALID_URL)
    ip = _literal(host)
    if ip is None and ":" in host:
        raise refused(INVALID_URL)
    shown = f"[{host}]" if ip is not None and ip.version == 6 else host
    if not any(fnmatch.fnmatchcase(shown, pattern) for pattern in security.url_allowlist):
        raise refused(NOT_ALLOWED)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(scheme, host, port or _DEFAULT_PORTS[scheme], path, ip)


def pick_address(target: Target, resolved: Iterable[str] | None, security: Security) -> IPAddress:
    """Step 4: the address to connect to. ``resolved``: the addresses the one lookup of
    ``target.host`` gave (None or empty: the lookup failed; that is ``DNS lookup failed``
    only when the check is the private-IP one); unused for an IP literal.
    With ``block_private_ips`` every address must be public (one private address blocks
    the host, as in the reference); the first is the one to connect to."""
    if target.ip is not None:
        addrs = [target.ip]
    else:
        addrs = [a for a in (_literal(r.split("%", 1)[0]) for r in resolved or ()) if a is not None]
        if not addrs and security.block_private_ips:
            raise refused(DNS_FAILED)
        if not addrs:  # no check asked for a lookup: the request itself fails, as in the reference
            raise EngineError(HTTP_REQUEST_FAILED, f"error sending request: dns error: failed to "
                                                   f"lookup address information for {target.host}")
    if security.block_private_ips and any(is_private(a) for a in addrs):
        raise refused(PRIVATE_IP)
    return addrs[0]
