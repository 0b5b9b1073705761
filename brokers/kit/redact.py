"""What counts as a secret in a log line, and taking it (and call payloads) out.

Pure: no I/O of its own; the environment comes in as an argument (``Redactor(environ)``)
and the module-level ``REDACTOR`` is built from ``os.environ`` at first use.

Secret, and replaced by ``[REDACTED]`` wherever it occurs in a message, its arguments or a
formatted exception:
- the value of every environment variable whose name contains TOKEN, SECRET, KEY,
  PASSWORD, PASSWD, CREDENTIAL or AUTH (``PROVIDER_API_TOKEN``, ``HOOK_HMAC_SECRET``), of at
  least ``MIN_ENV_SECRET`` characters (``KEYMAP=us`` is not a secret worth hiding);
- the value of every variable an HTTP-invoked function's auth names (``token_key``,
  ``secret_key``, ``value_key``), whatever the variable's name: ``note_auth(spec)`` adds
  one (the http-functions process calls it at registration); an auth spec seen in a log
  argument is noted too;
- whatever looks like one: ``Bearer <token>`` / ``Basic <creds>``, the value of an
  ``Authorization`` / ``Proxy-Authorization`` / ``x-iii-signature`` / ``x-api-key`` /
  ``cookie`` header (``name: value``, ``"name": "value"``, ``('name', 'value')``),
  ``sha256=<hex>`` HMAC signatures, and ``token=`` / ``secret=`` / ``password=`` /
  ``api_key=`` query or form parameters.

Payloads elided: a call's ``data`` never reaches a log line. In a log argument that is a
dict (or a list/tuple of them, at any depth) the values under ``data``, ``payload``,
``body``, ``result`` and ``value`` become ``<elided>``; bytes arguments (frame bodies)
become ``<N bytes>``. A message text itself is not parsed for JSON: callers pass payloads
as arguments, never pre-formatted.

Invariants: ``redact_record`` is idempotent and never raises (a record it cannot format is
logged as its bare template); the redacted text never contains a known secret value, even
one that is a substring of a longer word (secrets are replaced longest first).
"""
from __future__ import annotations

import logging
import os
import re
import threading
from typing import Any, Iterable, Mapping

MASK = "[REDACTED]"
ELIDED = "<elided>"
MIN_ENV_SECRET = 8
"""Shortest value of a secret-looking variable that is hidden (shorter ones are flags)."""
MIN_NAMED_SECRET = 3
"""Shortest value of a variable an auth spec names (hidden whatever its length above)."""

SECRET_NAME = re.compile(r"TOKEN|SECRET|KEY|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)
AUTH_FIELDS = ("token_key", "secret_key", "value_key")
PAYLOAD_KEYS = frozenset({"data", "payload", "body", "result", "value"})
_NOT_SECRETS = frozenset({"true", "false", "none", "null", "yes", "no", "on", "off"})

_HEADER_NAMES = r"(?:proxy-)?authorization|x-iii-signature|x-api-key|api-key|cookie|set-cookie"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # "authorization": "Bearer x"  /  'authorization': 'x'  /  ('authorization', 'x')
    (re.compile(r"""(?i)(["'](?:""" + _HEADER_NAMES + r""")["']\s*[:,]\s*)(["'])(?:\\.|(?!\2).)*\2"""),
     r"\1\2" + MASK + r"\2"),
    # Authorization: Bearer x   (a header line, up to the end of the line)
    (re.compile(r"(?i)(?<![\w-])((?:" + _HEADER_NAMES + r")\s*[:=]\s*)(?![\s\"'\[])[^\r\n,;}]+"),
     r"\1" + MASK),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/]+=*"), r"\1 " + MASK),
    (re.compile(r"(?i)\bsha(?:1|256|384|512)=[0-9a-f]{16,}"), "sha256=" + MASK),
    (re.compile(r"(?i)(?<![\w-])((?:access_|refresh_|id_)?token|secret|password|passwd|api[_-]?key)"
                r"=([^&\s\"']+)"), r"\1=" + MASK),
)


def secret_name(name: str) -> bool:
    """Whether an environment variable's name says it holds a secret."""
    return bool(SECRET_NAME.search(name))


