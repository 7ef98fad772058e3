//! Everything this crate reads from the wire, parsed by pure functions: KV values (capacity;
//! end counts are `counts.rs`'s, which reads them leniently for the reason its doc gives, and
//! is fuzzed here too), headers of the rendezvous protocol (value ids, hold numbers), replies to
//! writes and claims, `stats()` survey answers, tickets, and JetStream ack subjects. The
//! project's `docs/wire.md` specifies each form; this module is its executable half.
//!
//! Invariants:
//! - Every function here is pure (no I/O, no shared state) and total: any input gives a value
//!   or a [`WireError`] naming what was wrong, never a panic, and in time and memory linear in
//!   the input (nothing is allocated from a count the input states).
//! - Numbers are canonical ASCII decimals: digits only, no sign, no leading zero (except `0`
//!   itself), in range. So a value that parses formats back to the same bytes
//!   (`format_*(parse_*(x)) == x`, which the fuzz target checks), and two implementations
//!   never disagree about a value one of them accepts.
//! - What a peer names that this process then uses as a subject or a key is checked to be
//!   one safe token (ids, tickets) or a subject of the expected shape (a claim's direct
//!   subject), so a peer cannot steer a value or a request anywhere else.

use std::fmt;

pub mod fuzz;

/// Why bytes from the wire were refused (the message says which form and what was wrong).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireError {
    what: &'static str,
    why: String,
}

impl WireError {
    fn new(what: &'static str, why: impl Into<String>) -> Self {
        WireError { what, why: why.into() }
    }

    /// Which form was being parsed (for example `"end counts"`).
    pub fn what(&self) -> &'static str {
        self.what
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed {}: {}", self.what, self.why)
    }
}

impl std::error::Error for WireError {}

impl From<WireError> for crate::NetError {
    fn from(e: WireError) -> Self {
        crate::NetError::Protocol(e.to_string())
    }
}

/// The longest canonical decimal of a `u64` (`18446744073709551615`).
const U64_DIGITS: usize = 20;
/// Longest token (value id, ticket, connection prefix) a peer may name.
pub const MAX_TOKEN: usize = 64;

/// How many bytes of a refused input an error quotes.
const QUOTE: usize = 32;

fn quote(v: &[u8]) -> String {
    let shown = &v[..v.len().min(QUOTE)];
    let more = if v.len() > QUOTE { "..." } else { "" };
    format!("{:?}{more}", String::from_utf8_lossy(shown))
}

/// A canonical ASCII decimal `u64` (see the module invariants).
pub fn parse_u64(what: &'static str, v: &[u8]) -> Result<u64, WireError> {
    if v.is_empty() {
        return Err(WireError::new(what, "empty number"));
    }
    if v.len() > U64_DIGITS || !v.iter().all(u8::is_ascii_digit) {
        return Err(WireError::new(what, format!("{} is not a decimal number", quote(v))));
    }
    if v.len() > 1 && v[0] == b'0' {
        return Err(WireError::new(what, format!("{} has a leading zero", quote(v))));
    }
    let mut n: u64 = 0;
    for d in v {
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or_else(|| WireError::new(what, format!("{} is out of range", quote(v))))?;
    }
    Ok(n)
}

/// Two canonical decimals separated by one space (`"<a> <b>"`).
fn parse_pair(what: &'static str, v: &[u8]) -> Result<(u64, u64), WireError> {
    let Some(at) = v.iter().position(|&b| b == b' ') else {
        return Err(WireError::new(what, format!("{} is not two numbers", quote(v))));
    };
    Ok((parse_u64(what, &v[..at])?, parse_u64(what, &v[at + 1..])?))
}

/// Whether `t` is one safe subject/key token: 1-64 of `A-Z a-z 0-9 _ -` (`underscore`
/// allowed) or of `A-Z a-z 0-9 -`.
fn is_token(t: &[u8], underscore: bool) -> bool {
    !t.is_empty()
        && t.len() <= MAX_TOKEN
        && t.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-' || (underscore && b == b'_'))
}

