"""Logging setup for the engine's entry points (supervisor and each ``run`` child).

Owns: one stderr handler on the root logger, in ``text`` (one human line) or ``json`` (one
orjson object per line: ts, level, logger, process, pid, msg, exc) format, each record
tagged with the engine process name; every record passes ``kit.redact`` on its way out
(secrets masked, call payloads elided: see that module), whatever the format; and the
operator signals of ``kit.signals`` (SIGUSR1: a stack dump into this log, SIGUSR2: reopen
the log file), installed here because every process configures its logging here.

Invariants: only entry points call ``setup``; library modules just use
``logging.getLogger(__name__)``; calling ``setup`` twice replaces the handler instead of
doubling the output; a JSON line is always one line (newlines in a message or a traceback
are escaped) and always valid JSON; the handler writes to ``sys.stderr`` as it is at each
write (``signals.reopen_log`` moves descriptor 2 to a fresh file under it, so the handler
never needs replacing).
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from typing import IO

import orjson

from brokers.kit import redact

_HANDLER_MARK = "_iii_handler"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, for log shippers."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        redact.redact_record(record)  # also when this formatter is used on its own
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "process": self.process,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """``<time> <process>[<pid>] <LEVEL> <logger>: <message>``, redacted."""

    def __init__(self, process: str) -> None:
        super().__init__(f"%(asctime)s {process}[%(process)d] %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        redact.redact_record(record)
        return super().format(record)


class _Stderr(logging.StreamHandler):
    """A StreamHandler on whatever ``sys.stderr`` is now (tests swap it; reopen keeps it)."""

    def __init__(self, stream: IO[str] | None) -> None:
        super().__init__(stream or sys.stderr)
        self._fixed = stream is not None

    def emit(self, record: logging.LogRecord) -> None:
        if not self._fixed and self.stream is not sys.stderr:
            self.stream = sys.stderr
        super().emit(record)


def setup(level: str = "info", fmt: str = "text", process: str = "supervisor",
          stream: IO[str] | None = None, signals: bool = True) -> None:
    """Configure the root logger for this process; with ``signals`` (and on the main
    thread), install the SIGUSR1/SIGUSR2 handlers of ``kit.signals`` too."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = _Stderr(stream)
    setattr(handler, _HANDLER_MARK, True)
    handler.addFilter(redact.RedactFilter())
    handler.setFormatter(JsonFormatter(process) if fmt == "json" else TextFormatter(process))
    root.addHandler(handler)
    root.setLevel(level.upper())
    # websockets logs every connection's open and close at INFO: a worker coming and going
    # is normal and must not fill the engine log (see it with log_level: debug).
    logging.getLogger("websockets").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
    if signals and threading.current_thread() is threading.main_thread():
        from brokers.kit import signals as opsignals  # imports this module
        opsignals.install(process)
