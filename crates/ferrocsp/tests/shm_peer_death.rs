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
