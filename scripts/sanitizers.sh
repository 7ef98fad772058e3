#!/usr/bin/env bash
# The shared-memory engine under the tools that see undefined behaviour (docs/design.md,
# "Fuzzing and sanitizers"):
#   miri  the engine's tests that Miri can run, with its default (Stacked Borrows) aliasing
#         model: the unit tests (the segment checks over heap images: attach's checks, the
#         ring walk, claim, reserve, advance, offers, ends, stats; the selection state), the
#         in-process channel and selection suites (tests/channel.rs, tests/select.rs:
#         threads, parking, timeouts, poison, retire, Alt) and the fuzzer's smoke run over
#         heap images (tests/shm_fuzz_smoke.rs). Not run there: `shm::table`'s unit tests and
#         the other tests/shm*.rs (memfd_create, mmap of a shared file, futexes between
#         processes, fork, /proc, pidfds: foreign calls Miri does not emulate), and
#         tests/loom*.rs (built only with --cfg loom). This takes long (Miri is about a
#         thousand times slower: tens of minutes on 2 cores); `miri-lib` runs only the unit
#         tests (the segment checks and the selection state, about a minute), as
#         scripts/test.sh does.
#   asan  the engine's shared-memory tests (processes, memfds, futexes, the fuzzer's smoke
#         run over heap images) built with AddressSanitizer.
# Usage: scripts/sanitizers.sh [miri|miri-lib|asan]... (default: miri and asan). Needs a nightly toolchain
# with the miri and rust-src components (miri) and rust-std (asan's runtime).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

run_miri() {
  # `--skip shm::table::tests`: the participant table lives in a memfd (see above).
  local args=(-p ferrocsp --no-fail-fast --lib)
  [ "$1" = full ] && args+=(--test channel --test select --test shm_fuzz_smoke)
  echo "[sanitizers] miri: cargo +nightly miri test ${args[*]} -- --skip shm::table::tests"
  cargo +nightly miri test "${args[@]}" -- --skip shm::table::tests
}

run_asan() {
  # Only the engine's own code is instrumented (--target keeps build scripts and the
  # standard library plain); a separate target dir keeps the normal build's artifacts.
  # One test at a time: this run looks for memory errors, and the tests' bounds on forked
  # peers were sized for uninstrumented builds. (It first ran them in parallel, and found a
  # child forked while another test's thread held the cells registry's lock blocked on it for
  # ever: fixed since, `shm/fork.rs`.)
  local target
  target=$(rustc +nightly -vV | sed -n 's/^host: //p')
  echo "[sanitizers] asan: shm tests on $target"
  RUSTFLAGS="-Zsanitizer=address" RUSTDOCFLAGS="-Zsanitizer=address" \
    CARGO_TARGET_DIR="$root/target/asan" \
    cargo +nightly test -p ferrocsp --target "$target" --lib \
    --test shm --test shm_untrusted --test shm_peer_death --test shm_memory \
    --test shm_quiet --test shm_mixed --test shm_fuzz_smoke -- --test-threads=1
}

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(miri asan)
for s in "${steps[@]}"; do
  case $s in
    miri) run_miri full ;;
    miri-lib) run_miri lib ;;
    asan) run_asan ;;
    *) echo "usage: $0 [miri|miri-lib|asan]..." >&2; exit 2 ;;
  esac
done
echo "[sanitizers] ok: ${steps[*]}"
