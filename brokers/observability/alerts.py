"""Alert rules: validation, evaluation with cooldown, and the alerts API shapes
(workers-b §4.3 "Health / sampling / baggage / alerts", §4.6).

Owns: ``parse_rules`` for the ``alerts`` config key, the ``AlertManager`` state machine
(``evaluate`` / ``list`` / ``replace``), the payloads the webhook and function actions
send, and the guard refusing built-in ids as function-action targets. Performing the
actions (log line, HTTP POST with retries, function call) is the caller's job.

Invariants:
  * a rule dict is canonical: operator is a canonical name (``greaterthan``…), threshold a
    float, action ``{"type": "log"}`` | ``{"type": "webhook", "url"}`` |
    ``{"type": "function", "path"}``; rule names are unique;
  * a rule fires when its comparison holds and ``cooldown_seconds`` have passed since it
    last fired; a rule without data or disabled is skipped and its state left alone;
  * states exist only for current rules; ``replace`` keeps the state of rules that stay;
  * pure: no clock of its own — ``now`` is always passed in.
"""
from __future__ import annotations

import sys
from typing import Any, Callable

from brokers.kit import reserved
from brokers.kit.schema import ConfigError, Field, validate

EPSILON = sys.float_info.epsilon
OPERATORS = {  # canonical name -> (rendered name, comparison)
    "greaterthan": ("GreaterThan", lambda v, t: v > t),
    "greaterthanorequal": ("GreaterThanOrEqual", lambda v, t: v >= t),
    "lessthan": ("LessThan", lambda v, t: v < t),
    "lessthanorequal": ("LessThanOrEqual", lambda v, t: v <= t),
    "equal": ("Equal", lambda v, t: abs(v - t) < EPSILON),
    "notequal": ("NotEqual", lambda v, t: abs(v - t) >= EPSILON),
}
_BUILTIN_PREFIXES = ("state::", "stream::", "queue::")
"""Beyond ``reserved.function``: whole built-in namespaces, even ids not implemented yet."""
SYMBOLS = {">": "greaterthan", ">=": "greaterthanorequal", "<": "lessthan",
           "<=": "lessthanorequal", "==": "equal", "!=": "notequal"}


def _operator(value: Any) -> str | None:
    if value in SYMBOLS or value in OPERATORS:
        return None
    return f"unknown operator '{value}' (allowed: {', '.join([*SYMBOLS, *OPERATORS])})"


def _at_least_one(value: Any) -> str | None:
    return None if value >= 1 else "must be >= 1"


def _non_empty(value: Any) -> str | None:
    return None if value.strip() else "must not be empty"


_ACTIONS = {
    "log": {},
    "webhook": {"url": Field(str, check=_non_empty)},
    "function": {"path": Field(str, check=_non_empty)},
}


def _action(raw: Any, path: str) -> dict:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected mapping, got {type(raw).__name__}")
    kind = raw.get("type")
    if kind not in _ACTIONS:
        got = "missing" if kind is None else f"'{kind}'"
        raise ConfigError(f"{path}.type: {got} action type (allowed: {', '.join(_ACTIONS)})")
    fields = {"type": Field(str), **_ACTIONS[kind]}
    return validate(raw, fields, path)


RULE_FIELDS = {
    "name": Field(str, check=_non_empty),
    "metric": Field(str, check=_non_empty),
    "threshold": Field(float),
    "operator": Field(str, ">", check=_operator),
    "window_seconds": Field(int, 60, check=_at_least_one),
    "action": Field(dict, lambda: {"type": "log"}, parse=_action),
    "enabled": Field(bool, True),
    "cooldown_seconds": Field(int, 60, check=_at_least_one),
}


