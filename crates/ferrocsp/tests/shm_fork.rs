//! What a child made by `fork` starts with: none of its parent's process-wide engine state
//! (the cells registry, the futex watchers), whatever the parent's other threads were doing
//! at the instant of the fork.
#![cfg(target_os = "linux")]

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrocsp::shm::{hold_cells_for_test, select, watch, SelOp, ShmChannel, Wait};
use ferrocsp::{Error, Waker};

mod shm_support;

use shm_support::fork;

/// Reaps child `pid` if it exits within `limit`; else kills it (a hang) and returns None.
fn reap_within(pid: libc::pid_t, limit: Duration) -> Option<i32> {
    let end = Instant::now() + limit;
    loop {
        let mut status = 0;
        // SAFETY: pid is our child.
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
            return Some(status);
        }
        if Instant::now() >= end {
            // SAFETY: our child, not reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A selection that must wait takes a cell; before, a child forked while another thread of
/// its parent held the cells registry's lock blocked on that lock forever.
#[test]
fn a_child_forked_while_the_cells_registry_is_locked_can_select() {
    let ch = ShmChannel::create(0, 1 << 20).expect("create");
    // The parent has cells of its own, and a thread holds the registry's lock while it forks.
    let ops = [SelOp::read(&ch)];
    let soon = Some(Instant::now() + Duration::from_millis(20));
    assert!(matches!(select(&ops, &mut Wait::until(soon)), Err(Error::Timeout)));
    hold_cells_for_test(Duration::from_secs(30));
    let pid = fork(|| {
        let ops = [SelOp::read(&ch)];
        let soon = Some(Instant::now() + Duration::from_millis(100));
        match select(&ops, &mut Wait::until(soon)) {
            Err(Error::Timeout) => 0,
            _ => 1,
        }
    });
    // Generous for a loaded machine: the child's whole work is a 100 ms timeout.
    let status = reap_within(pid, Duration::from_secs(10));
    assert_eq!(status, Some(0), "the child hung (None) or failed");
}

/// A cooperative wait in a child registers with a watcher thread of its own, never with the
/// parent's (which the child does not have), so it is woken.
#[test]
fn a_child_of_a_process_with_watchers_starts_its_own() {
    let word = Arc::new(AtomicU32::new(0));
    let parent_woken = Arc::new(AtomicBool::new(false));
    struct Flag(Arc<AtomicBool>);
    impl ferrocsp::Wake for Flag {
        fn wake(&self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let _w = watch(&[&*word], &[0], None, Waker::Custom(Arc::new(Flag(parent_woken.clone()))))
        .expect("watch");
    let pid = fork(|| {
        let woken = Arc::new(AtomicBool::new(false));
        let w = match watch(&[&*word], &[0], None, Waker::Custom(Arc::new(Flag(woken.clone())))) {
            Ok(w) => w,
            Err(_) => return 2,
        };
        word.store(1, Ordering::SeqCst);
        ferrocsp_wake(&word);
        let end = Instant::now() + Duration::from_secs(5);
        while !woken.load(Ordering::SeqCst) {
            if Instant::now() >= end {
                return 1;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(w);
        0
    });
    assert_eq!(reap_within(pid, Duration::from_secs(10)), Some(0), "the child's wait never woke");
}

fn ferrocsp_wake(word: &AtomicU32) {
    // SAFETY: a plain FUTEX_WAKE on a live word of ours.
    unsafe {
        libc::syscall(libc::SYS_futex, word as *const AtomicU32, libc::FUTEX_WAKE, i32::MAX);
    }
}
