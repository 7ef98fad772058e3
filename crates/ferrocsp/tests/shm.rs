//! Shared-memory channels between real forked processes.
#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use ferrocsp::shm::{EndKind, ShmChannel, Wait};
use ferrocsp::Error;

mod shm_support;

use shm_support::{fork, read_by as read, reap as wait, write_by as write};

fn soon() -> Option<Instant> {
    Some(Instant::now() + Duration::from_secs(10))
}

#[test]
fn rendezvous_between_processes() {
    let ch = ShmChannel::create(0, 1 << 20).expect("create");
    let pid = fork(|| {
        for i in 0u32..100 {
            if write(&ch, &i.to_le_bytes(), soon()).is_err() {
                return 1;
            }
        }
        0
    });
    for i in 0u32..100 {
        assert_eq!(read(&ch, soon()).expect("read"), i.to_le_bytes());
    }
    assert_eq!(wait(pid), 0);
}

#[test]
fn attach_by_proc_fd_and_buffered_fifo() {
    let ch = ShmChannel::create(3, 1 << 20).expect("create");
    let (me, fd, uuid) = (std::process::id(), ch.fd(), ch.uuid());
    let pid = fork(move || {
        let ch = ShmChannel::attach(me, fd, &uuid).expect("attach");
        for i in 0u8..10 {
            if write(&ch, &vec![i; 1000 + i as usize], soon()).is_err() {
                return 1;
            }
        }
        0
    });
    for i in 0u8..10 {
        assert_eq!(read(&ch, soon()).expect("read"), vec![i; 1000 + i as usize]);
    }
    assert_eq!(wait(pid), 0);
    assert!(ShmChannel::attach(me, 0, &uuid).is_err(), "fd 0 is not the segment");
}

#[test]
fn rendezvous_timeout_sends_nothing() {
    let ch = ShmChannel::create(0, 1 << 16).expect("create");
    let r = write(&ch, b"x", Some(Instant::now() + Duration::from_millis(20)));
    assert!(matches!(r, Err(Error::Timeout)));
    let r = ch.begin_read(&mut Wait::nowait());
    assert!(matches!(r, Err(Error::WouldBlock)));
    assert_eq!(ch.stats().expect("stats").writers_waiting, 0);
}

#[test]
fn poison_wakes_blocked_reader_in_other_process() {
    let ch = ShmChannel::create(0, 1 << 16).expect("create");
    let pid = fork(|| match read(&ch, soon()) {
        Err(Error::Poisoned) => 0,
        _ => 1,
    });
    // The child may or may not be blocked yet: poison is sticky either way.
    ch.poison().expect("poison");
    assert_eq!(wait(pid), 0);
}

#[test]
fn retire_last_writer_is_end_of_stream_after_drain() {
    let ch = ShmChannel::create(2, 1 << 16).expect("create");
    let w = ch.new_end(EndKind::Writer).expect("end");
    write(&ch, b"a", soon()).expect("write");
    ch.retire_end(w).expect("retire");
    ch.retire_end(w).expect("retire twice is a no-op");
    assert_eq!(read(&ch, soon()).expect("drain"), b"a");
    assert!(matches!(read(&ch, soon()), Err(Error::Retired)));
    assert!(ch.stats().expect("stats").retired);
}

#[test]
fn owner_died_holding_the_lock_poisons() {
    let ch = ShmChannel::create(0, 1 << 16).expect("create");
    let pid = fork(|| {
        let _ = ch.hold_lock_for_test();
        0 // exits holding the lock
    });
    assert_eq!(wait(pid), 0);
    assert!(matches!(read(&ch, soon()), Err(Error::Poisoned)));
}

#[test]
fn too_large_is_refused() {
    let ch = ShmChannel::create(0, 4096).expect("create");
    let r = ch.begin_write(1 << 20, &mut Wait::nowait());
    assert!(matches!(r, Err(Error::TooLarge { .. })));
}

// --- choice (Alt) over shared channels: conditional offers and selection cells -------------

use ferrocsp::shm::{select, SelOp, Selected};

fn fill_with(msg: &[u8]) -> impl Fn(&mut [u8]) + Sync + '_ {
    move |out: &mut [u8]| out.copy_from_slice(msg)
}

fn stats(ch: &ShmChannel) -> ferrocsp::Stats {
    ch.stats().expect("stats")
}

