//! How a selection orders the operations it tries: the [`Policy`](super::Policy)'s order,
//! with the randomness it needs.
//!
//! Invariant: `fill_order` lists every operation index exactly once (a permutation), so the
//! policy changes which ready operation fires first, never whether one is tried.

use super::{Policy, Select};

pub(super) fn seed() -> u64 {
    // Distinct per selection without a global RNG: address entropy plus a counter.
    let c = crate::channel::next_id();
    let local = 0u8;
    let a = &local as *const u8 as u64;
    let mut x = c.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ a.rotate_left(17);
    if x == 0 {
        x = 0x2545_F491_4F6C_DD1D;
    }
    x
}

impl<T> Select<T> {
    fn next_random(&mut self) -> u64 {
        // xorshift64*: plenty for choosing among ready guards.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(super) fn fill_order(&mut self, policy: Policy) {
        let n = self.ops.len();
        self.order.clear();
        self.order.reserve_exact(n);
        match policy {
            Policy::Priority => self.order.extend(0..n),
            Policy::Fair => {
                let start = self.last.map_or(0, |l| (l + 1) % n.max(1));
                self.order.extend((start..n).chain(0..start));
            }
            Policy::Random => {
                self.order.extend(0..n);
                for i in (1..n).rev() {
                    let j = (self.next_random() % (i as u64 + 1)) as usize;
                    self.order.swap(i, j);
                }
            }
        }
    }
}
