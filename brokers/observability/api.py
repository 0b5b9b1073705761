"""The functions of the observability worker (workers-b.md §4.3), declared on its process.

Each handler is a thin adapter: the input goes to a store's query (which validates it and
raises ValueError for a wrong type: answered ``deserialization_error`` naming the function),
the output shape is the store's. The traces functions need the in-memory span store
(``exporter: memory`` or ``both``), else fail ``memory_exporter_not_enabled``.

``engine::log::<level>``: when the input carries no ``trace_id``/``span_id``, the call's own
trace context fills them in (the caller's ``traceparent``: a worker logging from inside a
handler gets its entry attached to that handler's span without saying so).
"""
from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any, Callable

from brokers.kit import errors
from brokers.kit.broker import Call
from brokers.kit.config import ENGINE_VERSION
from brokers.kit.errors import EngineError
from brokers.kit.telemetry import parse_traceparent
from brokers.observability.logs import SEVERITY, log_from_call

if TYPE_CHECKING:
    from brokers.observability.service import Observability

MEMORY_EXPORTER_NOT_ENABLED = "memory_exporter_not_enabled"
BAGGAGE_NOTE = "Baggage set in new context. For propagation, use SDK-level baggage headers."


def _now_ms() -> int:
    return int(time.time() * 1000)


def _query(call: Call) -> dict:
    data = call.data
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"input must be an object, got {type(data).__name__}")
    return {k: v for k, v in data.items() if not k.startswith("_caller")}


def declare(obs: Observability) -> None:
    """Declare every function of §4.3 on ``obs``."""

    def fn(function_id: str, body: Callable[[Call], Any], description: str) -> None:
        def handler(call: Call) -> Any:
            try:
                return body(call)
            except (ValueError, TypeError) as exc:
                raise errors.deserialization_error(function_id, str(exc)) from None
            except OverflowError:
                raise EngineError("time_value_overflow", "time value overflows nanoseconds") from None
        obs.function(function_id, handler, description=description)

    def traces(body: Callable[[dict], Any]) -> Callable[[Call], Any]:
        def run(call: Call) -> Any:
            if obs.cfg["exporter"] == "otlp":
                raise EngineError(MEMORY_EXPORTER_NOT_ENABLED, "In-memory span storage is not available. "
                                  "Set exporter: memory or both in config.")
            return body(_query(call))
        return run

    for level in SEVERITY:
        fn(f"engine::log::{level}", _logger(obs, level), f"Store a {level} log entry")
    fn("engine::logs::list", lambda c: obs.logs.list(_query(c), _now_ms()), "List stored logs")
    fn("engine::logs::clear", lambda c: obs.logs.clear(), "Clear stored logs")
    fn("engine::traces::list", traces(lambda q: obs.spans.list(q, time.time_ns())), "List traces (root spans)")
    fn("engine::traces::tree", traces(lambda q: obs.spans.tree(q)), "A trace as a tree of spans")
    fn("engine::traces::clear", traces(lambda q: obs.spans.clear()), "Clear stored spans")
    fn("engine::traces::group_by", traces(lambda q: obs.spans.group_by(q, _now_ms())),
       "Group traces by an attribute")
    fn("engine::metrics::list", lambda c: obs.metrics.list(_query(c), obs.engine_metrics(), _now_ms()),
       "Engine and SDK metrics")
    fn("engine::rollups::list", lambda c: obs.metrics.rollups(_query(c), _now_ms()), "Metric rollups")
    fn("engine::health::check", lambda c: obs.health(), "Health of the observability stores")
    fn("engine::sampling::rules", lambda c: _sampling(obs.cfg), "The sampling rules in force")
    baggage: dict[str, str] = {}
    fn("engine::baggage::get", lambda c: {"value": baggage.get(str(_query(c).get("key")))}, "Read a baggage entry")
    fn("engine::baggage::get_all", lambda c: {"baggage": dict(baggage)}, "Every baggage entry")
    fn("engine::baggage::set", lambda c: _set_baggage(baggage, _query(c)), "Set a baggage entry")
    fn("engine::alerts::list", lambda c: obs.alerting.list(_now_ms()), "Alert rules and their state")
    fn("engine::alerts::evaluate", lambda c: obs.alerting.evaluate_now(_now_ms()), "Evaluate the alert rules now")


def _logger(obs: Observability, level: str) -> Callable[[Call], None]:
    def log_call(call: Call) -> None:
        if not obs.cfg["logs_enabled"]:
            return None
        data = call.data
        entry = log_from_call(level, data, resource=obs.resource, engine_version=ENGINE_VERSION,
                              now_ns=time.time_ns())
        if entry["trace_id"] is None and call.traceparent is not None:
            parent = parse_traceparent(call.traceparent)
            if parent is not None:
                entry["trace_id"], entry["span_id"] = parent[0], entry["span_id"] or parent[1]
        ratio = obs.cfg["logs_sampling_ratio"]
        if ratio < 1.0 and random.random() >= ratio:
            return None
        obs.store_log(entry, console=obs.cfg["logs_console_output"])
        return None
    return log_call


def _sampling(cfg: dict) -> dict:
    sampling = cfg["sampling"] or {}
    default = sampling.get("default")
    return {"traces": {"default_ratio": cfg["sampling_ratio"] if default is None else default,
                       "rules": [{"operation": r.get("operation"), "service": r.get("service"), "rate": r["rate"]}
                                 for r in sampling.get("rules") or ()],
                       "parent_based": sampling.get("parent_based", True)},
            "logs": {"sampling_ratio": cfg["logs_sampling_ratio"]}, "timestamp": _now_ms()}


def _set_baggage(baggage: dict[str, str], query: dict) -> dict:
    key, value = query.get("key"), query.get("value")
    if not isinstance(key, str) or not isinstance(value, str):
        raise ValueError("key and value must be strings")
    baggage[key] = value
    return {"success": True, "note": BAGGAGE_NOTE}
