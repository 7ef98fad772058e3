#!/usr/bin/env bash
# The installed package, tried: builds a wheel with `pip wheel` from a fresh clone of this
# checkout's HEAD, installs it into a fresh virtual environment in another folder, and from
# an empty folder runs `import ferrocsp`, `ferrocsp --version`, `ferrocsp demo` and
# `ferrocsp bench --quick` (with --out, and without: a temporary folder).
#   scripts/check-wheel.sh [DIR]   (DIR: work folder; default: a new temporary folder)
# Expensive (a release build); run by hand before a release. Needs python3 >= 3.11, cargo,
# and PyPI (maturin for the build, greenlet for the install).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=${1:-$(mktemp -d "${TMPDIR:-/tmp}/ferrocsp-wheel.XXXXXX")}
PYTHON=${PYTHON:-python3}
say() { printf '[wheel] %s\n' "$*"; }

rm -rf "$work/src" "$work/dist" "$work/venv" "$work/empty"
mkdir -p "$work/empty"
git clone --quiet --branch "$(git -C "$root" rev-parse --abbrev-ref HEAD)" "$root" "$work/src"
say "clone at $(git -C "$work/src" rev-parse --short HEAD); pip wheel (release build)"
"$PYTHON" -m venv "$work/build-venv"
"$work/build-venv/bin/python" -m pip wheel --quiet --no-deps "$work/src" -w "$work/dist"
whl=$(ls "$work"/dist/ferrocsp-*.whl)
say "built $(basename "$whl") ($(du -k "$whl" | cut -f1) KiB)"
"$PYTHON" -m zipfile -l "$whl" | awk '{print $1}' \
  | grep -E 'licenses/LICENSE-(MIT|APACHE)$|_benchsuite/(commstime|alt)/run.py$|_native\.abi3\.so$|py\.typed$' \
  | sed 's/^/[wheel]   /'

"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet "$whl"
cd "$work/empty"
export PATH="$work/venv/bin:$PATH"
python -c "import ferrocsp, sys; print('[wheel] import ferrocsp:', ferrocsp.__file__); assert '$work/venv' in ferrocsp.__file__"
say "ferrocsp --version: $(ferrocsp --version)"
ferrocsp demo --cycles 2000 | sed 's/^/[wheel]   /'
ferrocsp bench --quick --out "$work/empty/perf" 2>"$work/bench.err"
tail -n 3 "$work/bench.err" | sed 's/^/[wheel]   /'
test -s "$work/empty/perf/index.md" && test -s "$work/empty/perf/results.json"
ferrocsp bench --quick 2>"$work/bench-default.err" >/dev/null
out=$(sed -n 's/^ferrocsp bench: writing to \(.*\) (choose with --out DIR)$/\1/p' "$work/bench-default.err")
test -s "$out/index.md"
say "without --out it wrote to $out"
if [ -n "$(git -C "$work/src" status --porcelain)" ]; then
  git -C "$work/src" status --short >&2
  say "FAILED: something wrote into the clone"
  exit 1
fi
say "ok: $(ls "$work/empty")"
