"""RBAC of a listener (protocol.md Appendix C), pure: the rules, the AuthResult, the verdicts.

No I/O here: the shell calls the auth function on each upgrade and hands its result to
``parse_auth``; the core asks ``decide`` / ``decide_meta`` on every call of a connection
with a ``Session`` (``Conn.rbac``), and the registration hooks' results go through
``hook_rewrite``. A connection of a listener without ``rbac`` and without a middleware
has no session and none of this runs for it.

Invariants:
- an AuthResult is accepted whole or not at all: anything but an object, or a known field
  of the wrong type (a list holding a non-string, a non-bool flag, ...), is an auth error
  and the connection is refused; so a malformed ``forbidden_functions`` can never widen
  access by being half read. Unknown fields are ignored, ``null`` is the default;
- denials win: ``forbidden_functions`` (global) before every grant, then the namespace
  grants, ``allowed_functions`` (``default`` only), the infrastructure ids, then
  ``expose_functions``; a listener with a session but no ``rbac`` (middleware only)
  allows everything not forbidden;
- a session lives as long as its connection: nothing of it is cached elsewhere.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from brokers.kit.schema import ConfigError

INFRASTRUCTURE = frozenset({
    "engine::channels::create", "engine::workers::register",
    "engine::log::info", "engine::log::warn", "engine::log::error", "engine::log::debug",
    "engine::log::trace", "engine::baggage::get", "engine::baggage::set", "engine::baggage::get_all",
})
HOOK_KEYS = ("on_function_registration_function_id", "on_trigger_registration_function_id",
             "on_trigger_type_registration_function_id")
DEFAULT_HOOK_TIMEOUT_MS = 30000
"""``rbac.hook_timeout_ms`` (ours): the SDKs' default call timeout."""


@lru_cache(maxsize=4096)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if part == "*" else re.escape(part)
                              for part in re.split(r"(\*)", pattern)), re.S)


def glob(pattern: str, value: str) -> bool:
    """``*`` matches any run of characters (none included); nothing else is special."""
    if "*" not in pattern:
        return pattern == value
    return _glob(pattern).fullmatch(value) is not None


def match_pattern(text: str) -> str | None:
    """The glob of ``match("glob")`` / ``match('glob')``, else None."""
    t = text.strip()
    if len(t) >= 9 and t[:7] in ('match("', "match('") and t[-2:] == t[6] + ")":
        return t[7:-2]
    return None


# ---- the listener's rules ------------------------------------------------------------


class Filter:
    """One ``expose_functions`` entry: a glob on the id, or metadata matchers, in a namespace."""

    __slots__ = ("glob", "metadata", "namespace")

    def __init__(self, glob_: str | None, metadata: dict[str, tuple[bool, Any]] | None, namespace: str) -> None:
        self.glob = glob_
        self.metadata = metadata
        """key -> (is a glob, the glob or the exact value)."""
        self.namespace = namespace

    def matches(self, fid: str, ns: str, meta: Any) -> bool:
        if ns != self.namespace:
            return False
        if self.glob is not None:
            return glob(self.glob, fid)
        if not isinstance(meta, dict):
            return False
        for key, (is_glob, want) in self.metadata.items():
            if key not in meta:
                return False
            got = meta[key]
            if is_glob:
                if not isinstance(got, str) or not glob(want, got):
                    return False
            elif got != want or type(got) is not type(want):  # True is not 1
                return False
        return True


class Rules:
    """A listener's ``rbac`` block, compiled (``None``: middleware only, no rules)."""

    __slots__ = ("auth", "filters", "hooks", "hook_timeout_s", "by_meta")

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.auth: str | None = cfg.get("auth_function_id")
        self.filters = [_filter(f, f"expose_functions[{i}]") for i, f in enumerate(cfg.get("expose_functions") or [])]
        self.hooks = {k: cfg.get(k) for k in HOOK_KEYS}
        self.hook_timeout_s = cfg.get("hook_timeout_ms", DEFAULT_HOOK_TIMEOUT_MS) / 1000
        self.by_meta = any(f.metadata is not None for f in self.filters)


