#!/usr/bin/env bash
# Run a command with the brokers of scripts/brokers.sh up: starts them if they are not
# running, and stops them again afterwards only if this script started them.
# Usage: scripts/with_brokers.sh COMMAND [ARGS...]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if bash "$HERE/brokers.sh" status >/dev/null 2>&1; then
  started=0
else
  started=1
  bash "$HERE/brokers.sh" start
fi
stop_brokers() {
  if [ "$started" = 1 ] && [ "${KEEP_BROKERS:-0}" != 1 ]; then
    bash "$HERE/brokers.sh" stop || true
  fi
}
trap stop_brokers EXIT
"$@"
