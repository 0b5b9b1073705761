"""CORS for the HTTP worker (workers-b §2.8), as tower-http's layer answers it: pure.

No ``cors`` block: permissive (any origin, method and header). ``allowed_origins`` empty
or holding ``"*"``: any origin; otherwise the exact list (the request's ``Origin`` is
echoed when listed, with ``Vary: origin``). ``allowed_methods`` empty: any. Request
headers: always any. No credentials, no max-age, no expose-headers settings.

A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) is
answered here with 200 and an empty body, before any route is looked at.
"""
from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


class Cors:
    def __init__(self, cfg: dict[str, Any] | None) -> None:
        origins = (cfg or {}).get("allowed_origins") or []
        methods = (cfg or {}).get("allowed_methods") or []
        self.any_origin = not origins or "*" in origins
        if "*" in origins and len(origins) > 1:
            log.warning("cors.allowed_origins mixes '*' with other origins: any origin is allowed")
        self.origins = {o.encode() for o in origins if o != "*"}
        self.methods = b", ".join(m.upper().encode() for m in methods) if methods else b"*"

    def _origin(self, origin: bytes | None) -> list[tuple[bytes, bytes]]:
        if self.any_origin:
            return [(b"access-control-allow-origin", b"*")]
        if origin is not None and origin in self.origins:
            return [(b"access-control-allow-origin", origin), (b"vary", b"origin")]
        return [(b"vary", b"origin")]

    def preflight(self, method: str, headers: dict[bytes, bytes]) -> list[tuple[bytes, bytes]] | None:
        """The preflight answer's headers, or None when the request is not a preflight."""
        if method != "OPTIONS" or b"origin" not in headers \
                or b"access-control-request-method" not in headers:
            return None
        out = self._origin(headers.get(b"origin"))
        out.append((b"access-control-allow-methods", self.methods))
        requested = headers.get(b"access-control-request-headers")
        out.append((b"access-control-allow-headers", requested or b"*"))
        return out

    def actual(self, headers: dict[bytes, bytes]) -> list[tuple[bytes, bytes]]:
        """Headers to add to an ordinary response (only when the request had an Origin)."""
        if b"origin" not in headers:
            return []
        return self._origin(headers.get(b"origin"))
