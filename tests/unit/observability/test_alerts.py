"""Alert rules: validation errors naming the key path, operators, cooldown, disabled rules,
missing data, state keeping across replace, the exact alerts::list shape and payloads
(workers-b §4.3, §4.6)."""
from __future__ import annotations

import pytest

from brokers.kit.schema import ConfigError
from brokers.observability.alerts import (
    AlertManager, function_action_refused, function_payload, no_manager, parse_rules,
    public_event, webhook_payload)
from brokers.observability.metrics import MetricStore, builtin_value

P = "workers[3].config.alerts"


def rule(**over) -> dict:
    return {"name": "errors", "metric": "iii.invocations.error", "threshold": 5, **over}


def one(**over) -> dict:
    return parse_rules([rule(**over)], P)[0]


def test_defaults_and_canonical_form():
    assert one() == {"name": "errors", "metric": "iii.invocations.error", "threshold": 5.0,
                     "operator": "greaterthan", "window_seconds": 60,
                     "action": {"type": "log"}, "enabled": True, "cooldown_seconds": 60}
    assert parse_rules(None, P) == [] and parse_rules([], P) == []


@pytest.mark.parametrize("given,canonical", [
    (">", "greaterthan"), (">=", "greaterthanorequal"), ("<", "lessthan"),
    ("<=", "lessthanorequal"), ("==", "equal"), ("!=", "notequal"),
    ("greaterthan", "greaterthan"), ("notequal", "notequal"), ("lessthanorequal",
                                                               "lessthanorequal"),
])
def test_operators_accepted(given, canonical):
    assert one(operator=given)["operator"] == canonical


def test_actions():
    assert one(action={"type": "webhook", "url": "https://hooks.example/x"})["action"] == {
        "type": "webhook", "url": "https://hooks.example/x"}
    assert one(action={"type": "function", "path": "ops::page"})["action"] == {
        "type": "function", "path": "ops::page"}
    assert one(action={"type": "log"}, enabled=False, cooldown_seconds=1,
               window_seconds=1)["enabled"] is False


@pytest.mark.parametrize("raw,message", [
    ("nope", f"{P}: expected list, got str"),
    ([5], f"{P}[0]: expected mapping, got int"),
    ([rule(severity="high")], f"{P}[0].severity: unknown key"),
    ([{"metric": "m", "threshold": 1}], f"{P}[0].name: required"),
    ([rule(name="")], f"{P}[0].name: must not be empty"),
    ([{"name": "n", "threshold": 1}], f"{P}[0].metric: required"),
    ([{"name": "n", "metric": "m"}], f"{P}[0].threshold: required"),
    ([rule(threshold="5")], f"{P}[0].threshold: expected number, got str"),
    ([rule(threshold=True)], f"{P}[0].threshold: expected number, got bool"),
    ([rule(operator="~")], f"{P}[0].operator: unknown operator '~'"),
    ([rule(operator="GreaterThan")], f"{P}[0].operator: unknown operator"),
    ([rule(window_seconds=0)], f"{P}[0].window_seconds: must be >= 1"),
    ([rule(window_seconds=1.5)], f"{P}[0].window_seconds: expected int, got float"),
    ([rule(cooldown_seconds=0)], f"{P}[0].cooldown_seconds: must be >= 1"),
    ([rule(enabled="yes")], f"{P}[0].enabled: expected bool, got str"),
    ([rule(action="log")], f"{P}[0].action: expected mapping, got str"),
    ([rule(action={})], f"{P}[0].action.type: missing action type"),
    ([rule(action={"type": "email"})], f"{P}[0].action.type: 'email' action type"),
    ([rule(action={"type": "webhook"})], f"{P}[0].action.url: required"),
    ([rule(action={"type": "function", "path": 3})],
     f"{P}[0].action.path: expected str, got int"),
    ([rule(action={"type": "log", "url": "x"})], f"{P}[0].action.url: unknown key"),
    ([rule(), rule(metric="x")], f"{P}[1].name: duplicate alert name 'errors'"),
])
def test_rule_validation_errors(raw, message):
    with pytest.raises(ConfigError) as err:
        parse_rules(raw, P)
    assert str(err.value).startswith(message)


def manager(*rules: dict) -> AlertManager:
    return AlertManager(parse_rules(list(rules), P))


@pytest.mark.parametrize("op,value,fires", [
    (">", 6, True), (">", 5, False), (">=", 5, True), (">=", 4.9, False),
    ("<", 4, True), ("<", 5, False), ("<=", 5, True), ("<=", 5.1, False),
    ("==", 5.0, True), ("==", 5 + 1e-9, False), ("!=", 5 + 1e-9, True), ("!=", 5, False),
])
def test_operator_comparisons(op, value, fires):
    events = manager(rule(operator=op)).evaluate(1000, lambda r: value)
    assert bool(events) is fires


def test_event_shape_and_payloads():
    m = manager(rule(action={"type": "function", "path": "ops::page"}))
    [event] = m.evaluate(123_000, lambda r: 9)
    assert event == {"name": "errors", "metric": "iii.invocations.error", "value": 9.0,
                     "threshold": 5.0, "operator": "GreaterThan", "firing": True,
                     "timestamp": 123_000, "action": {"type": "function", "path": "ops::page"}}
    assert public_event(event) == {k: v for k, v in event.items() if k != "action"}
    assert webhook_payload(event) == {"alert": "errors", "metric": "iii.invocations.error",
                                      "value": 9.0, "threshold": 5.0,
                                      "operator": "GreaterThan", "timestamp": 123_000}
    assert function_payload(event) == {**webhook_payload(event), "firing": True}


