//! Selection (Alt): exactly one operation fires, policies, timeout and skip operations, poison
//! and retire, cross-thread wake-ups, select-vs-select, and the step-by-step `start`/`resume`
//! API with a custom waker.
//!
//! Every blocking selection that could hang on a bug is bounded by a generous timeout, so a bug
//! shows up as a failure rather than a stuck test run.
#![cfg(not(loom))]

use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ferrocsp::{Channel, Error, Policy, Poll, Select, SelectError, Selected, Wake, Waker};

mod common;
use common::{join, wait_until, PATIENCE};

fn fired<T>(r: Result<Selected<T>, SelectError>) -> (usize, Option<T>) {
    match r {
        Ok(s) => (s.index, s.value),
        Err(e) => panic!("selection failed: {e}"),
    }
}

/// A small deterministic generator, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

// ----- exactly one operation fires -----

#[test]
fn exactly_one_fires_under_contention() {
    // Several threads run selections mixing writes and reads over shared rendezvous and
    // buffered channels. Values are unique and name their channel; every write that fired is
    // recorded as sent and every unfired write's value is recovered with `take_value`. In the
    // end, what was sent equals what was received (after draining the buffers), so no write
    // was consumed without firing and no read took more than one value.
    const THREADS: u64 = 4;
    const ROUNDS: u64 = 2_000;
    let chans: Arc<Vec<Channel<u64>>> =
        Arc::new([0, 0, 1, 2].into_iter().map(Channel::new).collect());
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let chans = Arc::clone(&chans);
            thread::spawn(move || {
                let mut rng = Rng(0x9E37_79B9 ^ ((t + 1) * 0x1234_5678_9ABC));
                let (mut sent, mut received) = (Vec::new(), Vec::new());
                let mut timeouts = 0;
                for round in 0..ROUNDS {
                    let mut sel = Select::new();
                    // (index, channel, Some(value) for a write)
                    let mut ops = Vec::new();
                    for k in 0..4u64 {
                        let c = rng.below(chans.len());
                        if k % 2 == 0 {
                            let v = (t << 40) | (round << 8) | (k << 4) | c as u64;
                            ops.push((sel.write(&chans[c], v), c, Some(v)));
                        } else {
                            ops.push((sel.read(&chans[c]), c, None));
                        }
                    }
                    let timeout = sel.timeout(Duration::from_millis(1));
                    let policy =
                        [Policy::Random, Policy::Priority, Policy::Fair][round as usize % 3];
                    let (index, value) = fired(sel.select_timeout(policy, PATIENCE));
                    if index == timeout {
                        timeouts += 1;
                    }
                    for &(i, c, w) in &ops {
                        match w {
                            Some(v) if i == index => {
                                assert_eq!(sel.take_value(i), None, "a fired write is consumed");
                                sent.push(v);
                            }
                            Some(v) => assert_eq!(sel.take_value(i), Some(v), "unfired write kept"),
                            None if i == index => {
                                let v = value.expect("a fired read has a value");
                                assert_eq!(v & 0xF, c as u64, "value read from the wrong channel");
                                received.push(v);
                            }
                            None => {}
                        }
                    }
                    if !ops.iter().any(|&(i, _, w)| i == index && w.is_none()) {
                        assert_eq!(value, None, "only a read carries a value");
                    }
                }
                (sent, received, timeouts)
            })
        })
        .collect();
    let (mut sent, mut received, mut timeouts) = (Vec::new(), Vec::new(), 0);
    for w in workers {
        let (s, r, t) = join(w);
        sent.extend(s);
        received.extend(r);
        timeouts += t;
    }
    for c in chans.iter() {
        received.extend(c.drain_buffered());
        let s = c.stats();
        assert_eq!((s.readers_waiting, s.writers_waiting), (0, 0), "a selection left an entry");
    }
    sent.sort_unstable();
    received.sort_unstable();
    assert_eq!(sent.len(), received.len(), "values lost or duplicated");
    assert_eq!(sent, received, "values lost or duplicated");
    assert!(!sent.is_empty() && timeouts < THREADS * ROUNDS, "no communication happened");
}

