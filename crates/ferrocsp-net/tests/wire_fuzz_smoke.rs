//! The wire fuzzer's smoke run on stable, in every `cargo test`: the committed inputs
//! (`fuzz/seeds/net_wire`, and `fuzz/regressions/net_wire`: inputs of defects found in the
//! parsers) and seeded random and mutated inputs, each put through
//! `ferrocsp_net::wire::fuzz::one` (every parser of what this crate reads from the wire). Any
//! panic, or a parser accepting a non-canonical form, fails it.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use ferrocsp_net::wire::fuzz;

/// A generous bound for a loaded 2-core machine: the whole run takes well under a second.
const LIMIT: Duration = Duration::from_secs(120);
const MUTATIONS: u64 = 50_000;

/// Runs `f` on a thread, failing if it takes longer than `limit` (a hang is a failure).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).expect("finished (or panicked: see above) within the limit")
}

/// xorshift64*: a seeded sequence, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz").join(kind).join("net_wire")
}

fn committed(kind: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = dir(kind);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|f| {
            let p = f.expect("directory entry").path();
            let bytes = std::fs::read(&p).expect("readable input");
            (p, bytes)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no inputs in {}", dir.display());
    out
}

#[test]
fn committed_seeds_are_accepted() {
    within(LIMIT, || {
        for (path, input) in committed("seeds") {
            assert!(fuzz::one(&input), "{} refused", path.display());
        }
    });
}

/// The committed seeds are what `fuzz::seeds` makes now. `FERROCSP_WRITE_SEEDS=1 cargo test
/// -p ferrocsp-net --test wire_fuzz_smoke` rewrites them.
#[test]
fn committed_seeds_are_current() {
    let seeds = fuzz::seeds();
    if std::env::var_os("FERROCSP_WRITE_SEEDS").is_some() {
        std::fs::create_dir_all(dir("seeds")).expect("seed directory");
        for (i, s) in seeds.iter().enumerate() {
            std::fs::write(dir("seeds").join(format!("seed-{i:02}")), s).expect("seed written");
        }
    }
    let committed: Vec<Vec<u8>> = committed("seeds").into_iter().map(|(_, b)| b).collect();
    assert!(
        committed == seeds,
        "fuzz/seeds/net_wire differs from wire::fuzz::seeds(): rewrite it with \
         FERROCSP_WRITE_SEEDS=1"
    );
}

/// Each committed defect input runs cleanly, and is refused unless it is a valid value whose
/// defect was in what came after (the end counts at their limit: the next count overflowed).
#[test]
fn committed_defects_are_refused() {
    within(LIMIT, || {
        for (path, input) in committed("regressions") {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("").to_owned();
            let accepted = fuzz::one(&input);
            assert_eq!(accepted, name == "end-counts-at-their-limit", "{name}");
        }
    });
}

/// One mutation: a byte flipped, set to a delimiter or digit, inserted, removed, or the
/// input cut; sometimes another parser.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    const BYTES: &[u8] = b" .0123456789-_+R P$*>\xff\x00";
    let at = 1 + rng.below(input.len().max(1));
    match rng.below(6) {
        0 if at < input.len() => input[at] ^= 1 << rng.below(8),
        1 if at < input.len() => input[at] = BYTES[rng.below(BYTES.len())],
        2 => input.insert(at.min(input.len()), BYTES[rng.below(BYTES.len())]),
        3 if at < input.len() => {
            input.remove(at);
        }
        4 => input.truncate(at),
        _ => input[0] = rng.next() as u8,
    }
}

#[test]
fn mutated_and_random_inputs_never_crash() {
    let accepted = within(LIMIT, || {
        let seeds = fuzz::seeds();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut accepted = 0u64;
        for i in 0..MUTATIONS {
            let mut input: Vec<u8> = if i % 8 == 0 {
                // Plain random bytes, now and then.
                (0..1 + rng.below(80)).map(|_| rng.next() as u8).collect()
            } else {
                seeds[rng.below(seeds.len())].clone()
            };
            for _ in 0..1 + rng.below(3) {
                mutate(&mut rng, &mut input);
            }
            accepted += u64::from(fuzz::one(&input));
        }
        accepted
    });
    eprintln!("{accepted} of {MUTATIONS} inputs accepted");
    // Some mutations keep a valid form (so the accepting paths, not only refusals, ran).
    assert!(accepted > MUTATIONS / 50, "only {accepted} of {MUTATIONS} inputs were accepted");
}