/// Polls `cond` (a cross-process state seen through `stats`) for up to 10 s.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

#[test]
fn output_guard_fires_to_a_plain_reader_in_another_process() {
    let ch = ShmChannel::create(0, 1 << 20).expect("create");
    let pid = fork(|| match read(&ch, soon()) {
        Ok(v) if v == b"offered" => 0,
        _ => 1,
    });
    let fill = fill_with(b"offered");
    let ops = [SelOp::write(&ch, 7, &fill)];
    let (i, what) = select(&ops, &mut Wait::until(soon())).expect("select");
    assert_eq!(i, 0);
    assert!(matches!(what, Selected::Wrote));
    assert_eq!(wait(pid), 0);
}

#[test]
fn selecting_writer_meets_selecting_reader_exactly_once() {
    // Two selections, each offering on one channel and accepting on the other: every value
    // offered and reported sent is received exactly once, none twice, none lost.
    const N: u32 = 2000;
    let x = ShmChannel::create(0, 1 << 20).expect("create");
    let y = ShmChannel::create(0, 1 << 20).expect("create");
    let run = |out: &ShmChannel, inp: &ShmChannel, tag: u32| {
        let mut sent = Vec::new();
        let mut got = Vec::new();
        let mut seq = 0u32;
        while sent.len() + got.len() < N as usize {
            let msg = (tag << 24 | seq).to_le_bytes();
            let fill = fill_with(&msg);
            let ops = [SelOp::write(out, 4, &fill), SelOp::read(inp)];
            match select(&ops, &mut Wait::until(soon())).expect("select") {
                (0, Selected::Wrote) => {
                    sent.push(u32::from_le_bytes(msg));
                    seq += 1;
                }
                (1, Selected::Read(slot)) => {
                    got.push(u32::from_le_bytes(slot.buf().try_into().expect("4 bytes")));
                    slot.finish().expect("finish");
                }
                other => panic!("unexpected {other:?}"),
            };
        }
        (sent, got)
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| run(&x, &y, 1));
        let b = s.spawn(|| run(&y, &x, 2));
        (a.join().expect("a"), b.join().expect("b"))
    });
    // Every communication pairs one sent with one received, so the sets match exactly.
    assert_eq!(a.0, b.1);
    assert_eq!(b.0, a.1);
    assert_eq!(a.0.len() + a.1.len(), N as usize);
    for ch in [&x, &y] {
        let s = stats(ch);
        assert_eq!((s.readers_waiting, s.writers_waiting), (0, 0));
    }
}

#[test]
fn waiting_selection_is_counted_and_timeout_withdraws_it() {
    let ch = ShmChannel::create(0, 1 << 20).expect("create");
    let other = ShmChannel::create(0, 1 << 20).expect("create");
    std::thread::scope(|s| {
        let t = s.spawn(|| {
            let fill = fill_with(b"never");
            let ops = [SelOp::write(&ch, 5, &fill), SelOp::read(&other)];
            let dl = Some(Instant::now() + Duration::from_millis(300));
            select(&ops, &mut Wait::until(dl)).map(|(i, _)| i)
        });
        wait_for("the offer", || stats(&ch).writers_waiting == 1);
        assert_eq!(stats(&other).readers_waiting, 1);
        assert!(matches!(t.join().expect("join"), Err(Error::Timeout)));
    });
    // Nothing was sent: the offer is gone, and so is the waiting reader.
    assert_eq!(stats(&ch).writers_waiting, 0);
    assert_eq!(stats(&other).readers_waiting, 0);
    assert!(matches!(read(&ch, Some(Instant::now())), Err(Error::Timeout)));
}

#[test]
fn poison_wakes_a_waiting_selection() {
    let a = ShmChannel::create(0, 1 << 20).expect("create");
    let b = ShmChannel::create(0, 1 << 20).expect("create");
    std::thread::scope(|s| {
        let t = s.spawn(|| {
            let fill = fill_with(b"x");
            let ops = [SelOp::read(&a), SelOp::write(&b, 1, &fill)];
            select(&ops, &mut Wait::until(soon()))
                .map(|(i, w)| (i, matches!(w, Selected::Poisoned)))
        });
        wait_for("the selection", || stats(&b).writers_waiting == 1);
        b.poison().expect("poison");
        assert_eq!(t.join().expect("join").expect("select"), (1, true));
    });
    assert_eq!(stats(&a).readers_waiting, 0);
}