#[test]
fn ready_read_and_write_exactly_one_fires() {
    // Both operations are ready at once; only the chosen one has any effect.
    for policy in [Policy::Random, Policy::Priority, Policy::Fair] {
        for _ in 0..100 {
            let (a, b) = (Channel::new(1), Channel::new(1));
            assert!(a.try_write(1).is_ok());
            let mut sel = Select::new();
            let ia = sel.read(&a);
            let ib = sel.write(&b, 2);
            let (index, value) = fired(sel.select(policy));
            if index == ia {
                assert_eq!(value, Some(1));
                assert_eq!((sel.take_value(ib), b.stats().buffered), (Some(2), 0));
            } else {
                assert_eq!((value, sel.take_value(ib), b.try_read()), (None, None, Ok(2)));
                assert_eq!(a.stats().buffered, 1, "the read that did not fire took nothing");
            }
        }
    }
}

// ----- policies -----

#[test]
fn priority_respects_order() {
    let (a, b) = (Channel::new(1), Channel::new(1));
    for _ in 0..50 {
        assert!(a.try_write(1).is_ok());
        assert!(b.try_write(2).is_ok());
        let mut sel = Select::new();
        sel.read(&a);
        sel.read(&b);
        assert_eq!(fired(sel.select(Policy::Priority)), (0, Some(1)));
        let mut sel = Select::new();
        sel.read(&b);
        sel.read(&a);
        assert_eq!(fired(sel.select(Policy::Priority)), (0, Some(2)));
    }
    // A not-ready operation first is passed over.
    let c: Channel<i32> = Channel::new(0);
    assert!(b.try_write(3).is_ok());
    let mut sel = Select::new();
    sel.read(&c);
    sel.read(&b);
    sel.skip();
    assert_eq!(fired(sel.select(Policy::Priority)), (1, Some(3)));
}

#[test]
fn fair_alternates_between_two_always_ready_channels() {
    let (a, b) = (Channel::new(1), Channel::new(1));
    assert!(a.try_write(0).is_ok());
    assert!(b.try_write(1).is_ok());
    let mut sel = Select::new();
    let ia = sel.read(&a);
    let ib = sel.read(&b);
    let mut order = Vec::new();
    for _ in 0..100 {
        let (index, value) = fired(sel.select(Policy::Fair));
        let refill = if index == ia { &a } else { &b };
        assert!(refill.try_write(value.expect("a read")).is_ok());
        order.push(index);
        assert_eq!(sel.last_selected(), Some(index));
    }
    for pair in order.windows(2) {
        assert_ne!(pair[0], pair[1], "fair choice repeated itself: {order:?}");
    }
    // Fairness carries over to a new Select through set_last_selected.
    let mut next = Select::new();
    next.read(&a);
    next.read(&b);
    next.set_last_selected(Some(ia));
    assert_eq!(fired(next.select(Policy::Fair)).0, ib);
}

#[test]
fn fair_skips_over_unready_operations() {
    let (a, idle, b) = (Channel::new(1), Channel::new(0), Channel::new(1));
    assert!(a.try_write(0).is_ok());
    assert!(b.try_write(2).is_ok());
    let mut sel = Select::new();
    sel.read(&a);
    sel.read(&idle);
    sel.read(&b);
    let mut order = Vec::new();
    for _ in 0..20 {
        let (index, value) = fired(sel.select(Policy::Fair));
        let refill = if index == 0 { &a } else { &b };
        assert!(refill.try_write(value.expect("a read")).is_ok());
        order.push(index);
    }
    assert!(order.chunks(2).all(|p| p == [0, 2]), "{order:?}");
}

#[test]
#[cfg_attr(miri, ignore = "statistical: 10,000 picks, hours under Miri")]
fn random_picks_each_ready_operation_about_half_the_time() {
    let (a, b) = (Channel::new(1), Channel::new(1));
    assert!(a.try_write(0).is_ok());
    assert!(b.try_write(1).is_ok());
    let mut counts = [0usize; 2];
    for _ in 0..10_000 {
        let mut sel = Select::new();
        sel.read(&a);
        sel.read(&b);
        let (index, value) = fired(sel.select(Policy::Random));
        counts[index] += 1;
        let refill = if index == 0 { &a } else { &b };
        assert!(refill.try_write(value.expect("a read")).is_ok());
    }
    assert!(counts.iter().all(|&n| (4_000..=6_000).contains(&n)), "{counts:?}");
}

