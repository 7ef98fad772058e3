#!/usr/bin/env bash
# Install everything (scripts/setup.sh) and run ferrocsp's demo.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh"
cd "$root"
exec "$root/.venv/bin/python" -m ferrocsp demo "$@"
