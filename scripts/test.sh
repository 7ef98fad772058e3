#!/usr/bin/env bash
# Run every check ferrocsp has, stopping at the first failure and naming the step.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k alt -x`.
# The last line printed is pytest's summary, so pytest runs last.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

"$root/scripts/setup.sh" --dev

VENV="$root/.venv"
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

step() {
  local name=$1
  shift
  printf '[test] %s\n' "$name"
  if ! "$@"; then
    printf '[test] FAILED at step: %s\n' "$name" >&2
    exit 1
  fi
}

# Python paths that ruff checks (git does not keep empty directories, so skip absent ones).
py_paths=()
for d in python tests bench examples; do [ -d "$d" ] && py_paths+=("$d"); done

no_pyo3_in_engine() {
  # The engine must not depend on Python at all (DESIGN.md, STYLE.md): check every target
  # and every dependency kind, loom's cfg target included.
  local tree
  tree=$(cargo tree -p ferrocsp --target all -e normal,build,dev --prefix none) || return 1
  if grep -qiE '^pyo3' <<<"$tree"; then
    echo "crates/ferrocsp depends on pyo3:" >&2
    cargo tree -p ferrocsp --target all -i pyo3 >&2 || true
    return 1
  fi
}

# crates/ferrocsp-py is a cdylib built with pyo3's (deprecated) extension-module feature,
# which leaves libpython unlinked. Its test executable still links as long as no Rust test
# there calls into Python (the linker drops the unused code); a test that does fails with
# undefined Py* symbols. If that is ever needed, drop "extension-module" from the workspace's
# pyo3 features (maturin >= 1.9.4 sets PYO3_BUILD_EXTENSION_MODULE itself), rather than
# splitting this into `cargo test -p ferrocsp` + `cargo build -p ferrocsp-py`.

step "cargo fmt --check" cargo fmt --all -- --check
# rust-version against every locked dependency (clippy's incompatible_msrv lint, below,
# checks our own code's std APIs against it).
step "msrv (rust-version against Cargo.lock)" "$root/scripts/msrv.sh"
# The engine crate packages for crates.io (README, licenses, metadata).
step "cargo package -p ferrocsp" cargo package -p ferrocsp --locked --allow-dirty --quiet
step "engine has no pyo3 dependency" no_pyo3_in_engine
step "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
step "cargo test" cargo test --workspace
# Peers SIGKILLed at each named point of the shared-memory protocol and at random instants,
# with exact accounting (the quick run; FERROCSP_SLOW=1 for the 10^3-trial one). The points
# exist only in this feature's build, so it is linted here too.
step "shm fault injection (clippy)" \
  cargo clippy -p ferrocsp --all-targets --features fault-injection -- -D warnings
step "shm fault injection" cargo test -p ferrocsp --features fault-injection --test shm_faults
# loom needs --cfg loom for every crate; a separate target dir keeps it from invalidating
# the normal build artifacts. Release speed, but with debug assertions on, so the channel
# invariants (State::check) are asserted in every explored interleaving. The models: the
# in-process engine (loom, loom_linked), the shared-memory protocol's cell word and change
# counter handshake over model futex words (loom_shm), the greenlet hub's cross-thread run
# queue (loom_runq), the watchdog's abort and asyncio's cancel against a completion
# (loom_abort). Each model's preemption bound is 3 (seconds in all); FERROCSP_SLOW=1 raises
# it to 5 (docs/design.md, "How it is checked", has the times of both).
loom_bound=${LOOM_MAX_PREEMPTIONS:-}
[ -z "$loom_bound" ] && [ "${FERROCSP_SLOW:-0}" = 1 ] && loom_bound=5
step "loom models" env RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR="$root/target/loom" \
  CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true ${loom_bound:+LOOM_MAX_PREEMPTIONS=$loom_bound} \
  cargo test -p ferrocsp --release --test loom --test loom_linked --test loom_shm \
  --test loom_runq --test loom_abort
# The fuzzers' smoke runs on stable are crates/ferrocsp/tests/shm_fuzz_smoke.rs and
# crates/ferrocsp-net/tests/wire_fuzz_smoke.rs (in `cargo test` above). Where a nightly
# toolchain has the tools, also real fuzzing (30 s of the segment, 15 s of the net wire
# parsers) and the Miri subset (docs/design.md, "Fuzzing and sanitizers"); their absence is
# said, never a failure.
nightly_has() {
  case $1 in
    fuzz) cargo +nightly fuzz --version >/dev/null 2>&1 ;;
  esac
}
fuzz_smoke() {  # fuzz_smoke TARGET SECONDS MAX_LEN
  # New inputs go to a scratch corpus, never into the committed seeds.
  local scratch rc=0
  scratch=$(mktemp -d)
  cargo +nightly fuzz run "$1" "$scratch" "fuzz/seeds/$1" "fuzz/regressions/$1" \
    -- -max_total_time="$2" -max_len="$3" -timeout=10 -print_final_stats=1 || rc=$?
  rm -rf "$scratch"
  return $rc
}
if nightly_has fuzz; then
  step "fuzz smoke run (cargo +nightly fuzz segment, 30 s)" fuzz_smoke segment 30 20000
  step "fuzz smoke run (cargo +nightly fuzz net_wire, 15 s)" fuzz_smoke net_wire 15 512
else
  echo "[test] skipped: fuzz smoke run (needs cargo +nightly and cargo-fuzz)"
fi
# The sanitizers' short run: Miri over the engine's unit tests, and the engine's in-process
# suites under ThreadSanitizer (a few minutes); it says why it skips without nightly.
# `scripts/sanitizers.sh` (full) runs everything: Miri, TSan and ASan over the Rust tests and
# over a subset of this suite with the extension built with them.
step "sanitizers (short: Miri unit tests, TSan engine suites)" "$root/scripts/sanitizers.sh" short
step "ruff check" "$VENV/bin/ruff" check "${py_paths[@]}"
step "ruff format --check" "$VENV/bin/ruff" format --check "${py_paths[@]}"
step "mypy --strict" "$VENV/bin/python" -m mypy --strict python/ferrocsp
allow=()
[ -f scripts/stubtest-allowlist.txt ] && allow=(--allowlist scripts/stubtest-allowlist.txt)
step "stubtest ferrocsp._native" "$VENV/bin/python" -m mypy.stubtest ferrocsp._native "${allow[@]}"

# The documentation site: warnings (a broken link, an unknown API name) are errors.
step "mkdocs build --strict" "$VENV/bin/mkdocs" build --strict --quiet --site-dir "$root/site"

# The soak's short run (docs/soak.md): 60 s of mixed traffic on every backend and transport,
# with SIGKILLs and Ctrl-Cs, every value accounted for, resource curves flat; a fixed seed
# keeps the plan of rounds the same from run to run. `scripts/soak.sh SECONDS` is the full one.
step "soak (short, 60 s)" env SOAK_OUT="$root/target/soak-ci" "$root/scripts/soak.sh" 60 --seed 21

printf '[test] pytest\n'
exec "$VENV/bin/python" -m pytest tests "$@"
