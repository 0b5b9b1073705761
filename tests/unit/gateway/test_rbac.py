"""RBAC rules and AuthResult parsing (brokers/gateway/rbac.py), including a fuzz over shapes."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from brokers.gateway import rbac
from brokers.kit.schema import ConfigError

RULES = rbac.Rules({"expose_functions": ['match("pub::*")', {"metadata": {"public": True}},
                                         {"match": "ns::*", "namespace": "orders"}]})


def test_glob():
    assert rbac.glob("a::*", "a::b::c") and not rbac.glob("a::*", "b::a::x")
    assert rbac.glob("*::x", "a::x") and not rbac.glob("*::x", "a::xy")
    assert rbac.glob("a.b", "a.b") and not rbac.glob("a.b", "aXb")  # nothing but * is special
    assert rbac.match_pattern('match("x::*")') == "x::*" and rbac.match_pattern("x::*") is None


def test_verdict_order():
    s = rbac.parse_auth({"allowed_functions": ["priv::one"], "forbidden_functions": ["pub::no"],
                         "namespaces": {"orders": ["svc::*"]}})
    assert rbac.decide(s, RULES, "priv::one", "default") is True
    assert rbac.decide(s, RULES, "priv::one", "orders") is None  # allowed_functions: default only
    assert rbac.decide(s, RULES, "pub::no", "default") is False  # forbidden wins over expose
    assert rbac.decide(s, RULES, "pub::yes", "default") is True
    assert rbac.decide(s, RULES, "svc::a", "orders") is True
    assert rbac.decide(s, RULES, "ns::a", "orders") is True and rbac.decide(s, RULES, "ns::a", "default") is None
    assert rbac.decide(s, RULES, "engine::log::info", "default") is True
    assert rbac.decide_meta(s, RULES, "x::y", "default", {"public": True}) is True
    assert rbac.decide_meta(s, RULES, "x::y", "default", {"public": 1}) is False
    assert rbac.decide_meta(s, RULES, "x::y", "default", None) is False
    assert rbac.decide(s, None, "any::thing", "default") is True  # middleware only: no rules
    assert "rbac.expose_functions" in rbac.denied_message(s, "x")
    assert "rbac.forbidden_functions" in rbac.denied_message(s, "pub::no")


def test_namespace_declaration():
    s = rbac.parse_auth({"namespaces": {"a": []}})
    assert rbac.namespace_denied(s, {"namespace": "a"}) is None
    assert "not allowed" in rbac.namespace_denied(s, {"namespace": "b"})
    assert rbac.namespace_denied(rbac.parse_auth({}), {"namespace": "b"}) is None


def test_defaults_and_hook_rewrite():
    s = rbac.parse_auth({})
    assert s.may_register_functions and not s.may_register_types and s.context == {} and s.prefix is None
    assert rbac.hook_rewrite({"function_id": "x", "description": 3}, {"function_id": str, "description": str}) == {"function_id": "x"}
    assert rbac.hook_rewrite(None, {}) is None and rbac.hook_rewrite([1], {}) is None


@pytest.mark.parametrize("bad", [None, [], "x", 1, {"allowed_functions": "a"}, {"forbidden_functions": [1]},
                                 {"namespaces": []}, {"namespaces": {"a": "b"}}, {"allow_function_registration": 1},
                                 {"function_registration_prefix": 3}, {"allowed_trigger_types": [None]}])
def test_malformed_auth_results_are_auth_errors(bad):
    with pytest.raises(ValueError):
        rbac.parse_auth(bad)


def test_config_filters_are_checked():
    with pytest.raises(ConfigError):
        rbac.parse_config({"expose_functions": ["pub::*"]}, "w.rbac")
    with pytest.raises(ConfigError):
        rbac.parse_config({"expose_functions": [{"match": "a", "metadata": {"k": 1}}]}, "w.rbac")
    with pytest.raises(ConfigError):
        rbac.parse_config({"nope": 1}, "w.rbac")
    assert rbac.parse_config({"auth_function_id": "a::b", "hook_timeout_ms": 5}, "w.rbac")["hook_timeout_ms"] == 5


# ---- fuzz: any shape, never a crash, never more than the well-formed part grants ----------

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8))
json_any = st.recursive(json_leaf, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=6), c, max_size=4)),
                        max_leaves=12)
ids = st.sampled_from(["pub::a", "priv::b", "svc::c", "engine::log::info", "engine::functions::list", "x"])
names = st.lists(st.one_of(ids, st.text(max_size=6), json_leaf), max_size=6)
fields = {
    "namespaces": st.one_of(json_any, st.dictionaries(st.sampled_from(["default", "orders"]), names, max_size=2)),
    "allowed_functions": st.one_of(json_any, names), "forbidden_functions": st.one_of(json_any, names),
    "allowed_trigger_types": st.one_of(json_any, names),
    "allow_trigger_type_registration": json_leaf, "allow_function_registration": json_leaf,
    "function_registration_prefix": json_leaf, "context": json_any, "junk": json_any,
}
auth_results = st.one_of(json_any, st.fixed_dictionaries({}, optional=fields))


def _well_formed(v):
    """The model: what a result grants when every known field has its type, else None."""
    if not isinstance(v, dict):
        return None
    strs = lambda x: isinstance(x, list) and all(isinstance(i, str) for i in x)  # noqa: E731
    for k in ("allowed_functions", "forbidden_functions", "allowed_trigger_types"):
        if v.get(k) is not None and not strs(v[k]):
            return None
    ns = v.get("namespaces")
    if ns is not None and not (isinstance(ns, dict) and all(strs(g) for g in ns.values())):
        return None
    for k in ("allow_trigger_type_registration", "allow_function_registration"):
        if v.get(k) is not None and not isinstance(v[k], bool):
            return None
    if v.get("function_registration_prefix") is not None and not isinstance(v["function_registration_prefix"], str):
        return None
    return v


@settings(max_examples=400, deadline=None)
@given(auth_results, ids, st.sampled_from(["default", "orders"]))
def test_fuzz_auth_results(value, fid, ns):
    model = _well_formed(value)
    try:
        s = rbac.parse_auth(value)
    except ValueError:
        assert model is None
        return
    assert model is not None
    verdict = rbac.decide_meta(s, RULES, fid, ns, None)
    forbidden = model.get("forbidden_functions") or []
    if fid in forbidden:
        assert verdict is False
    granted = (fid in (model.get("allowed_functions") or []) and ns == "default") or fid in rbac.INFRASTRUCTURE \
        or any(f.matches(fid, ns, None) for f in RULES.filters) \
        or any(rbac._granted(g, fid) for g in ((model.get("namespaces") or {}).get(ns) or []))
    if verdict:
        assert granted and fid not in forbidden
    if s.trigger_types is not None:
        assert s.trigger_types <= set(model["allowed_trigger_types"])
    assert s.may_register_types is (model.get("allow_trigger_type_registration") is True)


def test_huge_lists_are_fine():
    s = rbac.parse_auth({"forbidden_functions": [f"f{i}" for i in range(200_000)], "allowed_functions": ["f1"]})
    assert rbac.decide(s, RULES, "f1", "default") is False
