//! Helpers shared by the threaded integration tests.
#![allow(dead_code)] // each test crate uses a different subset

use std::thread;
use std::time::{Duration, Instant};

/// Long enough never to expire in a correct run, short enough to turn a hang into a failure.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// How many times a repetitive test repeats its round: `n`, or a few under Miri, which runs
/// about a thousand times slower (`scripts/sanitizers.sh miri`); every path still runs there.
pub fn reps(n: u64) -> u64 {
    if cfg!(miri) {
        (n / 200).max(4)
    } else {
        n
    }
}

/// [`reps`] as a count of values.
pub fn reps_usize(n: u64) -> usize {
    usize::try_from(reps(n)).expect("a test's repetition count fits a usize")
}

/// Polls `cond` until it holds; panics after [`PATIENCE`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// Joins a test thread, failing the test if it panicked.
pub fn join<T>(h: thread::JoinHandle<T>) -> T {
    h.join().expect("test thread panicked")
}
