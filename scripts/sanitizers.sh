#!/usr/bin/env bash
# ferrocsp under the tools that see undefined behaviour, data races and memory errors
# (docs/design.md, "Fuzzing and sanitizers"; the latest results are there):
#   miri      the engine's tests that Miri can run, with its default (Stacked Borrows) aliasing
#             model: the unit tests (the segment checks over heap images: attach's checks, the
#             ring walk, claim, reserve, advance, offers, ends, stats; the selection state),
#             the in-process channel and selection suites (tests/channel.rs, tests/select.rs:
#             threads, parking, timeouts, poison, retire, Alt) and the fuzzer's smoke run over
#             heap images (tests/shm_fuzz_smoke.rs). Not run there: `shm::table`'s unit tests
#             and the other tests/shm*.rs (memfd_create, mmap of a shared file, futexes
#             between processes, fork, /proc, pidfds: foreign calls Miri does not emulate),
#             and tests/loom*.rs (built only with --cfg loom). Miri is about a thousand times
#             slower: tens of minutes on 2 cores.
#   miri-lib  only the unit tests (about 2 minutes of CPU time).
#   tsan      ThreadSanitizer: (1) the Rust tests of the engine (crates/ferrocsp: unit tests
#             and every integration test) and of crates/ferrocsp-net (unit tests, the wire
#             fuzzer's smoke run); (2) the extension (crates/ferrocsp-py) built with it and a
#             subset of the Python suite run against it (below).
#   asan      the same with AddressSanitizer (leak checking on for the Rust tests, off for
#             Python: CPython frees little at exit, every run would report it).
#   tsan-rust, tsan-py, asan-rust, asan-py   one half of tsan/asan.
#   short     what scripts/test.sh runs (a few minutes once built): miri-lib, and the engine's
#             in-process suites (unit tests, tests/channel.rs, tests/select.rs) under TSan.
#   full      miri, tsan and asan: everything above (the default).
# Usage: scripts/sanitizers.sh [miri|miri-lib|tsan|asan|tsan-rust|tsan-py|asan-rust|asan-py|short|full]...
#
# Sanitizer builds: nightly, `-Zsanitizer=...`, `-Zbuild-std` (the standard library is
# instrumented too, so its locks and atomics are seen) for the host target, in target/tsan
# and target/asan (never the normal build's target/), with the profile `sanitize` given on
# the command line below: release optimisation (the Python suite's timeouts were sized for a
# release build), debug assertions and overflow checks on, line tables for the reports.
#
# The Python half: the extension is built with cargo (not maturin, which would install into
# .venv) and staged with python/ferrocsp's sources in target/<san>/py/ferrocsp, which goes
# first on PYTHONPATH, so .venv's interpreter and test tools run it while .venv's own release
# build is left alone. CPython is not instrumented, so the sanitizer's runtime is preloaded
# (gcc's libtsan.so / libasan.so: rustc links its own runtime into executables only), with
# PYTHONMALLOC=malloc so Python objects live on the heap the sanitizer watches. Reports go to
# target/<san>/py-logs (children started by the tests report there too); any report fails
# the run. Excluded, with why:
#   - the greenlet backend (`-k "not greenlet"`, tests/test_greenlet.py and other greenlet
#     tests): greenlet switches stacks by copying them without telling the sanitizer
#     (no __tsan_switch_to_fiber / __sanitizer_start_switch_fiber annotations), so TSan mixes
#     two greenlets' shadow stacks and ASan sees a foreign stack (false reports, or crashes in
#     the runtime). The greenlet hub's cross-thread queue is checked by loom (loom_runq).
#   - the OS-process backends: every child interpreter loads the runtime, which makes them
#     too slow for the suite's bounds on 2 cores; the engine's shm tests (processes, memfds,
#     futexes) run in the Rust half instead.
# FERROCSP_SAN_PYTEST overrides the Python subset (pytest arguments, e.g. test files).
# Needs a nightly toolchain (`rustup toolchain install nightly`); the components miri and
# rust-src are added here through rustup when missing. `short` skips, saying why, without it.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

say() { printf '[sanitizers] %s\n' "$*"; }
die() { printf '[sanitizers] error: %s\n' "$*" >&2; exit 1; }