// ----- timeout and skip operations -----

#[test]
fn timeout_op_fires_when_nothing_is_ready() {
    let a: Channel<u8> = Channel::new(0);
    let mut sel = Select::new();
    sel.read(&a);
    let it = sel.timeout(Duration::from_millis(20));
    let start = Instant::now();
    assert_eq!(fired(sel.select_timeout(Policy::Priority, PATIENCE)), (it, None));
    assert!(start.elapsed() >= Duration::from_millis(20));
    assert_eq!(a.stats().readers_waiting, 0, "the read was withdrawn");
    // An unsent write keeps its value.
    let mut sel = Select::new();
    let iw = sel.write(&a, 5);
    let it = sel.timeout(Duration::from_millis(5));
    assert_eq!(fired(sel.select_timeout(Policy::Random, PATIENCE)), (it, None));
    assert_eq!(sel.take_value(iw), Some(5));
    assert_eq!(a.stats().writers_waiting, 0);
}

#[test]
fn a_selection_runs_again_with_a_new_timeout() {
    // One `Select` kept and run many times (as a native Alt does): each run's timeout counts
    // from its own start, with the delay set for it.
    let a: Channel<u8> = Channel::new(0);
    let mut sel = Select::new();
    let ia = sel.read(&a);
    let it = sel.timeout(Duration::from_secs(3600));
    assert_eq!(sel.try_select(Policy::Priority), Err(SelectError::WouldBlock));
    sel.set_timeout(it, Duration::ZERO);
    assert_eq!(fired(sel.select_timeout(Policy::Priority, PATIENCE)), (it, None));
    sel.set_timeout(it, Duration::from_millis(20));
    let start = Instant::now();
    assert_eq!(fired(sel.select_timeout(Policy::Fair, PATIENCE)), (it, None));
    assert!(start.elapsed() >= Duration::from_millis(20));
    assert_eq!(a.stats().readers_waiting, 0, "the read was withdrawn each time");
    // The read is still part of it.
    let tx = a.clone();
    let writer = thread::spawn(move || tx.write_timeout(7, PATIENCE).map_err(|e| e.error));
    sel.set_timeout(it, Duration::from_secs(3600));
    assert_eq!(fired(sel.select_timeout(Policy::Priority, PATIENCE)), (ia, Some(7)));
    assert_eq!(join(writer), Ok(()));
}

#[test]
#[should_panic(expected = "is not a timeout")]
fn set_timeout_on_another_operation_panics() {
    let a: Channel<u8> = Channel::new(0);
    let mut sel = Select::new();
    let ia = sel.read(&a);
    sel.set_timeout(ia, Duration::ZERO);
}

#[test]
fn timeout_op_never_fires_when_something_is_ready() {
    let a = Channel::new(1);
    for policy in [Policy::Random, Policy::Priority, Policy::Fair] {
        for _ in 0..200 {
            assert!(a.try_write(1).is_ok());
            let mut sel = Select::new();
            sel.timeout(Duration::from_millis(50));
            let ia = sel.read(&a);
            assert_eq!(fired(sel.select(policy)), (ia, Some(1)));
        }
    }
}

#[test]
fn value_arriving_before_the_timeout_wins() {
    let a = Channel::new(0);
    let tx = a.clone();
    let writer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        tx.write_timeout(7, PATIENCE).map_err(|e| e.error)
    });
    let mut sel = Select::new();
    let ia = sel.read(&a);
    sel.timeout(PATIENCE);
    assert_eq!(fired(sel.select(Policy::Random)), (ia, Some(7)));
    assert_eq!(join(writer), Ok(()));
}

#[test]
fn selection_deadline_fails_with_timeout() {
    let a: Channel<u8> = Channel::new(0);
    let mut sel = Select::new();
    sel.read(&a);
    let iw = sel.write(&a, 3);
    let start = Instant::now();
    assert_eq!(
        sel.select_timeout(Policy::Priority, Duration::from_millis(20)),
        Err(SelectError::Timeout)
    );
    assert!(start.elapsed() >= Duration::from_millis(20));
    assert_eq!(sel.take_value(iw), Some(3));
    assert!(!sel.is_pending());
    let s = a.stats();
    assert_eq!((s.readers_waiting, s.writers_waiting), (0, 0));
}

