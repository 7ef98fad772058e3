//! Fuzzing the wire parsers: an input is `[parser][bytes]`, the first byte choosing which
//! parser of `wire` gets the rest (modulo [`PARSERS`]). Used by the cargo-fuzz target
//! (`fuzz/fuzz_targets/net_wire.rs`) and by the smoke run every `cargo test` makes
//! (`crates/ferrocsp-net/tests/wire_fuzz_smoke.rs`).
//!
//! Invariants:
//! - Only the crate's own parsers run here (nothing re-implemented), so what passes here is
//!   what a process does with those bytes from the wire.
//! - Every input ends with the parser's value or its `WireError`, never a panic; and a value
//!   it accepts formats back to exactly the input bytes (the forms are canonical), which
//!   [`one`] asserts, so a parser that accepts two spellings of one value is a crash here.

use crate::counts::{Counts, EndCount};

use super::{
    check_id, check_ticket, parse_ack_subject, parse_capacity, parse_claim_reply, parse_hold,
    parse_survey_answer, parse_write_reply, WriteReply,
};

/// How many parsers an input's first byte chooses from.
pub const PARSERS: usize = 9;

/// The direct-subject prefix claim replies are checked against.
pub const DIRECT_PREFIX: &str = "ferrocsp.jobs.d";

/// Runs one input (see the module doc); true if the parser accepted it. Panics only if a
/// parser broke one of the module's invariants (a fuzzer's crash).
pub fn one(data: &[u8]) -> bool {
    let Some((&which, v)) = data.split_first() else { return false };
    let text = std::str::from_utf8(v).ok();
    match usize::from(which) % PARSERS {
        0 => parse_capacity(v).inspect(|c| same(v, &c.to_string())).is_ok(),
        1 => {
            // Lenient by design (counts.rs): any bytes give counts, and the counts always
            // encode to a value that reads back to them, after any change too. Accepted means
            // the input was already that canonical value.
            let c = Counts::parse(v);
            assert_eq!(Counts::parse(&c.encode()), c, "{:?}", String::from_utf8_lossy(v));
            for how in [EndCount::Made, EndCount::Retired, EndCount::Sent, EndCount::Received] {
                let mut n = c.clone();
                n.apply(how, "fuzz-holder");
                assert_eq!(Counts::parse(&n.encode()), n, "{c:?} {how:?}");
            }
            c.encode() == v
        }
        2 => text.is_some_and(|t| check_ticket(t).is_ok()),
        3 => text.is_some_and(|t| check_id(t).is_ok()),
        4 => text.and_then(|t| parse_hold(t).ok()).inspect(|h| same(v, &h.to_string())).is_some(),
        5 => parse_write_reply(v)
            .inspect(|r| {
                let b = match r {
                    WriteReply::Taken => "+",
                    WriteReply::Refused => "-",
                    WriteReply::Poisoned => "P",
                };
                same(v, b);
            })
            .is_ok(),
        6 => parse_claim_reply(v, DIRECT_PREFIX).inspect(|r| same(v, &r.format())).is_ok(),
        7 => parse_survey_answer(v).inspect(|(r, w)| same(v, &format!("{r} {w}"))).is_ok(),
        _ => text.and_then(|t| parse_ack_subject(t).ok()).is_some(),
    }
}

fn same(input: &[u8], formatted: &str) {
    assert!(
        input == formatted.as_bytes(),
        "accepted {:?} but it formats as {formatted:?}",
        String::from_utf8_lossy(input)
    );
}

/// Valid inputs of every parser, as the protocol produces them: the fuzzer's starting corpus
/// (`fuzz/seeds/net_wire`, kept equal to this by the smoke test).
pub fn seeds() -> Vec<Vec<u8>> {
    let forms: [(u8, &str); 16] = [
        (0, "0"),
        (0, "1000"),
        (1, "3 1"),
        (1, "0 0"),
        (2, "3f2a9c0d1e4b5a6978695a4b3c2d1e0f"),
        (3, "0123456789abcdef-42"),
        (4, "17"),
        (5, "+"),
        (5, "-"),
        (5, "P"),
        (6, "R ferrocsp.jobs.d.0123456789abcdef 7"),
        (6, "-"),
        (7, "2 0"),
        (8, "$JS.ACK.FERROCSP_jobs.readers.1.42.7.1700000000000000000.3"),
        (8, "$JS.ACK._.HASH.FERROCSP_jobs.readers.2.42.7.1700000000000000001.0.tok"),
        (1, "18446744073709551615 18446744073709551615"),
    ];
    forms
        .iter()
        .map(|(p, s)| {
            let mut v = vec![*p];
            v.extend_from_slice(s.as_bytes());
            v
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_is_accepted() {
        for s in seeds() {
            assert!(one(&s), "{:?}", String::from_utf8_lossy(&s));
        }
    }
}