def test_cooldown():
    m = manager(rule(cooldown_seconds=30))
    high = lambda r: 10  # noqa: E731
    assert len(m.evaluate(1_000, high)) == 1
    assert m.evaluate(11_000, high) == []           # firing, but inside the cooldown
    assert m.evaluate(30_999, high) == []
    assert len(m.evaluate(31_000, high)) == 1       # exactly 30 s later
    assert m.evaluate(40_000, lambda r: 0) == []    # stops firing; cooldown still from 31 s
    assert m.evaluate(50_000, high) == []
    assert len(m.evaluate(61_000, high)) == 1


def test_disabled_and_no_data_are_skipped():
    m = manager(rule(name="off", enabled=False), rule(name="nodata"), rule(name="on"))
    seen = []

    def value_of(r):
        seen.append(r["name"])
        return None if r["name"] == "nodata" else 10

    assert [e["name"] for e in m.evaluate(5, value_of)] == ["on"]
    assert seen == ["nodata", "on"]
    out = m.list(6)
    assert [s["name"] for s in out["alerts"]] == ["on"]  # never-evaluated rules have no state


def test_list_exact_shape():
    m = manager(rule(name="a", operator="<", threshold=1), rule(name="b", threshold=100))
    assert m.list(1) == {"alerts": [], "rules": m.rules, "firing_count": 0, "timestamp": 1}
    m.evaluate(2_000, lambda r: 0.5)
    out = m.list(3_000)
    assert out == {
        "alerts": [
            {"name": "a", "firing": True, "last_evaluated": 2_000, "last_triggered": 2_000,
             "current_value": 0.5, "threshold": 1.0, "operator": "LessThan"},
            {"name": "b", "firing": False, "last_evaluated": 2_000, "last_triggered": None,
             "current_value": 0.5, "threshold": 100.0, "operator": "GreaterThan"}],
        "rules": [
            {"name": "a", "metric": "iii.invocations.error", "threshold": 1.0,
             "operator": "lessthan", "window_seconds": 60, "action": {"type": "log"},
             "enabled": True, "cooldown_seconds": 60},
            {"name": "b", "metric": "iii.invocations.error", "threshold": 100.0,
             "operator": "greaterthan", "window_seconds": 60, "action": {"type": "log"},
             "enabled": True, "cooldown_seconds": 60}],
        "firing_count": 1, "timestamp": 3_000}
    m.evaluate(4_000, lambda r: 0.5)  # a still firing (in cooldown), last_triggered unchanged
    state = m.list(5_000)["alerts"][0]
    assert (state["firing"], state["last_evaluated"], state["last_triggered"]) == (
        True, 4_000, 2_000)


def test_no_manager_shape():
    assert no_manager(9) == {"alerts": [], "firing_count": 0,
                             "message": "Alert manager not initialized", "timestamp": 9}


def test_replace_keeps_state_of_staying_rules():
    m = manager(rule(name="keep"), rule(name="drop"))
    assert len(m.evaluate(1_000, lambda r: 10)) == 2
    m.replace(parse_rules([rule(name="keep", threshold=8, operator=">="), rule(name="new")], P))
    out = m.list(2_000)
    assert [s["name"] for s in out["alerts"]] == ["keep"]
    assert out["alerts"][0]["threshold"] == 8.0
    assert out["alerts"][0]["operator"] == "GreaterThanOrEqual"
    assert [e["name"] for e in m.evaluate(2_000, lambda r: 10)] == ["new"]  # keep: cooldown
    m.replace(parse_rules([rule(name="drop")], P))
    assert [e["name"] for e in m.evaluate(3_000, lambda r: 10)] == ["drop"]  # state was gone


def test_with_real_value_sources():
    store = MetricStore(100, 3600)
    s = 1_000_000_000
    store.add([{"name": "app.q", "metric_type": "gauge", "timestamp_unix_nano": 95 * s,
                "data_points": [{"value": 7, "attributes": [], "timestamp_unix_nano": 95 * s}],
                "description": "", "unit": "", "service_name": "svc"}], 0)
    engine = {"invocations": {"total": 3, "success": 3, "error": 0, "deferred": 0},
              "workers": {"spawns": 1, "deaths": 0, "active": 1}}

    def value_of(r):
        v = builtin_value(r["metric"], engine)
        return v if v is not None else store.value_in_window(r["metric"], r["window_seconds"],
                                                             100 * s)
    m = manager(rule(name="total", metric="iii.invocations.total", threshold=2),
                rule(name="queue", metric="app.q", threshold=6, window_seconds=10),
                rule(name="stale", metric="app.q", threshold=6, window_seconds=1))
    assert [e["name"] for e in m.evaluate(100_000, value_of)] == ["total", "queue"]


@pytest.mark.parametrize("path", [
    "engine::log::info", "engine::queue::enqueue", "configuration::set", "iii::queue::redrive",
    "iii::durable::publish", "state::set", "state::anything", "stream::send", "publish",
    "iii-http::x", "queue::x", ""])
def test_function_action_refused(path):
    assert function_action_refused(path)


@pytest.mark.parametrize("path", ["ops::page", "alerts::notify", "my-state::set"])
def test_function_action_allowed(path):
    assert function_action_refused(path) is None
