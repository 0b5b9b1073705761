"""Property tests: ``apply_update_ops`` against a plain-Python model of §2.2.

The model is written from the spec text in a different style: every op is a function from
the current value to either a new value or an error code, run on a deep copy, so a failing op
cannot leave half a mutation behind. Agreement on random values and op lists (values,
error codes and indexes) is the property; inputs must come back unmutated.
"""
from __future__ import annotations

import copy
import math

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from brokers.kit.ops import MISSING, apply_update_ops, parse_ops

I64 = (-(2**63), 2**63 - 1)
U64_MAX = 2**64 - 1
PROTO = {"__proto__", "constructor", "prototype"}

keys = st.sampled_from(["a", "b", "c", "n", "s", "", "__proto__", "a.b"])
scalars = st.one_of(
    st.none(), st.booleans(), st.sampled_from(["", "x", "yz"]),
    st.integers(min_value=-5, max_value=5), st.sampled_from([I64[1], I64[0], 2**63 + 3, U64_MAX]),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3)), max_leaves=8)
bys = st.one_of(st.integers(min_value=-3, max_value=3), st.sampled_from([I64[0], I64[1]]))
seg_paths = st.one_of(st.none(), keys, st.lists(keys, max_size=3))
ops = st.one_of(
    st.builds(lambda p, v: {"type": "set", "path": p, "value": v}, keys, values),
    st.builds(lambda p, v: {"type": "merge", "path": p, "value": v}, seg_paths,
              st.one_of(st.dictionaries(keys, values, max_size=3), scalars)),
    st.builds(lambda t, p, b: {"type": t, "path": p, "by": b},
              st.sampled_from(["increment", "decrement"]), keys, bys),
    st.builds(lambda p, v: {"type": "append", "path": p, "value": v}, seg_paths, values),
    st.builds(lambda p: {"type": "remove", "path": p}, keys),
)


# ------------------------------------------------------------------ the model


def segs(path):
    if path is None or path == "":
        return []
    return [path] if isinstance(path, str) else list(path)


def path_error(segments):
    if len(segments) > 32:
        return "too_deep"
    for s in segments:
        if s == "":
            return "empty_segment"
        if len(s.encode()) > 256:
            return "segment_too_long"
        if s in PROTO:
            return "proto_polluted"
    return None


def depth(v):
    if isinstance(v, dict):
        return 1 + max(map(depth, v.values()), default=0)
    if isinstance(v, list):
        return 1 + max(map(depth, v), default=0)
    return 0


def is_obj(v):
    return isinstance(v, dict)


def add(v, d):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if isinstance(v, int) and I64[0] <= v <= U64_MAX:
        r = v + d
        return r if I64[0] <= r <= U64_MAX else None
    r = float(v) + float(d)
    return r if math.isfinite(r) else None


def appended(target, v):
    """New target or an error code."""
    if isinstance(target, list):
        return target + [v]
    if isinstance(target, str):
        return target + v if isinstance(v, str) else "!type_mismatch"
    if target is None:
        return v if isinstance(v, str) else [v]
    return "!type_mismatch"


def ensure_path(root, segments):
    """Objects all the way down ``segments`` (non-objects replaced); returns the last one."""
    node = root
    for s in segments:
        if not is_obj(node.get(s)):
            node[s] = {}
        node = node[s]
    return node


