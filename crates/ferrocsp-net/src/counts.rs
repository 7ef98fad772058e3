//! The end counts of a channel, as stored in its `<name>.w` / `<name>.r` key: how many ends of
//! that kind were ever made, and who holds the live ones.
//!
//! Value (ASCII, space separated): `<made> <transit> <holder>:<n> <holder>:<n> ...`
//! - `made`: ends of the kind made so far (never lowered);
//! - `transit`: live ends held by no connection's lease: ends travelling in a message (counted
//!   by the sender, `Sent`, until the receiver takes them, `Received`) and ends shared with
//!   `backend="os"` processes (`Crossed`, retired by whichever copy claims their ticket);
//! - `<holder>:<n>`: `n` live ends held by the connection whose id is `holder` (its random
//!   id prefix), kept alive by that connection's lease (`lease.rs`); dropped as a whole when
//!   the lease expires.
//!
//! A value of an earlier version (`<made> <alive>`) reads as `alive` ends in transit: they
//! keep counting, as they did.
//!
//! Invariants:
//! - The value comes from the server, written by any participant: it is parsed without
//!   trusting it (a token that does not parse is skipped, at most `MAX_HOLDERS` holders are
//!   kept, counts saturate), so a malformed value gives some counts, never a failure or a
//!   hang.
//! - All ends of the kind retired = `made > 0 && alive == 0`, alive = transit + every
//!   holder's count.

use std::collections::BTreeMap;

use bytes::Bytes;

/// At most this many holders are read from one value (a bound on work and memory).
const MAX_HOLDERS: usize = 4096;

/// What happens to one end, for its count (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndCount {
    /// This connection made an end and holds it (`reader()`/`writer()`).
    Made,
    /// This connection retired an end it held (or one of it was dropped).
    Retired,
    /// This connection sends an end in a message: made now, on the receiver's behalf, and in
    /// transit until received.
    Sent,
    /// An end in transit is gone: its message was not sent, or a crossed end was retired.
    Unsent,
    /// This connection received an end sent to it (claimed its ticket): it now holds it.
    Received,
    /// An end this connection holds is shared with another OS process from now on: it stays
    /// counted in transit (no lease) until one copy retires it.
    Crossed,
}

/// One end-count key's value (see the module doc).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) made: u64,
    pub(crate) transit: u64,
    pub(crate) held: BTreeMap<String, u64>,
}

/// A holder id: one KV key token (it also names the holder's lease key).
pub(crate) fn valid_holder(h: &str) -> bool {
    !h.is_empty() && h.len() <= 64 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl Counts {
    pub(crate) fn parse(v: &[u8]) -> Counts {
        // Token by token: a bad byte spoils only the token it is in.
        let s = String::from_utf8_lossy(v);
        let mut it = s.split(' ');
        let mut num = || it.next().and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        let (made, transit) = (num(), num());
        let mut held = BTreeMap::new();
        for tok in s.split(' ').skip(2) {
            if held.len() >= MAX_HOLDERS {
                break;
            }
            let Some((h, n)) = tok.split_once(':') else { continue };
            let Ok(n) = n.parse::<u64>() else { continue };
            if n == 0 || !valid_holder(h) {
                continue;
            }
            let e: &mut u64 = held.entry(h.to_owned()).or_default();
            *e = e.saturating_add(n);
        }
        Counts { made, transit, held }
    }

    pub(crate) fn encode(&self) -> Bytes {
        let mut s = format!("{} {}", self.made, self.transit);
        for (h, n) in self.held.iter().filter(|(_, n)| **n > 0) {
            s.push_str(&format!(" {h}:{n}"));
        }
        Bytes::from(s)
    }

    /// Live ends: in transit and held.
    pub(crate) fn alive(&self) -> u64 {
        self.held.values().fold(self.transit, |a, n| a.saturating_add(*n))
    }

    /// Every end made so far is gone.
    pub(crate) fn all_retired(&self) -> bool {
        self.made > 0 && self.alive() == 0
    }

    fn take_mine(&mut self, me: &str) -> bool {
        match self.held.get_mut(me) {
            Some(n) if *n > 1 => {
                *n -= 1;
                true
            }
            Some(_) => {
                self.held.remove(me);
                true
            }
            // This connection's ends were dropped with its lease (it stalled for longer than
            // the lease): nothing of it is left to retire.
            None => false,
        }
    }

    fn give_mine(&mut self, me: &str) {
        let n = self.held.entry(me.to_owned()).or_default();
        *n = n.saturating_add(1);
    }

    /// Applies `how` for connection `me`.
    pub(crate) fn apply(&mut self, how: EndCount, me: &str) {
        match how {
            EndCount::Made => {
                self.made = self.made.saturating_add(1);
                self.give_mine(me);
            }
            EndCount::Retired => {
                self.take_mine(me);
            }
            EndCount::Sent => {
                self.made = self.made.saturating_add(1);
                self.transit = self.transit.saturating_add(1);
            }
            EndCount::Unsent => self.transit = self.transit.saturating_sub(1),
            EndCount::Received => {
                self.transit = self.transit.saturating_sub(1);
                self.give_mine(me);
            }
            EndCount::Crossed => {
                if self.take_mine(me) {
                    self.transit = self.transit.saturating_add(1);
                }
            }
        }
    }

    /// Drops the ends of `holders` (their leases expired); true if any were there.
    pub(crate) fn drop_holders<'a>(&mut self, holders: impl IntoIterator<Item = &'a str>) -> bool {
        let mut any = false;
        for h in holders {
            any |= self.held.remove(h).is_some();
        }
        any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_round_trip_and_follow_their_ends() {
        let mut c = Counts::default();
        c.apply(EndCount::Made, "a");
        c.apply(EndCount::Made, "b");
        c.apply(EndCount::Sent, "a");
        assert_eq!(&c.encode()[..], b"3 1 a:1 b:1");
        assert_eq!(Counts::parse(&c.encode()), c);
        c.apply(EndCount::Received, "b");
        c.apply(EndCount::Crossed, "a");
        assert_eq!(&c.encode()[..], b"3 1 b:2");
        c.apply(EndCount::Unsent, "x");
        assert!(c.drop_holders(["b"]));
        assert!(c.all_retired());
        // Retiring what this connection no longer holds (its lease expired) changes nothing.
        c.apply(EndCount::Retired, "a");
        c.apply(EndCount::Crossed, "a");
        assert_eq!(&c.encode()[..], b"3 0");
    }

    #[test]
    fn untrusted_values_give_counts_never_failures() {
        assert_eq!(Counts::parse(b""), Counts::default());
        // An earlier version's "made alive": the live ends count, in transit.
        let old = Counts::parse(b"3 1");
        assert_eq!((old.made, old.alive(), old.all_retired()), (3, 1, false));
        let bad = Counts::parse(b"x 2 a:1 :3 b: c:x d.e:4 f:0 a:18446744073709551615 \xff");
        assert_eq!(bad.made, 0);
        assert_eq!(bad.alive(), u64::MAX);
        assert_eq!(bad.held.keys().collect::<Vec<_>>(), ["a"]);
        let many: String = (0..MAX_HOLDERS + 10).map(|i| format!(" h{i}:1")).collect();
        assert_eq!(Counts::parse(format!("1 0{many}").as_bytes()).held.len(), MAX_HOLDERS);
    }
}