def _filter(raw: Any, path: str) -> Filter:
    if isinstance(raw, str):
        pattern = match_pattern(raw)
        if pattern is None:
            raise ConfigError(f'{path}: expected match("pattern"), got: {raw}')
        return Filter(pattern, None, "default")
    if not isinstance(raw, dict):
        raise ConfigError(f'{path}: expected a match("pattern") string or a map')
    unknown = set(raw) - {"match", "metadata", "namespace"}
    if unknown:
        raise ConfigError(f"{path}: unknown key '{sorted(unknown)[0]}' in expose_functions filter; "
                          f"expected 'match', 'metadata', or 'namespace'")
    ns = raw.get("namespace", "default")
    if not isinstance(ns, str):
        raise ConfigError(f"{path}.namespace: expected str")
    has_match, meta = raw.get("match") is not None, raw.get("metadata")
    if has_match == bool(meta):
        raise ConfigError(f"{path}: a filter has either a 'match' or a 'metadata' key, not both or neither")
    if has_match:
        if not isinstance(raw["match"], str):
            raise ConfigError(f"{path}.match: expected str")
        return Filter(raw["match"], None, ns)
    if not isinstance(meta, dict):
        raise ConfigError(f"{path}.metadata: expected a map")
    compiled: dict[str, tuple[bool, Any]] = {}
    for key, value in meta.items():
        pattern = match_pattern(value) if isinstance(value, str) else None
        compiled[str(key)] = (True, pattern) if pattern is not None else (False, value)
    return Filter(None, compiled, ns)


def parse_config(raw: Any, path: str) -> dict[str, Any] | None:
    """Validate a listener's ``rbac`` block (plain data is kept: it travels in the plan)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a map, got {type(raw).__name__}")
    allowed = {"auth_function_id", "expose_functions", "hook_timeout_ms", *HOOK_KEYS}
    for key, value in raw.items():
        if key not in allowed:
            raise ConfigError(f"{path}.{key}: unknown key (allowed: {', '.join(sorted(allowed))})")
        if key == "expose_functions":
            if value is not None and not isinstance(value, list):
                raise ConfigError(f"{path}.expose_functions: expected a list")
        elif key == "hook_timeout_ms":
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{path}.hook_timeout_ms: expected a positive int")
        elif value is not None and not isinstance(value, str):
            raise ConfigError(f"{path}.{key}: expected str, got {type(value).__name__}")
    Rules(raw)  # the filters, checked now
    return raw


# ---- the session: what one connection's AuthResult grants ------------------------------


class Session:
    """One connection's grants (``Conn.rbac``)."""

    __slots__ = ("namespaces", "allowed", "forbidden", "trigger_types", "may_register_types",
                 "may_register_functions", "context", "prefix", "tail", "aliases")

    def __init__(self, namespaces: dict[str, tuple[str, ...]] | None = None, allowed=(), forbidden=(),
                 trigger_types: frozenset[str] | None = None, may_register_types: bool = True,
                 may_register_functions: bool = True, context: Any = None, prefix: str | None = None) -> None:
        self.namespaces = namespaces or {}
        self.allowed = frozenset(allowed)
        self.forbidden = frozenset(forbidden)
        self.trigger_types = trigger_types
        self.may_register_types = may_register_types
        self.may_register_functions = may_register_functions
        self.context = {} if context is None else context
        self.prefix = prefix
        self.tail: Any = None
        """The last registration of this connection still in its hooks (order is kept)."""
        self.aliases: dict[str, str] = {}
        """Prefixed id -> the id the worker registered (it is called by its own name)."""


_BOOLS = {"allow_trigger_type_registration": False, "allow_function_registration": True}


def _strings(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what}: expected a list of strings")
    return value


