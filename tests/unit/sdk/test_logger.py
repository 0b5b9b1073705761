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