#[test]
fn skip_fires_when_nothing_is_ready_and_takes_nothing() {
    let (a, b) = (Channel::new(0), Channel::new(0));
    let mut sel = Select::new();
    sel.read(&a);
    let iw = sel.write(&b, 1);
    let is = sel.skip();
    for policy in [Policy::Random, Policy::Priority, Policy::Fair] {
        assert_eq!(fired(sel.select(policy)), (is, None));
        assert_eq!(sel.take_value(iw), Some(1));
        sel.set_value(iw, 1);
    }
    let s = (a.stats(), b.stats());
    assert_eq!((s.0.readers_waiting, s.1.writers_waiting), (0, 0), "skip never registers");
    // Priority: a ready operation before the skip wins.
    let c = Channel::new(1);
    assert!(c.try_write(9).is_ok());
    let mut sel = Select::new();
    sel.read(&c);
    sel.skip();
    assert_eq!(fired(sel.select(Policy::Priority)), (0, Some(9)));
}

#[test]
fn try_select_would_block() {
    let a: Channel<u8> = Channel::new(0);
    let mut sel = Select::new();
    sel.read(&a);
    let iw = sel.write(&a, 1);
    assert_eq!(sel.try_select(Policy::Random), Err(SelectError::WouldBlock));
    assert_eq!(sel.take_value(iw), Some(1));
    assert_eq!(a.stats().readers_waiting, 0);
}

// ----- poison and retire -----

#[test]
fn poisoned_channel_chosen_fails_with_its_index() {
    let (a, b) = (Channel::new(0), Channel::new(1));
    b.poison();
    let mut sel = Select::new();
    sel.read(&a);
    let iw = sel.write(&b, 4);
    assert_eq!(sel.select(Policy::Priority), Err(SelectError::Poisoned { index: iw }));
    assert_eq!(sel.take_value(iw), Some(4), "the value is handed back");
    // A ready operation ordered before the poisoned one fires instead.
    let c = Channel::new(1);
    assert!(c.try_write(1).is_ok());
    let mut sel = Select::new();
    let ic = sel.read(&c);
    let ib = sel.read(&b);
    assert_eq!(fired(sel.select(Policy::Priority)), (ic, Some(1)));
    assert_eq!(sel.select(Policy::Priority), Err(SelectError::Poisoned { index: ib }));
}

#[test]
fn poison_wakes_a_blocked_selection() {
    let (a, b): (Channel<u8>, Channel<u8>) = (Channel::new(0), Channel::new(0));
    let (a2, b2) = (a.clone(), b.clone());
    let selector = thread::spawn(move || {
        let mut sel = Select::new();
        sel.read(&a2);
        let iw = sel.write(&b2, 8);
        let r = sel.select_timeout(Policy::Random, PATIENCE);
        (r, sel.take_value(iw))
    });
    wait_until("the selection blocks", || b.stats().writers_waiting == 1);
    b.poison();
    assert_eq!(join(selector), (Err(SelectError::Poisoned { index: 1 }), Some(8)));
    assert_eq!(a.stats().readers_waiting, 0, "the other entry was removed");
}

#[test]
fn only_retired_channels_fail_with_retired() {
    let (a, b): (Channel<u8>, Channel<u8>) = (Channel::new(0), Channel::new(2));
    drop(a.writer()); // all writer ends retired: reads are over
    drop(b.reader()); // all reader ends retired: writes are over
    let mut sel = Select::new();
    sel.read(&a);
    let iw = sel.write(&b, 1);
    assert_eq!(sel.select(Policy::Random), Err(SelectError::Retired));
    assert_eq!(sel.take_value(iw), Some(1));
    // With a timeout or skip, something can still fire.
    let it = sel.timeout(Duration::from_millis(1));
    assert_eq!(fired(sel.select_timeout(Policy::Random, PATIENCE)), (it, None));
    let is = sel.skip();
    assert_eq!(fired(sel.select(Policy::Priority)), (is, None));
}

