#!/usr/bin/env bash
# Install what the demo needs into the project (scripts/setup.sh --demo: .venv with the
# package; no root rights, no dev tools, no system packages) and run ferrocsp's demo.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh" --demo
cd "$root"
exec "$root/.venv/bin/python" -m ferrocsp demo "$@"
