"""Mutated worker-protocol frames for the hardening fuzz test (issue 11): the frame model.
(The hypothesis strategies that draw them are ``fuzzstrategies.py``.)

What it owns: a valid frame of every message type a worker sends (protocol.md §3: every
``type`` of ``brokers/gateway/messages.py``, plus the ``engine::*``, state, queue and
publish calls), the mutations applied to them (dropped fields, wrong types, huge ints,
deep nesting, big payloads, duplicate keys and ids, other workers' ids, reserved ids,
raw-byte damage, garbage frames), their rendering to the exact text or bytes sent, and
the two judgements the test needs about a frame: may it legitimately take a bystander's
binding away (``defang`` rewrites those), and must the engine answer it (``must_answer``).

Frames are plain data so that hypothesis prints a falsifying example that can be read
and replayed: a frame is a ``dict`` (rendered by ``render``, with ``Deep``, ``Big`` and
``DupKey`` inside), a ``Mangled`` dict (its rendering then damaged by one raw op) or a
``Raw`` payload. Ids of things that exist only at run time (the bystanders' functions
and bindings, the fuzzing connections' worker ids and reattach tokens) appear as
placeholder strings such as ``"<by:echo>"``, replaced when the frame is rendered.

Invariants:
- ``render`` never fails: any frame renders to ``str`` (a text frame) or ``bytes`` (a
  binary frame), whatever was drawn;
- a frame that passes ``defang`` cannot, if the engine behaves as the spec says, remove
  or replace a bystander's binding, trigger type provider or function (the spec lets any
  caller do that with a valid frame: ``registertrigger`` with an existing binding id
  replaces it, §6.1.7; ``registertriggertype`` is last-writer-wins, §6.2.3;
  ``engine::unregister_trigger`` removes any binding, §6.4); frames that name those ids
  but are invalid in a way the gateway must refuse are kept;
- ``must_answer`` is conservative: it says yes only for a well-formed sync call (every
  field of the declared type, nesting well under serde's 128 levels, no lone surrogate)
  whose target answers (not a function or trigger type a fuzzing connection registered).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

# ---- placeholders: run-time ids ----------------------------------------------------------

BY_ECHO = "<by:echo>"
BY_ON_STATE = "<by:on_state>"
BY_ON_PUB = "<by:on_pub>"
BY_ON_DURABLE = "<by:on_durable>"
BY_ON_PARKED = "<by:on_parked>"
BY_STATE_BINDING = "<by:state-binding>"
BY_PUB_BINDING = "<by:pub-binding>"
BY_PARKED_BINDING = "<by:parked-binding>"
BY_DURABLE_BINDING = "<by:durable-binding>"
BY_PARKED_TYPE = "<by:parked-type>"
BY_SCOPE = "<by:scope>"
BY_TOPIC = "<by:topic>"
BY_DURABLE_TOPIC = "<by:durable-topic>"
BY_NAME = "<by:name>"
"""The worker name of the serving bystander (a fuzzer declaring it is refused and closed)."""
BY_WORKER = "<by:worker>"
"""The serving bystander's worker id (a ``reattach`` naming it, without its token, is ignored)."""

FUZZ_CONNS = 3
"""Fuzzing connections per batch: 0 declared in ``default``, 1 declared in ``fz-ns``, 2 undeclared."""
FZ_NS = "fz-ns"


def fz_worker(k: int) -> str:
    return f"<fz:worker:{k}>"


def fz_token(k: int) -> str:
    return f"<fz:token:{k}>"


PROTECTED_BINDINGS = frozenset({BY_STATE_BINDING, BY_PUB_BINDING, BY_PARKED_BINDING, BY_DURABLE_BINDING})
ENGINE_TRIGGER_TYPES = ("state", "subscribe", "durable:subscriber", "engine::functions-available",
                        "engine::workers-available")
UNREGISTER_TRIGGER_FN = "engine::unregister_trigger"
REGISTER_TRIGGER_FN = "engine::register_trigger"
REGISTER_WORKER_FN = "engine::workers::register"

# ---- values that render specially -------------------------------------------------------


@dataclass(frozen=True)
class Deep:
    """``levels`` nested arrays (``[[[...]]]``) or objects (``{"d":{"d":...0}}``)."""

    levels: int
    kind: str = "["

    def __repr__(self) -> str:
        return f"Deep({self.levels}, {self.kind!r})"


@dataclass(frozen=True)
class Big:
    """A string of ``size`` copies of ``char`` (a big payload that prints small)."""

    size: int
    char: str = "x"

    def __repr__(self) -> str:
        return f"Big({self.size}, {self.char!r})"