// --- KV values ----------------------------------------------------------------------------

/// The largest capacity a channel may have: JetStream's `max_msgs` is a signed 64-bit number.
pub const MAX_CAPACITY: u64 = i64::MAX as u64;

/// The value of key `<name>.cap`: the channel's capacity (0: rendezvous).
pub fn parse_capacity(v: &[u8]) -> Result<usize, WireError> {
    let n = parse_u64("channel capacity", v)?;
    if n > MAX_CAPACITY {
        return Err(WireError::new("channel capacity", format!("{n} is over {MAX_CAPACITY}")));
    }
    usize::try_from(n)
        .map_err(|_| WireError::new("channel capacity", format!("{n} does not fit this machine")))
}

/// A ticket (an end travelling in a message; key `<name>.t.<ticket>`): 1-64 of
/// `A-Z a-z 0-9 -`, so it stays one KV key token.
pub fn check_ticket(t: &str) -> Result<(), WireError> {
    if is_token(t.as_bytes(), false) {
        Ok(())
    } else {
        Err(WireError::new(
            "end ticket",
            format!("{} is not 1-64 of A-Z a-z 0-9 -", quote(t.as_bytes())),
        ))
    }
}

// --- rendezvous headers and replies ---------------------------------------------------------

/// A value's id (header `Csp-Id`): 1-64 of `A-Z a-z 0-9 _ -`. Checked before this process
/// remembers it (its memory of recent ids is then bounded in bytes too).
pub fn check_id(id: &str) -> Result<(), WireError> {
    if is_token(id.as_bytes(), true) {
        Ok(())
    } else {
        Err(WireError::new(
            "value id",
            format!("{} is not 1-64 of A-Z a-z 0-9 _ -", quote(id.as_bytes())),
        ))
    }
}

/// A hold number (headers `Csp-Hold`, `Csp-Release`, and the last word of a claim's reply).
pub fn parse_hold(v: &str) -> Result<u64, WireError> {
    parse_u64("hold number", v.as_bytes())
}

/// A reader's reply to a rendezvous write or commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteReply {
    /// `+`: a read took the value (or already had it: a re-sent id).
    Taken,
    /// `-`: no read of that process waits now; wait for a `ready` notice and send again.
    Refused,
    /// `P`: the channel is poisoned.
    Poisoned,
}

/// The payload of a reply to a write or commit: exactly one of `+`, `-`, `P`.
pub fn parse_write_reply(v: &[u8]) -> Result<WriteReply, WireError> {
    match v {
        b"+" => Ok(WriteReply::Taken),
        b"-" => Ok(WriteReply::Refused),
        b"P" => Ok(WriteReply::Poisoned),
        _ => Err(WireError::new("reply to a write", format!("{} is not +, - or P", quote(v)))),
    }
}

/// A reader's reply to a claim (`Csp-Claim`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimReply {
    /// `R <subject> <hold>`: a read is held for the claimant; commit to `subject` with
    /// `Csp-Hold: <hold>`, or release it there with `Csp-Release: <hold>`.
    Held {
        /// The reader connection's direct subject for this channel.
        subject: String,
        /// The hold's number.
        hold: u64,
    },
    /// `-`: nothing to hold now.
    Refused,
    /// `P`: the channel is poisoned.
    Poisoned,
}

impl ClaimReply {
    /// The payload that says this reply.
    pub fn format(&self) -> String {
        match self {
            ClaimReply::Held { subject, hold } => format!("R {subject} {hold}"),
            ClaimReply::Refused => "-".to_owned(),
            ClaimReply::Poisoned => "P".to_owned(),
        }
    }
}

