#!/usr/bin/env bash
# The soak (docs/soak.md): mixed traffic on every backend and transport, with random SIGKILLs
# and Ctrl-Cs, exact accounting of every value, and resource curves that must stay flat.
#   scripts/soak.sh [SECONDS] [soak.py options]   default 3600 s (the full soak);
#                                                 scripts/test.sh runs it for 60 s
#   SOAK_OUT=DIR   where samples.csv, summary.json and soak.svg go (default target/soak)
# Exits 1 on any breach (a value lost or duplicated, an unexpected error, a hang, a process
# left behind, a resource that grows), naming it. Runs nice'd: it is meant to run for hours.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
duration=${1:-3600}
shift || true
out=${SOAK_OUT:-$root/target/soak}
VPY="$root/.venv/bin/python"
[ -x "$VPY" ] || "$root/scripts/setup.sh" --dev
rm -rf "$out"
rc=0
nice "$VPY" bench/soak/soak.py --duration "$duration" --out "$out" "$@" || rc=$?
if [ -f "$out/samples.csv" ] && "$VPY" -c 'import matplotlib' 2>/dev/null; then
  "$VPY" bench/soak/plot.py "$out/samples.csv" "$out/soak.svg" || true
fi
exit $rc
