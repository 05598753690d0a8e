#!/usr/bin/env bash
# The whole test suite on a fresh machine: brokers (installed and started by
# scripts/brokers.sh), a virtualenv with every extra, lint, types, then every test with
# the brokers required. Brokers this script started are stopped again at the end
# (KEEP_BROKERS=1 keeps them).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
VENV="${VENV:-$REPO/.venv}"
PYTHON="${PYTHON:-python3}"

if [ "${WITH_BROKERS:-0}" != 1 ]; then  # brokers first: they also bring proton's build tools
  WITH_BROKERS=1 exec bash scripts/with_brokers.sh bash "$REPO/scripts/test.sh" "$@"
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[all,dev]"

echo "== lint"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
echo "== types"
"$VENV/bin/mypy" aspyx_di aspyx_event
echo "== tests"
BROKERS_REQUIRED=1 "$VENV/bin/python" -m pytest "$@"
