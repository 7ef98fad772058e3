#!/usr/bin/env bash
# Run ferrocsp's Python suite on free-threaded CPython 3.14 (3.14t) with the GIL disabled:
#   scripts/free-threaded.sh [pytest args...]   build what is missing, then run the suite
#   scripts/free-threaded.sh --build-only       stop after building 3.14t and ferrocsp
#   scripts/free-threaded.sh --bench            also run bench/freethreaded (3.14t vs 3.11)
#
# 1. CPython 3.14 from Debian's python3.14 source package, configured with --disable-gil and
#    installed under $FERROCSP_CACHE (default ~/.cache/ferrocsp)/cpython-3.14t. The package is
#    in newer Debian suites than the machine's: apt reads a throwaway sources list (deb-src of
#    trixie, forky, sid and experimental on the machine's own Debian mirror) and a throwaway
#    package-lists directory given with -o options, so the system's apt setup is never changed.
#    Each version the signed indices list is tried, newest first: its .dsc and upstream
#    tarball come straight from the pool, the .dsc checked against the index's SHA-256 and the
#    tarball against the .dsc's (a mirror may lack a version the index names, or carry only the
#    binary packages). The tarball is built without Debian's patches, which target Debian's
#    /usr layout. The build is cached: a second run reuses it.
# 2. .venv-ft (git-ignored) with greenlet, pytest, pytest-timeout, hypothesis and maturin.
# 3. ferrocsp built for it: a version-specific (cp314t, not abi3) extension, built into
#    target/free-threaded so it never touches the abi3 build of .venv (scripts/setup.sh).
# 4. The whole suite with PYTHON_GIL=0; tests/conftest.py fails the session if the GIL is on
#    (an extension declaring gil_used would have re-enabled it). pytest's summary line is last.
# Needs root on Debian for apt-get (build dependencies); without root they must be there.
# Where no python3.14 source can be fetched, it falls back to python3.13 (3.13t) and says so.
# greenlet supports free-threaded builds from 3.3 on, for 3.14t only: on 3.13t the last wheel,
# 3.2.2, crashes the interpreter at a switch made while a critical section is held, and later
# releases do not compile there, so tests/conftest.py skips the suite's greenlet-based tests
# on a free-threaded build whose greenlet is older than 3.3, naming that reason.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

say() { printf '[free-threaded] %s\n' "$*"; }
die() { printf '[free-threaded] error: %s\n' "$*" >&2; exit 1; }

build_only=0
bench=0
args=()
for a in "$@"; do
  case $a in
    --build-only) build_only=1 ;;
    --bench) bench=1 ;;
    *) args+=("$a") ;;
  esac
done

CACHE=${FERROCSP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferrocsp}
VENV="$root/.venv-ft"
JOBS=${JOBS:-$(nproc)}

# --- 1. CPython 3.14t ------------------------------------------------------------------------
# Debian's build dependencies of python3.14 that matter for the modules the suite uses
# (ssl, ctypes, sqlite3, lzma, bz2, zlib, zstd, readline, uuid, dbm); tk and bluetooth left out.
BUILD_DEPS=(build-essential pkg-config dpkg-dev xz-utils libssl-dev zlib1g-dev libbz2-dev
  liblzma-dev libzstd-dev libffi-dev libsqlite3-dev libreadline-dev libncurses-dev libgdbm-dev
  uuid-dev libexpat1-dev)
# Every suite that may carry python3.14's source; each is tried, newest version first.
SUITES=(trixie forky sid experimental)
# 3.14 is what the suite targets. 3.13 (trixie's, also free-threading capable) is the fallback
# only where the archive this machine reaches has no 3.14 source files to hand out; the run
# then says so loudly (FERROCSP_FT_STRICT=1 makes that an error instead).
MINORS=(3.14 3.13)