# The Python tests run in each sanitizer's half: the in-process backends (thread, asyncio) of
# the suites that drive the extension's channels, Alt, ends, poison/retire, timeouts, batches,
# shared-memory moves, networked channels (tokio threads beside Python's) and free threads.
PY_TESTS=(tests/test_channel.py tests/test_alt.py tests/test_alt_mixed.py tests/test_ends.py
  tests/test_poison_retire.py tests/test_timeout.py tests/test_asyncio.py tests/test_batch.py
  tests/test_free_threading.py tests/test_mobile.py tests/test_shm_move.py
  tests/test_net_channel.py tests/test_net_semantics.py)

have_nightly() { rustc +nightly -V >/dev/null 2>&1; }
has_src() { [ -d "$(rustc +nightly --print sysroot)/lib/rustlib/src/rust/library" ]; }

# Components this run needs, added where missing (the network is used only then).
need_components() {
  local want=() c
  for c in "$@"; do
    case $c in
      rust-src) has_src || want+=(rust-src) ;;
      miri) cargo +nightly miri --version >/dev/null 2>&1 || want+=(miri) ;;
    esac
  done
  [ ${#want[@]} -eq 0 ] && return 0
  if ! command -v rustup >/dev/null; then
    say "nightly lacks ${want[*]} and rustup is not there to add them"
    return 1
  fi
  say "rustup component add --toolchain nightly ${want[*]}"
  rustup component add --toolchain nightly "${want[@]}"
}

run_miri() {
  need_components miri rust-src || die "cannot add miri and rust-src to nightly"
  # `--skip shm::table::tests`: the participant table lives in a memfd (see above).
  local args=(-p ferrocsp --no-fail-fast --lib)
  [ "$1" = full ] && args+=(--test channel --test select --test shm_fuzz_smoke)
  say "miri: cargo +nightly miri test ${args[*]} -- --skip shm::table::tests"
  cargo +nightly miri test "${args[@]}" -- --skip shm::table::tests
}

host() { rustc +nightly -vV | sed -n 's/^host: //p'; }

# cargo +nightly with one sanitizer's flags, target dir and profile: san_cargo SAN CMD ARGS...
san_cargo() {
  local san=$1 cmd=$2
  shift 2
  need_components rust-src || die "cannot add rust-src (-Zbuild-std) to nightly"
  # `ferrocsp_sanitize`: the acquire fence of `sync::held_alone`, which TSan
  # cannot see, becomes the equivalent `Arc::get_mut` it can.
  RUSTFLAGS="-Zsanitizer=$san --cfg ferrocsp_sanitize" \
    RUSTDOCFLAGS="-Zsanitizer=$san --cfg ferrocsp_sanitize" \
    CARGO_TARGET_DIR="$(san_dir "$san")" \
    cargo +nightly "$cmd" -Zbuild-std --target "$(host)" \
    --config 'profile.sanitize.inherits="release"' \
    --config 'profile.sanitize.debug="line-tables-only"' \
    --config 'profile.sanitize.debug-assertions=true' \
    --config 'profile.sanitize.overflow-checks=true' \
    --config 'profile.sanitize.lto=false' \
    --config 'profile.sanitize.codegen-units=16' \
    --config 'profile.sanitize.strip="none"' \
    --profile sanitize "$@"
}

san_dir() { echo "$root/target/$(short_of "$1")"; }
short_of() { case $1 in thread) echo tsan ;; address) echo asan ;; esac; }

# Exports the sanitizer's options: reports go to files under LOGS (one per process: children
# forked or started by a test report there too), which the caller checks after the run.
san_options() {  # san_options SAN LOGS EXTRA...
  local san=$1 logs=$2
  shift 2
  rm -rf "$logs"
  mkdir -p "$logs"
  case $san in
    thread)
      export TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1 suppressions=$root/scripts/tsan.supp log_path=$logs/report $*"
      ;;
    address)
      export ASAN_OPTIONS="detect_stack_use_after_return=1 check_initialization_order=1 strict_string_checks=1 log_path=$logs/report $*"
      ;;
  esac
}

# Fails the run if any process wrote a report.
no_reports() {  # no_reports WHAT LOGS
  if compgen -G "$2/report*" >/dev/null; then
    cat "$2"/report* >&2
    die "$1: the sanitizer reported (above; the files are in $2)"
  fi
}

