//! How an OS thread waits for its selection cell: a short bounded spin, then the OS.
//!
//! A kernel wake-up (futex) costs microseconds, and on a virtual machine whose idle vCPU was
//! halted, tens of microseconds: far more than a channel hand-off. A waiter that spins briefly
//! keeps its CPU awake and sees a quick counterpart without any system call. The spin is
//! bounded (`spin_budget`, default `DEFAULT_SPIN`), yields the CPU between short bursts so a
//! runnable thread on an oversubscribed machine is not starved, and never runs with the GIL
//! held (the Python bindings release it before calling `Select::park`).
//!
//! Invariant: `park_until` returns when the signal left `Waiting`, when `until` passed, or
//! spuriously; callers always re-check with `Select::resume`.

use std::time::{Duration, Instant};

use crate::signal::Signal;

/// The spin budget when `FERROCSP_SPIN_US` is not set: see `bench/commstime` for the measurement
/// behind it.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

/// The spin budget: `FERROCSP_SPIN_US` (microseconds, 0 disables spinning) or [`DEFAULT_SPIN`].
pub fn spin_budget() -> Duration {
    static BUDGET: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *BUDGET.get_or_init(|| {
        std::env::var("FERROCSP_SPIN_US")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(DEFAULT_SPIN, Duration::from_micros)
    })
}

/// Spins until `done()` is true or `budget` passes; returns the last `done()`.
///
/// Short bursts of `spin_loop` hints separated by `yield_now`, so that on an oversubscribed
/// machine a runnable thread gets the CPU. Never call it holding the GIL or a lock.
pub fn spin_until(mut done: impl FnMut() -> bool, budget: Duration) -> bool {
    if budget.is_zero() {
        return done();
    }
    let start = Instant::now();
    let mut round: u32 = 0;
    while !done() {
        round = round.wrapping_add(1);
        if round.is_multiple_of(32) {
            if start.elapsed() >= budget {
                return false;
            }
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    true
}

#[cfg(not(loom))]
pub(crate) fn park_until(signal: &Signal, until: Option<Instant>) {
    if spin_until(|| !signal.is_waiting(), spin_budget()) {
        return;
    }
    match until {
        None => std::thread::park(),
        Some(t) => {
            let now = Instant::now();
            if t > now {
                std::thread::park_timeout(t - now);
            }
        }
    }
}

#[cfg(loom)]
pub(crate) fn park_until(signal: &Signal, _until: Option<Instant>) {
    // loom has no clock (models use `abort` to stand for a timeout), and spinning would only
    // multiply the interleavings it explores.
    if signal.is_waiting() {
        loom::thread::park();
    }
}
