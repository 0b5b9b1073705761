"""``Logger``: structured log lines for the worker's own output and the engine's log.

Every line is written locally: through Python ``logging`` (logger ``iii``) when the
application has configured logging (the root logger or ``iii`` has a handler), else as a
readable line on stderr (``2026-12-01 10:44:17 INFO math: Math add completed {"a": 2}``),
at ``info`` and above unless ``$III_LOG_LEVEL`` says otherwise.

It also goes to the engine, as the official SDKs do, as an OpenTelemetry log record on the
worker's telemetry socket (``sdk.telemetry``: a ``b"LOGS"`` frame, ``sdk.otlp.log_record``:
severity 5/9/13/17, the message as body, ``data``'s keys as attributes, the trace and span
ids of the current span, i.e. of the handler's ``execute`` span inside a handler; resource
``service.name`` = the Logger's ``service_name``, else the worker's; the worker is the one
running the current handler, else the ``worker`` given, else the process's most recent
one). With telemetry
disabled (``OTEL_ENABLED=false`` or ``InitOptions(otel={"enabled": False})``) it falls
back to what it did before: a void call of ``engine::log::<level>`` with ``{"message",
"data", "trace_id"?, "span_id"?}`` when the current worker is connected and the engine was
seen to have that function (probed once per connection by ``III.engine_log_functions``).

Invariants: a log call never blocks and never raises.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

from sdk.tracecontext import Span, current_span

_py_log = logging.getLogger("iii")
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
_NAMES = {"debug": "DEBUG", "info": "INFO", "warn": "WARN", "error": "ERROR"}


def _stderr_threshold() -> int:
    name = os.environ.get("III_LOG_LEVEL", "info").lower()
    return _LEVELS.get("warn" if name == "warning" else name, logging.INFO)


class Logger:
    """``Logger().info("message", {"structured": "data"})``; also ``warn``, ``error``, ``debug``."""

    def __init__(self, service_name: str | None = None, worker: Any = None, *,
                 trace_id: str | None = None, span_id: str | None = None) -> None:
        """``trace_id`` / ``span_id`` (hex) override the current span's (as the official SDK)."""
        self.service_name = service_name
        self._worker = worker
        self._trace_id = trace_id
        self._span_id = span_id

    def debug(self, message: str, data: Any = None) -> None:
        self._log("debug", message, data)

    def info(self, message: str, data: Any = None) -> None:
        self._log("info", message, data)

    def warn(self, message: str, data: Any = None) -> None:
        self._log("warn", message, data)

    warning = warn

    def error(self, message: str, data: Any = None) -> None:
        self._log("error", message, data)

    def _log(self, level: str, message: str, data: Any) -> None:
        try:
            self._to_engine(level, message, data)
        except Exception:  # a log line must never break the handler that writes it
            _py_log.debug("engine log delivery failed", exc_info=True)
        try:
            self._local(level, message, data)
        except Exception:
            pass

    def _local(self, level: str, message: str, data: Any) -> None:
        suffix = "" if data is None else " " + json.dumps(data, default=str, ensure_ascii=False)
        if logging.getLogger().handlers or _py_log.handlers:  # the application chose: obey it
            if _py_log.isEnabledFor(_LEVELS[level]):
                _py_log.log(_LEVELS[level], "%s%s", message, suffix)
        elif _LEVELS[level] >= _stderr_threshold():
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            sys.stderr.write(f"{stamp} {_NAMES[level]} {self.service_name or 'iii'}: "
                             f"{message}{suffix}\n")
            sys.stderr.flush()

    def _span(self) -> Any:
        span = current_span()
        if self._trace_id is None and self._span_id is None:
            return span
        trace_id = self._trace_id or (span.trace_id if span is not None else None)
        if not trace_id:
            return span
        span_id = self._span_id or (span.span_id if span is not None else "0" * 16)
        return Span(trace_id, span_id, None, "", start_ns=0)

    def _to_engine(self, level: str, message: str, data: Any) -> bool:
        worker = self._worker
        sink = getattr(current_span(), "sink", None)
        if worker is None and sink is not None:  # in a handler: its own worker's telemetry
            sink.add_log(level, message, data, self._span(), self.service_name)
            return True
        if worker is None:
            from sdk.worker import current_worker

            worker = current_worker()
        if worker is None:
            return False
        span = self._span()
        telemetry = worker.shell.telemetry
        if telemetry is not None:
            telemetry.add_log(level, message, data, span, self.service_name)
            return True
        if worker.get_connection_state() != "connected":
            return False
        function_id = f"engine::log::{level}"
        available = worker.engine_log_functions()
        if not available or function_id not in available:
            return False
        payload: dict[str, Any] = {"message": message}
        if data is not None:
            payload["data"] = data
        if self.service_name:
            payload["service_name"] = self.service_name
        if span is not None:
            payload["trace_id"], payload["span_id"] = span.trace_id, span.span_id
        worker.shell.post_call({"function_id": function_id, "payload": payload,
                                "action": {"type": "void"}}, _Discard())
        return True


class _Discard:
    """A waiter nobody reads: void calls settle it with None."""

    def done(self) -> bool:
        return False

    def set_result(self, _value: Any) -> None:
        pass

    def set_exception(self, exc: BaseException) -> None:
        _py_log.debug("engine log call failed: %s", exc)
