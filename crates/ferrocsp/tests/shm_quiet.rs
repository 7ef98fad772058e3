//! The futex watchers' quiet hook (`watch_quiet`): deadlock detection across processes
//! confirms a cooperative wait with it, without waking the waiter.
#![cfg(target_os = "linux")]

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrocsp::shm::{watch_quiet, Quiet};
use ferrocsp::{Wake, Waker};

const PERIOD: Duration = Duration::from_millis(10);

/// Counts its calls; answers `wake` (true: wake the registration now).
struct Hook {
    calls: AtomicUsize,
    wake: AtomicBool,
}

impl Quiet for Hook {
    fn quiet(&self) -> bool {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.wake.load(Ordering::SeqCst)
    }
}

#[derive(Default)]
struct Woken(AtomicUsize);

impl Wake for Woken {
    fn wake(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn hook(wake: bool) -> Arc<Hook> {
    Arc::new(Hook { calls: AtomicUsize::new(0), wake: AtomicBool::new(wake) })
}

/// Waits (bounded) until `f` holds; fails the test if it never does.
fn eventually(what: &str, f: impl Fn() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < give_up, "never: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_quiet_registration_is_looked_at_every_period_without_being_woken() {
    let word = AtomicU32::new(7);
    let h = hook(false);
    let woken = Arc::new(Woken::default());
    let q: Arc<dyn Quiet> = h.clone();
    let w = watch_quiet(&[&word], &[7], None, Waker::Custom(woken.clone()), Some((q, PERIOD)))
        .expect("watch");
    eventually("three quiet looks", || h.calls.load(Ordering::SeqCst) >= 3);
    assert_eq!(woken.0.load(Ordering::SeqCst), 0, "a quiet look does not wake the waiter");
    drop(w);
    // At most one look may still be under way when the registration goes; none after it.
    // (Generous: on a loaded machine the watcher thread may be descheduled mid-look.)
    std::thread::sleep(PERIOD * 20);
    let after = h.calls.load(Ordering::SeqCst);
    std::thread::sleep(PERIOD * 5);
    assert_eq!(h.calls.load(Ordering::SeqCst), after, "looked at after it was removed");
}

#[test]
fn a_hook_that_answers_true_wakes_the_registration_once() {
    let word = AtomicU32::new(1);
    let h = hook(true);
    let woken = Arc::new(Woken::default());
    let q: Arc<dyn Quiet> = h.clone();
    let w = watch_quiet(&[&word], &[1], None, Waker::Custom(woken.clone()), Some((q, PERIOD)))
        .expect("watch");
    eventually("the hook's wake-up", || woken.0.load(Ordering::SeqCst) == 1);
    std::thread::sleep(PERIOD * 5);
    assert_eq!(h.calls.load(Ordering::SeqCst), 1, "no look after the registration was woken");
    assert_eq!(woken.0.load(Ordering::SeqCst), 1);
    drop(w);
}

#[test]
fn a_moved_word_wakes_the_registration_and_ends_its_looks() {
    let word = AtomicU32::new(0);
    let h = hook(false);
    let woken = Arc::new(Woken::default());
    let q: Arc<dyn Quiet> = h.clone();
    let w = watch_quiet(&[&word], &[0], None, Waker::Custom(woken.clone()), Some((q, PERIOD)))
        .expect("watch");
    eventually("one quiet look", || h.calls.load(Ordering::SeqCst) >= 1);
    word.store(1, Ordering::SeqCst);
    eventually("the wake-up of a moved word", || woken.0.load(Ordering::SeqCst) == 1);
    let after = h.calls.load(Ordering::SeqCst);
    std::thread::sleep(PERIOD * 5);
    assert_eq!(h.calls.load(Ordering::SeqCst), after, "looked at after its word moved");
    drop(w);
}
