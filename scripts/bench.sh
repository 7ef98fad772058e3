#!/usr/bin/env bash
# Install everything, the benchmark peers too (PyCSP in bench/.venv-pycsp), and run the
# commstime benchmark. Arguments go to bench/commstime/run.py (--cycles, --runs, --json).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh"
"$root/bench/setup-peers.sh"
cd "$root"
exec "$root/.venv/bin/python" bench/commstime/run.py "$@"
