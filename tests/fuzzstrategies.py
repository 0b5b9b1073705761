"""The hypothesis strategies of the hardening fuzz (issue 11): values, a valid frame of every
message type a worker sends, their mutations, raw garbage, and the batches the test draws.
What a frame is, how it renders and what the engine must do with it is ``fuzzframes.py``.
"""
from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from tests.fuzzframes import (BY_DURABLE_BINDING, BY_DURABLE_TOPIC, BY_ECHO, BY_NAME,
                              BY_ON_DURABLE, BY_ON_PARKED, BY_ON_PUB, BY_ON_STATE,
                              BY_PARKED_BINDING, BY_PARKED_TYPE, BY_SCOPE, BY_STATE_BINDING,
                              BY_TOPIC, BY_WORKER, Big, Deep, DupKey, ENGINE_TRIGGER_TYPES,
                              FUZZ_CONNS, FZ_NS, Mangled, PROTECTED_BINDINGS, RAW_OPS,
                              REGISTER_TRIGGER_FN, REGISTER_WORKER_FN, Raw,
                              UNREGISTER_TRIGGER_FN, has_surrogate, defang, fz_token,
                              fz_worker)

# ---- value strategies ----------------------------------------------------------------------

DEPTHS = (2, 64, 127, 128, 129, 200, 253, 254, 255, 256, 1000, 1023, 1024, 1025, 5000, 100_000)
BIG_SIZES = (300, 5_000, 70_000, 300_000, 1_100_000)

RESERVED_IDS = ("engine::x", "iii::y", "state::set", "engine::functions::list", "engine::workers::register",
                "engine::queue::enqueue", "publish", "configuration::z", "stream::set(s)")
FUZZ_FUNCTIONS = ("fz::a", "fz::b", "fz::c")
OTHER_IDS = (BY_ECHO, BY_ON_STATE, BY_ON_PUB, BY_ON_PARKED, BY_ON_DURABLE, BY_PARKED_BINDING,
             BY_STATE_BINDING, BY_DURABLE_BINDING, BY_PARKED_TYPE, BY_WORKER) + tuple(
    fz_worker(k) for k in range(FUZZ_CONNS))

_WEIRD_TEXT = ("\x00", "\x01\x02\x1f", "\x7f", "\u200e\u202e", "\ufeff", "\ud800", "\udfff", "a\ud83dz",
               "é", "日本", "🙂", "\u0000engine::x", " engine::x", "engine::x\n", "::", "a::b::", "\\", "\"")

HUGE_INTS = (10**30, -(10**30), 2**63, 2**64, 2**64 - 1, -(2**63) - 1, 10**400)

SCALARS = st.sampled_from([None, True, False, 0, -1, 1.5, -0.0, 1e308, float("nan"), float("inf"),
                           float("-inf"), "", " ", "\t\n", "null", "0"] + list(HUGE_INTS))
WEIRD_STR = st.one_of(st.sampled_from(_WEIRD_TEXT), st.text(max_size=12),
                      st.lists(st.sampled_from(_WEIRD_TEXT), min_size=1, max_size=4).map("".join))
IDS = st.sampled_from(RESERVED_IDS + FUZZ_FUNCTIONS + OTHER_IDS)

heavy_values = st.one_of(
    st.builds(Deep, st.sampled_from(DEPTHS), st.sampled_from("[{")),
    st.builds(Big, st.sampled_from(BIG_SIZES), st.sampled_from(["x", "é"])),
    st.just(Big(5000, "\x00")),
)
"""Deep nesting and big strings: rarer than the others, so a batch stays a few MB."""

wrong_values = st.one_of(
    SCALARS,
    SCALARS,
    WEIRD_STR,
    WEIRD_STR,
    IDS,
    st.sampled_from([[], [None], ["x"], [1, "x"], {}, {"a": 1}, [[]], {"": None}, {"type": "void"},
                     [10**30], {"n": 10**30}, {"_caller_worker_id": "spoof"}]),
    heavy_values,
)
"""A value of the wrong type (or a hostile value of the right one) for any field."""

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=8),
              st.sampled_from(HUGE_INTS)),
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(st.text(max_size=6), children, max_size=3)),
    max_leaves=6)
"""An arbitrary JSON payload (``data``, ``result``, ``metadata``, ``config`` are any JSON, §2)."""