/// The payload of a reply to a claim on a channel whose direct subjects are
/// `<direct_prefix>.<connection>` (`ferrocsp.<name>.d`): the subject a hold names must be
/// one of those (a reply naming any other subject would make the claimant send its value
/// there).
pub fn parse_claim_reply(v: &[u8], direct_prefix: &str) -> Result<ClaimReply, WireError> {
    const WHAT: &str = "reply to a claim";
    match v {
        b"-" => return Ok(ClaimReply::Refused),
        b"P" => return Ok(ClaimReply::Poisoned),
        _ => {}
    }
    let Some(rest) = v.strip_prefix(b"R ") else {
        return Err(WireError::new(WHAT, format!("{} is not R, - or P", quote(v))));
    };
    let Some(at) = rest.iter().rposition(|&b| b == b' ') else {
        return Err(WireError::new(WHAT, format!("{} has no hold number", quote(v))));
    };
    let (subject, hold) = (&rest[..at], &rest[at + 1..]);
    let hold = parse_u64(WHAT, hold)?;
    let connection = subject
        .strip_prefix(direct_prefix.as_bytes())
        .and_then(|s| s.strip_prefix(b"."))
        .filter(|c| is_token(c, true));
    if connection.is_none() {
        return Err(WireError::new(
            WHAT,
            format!("{} is not a direct subject {direct_prefix}.<connection>", quote(subject)),
        ));
    }
    // Checked above: prefix (a String) + '.' + an ASCII token.
    let subject = String::from_utf8_lossy(subject).into_owned();
    Ok(ClaimReply::Held { subject, hold })
}

// --- stats() survey ---------------------------------------------------------------------------

/// One participant's answer to a `stats()` survey: `"<readers> <writers>"` waiting there.
pub fn parse_survey_answer(v: &[u8]) -> Result<(u64, u64), WireError> {
    parse_pair("survey answer", v)
}

// --- JetStream -----------------------------------------------------------------------------------

/// What a JetStream ack subject says about the message it acknowledges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckSubject {
    /// The stream's name.
    pub stream: String,
    /// The consumer's name.
    pub consumer: String,
    /// How many times this message was delivered (1 the first time).
    pub delivered: u64,
    /// The message's sequence in the stream.
    pub stream_seq: u64,
    /// The delivery's sequence in the consumer.
    pub consumer_seq: u64,
    /// When the server stored the message, ns since the Unix epoch.
    pub stored_ns: u64,
    /// Messages left for the consumer after this one.
    pub pending: u64,
}

