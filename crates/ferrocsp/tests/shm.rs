//! Shared-memory channels between real forked processes.
#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use ferrocsp::shm::{EndKind, ShmChannel, ShmError, Wait};

fn write(ch: &ShmChannel, msg: &[u8], deadline: Option<Instant>) -> Result<(), ShmError> {
    let mut slot = ch.begin_write(msg.len(), &mut Wait::until(deadline))?;
    slot.buf().copy_from_slice(msg);
    slot.commit(&mut Wait::until(deadline))
}

fn read(ch: &ShmChannel, deadline: Option<Instant>) -> Result<Vec<u8>, ShmError> {
    let slot = ch.begin_read(&mut Wait::until(deadline))?;
    let v = slot.buf().to_vec();
    slot.finish()?;
    Ok(v)
}

/// Runs `f` in a forked child, which exits with the code `f` returns.
fn fork(f: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: the test harness thread forks; the child only runs `f` and _exits.
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
    assert!(matches!(r, Err(ShmError::Timeout)));
    let r = ch.begin_read(&mut Wait::nowait());
    assert!(matches!(r, Err(ShmError::WouldBlock)));
    assert_eq!(ch.stats().expect("stats").writers_waiting, 0);
}

#[test]
fn poison_wakes_blocked_reader_in_other_process() {
    let ch = ShmChannel::create(0, 1 << 16).expect("create");
    let pid = fork(|| match read(&ch, soon()) {
        Err(ShmError::Poisoned) => 0,
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
    assert!(matches!(read(&ch, soon()), Err(ShmError::Retired)));
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
    assert!(matches!(read(&ch, soon()), Err(ShmError::Poisoned)));
}

#[test]
fn too_large_is_refused() {
    let ch = ShmChannel::create(0, 4096).expect("create");
    let r = ch.begin_write(1 << 20, &mut Wait::nowait());
    assert!(matches!(r, Err(ShmError::TooLarge { .. })));
}
