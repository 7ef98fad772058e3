#!/usr/bin/env bash
# Format the Rust and Python code in place and apply ruff's safe fixes.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
[ -x .venv/bin/ruff ] || "$root/scripts/setup.sh"
py_paths=()
for d in python tests bench examples; do [ -d "$d" ] && py_paths+=("$d"); done
cargo fmt --all
.venv/bin/ruff check --fix --quiet "${py_paths[@]}" || true  # what remains is shown by scripts/test.sh
.venv/bin/ruff format "${py_paths[@]}"
