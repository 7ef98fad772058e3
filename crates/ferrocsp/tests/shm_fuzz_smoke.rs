//! The fuzzer's smoke run on stable, in every `cargo test`: the committed inputs (seeds and
//! every crash the fuzzer found, `fuzz/seeds/segment`, `fuzz/regressions/segment`) and a few
//! thousand seeded mutations of segments the protocol really produces, each put through
//! `ferrocsp::shm::fuzz::segment` (attach's checks, the ring walk, claim, reserve, advance,
//! offers, ends, stats). Any panic, hang or out-of-bounds access fails it; the regression
//! tests below pin each defect the fuzzer found to the outcome it has now.

mod shm_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrocsp::shm::fuzz::{self, HDR_AT, RING_AT, STAMP};
use ferrocsp::shm::{PoisonCause, ShmChannel};
use shm_support::{within, Rng};

/// A generous bound for a loaded 2-core machine: the whole run takes about a second.
const LIMIT: Duration = Duration::from_secs(120);
const MUTATIONS: u64 = 10_000;

fn committed(kind: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz").join(kind).join("segment");
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
fn committed_seeds_attach_and_run() {
    within(LIMIT, || {
        for (path, input) in committed("seeds") {
            assert!(fuzz::segment(&input), "{} refused by attach", path.display());
        }
    });
}

/// The committed seeds are the states `fuzz::seeds` makes now: a change of the layout or of
/// the seeds shows here. `FERROCSP_WRITE_SEEDS=1 cargo test -p ferrocsp --test
/// shm_fuzz_smoke` rewrites them.
#[test]
fn committed_seeds_are_current() {
    let seeds = fuzz::seeds().expect("seeds");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/segment");
    if std::env::var_os("FERROCSP_WRITE_SEEDS").is_some() {
        for (i, s) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), s).expect("seed written");
        }
    }
    let committed: Vec<Vec<u8>> = committed("seeds").into_iter().map(|(_, b)| b).collect();
    assert!(
        committed == seeds,
        "fuzz/seeds/segment differs from fuzz::seeds(): rewrite it with FERROCSP_WRITE_SEEDS=1"
    );
}

#[test]
fn committed_crashes_run_cleanly() {
    within(LIMIT, || {
        for (_, input) in committed("regressions") {
            fuzz::segment(&input);
        }
    });
}

/// Writes `v` at byte `at` of an input (when it fits).
fn put(input: &mut [u8], at: usize, v: u64) {
    if let Some(b) = input.get_mut(at..at + 8) {
        b.copy_from_slice(&v.to_le_bytes());
    }
}

/// One mutation: a value chosen to sit on a boundary, written over a state field or an
/// entry's header; a flipped byte anywhere; new operations; the identity left raw.
fn mutate(rng: &mut Rng, input: &mut [u8]) {
    let l = ShmChannel::layout_for_tests();
    let ring = input.len().saturating_sub(RING_AT) as u64;
    let values =
        [0, 1, 8, 63, 64, 128, ring.saturating_sub(64), ring, ring + 64, u64::MAX, u64::MAX - 63];
    let v = if rng.below(4) == 0 { rng.next() } else { values[rng.below(values.len())] };
    match rng.below(6) {
        0 | 1 => put(input, HDR_AT + l.state + 8 * rng.below(l.state_len / 8), v),
        2 | 3 => {
            let entry = RING_AT + 64 * rng.below(ring as usize / 64);
            let field = [l.entry_size, l.entry_len, 16, 20][rng.below(4)];
            if field < 16 {
                put(input, entry + field, v);
            } else if let Some(b) = input.get_mut(entry + field..entry + field + 4) {
                // The state and rendezvous words: small values mean something.
                b.copy_from_slice(&((v % 10) as u32).to_le_bytes());
            }
        }
        4 => {
            let i = rng.below(input.len());
            input[i] ^= 1 << rng.below(8);
        }
        _ => {
            let i = 1 + rng.below(fuzz::N_OPS);
            input[i] = rng.next() as u8;
            if rng.below(16) == 0 {
                input[0] &= !STAMP;
            }
        }
    }
}

#[test]
fn mutated_segments_never_crash() {
    let accepted = within(LIMIT, || {
        let seeds = fuzz::seeds().expect("seeds");
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut accepted = 0;
        for _ in 0..MUTATIONS {
            let mut input = seeds[rng.below(seeds.len())].clone();
            for _ in 0..1 + rng.below(4) {
                mutate(&mut rng, &mut input);
            }
            if fuzz::segment(&input) {
                accepted += 1;
            }
        }
        accepted
    });
    eprintln!("{accepted} of {MUTATIONS} attached");
    // Most mutations keep the identity: the ring code, not only attach's refusal, ran.
    assert!(accepted > MUTATIONS / 2, "only {accepted} of {MUTATIONS} inputs were attached");
}