#[test]
fn retire_under_a_blocked_selection() {
    // One channel retires while the selection waits: it keeps waiting on the others, and
    // fails with Retired only when every channel has retired.
    let (a, b): (Channel<u8>, Channel<u8>) = (Channel::new(0), Channel::new(0));
    let (wa, wb) = (a.writer(), b.writer());
    let (a2, b2) = (a.clone(), b.clone());
    let selector = thread::spawn(move || {
        let mut sel = Select::new();
        sel.read(&a2);
        sel.read(&b2);
        let first = sel.select_timeout(Policy::Random, PATIENCE);
        let second = sel.select_timeout(Policy::Random, PATIENCE);
        (first, second)
    });
    wait_until("the selection blocks", || b.stats().readers_waiting == 1);
    wa.retire();
    // The retirement completes the selection's cell; it restarts and registers on b alone.
    wait_until("the selection waits again", || b.stats().readers_waiting == 1);
    assert_eq!(a.stats().readers_waiting, 0, "the retired read is dropped");
    assert!(wb.write_timeout(6, PATIENCE).is_ok());
    wait_until("the selection blocks again", || b.stats().readers_waiting == 1);
    wb.retire();
    let (first, second) = join(selector);
    assert_eq!(fired(first), (1, Some(6)));
    assert_eq!(second, Err(SelectError::Retired));
}

// ----- wake-ups across threads -----

#[test]
fn blocked_selection_is_woken_by_a_write() {
    let (a, b): (Channel<u8>, Channel<u8>) = (Channel::new(0), Channel::new(0));
    let (a2, b2) = (a.clone(), b.clone());
    let selector = thread::spawn(move || {
        let mut sel = Select::new();
        sel.read(&a2);
        sel.read(&b2);
        sel.select_timeout(Policy::Random, PATIENCE).map(|s| (s.index, s.value))
    });
    wait_until("the selection blocks", || b.stats().readers_waiting == 1);
    assert!(b.try_write(2).is_ok(), "a waiting selection counts as a waiting reader");
    assert_eq!(join(selector), Ok((1, Some(2))));
    let s = (a.stats(), b.stats());
    assert_eq!((s.0.readers_waiting, s.1.readers_waiting), (0, 0));
}

#[test]
fn blocked_selection_is_woken_by_a_read() {
    let (a, b) = (Channel::new(0), Channel::new(0));
    let (a2, b2) = (a.clone(), b.clone());
    let selector = thread::spawn(move || {
        let mut sel = Select::new();
        let ia = sel.write(&a2, 1);
        let ib = sel.write(&b2, 2);
        let r = sel.select_timeout(Policy::Random, PATIENCE).map(|s| s.index);
        (r, sel.take_value(ia), sel.take_value(ib))
    });
    wait_until("the selection blocks", || a.stats().writers_waiting == 1);
    assert_eq!(a.read_timeout(PATIENCE), Ok(1));
    assert_eq!(join(selector), (Ok(0), None, Some(2)));
    assert_eq!(b.stats().writers_waiting, 0);
}

#[test]
fn select_vs_select_on_both_ends() {
    // Two threads select on opposite ends of one channel, with every policy, many times: they
    // always rendezvous (whichever registers first is completed by the other).
    let ch: Channel<u32> = Channel::new(0);
    let tx = ch.clone();
    const ROUNDS: u32 = 5_000;
    let policies = [Policy::Random, Policy::Priority, Policy::Fair];
    let writer = thread::spawn(move || {
        for i in 0..ROUNDS {
            let mut sel = Select::new();
            sel.write(&tx, i);
            let r = sel.select_timeout(policies[i as usize % 3], PATIENCE);
            assert_eq!(r.map(|s| s.index), Ok(0), "round {i}");
        }
    });
    for i in 0..ROUNDS {
        let mut sel = Select::new();
        sel.read(&ch);
        let r = sel.select_timeout(policies[(i as usize + 1) % 3], PATIENCE);
        assert_eq!(fired(r), (0, Some(i)));
    }
    join(writer);
}

