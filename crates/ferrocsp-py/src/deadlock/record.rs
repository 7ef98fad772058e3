//! What a participant's record holds: what a blocked operation waits on ([`Desc`]), the
//! record itself ([`Inner`]), and the lock-free [`LocalWait`] a greenlet task fills first.
//!
//! Invariants:
//! - A record changes only through `Participant::update` (which bumps `gen` and keeps the
//!   not-stuck counter in step), except re-confirmations of a shared wait (`XWait::at`), which
//!   change nothing the local double collect compares.
//! - Buffers are reused from one wait to the next: a steady state allocates nothing.

use std::sync::Arc;
use std::time::Duration;

use ferrocsp::{Select, Signal, Waker};

use crate::pythread::Value;

/// How a participant runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Thread,
    Greenlet,
    Asyncio,
    Coroutine,
}

impl Backend {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Backend::Thread => "thread",
            Backend::Greenlet => "greenlet",
            Backend::Asyncio => "asyncio",
            Backend::Coroutine => "coroutine",
        }
    }
}

/// One channel operation waited on: the channel's name, and whether it is a write.
pub(crate) type WaitOn = (String, bool);

/// What a blocked operation waits on (looked at only when it blocks; copied into the
/// participant's record, reusing the record's buffers, so a steady state allocates nothing).
#[derive(Debug)]
pub(crate) enum Desc<'a> {
    /// One read (false) or write (true) on the channel named here.
    One(&'a str, bool),
    /// An Alt: its engine operations' channel names and kinds (0 read, 1 write, 2 skip, 3
    /// timeout; `AltMap`'s), borrowed, so describing a blocked Alt allocates nothing.
    Alt(&'a [Arc<str>], &'a [u8]),
}

impl<'a> Desc<'a> {
    /// A read from the channel named `chan`.
    pub(crate) fn read(chan: &'a str) -> Self {
        Desc::One(chan, false)
    }

    /// A write to the channel named `chan`.
    pub(crate) fn write(chan: &'a str) -> Self {
        Desc::One(chan, true)
    }

    /// An Alt over the channel operations among `names`/`kinds` (parallel; skip and timeout
    /// operations are left out).
    pub(crate) fn alt(names: &'a [Arc<str>], kinds: &'a [u8]) -> Self {
        Desc::Alt(names, kinds)
    }

    /// Copies the description into `buf`, reusing its strings; returns whether it is an Alt.
    pub(super) fn fill(&self, buf: &mut Vec<WaitOn>) -> bool {
        fn put(buf: &mut Vec<WaitOn>, n: usize, name: &str, write: bool) {
            if let Some(e) = buf.get_mut(n) {
                e.0.clear();
                e.0.push_str(name);
                e.1 = write;
            } else {
                buf.push((name.to_owned(), write));
            }
        }
        match self {
            Desc::One(name, write) => {
                put(buf, 0, name, *write);
                buf.truncate(1);
                false
            }
            Desc::Alt(names, kinds) => {
                let ops = names.iter().zip(kinds.iter()).filter(|(_, &k)| k <= 1);
                let mut n = 0;
                for (name, &kind) in ops {
                    put(buf, n, name, kind == 1);
                    n += 1;
                }
                buf.truncate(n);
                true
            }
        }
    }
}

/// The record of one wait, kept in place (its buffers are reused by the next wait).
#[derive(Default)]
pub(super) struct Blocked {
    /// Whether the owner is blocked now (the other fields describe the wait only then).
    pub(super) on: bool,
    pub(super) waits: Vec<WaitOn>,
    pub(super) alt: bool,
    pub(super) timeout: bool,
    /// The selection cell and its waker: cleared when the wait ends (they may hold the owner's
    /// task, which holds this record).
    pub(super) signal: Option<Arc<Signal>>,
    pub(super) waker: Option<Waker>,
    pub(super) since: Stamp,
}

/// A coarse monotonic time (a few ms of resolution, a fraction of the cost of `Instant::now`):
/// enough to say how long a wait has lasted.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Stamp(pub(super) Duration);

impl Stamp {
    pub(super) fn now() -> Self {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid timespec to write; CLOCK_MONOTONIC_COARSE exists on Linux
        // (on failure `ts` stays zero, which only makes a duration read as longer).
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
        let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
        let nanos = u32::try_from(ts.tv_nsec).unwrap_or(0);
        Stamp(Duration::new(secs, nanos))
    }

    pub(super) fn secs_since(self, now: Stamp) -> f64 {
        now.0.saturating_sub(self.0).as_secs_f64()
    }
}

#[derive(Default)]
pub(super) struct Inner {
    pub(super) name: Option<String>,
    pub(super) blocked: Blocked,

    pub(super) join_depth: u32,
    pub(super) join_since: Option<Stamp>,
    pub(super) io_depth: u32,
    /// A wait on channels shared with OS processes or networked (`_shared_wait`; the flag:
    /// networked), and since when: what `csp.dump()` and reports show. By itself never
    /// stuck: only a confirmed `xwait` makes a shared wait count (`cross.rs`).
    pub(super) shared: Option<(Vec<WaitOn>, Stamp, bool)>,
    /// A thread's wait on shared channels with no deadline, in a process of an OS-process
    /// network (`cross::SharedSleep`).
    pub(super) xwait: Option<XWait>,
    /// Set when a network-wide verdict aborts the `xwait`: the report to raise.
    pub(super) xabort: Option<String>,
    /// Incremented on every change of the record (the watchdog's double collect compares it).
    pub(super) gen: u64,
    /// Whether this participant counts as stuck in `NOT_STUCK` (kept in step by `update`).
    pub(super) stuck: bool,
    /// Set by the watchdog: the report to raise as `Deadlock`.
    pub(super) deadlock: Option<String>,
    pub(super) removed: bool,
}

impl Inner {
    pub(super) fn is_stuck(&self) -> bool {
        self.join_depth > 0
            || (self.io_depth == 0
                && ((self.blocked.on && !self.blocked.timeout)
                    || self.xwait.as_ref().is_some_and(|x| x.confirmed)))
    }
}

/// A shared wait as deadlock detection across OS processes sees it (`cross.rs`).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct XWait {
    /// Whether a sleep slice ended with the operation still waiting: only then is it stuck.
    pub(super) confirmed: bool,
    /// The table epoch read before the latest such slice began: the wait was still waiting
    /// after the table stood at this epoch.
    pub(super) at: u64,
}

/// A wait recorded by its owner without a lock or a shared atomic, published into the
/// participant's record later: greenlet tasks record here, and their scheduler's hub publishes
/// the waits when it runs out of work (only then can they matter: while the hub runs a task,
/// that task is a running participant). Lives on one thread (see `sched::SchedCell`). Its
/// `clear` and `publish`, which touch the participant, are in `participant.rs`.
#[derive(Default)]
pub(crate) struct LocalWait {
    pub(super) on: bool,
    pub(super) published: bool,
    /// Whether the owner is in its scheduler's list of waits to publish.
    pub(crate) listed: bool,
    pub(super) waits: Vec<WaitOn>,
    pub(super) alt: bool,
    pub(super) timeout: bool,
    pub(super) signal: Option<Arc<Signal>>,
    pub(super) since: Stamp,
}

impl LocalWait {
    /// Records that the owner blocks in `sel` (registered and pending).
    pub(crate) fn record(&mut self, desc: &Desc<'_>, sel: &Select<Value>) {
        self.alt = desc.fill(&mut self.waits);
        self.timeout = sel.wake_deadline().is_some();
        self.signal = sel.signal();
        self.since = Stamp::now();
        self.on = true;
    }
}