payloads = st.one_of(json_values, wrong_values)
uuids = st.uuids().map(str)
inv_ids = st.one_of(uuids, uuids, st.sampled_from(["dup-1", "dup-2"]))
"""Invocation ids: mostly fresh, sometimes a reused one (duplicate ids)."""
fn_targets = st.sampled_from(FUZZ_FUNCTIONS + RESERVED_IDS + (BY_ECHO, BY_ON_STATE, BY_ON_PUB, "nope::x", ""))
binding_ids = st.sampled_from(("fz-b1", "fz-b2", "fz-b3") + tuple(PROTECTED_BINDINGS))
scopes = st.sampled_from(["fz-scope", BY_SCOPE])
topics = st.sampled_from(["fz-topic", BY_TOPIC, BY_DURABLE_TOPIC])
namespaces = st.sampled_from([None, "default", FZ_NS, " ", "", "other-ns"])
trigger_types = st.sampled_from(ENGINE_TRIGGER_TYPES + (BY_PARKED_TYPE, "fz-type", "nobody-provides", "http", "cron"))
provided_types = st.sampled_from(("fz-type", "fz-type-2", BY_PARKED_TYPE) + ENGINE_TRIGGER_TYPES)
names = st.one_of(st.sampled_from(["fz-name", BY_NAME, "iii-state", "iii-engine-functions"]), WEIRD_STR)


def _msg(type_: str, required: dict, optional: dict | None = None) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({"type": st.just(type_), **required}, optional=optional or {})


def _config_for(ttype: str) -> st.SearchStrategy:
    if ttype == "state":
        return st.fixed_dictionaries({"scope": scopes}, optional={"key": st.sampled_from(["k", "fz-key"])})
    if ttype in ("subscribe", "durable:subscriber"):
        return st.fixed_dictionaries({"topic": topics})
    if ttype == "cron":
        return st.just({"expression": "0 0 0 1 1 *"})
    return st.one_of(st.just({}), json_values)


@st.composite
def _binding_fields(draw: st.DrawFn) -> dict:
    ttype = draw(trigger_types)
    out = {"trigger_type": ttype, "function_id": draw(fn_targets), "config": draw(_config_for(ttype))}
    if draw(st.booleans()):
        out["metadata"] = draw(payloads)
    return out


def _call(function_id: str, data: st.SearchStrategy) -> st.SearchStrategy[tuple[str, Any]]:
    return st.tuples(st.just(function_id), data)


def _d(required: dict, optional: dict | None = None) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries(required, optional=optional or {})


declare_data = _d({"runtime": st.sampled_from(["python", "node", "rust"]), "version": st.just("fuzz"),
                   "name": names, "pid": st.integers(0, 2**31)},
                  {"namespace": namespaces, "features": st.sampled_from([["large-messages.v1"], [], ["observe.v1"]]),
                   "description": WEIRD_STR, "isolation": st.none(), "os": st.just("Linux"),
                   "telemetry": st.just({"language": "C", "framework": "iii-py"})})
"""``engine::workers::register`` data (§4.3)."""

calls = st.one_of(
    _call(BY_ECHO, st.one_of(st.builds(lambda v: {"probe": v}, payloads), payloads)),
    _call("state::set", _d({"scope": scopes, "key": st.sampled_from(["k", "fz-key"]), "value": payloads})),
    _call("state::get", _d({"scope": scopes, "key": st.just("k")})),
    _call("state::delete", _d({"scope": scopes, "key": st.just("k")})),
    _call("state::list", _d({"scope": scopes})),
    _call("state::list_groups", st.just({})),
    _call("state::update", _d({"scope": scopes, "key": st.just("k"), "ops": st.lists(st.one_of(
        _d({"type": st.just("set"), "path": st.sampled_from(["", "a", "a.b"]), "value": payloads}),
        _d({"type": st.just("increment"), "path": st.just("n"), "by": st.one_of(st.integers(), st.sampled_from(HUGE_INTS))}),
        _d({"type": st.just("merge"), "value": payloads}),
        _d({"type": st.just("append"), "path": st.just("l"), "value": payloads}),
        _d({"type": st.just("remove"), "path": st.just("a")})), min_size=1, max_size=3)})),
    _call("publish", _d({"topic": topics, "data": payloads})),
    _call("iii::durable::publish", _d({"topic": topics, "data": payloads})),
    _call("engine::functions::list", _d({}, {"search": WEIRD_STR, "prefix": st.just("fz"),
                                             "include_internal": st.booleans(), "workers": st.just(["fz-name"])})),
    _call("engine::functions::info", st.one_of(_d({"function_id": fn_targets}),
                                               _d({"function_ids": st.lists(fn_targets, max_size=3)}))),
    _call("engine::workers::list", _d({}, {"search": WEIRD_STR, "runtime": st.just("python")})),
    _call("engine::workers::info", _d({"name": names})),
    _call("engine::triggers::list", _d({}, {"include_internal": st.booleans()})),
    _call("engine::triggers::info", _d({"id": provided_types})),
    _call("engine::registered-triggers::list", _d({}, {"include_internal": st.booleans()})),
    _call("engine::registered-triggers::info", _d({"id": binding_ids})),
    _call(REGISTER_TRIGGER_FN, st.builds(lambda b, tns: {**b, **({"trigger_namespace": tns} if tns else {})},
                                         _binding_fields(), st.sampled_from([None, None, "default", FZ_NS]))),
    _call(UNREGISTER_TRIGGER_FN, _d({"id": st.sampled_from(["fz-b1", "fz-b2", "no-such-binding"])})),
    _call("engine::queue::list_topics", st.just({})),
    _call("engine::queue::topic_stats", _d({"topic": topics})),
    _call("engine::queue::dlq_topics", st.just({})),
    _call("engine::queue::dlq_messages", _d({"topic": st.sampled_from(["fz", "nope"])},
                                            {"offset": st.integers(0, 3), "limit": st.integers(0, 3)})),
    _call("engine::queue::enqueue", _d({"queue": st.sampled_from(["fz", "nope"]), "function_id": fn_targets,
                                        "data": payloads, "messageReceiptId": uuids})),
    _call("iii::queue::redrive", _d({"queue": st.sampled_from(["fz", "nope"])})),
    _call("iii::queue::redrive_message", _d({"queue": st.just("fz"), "message_id": uuids})),
    _call("iii::queue::discard_message", _d({"queue": st.just("fz"), "message_id": uuids})),
    _call(REGISTER_WORKER_FN, declare_data),
    _call("engine::channels::create", _d({"buffer_size": st.one_of(st.none(), st.integers(-5, 5000))})),
    st.tuples(fn_targets, payloads),
)
"""``(function_id, data)`` of a call of every kind the engine serves, and of the bystander's."""