def parse_rules(raw: Any, path: str) -> list[dict]:
    """The canonical rule dicts of an ``alerts`` list; ConfigError naming the bad key path."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(f"{path}: expected list, got {type(raw).__name__}")
    rules: list[dict] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        where = f"{path}[{i}]"
        rule = validate(item, RULE_FIELDS, where)
        if rule["name"] in seen:
            raise ConfigError(f"{where}.name: duplicate alert name '{rule['name']}'")
        seen.add(rule["name"])
        rule["threshold"] = float(rule["threshold"])
        rule["operator"] = SYMBOLS.get(rule["operator"], rule["operator"])
        rules.append(rule)
    return rules


def compare(operator: str, value: float, threshold: float) -> bool:
    """Whether ``value <operator> threshold`` holds (canonical or symbol operator)."""
    return OPERATORS[SYMBOLS.get(operator, operator)][1](value, threshold)


def rendered(operator: str) -> str:
    """The operator as the reference prints it in states and events (``GreaterThan``…)."""
    return OPERATORS[SYMBOLS.get(operator, operator)][0]


class AlertManager:
    """Current rules and the evaluated state of each."""

    def __init__(self, rules: list[dict]) -> None:
        self.rules: list[dict] = list(rules)
        self._states: dict[str, dict] = {}

    def replace(self, rules: list[dict]) -> None:
        """Swap the rule set; states of rules whose name stays are kept (their threshold and
        operator refreshed), the others dropped."""
        self.rules = list(rules)
        by_name = {rule["name"]: rule for rule in self.rules}
        self._states = {name: state for name, state in self._states.items() if name in by_name}
        for name, state in self._states.items():
            state["threshold"] = by_name[name]["threshold"]
            state["operator"] = rendered(by_name[name]["operator"])

    def evaluate(self, now_ms: int, value_of: Callable[[dict], float | None]) -> list[dict]:
        """Evaluate every enabled rule; returns the AlertEvents of the rules that fire now."""
        events: list[dict] = []
        for rule in self.rules:
            if not rule.get("enabled", True):
                continue
            value = value_of(rule)
            if value is None:
                continue
            value = float(value)
            firing = compare(rule["operator"], value, rule["threshold"])
            state = self._states.get(rule["name"])
            if state is None:
                state = self._states[rule["name"]] = {
                    "name": rule["name"], "firing": False, "last_evaluated": now_ms,
                    "last_triggered": None, "current_value": None,
                    "threshold": rule["threshold"], "operator": rendered(rule["operator"])}
            last = state["last_triggered"]
            trigger = firing and (last is None
                                  or now_ms - last >= rule["cooldown_seconds"] * 1000)
            state.update(last_evaluated=now_ms, current_value=value, firing=firing)
            if trigger:
                state["last_triggered"] = now_ms
                events.append({"name": rule["name"], "metric": rule["metric"], "value": value,
                               "threshold": rule["threshold"],
                               "operator": rendered(rule["operator"]), "firing": True,
                               "timestamp": now_ms, "action": dict(rule["action"])})
        return events

    def list(self, now_ms: int) -> dict:
        """``engine::alerts::list`` output (states in rule order; only evaluated rules)."""
        states = [dict(self._states[r["name"]]) for r in self.rules if r["name"] in self._states]
        return {"alerts": states, "rules": [_rule_view(r) for r in self.rules],
                "firing_count": sum(1 for s in states if s["firing"]), "timestamp": now_ms}


def _rule_view(rule: dict) -> dict:
    out = dict(rule)
    out["action"] = dict(rule["action"])
    return out


def public_event(event: dict) -> dict:
    """An AlertEvent as ``engine::alerts::evaluate`` lists it (without the action)."""
    return {key: value for key, value in event.items() if key != "action"}


def webhook_payload(event: dict) -> dict:
    """The JSON body a webhook action POSTs."""
    return {"alert": event["name"], "metric": event["metric"], "value": event["value"],
            "threshold": event["threshold"], "operator": event["operator"],
            "timestamp": event["timestamp"]}


def function_payload(event: dict) -> dict:
    """The payload a function action sends: the webhook body plus ``firing``."""
    return {**webhook_payload(event), "firing": event.get("firing", True)}


def function_action_refused(path: str) -> str | None:
    """Why ``path`` may not be an alert function target (a built-in id), or None."""
    if not isinstance(path, str) or not path:
        return "alert function target must be a non-empty function id"
    if reserved.function(path) or path.startswith(_BUILTIN_PREFIXES):
        return (f"alert function target '{path}' rejected: built-in/internal function ids "
                f"cannot be invoked as alert actions")
    return None


def no_manager(now_ms: int) -> dict:
    """``engine::alerts::list`` when there is no alert manager."""
    return {"alerts": [], "firing_count": 0, "message": "Alert manager not initialized",
            "timestamp": now_ms}
