#!/usr/bin/env bash
# Install everything ferrocsp needs for development, idempotently:
#   - Rust components clippy and rustfmt (via rustup, only if missing);
#   - a virtual environment .venv (python3 >= 3.11) with maturin and the dev tools;
#   - the package itself, built in release mode and installed editable into .venv
#     (rebuilt only when crates/*/src, a manifest or pyproject.toml changed;
#     FERROCSP_REBUILD=1 forces it).
# Safe to run again and again; prints one line per step.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

PYTHON=${PYTHON:-python3}
VENV="$root/.venv"
# Dev tools; keep in step with [project.optional-dependencies].dev in pyproject.toml, plus the
# runtime dependencies of [project].dependencies (maturin develop installs those only when it
# rebuilds, and the build below is skipped when the extension is up to date).
TOOLS=("greenlet>=3.0" "maturin>=1.7,<2" "pytest>=8" "pytest-timeout>=2.3" "hypothesis>=6.100" "mypy>=1.10" "ruff>=0.6" "uvloop>=0.19")

# --- Rust toolchain --------------------------------------------------------------------
command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) first"
missing=()
cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
if [ "${#missing[@]}" -gt 0 ]; then
  command -v rustup >/dev/null || die "cargo ${missing[*]} missing and rustup not found to add them"
  say "rustup component add ${missing[*]}"
  rustup component add "${missing[@]}"
fi
say "rust: $(cargo --version | cut -d' ' -f1-2), $(cargo clippy --version | cut -d' ' -f1-2), $(cargo fmt --version | cut -d' ' -f1-2)"

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

if ! "$VPY" -c 'import greenlet, pytest, pytest_timeout, hypothesis, mypy, uvloop' 2>/dev/null \
   || [ ! -x "$VENV/bin/maturin" ] || [ ! -x "$VENV/bin/ruff" ]; then
  say "pip install ${TOOLS[*]}"
  "$VPY" -m pip install --quiet --disable-pip-version-check "${TOOLS[@]}"
fi
say "python: $("$VPY" -V 2>&1), maturin $("$VENV/bin/maturin" --version | cut -d' ' -f2), ruff $("$VENV/bin/ruff" --version | cut -d' ' -f2), mypy $("$VPY" -m mypy --version | cut -d' ' -f2)"

# --- Build and install ferrocsp (release) -----------------------------------------------
# maturin develop installs the package editable: python/ferrocsp is used in place and the
# extension lands as python/ferrocsp/_native.*.so. Skip the build when that .so is newer
# than every crate source (benches and tests aside) and manifest, and the venv imports it.
so=$(find python/ferrocsp -maxdepth 1 -name "_native.*.so" 2>/dev/null | head -n 1 || true)
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

# --- Docs and benchmark plots ------------------------------------------------------------
# mkdocs with mkdocstrings builds the site (scripts/test.sh runs `mkdocs build --strict`);
# matplotlib draws the plots of `ferrocsp bench`. Keep in step with the docs and bench extras
# of [project.optional-dependencies] in pyproject.toml.
DOC_TOOLS=("mkdocs>=1.6,<2" "mkdocstrings[python]>=0.26" "matplotlib>=3.8")
if ! "$VPY" -c 'import mkdocs, mkdocstrings_handlers.python, matplotlib' 2>/dev/null; then
  say "pip install ${DOC_TOOLS[*]}"
  "$VPY" -m pip install --quiet --disable-pip-version-check "${DOC_TOOLS[@]}"
fi
say "docs: mkdocs $("$VPY" -c 'import mkdocs; print(mkdocs.__version__)'), matplotlib $("$VPY" -c 'import matplotlib; print(matplotlib.__version__)')"

# --- Graphviz ------------------------------------------------------------------------------
# `ferrocsp graph` renders networks with Graphviz's `dot` (tests/test_graph.py draws an SVG).
# CI runs as root on Debian: install Debian's graphviz when `dot` is missing.
if ! command -v dot >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    say "apt-get install graphviz"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends graphviz >/dev/null 2>&1; then
      apt-get update -qq >/dev/null
      apt-get install -y -qq --no-install-recommends graphviz >/dev/null
    fi
  else
    die "Graphviz's dot not found: install graphviz (apt-get install graphviz)"
  fi
fi
say "graphviz: $(dot -V 2>&1)"

# --- nats-server ---------------------------------------------------------------------------
# Networked channels (ferrocsp.net) are tested against a real nats-server with JetStream,
# started by the test fixtures on 127.0.0.1 (tests/_nats.py). Debian 12 ships 2.9.10.
"$root/scripts/nats.sh" install
say "nats: $(nats-server --version 2>&1)"
