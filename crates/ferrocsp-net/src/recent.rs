//! `Recent`: the ids of rendezvous values this process recently handed on, and those whose
//! claim it is settling now.
//!
//! This is a cache in front of the claims (`claim.rs`), which are the authority: a re-sent
//! value whose id is here is answered `+` at once, without a claim's round trip, and a second
//! copy of a request whose claim is in flight is not claimed twice. An id forgotten here (the
//! set is bounded) or never seen here (the re-send reached another process) is settled by its
//! claim, which another reader already won: it is answered `+` without being handed on again.
//!
//! Invariants: at most `RECENT` ids are kept, the oldest forgotten first; an id is in
//! `settling` from `begin` to `end`, and `begin` refuses an id already there.

use std::collections::{HashSet, VecDeque};

/// Ids of values recently handed on here, and of values being settled (see the module doc).
#[derive(Default)]
pub(crate) struct Recent {
    set: HashSet<String>,
    order: VecDeque<String>,
    settling: HashSet<String>,
}

const RECENT: usize = 4096;

impl Recent {
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    pub(crate) fn insert(&mut self, id: String) {
        if self.set.insert(id.clone()) {
            self.order.push_back(id);
            if self.order.len() > RECENT {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    /// Starts settling `id`; false if a copy of it is being settled already.
    pub(crate) fn begin(&mut self, id: &str) -> bool {
        self.settling.insert(id.to_owned())
    }

    /// `id` is settled (handed on, taken elsewhere, or given up).
    pub(crate) fn end(&mut self, id: &str) {
        self.settling.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_ids_are_bounded() {
        let mut r = Recent::default();
        for i in 0..RECENT + 10 {
            r.insert(i.to_string());
        }
        assert!(!r.contains("0"));
        assert!(r.contains(&(RECENT + 9).to_string()));
        assert_eq!(r.set.len(), RECENT);
    }

    #[test]
    fn an_id_is_settled_by_one_copy_at_a_time() {
        let mut r = Recent::default();
        assert!(r.begin("a"));
        assert!(!r.begin("a"));
        r.end("a");
        assert!(r.begin("a"));
    }
}