#[test]
fn select_vs_select_crossed_channels_agree() {
    // A writes x or reads y; B reads x or writes y: each round they meet on exactly one channel.
    let (x, y): (Channel<u32>, Channel<u32>) = (Channel::new(0), Channel::new(0));
    let (x2, y2) = (x.clone(), y.clone());
    const ROUNDS: u32 = 3_000;
    let a = thread::spawn(move || {
        let mut met = Vec::new();
        for i in 0..ROUNDS {
            let mut sel = Select::new();
            let iw = sel.write(&x2, i);
            sel.read(&y2);
            let (index, value) = fired(sel.select_timeout(Policy::Random, PATIENCE));
            assert_eq!(sel.take_value(iw).is_none(), index == iw);
            met.push((index, value));
        }
        met
    });
    let mut met = Vec::new();
    for i in 0..ROUNDS {
        let mut sel = Select::new();
        sel.read(&x);
        let iw = sel.write(&y, i + 1_000_000);
        let (index, value) = fired(sel.select_timeout(Policy::Random, PATIENCE));
        assert_eq!(sel.take_value(iw).is_none(), index == iw);
        met.push((index, value));
    }
    for (i, (a, b)) in (0..).zip(join(a).into_iter().zip(met)) {
        match (a, b) {
            ((0, None), (0, Some(v))) => assert_eq!(v, i),
            ((1, Some(v)), (1, None)) => assert_eq!(v, i + 1_000_000),
            other => panic!("round {i}: selections disagree: {other:?}"),
        }
    }
}

#[test]
fn alt_does_not_rendezvous_with_itself() {
    let ch = Channel::new(0);
    let mut sel = Select::new();
    let ir = sel.read(&ch);
    let iw = sel.write(&ch, 1);
    assert_eq!(
        sel.select_timeout(Policy::Random, Duration::from_millis(20)),
        Err(SelectError::Timeout)
    );
    assert_eq!(sel.take_value(iw), Some(1));
    let s = ch.stats();
    assert_eq!((s.readers_waiting, s.writers_waiting), (0, 0));
    // With a real counterpart on either side, the matching operation fires.
    let tx = ch.clone();
    let writer = thread::spawn(move || tx.write_timeout(2, PATIENCE).map_err(|e| e.error));
    sel.set_value(iw, 1);
    assert_eq!(fired(sel.select_timeout(Policy::Random, PATIENCE)), (ir, Some(2)));
    assert_eq!(join(writer), Ok(()));
    assert_eq!(sel.take_value(iw), Some(1));
    let rx = ch.clone();
    let reader = thread::spawn(move || rx.read_timeout(PATIENCE));
    sel.set_value(iw, 3);
    assert_eq!(fired(sel.select_timeout(Policy::Random, PATIENCE)), (iw, None));
    assert_eq!(join(reader), Ok(3));
}

#[test]
fn two_alts_on_both_ends_of_one_channel_meet() {
    // Each Alt reads and writes the same channel; they cannot meet themselves but must meet
    // each other.
    let ch: Channel<u32> = Channel::new(0);
    let other = ch.clone();
    let a = thread::spawn(move || {
        let mut sel = Select::new();
        sel.read(&other);
        sel.write(&other, 1);
        sel.select_timeout(Policy::Random, PATIENCE).map(|s| (s.index, s.value))
    });
    let mut sel = Select::new();
    sel.read(&ch);
    sel.write(&ch, 2);
    let b = fired(sel.select_timeout(Policy::Random, PATIENCE));
    match (join(a), b) {
        (Ok((0, Some(2))), (1, None)) | (Ok((1, None)), (0, Some(1))) => {}
        other => panic!("the Alts did not meet exactly once: {other:?}"),
    }
}

// ----- the step-by-step API with a custom waker -----

#[derive(Default)]
struct Flag {
    woken: Mutex<usize>,
    cond: Condvar,
}

impl Wake for Flag {
    fn wake(&self) {
        *self.woken.lock().expect("flag lock") += 1;
        self.cond.notify_all();
    }
}

impl Flag {
    fn wait(&self) -> usize {
        let g = self.woken.lock().expect("flag lock");
        let (g, _) = self.cond.wait_timeout_while(g, PATIENCE, |n| *n == 0).expect("flag lock");
        *g
    }
}

