//! `Recent`: the ids of rendezvous values recently delivered in this process, so a value
//! re-sent after its acknowledgement was lost is acknowledged again instead of delivered twice.
//!
//! Invariant: at most `RECENT` ids are kept; the oldest is forgotten first.

use std::collections::{HashSet, VecDeque};

/// Ids of values recently delivered here, so a re-sent value (its acknowledgement was lost) is
/// acknowledged again instead of delivered twice.
#[derive(Default)]
pub(crate) struct Recent {
    set: HashSet<String>,
    order: VecDeque<String>,
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
}