# The Rust half. The engine's shm tests fork peers and wait for them with bounds sized for
# uninstrumented builds, so they run one test at a time (TSan's die_after_fork=0: the forked
# children of these tests run engine code in a multi-threaded test process's child, which
# TSan otherwise refuses at once).
run_rust() {  # run_rust SAN [short]
  local san=$1 mode=${2:-full} name
  name=$(short_of "$san")
  local engine=(-p ferrocsp --lib --test channel --test select)
  [ "$mode" = full ] && engine+=(--test shm --test shm_untrusted --test shm_peer_death
    --test shm_memory --test shm_quiet --test shm_mixed --test shm_fuzz_smoke --test shm_fork
    --test shm_bigalt --test shm_remote)
  rust_tests "$san" "$name-rust ($mode), the engine" "${engine[@]}"
  [ "$mode" = full ] && rust_tests "$san" "$name-rust, ferrocsp-net" \
    -p ferrocsp-net --lib --test wire_fuzz_smoke
  return 0
}

rust_tests() {  # rust_tests SAN WHAT CARGO_TEST_ARGS...
  local san=$1 what=$2
  shift 2
  local logs t0=$SECONDS rc=0
  logs="$(san_dir "$san")/rust-logs"
  say "$what: cargo test $*"
  # The build first, outside the sanitizer's options (build scripts run uninstrumented).
  san_cargo "$san" test --no-run "$@"
  san_options "$san" "$logs" die_after_fork=0
  san_cargo "$san" test --no-fail-fast "$@" -- --test-threads=1 || rc=$?
  unset TSAN_OPTIONS ASAN_OPTIONS
  no_reports "$what" "$logs"
  [ $rc -eq 0 ] || die "$what: tests failed ($rc)"
  say "$what: passed in $((SECONDS - t0)) s, no report"
}

# The sanitizer's shared runtime for an uninstrumented python, from gcc.
runtime_of() {
  local lib
  case $1 in thread) lib=libtsan.so ;; address) lib=libasan.so ;; esac
  lib=$(cc -print-file-name="$lib" 2>/dev/null) || true
  [ -f "$lib" ] || die "no shared $lib from cc: on Debian apt-get install gcc (libtsan2, libasan8)"
  readlink -f "$lib"
}