actions = st.sampled_from([None, None, None, {"type": "void"}, {"type": "enqueue", "queue": "fz"},
                           {"type": "enqueue", "queue": "nope"}])


@st.composite
def invokefunction(draw: st.DrawFn) -> dict:
    fid, data = draw(calls)
    frame: dict[str, Any] = {"type": "invokefunction", "function_id": fid}
    action = draw(actions)
    if action is None or action["type"] != "void" or draw(st.booleans()):
        frame["invocation_id"] = draw(inv_ids)
    frame["data"] = data
    if action is not None:
        frame["action"] = action
    for key, strategy in (("namespace", namespaces), ("metadata", payloads),
                          ("traceparent", st.just("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")),
                          ("baggage", st.just("k=v"))):
        if draw(st.integers(0, 4)) == 0:
            frame[key] = draw(strategy)
    return frame


def _reattach_ids() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from([BY_WORKER] + [fz_worker(k) for k in range(FUZZ_CONNS)]), uuids)


valid_frames = st.one_of(
    _msg("registerfunction", {"id": st.sampled_from(FUZZ_FUNCTIONS + RESERVED_IDS + (BY_ECHO,))},
         {"description": WEIRD_STR, "request_format": json_values, "response_format": json_values,
          "metadata": payloads,
          "invocation": st.just({"url": "https://example.com/fn", "method": "POST"})}),
    _msg("unregisterfunction", {"id": st.sampled_from(FUZZ_FUNCTIONS + RESERVED_IDS + (BY_ECHO,))}),
    invokefunction(),
    invokefunction(),
    invokefunction(),
    _msg("invocationresult", {"invocation_id": inv_ids, "function_id": fn_targets},
         {"result": payloads, "error": st.just({"code": "invocation_failed", "message": "boom"})}),
    st.builds(lambda bid, fields, extra: {"type": "registertrigger", "id": bid, **fields, **extra},
              binding_ids, _binding_fields(),
              st.fixed_dictionaries({}, optional={"namespace": namespaces, "trigger_namespace": namespaces})),
    _msg("unregistertrigger", {"id": binding_ids}, {"trigger_type": trigger_types}),
    _msg("registertriggertype", {"id": provided_types, "description": st.just("fuzz")},
         {"trigger_request_format": json_values, "call_request_format": json_values, "namespace": namespaces}),
    _msg("unregistertriggertype", {"id": provided_types}, {"namespace": namespaces}),
    _msg("triggerregistrationresult", {"id": binding_ids, "trigger_type": trigger_types, "function_id": fn_targets},
         {"error": st.just({"code": "trigger_registration_failed", "message": "no"})}),
    _msg("reattach", {"previous_worker_id": _reattach_ids()},
         {"reattach_token": st.one_of(uuids, st.sampled_from([fz_token(k) for k in range(FUZZ_CONNS)]))}),
    _msg("registerservice", {"id": st.sampled_from(["fz", "svc"])},
         {"name": WEIRD_STR, "description": WEIRD_STR, "parent_service_id": st.just("fz")}),
    _msg("ping", {}),
)
"""A valid frame of every worker message type (protocol §3)."""

