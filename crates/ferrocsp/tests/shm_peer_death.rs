//! A peer that dies at any instant of the protocol never hangs the survivors (issue #16).
//! Each test kills a real forked process (SIGKILL, as the OOM killer would) in one state of
//! the protocol and checks what the survivor gets, and how soon.
#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use ferrocsp::shm::{PoisonCause, ShmChannel, Wait};
use ferrocsp::Error;

mod shm_support;
use shm_support::{fork, reap, within};

/// A survivor must have its outcome this soon after the death (issue #16: within 1 s).
const SOON_AFTER_DEATH: Duration = Duration::from_secs(1);

/// Kills the calling process at once: no destructor, no unlock, no goodbye.
fn die() -> ! {
    // SAFETY: plain syscalls on our own process.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
        libc::_exit(9)
    }
}

fn write(ch: &ShmChannel, msg: &[u8], w: &mut Wait<'_>) -> Result<(), Error> {
    let mut slot = ch.begin_write(msg.len(), w)?;
    slot.buf().copy_from_slice(msg);
    slot.commit(w)
}

/// Waits until child `pid` has died, without reaping it: it stays a zombie (its pid still
/// exists), the case a survivor must not take for a live process.
fn await_death_unreaped(pid: libc::pid_t) {
    // SAFETY: an all-zero siginfo_t is a valid out-parameter; pid is our child; WNOWAIT
    // leaves it waitable (a zombie).
    let r = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT)
    };
    assert_eq!(r, 0, "waitid: {}", std::io::Error::last_os_error());
}

/// A rendezvous writer whose reader dies while copying the value out (the `READING` state:
/// claimed, not yet taken) used to wait forever, deaf to its deadline and to poison. The
/// reader is killed while its dead process is still a zombie (its parent has not reaped it:
/// its pid still exists) and once reaped.
#[test]
fn a_reader_killed_mid_copy_poisons_instead_of_hanging_its_writer() {
    for reap_first in [false, true] {
        let ch = std::sync::Arc::new(ShmChannel::create(0, 1 << 20).expect("create"));
        // The reader first (a child forked before this process starts any thread of its own):
        // it claims the value, then dies in the middle of copying it out.
        let reader = fork(|| -> i32 {
            let slot = ch.begin_read(&mut Wait::until(None)).expect("claim");
            let _ = slot.buf().first();
            die();
        });
        let c = ch.clone();
        let writer = std::thread::spawn(move || {
            // No deadline: only the death can end this wait.
            write(&c, &[7u8; 4096], &mut Wait::until(None))
        });
        if reap_first {
            let _ = reap(reader);
        } else {
            await_death_unreaped(reader);
        }
        let t0 = Instant::now();
        let out = within(Duration::from_secs(10), move || writer.join().expect("writer"));
        assert_eq!(out, Err(Error::Poisoned), "reaped first: {reap_first}");
        assert!(t0.elapsed() < SOON_AFTER_DEATH, "{:?} after the death", t0.elapsed());
        assert_eq!(ch.poison_cause(), Some(PoisonCause::PeerDied));
        if !reap_first {
            let _ = reap(reader);
        }
    }
}

