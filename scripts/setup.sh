#!/usr/bin/env bash
# Install what ferrocsp needs into the project, idempotently, without root rights:
#   scripts/setup.sh --demo   what the demo needs (scripts/demo.sh): a virtual environment
#                             .venv (python3 >= 3.11) with maturin and greenlet, and the
#                             package built in release mode and installed editable into it;
#   scripts/setup.sh [--dev]  the default, what scripts/test.sh needs: the above, plus the
#                             Rust components clippy and rustfmt (via rustup), the dev tools
#                             (pytest, mypy, ruff, hypothesis, uvloop), mkdocs and matplotlib,
#                             and the system programs Graphviz (`ferrocsp graph`) and
#                             nats-server (networked channels), from Debian's apt-get when
#                             run as root. Without root they are left out with a note saying
#                             how to get them (their tests then skip); in CI (CI=true) a
#                             missing one is an error.
# The package is rebuilt only when crates/*/src, a manifest or pyproject.toml changed
# (FERROCSP_REBUILD=1 forces it). Safe to run again and again; prints one line per step.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

mode=dev
case "${1:-}" in
  --demo) mode=demo ;;
  --dev | "") mode=dev ;;
  *) die "usage: scripts/setup.sh [--demo | --dev]" ;;
esac
in_ci() { case "${CI:-}" in 1 | true | TRUE | True | yes) return 0 ;; *) return 1 ;; esac; }

PYTHON=${PYTHON:-python3}
VENV="$root/.venv"
# Dev tools; keep in step with [project.optional-dependencies].dev in pyproject.toml, plus the
# runtime dependencies of [project].dependencies (maturin develop installs those only when it
# rebuilds, and the build below is skipped when the extension is up to date).
BUILD=("greenlet>=3.0" "maturin>=1.9.4,<2")
TOOLS=("${BUILD[@]}" "pytest>=8" "pytest-timeout>=2.3" "hypothesis>=6.100" "mypy>=1.10" "ruff>=0.6" "uvloop>=0.19")

# --- Rust toolchain --------------------------------------------------------------------
command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs, no root needed) first"
msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
have=$(rustc --version | cut -d' ' -f2)
if [ "$(printf '%s\n%s\n' "$msrv" "$have" | sort -V | head -n 1)" != "$msrv" ]; then
  die "rustc $have is older than ferrocsp's minimum Rust $msrv: rustup update stable"
fi
if [ "$mode" = dev ]; then
  missing=()
  cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
  cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
  if [ "${#missing[@]}" -gt 0 ]; then
    command -v rustup >/dev/null || die "cargo ${missing[*]} missing and rustup not found to add them"
    say "rustup component add ${missing[*]}"
    rustup component add "${missing[@]}"
  fi
  say "rust: $(cargo --version | cut -d' ' -f1-2), $(cargo clippy --version | cut -d' ' -f1-2), $(cargo fmt --version | cut -d' ' -f1-2)"
else
  say "rust: $(cargo --version | cut -d' ' -f1-2) (minimum $msrv)"
fi

# --- Python virtual environment ----------------------------------------------------------
command -v "$PYTHON" >/dev/null || die "$PYTHON not found (need CPython >= 3.11)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "$PYTHON is $("$PYTHON" -V 2>&1); ferrocsp needs Python >= 3.11 (set PYTHON=...)"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  say "creating .venv with $("$PYTHON" -V 2>&1)"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV" || die "python3 -m venv failed (on Debian's own python3: apt-get install python3-venv)"
fi
VPY="$VENV/bin/python"

if [ "$mode" = demo ]; then
  if ! "$VPY" -c 'import greenlet' 2>/dev/null || [ ! -x "$VENV/bin/maturin" ]; then
    say "pip install ${BUILD[*]}"
    "$VPY" -m pip install --quiet --disable-pip-version-check "${BUILD[@]}"
  fi
  say "python: $("$VPY" -V 2>&1), maturin $("$VENV/bin/maturin" --version | cut -d' ' -f2)"
else
  if ! "$VPY" -c 'import greenlet, pytest, pytest_timeout, hypothesis, mypy, uvloop' 2>/dev/null \
     || [ ! -x "$VENV/bin/maturin" ] || [ ! -x "$VENV/bin/ruff" ]; then
    say "pip install ${TOOLS[*]}"
    "$VPY" -m pip install --quiet --disable-pip-version-check "${TOOLS[@]}"
  fi
  say "python: $("$VPY" -V 2>&1), maturin $("$VENV/bin/maturin" --version | cut -d' ' -f2), ruff $("$VENV/bin/ruff" --version | cut -d' ' -f2), mypy $("$VPY" -m mypy --version | cut -d' ' -f2)"