MESSAGE_TYPES = ("registerfunction", "unregisterfunction", "invokefunction", "invocationresult",
                 "registertrigger", "unregistertrigger", "registertriggertype", "unregistertriggertype",
                 "triggerregistrationresult", "reattach", "registerservice", "ping")
EXTRA_KEYS = ("extra", "message_type", "observe", "caller", "_caller_worker_id", "Type", "🙂", "")


@st.composite
def _mutate_object(draw: st.DrawFn, obj: dict, allow_nested: bool) -> dict:
    out = dict(obj)
    op = draw(st.sampled_from(["drop", "wrong", "wrong", "wrong", "extra", "dup", "nested", "type"]))
    keys = [k for k in out]
    if op == "drop" and keys:
        del out[draw(st.sampled_from(keys))]
    elif op == "wrong" and keys:
        out[draw(st.sampled_from(keys))] = draw(wrong_values)
    elif op == "extra":
        out[draw(st.sampled_from(EXTRA_KEYS))] = draw(payloads)
    elif op == "dup" and keys:
        key = draw(st.sampled_from([k for k in keys if not isinstance(k, DupKey)] or keys))
        name = key.name if isinstance(key, DupKey) else key
        if draw(st.booleans()):
            out = {DupKey(name): draw(wrong_values), **out}  # bad value first, good one last
        else:
            out[DupKey(name)] = draw(wrong_values)
    elif op == "nested" and allow_nested:
        inner = [k for k, v in out.items() if isinstance(v, dict)]
        lists = [k for k, v in out.items() if isinstance(v, list) and v and isinstance(v[0], dict)]
        if inner:
            key = draw(st.sampled_from(inner))
            out[key] = draw(_mutate_object(out[key], False))
        elif lists:
            key = draw(st.sampled_from(lists))
            out[key] = [draw(_mutate_object(out[key][0], False))] + out[key][1:]
    elif op == "type" and "type" in out:
        out["type"] = draw(st.one_of(wrong_values, st.sampled_from(MESSAGE_TYPES),
                                     st.sampled_from(["RegisterFunction", "invokefunction ", "pong",
                                                      "workerregistered", "observe", "error"])))
    return out


@st.composite
def mutated_frames(draw: st.DrawFn) -> dict:
    frame = draw(valid_frames)
    for _ in range(draw(st.integers(1, 3))):
        frame = draw(_mutate_object(frame, True))
    return frame


GARBAGE = (
    "", " ", "\n\t ", "null", "[]", "[1,2]", "\"s\"", "0", "true", "{}", '{"type":null}', '{"type":[]}',
    '{"type":"invokefunction"}', '{"type":"registerfunction"}', "{", "}", "{\"type\":", "NaN", "[NaN]",
    '{"type":"ping"', "\ufeff{}", "\x00", "[" * 100_000 + "]" * 100_000, "[" * 100_000,
    '{"a":' * 50_000 + "0" + "}" * 50_000, '{"type":"invokefunction","function_id":"engine::functions::list",'
    '"invocation_id":"deep","data":' + "[" * 300 + "]" * 300 + "}",
    b"", b"\x00\xff\xfe", b"OTLP", b"MTRC{}", b"LOGS\xff", b"\x80" * 16, b'{"type":"ping"}',
)

raw_frames = st.one_of(
    st.sampled_from(GARBAGE).map(Raw),
    st.binary(max_size=48).map(Raw),
    st.text(max_size=48).filter(lambda s: not has_surrogate(s)).map(Raw),
)
"""Frames that are not a JSON object, or not JSON, or not UTF-8."""


@st.composite
def frames(draw: st.DrawFn) -> Any:
    """One frame to send: mostly mutated, some valid, some raw-damaged, some garbage."""
    kind = draw(st.integers(0, 9))
    if kind <= 5:
        return defang(draw(mutated_frames()))
    if kind <= 7:
        return defang(draw(valid_frames))
    if kind == 8:
        base = defang(draw(st.one_of(valid_frames, mutated_frames())))
        return Mangled(base, draw(st.sampled_from(RAW_OPS)), draw(st.integers(0, 4096)))
    return draw(raw_frames)


batches = st.integers(1, 100).flatmap(
    lambda n: st.lists(st.tuples(st.integers(0, FUZZ_CONNS - 1), frames()), min_size=n, max_size=n))
"""One batch: ``(connection index, frame)`` in sending order (its length drawn first, so
that batches are not mostly tiny, as plain ``lists`` are, and can still shrink to one)."""
