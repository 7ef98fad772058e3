//! A 32-bit futex word as the shared-memory protocol code sees it: the atomic operations it
//! makes on the word and the futex wake-up, behind one trait, so that the same protocol code
//! (`cell_word.rs`, `seq.rs`) runs on a segment's words in production and on model-checked
//! words in the loom models (`tests/loom_shm.rs`).
//!
//! Invariants:
//! - Production implements [`Word`] for `std::sync::atomic::AtomicU32` only, each method one
//!   atomic instruction or one `FUTEX_WAKE`: generic code over it compiles to what it was
//!   written as before (no indirection; `#[inline]`).
//! - [`ModelWord`] (under `cfg(loom)`) keeps the kernel's futex contract (futex(2): the load,
//!   the comparison and the sleep of a `FUTEX_WAIT` are atomic and totally ordered with
//!   respect to other operations on the same word): a waiter compares and sleeps while
//!   holding the word's model lock, and a wake takes that lock. So a wake-up that the
//!   protocol loses is a thread that never wakes, which loom reports as a deadlock. The model
//!   waits never time out: where production would end such a sleep only at a slice or
//!   `PEER_CHECK`, the model hangs, so a wake-up that only a timeout would deliver is found.

use std::sync::atomic::{AtomicU32, Ordering};

use super::sys;

/// The operations the protocol makes on one of its 32-bit futex words.
pub trait Word {
    /// `AtomicU32::load`.
    fn load(&self, order: Ordering) -> u32;
    /// `AtomicU32::store`.
    fn store(&self, v: u32, order: Ordering);
    /// `AtomicU32::compare_exchange`.
    fn compare_exchange(
        &self,
        current: u32,
        new: u32,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u32, u32>;
    /// `AtomicU32::fetch_add`.
    fn fetch_add(&self, v: u32, order: Ordering) -> u32;
    /// `AtomicU32::fetch_sub`.
    fn fetch_sub(&self, v: u32, order: Ordering) -> u32;
    /// Wakes every thread sleeping on the word (`FUTEX_WAKE`, all).
    fn wake_all(&self);
}

impl Word for AtomicU32 {
    #[inline]
    fn load(&self, order: Ordering) -> u32 {
        AtomicU32::load(self, order)
    }
    #[inline]
    fn store(&self, v: u32, order: Ordering) {
        AtomicU32::store(self, v, order);
    }
    #[inline]
    fn compare_exchange(
        &self,
        current: u32,
        new: u32,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u32, u32> {
        AtomicU32::compare_exchange(self, current, new, success, failure)
    }
    #[inline]
    fn fetch_add(&self, v: u32, order: Ordering) -> u32 {
        AtomicU32::fetch_add(self, v, order)
    }
    #[inline]
    fn fetch_sub(&self, v: u32, order: Ordering) -> u32 {
        AtomicU32::fetch_sub(self, v, order)
    }
    #[inline]
    fn wake_all(&self) {
        sys::futex_wake_all(self);
    }
}

#[cfg(loom)]
pub use model::ModelWord;

#[cfg(loom)]
mod model {
    use std::sync::atomic::Ordering;

    use loom::sync::atomic::AtomicU32;
    use loom::sync::{Condvar, Mutex};

    use super::Word;

    /// A futex word for the loom models: a loom atomic plus the futex's wait queue, made of
    /// loom's mutex and condition variable (module invariants).
    #[derive(Debug)]
    pub struct ModelWord {
        v: AtomicU32,
        queue: Mutex<()>,
        sleep: Condvar,
    }

    impl ModelWord {
        /// A word holding `v`.
        pub fn new(v: u32) -> Self {
            ModelWord { v: AtomicU32::new(v), queue: Mutex::new(()), sleep: Condvar::new() }
        }

        /// `FUTEX_WAIT` without a timeout: sleeps unless the word differs from `expected`,
        /// until a wake. Returns at once when it differs.
        pub fn wait(&self, expected: u32) {
            let q = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if self.v.load(Ordering::SeqCst) != expected {
                return;
            }
            drop(self.sleep.wait(q));
        }
    }

    impl Word for ModelWord {
        fn load(&self, order: Ordering) -> u32 {
            self.v.load(order)
        }
        fn store(&self, v: u32, order: Ordering) {
            self.v.store(v, order);
        }
        fn compare_exchange(
            &self,
            current: u32,
            new: u32,
            success: Ordering,
            failure: Ordering,
        ) -> Result<u32, u32> {
            self.v.compare_exchange(current, new, success, failure)
        }
        fn fetch_add(&self, v: u32, order: Ordering) -> u32 {
            self.v.fetch_add(v, order)
        }
        fn fetch_sub(&self, v: u32, order: Ordering) -> u32 {
            self.v.fetch_sub(v, order)
        }
        fn wake_all(&self) {
            let _q = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            self.sleep.notify_all();
        }
    }
}