prefix_of() { echo "$CACHE/cpython-${1}t"; }
python_of() { echo "$(prefix_of "$1")/bin/python${1}t"; }
have_python() {  # a cached free-threaded build with the modules the suite needs
  local py
  py=$(python_of "$1")
  [ -x "$py" ] && "$py" -c 'import sys, ssl, ctypes, sqlite3, lzma, bz2, zlib; sys.exit(sys._is_gil_enabled())' 2>/dev/null
}

install_build_deps() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    local missing=()
    for p in "${BUILD_DEPS[@]}"; do
      dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
      say "apt-get install ${missing[*]}"
      export DEBIAN_FRONTEND=noninteractive
      apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 \
             && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } \
        || die "apt-get install ${missing[*]} failed"
    fi
  else
    say "not root: assuming the build dependencies are installed (${BUILD_DEPS[*]})"
  fi
  command -v apt-get >/dev/null || die "apt-get not found: this script fetches Debian's python3.x source"
}

# The machine's own Debian mirror (its apt sources), deb.debian.org where none is named there.
debian_mirror() {
  local u
  u=$(grep -hsoE '^(URIs:[[:space:]]*|deb(-src)?[[:space:]]+(\[[^]]*\][[:space:]]+)?)[a-z]+://[^[:space:]]+/debian/?([[:space:]]|$)' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
      | grep -oE '[a-z]+://[^[:space:]]+' | head -n 1)
  echo "${u:-http://deb.debian.org/debian}" | sed 's:/*$::'
}
MIRROR=${FERROCSP_DEBIAN_MIRROR:-$(debian_mirror)}
APT="$CACHE/src/apt"
# Every path apt writes or reads for these sources is private to $APT; nothing under /etc
# changes, and the system's own package lists are left as they were.
AOPTS=(-o "Dir::Etc::SourceList=$APT/sources.list" -o "Dir::Etc::SourceParts=$APT/none"
  -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache::Archives=$APT/archives"
  -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")
apt_lists_ready=0
apt_lists() {
  [ "$apt_lists_ready" = 1 ] && return 0
  mkdir -p "$APT/lists/partial" "$APT/archives/partial"
  : >"$APT/sources.list"
  for s in "${SUITES[@]}"; do
    echo "deb-src $MIRROR $s main" >>"$APT/sources.list"
  done
  say "apt-get update (deb-src of ${SUITES[*]} from $MIRROR, private lists in $APT)" >&2
  apt-get "${AOPTS[@]}" update -qq >/dev/null || die "apt-get update of the deb-src lists failed"
  apt_lists_ready=1
}

# Source records of python$MINOR in the private Sources indices, newest first, one a line:
# "VERSION DIRECTORY DSC DSC_SHA256 SUITES" (apt has checked the indices' signatures).
source_records() {
  local minor=$1
  apt-cache "${AOPTS[@]}" showsrc "python$minor" 2>/dev/null | awk '
    /^Version: / { v = $2 }
    /^Directory: / { d = $2 }
    /^Checksums-Sha256:/ { cs = 1; next }
    /^[^ ]/ { cs = 0 }
    cs && $3 ~ /\.dsc$/ { h = $1; f = $3 }
    /^$/ { if (v != "") print v, d, f, h; v = d = f = h = ""; cs = 0 }
    END { if (v != "") print v, d, f, h }' | sort -u | sort -k1,1Vr
}

suites_of() {  # suites_of MINOR VERSION: the suites whose index lists it
  apt-cache "${AOPTS[@]}" madison "python$1" 2>/dev/null \
    | awk -F'|' -v v="$2" '$3 ~ /Sources/ { gsub(/ /, "", $2); if ($2 == v) { split($3, a, " "); sub(/\/.*/, "", a[2]); s = s (s ? "," : "") a[2] } } END { print s }'
}

# sha256_ok FILE HEX
sha256_ok() { [ -s "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

# fetch_verified URL FILE SHA256: download with apt's own downloader, which checks the hash;
# on failure FETCH_ERR says why (apt's message: "404  Not Found", "Hash Sum mismatch", ...).
FETCH_ERR=
fetch_verified() {
  sha256_ok "$2" "$3" && return 0
  rm -f "$2"
  local out
  if out=$(/usr/lib/apt/apt-helper -o "APT::Sandbox::User=root" download-file "$1" "$2" "SHA256:$3" \
             </dev/null 2>&1) && sha256_ok "$2" "$3"; then
    return 0
  fi
  FETCH_ERR=$(printf '%s\n' "$out" | sed -n 's/^E: Failed to fetch [^ ]* *//p; /Hash Sum mismatch/p' | head -n 1)
  FETCH_ERR=${FETCH_ERR:-$(printf '%s\n' "$out" | grep -m 1 '^E:' || echo "SHA-256 differs")}
  rm -f "$2"
  return 1
}

# fetch_source MINOR: the upstream tarball of the newest python$MINOR source package whose files
# the mirror hands out, its SHA-256 checked against the .dsc, whose own SHA-256 is checked
# against the signed Sources index. Prints the tarball's path, or fails saying why per version.
# Only the .dsc and the .orig tarball are fetched (Debian's patches are not applied, see above),
# straight from the pool: `apt-get source` would also need the .debian.tar, and fails on any
# one missing file. A version the index names may be gone from the mirror, or a mirror may
# carry only the binary packages: each version of each suite is tried in turn.
fetch_source() {
  local minor=$1 work="$CACHE/src" ver dir dsc dsc_sha suites orig orig_sha
  local records
  records=$(source_records "$minor")
  if [ -z "$records" ]; then
    say "  python$minor: in none of the Sources indices of ${SUITES[*]}" >&2
    return 1
  fi
  while read -r ver dir dsc dsc_sha; do
    suites=$(suites_of "$minor" "$ver")
    if ! fetch_verified "$MIRROR/$dir/$dsc" "$work/$dsc" "$dsc_sha"; then
      say "  python$minor $ver ($suites): $MIRROR/$dir/$dsc: $FETCH_ERR" >&2
      continue
    fi
    # The .dsc's Checksums-Sha256 entry for the upstream tarball (.orig.tar.xz or .gz).
    read -r orig_sha orig < <(awk '/^Checksums-Sha256:/ { cs = 1; next } /^[^ ]/ { cs = 0 }
        cs && $3 ~ /\.orig\.tar\.(xz|gz|bz2)$/ { print $1, $3; exit }' "$work/$dsc") || true
    if [ -z "${orig:-}" ] || [[ $orig == */* ]]; then
      say "  python$minor $ver: $dsc names no upstream tarball" >&2
      continue
    fi
    say "python$minor $ver ($suites): fetching $orig" >&2
    if fetch_verified "$MIRROR/$dir/$orig" "$work/$orig" "$orig_sha"; then
      say "  $orig: SHA-256 matches $dsc" >&2
      echo "$work/$orig"
      return 0
    fi
    say "  python$minor $ver ($suites): $MIRROR/$dir/$orig: $FETCH_ERR" >&2
  done <<<"$records"
  return 1
}

build_python() {  # build_python MINOR ORIG
  local minor=$1 orig=$2 work="$CACHE/src" prefix
  prefix=$(prefix_of "$minor")
  local upver
  upver=$(basename "$orig" | sed 's/^python[0-9.]*_\(.*\)\.orig\.tar\..*/\1/')
  local srcdir="$work/cpython-$upver"
  rm -rf "$srcdir" "$work/build"
  mkdir -p "$srcdir" "$work/build"
  tar -xf "$orig" -C "$srcdir" --strip-components=1
  say "configure --disable-gil --prefix=$prefix (CPython $upver; log in $work/build.log)"
  (cd "$work/build" && "$srcdir/configure" --disable-gil --prefix="$prefix" --with-ensurepip=install \
     >"$work/build.log" 2>&1) || { tail -n 40 "$work/build.log" >&2; die "configure failed"; }
  say "make -j$JOBS && make install (takes a while; cached afterwards)"
  (cd "$work/build" && nice make -j"$JOBS" >>"$work/build.log" 2>&1 \
     && nice make install >>"$work/build.log" 2>&1) \
    || { tail -n 40 "$work/build.log" >&2; die "building CPython failed (log: $work/build.log)"; }
  have_python "$minor" || die "built, but $(python_of "$minor") does not run free-threaded with ssl/ctypes/sqlite3"
  rm -rf "$srcdir" "$work/build"
}

MINOR=
for m in "${MINORS[@]}"; do
  if have_python "$m"; then
    MINOR=$m
    say "cached: $("$(python_of "$m")" -VV 2>&1 | head -n 1)"
    break
  fi
  mkdir -p "$CACHE/src"
  install_build_deps
  apt_lists
  if orig=$(fetch_source "$m"); then
    build_python "$m" "$orig"
    MINOR=$m
    say "built: $("$(python_of "$m")" -VV 2>&1 | head -n 1)"
    break
  fi
  say "no python$m source could be downloaded from Debian's archive (${SUITES[*]})"
  [ "${FERROCSP_FT_STRICT:-0}" = 1 ] && die "FERROCSP_FT_STRICT=1: python$m is required"
done
[ -n "$MINOR" ] || die "no free-threaded CPython could be built"
[ "$MINOR" = 3.14 ] || say "WARNING: running on free-threaded CPython $MINOR, not 3.14 (see above)"
PYT=$(python_of "$MINOR")

# --- 2. The virtual environment ----------------------------------------------------------------
# What the suite needs (pyproject's dev extras less ruff and mypy: mypy's compiled dependencies
# do not build for 3.13t, and tests/test_typing.py, a check of the stubs, skips without it). pip
# takes the free-threaded (cp3XXt) wheel where one exists and builds the rest from source.
# greenlet: on 3.14t at least 3.5.4, whose changelog fixes crashes of free-threaded builds
# (critical sections held across a switch, the collector running while a greenlet is
# suspended); on 3.13t whatever has a wheel (3.2.2, without free-threading support:
# --prefer-binary, since 3.3 and later do not compile there; see the top of this file).
# uvloop is optional: where it publishes no build for this interpreter, tests/test_asyncio.py
# skips its uvloop cases and says why.
if [ "$MINOR" = 3.13 ]; then GREENLET="greenlet>=3.0"; else GREENLET="greenlet>=3.5.4"; fi
TOOLS=("$GREENLET" "maturin>=1.9.4,<2" "pytest>=8" "pytest-timeout>=2.3" "hypothesis>=6.100")
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys; sys.exit(sys._is_gil_enabled())' 2>/dev/null \
   || [ "$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" != "$MINOR" ]; then
  say "creating $(basename "$VENV") with $("$PYT" -V 2>&1) (free-threaded)"
  rm -rf "$VENV"
  "$PYT" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
tools_ok() {  # everything importable, and on 3.14t a greenlet with the fixes named above
  PYTHON_GIL=0 "$VPY" -c '
import sys, greenlet, pytest, pytest_timeout, hypothesis
v = tuple(int(x) for x in greenlet.__version__.split(".")[:3])
sys.exit(0 if sys.version_info < (3, 14) or v >= (3, 5, 4) else 1)' 2>/dev/null && [ -x "$VENV/bin/maturin" ]
}
if ! tools_ok; then
  say "pip install ${TOOLS[*]}"
  "$VPY" -m pip install --quiet --disable-pip-version-check --prefer-binary "${TOOLS[@]}"
fi
if ! "$VPY" -c 'import uvloop' 2>/dev/null; then
  if "$VPY" -m pip install --quiet --disable-pip-version-check --only-binary :all: "uvloop>=0.19" >/dev/null 2>&1; then
    say "uvloop: $("$VPY" -c 'import uvloop; print(uvloop.__version__)')"
  else
    say "uvloop: no build for free-threaded $MINOR on PyPI; its asyncio cases skip"
  fi
fi
# greenlet 3.2.2 (3.13t) does not declare that it runs without the GIL: importing it enables the
# GIL unless PYTHON_GIL=0 overrides that, as every run here does.
say "python: $("$VPY" -VV 2>&1 | head -n 1); greenlet $(PYTHON_GIL=0 "$VPY" -c 'import greenlet; print(greenlet.__version__)')"

# --- 3. ferrocsp for this interpreter -----------------------------------------------------------
# pyo3 never builds abi3 for a free-threaded interpreter (the limited API does not exist
# there), even with the workspace's abi3-py311 feature: maturin makes a cp3XXt extension,
# _native.cpython-3XXt-<platform>.so, which sits next to .venv's _native.abi3.so in
# python/ferrocsp (each interpreter loads only the file with its own suffix). A target
# directory of its own keeps both builds' artifacts cached (FERROCSP_FT_TARGET=target shares
# the abi3 build's: less to compile once, but pyo3 and the bindings rebuild at each switch).
export CARGO_TARGET_DIR=${FERROCSP_FT_TARGET:-$root/target/free-threaded}
suffix=$("$VPY" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
so="python/ferrocsp/_native$suffix"
if [ ! -f "$so" ] || [ "${FERROCSP_REBUILD:-0}" = 1 ] \
   || [ -n "$(find crates/*/src crates/*/Cargo.toml crates/*/build.rs Cargo.toml Cargo.lock pyproject.toml \
              -newer "$so" -type f 2>/dev/null | head -n 1)" ]; then
  say "maturin develop --release for $MINOR""t (log in $CARGO_TARGET_DIR/maturin.log)"
  mkdir -p "$CARGO_TARGET_DIR"
  if ! VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" nice "$VENV/bin/maturin" develop --release \
       >"$CARGO_TARGET_DIR/maturin.log" 2>&1; then
    tail -n 60 "$CARGO_TARGET_DIR/maturin.log" >&2
    die "maturin develop failed for free-threaded $MINOR"
  fi
fi
(cd /tmp && PYTHON_GIL=0 "$VPY" -W error -c '
import sys, ferrocsp, ferrocsp._native as n
assert n.__file__.endswith(sys.argv[1]), n.__file__
assert not sys._is_gil_enabled(), "importing ferrocsp re-enabled the GIL"
' "$suffix") || die "ferrocsp does not import on free-threaded $MINOR with the GIL off"
say "ferrocsp: $so (imports with the GIL disabled)"

if [ "$bench" = 1 ]; then
  say "bench/freethreaded: free-threaded $MINOR against .venv's $("$root/.venv/bin/python" -V 2>&1)"
  "$VPY" bench/freethreaded/run.py --ft "$VPY" --base "$root/.venv/bin/python"
fi
[ "$build_only" = 1 ] && exit 0

# --- 4. The suite with the GIL disabled ---------------------------------------------------------
say "pytest with PYTHON_GIL=0 (free-threaded $MINOR)"
set +e
PYTHON_GIL=0 FERROCSP_EXPECT_NO_GIL=1 "$VPY" -m pytest -q -p no:cacheprovider "${args[@]}" \
  >"$CARGO_TARGET_DIR/pytest.log" 2>&1
rc=$?
set -e
[ "$MINOR" = 3.14 ] || say "WARNING: this ran on free-threaded CPython $MINOR, not 3.14 (no 3.14 source reachable)"
# The failures and the short summary, then pytest's summary line last (full log kept).
grep -vE '^[.sxXFE]+ *(\[ *[0-9]+%\])?$' "$CARGO_TARGET_DIR/pytest.log" | tail -n 80
exit "$rc"