#[test]
fn custom_waker_start_and_resume() {
    let ch = Channel::new(0);
    let flag = Arc::new(Flag::default());
    let mut sel = Select::new();
    sel.read(&ch);
    let it = sel.timeout(PATIENCE);
    assert!(matches!(
        sel.start(Policy::Priority, Waker::Custom(flag.clone()), None),
        Poll::Pending
    ));
    assert!(sel.is_pending());
    assert!(sel.wake_deadline().is_some(), "a timeout op sets a wake deadline");
    assert!(matches!(sel.resume(), Poll::Pending), "nothing happened yet");
    let tx = ch.clone();
    let writer = thread::spawn(move || tx.write_timeout(11, PATIENCE).map_err(|e| e.error));
    assert_eq!(flag.wait(), 1, "the waker is called exactly once");
    match sel.resume() {
        Poll::Ready(r) => assert_eq!(fired(r), (0, Some(11))),
        Poll::Pending => panic!("woken but not ready"),
    }
    assert!(!sel.is_pending());
    assert_eq!(join(writer), Ok(()));
    assert_ne!(it, 0);
}

#[test]
fn abort_withdraws_or_returns_what_fired() {
    let ch = Channel::new(0);
    let mut sel = Select::new();
    sel.read(&ch);
    let iw = sel.write(&ch, 5);
    assert!(matches!(sel.start(Policy::Random, Waker::current_thread(), None), Poll::Pending));
    assert!(sel.abort().is_none(), "nothing fired");
    assert_eq!(sel.take_value(iw), Some(5), "the write value is back after the abort");
    let s = ch.stats();
    assert_eq!((s.readers_waiting, s.writers_waiting), (0, 0));
    // A completion that won the race stands.
    sel.set_value(iw, 6);
    assert!(matches!(sel.start(Policy::Random, Waker::current_thread(), None), Poll::Pending));
    assert_eq!(ch.try_read(), Ok(6));
    match sel.abort() {
        Some(r) => assert_eq!(fired(r), (iw, None)),
        None => panic!("the write fired before the abort"),
    }
    assert_eq!(ch.try_write(0).map_err(|e| e.error), Err(Error::WouldBlock));
}

/// The first operation in the try order is decided under its own channel's lock when it can
/// fire, and left to the try under every lock otherwise: the choices are those of the full
/// try in each case (ready, retired, full buffer, poisoned), and `might_fire` follows the
/// channels' readiness.
#[test]
fn first_operation_decided_alone_agrees_with_the_full_try() {
    let (a, b) = (Channel::new(2), Channel::new(2));
    a.try_write(1u32).map_err(|e| e.error).expect("buffer space");
    b.try_write(2u32).map_err(|e| e.error).expect("buffer space");
    let mut sel = Select::new();
    sel.read(&a);
    sel.read(&b);
    assert!(sel.might_fire());
    assert_eq!(fired(sel.try_select(Policy::Priority)), (0, Some(1)));
    a.try_write(3).map_err(|e| e.error).expect("buffer space");
    assert_eq!(fired(sel.try_select(Policy::Fair)), (1, Some(2)), "fair turns to the other");
    assert_eq!(fired(sel.try_select(Policy::Fair)), (0, Some(3)));
    assert!(!sel.might_fire(), "both channels are empty");
    assert_eq!(sel.try_select(Policy::Priority).map(|s| s.index), Err(SelectError::WouldBlock));

    // The first channel's only writer end retired: end of stream there, the second fires.
    let (c, d) = (Channel::new(0), Channel::new(1));
    drop(c.writer());
    d.try_write(4u32).map_err(|e| e.error).expect("buffer space");
    let mut sel = Select::new();
    sel.read(&c);
    sel.read(&d);
    assert_eq!(fired(sel.try_select(Policy::Priority)), (1, Some(4)));

    // A write to a full buffer first, a ready read second.
    let (full, ready) = (Channel::new(1), Channel::new(1));
    full.try_write(5u32).map_err(|e| e.error).expect("buffer space");
    ready.try_write(6u32).map_err(|e| e.error).expect("buffer space");
    let mut sel = Select::new();
    sel.write(&full, 7);
    sel.read(&ready);
    assert_eq!(fired(sel.try_select(Policy::Priority)), (1, Some(6)));
    assert_eq!(sel.take_value(0), Some(7), "the write that did not fire keeps its value");

    // A poisoned first channel fails the selection with its index, the value kept.
    full.poison();
    let mut sel = Select::new();
    sel.write(&full, 8u32);
    sel.read(&ready);
    assert!(sel.might_fire());
    assert_eq!(
        sel.try_select(Policy::Priority).map(|s| s.index),
        Err(SelectError::Poisoned { index: 0 })
    );
    assert_eq!(sel.take_value(0), Some(8));
}