#[test]
fn retired_guard_is_dropped_and_all_retired_is_retired() {
    let a = ShmChannel::create(0, 1 << 20).expect("create");
    let wa = a.new_end(EndKind::Writer).expect("end");
    let ops = [SelOp::read(&a)];
    a.retire_end(wa).expect("retire");
    // With no deadline (no Timeout guard) a choice that can never fire is retired.
    assert!(matches!(select(&ops, &mut Wait::until(None)), Err(Error::Retired)));
}

#[test]
fn selector_killed_with_its_offer_registered_blocks_nobody() {
    let ch = ShmChannel::create(0, 1 << 20).expect("create");
    let inp = ShmChannel::create(0, 1 << 20).expect("create");
    let pid = fork(|| {
        let fill = fill_with(b"dead");
        let ops = [SelOp::write(&ch, 4, &fill), SelOp::read(&inp)];
        let _ = select(&ops, &mut Wait::until(None));
        1
    });
    wait_for("the child's offer", || stats(&ch).writers_waiting == 1);
    wait_for("the child's input guard", || stats(&inp).readers_waiting == 1);
    // SAFETY: our child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let status = wait(pid);
    assert!(libc::WIFSIGNALED(status));
    // The dead selection's offer and record are stale: dropped, not counted, never taken.
    assert_eq!(stats(&ch).writers_waiting, 0);
    assert_eq!(stats(&inp).readers_waiting, 0);
    assert!(matches!(
        read(&ch, Some(Instant::now() + Duration::from_millis(50))),
        Err(Error::Timeout)
    ));
    // The channel works on: a live selection's offer reaches a reader.
    std::thread::scope(|s| {
        let t = s.spawn(|| read(&ch, soon()));
        let fill = fill_with(b"live");
        let ops = [SelOp::write(&ch, 4, &fill)];
        assert_eq!(select(&ops, &mut Wait::until(soon())).expect("select").0, 0);
        assert_eq!(t.join().expect("join").expect("read"), b"live");
    });
}

#[test]
fn offers_of_a_selection_never_meet_each_other() {
    // One selection offering on a channel and accepting from it must not take its own offer.
    let ch = ShmChannel::create(0, 1 << 20).expect("create");
    let fill = fill_with(b"self");
    let ops = [SelOp::write(&ch, 4, &fill), SelOp::read(&ch)];
    let dl = Some(Instant::now() + Duration::from_millis(100));
    assert!(matches!(select(&ops, &mut Wait::until(dl)), Err(Error::Timeout)));
    assert_eq!(stats(&ch).writers_waiting, 0);
}

#[test]
fn buffered_output_guard_fires_when_there_is_room() {
    let ch = ShmChannel::create(1, 1 << 20).expect("create");
    let fill = fill_with(b"one");
    let ops = [SelOp::write(&ch, 3, &fill)];
    assert_eq!(select(&ops, &mut Wait::nowait()).expect("room").0, 0);
    assert!(matches!(select(&ops, &mut Wait::nowait()), Err(Error::WouldBlock)));
    assert_eq!(read(&ch, soon()).expect("read"), b"one");
}

#[test]
fn nowait_output_guard_fires_to_a_reader_blocked_in_read() {
    // `Alt(Output(ch, v), Skip())` with a reader waiting: the output fires, as in process.
    let ch = ShmChannel::create(0, 1 << 20).expect("create");
    std::thread::scope(|s| {
        let t = s.spawn(|| read(&ch, soon()));
        wait_for("the reader", || stats(&ch).readers_waiting == 1);
        let fill = fill_with(b"now");
        let ops = [SelOp::write(&ch, 3, &fill)];
        assert_eq!(select(&ops, &mut Wait::nowait()).expect("fires").0, 0);
        assert_eq!(t.join().expect("join").expect("read"), b"now");
    });
    // With nobody waiting, nothing fires and nothing is left behind.
    let fill = fill_with(b"later");
    let ops = [SelOp::write(&ch, 5, &fill)];
    assert!(matches!(select(&ops, &mut Wait::nowait()), Err(Error::WouldBlock)));
    assert_eq!(stats(&ch).writers_waiting, 0);
}

