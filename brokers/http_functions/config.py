"""The ``iii-http-functions`` config block (workers-b §3.1), in iii's shape.

    security:
      url_allowlist: ["*"]        host glob patterns (``*``, ``?``, ``[..]``); empty = ["*"]
      block_private_ips: true
      require_https: true

The defaults are the reference's strict ones: a local ``http://127.0.0.1`` endpoint is
refused unless both flags are relaxed. An allowlist entry is matched against the URL's host
only (no scheme, no port); an invalid glob (an unclosed ``[``) fails the config, as it
fails the reference's worker at creation. Unknown keys are errors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from brokers.kit.schema import ConfigError, Field, validate


@dataclass(frozen=True)
class Security:
    """The URL guard's settings (workers-b §3.4)."""

    url_allowlist: tuple[str, ...] = ("*",)
    block_private_ips: bool = True
    require_https: bool = True


def _glob_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a glob the reference's ``glob`` crate accepts, or None."""
    i = 0
    while i < len(pattern):
        if pattern[i] == "[":
            j = i + 1
            if j < len(pattern) and pattern[j] in "!^":
                j += 1
            if j < len(pattern) and pattern[j] == "]":  # a leading ] is literal
                j += 1
            close = pattern.find("]", j)
            if close < 0:
                return f"invalid glob pattern {pattern!r}: unclosed '['"
            i = close
        i += 1
    return None


def _allowlist(value: Any, path: str) -> tuple[str, ...]:
    if not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{path}: expected a list of host patterns (strings)")
    for pattern in value:
        problem = _glob_problem(pattern)
        if problem:
            raise ConfigError(f"{path}: {problem}")
    return tuple(value) or ("*",)


SECURITY_FIELDS = {
    "url_allowlist": Field(list, list, parse=_allowlist),
    "block_private_ips": Field(bool, True),
    "require_https": Field(bool, True),
}


def parse(raw: Any, path: str) -> dict[str, Any]:
    """Validate the block; the result is plain data (it is handed to the process as its
    plan): ``{"security": {url_allowlist, block_private_ips, require_https}}``."""
    block = validate(raw, {"security": Field(dict, None)}, path)
    sec = validate(block["security"], SECURITY_FIELDS, f"{path}.security")
    return {"security": {"url_allowlist": list(sec["url_allowlist"]) or ["*"],
                         "block_private_ips": sec["block_private_ips"], "require_https": sec["require_https"]}}


def security(cfg: dict[str, Any]) -> Security:
    """The guard's settings of a parsed block."""
    sec = cfg["security"]
    return Security(tuple(sec["url_allowlist"]), sec["block_private_ips"], sec["require_https"])