/// A buffered writer that dies between reserving its entry and publishing it (`WRITING`)
/// used to hold a slot of the capacity (and the ring's head) forever. Its value was never
/// sent: the entry is withdrawn, and the channel goes on without it.
#[test]
fn a_writer_killed_mid_copy_gives_its_slot_back() {
    // Also with sleeps cut in slices shorter than the look's interval, as the Python main
    // thread's are: the look is timed per channel, not per sleep.
    for slice in [None, Some(Duration::from_millis(20))] {
        let ch = std::sync::Arc::new(ShmChannel::create(1, 1 << 20).expect("create"));
        let writer = fork(|| -> i32 {
            let mut slot = ch.begin_write(4096, &mut Wait::until(None)).expect("reserve");
            slot.buf()[0] = 1;
            die();
        });
        let _ = reap(writer);
        let t0 = Instant::now();
        let c = ch.clone();
        // The capacity (1) is taken by the dead writer's entry: this write waits for it.
        let out = within(Duration::from_secs(10), move || {
            let mut never = || false;
            let mut w = Wait {
                deadline: Some(Instant::now() + Duration::from_secs(5)),
                nowait: false,
                slice,
                interrupted: &mut never,
                sleeper: None,
            };
            write(&c, b"mine", &mut w)
        });
        assert_eq!(out, Ok(()), "slice {slice:?}");
        assert!(t0.elapsed() < SOON_AFTER_DEATH, "{:?} after the death", t0.elapsed());
        let slot = ch.begin_read(&mut Wait::nowait()).expect("the live writer's value");
        assert_eq!(slot.buf(), b"mine");
        slot.finish().expect("finish");
        assert!(!ch.is_poisoned(), "a value that was never sent spoils nothing");
        assert_eq!(ch.stats().expect("stats").buffered, 0);
    }
}

/// A reader waiting on a channel whose only message is being written by a process that
/// dies: the dead writer's entry is withdrawn, and the reader's deadline still holds.
#[test]
fn a_reader_waiting_behind_a_dead_writer_keeps_its_deadline() {
    let ch = std::sync::Arc::new(ShmChannel::create(2, 1 << 20).expect("create"));
    let writer = fork(|| -> i32 {
        let _slot = ch.begin_write(64, &mut Wait::until(None)).expect("reserve");
        die();
    });
    let _ = reap(writer);
    let c = ch.clone();
    let t0 = Instant::now();
    let out = within(Duration::from_secs(10), move || {
        c.begin_read(&mut Wait::until(Some(Instant::now() + Duration::from_millis(300))))
            .map(|s| s.buf().to_vec())
    });
    assert_eq!(out, Err(Error::Timeout));
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(ch.stats().expect("stats").buffered, 0, "the dead writer's slot is free");
}

/// Polls `cond` for up to 10 s (a state another process reaches, seen through `stats`).
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Kills child `pid` (SIGKILL) and reaps it.
fn kill(pid: libc::pid_t) {
    // SAFETY: pid is our child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let _ = reap(pid);
}

/// Kills the child when the test ends, passed or failed: a child left running (holding the
/// lock, or stuck) keeps the test's output pipe open, and the test run from ending.
struct KillOnDrop(libc::pid_t);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: our child; one already reaped makes both calls fail at once (ESRCH, ECHILD).
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}

fn stats(ch: &ShmChannel) -> ferrocsp::Stats {
    ch.stats().expect("stats")
}

/// A reader killed while it sleeps in `read` stayed counted as a waiting reader forever: a
/// rendezvous `write_nowait` then reserved an entry for it and waited for it to come (a
/// `nowait` write that never returned), `stats()` showed a phantom reader, and an `Alt`'s
/// output guard waited for that reader too, even a `nowait` one. Each waiting count now has
/// an owner (`waiters.rs`).
#[test]
fn a_reader_killed_asleep_is_no_waiting_reader() {
    let ch = std::sync::Arc::new(ShmChannel::create(0, 1 << 20).expect("create"));
    let reader = fork(|| -> i32 {
        let _ = ch.begin_read(&mut Wait::until(None));
        1
    });
    wait_for("the reader to sleep", || stats(&ch).readers_waiting == 1);
    kill(reader);
    let c = ch.clone();
    let t0 = Instant::now();
    let out = within(Duration::from_secs(10), move || write(&c, b"v", &mut Wait::nowait()));
    assert_eq!(out, Err(Error::WouldBlock));
    assert!(t0.elapsed() < SOON_AFTER_DEATH, "{:?} for a nowait write", t0.elapsed());
    let s = stats(&ch);
    assert_eq!((s.readers_waiting, s.writers_waiting), (0, 0), "{s:?}");
    assert!(!ch.is_poisoned(), "a reader that took nothing spoils nothing");
}

