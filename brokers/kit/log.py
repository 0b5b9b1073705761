"""Logging setup for the engine's entry points (supervisor and each ``run`` child).

Owns: one stderr handler on the root logger, in ``text`` (one human line) or ``json`` (one
orjson object per line: ts, level, logger, process, msg, exc) format, each record tagged
with the engine process name. Invariants: only entry points call ``setup``; library modules
just use ``logging.getLogger(__name__)``; payload elision and secret redaction are the
callers' job (this module never inspects messages); calling ``setup`` twice replaces the
handler instead of doubling the output.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import IO

import orjson

_HANDLER_MARK = "_iii_handler"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, for log shippers."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "process": self.process,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def setup(level: str = "info", fmt: str = "text", process: str = "supervisor",
          stream: IO[str] | None = None) -> None:
    """Configure the root logger for this process."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(process))
    else:
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s {process}[%(process)d] %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper())
    # websockets logs every connection's open and close at INFO: a worker coming and going
    # is normal and must not fill the engine log (see it with log_level: debug).
    logging.getLogger("websockets").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