/// A valid input (an empty buffered channel) with `field` (a header offset) set to `v`.
fn with_field(field: usize, v: u64) -> Vec<u8> {
    let mut input = fuzz::seeds().expect("seeds").swap_remove(0);
    put(&mut input, HDR_AT + field, v);
    input
}

/// Found by the fuzzer (`regressions/segment/counter-overflow-writing`): a count of entries
/// at its limit overflowed on the next reservation (a panic in a debug build, a wrapped count
/// in a release one). Now the lock's check refuses counts the ring cannot hold.
#[test]
fn a_count_past_the_ring_poisons_as_corrupt() {
    let l = ShmChannel::layout_for_tests();
    for field in [l.buffered, l.ready, l.writing, l.offers, l.offered] {
        let ch = fuzz::attach_image(&with_field(field, u64::MAX)).expect("attached");
        fuzz::run(&ch, 0x19); // reserve and publish an offer
        fuzz::run(&ch, 0x12); // reserve a message
        assert_eq!(ch.poison_cause(), Some(PoisonCause::Corrupt), "field at {field}");
    }
}

/// Found by the smoke run's mutations: an offer's entry smaller than its own header and
/// prefix made the walk's length check subtract past zero (a panic in a debug build; in a
/// release one a wrapped room that let any length through, so the read that followed copied
/// from beyond the entry and the mapping: AddressSanitizer reports a heap-buffer-overflow
/// for `fuzz/regressions/segment/offer-smaller-than-prefix` with the old check in a
/// `cargo fuzz run -O` build). Now such an entry poisons the channel as corrupt.
#[test]
fn an_offer_smaller_than_its_prefix_poisons_as_corrupt() {
    let l = ShmChannel::layout_for_tests();
    let mut input = with_field(l.tail, 64);
    for (field, v) in [(l.ready, 1), (l.buffered, 1), (l.offers, 1)] {
        put(&mut input, HDR_AT + field, v);
    }
    put(&mut input, RING_AT + l.entry_size, 64);
    put(&mut input, RING_AT + l.entry_len, 1 << 20);
    // state READY (2), rendezvous RDV_OFFER (2): the words after size and len.
    put(&mut input, RING_AT + 16, 2 | (2 << 32));
    let ch = fuzz::attach_image(&input).expect("attached");
    fuzz::run(&ch, 0x01); // read
    assert_eq!(ch.poison_cause(), Some(PoisonCause::Corrupt));
}

/// Seen while writing the harness's end operations (not by the fuzzer, which never got the
/// chance: fixed first, this test failed before): a made-ends count at its limit overflowed
/// when ends were added (a panic in a debug build, a wrapped count in a release one, which
/// could make the channel look retired). Now the addition is checked and poisons as corrupt.
#[test]
fn an_end_count_at_its_limit_poisons_as_corrupt() {
    let l = ShmChannel::layout_for_tests();
    for op in [0x16, 0x14] {
        // op 0x16: adopt one reader end; op 0x14: make one.
        let mut input = with_field(l.reader_ends_made, 0);
        input[HDR_AT + l.reader_ends_made..][..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let ch = fuzz::attach_image(&input).expect("attached");
        fuzz::run(&ch, op);
        assert_eq!(ch.poison_cause(), Some(PoisonCause::Corrupt), "op {op:#x}");
    }
}

/// Found by the fuzzer (`regressions/segment/offered-entry-not-an-offer`): an `OFFERED` entry
/// whose kind says it is no offer was checked as a plain entry (no room for the selection's
/// cell reference), and then its cell reference read anyway: for an entry of 64 bytes at the
/// end of the ring, 16 bytes past the segment (AddressSanitizer: heap-buffer-overflow, and
/// the channel went on as if nothing were wrong). Now such an entry poisons it as corrupt.
#[test]
fn an_offered_entry_that_is_no_offer_poisons_as_corrupt() {
    let l = ShmChannel::layout_for_tests();
    for op in [0x0b, 0x01] {
        // op 0x0b: count the Alts waiting (stats); op 0x01: read.
        let mut input = with_field(l.head, 1024 - 64);
        for (field, v) in [(l.tail, 1024), (l.offered, 1), (l.offers, 1)] {
            put(&mut input, HDR_AT + field, v);
        }
        let at = RING_AT + 1024 - 64;
        put(&mut input, at + l.entry_size, 64);
        put(&mut input, at + l.entry_len, 0);
        // state OFFERED (8), rendezvous RDV_PLAIN (1).
        put(&mut input, at + 16, 8 | (1 << 32));
        let ch = fuzz::attach_image(&input).expect("attached");
        fuzz::run(&ch, op);
        assert_eq!(ch.poison_cause(), Some(PoisonCause::Corrupt), "op {op:#x}");
    }
}
