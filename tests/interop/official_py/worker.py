"""A worker built on the OFFICIAL PyPI ``iii-sdk`` (0.25.0), driven by the interop tests.

Run with ``.venv-official/bin/python`` (never our venv: both install a module named ``iii``).
Environment: ``III_URL`` (engine address), optional ``III_WORKER_NAME``, and
``REGISTER`` (JSON list of commands run at start, same shape as stdin commands).

Protocol with the test (one JSON object per line):
- stdin commands: ``{"op":"register","function_id":F,"kind":"add|echo|const|slow","value":V,"ms":N}``,
  ``{"op":"trigger","tag":T,"function_id":F,"payload":P,"void":bool,"timeout_ms":N}``,
  ``{"op":"trigger_type","type_id":T}``, ``{"op":"bind","trigger_type":T,"function_id":F,"config":C}``,
  ``{"op":"fire","tag":T}`` (provider: call every function bound to its trigger types),
  ``{"op":"exit"}``.
- stdout events: ``{"ready":true,"worker_id":...}``, ``{"event":"called","function_id":F,"data":D}``,
  ``{"event":"result","tag":T,"ok":true,"result":R}`` / ``{"event":"result","tag":T,"ok":false,
  "code":C,"message":M}``, ``{"event":"trigger_registered","config":{...}}``,
  ``{"event":"trigger_unregistered","id":I}``, ``{"event":"rejected","args":[...]}``,
  ``{"event":"state","state":S}``.
Invariant: stdout carries only these JSON lines (SDK logs go to stderr), flushed per line.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import threading
from typing import Any

from iii import InitOptions, InvocationError, TriggerAction, register_worker
from iii.triggers import TriggerConfig, TriggerHandler

_out_lock = threading.Lock()


def emit(obj: dict[str, Any]) -> None:
    with _out_lock:
        sys.stdout.write(json.dumps(obj, default=str) + "\n")
        sys.stdout.flush()


class _Rejections(logging.Handler):
    """Turns the SDK's 'registration rejected' warning into an event (it has no callback)."""

    def emit(self, record: logging.LogRecord) -> None:
        if "registration rejected" in record.getMessage().lower():
            emit({"event": "rejected", "message": record.getMessage(),
                  "args": [str(a) for a in (record.args or ())]})


class Provider(TriggerHandler[Any]):
    """A custom trigger type: remembers its bindings and reports them."""

    def __init__(self) -> None:
        self.bindings: dict[str, TriggerConfig[Any]] = {}

    async def register_trigger(self, config: TriggerConfig[Any]) -> None:
        self.bindings[config.id] = config
        emit({"event": "trigger_registered", "config": config.model_dump()})

    async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
        self.bindings.pop(config.id, None)
        emit({"event": "trigger_unregistered", "id": config.id})


def make_handler(function_id: str, kind: str, cmd: dict[str, Any]) -> Any:
    async def handler(data: Any) -> Any:
        emit({"event": "called", "function_id": function_id, "data": data})
        if kind == "add":
            return {"c": data["a"] + data["b"]}
        if kind == "const":
            return cmd.get("value")
        if kind == "slow":
            await asyncio.sleep(cmd.get("ms", 30000) / 1000)
            return {"slept": True}
        return data  # echo

    return handler


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("iii").addHandler(_Rejections())
    worker = register_worker(os.environ["III_URL"], InitOptions(
        worker_name=os.environ.get("III_WORKER_NAME") or None))
    worker.add_connection_state_listener(lambda s: emit({"event": "state", "state": s}))
    provider = Provider()

    def trigger(cmd: dict[str, Any]) -> None:
        req: dict[str, Any] = {"function_id": cmd["function_id"], "payload": cmd.get("payload")}
        if cmd.get("void"):
            req["action"] = TriggerAction.Void()
        if cmd.get("timeout_ms"):
            req["timeout_ms"] = cmd["timeout_ms"]
        try:
            result = worker.trigger(req)
            emit({"event": "result", "tag": cmd.get("tag"), "ok": True, "result": result})
        except InvocationError as exc:
            emit({"event": "result", "tag": cmd.get("tag"), "ok": False, "code": exc.code,
                  "message": str(getattr(exc, "message", exc))})
        except Exception as exc:  # report, never die: the test reads the outcome
            emit({"event": "result", "tag": cmd.get("tag"), "ok": False,
                  "code": type(exc).__name__, "message": str(exc)})

    def run(cmd: dict[str, Any]) -> bool:
        op = cmd.get("op")
        if op == "register":
            worker.register_function(cmd["function_id"],
                                     make_handler(cmd["function_id"], cmd.get("kind", "echo"), cmd))
        elif op == "trigger":
            threading.Thread(target=trigger, args=(cmd,), daemon=True).start()
        elif op == "trigger_type":
            worker.register_trigger_type({"id": cmd["type_id"], "description": "interop test type"},
                                         provider)
        elif op == "bind":
            worker.register_trigger({"type": cmd["trigger_type"], "function_id": cmd["function_id"],
                                     "config": cmd.get("config")})
        elif op == "fire":
            for binding in list(provider.bindings.values()):
                trigger({"tag": cmd.get("tag"), "function_id": binding.function_id,
                         "payload": {"fired": binding.config}})
        elif op == "exit":
            return False
        return True

    for cmd in json.loads(os.environ.get("REGISTER", "[]")):
        run(cmd)
    emit({"ready": True, "worker_id": worker.worker_id})
    for line in sys.stdin:
        if line.strip() and not run(json.loads(line)):
            break
    worker.shutdown()
    emit({"event": "exited"})


if __name__ == "__main__":
    main()