def step(cur, fresh, op):
    """One op on a private copy: ('ok', new, clears_flag) | ('err', code) | ('noop',)."""
    t, cur = op["type"], copy.deepcopy(cur)
    s = segs(op.get("path"))
    bad = path_error(s)
    if bad:
        return ("err", f"{t}.path.{bad}")
    v = copy.deepcopy(op.get("value"))
    if t == "set":
        if not s:
            return ("ok", v, True)
        if not is_obj(cur):
            return ("err", "set.target_not_object")
        cur[s[0]] = v
        return ("ok", cur, True)
    if t == "remove":
        if not s:
            return ("ok", None, True)
        if not is_obj(cur):
            return ("err", "remove.target_not_object")
        cur.pop(s[0], None)
        return ("ok", cur, True)
    if t in ("increment", "decrement"):
        d = op["by"] if t == "increment" else -op["by"]
        if not s:
            if fresh:
                return ("ok", d, True)
            r = add(cur, d)
            return ("err", f"{t}.not_number") if r is None else ("ok", r, True)
        if not is_obj(cur):
            return ("err", f"{t}.target_not_object")
        if s[0] not in cur:
            cur[s[0]] = d
            return ("ok", cur, True)
        r = add(cur[s[0]], d)
        if r is None:
            return ("err", f"{t}.not_number")
        cur[s[0]] = r
        return ("ok", cur, True)
    if t == "merge":
        if not is_obj(v):
            return ("err", "merge.value.not_an_object")
        if len(v) > 1024:
            return ("err", "merge.value.too_many_keys")
        if PROTO & set(v):
            return ("err", "merge.value.proto_polluted")
        if depth(v) > 16:
            return ("err", "merge.value.too_deep")
        if not s:
            if not is_obj(cur):
                return ("noop",)
            cur.update(v)
            return ("ok", cur, True)
        if not is_obj(cur):
            cur = {}
        ensure_path(cur, s).update(v)
        return ("ok", cur, True)
    # append
    if not s:
        r = appended(None if fresh else cur, v)
        return ("err", "append." + r[1:]) if isinstance(r, str) and r.startswith("!") else ("ok", r, True)
    if not is_obj(cur):
        return ("err", "append.target_not_object")
    parent = cur if len(s) == 1 else ensure_path(cur, s[:-1])
    leaf = s[-1]
    if leaf not in parent:
        parent[leaf] = (v if isinstance(v, str) else [v]) if len(s) == 1 else [v]
        return ("ok", cur, True)
    r = appended(parent[leaf], v)
    if isinstance(r, str) and r.startswith("!"):
        # Spec quirk: the leaf stays, the op is an error, yet intermediates created by the
        # walk stay and the "missing" flag is cleared.
        return ("err-keep", "append." + r[1:], cur)
    parent[leaf] = r
    return ("ok", cur, True)


def model(old, raw_ops):
    fresh = old is MISSING
    cur = {} if fresh else copy.deepcopy(old)
    errors = []
    for i, op in enumerate(raw_ops):
        out = step(cur, fresh, op)
        if out[0] == "ok":
            cur, fresh = out[1], False
        elif out[0] == "err":
            errors.append((i, out[1]))
        elif out[0] == "err-keep":
            errors.append((i, out[1]))
            cur, fresh = out[2], False
    return cur, errors


# ------------------------------------------------------------------ properties


@settings(max_examples=400, deadline=None)
@given(old=st.one_of(st.just(MISSING), values), raw_ops=st.lists(ops, max_size=6))
def test_matches_model(old, raw_ops):
    old_copy = copy.deepcopy(old)
    ops_copy = copy.deepcopy(raw_ops)
    value, errors = apply_update_ops(old, parse_ops(raw_ops))
    expected_value, expected_errors = model(old, raw_ops)
    assert [(e["op_index"], e["code"]) for e in errors] == expected_errors
    assert orjson.dumps(value) == orjson.dumps(expected_value)
    assert raw_ops == ops_copy
    if old is not MISSING:
        assert orjson.dumps(old) == orjson.dumps(old_copy)


@settings(max_examples=200, deadline=None)
@given(old=st.one_of(st.just(MISSING), values), raw_ops=st.lists(ops, max_size=6))
def test_result_is_storable_json(old, raw_ops):
    value, errors = apply_update_ops(old, parse_ops(raw_ops))
    assert value is not MISSING
    assert orjson.loads(orjson.dumps(value)) == value
    assert all(set(e) == {"op_index", "code", "message", "doc_url"} for e in errors)