/// The same dead reader seen first by an `Alt` with an output guard (it waits for an idle
/// reader to take its offer): a `nowait` selection must not wait for a dead one.
#[test]
fn an_alt_output_does_not_wait_for_a_reader_killed_asleep() {
    use ferrocsp::shm::{select, SelOp};
    let ch = std::sync::Arc::new(ShmChannel::create(0, 1 << 20).expect("create"));
    let reader = fork(|| -> i32 {
        let _ = ch.begin_read(&mut Wait::until(None));
        1
    });
    wait_for("the reader to sleep", || stats(&ch).readers_waiting == 1);
    kill(reader);
    let c = ch.clone();
    let t0 = Instant::now();
    let out = within(Duration::from_secs(10), move || {
        let fill = |out: &mut [u8]| out.copy_from_slice(b"offered");
        let ops = [SelOp::write(&c, 7, &fill)];
        select(&ops, &mut Wait::nowait()).map(|(i, _)| i)
    });
    assert_eq!(out, Err(Error::WouldBlock));
    assert!(t0.elapsed() < SOON_AFTER_DEATH, "{:?} for a nowait selection", t0.elapsed());
    assert_eq!(stats(&ch).readers_waiting, 0);
}

/// A writer killed while it sleeps for room in a full buffered channel stayed counted as a
/// waiting writer; and an `Alt` killed while its input guard waits leaves a record that must
/// not count as a waiting reader.
#[test]
fn writers_and_alts_killed_asleep_are_not_counted_as_waiting() {
    use ferrocsp::shm::{select, SelOp};
    let ch = std::sync::Arc::new(ShmChannel::create(1, 1 << 20).expect("create"));
    write(&ch, b"fills it", &mut Wait::nowait()).expect("the buffer's one slot");
    let writer = fork(|| -> i32 {
        let _ = write(&ch, b"waits", &mut Wait::until(None));
        1
    });
    wait_for("the writer to sleep", || stats(&ch).writers_waiting == 1);
    kill(writer);
    let s = stats(&ch);
    assert_eq!((s.writers_waiting, s.buffered), (0, 1), "{s:?}");

    let other = std::sync::Arc::new(ShmChannel::create(0, 1 << 20).expect("create"));
    let alt = fork(|| -> i32 {
        let ops = [SelOp::read(&other)];
        let _ = select(&ops, &mut Wait::until(None));
        1
    });
    wait_for("the Alt to wait", || stats(&other).readers_waiting == 1);
    kill(alt);
    assert_eq!(stats(&other).readers_waiting, 0);
    let o = other.clone();
    let out = within(Duration::from_secs(10), move || write(&o, b"v", &mut Wait::nowait()));
    assert_eq!(out, Err(Error::WouldBlock));
}

