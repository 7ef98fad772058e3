//! Helpers shared by the shared-memory integration tests: a whole write or read with a
//! deadline, a forked peer, a bound that turns a hang into a failure, and a seeded random
//! sequence.
#![allow(dead_code)] // each test crate uses a different subset

use std::time::{Duration, Instant};

use ferrocsp::shm::{ShmChannel, Wait};
use ferrocsp::Error;

/// Writes `msg` (reserve, fill, commit), waiting until `deadline` at most.
pub fn write_by(ch: &ShmChannel, msg: &[u8], deadline: Option<Instant>) -> Result<(), Error> {
    let mut slot = ch.begin_write(msg.len(), &mut Wait::until(deadline))?;
    slot.buf().copy_from_slice(msg);
    slot.commit(&mut Wait::until(deadline))
}

/// Reads one message (claim, copy, finish), waiting until `deadline` at most.
pub fn read_by(ch: &ShmChannel, deadline: Option<Instant>) -> Result<Vec<u8>, Error> {
    let slot = ch.begin_read(&mut Wait::until(deadline))?;
    let v = slot.buf().to_vec();
    slot.finish()?;
    Ok(v)
}

/// `Some(now + d)`: a deadline `d` from now.
pub fn after(d: Duration) -> Option<Instant> {
    Some(Instant::now() + d)
}

/// Runs `f` in a forked child, which exits with the code `f` returns.
pub fn fork(f: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: the test thread forks; the child only runs `f` and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let code = f();
        // SAFETY: leave the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// Reaps child `pid`; its wait status.
pub fn reap(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: pid is our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    status
}

/// Runs `f` on a thread and returns its result, failing the test if it takes longer than
/// `limit` (a hang becomes a failure instead of a stuck test binary).
pub fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).expect("the operation did not return in time (a hang)")
}

/// A fixed pseudo-random sequence (xorshift64*), so a failure reproduces from its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 for `n` 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}