def parse_auth(value: Any) -> Session:
    """The session an auth function's result grants; ``ValueError`` (an auth error) if it
    is not a well-formed AuthResult."""
    if value is None:
        raise ValueError("auth function returned no result")
    if not isinstance(value, dict):
        raise ValueError(f"auth result must be an object, got {type(value).__name__}")
    get = value.get
    namespaces: dict[str, tuple[str, ...]] = {}
    raw_ns = get("namespaces")
    if raw_ns is not None:
        if not isinstance(raw_ns, dict):
            raise ValueError("namespaces: expected an object")
        for ns, grants in raw_ns.items():
            namespaces[ns] = tuple(_strings(grants, f"namespaces.{ns}"))
    lists = {k: _strings(get(k), k) if get(k) is not None else [] for k in ("allowed_functions", "forbidden_functions")}
    types = get("allowed_trigger_types")
    types = None if types is None else frozenset(_strings(types, "allowed_trigger_types"))
    flags = {}
    for key, default in _BOOLS.items():
        flag = get(key)
        if flag is not None and not isinstance(flag, bool):
            raise ValueError(f"{key}: expected a boolean")
        flags[key] = default if flag is None else flag
    prefix = get("function_registration_prefix")
    if prefix is not None and not isinstance(prefix, str):
        raise ValueError("function_registration_prefix: expected a string")
    return Session(namespaces, lists["allowed_functions"], lists["forbidden_functions"], types,
                   flags["allow_trigger_type_registration"], flags["allow_function_registration"],
                   get("context"), prefix)


def open_session() -> Session:
    """The session of a listener with ``rbac`` but no ``auth_function_id`` (or a middleware only)."""
    return Session()


# ---- verdicts -------------------------------------------------------------------------


def _granted(grant: str, fid: str) -> bool:
    raw = match_pattern(grant) or grant
    return raw == fid or ("*" in raw and glob(raw, fid))


def decide(s: Session, rules: Rules | None, fid: str, ns: str) -> bool | None:
    """Whether ``s`` may call ``fid`` in ``ns``; None when only the function's metadata can
    tell (``decide_meta``)."""
    if fid in s.forbidden:
        return False
    grants = s.namespaces.get(ns)
    if grants and any(_granted(g, fid) for g in grants):
        return True
    if ns == "default" and fid in s.allowed:
        return True
    if fid in INFRASTRUCTURE or rules is None:
        return True
    for f in rules.filters:
        if f.glob is not None and f.matches(fid, ns, None):
            return True
    return None if rules.by_meta else False


def decide_meta(s: Session, rules: Rules | None, fid: str, ns: str, meta: Any) -> bool:
    """``decide`` with the function's metadata known (None: no such function)."""
    verdict = decide(s, rules, fid, ns)
    if verdict is not None:
        return verdict
    return any(f.metadata is not None and f.matches(fid, ns, meta) for f in rules.filters)


def denied_message(s: Session, fid: str) -> str:
    how = "remove from rbac.forbidden_functions" if fid in s.forbidden else "add to rbac.expose_functions"
    return f"function '{fid}' not allowed ({how})"


def namespace_denied(s: Session, data: Any) -> str | None:
    """The FORBIDDEN message of an ``engine::workers::register`` declaring a namespace the
    session was not granted (a session without ``namespaces`` declares freely)."""
    if not s.namespaces:
        return None
    declared = data.get("namespace") if isinstance(data, dict) else None
    declared = declared if isinstance(declared, str) else "default"
    if declared in s.namespaces:
        return None
    return (f"namespace '{declared}' not allowed for this session "
            f"(permitted: {', '.join(sorted(s.namespaces))})")


def hook_rewrite(result: Any, keys: dict[str, type]) -> dict[str, Any] | None:
    """A registration hook's answer: the rewrites it returns (``keys``: the fields it may
    set and their type; ``object`` for any value), or None when it denies (not an object)."""
    if not isinstance(result, dict):
        return None
    out = {}
    for key, kind in keys.items():
        value = result.get(key)
        if value is not None and (kind is object or isinstance(value, kind)):
            out[key] = value
    return out