/// A live peer that holds the lock and does not let go (stopped, or stuck): a lock wait used
/// to be deaf to everything (`pthread_mutex_lock`). It now ends at the operation's deadline,
/// at once for `nowait` (after a look at the holder), and for every waiter once the channel is
/// poisoned; and poisoning needs no lock to begin with.
#[test]
fn a_live_peer_stuck_holding_the_lock_leaves_deadlines_and_poison_working() {
    let ch = std::sync::Arc::new(ShmChannel::create(2, 1 << 20).expect("create"));
    // A reader asleep before the lock is taken: when its deadline comes, the lock is not to
    // be had, and it leaves counted as waiting until this process next holds the lock.
    let c = ch.clone();
    let asleep = std::thread::spawn(move || {
        let t0 = Instant::now();
        let deadline = Some(Instant::now() + Duration::from_millis(1500));
        (c.begin_read(&mut Wait::until(deadline)).map(|_| ()), t0.elapsed())
    });
    wait_for("the reader to sleep", || stats(&ch).readers_waiting == 1);
    let holder = KillOnDrop(fork(|| -> i32 {
        if ch.hold_lock_for_test().is_err() {
            return 1;
        }
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }));
    // Until the child holds it, the lock is free: a read with a short deadline times out
    // either way; the one that counts is a read that meets the held lock.
    fn held(c: &ShmChannel) -> (Result<(), Error>, Duration) {
        let t0 = Instant::now();
        let r = c.begin_read(&mut Wait::until(Some(Instant::now() + Duration::from_millis(50))));
        (r.map(|_| ()), t0.elapsed())
    }
    let c = ch.clone();
    within(Duration::from_secs(20), move || {
        wait_for("the child to hold the lock", || held(&c).1 >= Duration::from_millis(90))
    });
    let c = ch.clone();
    let (r, took) = within(Duration::from_secs(10), move || held(&c));
    assert_eq!(r, Err(Error::Timeout));
    assert!(took < SOON_AFTER_DEATH, "{took:?} for a 50 ms deadline");
    let c = ch.clone();
    let r = within(Duration::from_secs(10), move || write(&c, b"v", &mut Wait::nowait()));
    assert_eq!(r, Err(Error::WouldBlock));
    // An Alt meets the held lock at its first step, before it registers anything: its
    // deadline and `nowait` hold too.
    use ferrocsp::shm::{select, SelOp};
    let c = ch.clone();
    let (r, took) = within(Duration::from_secs(10), move || {
        let t0 = Instant::now();
        let mut w = Wait::until(Some(Instant::now() + Duration::from_millis(50)));
        (select(&[SelOp::read(&c)], &mut w).map(|(i, _)| i), t0.elapsed())
    });
    assert_eq!(r, Err(Error::Timeout));
    assert!(took < SOON_AFTER_DEATH, "{took:?} for an Alt's 50 ms deadline");
    let c = ch.clone();
    let r = within(Duration::from_secs(10), move || {
        select(&[SelOp::read(&c)], &mut Wait::nowait()).map(|(i, _)| i)
    });
    assert_eq!(r, Err(Error::WouldBlock));
    // A reader with no deadline: only the poison can end its wait for the lock.
    let c = ch.clone();
    let reader = std::thread::spawn(move || c.begin_read(&mut Wait::until(None)).map(|_| ()));
    std::thread::sleep(Duration::from_millis(50));
    let c = ch.clone();
    within(Duration::from_secs(10), move || c.poison()).expect("poison");
    let t0 = Instant::now();
    let r = within(Duration::from_secs(10), move || reader.join().expect("reader"));
    assert_eq!(r, Err(Error::Poisoned));
    assert!(t0.elapsed() < SOON_AFTER_DEATH, "{:?} after the poison", t0.elapsed());
    assert_eq!(ch.poison_cause(), Some(PoisonCause::Poisoned));
    let (r, took) = within(Duration::from_secs(10), move || asleep.join().expect("asleep"));
    assert!(matches!(r, Err(Error::Timeout | Error::Poisoned)), "{r:?}");
    assert!(took < Duration::from_millis(1500) + SOON_AFTER_DEATH, "{took:?}");
    // Once the holder is gone, the next lock here takes the reader that left off the count.
    drop(holder);
    let c = ch.clone();
    let s = within(Duration::from_secs(10), move || c.stats().expect("stats"));
    assert_eq!(s.readers_waiting, 0, "{s:?}");
}

/// A process killed while it holds the lock (in the middle of a critical section): a waiter
/// with no deadline finds the holder gone and takes the lock over, within a second of the
/// death, whether the dead process was reaped yet or is still a zombie; the channel is
/// poisoned with the cause that says so.
#[test]
fn a_process_killed_holding_the_lock_poisons_within_a_second() {
    for reap_first in [true, false] {
        let ch = std::sync::Arc::new(ShmChannel::create(1, 1 << 20).expect("create"));
        let holder = fork(|| -> i32 {
            if ch.hold_lock_for_test().is_err() {
                return 1;
            }
            die();
        });
        let _guard = KillOnDrop(holder);
        if reap_first {
            let status = within(Duration::from_secs(10), move || reap(holder));
            assert!(libc::WIFSIGNALED(status));
        } else {
            within(Duration::from_secs(10), move || await_death_unreaped(holder));
        }
        let c = ch.clone();
        let t0 = Instant::now();
        let r = within(Duration::from_secs(10), move || {
            c.begin_read(&mut Wait::until(None)).map(|_| ())
        });
        assert_eq!(r, Err(Error::Poisoned), "reaped first: {reap_first}");
        assert!(t0.elapsed() < SOON_AFTER_DEATH, "{:?} after the death", t0.elapsed());
        assert_eq!(ch.poison_cause(), Some(PoisonCause::OwnerDied));
        if !reap_first {
            let _ = reap(holder);
        }
    }
}