#[test]
fn priority_output_to_a_waiting_reader_before_a_ready_input() {
    // The output guard comes first and its reader waits: it fires although the input is
    // ready too.
    let out = ShmChannel::create(0, 1 << 20).expect("create");
    let inp = ShmChannel::create(1, 1 << 20).expect("create");
    write(&inp, b"ready", soon()).expect("buffered");
    std::thread::scope(|s| {
        let t = s.spawn(|| read(&out, soon()));
        wait_for("the reader", || stats(&out).readers_waiting == 1);
        let fill = fill_with(b"first");
        let ops = [SelOp::write(&out, 5, &fill), SelOp::read(&inp)];
        assert_eq!(select(&ops, &mut Wait::until(soon())).expect("fires").0, 0);
        assert_eq!(t.join().expect("join").expect("read"), b"first");
    });
    assert_eq!(stats(&inp).buffered, 1);
}

// ----- cooperative waits: sleepers that register with the process's futex watchers -----
// (what a greenlet or an asyncio task does), simulated by threads that park until their
// `Waker` unparks them.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use ferrocsp::shm::{watch, watcher_threads, Sleeper};
use ferrocsp::Waker;

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
    wait_for("every writer's offer", || stats(&ch).writers_waiting == N as usize);
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
    // (A writer whose entry was taken between publishing it and going to sleep never sleeps.)
    assert!(sleeps >= 1, "the writers slept cooperatively");
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
        // Read only once the selection's offer is published (it then sleeps, or is about to).
        let t0 = Instant::now();
        while b.stats().map_or(0, |s| s.writers_waiting) == 0 {
            if t0.elapsed() > Duration::from_secs(10) {
                return 3;
            }
            std::thread::yield_now();
        }
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

/// A reader that cannot attach the offering selection's cells (here: out of file
/// descriptors) used to take that for the selection's death and withdraw its offer, losing it
/// from under a live selection. Now the read fails with the OS error and the offer stays.
#[test]
fn a_reader_that_cannot_attach_an_offer_leaves_it_alone() {
    let ch = ShmChannel::create(0, 1 << 20).expect("create");
    std::thread::scope(|s| {
        let offer = s.spawn(|| {
            let fill = fill_with(b"offered");
            let ops = [SelOp::write(&ch, 7, &fill)];
            select(&ops, &mut Wait::until(soon())).map(|(i, w)| (i, matches!(w, Selected::Wrote)))
        });
        wait_for("the offer", || stats(&ch).writers_waiting == 1);
        let pid = fork(|| {
            let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: plain getrlimit/setrlimit on this (child) process.
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
            let low = libc::rlimit { rlim_cur: 3, rlim_max: lim.rlim_max };
            // SAFETY: as above; every descriptor number above 2 is now out of reach.
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) };
            let first = ch.begin_read(&mut Wait::nowait()).map(|_| ());
            // SAFETY: as above.
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
            if !matches!(first, Err(Error::Io { code: Some(libc::EMFILE), .. })) {
                return 2;
            }
            match read(&ch, soon()) {
                Ok(v) if v == b"offered" => 0,
                _ => 1,
            }
        });
        assert_eq!(wait(pid) >> 8, 0, "child: 2 = the first read did not fail with EMFILE");
        assert_eq!(offer.join().expect("selector"), Ok((0, true)));
    });
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count()
}

/// The cells segments of other processes that readers attach are cached, but the cache is
/// bounded (a descriptor and a mapping each) and drops those of dead processes first.
#[test]
fn the_cache_of_other_processes_cells_is_bounded() {
    let before = open_fds();
    for round in 0..80 {
        let ch = ShmChannel::create(0, 1 << 16).expect("create");
        let pid = fork(|| {
            let fill = fill_with(b"x");
            let ops = [SelOp::write(&ch, 1, &fill)];
            let wrote = matches!(select(&ops, &mut Wait::until(soon())), Ok((0, Selected::Wrote)));
            i32::from(!wrote)
        });
        // Reading the child's offer attaches its cells segment here.
        // Reading the child's offer attaches its cells segment here.
        assert_eq!(read(&ch, soon()).map_err(|e| (round, e)), Ok(b"x".to_vec()));
        assert_eq!(wait(pid) >> 8, 0);
    }
    let grown = open_fds().saturating_sub(before);
    assert!(grown <= 64 + 4, "{grown} more descriptors after 80 peers");
}
