#!/usr/bin/env bash
# Installs python-csp 0.1 (the OS-process peer of bench/os/run.py) into bench/.venv-pythoncsp,
# apart from ferrocsp's venv (its package is also called `csp`). Idempotent; a failure only
# means the benchmark reports python-csp as unavailable.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
venv="$here/.venv-pythoncsp"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import csp.os_process' 2>/dev/null; then
  echo "[peers] python-csp already in bench/.venv-pythoncsp"
  exit 0
fi
rm -rf "$venv"
"$PYTHON" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "python-csp==0.1"
"$venv/bin/python" -c 'import csp.os_process' && echo "[peers] python-csp 0.1 installed"