/// A reader killed while copying a *buffered* message out (`READING`) left its entry held
/// forever: the ring's head cannot pass it, so once the writers came round the ring to it
/// they waited for room that never came (found by `tests/shm_faults`: `buf_backlog`, random
/// kills). Its value is lost with it (its writer was done long ago); the channel goes on.
#[test]
fn a_buffered_reader_killed_mid_copy_gives_its_entry_back() {
    // Room for about four messages: the writers reach the dead reader's entry at once.
    let ch = std::sync::Arc::new(ShmChannel::create(2, 4 * 1024).expect("create"));
    let c = ch.clone();
    let first =
        within(Duration::from_secs(10), move || write(&c, &[1u8; 900], &mut Wait::until(None)));
    assert_eq!(first, Ok(()));
    let reader = fork(|| -> i32 {
        let slot = ch.begin_read(&mut Wait::until(None)).expect("claim");
        let _ = slot.buf().first();
        die();
    });
    let _ = reap(reader);
    let t0 = Instant::now();
    let c = ch.clone();
    // A writer and a reader that go on: each message goes round the ring.
    let out = within(Duration::from_secs(20), move || -> Result<(), Error> {
        for i in 0..20u8 {
            let soon = Some(Instant::now() + Duration::from_secs(5));
            write(&c, &[i; 900], &mut Wait::until(soon))?;
            let slot = c.begin_read(&mut Wait::until(soon))?;
            assert_eq!(slot.buf(), &[i; 900][..]);
            slot.finish()?;
        }
        Ok(())
    });
    assert_eq!(out, Ok(()));
    assert!(t0.elapsed() < SOON_AFTER_DEATH, "{:?} after the death", t0.elapsed());
    assert!(!ch.is_poisoned(), "a buffered value lost with its reader spoils nothing else");
}

/// An Alt whose input's only writer died copying its value in (`WRITING`) never looked at
/// that writer: the entry stayed, so the channel never ended for it (end-of-stream needs no
/// entry being written) and it waited forever (found by `tests/shm_faults`:
/// `rdv_alt_behind`, `buf_alt_behind`). Plain reads looked already.
#[test]
fn an_alt_behind_a_dead_writer_sees_the_stream_end() {
    for capacity in [0, 2] {
        let ch = std::sync::Arc::new(ShmChannel::create(capacity, 1 << 20).expect("create"));
        let end = ch.new_end(ferrocsp::shm::EndKind::Writer).expect("end");
        let writer = fork(|| -> i32 {
            let mut slot = ch.begin_write(64, &mut Wait::until(None)).expect("reserve");
            slot.buf()[0] = 1;
            die();
        });
        let _ = reap(writer);
        ch.retire_end(end).expect("retire, as the dead writer's host does");
        let c = ch.clone();
        let t0 = Instant::now();
        let out = within(Duration::from_secs(20), move || {
            let until = Instant::now() + Duration::from_secs(5);
            let mut give_up = || Instant::now() >= until;
            let mut w = Wait {
                deadline: None,
                nowait: false,
                slice: Some(Duration::from_millis(50)),
                interrupted: &mut give_up,
                sleeper: None,
            };
            ferrocsp::shm::select(&[ferrocsp::shm::SelOp::read(&c)], &mut w).map(|(i, _)| i)
        });
        assert_eq!(out, Err(Error::Retired), "capacity {capacity}");
        assert!(t0.elapsed() < SOON_AFTER_DEATH, "{:?} after the death", t0.elapsed());
    }
}