@dataclass(frozen=True)
class DupKey:
    """A key written a second time in the same object; JSON parsers keep the last one."""

    name: str

    def __repr__(self) -> str:
        return f"DupKey({self.name!r})"


@dataclass(frozen=True)
class Raw:
    """A frame sent exactly as given: ``str`` as a text frame, ``bytes`` as a binary one."""

    data: str | bytes


@dataclass(frozen=True)
class Mangled:
    """``frame`` rendered, then damaged by ``op`` at position ``at`` (see ``RAW_OPS``)."""

    frame: dict
    op: str
    at: int = 0


RAW_OPS = ("truncate", "nul", "ctrl", "bom", "binary", "bad_utf8", "otlp", "trailing", "concat", "ws")
KEEPS_JSON = frozenset({"binary", "ws"})
"""Raw ops after which the frame is still the same JSON message (binary frames hold JSON too, §1.3)."""

# ---- rendering ---------------------------------------------------------------------------


def has_surrogate(s: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in s)


def _str(s: str) -> str:
    # A lone surrogate cannot be sent as UTF-8: it goes out as its \u escape (valid JSON
    # syntax that strict decoders refuse), everything else as raw UTF-8.
    return json.dumps(s, ensure_ascii=has_surrogate(s))


def encode(value: Any, env: dict[str, str]) -> str:
    """JSON text of ``value``; placeholder strings replaced from ``env``."""
    if isinstance(value, dict):
        parts = []
        for key, item in value.items():
            name = key.name if isinstance(key, DupKey) else str(key)
            parts.append(_str(name) + ":" + encode(item, env))
        return "{" + ",".join(parts) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(encode(item, env) for item in value) + "]"
    if isinstance(value, str):
        return _str(env.get(value, value))
    if isinstance(value, Deep):
        if value.kind == "{":
            return '{"d":' * value.levels + "0" + "}" * value.levels
        return "[" * value.levels + "]" * value.levels
    if isinstance(value, Big):
        return json.dumps(value.char * value.size, ensure_ascii=False)
    return json.dumps(value)  # None, bool, int (any size), float (NaN / Infinity tokens too)


def render(frame: Any, env: dict[str, str]) -> str | bytes:
    """The text (text frame) or bytes (binary frame) to send for ``frame``."""
    if isinstance(frame, Raw):
        return frame.data
    if isinstance(frame, Mangled):
        return _mangle(encode(frame.frame, env), frame.op, frame.at)
    return encode(frame, env)


def _mangle(text: str, op: str, at: int) -> str | bytes:
    pos = at % (len(text) + 1)
    if op == "truncate":
        return text[:pos]
    if op == "nul":
        return text[:pos] + "\x00" + text[pos:]
    if op == "ctrl":  # a raw control character inside the first string from pos on
        q = text.find('"', pos)
        q = q if q >= 0 else text.find('"')
        return text if q < 0 else text[:q + 1] + "\x01\x1b" + text[q + 1:]
    if op == "bom":
        return "\ufeff" + text
    if op == "binary":
        return text.encode()
    if op == "bad_utf8":
        raw = text.encode()
        pos = at % (len(raw) + 1)
        return raw[:pos] + b"\xff\xfe\xc3" + raw[pos:]
    if op == "otlp":
        return b"OTLP" + text.encode()
    if op == "trailing":
        return text + ",}"
    if op == "concat":
        return text + text
    if op == "ws":
        return " \r\n\t" + text + "\n "
    raise ValueError(op)


# ---- structure helpers -------------------------------------------------------------------


def effective(frame: dict) -> dict:
    """The top-level fields as a decoder sees them: for a duplicated key, the last value."""
    out: dict[str, Any] = {}
    for key, value in frame.items():
        name = key.name if isinstance(key, DupKey) else key
        out.pop(name, None)
        out[name] = value
    return out


def depth(value: Any) -> int:
    """Nesting of arrays and objects (the frame's own object counts 1)."""
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, (list, tuple)):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, Deep):
        return value.levels
    return 0


def strings(value: Any) -> Iterable[str]:
    """Every string in ``value``: keys and values, placeholders unresolved."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key.name if isinstance(key, DupKey) else key
            yield from strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from strings(item)
    elif isinstance(value, str):
        yield value


def numbers(value: Any) -> Iterable[int | float]:
    """Every number in ``value`` (keys are strings)."""
    if isinstance(value, dict):
        for item in value.values():
            yield from numbers(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from numbers(item)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


DOUBLE_MAX = 1.7976931348623157e308


def undecodable(frame: Any) -> bool:
    """What the engine refuses to parse, as serde_json does: a lone surrogate escape, or an
    integer beyond a double's range (wire.py); such a frame is dropped, never answered."""
    return (any(has_surrogate(s) for s in strings(frame))
            or any(isinstance(n, int) and abs(n) > DOUBLE_MAX for n in numbers(frame)))


