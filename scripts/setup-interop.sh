#!/usr/bin/env bash
# Installs the OFFICIAL SDKs the interop tests drive our engine with:
#   - PyPI iii-sdk==0.25.0 in .venv-official (its own venv: it installs a module named `iii`,
#     as ours does, so the two must never share one);
#   - npm iii-sdk@0.22.1 in tests/interop/node/node_modules (from package-lock.json), and
#     typescript 5.6.3 to run the seed page's TypeScript blocks as written.
# Idempotent and quick when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
OFFICIAL_PY_SDK="iii-sdk==0.25.0"

if ! .venv-official/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('iii-sdk') != '0.25.0')" 2>/dev/null; then
  [ -x .venv-official/bin/python ] || "$PY" -m venv .venv-official
  .venv-official/bin/python -m pip install -q --disable-pip-version-check "$OFFICIAL_PY_SDK"
fi

NODE_DIR=tests/interop/node
if [ "$(node -p "require('./$NODE_DIR/node_modules/iii-sdk/package.json').version" 2>/dev/null)" != "0.22.1" ] ||
   [ "$(node -p "require('./$NODE_DIR/node_modules/typescript/package.json').version" 2>/dev/null)" != "5.6.3" ]; then
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "setup-interop: official SDKs ready (PyPI $OFFICIAL_PY_SDK, npm iii-sdk@0.22.1)"