class Redactor:
    """The secret values of one process's environment, and the patterns."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._named: set[str] = set()
        self._sorted: tuple[str, ...] = ()
        for name, value in list(self.environ.items()):
            if secret_name(name):
                self._add(value, MIN_ENV_SECRET)
        self._rebuild()

    # ---- what is secret --------------------------------------------------------------

    def _add(self, value: Any, minimum: int) -> bool:
        if not isinstance(value, str):
            return False
        value = value.strip()
        if len(value) < minimum or value.lower() in _NOT_SECRETS or value in self._values:
            return False
        self._values.add(value)
        return True

    def _rebuild(self) -> None:
        self._sorted = tuple(sorted(self._values, key=len, reverse=True))

    def add(self, *values: str) -> None:
        """Hide these values from now on (a secret resolved some other way)."""
        with self._lock:
            if any([self._add(v, MIN_NAMED_SECRET) for v in values]):
                self._rebuild()

    def note_env(self, *names: str) -> None:
        """Hide the values of these environment variables (named by an auth spec)."""
        with self._lock:
            changed = False
            for name in names:
                if isinstance(name, str) and name not in self._named:
                    self._named.add(name)
                    changed |= self._add(self.environ.get(name), MIN_NAMED_SECRET)
            if changed:
                self._rebuild()

    def note_auth(self, spec: Any) -> None:
        """An HTTP-invoked function's ``auth`` (a dict, or anything with a ``key``
        attribute such as ``core.AuthRef``): hide the variable it names."""
        if isinstance(spec, Mapping):
            self.note_env(*(spec[f] for f in AUTH_FIELDS if isinstance(spec.get(f), str)))
        elif isinstance(getattr(spec, "key", None), str):
            self.note_env(spec.key)

    @property
    def values(self) -> tuple[str, ...]:
        return self._sorted

    # ---- taking it out ----------------------------------------------------------------

    def text(self, text: str) -> str:
        """``text`` with every known secret value and secret-looking token masked."""
        if not text:
            return text
        for value in self._sorted:
            if value in text:
                text = text.replace(value, MASK)
        for pattern, repl in _PATTERNS:
            text = pattern.sub(repl, text)
        return text

    def arg(self, value: Any, depth: int = 0) -> Any:
        """A log argument with payloads elided (see the module); strings are left to
        ``text``, which runs on the formatted message."""
        if isinstance(value, (bytes, bytearray, memoryview)):
            return f"<{len(value)} bytes>"
        if depth > 6:
            return value
        if isinstance(value, Mapping):
            auth = value.get("auth")
            if isinstance(auth, Mapping):
                self.note_auth(auth)
            if any(f in value for f in AUTH_FIELDS):
                self.note_auth(value)
            return {k: (ELIDED if isinstance(k, str) and k.lower() in PAYLOAD_KEYS
                        else self.arg(v, depth + 1)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.arg(v, depth + 1) for v in value]
        if isinstance(value, tuple) and not hasattr(value, "_fields"):
            return tuple(self.arg(v, depth + 1) for v in value)
        return value

    def args(self, args: Any) -> Any:
        """``record.args``: a tuple of arguments, or one mapping (``%(name)s`` style)."""
        if isinstance(args, tuple):
            return tuple(self.arg(a) for a in args)
        if isinstance(args, Mapping):
            return {k: self.arg(v) for k, v in args.items()}
        return args

    def record(self, record: logging.LogRecord) -> logging.LogRecord:
        """Redact ``record`` in place: its message is formatted once (payload arguments
        elided), masked and kept as ``msg`` with no ``args``; a formatted exception is
        masked into ``exc_text`` (so every formatter prints the masked one)."""
        if getattr(record, "_iii_redacted", False):
            return record
        try:
            args = self.args(record.args) if record.args else record.args
            msg = str(record.msg)
            if args:
                try:
                    msg = msg % args
                except (TypeError, ValueError, KeyError):
                    msg = f"{msg} {args!r}"
            record.msg = self.text(msg)
            record.args = None
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = self.text(record.exc_text)
            if record.stack_info:
                record.stack_info = self.text(record.stack_info)
        except Exception:  # never lose a log line to redaction; never leak one either
            record.msg = self.text(str(record.msg))
            record.args = None
        record._iii_redacted = True  # type: ignore[attr-defined]
        return record


_REDACTOR: Redactor | None = None
_INIT = threading.Lock()


def redactor() -> Redactor:
    """This process's redactor (built from ``os.environ`` at first use)."""
    global _REDACTOR
    if _REDACTOR is None:
        with _INIT:
            if _REDACTOR is None:
                _REDACTOR = Redactor()
    return _REDACTOR


def reset(environ: Mapping[str, str] | None = None) -> Redactor:
    """A fresh process redactor (tests; a process whose environment changed)."""
    global _REDACTOR
    with _INIT:
        _REDACTOR = Redactor(environ)
    return _REDACTOR


def text(value: str) -> str:
    return redactor().text(value)


def note_auth(spec: Any) -> None:
    redactor().note_auth(spec)


def note_env(*names: str) -> None:
    redactor().note_env(*names)


def add(*values: str) -> None:
    redactor().add(*values)


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    return redactor().record(record)


class RedactFilter(logging.Filter):
    """A handler filter: every record it passes is redacted first (never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def all_secrets(environ: Mapping[str, str], names: Iterable[str] = ()) -> tuple[str, ...]:
    """The values ``Redactor(environ)`` hides, plus those of ``names`` (for tests and checks)."""
    r = Redactor(environ)
    r.note_env(*names)
    return r.values
