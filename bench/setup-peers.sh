#!/usr/bin/env bash
# Install the benchmark peers that must not share ferrocsp's venv:
#   bench/.venv-pycsp: PyCSP 0.9.2 (pure Python; thread processes, and greenlet processes
#   with greenlet installed) for bench/commstime;
#   Go (Debian's golang-go, when missing and apt-get can install it) for bench/commstime's
#   goroutine rows.
# Idempotent. A failure here only means the peer is reported as unavailable by the benchmark.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHON=${PYTHON:-python3}
if ! command -v go >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[peers] installing golang-go (Debian) for the Go rows of bench/commstime"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go) \
      >/dev/null 2>&1 || echo "[peers] golang-go could not be installed: Go rows n/a"
  else
    echo "[peers] go not found (apt-get install golang-go): Go rows n/a"
  fi
fi
venv="$here/.venv-pycsp"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import pycsp, greenlet' 2>/dev/null; then
  echo "[peers] pycsp $("$venv/bin/python" -m pip show pycsp 2>/dev/null | sed -n 's/^Version: //p') already in bench/.venv-pycsp"
  exit 0
fi
echo "[peers] creating bench/.venv-pycsp with pycsp==0.9.2 and greenlet"
rm -rf "$venv"
"$PYTHON" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "pycsp==0.9.2" "greenlet>=3"
"$venv/bin/python" -c 'import pycsp, greenlet' && echo "[peers] pycsp 0.9.2 and greenlet installed"
