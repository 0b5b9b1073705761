"""Worker options, address/header/name resolution and the reconnect backoff (all pure).

Invariants: the address is the argument, else ``III_URL``, else ``ws://127.0.0.1:49134``;
backoff is ``min(initial * multiplier**attempt, max)`` ± ``jitter`` (protocol.md §4.7);
nothing here touches a socket or reads a clock.
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

DEFAULT_ENGINE_URL = "ws://127.0.0.1:49134"
DEFAULT_INVOCATION_TIMEOUT_MS = 30_000


@dataclass
class ReconnectionConfig:
    """Reconnect backoff; the defaults are those of both official SDKs."""

    initial_delay_ms: int = 1000
    max_delay_ms: int = 30_000
    backoff_multiplier: float = 2.0
    jitter_factor: float = 0.3
    max_retries: int = -1  # -1: retry forever


@dataclass
class OtelConfig:
    """Telemetry options (a subset of the official SDK's ``OtelConfig``; None = env/default).

    ``enabled``: else ``OTEL_ENABLED`` (``false|0|no|off`` disables), else on.
    ``service_name``: else ``OTEL_SERVICE_NAME``, else the worker's name.
    ``metrics_export_interval_ms``: else ``OTEL_METRIC_EXPORT_INTERVAL``, else 60000.
    ``spans_flush_interval_ms`` / ``logs_flush_interval_ms``: the batching delay (else the
    ``OTEL_SPANS_FLUSH_INTERVAL_MS`` / ``OTEL_LOGS_FLUSH_INTERVAL_MS`` env, else 100); both
    kinds share one batch, the smaller of the two wins.
    """

    enabled: bool | None = None
    service_name: str | None = None
    metrics_enabled: bool = True
    metrics_export_interval_ms: int | None = None
    spans_flush_interval_ms: int | None = None
    logs_flush_interval_ms: int | None = None


@dataclass
class TelemetryConfig:
    """What ``sdk.telemetry`` runs with (resolved by ``resolve_telemetry``)."""

    service_name: str
    resource_attributes: dict[str, object]
    metrics_enabled: bool = True
    metrics_interval_s: float = 60.0
    flush_interval_s: float = 0.1


@dataclass
class InitOptions:
    """Options of ``register_worker`` (names as in the official Python SDK 0.25)."""

    worker_name: str | None = None
    worker_description: str | None = None
    namespace: str | None = None
    invocation_timeout_ms: int = DEFAULT_INVOCATION_TIMEOUT_MS
    reconnection_config: ReconnectionConfig | None = None
    headers: dict[str, str] | None = None
    # Ours, not the official SDK's: the loop thread is non-daemon by default (as in 0.25), so
    # a script that registers functions and reaches its end keeps serving them.
    daemon: bool = False
    # Size of the pool that runs sync ``def`` handlers off the event loop.
    handler_threads: int = 64
    # uvloop on the SDK's own loop when installed (architecture.md §5: +15-55 %).
    use_uvloop: bool = True
    # Ours: when ``register_worker`` is called inside a running event loop, run the connection
    # on that loop instead of a thread of its own, so ``await iii.trigger_async`` costs no
    # thread hop. Blocking calls (``trigger``, ``shutdown``, ``wait_connected``) must then
    # come from other threads (sync ``def`` handlers run in the pool, so they still may);
    # use ``shutdown_async`` on the loop.
    run_on_running_loop: bool = False
    # Telemetry (spans, logs, worker metrics on <url>/otel); an OtelConfig, a dict of its
    # fields, or None (environment and defaults).
    otel: OtelConfig | dict[str, object] | None = None


def resolve_address(address: str | None) -> str:
    if address:
        return address
    return os.environ.get("III_URL") or DEFAULT_ENGINE_URL


def resolve_headers(headers: dict[str, str] | None) -> dict[str, str]:
    """User headers plus ``Authorization: Bearer $III_TOKEN`` unless the user set Authorization."""
    out = dict(headers or {})
    token = os.environ.get("III_TOKEN", "").strip()
    if token and not any(k.lower() == "authorization" for k in out):
        out["Authorization"] = f"Bearer {token}"
    return out


def resolve_worker_name(options: InitOptions, hostname: str, pid: int) -> str:
    """0.25 precedence: ``III_WORKER_NAME``, then the option, then ``hostname:pid``."""
    return os.environ.get("III_WORKER_NAME") or options.worker_name or f"{hostname}:{pid}"


def resolve_namespace(options: InitOptions) -> str | None:
    """The option (blank refused), else ``III_NAMESPACE`` if non-blank, else None (= default)."""
    declared = options.namespace
    if declared is not None:
        if not declared.strip():
            raise ValueError(f"namespace is empty: InitOptions.namespace was set to {declared!r}")
        return declared
    env = os.environ.get("III_NAMESPACE")
    return env if env and env.strip() else None


_OFF = ("false", "0", "no", "off")


def _env_int(name: str) -> int | None:
    try:
        value = int(os.environ.get(name, ""))
    except ValueError:
        return None
    return value if value >= 0 else None


def resolve_telemetry(options: InitOptions, worker_name: str) -> TelemetryConfig | None:
    """The telemetry configuration, or None when telemetry is disabled (option, then env)."""
    raw = options.otel
    cfg = OtelConfig(**raw) if isinstance(raw, dict) else (raw or OtelConfig())
    enabled = cfg.enabled
    if enabled is None:
        enabled = os.environ.get("OTEL_ENABLED", "").strip().lower() not in _OFF
    if not enabled:
        return None
    metrics_ms = cfg.metrics_export_interval_ms
    if metrics_ms is None:
        metrics_ms = _env_int("OTEL_METRIC_EXPORT_INTERVAL")
    given = [v for v in (cfg.spans_flush_interval_ms, cfg.logs_flush_interval_ms) if v is not None]
    env = [v for v in (_env_int("OTEL_SPANS_FLUSH_INTERVAL_MS"), _env_int("OTEL_LOGS_FLUSH_INTERVAL_MS"))
           if v is not None]
    flush_ms = min(given or env or [100])
    service = cfg.service_name or os.environ.get("OTEL_SERVICE_NAME") or worker_name
    resource: dict[str, object] = {"service.version": SDK_VERSION, "service.instance.id": _INSTANCE_ID,
                                   "telemetry.sdk.name": "iii-py", "telemetry.sdk.language": "python",
                                   "iii.worker.name": worker_name}
    if options.namespace or os.environ.get("III_NAMESPACE"):
        resource["service.namespace"] = options.namespace or os.environ.get("III_NAMESPACE", "")
    return TelemetryConfig(service_name=service, resource_attributes=resource,
                           metrics_enabled=cfg.metrics_enabled,
                           metrics_interval_s=(60_000 if metrics_ms is None else metrics_ms) / 1000.0,
                           flush_interval_s=flush_ms / 1000.0)


def backoff_delay_ms(config: ReconnectionConfig, attempt: int, rand: float) -> float:
    """Delay before reconnect number ``attempt`` (0-based); ``rand`` is uniform in [0, 1)."""
    capped = min(config.initial_delay_ms * (config.backoff_multiplier ** attempt), config.max_delay_ms)
    jitter = capped * config.jitter_factor * (2.0 * rand - 1.0)
    return max(0.0, capped + jitter)


SDK_VERSION = "0.1.0"
_INSTANCE_ID = str(uuid.uuid4())  # service.instance.id of this process's telemetry
# We accept 64 MiB inbound; we implement neither observe.v1 nor local-dispatch.v1, so we do
# not declare them (the official 0.25 SDK declares all three).
SDK_FEATURES = ("large-messages.v1",)


def worker_metadata(options: InitOptions) -> dict[str, object]:
    """The ``data`` of the ``engine::workers::register`` void call (protocol.md §4.3)."""
    import platform

    pid = os.getpid()
    meta: dict[str, object] = {
        "runtime": "python",
        "version": SDK_VERSION,
        "name": resolve_worker_name(options, platform.node(), pid),
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "pid": pid,
        "isolation": os.environ.get("III_ISOLATION") or None,
        "namespace": resolve_namespace(options),
        "telemetry": {
            "language": os.environ.get("LANG", "").split(".")[0] or None,
            "project_name": os.path.basename(os.getcwd()) or None,
            "framework": "iii-py",
        },
        "features": list(SDK_FEATURES),
    }
    if options.worker_description:
        meta["description"] = options.worker_description
    return meta
