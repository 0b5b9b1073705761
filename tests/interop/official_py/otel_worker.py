"""A worker on the OFFICIAL PyPI ``iii-sdk`` (0.25.0) for the observability interop tests
(``tests/interop/test_observability_sdks.py``): it logs with the SDK's ``Logger`` and calls on
from inside its handlers, so its OTel logs and ``execute <fn>`` spans reach the engine.

Run with ``.venv-official/bin/python``. The SDK sets up OpenTelemetry when it connects
(``iii_helpers.observability.telemetry.init_otel``: enabled unless env ``OTEL_ENABLED`` is
false/0/no/off; service name from ``OTEL_SERVICE_NAME``, else ``iii-python-sdk``; spans and logs
exported as OTLP JSON over its own WebSocket to ``<III_URL>/otel``, batched every 100 ms).
``Logger`` lives in ``iii_helpers.observability`` (0.25.0's ``iii`` does not re-export it).

Protocol (one JSON object per line), as ``otel_worker.mjs``:
- env ``III_URL``, ``REGISTER`` (JSON list of commands run at start);
- stdin ``{"op":"register","function_id":F,"kind":"log"|"chain","message":M,"data":D,"next":G}``
  (log: the handler logs M with D and returns its trace context; chain: it also triggers G with
  its input, ``{trace_id, span_id, next: <G's result>}``), ``{"op":"log","tag":T,"message":M,
  "data":D}`` (log outside any handler), ``{"op":"exit"}``;
- stdout ``{"ready":true}``, ``{"event":"called",...}``, ``{"event":"logged","tag":T,...}``.
Invariant: stdout carries only these JSON lines (SDK logs go to stderr), flushed per line.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
from typing import Any

from iii import InitOptions, register_worker
from iii_helpers.observability import Logger, current_span_id, current_trace_id

_out_lock = threading.Lock()


def emit(obj: dict[str, Any]) -> None:
    with _out_lock:
        sys.stdout.write(json.dumps(obj, default=str) + "\n")
        sys.stdout.flush()


def context() -> dict[str, Any]:
    return {"trace_id": current_trace_id(), "span_id": current_span_id()}


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    worker = register_worker(os.environ["III_URL"], InitOptions(
        worker_name=os.environ.get("III_WORKER_NAME") or None))
    logger = Logger()

    def make_handler(cmd: dict[str, Any]) -> Any:
        async def handler(data: Any) -> Any:
            ctx = context()
            emit({"event": "called", "function_id": cmd["function_id"], "data": data, **ctx})
            logger.info(cmd.get("message") or f"in {cmd['function_id']}", cmd.get("data") or {})
            if cmd.get("kind") == "chain":
                nxt = await worker.trigger_async({"function_id": cmd["next"], "payload": data,
                                                  "timeout_ms": 10000})
                return {**ctx, "next": nxt}
            return ctx

        return handler

    def run(cmd: dict[str, Any]) -> bool:
        op = cmd.get("op")
        if op == "register":
            worker.register_function(cmd["function_id"], make_handler(cmd))
        elif op == "log":
            logger.info(cmd["message"], cmd.get("data") or {})
            emit({"event": "logged", "tag": cmd.get("tag"), **context()})
        elif op == "exit":
            return False
        return True

    for cmd in json.loads(os.environ.get("REGISTER", "[]")):
        run(cmd)
    emit({"ready": True})
    for line in sys.stdin:
        if line.strip() and not run(json.loads(line)):
            break
    worker.shutdown()
    emit({"event": "exited"})


if __name__ == "__main__":
    main()
