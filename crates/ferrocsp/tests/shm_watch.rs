//! Cooperative waits on shared channels: sleepers that register with the process's futex
//! watchers instead of sleeping on the words themselves (what a greenlet or an asyncio task
//! does), here simulated by threads that park until their `Waker` unparks them.
#![cfg(target_os = "linux")]

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrocsp::shm::{select, watch, watcher_threads, SelOp, Selected, ShmChannel, Sleeper, Wait};
use ferrocsp::{Error, Waker};

/// Parks the calling thread until the watcher wakes it (a stand-in for a scheduler switch):
/// only the watcher's wake-up ends the sleep, so these tests fail if it never comes.
struct Parker {
    sleeps: usize,
}

struct Flag {
    set: AtomicBool,
    thread: std::thread::Thread,
}

impl ferrocsp::Wake for Flag {
    fn wake(&self) {
        self.set.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

impl Sleeper for Parker {
    fn sleep(&mut self, words: &[&AtomicU32], seen: &[u32], until: Option<Instant>) -> bool {
        self.sleeps += 1;
        let flag = Arc::new(Flag { set: AtomicBool::new(false), thread: std::thread::current() });
        let w = watch(words, seen, until, Waker::Custom(flag.clone())).expect("watch");
        let give_up = Instant::now() + Duration::from_secs(5);
        while !flag.set.load(Ordering::Acquire) {
            assert!(Instant::now() < give_up, "the watcher never woke us");
            std::thread::park_timeout(Duration::from_millis(100));
        }
        drop(w);
        false
    }
}

fn coop<T>(f: impl FnOnce(&mut Wait<'_>) -> T, deadline: Option<Instant>) -> (T, usize) {
    let mut p = Parker { sleeps: 0 };
    let mut never = || false;
    let r = f(&mut Wait {
        deadline,
        nowait: false,
        slice: None,
        interrupted: &mut never,
        sleeper: Some(&mut p),
    });
    (r, p.sleeps)
}

fn fork(f: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: the child only runs `f` (engine calls with thread sleeps) and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let code = f();
        // SAFETY: leave the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    pid
}

fn wait(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: pid is our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    status
}

fn soon() -> Option<Instant> {
    Some(Instant::now() + Duration::from_secs(20))
}

/// Many cooperative rendezvous writers wait for their entries to be taken; each would sleep
/// on its own entry's word as a thread. Watching `seq` instead, they need one watcher slot
/// between them, and every value still arrives exactly once.
#[test]
fn many_cooperative_rendezvous_writers_share_one_watched_word() {
    const N: u32 = 64;
    let ch = Arc::new(ShmChannel::create(0, 1 << 20).expect("create"));
    let writers: Vec<_> = (0..N)
        .map(|i| {
            let ch = Arc::clone(&ch);
            std::thread::spawn(move || {
                let (r, sleeps) = coop(
                    |w| {
                        let mut slot = ch.begin_write(4, w)?;
                        slot.buf().copy_from_slice(&i.to_le_bytes());
                        slot.commit(w)
                    },
                    soon(),
                );
                r.expect("write");
                sleeps
            })
        })
        .collect();
    // Let them all block before the reader comes.
    let t0 = Instant::now();
    while ch.stats().expect("stats").writers_waiting < N as usize {
        assert!(t0.elapsed() < Duration::from_secs(20), "writers did not all block");
        std::thread::sleep(Duration::from_millis(2));
    }
    let reader_ch = Arc::clone(&ch);
    let pid = fork(move || {
        let mut seen = vec![false; N as usize];
        for _ in 0..N {
            let Ok(slot) = reader_ch.begin_read(&mut Wait::until(soon())) else { return 1 };
            let v = u32::from_le_bytes(slot.buf().try_into().unwrap_or([0xff; 4]));
            if slot.finish().is_err() || v >= N || std::mem::replace(&mut seen[v as usize], true) {
                return 2;
            }
        }
        0
    });
    let sleeps: usize = writers.into_iter().map(|t| t.join().expect("writer")).sum();
    assert_eq!(wait(pid), 0, "the reader saw every value exactly once");
    assert!(sleeps >= N as usize, "every writer slept cooperatively at least once");
    assert!(watcher_threads() <= 2, "{} watcher threads", watcher_threads());
}

/// A cooperative selection's offer taken by a plain reader in another process: the fired cell
/// moves the channel's `seq`, which is all the selection watches.
#[test]
fn cooperative_selection_wakes_when_its_offer_is_taken() {
    let a = ShmChannel::create(0, 1 << 20).expect("create");
    let b = ShmChannel::create(0, 1 << 20).expect("create");
    let fill = |out: &mut [u8]| out.copy_from_slice(b"hi");
    let pid = fork(|| {
        std::thread::sleep(Duration::from_millis(50));
        match b.begin_read(&mut Wait::until(soon())) {
            Ok(slot) if slot.buf() == b"hi" => i32::from(slot.finish().is_err()),
            _ => 1,
        }
    });
    let ops = [SelOp::read(&a), SelOp::write(&b, 2, &fill)];
    let (r, sleeps) = coop(|w| select(&ops, w), soon());
    let (i, what) = r.expect("select");
    assert_eq!(i, 1);
    assert!(matches!(what, Selected::Wrote));
    assert!(sleeps >= 1);
    assert_eq!(wait(pid), 0);
}

/// The watcher wakes a cooperative waiter at its deadline: a read times out, taking nothing.
#[test]
fn cooperative_read_times_out_at_its_deadline() {
    let ch = ShmChannel::create(1, 1 << 20).expect("create");
    let t0 = Instant::now();
    let (r, _) =
        coop(|w| ch.begin_read(w).map(drop), Some(Instant::now() + Duration::from_millis(100)));
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(100), "{took:?}");
    assert_eq!(ch.stats().expect("stats").readers_waiting, 0);
}
