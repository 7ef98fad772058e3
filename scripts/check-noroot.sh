#!/usr/bin/env bash
# The newcomer's path, tried: a fresh clone of this checkout's HEAD, as a user without root
# rights on a machine without Graphviz or nats-server, runs the README's first command
# (./scripts/demo.sh) and must get the demo. Stand-ins first on PATH make it so even when run
# as root: `id -u` prints 1000; apt-get, sudo, dot and nats-server fail as missing commands.
#   scripts/check-noroot.sh [DIR]   (DIR: where to clone; default: a new temporary folder)
# Expensive (a release build of the extension); tests/test_noroot.py runs it when slow tests
# are on (FERROCSP_SLOW=1). CARGO_TARGET_DIR, when set, is kept (to reuse built dependencies).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=${1:-$(mktemp -d "${TMPDIR:-/tmp}/ferrocsp-noroot.XXXXXX")}
mkdir -p "$work"
say() { printf '[noroot] %s\n' "$*"; }

stand=$work/stand-ins
mkdir -p "$stand"
cat >"$stand/id" <<'SH'
#!/bin/sh
case "$1" in -u | -g) echo 1000 ;; -un | -gn) echo newcomer ;; *) echo "uid=1000(newcomer) gid=1000(newcomer) groups=1000(newcomer)" ;; esac
SH
for cmd in apt-get sudo dot nats-server; do
  printf '#!/bin/sh\necho "%s: command not found" >&2\nexit 127\n' "$cmd" >"$stand/$cmd"
done
chmod +x "$stand"/*

clone=$work/ferrocsp
rm -rf "$clone"
branch=$(git -C "$root" rev-parse --abbrev-ref HEAD)
git clone --quiet --branch "$branch" "$root" "$clone"
say "fresh clone of $branch at $(git -C "$clone" rev-parse --short HEAD) in $clone"

log=$work/demo.log
say "PATH=$stand:... ./scripts/demo.sh --cycles 2000 (log: $log)"
if ! (cd "$clone" && env -u CI -u VIRTUAL_ENV PATH="$stand:$PATH" ./scripts/demo.sh --cycles 2000) \
  >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  say "FAILED: the demo did not run without root"
  exit 1
fi
fail=0
grep -q "stopped by poison" "$log" || { say "no demo output in $log"; fail=1; }
# The demo path installs no dev tools and no system packages.
for tool in pytest mypy ruff mkdocs hypothesis; do
  if [ -e "$clone/.venv/bin/$tool" ]; then say "the demo installed $tool"; fail=1; fi
done
if grep -qiE 'apt-get install|sudo' "$log"; then say "the demo tried to install system packages"; fail=1; fi
[ "$fail" = 0 ] || { cat "$log" >&2; exit 1; }
sed -n 's/^/    /p' "$log" | grep -E '^\s+\[setup\]|us per communication|poison' | head -n 20
say "ok: the demo ran as uid 1000 without Graphviz, nats-server or dev tools"
