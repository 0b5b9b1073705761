"""The ``iii-observability`` config block (workers-b.md §4.1), in iii's shape, plus ours.

The process runs whether or not the config lists it (the reference injects it), with the
auto-injected defaults of §4.1 column (A), except ``memory_max_spans``: 10 000 here (the
reference's shipped config.yaml), not 1 000 000, which would hold hundreds of MB of spans.
An absent key falls back to its environment variable where §4.1 names one.

Not built: the durable SQLite trace archive (``trace_storage`` is accepted and validated;
spans are kept in memory only and the storage status says ``archive: disabled``), and the
console-UI assets. ``level`` / ``format`` are accepted; the engine's log settings are
``engine.log_level`` / ``engine.log_format``.

Ours: ``webhook_security`` (``{require_https: false, block_private_ips: true,
url_allowlist: ["*"]}`` by default): the URL guard of alert webhooks, as the reference's
(http allowed, private addresses blocked), settable like ``iii-http-functions``' one.
``prometheus_host`` (default ``$III_PROMETHEUS_HOST`` else 0.0.0.0) and
``prometheus_port`` (``$III_PROMETHEUS_PORT`` else 9464; 0: no Prometheus listener) for
``/metrics``, ``/healthz`` and ``/readyz``.
"""
from __future__ import annotations

import os
from typing import Any

from brokers.kit.schema import ConfigError, Field, port, positive, validate


def _env(name: str, default: Any, kind: type = str) -> Any:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(f"${name}: expected {kind.__name__}, got {value!r}") from None


def _ratio(value: Any) -> str | None:
    return None if 0.0 <= value <= 1.0 else "must be between 0 and 1"


def _in(*choices: str):
    return lambda value: None if value in choices else f"must be one of {', '.join(choices)}"


def _between(low: int, high: int):
    return lambda value: None if low <= value <= high else f"must be {low}..{high}"


def _rule(raw: Any, path: str) -> dict[str, Any]:
    return validate(raw, {"operation": Field(str, None), "service": Field(str, None),
                          "rate": Field(float, check=_ratio)}, path)


def _sampling(raw: Any, path: str) -> dict[str, Any]:
    cfg = validate(raw, {"default": Field(float, None, check=_ratio), "rules": Field(list, list),
                         "parent_based": Field(bool, True), "rate_limit": Field(dict, None)}, path)
    cfg["rules"] = [_rule(r, f"{path}.rules[{i}]") for i, r in enumerate(cfg["rules"])]
    if cfg["rate_limit"] is not None:
        cfg["rate_limit"] = validate(cfg["rate_limit"], {"max_traces_per_second": Field(
            float, check=lambda v: None if v >= 1 else "must be at least 1")}, f"{path}.rate_limit")
    return cfg


def _collapse(raw: Any, path: str) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise ConfigError(f"{path}: expected list, got {type(raw).__name__}")
    return [validate(r, {"name": Field(str), "service": Field(str, None)}, f"{path}[{i}]") for i, r in enumerate(raw)]


def _trace_storage(raw: Any, path: str) -> dict[str, Any]:
    return validate(raw, {
        "enabled": Field(bool, True), "directory": Field(str, "./data/observability/traces"),
        "max_disk_bytes": Field(int, 1 << 30, check=positive), "retention_seconds": Field(int, 2_592_000),
        "memory_max_bytes": Field(int, 256 << 20, check=positive),
        "memory_low_watermark_ratio": Field(float, 0.75), "pending_max_age_seconds": Field(int, 3600)}, path)


def _webhook_security(raw: Any, path: str) -> dict[str, Any]:
    from brokers.http_functions.config import SECURITY_FIELDS
    fields = dict(SECURITY_FIELDS, require_https=Field(bool, False))
    sec = validate(raw, fields, path)
    return {"url_allowlist": list(sec["url_allowlist"]) or ["*"], "block_private_ips": sec["block_private_ips"],
            "require_https": sec["require_https"]}


def _alerts(raw: Any, path: str) -> list[dict[str, Any]]:
    from brokers.observability.alerts import parse_rules
    return parse_rules(raw, path)


def fields() -> dict[str, Field]:
    """The keys, with the environment fallbacks read now (the supervisor's environment)."""
    exporter = _env("OTEL_EXPORTER_TYPE", "memory")
    return {
        "enabled": Field(bool, True),
        "service_name": Field(str, _env("OTEL_SERVICE_NAME", "iii")),
        "service_version": Field(str, _env("SERVICE_VERSION", "unknown")),
        "service_namespace": Field(str, _env("SERVICE_NAMESPACE", None)),
        "exporter": Field(str, exporter if exporter in ("memory", "both") else "otlp", check=_in("memory", "otlp", "both")),
        "endpoint": Field(str, _env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318")),
        "sampling_ratio": Field(float, _env("OTEL_TRACES_SAMPLER_ARG", 1.0, float), check=_ratio),
        "sampling": Field(dict, None, parse=_sampling),
        "memory_max_spans": Field(int, _env("OTEL_MEMORY_MAX_SPANS", 10_000, int), check=positive),
        "trace_storage": Field(dict, None, parse=_trace_storage),
        "live_spans": Field(bool, None),
        "metrics_enabled": Field(bool, True),
        "metrics_exporter": Field(str, _env("OTEL_METRICS_EXPORTER", "memory"), check=_in("memory", "otlp")),
        "metrics_retention_seconds": Field(int, _env("OTEL_METRICS_RETENTION_SECONDS", 3600, int), check=positive),
        "metrics_max_count": Field(int, _env("OTEL_METRICS_MAX_COUNT", 10_000, int), check=positive),
        "logs_enabled": Field(bool, True),
        "logs_exporter": Field(str, _env("OTEL_LOGS_EXPORTER", "memory"), check=_in("memory", "otlp", "both")),
        "logs_max_count": Field(int, 1000, check=positive),
        "logs_retention_seconds": Field(int, None, check=positive),
        "logs_batch_size": Field(int, _env("OTEL_LOGS_BATCH_SIZE", 100, int), check=_between(1, 10_000)),
        "logs_flush_interval_ms": Field(int, _env("OTEL_LOGS_FLUSH_INTERVAL_MS", 5000, int),
                                        check=_between(100, 3_600_000)),
        "logs_sampling_ratio": Field(float, 1.0, check=_ratio),
        "logs_console_output": Field(bool, True),
        "alerts": Field(list, list, parse=_alerts),
        "level": Field(str, "info", check=_in("trace", "debug", "info", "warn", "error")),
        "format": Field(str, "default", check=_in("default", "json")),
        "collapse_spans": Field(list, list, parse=_collapse),
        "webhook_security": Field(dict, None, parse=_webhook_security),
        "prometheus_host": Field(str, _env("III_PROMETHEUS_HOST", "0.0.0.0")),
        "prometheus_port": Field(int, _env("III_PROMETHEUS_PORT", 9464, int), check=port),
    }


def parse(raw: Any, path: str) -> dict[str, Any]:
    """Validate the block (None: the auto-injected defaults)."""
    return validate(raw, fields(), path)


def shares(cfg: dict[str, Any]) -> dict[str, Any]:
    """What every engine process needs of it: whether to trace, and how to sample."""
    return {"enabled": cfg["enabled"], "service_name": cfg["service_name"],
            "sampling_ratio": cfg["sampling_ratio"], "sampling": cfg["sampling"]}


def listens(cfg: dict[str, Any]) -> list[tuple[str, int]]:
    return [(cfg["prometheus_host"], cfg["prometheus_port"])] if cfg["prometheus_port"] else []
