"""``Logger`` output a user can see: a readable stderr line by default (it printed nothing
before: the ``iii`` logger had no handler), Python logging when the application set it up."""
from __future__ import annotations

import subprocess
import sys

import pytest


def run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    import os
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, env={**os.environ, **env})


def test_info_goes_to_stderr_by_default() -> None:
    out = run("from iii import Logger\n"
              "logger = Logger()\n"
              "logger.info('Math add completed', {'a': 2, 'b': 3, 'result': 5})\n"
              "Logger('billing').warn('card declined')\n"
              "logger.debug('not shown at the default level')\n")
    lines = out.stderr.splitlines()
    assert out.returncode == 0 and out.stdout == ""
    assert len(lines) == 2, out.stderr
    assert lines[0].endswith(' INFO iii: Math add completed {"a": 2, "b": 3, "result": 5}')
    assert lines[1].endswith(" WARN billing: card declined")


@pytest.mark.parametrize("level, shown", [("debug", 2), ("error", 0)])
def test_III_LOG_LEVEL_sets_the_stderr_threshold(level: str, shown: int) -> None:
    out = run("from iii import Logger\nLogger().debug('d')\nLogger().info('i')\n",
              III_LOG_LEVEL=level)
    assert len(out.stderr.splitlines()) == shown, out.stderr


def test_an_application_logging_config_is_obeyed() -> None:
    out = run("import logging, sys\n"
              "logging.basicConfig(stream=sys.stdout, level=logging.INFO, format='%(name)s|%(message)s')\n"
              "from iii import Logger\nLogger().info('through logging', {'k': 1})\n")
    assert out.stdout == 'iii|through logging {"k": 1}\n' and out.stderr == ""


class _Telemetry:
    def __init__(self) -> None:
        self.logs: list[tuple] = []

    def add_log(self, *args: object) -> None:
        self.logs.append(args)


class _Worker:
    """Just what ``Logger`` reaches: ``shell.telemetry`` (on) — no engine call is made."""

    def __init__(self) -> None:
        self.shell = type("Shell", (), {"telemetry": _Telemetry()})()

    def get_connection_state(self) -> str:
        raise AssertionError("with telemetry on, Logger makes no engine::log call")


def test_logger_sends_to_telemetry_with_the_current_span_or_given_ids() -> None:
    from sdk.logger import Logger
    from sdk.tracecontext import child_span, run_in

    w = _Worker()
    span = child_span("execute a::b", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None, 1)
    run_in(span, Logger("svc", worker=w).debug, "in a handler", {"k": 1})
    Logger(worker=w).info("outside")
    Logger(worker=w, trace_id="ab" * 16, span_id="cd" * 8).warn("given ids")
    (lvl, msg, data, s, svc), (_, _, _, none, _), (_, _, _, given, _) = w.shell.telemetry.logs
    assert (lvl, msg, data, s, svc) == ("debug", "in a handler", {"k": 1}, span, "svc")
    assert none is None and (given.trace_id, given.span_id) == ("ab" * 16, "cd" * 8)


def test_importing_the_sdk_loads_no_opentelemetry_package() -> None:
    out = run("import sys\nfrom iii import register_worker, Logger\nimport sdk.telemetry, sdk.otlp\n"
              "print([m for m in sys.modules if m.split('.')[0] == 'opentelemetry'])\n")
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
