#!/usr/bin/env bash
# The hand-written nats-py peer of bench/net runs in its own venv (bench/net/.venv-natspy), so
# ferrocsp's venv stays free of it. Idempotent; a failure only marks the peer unavailable.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHON=${PYTHON:-python3}
venv="$here/.venv-natspy"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import nats' 2>/dev/null; then
  echo "[net-bench] nats-py already in bench/net/.venv-natspy"
  exit 0
fi
rm -rf "$venv"
"$PYTHON" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "nats-py>=2.6,<3"
"$venv/bin/python" -c 'import nats' && echo "[net-bench] nats-py installed in bench/net/.venv-natspy"