run_py() {  # run_py SAN
  local san=$1 name dir stage venv_py="$root/.venv/bin/python"
  name=$(short_of "$san")
  dir=$(san_dir "$san")
  [ -x "$venv_py" ] || die ".venv is missing: scripts/setup.sh --dev first"
  say "$name-py: building the extension (crates/ferrocsp-py) into $dir"
  # FERROCSP_SAN_PY_CARGO: more cargo arguments for that build (e.g. --no-default-features,
  # without ferrocsp.net, whose async-nats/tokio stack is most of the build).
  local more=()
  [ -n "${FERROCSP_SAN_PY_CARGO:-}" ] && read -r -a more <<<"$FERROCSP_SAN_PY_CARGO"
  PYO3_PYTHON="$venv_py" san_cargo "$san" build -p ferrocsp-py --lib "${more[@]}"
  local so
  so="$dir/$(host)/sanitize/lib_native.so"
  [ -f "$so" ] || die "no $so after the build"
  # The staged package: python/ferrocsp's files linked, the instrumented module copied in.
  stage="$dir/py"
  rm -rf "$stage"
  mkdir -p "$stage/ferrocsp"
  local f
  for f in python/ferrocsp/*; do
    case $f in *.so) continue ;; esac
    ln -s "$root/$f" "$stage/ferrocsp/"
  done
  cp "$so" "$stage/ferrocsp/_native.abi3.so"
  local rt missing preload
  rt=$(runtime_of "$san")
  preload=$rt
  # Every symbol the instrumentation calls must be in this runtime (gcc's can be older than
  # rustc's LLVM); a missing one would fail at import with a less helpful message.
  missing=$(comm -23 <(nm -u "$so" | awk '/__(tsan|asan)_/ {print $2}' | sort -u) \
    <(nm -D --defined-only "$rt" | awk '{print $3}' | sort -u))
  # gcc 12's libtsan predates LLVM's calls to __tsan_memcpy/memmove/memset (the copies the
  # compiler makes itself). They mean the plain functions, which the runtime intercepts and
  # checks as accesses, so a small preloaded shim forwards them there.
  local mem="__tsan_memcpy __tsan_memmove __tsan_memset" m
  if [ -n "$missing" ] && [ -z "$(comm -23 <(tr ' ' '\n' <<<"$missing" | sort -u) \
    <(tr ' ' '\n' <<<"$mem" | sort -u))" ]; then
    printf '%s\n' '#include <string.h>' \
      'void *__tsan_memcpy(void *d, const void *s, size_t n) { return memcpy(d, s, n); }' \
      'void *__tsan_memmove(void *d, const void *s, size_t n) { return memmove(d, s, n); }' \
      'void *__tsan_memset(void *d, int c, size_t n) { return memset(d, c, n); }' \
      >"$dir/tsan_mem_shim.c"
    cc -shared -fPIC -O1 -fno-builtin -o "$dir/tsan_mem_shim.so" "$dir/tsan_mem_shim.c"
    preload="$rt $dir/tsan_mem_shim.so"
    for m in $missing; do
      nm -D --defined-only "$dir/tsan_mem_shim.so" | grep -q " $m\$" || die "shim lacks $m"
    done
    missing=
  fi
  [ -z "$missing" ] || die "$rt lacks what rustc's instrumentation calls: $missing"
  if [ "$san" = address ]; then
    # ASan finds the real __cxa_throw when it starts; CPython does not load libstdc++, and
    # greenlet (C++, loaded later) throws inside its switches (the shared-memory asyncio
    # path's operation greenlets): without libstdc++ preloaded as well, the first throw
    # stops the run ("real___cxa_throw != 0" CHECK failed).
    local cxx
    cxx=$(cc -print-file-name=libstdc++.so.6)
    [ -f "$cxx" ] || die "no libstdc++.so.6 to preload for ASan"
    preload="$preload $cxx"
  fi
  local args=("${PY_TESTS[@]}")
  [ -n "${FERROCSP_SAN_PYTEST:-}" ] && read -r -a args <<<"$FERROCSP_SAN_PYTEST"
  local extra=()
  [ "$san" = address ] && extra=(detect_leaks=0)
  say "$name-py: LD_PRELOAD=\"$preload\" python -m pytest ${args[*]}"
  local logs="$dir/py-logs" t0=$SECONDS rc=0
  san_options "$san" "$logs" "${extra[@]}"
  LD_PRELOAD="$preload" PYTHONMALLOC=malloc PYTHONPATH="$stage:$root/scripts" \
    "$venv_py" -m pytest -q -p no:cacheprovider -p sanitizer_select --timeout 300 "${args[@]}" ||
    rc=$?
  unset TSAN_OPTIONS ASAN_OPTIONS
  no_reports "$name-py" "$logs"
  [ $rc -eq 0 ] || die "$name-py: pytest failed ($rc)"
  say "$name-py: passed in $((SECONDS - t0)) s, no report"
}

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(full)
# The short run (CI) says why it skips where it cannot run; the others fail.
if ! have_nightly; then
  [ "${steps[*]}" = short ] && { say "skipped: no nightly toolchain (rustup toolchain install nightly)"; exit 0; }
  die "no nightly toolchain (rustup toolchain install nightly)"
fi
if [ "${steps[*]}" = short ] && ! need_components miri rust-src; then
  say "skipped: nightly without the miri and rust-src components, which could not be added"
  exit 0
fi
for s in "${steps[@]}"; do
  case $s in
    miri) run_miri full ;;
    miri-lib) run_miri lib ;;
    tsan) run_rust thread && run_py thread ;;
    asan) run_rust address && run_py address ;;
    tsan-rust) run_rust thread ;;
    asan-rust) run_rust address ;;
    tsan-py) run_py thread ;;
    asan-py) run_py address ;;
    short) run_miri lib && run_rust thread short ;;
    full) run_miri full && run_rust thread && run_py thread && run_rust address && run_py address ;;
    *) echo "usage: $0 [miri|miri-lib|tsan|asan|tsan-rust|tsan-py|asan-rust|asan-py|short|full]..." >&2
      exit 2 ;;
  esac
done
say "ok: ${steps[*]}"