def _is_str(value: Any) -> bool:
    return isinstance(value, (str, Big))


def _opt_str(value: Any) -> bool:
    return value is None or _is_str(value)


def _among(value: Any, choices: Iterable[str]) -> bool:
    """``value in choices`` for any drawn value (a list or dict is never among them)."""
    return isinstance(value, str) and value in choices


def _replace(value: Any, old: frozenset, new: str) -> Any:
    if isinstance(value, dict):
        return {k: _replace(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, old, new) for v in value]
    if isinstance(value, str) and value in old:
        return new
    return value


def defang(frame: dict) -> dict:
    """``frame`` unless a valid version of it may remove a bystander's binding, provider
    or function (see the module invariants); then the protected id is swapped for one
    of the fuzzer's own."""
    eff = effective(frame)
    kind = eff.get("type")
    if any(s == UNREGISTER_TRIGGER_FN for s in strings(frame)):
        # engine::unregister_trigger removes any binding, also through an enqueued job
        return _replace(frame, PROTECTED_BINDINGS, "fz-b1")
    if kind == "registertrigger" and _among(eff.get("id"), PROTECTED_BINDINGS) and all(
            _is_str(eff.get(k)) for k in ("trigger_type", "function_id")) and all(
            _opt_str(eff.get(k)) for k in ("namespace", "trigger_namespace")):
        return _set_key(frame, "id", "fz-b2")
    if kind == "registertriggertype" and _among(eff.get("id"), ENGINE_TRIGGER_TYPES) and all(
            _opt_str(eff.get(k)) for k in ("description", "namespace")):
        return _set_key(frame, "id", "fz-type")
    return frame


def _set_key(frame: dict, name: str, value: Any) -> dict:
    out = {}
    for key, item in frame.items():
        out[key] = value if (key.name if isinstance(key, DupKey) else key) == name else item
    return out


def must_answer(frame: Any, fuzz_functions: set[str], fuzz_types: set[str]) -> str | None:
    """The ``invocation_id`` of a sync call the engine must answer, else None.

    ``fuzz_functions`` / ``fuzz_types``: every function id / trigger type id a fuzzing
    connection registered in the batch (calls to those legitimately wait: the fuzzers do
    not answer, and ``engine::register_trigger`` waits 10 s for a provider's ack)."""
    if isinstance(frame, Mangled):
        if frame.op not in KEEPS_JSON:
            return None
        frame = frame.frame
    if not isinstance(frame, dict):
        return None
    eff = effective(frame)
    inv, fid, action = eff.get("invocation_id"), eff.get("function_id"), eff.get("action")
    if not _among(eff.get("type"), ("invokefunction",)) or not isinstance(inv, str) or not inv:
        return None
    if not isinstance(fid, str) or fid in fuzz_functions or any(isinstance(k, DupKey) and k.name == "type"
                                                                 for k in frame):
        return None
    if action is not None and (not isinstance(action, dict) or effective(action).get("type") == "void"):
        return None
    if not all(_opt_str(eff.get(k)) for k in ("traceparent", "baggage")):
        return None
    if depth(frame) > 100 or undecodable(frame):
        return None
    data = eff.get("data")
    if fid == REGISTER_TRIGGER_FN and isinstance(data, dict) and _among(
            effective(data).get("trigger_type"), fuzz_types | {BY_PARKED_TYPE}):
        return None
    if fid == "engine::queue::enqueue" and isinstance(data, dict) and effective(data).get("function_id") == REGISTER_TRIGGER_FN:
        return None  # harmless, but its job could wait on a fuzzer's provider; keep it simple
    return inv


def registered_ids(frames: Iterable[Any], kind: str) -> set[str]:
    """Every string ``id`` of a ``kind`` frame (wherever its ``type`` key sits)."""
    out: set[str] = set()
    for frame in frames:
        base = frame.frame if isinstance(frame, Mangled) else frame
        if isinstance(base, dict):
            types = [v for k, v in base.items() if (k.name if isinstance(k, DupKey) else k) == "type"]
            if kind in types:
                out.update(v for k, v in base.items()
                           if (k.name if isinstance(k, DupKey) else k) == "id" and isinstance(v, str))
    return out


def describe_frame(frame: Any, env: dict[str, str], limit: int = 400) -> str:
    """A short printable form of what was sent for ``frame``."""
    data = render(frame, env)
    text = repr(data[:limit])
    return text + (f"... ({len(data)} {'bytes' if isinstance(data, bytes) else 'chars'})"
                   if len(data) > limit else "")