/// The ack (reply) subject of a message JetStream delivered to a pull consumer:
/// `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>`, or the newer form
/// with a domain and an account hash before the stream (and possibly more tokens after).
pub fn parse_ack_subject(reply: &str) -> Result<AckSubject, WireError> {
    const WHAT: &str = "JetStream ack subject";
    let Some(rest) = reply.strip_prefix("$JS.ACK.") else {
        return Err(WireError::new(
            WHAT,
            format!("{} does not start $JS.ACK.", quote(reply.as_bytes())),
        ));
    };
    // At most 12 tokens are looked at: a longer subject costs no more than that.
    let mut t = [""; 12];
    let mut n = 0;
    for (slot, tok) in t.iter_mut().zip(rest.split('.')) {
        *slot = tok;
        n += 1;
    }
    let at = match n {
        7 => 0,
        n if n >= 9 => 2,
        _ => {
            return Err(WireError::new(WHAT, format!("{} has {n} tokens", quote(reply.as_bytes()))))
        }
    };
    let num = |i: usize| parse_u64(WHAT, t[at + i].as_bytes());
    let name = |i: usize| {
        let s = t[at + i];
        if s.is_empty() {
            Err(WireError::new(WHAT, "an empty stream or consumer name"))
        } else {
            Ok(s.to_owned())
        }
    };
    Ok(AckSubject {
        stream: name(0)?,
        consumer: name(1)?,
        delivered: num(2)?,
        stream_seq: num(3)?,
        consumer_seq: num(4)?,
        stored_ns: num(5)?,
        pending: num(6)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_canonical_decimals() {
        assert_eq!(parse_u64("n", b"0"), Ok(0));
        assert_eq!(parse_u64("n", b"18446744073709551615"), Ok(u64::MAX));
        for bad in
            [&b""[..], b"-1", b"+1", b"01", b"1 ", b" 1", b"18446744073709551616", b"1e3", b"\xff"]
        {
            assert!(parse_u64("n", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn capacities_fit_jetstream() {
        assert_eq!(parse_capacity(b"0"), Ok(0));
        assert_eq!(parse_capacity(b"9223372036854775807").ok(), usize::try_from(i64::MAX).ok());
        assert!(parse_capacity(b"9223372036854775808").is_err());
        assert!(parse_capacity(b"x").is_err());
    }

    #[test]
    fn tickets_are_one_key_token() {
        assert!(check_ticket("0123abcd-9").is_ok());
        for bad in ["", "a.b", "a*", "a>", "a b", "a_b", &"x".repeat(65)] {
            assert!(check_ticket(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn write_replies_are_one_byte() {
        assert_eq!(parse_write_reply(b"+"), Ok(WriteReply::Taken));
        assert_eq!(parse_write_reply(b"-"), Ok(WriteReply::Refused));
        assert_eq!(parse_write_reply(b"P"), Ok(WriteReply::Poisoned));
        for bad in [&b""[..], b"+x", b"++", b"R", b"p"] {
            assert!(parse_write_reply(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_claim_reply_names_a_direct_subject_of_the_channel() {
        let p = "ferrocsp.jobs.d";
        assert_eq!(
            parse_claim_reply(b"R ferrocsp.jobs.d.0123abcd 7", p),
            Ok(ClaimReply::Held { subject: "ferrocsp.jobs.d.0123abcd".into(), hold: 7 })
        );
        assert_eq!(parse_claim_reply(b"-", p), Ok(ClaimReply::Refused));
        assert_eq!(parse_claim_reply(b"P", p), Ok(ClaimReply::Poisoned));
        // Before, any subject was taken, and the committed value sent there: a reader (or
        // anyone answering claims) could steer a writer's value to another channel, or a
        // request to JetStream's API.
        for bad in [
            &b"R $JS.API.STREAM.DELETE.FERROCSP_jobs 7"[..],
            b"R ferrocsp.other.d.0123 7",
            b"R ferrocsp.jobs.d 7",
            b"R ferrocsp.jobs.d.a.b 7",
            b"R ferrocsp.jobs.d.* 7",
            b"R ferrocsp.jobs.d.ab",
            b"R ferrocsp.jobs.d.ab x",
            b"R  7",
            b"",
        ] {
            assert!(parse_claim_reply(bad, p).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids_are_one_bounded_token() {
        assert!(check_id("0123456789abcdef-42").is_ok());
        for bad in ["", "a b", "a.b", &"x".repeat(65)] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_hold("12"), Ok(12));
        assert!(parse_hold("-1").is_err());
    }

    #[test]
    fn survey_answers_parse_or_count_for_nothing() {
        assert_eq!(parse_survey_answer(b"3 1"), Ok((3, 1)));
        for bad in [&b""[..], b"3", b"x 1", b"1 -1", b"\xff 1", b"1 2 3"] {
            assert!(parse_survey_answer(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_store_time_is_read_from_both_ack_subject_forms() {
        let old = parse_ack_subject("$JS.ACK.S.C.1.42.7.1700000000000000000.3").expect("old");
        assert_eq!((old.stream.as_str(), old.stream_seq), ("S", 42));
        assert_eq!(old.stored_ns, 1_700_000_000_000_000_000);
        let new =
            parse_ack_subject("$JS.ACK._.HASH.S.C.2.42.7.1700000000000000001.0.tok").expect("new");
        assert_eq!((new.delivered, new.stored_ns, new.pending), (2, 1_700_000_000_000_000_001, 0));
        for bad in [
            "$JS.ACK.S.C.1.42",
            "_INBOX.x",
            "$JS.ACK.S.C.1.42.7.notanumber.3",
            "$JS.ACK..C.1.42.7.1.3",
            "$JS.ACK.S.C.1.42.7.-1.3",
        ] {
            assert!(parse_ack_subject(bad).is_err(), "{bad:?}");
        }
    }
}
