#!/usr/bin/env bash
# Creates .venv (our engine + our SDK, editable, with test tools). Idempotent: a second run
# only checks that the editable install still imports, unless setup.cfg/pyproject changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.iii-setup-stamp
want="$(cat setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! .venv/bin/python -c "import iii, brokers" 2>/dev/null \
   || [ ! -x .venv/bin/iii-supervisor ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,perf-peers]'
  echo "$want" > "$stamp"
fi
# Debian packages the tests use: systemd-analyze verifies the generated units
# (tests/integration/test_systemd_verify.py); redis-server is the tests' private Redis
# (tests/redisserver.py), never a mock
missing=""
command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd"
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
if [ -n "$missing" ]; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -q && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
fi
echo "setup-dev: .venv ready ($(.venv/bin/python --version))"