fi

# --- Build and install ferrocsp (release) -----------------------------------------------
# maturin develop installs the package editable: python/ferrocsp is used in place and the
# extension lands as python/ferrocsp/_native.abi3.so (scripts/free-threaded.sh puts a free-threaded
# build, _native.cpython-3XXt-*.so, beside it). Skip the build when that .so is newer
# than every crate source (benches and tests aside) and manifest, and the venv imports it.
so=$(find python/ferrocsp -maxdepth 1 -name "_native.abi3.so" 2>/dev/null | head -n 1 || true)
stale=1
if [ -n "$so" ] && [ "${FERROCSP_REBUILD:-0}" != 1 ] \
   && [ -z "$(find crates/*/src crates/*/Cargo.toml crates/*/build.rs Cargo.toml Cargo.lock pyproject.toml \
              -newer "$so" -type f 2>/dev/null | head -n 1)" ] \
   && (cd /tmp && "$VPY" -c 'import ferrocsp._native') 2>/dev/null; then
  stale=0
fi
if [ "$stale" = 1 ]; then
  say "maturin develop --release (builds crates/ferrocsp-py; first build takes a few minutes)"
  log=$(mktemp "${TMPDIR:-/tmp}/ferrocsp-maturin.XXXXXX")
  if ! VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" "$VENV/bin/maturin" develop --release >"$log" 2>&1; then
    grep -vE '^\s*(Compiling|Checking|Fresh|Downloaded|Downloading|Locking|Adding|Updating) ' "$log" | tail -n 80 >&2
    die "maturin develop --release failed (full log: $log)"
  fi
  rm -f "$log"
  (cd /tmp && "$VPY" -c 'import ferrocsp._native') || die "built, but 'import ferrocsp._native' fails in .venv"
  say "installed ferrocsp into .venv"
else
  say "ferrocsp extension up to date ($so)"
fi

[ "$mode" = demo ] && exit 0

# --- Docs and benchmark plots ------------------------------------------------------------
# mkdocs with mkdocstrings builds the site (scripts/test.sh runs `mkdocs build --strict`);
# matplotlib draws the plots of `ferrocsp bench`. Keep in step with the docs and bench extras
# and plot extras of [project.optional-dependencies] in pyproject.toml.
DOC_TOOLS=("mkdocs>=1.6,<2" "mkdocstrings[python]>=0.26" "matplotlib>=3.8")
if ! "$VPY" -c 'import mkdocs, mkdocstrings_handlers.python, matplotlib' 2>/dev/null; then
  say "pip install ${DOC_TOOLS[*]}"
  "$VPY" -m pip install --quiet --disable-pip-version-check "${DOC_TOOLS[@]}"
fi
say "docs: mkdocs $("$VPY" -c 'import mkdocs; print(mkdocs.__version__)'), matplotlib $("$VPY" -c 'import matplotlib; print(matplotlib.__version__)')"

# --- System programs: Graphviz, nats-server ------------------------------------------------
# `ferrocsp graph` renders networks with Graphviz's `dot` (tests/test_graph.py draws an SVG);
# networked channels (ferrocsp.net) are tested against a real nats-server with JetStream,
# started by the test fixtures on 127.0.0.1 (tests/_nats.py; Debian 12 ships 2.9.10).
# As root on Debian (CI), install them with apt-get; otherwise say how and go on: the
# features that need them say so when used, and their tests skip (but fail in CI).
works() { "$@" >/dev/null 2>&1; }  # a program counts as there when it runs
optional() {  # optional EXE PROBE-ARG PACKAGE WHAT
  local exe=$1 probe=$2 pkg=$3 what=$4
  works "$exe" "$probe" && return 0
  if [ "$(id -u)" = 0 ] && works command -v apt-get; then
    say "apt-get install $pkg"
    export DEBIAN_FRONTEND=noninteractive
    if apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null 2>&1 \
       || { apt-get update -qq >/dev/null 2>&1 \
            && apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null 2>&1; }; then
      works "$exe" "$probe" && return 0
    fi
  fi
  in_ci && die "$exe not found and could not be installed (CI=true needs it: run as root on Debian)"
  say "note: $exe not found, left out: $what; to get it, apt-get install $pkg (as root)."
  say "      Its tests skip until then."
}
optional dot -V graphviz "ferrocsp graph draws SVG/PNG with it (--format dot works without)"
works dot -V && say "graphviz: $(dot -V 2>&1)"
optional nats-server --version nats-server "networked channels (ferrocsp.net) need a NATS server"
works nats-server --version && say "nats: $(nats-server --version 2>&1)"
exit 0
