//! Classic channel scenarios (in the spirit of Go's `chan_test.go` and crossbeam-channel's
//! tests): ping-pong, many-to-many with exact counts, poison while blocked, timeouts racing
//! hand-offs, FIFO order, non-blocking operations, counted ends and retire, stats.
//!
//! Every blocking call that could hang on a bug has a generous timeout, so a bug shows up as a
//! failure rather than a stuck test run.
#![cfg(not(loom))]

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use ferrocsp::{Channel, Error, Stats};

mod common;
use common::{join, reps, reps_usize, wait_until, PATIENCE};

// ----- ping-pong and many-to-many -----

#[test]
fn ping_pong() {
    let (ping, pong) = (Channel::new(0), Channel::new(0));
    let (rx, tx) = (ping.clone(), pong.clone());
    let echo = thread::spawn(move || {
        while let Ok(n) = rx.read_timeout(PATIENCE) {
            if tx.write_timeout(n + 1, PATIENCE).is_err() {
                break;
            }
        }
    });
    let mut n = 0u64;
    for _ in 0..reps(2_000) {
        assert!(ping.write_timeout(n, PATIENCE).is_ok());
        n = pong.read_timeout(PATIENCE).expect("echo answers");
    }
    assert_eq!(n, reps(2_000));
    ping.poison();
    join(echo);
}

/// `writers` threads each send `per_writer` distinct values through counted writer ends;
/// `readers` threads read until end-of-stream. Checks the exact multiset received and that each
/// reader saw each writer's values in the order written.
fn many_to_many(capacity: usize, writers: usize, readers: usize, per_writer: usize) {
    let ch = Channel::new(capacity);
    let producers: Vec<_> = (0..writers)
        .map(|w| {
            let end = ch.writer();
            thread::spawn(move || {
                for i in 0..per_writer {
                    if let Err(e) = end.write_timeout(w * per_writer + i, PATIENCE) {
                        panic!("writer {w} failed at {i}: {}", e.error);
                    }
                }
                end.retire();
            })
        })
        .collect();
    let consumers: Vec<_> = (0..readers)
        .map(|_| {
            let end = ch.reader();
            thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    match end.read_timeout(PATIENCE) {
                        Ok(v) => got.push(v),
                        Err(Error::Retired) => return got,
                        Err(e) => panic!("reader failed: {e}"),
                    }
                }
            })
        })
        .collect();
    for p in producers {
        join(p);
    }
    let mut all = Vec::with_capacity(writers * per_writer);
    for c in consumers {
        let got = join(c);
        let mut last = vec![None; writers];
        for &v in &got {
            let w = v / per_writer;
            assert!(last[w] < Some(v), "reader saw writer {w} out of order");
            last[w] = Some(v);
        }
        all.extend(got);
    }
    all.sort_unstable();
    assert_eq!(all.len(), writers * per_writer, "values lost or duplicated");
    assert!(all.iter().copied().eq(0..writers * per_writer), "values lost or duplicated");
    let s = ch.stats();
    assert_eq!((s.buffered, s.readers_waiting, s.writers_waiting), (0, 0, 0));
    assert!(s.retired);
}

#[test]
fn many_to_many_rendezvous() {
    many_to_many(0, 8, 8, reps_usize(10_000) / 8);
}

#[test]
fn many_to_many_buffered() {
    many_to_many(16, 8, 8, reps_usize(10_000));
}

#[test]
fn many_to_many_buffered_capacity_one() {
    many_to_many(1, 8, 8, reps_usize(10_000) / 8);
}

// ----- poison -----

#[test]
fn poison_wakes_blocked_reader() {
    let ch: Channel<u32> = Channel::new(0);
    let rx = ch.clone();
    let reader = thread::spawn(move || rx.read_timeout(PATIENCE));
    wait_until("the reader blocks", || ch.stats().readers_waiting == 1);
    ch.poison();
    assert_eq!(join(reader), Err(Error::Poisoned));
    assert_eq!(ch.stats().readers_waiting, 0);
}

#[test]
fn poison_wakes_blocked_writer_and_returns_value() {
    for capacity in [0, 2] {
        let ch = Channel::new(capacity);
        for i in 0..capacity {
            assert!(ch.try_write(vec![i]).is_ok());
        }
        let tx = ch.clone();
        let writer = thread::spawn(move || tx.write_timeout(vec![42], PATIENCE));
        wait_until("the writer blocks", || ch.stats().writers_waiting == 1);
        ch.poison();
        let e = join(writer).expect_err("a poisoned write fails");
        assert_eq!((e.error, e.value), (Error::Poisoned, vec![42]));
        assert_eq!(ch.stats().buffered, 0, "poison drops the buffer");
    }
}

#[test]
fn poison_fails_every_later_operation_and_is_idempotent() {
    let ch = Channel::new(3);
    let token = Arc::new(());
    assert!(ch.write(Arc::clone(&token)).is_ok());
    ch.poison();
    ch.poison();
    assert_eq!(Arc::strong_count(&token), 1, "buffered values are dropped");
    assert_eq!(ch.read(), Err(Error::Poisoned));
    assert_eq!(ch.try_read(), Err(Error::Poisoned));
    assert_eq!(ch.read_timeout(Duration::from_millis(1)), Err(Error::Poisoned));
    let e = ch.write(Arc::clone(&token)).expect_err("poisoned");
    assert_eq!(e.error, Error::Poisoned);
    assert!(Arc::ptr_eq(&e.value, &token));
    assert_eq!(ch.try_write(Arc::clone(&token)).map_err(|e| e.error), Err(Error::Poisoned));
    assert!(ch.is_poisoned());
    // Through ends, including a retired one: poison wins over retire.
    let (r, w) = (ch.reader(), ch.writer());
    assert_eq!(r.read(), Err(Error::Poisoned));
    assert_eq!(w.write(Arc::clone(&token)).map_err(|e| e.error), Err(Error::Poisoned));
    w.poison();
    let s = ch.stats();
    assert!(s.poisoned);
    assert_eq!((s.buffered, s.readers_waiting, s.writers_waiting), (0, 0, 0));
}

#[test]
fn poison_wakes_every_blocked_party() {
    let ch: Channel<usize> = Channel::new(0);
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let rx = ch.clone();
            thread::spawn(move || rx.read_timeout(PATIENCE))
        })
        .collect();
    let full = Channel::new(1);
    assert!(full.try_write(0).is_ok());
    let writers: Vec<_> = (1..=4)
        .map(|i| {
            let tx = full.clone();
            thread::spawn(move || tx.write_timeout(i, PATIENCE).map_err(|e| (e.error, e.value)))
        })
        .collect();
    wait_until("all block", || {
        ch.stats().readers_waiting == 4 && full.stats().writers_waiting == 4
    });
    ch.poison();
    full.poison();
    for r in readers {
        assert_eq!(join(r), Err(Error::Poisoned));
    }
    for (i, w) in (1..=4).zip(writers) {
        assert_eq!(join(w), Err((Error::Poisoned, i)));
    }
}

// ----- timeouts racing hand-offs -----

/// Runs `rounds` rounds in which a writer thread and a reader thread each make one attempt with
/// a tiny timeout (or none); in each round the value is delivered exactly once or not at all,
/// and both sides agree.
fn timeouts_race_handoffs(
    capacity: usize,
    rounds: usize,
    write: impl Fn(&Channel<usize>, usize, usize) -> Result<(), usize> + Send + 'static,
    read: impl Fn(&Channel<usize>, usize) -> Option<usize> + Send + 'static,
) {
    let ch = Channel::new(capacity);
    let barrier = Arc::new(Barrier::new(2));
    let (tx, b) = (ch.clone(), Arc::clone(&barrier));
    let writer = thread::spawn(move || {
        let mut sent = Vec::new();
        for round in 0..rounds {
            b.wait();
            match write(&tx, round, round) {
                Ok(()) => sent.push(round),
                Err(v) => assert_eq!(v, round, "a failed write hands its own value back"),
            }
            b.wait();
        }
        sent
    });
    let mut got = Vec::new();
    for round in 0..rounds {
        barrier.wait();
        if let Some(v) = read(&ch, round) {
            assert_eq!(v, round, "a value from another round");
            got.push(v);
        }
        barrier.wait();
        // A buffered write may succeed without a reader: collect it before the next round.
        if let Ok(v) = ch.try_read() {
            assert_eq!(v, round);
            got.push(v);
        }
    }
    let sent = join(writer);
    assert_eq!(sent, got, "a value was lost or duplicated");
    let s = ch.stats();
    assert_eq!((s.buffered, s.readers_waiting, s.writers_waiting), (0, 0, 0));
}

fn tiny(round: usize) -> Duration {
    Duration::from_micros((round % 7) as u64 * 15)
}

#[test]
fn read_timeout_races_write_timeout() {
    timeouts_race_handoffs(
        0,
        3_000,
        |ch, v, round| ch.write_timeout(v, tiny(round)).map_err(|e| e.value),
        |ch, round| ch.read_timeout(tiny(round + 3)).ok(),
    );
}

#[test]
fn read_timeout_races_try_write() {
    timeouts_race_handoffs(
        0,
        3_000,
        |ch, v, _| ch.try_write(v).map_err(|e| e.value),
        |ch, round| ch.read_timeout(tiny(round)).ok(),
    );
}

#[test]
fn write_timeout_races_try_read() {
    timeouts_race_handoffs(
        0,
        3_000,
        |ch, v, round| ch.write_timeout(v, tiny(round)).map_err(|e| e.value),
        |ch, _| ch.try_read().ok(),
    );
}

#[test]
fn buffered_timeouts_race_handoffs() {
    timeouts_race_handoffs(
        1,
        3_000,
        |ch, v, round| ch.write_timeout(v, tiny(round)).map_err(|e| e.value),
        |ch, round| ch.read_timeout(tiny(round + 1)).ok(),
    );
}

#[test]
fn timeout_takes_and_sends_nothing() {
    let ch: Channel<u8> = Channel::new(0);
    let start = Instant::now();
    assert_eq!(ch.read_timeout(Duration::from_millis(20)), Err(Error::Timeout));
    assert!(start.elapsed() >= Duration::from_millis(20));
    let e = ch.write_timeout(9, Duration::from_millis(20)).expect_err("nobody reads");
    assert_eq!((e.error, e.value), (Error::Timeout, 9));
    assert_eq!(ch.read_deadline(Some(Instant::now())), Err(Error::Timeout));
    let s = ch.stats();
    assert_eq!((s.readers_waiting, s.writers_waiting), (0, 0), "a timed-out op leaves no entry");
}

// ----- FIFO order -----

#[test]
fn buffered_fifo_order() {
    let ch = Channel::new(100);
    for i in 0..100 {
        assert!(ch.try_write(i).is_ok());
    }
    for i in 0..100 {
        assert_eq!(ch.try_read(), Ok(i));
    }
}

#[test]
fn buffered_fifo_order_across_threads() {
    for capacity in [1, 4, 64] {
        let ch = Channel::new(capacity);
        let tx = ch.clone();
        let writer = thread::spawn(move || {
            for i in 0..reps(10_000) {
                assert!(tx.write_timeout(i, PATIENCE).is_ok());
            }
        });
        for i in 0..reps(10_000) {
            assert_eq!(ch.read_timeout(PATIENCE), Ok(i));
        }
        join(writer);
    }
}

#[test]
fn blocked_writers_refill_the_buffer_in_arrival_order() {
    let ch = Channel::new(1);
    assert!(ch.try_write(0).is_ok());
    let mut writers = Vec::new();
    for i in 1..=3 {
        let tx = ch.clone();
        writers.push(thread::spawn(move || tx.write_timeout(i, PATIENCE).map_err(|e| e.error)));
        wait_until("the writer blocks", || ch.stats().writers_waiting == i);
    }
    for i in 0..=3 {
        assert_eq!(ch.try_read(), Ok(i));
        // The freed place went straight to the next blocked writer.
        assert_eq!(ch.stats().buffered, usize::from(i < 3));
    }
    for w in writers {
        assert_eq!(join(w), Ok(()));
    }
}

// ----- non-blocking operations -----

#[test]
fn try_ops_on_empty_channels() {
    for capacity in [0, 1] {
        let ch: Channel<u8> = Channel::new(capacity);
        assert_eq!(ch.try_read(), Err(Error::WouldBlock));
    }
    let ch = Channel::new(0);
    let e = ch.try_write(String::from("x")).expect_err("no reader waits");
    assert_eq!((e.error, e.value.as_str()), (Error::WouldBlock, "x"));
}

#[test]
fn rendezvous_try_write_succeeds_only_when_a_reader_waits() {
    let ch = Channel::new(0);
    let rx = ch.clone();
    let reader = thread::spawn(move || rx.read_timeout(PATIENCE));
    wait_until("the reader blocks", || ch.stats().readers_waiting == 1);
    assert!(ch.try_write(5).is_ok());
    assert_eq!(join(reader), Ok(5));
    assert_eq!(ch.try_write(6).map_err(|e| e.error), Err(Error::WouldBlock));
}

#[test]
fn rendezvous_try_read_succeeds_only_when_a_writer_waits() {
    let ch = Channel::new(0);
    assert_eq!(ch.try_read(), Err(Error::WouldBlock));
    let tx = ch.clone();
    let writer = thread::spawn(move || tx.write_timeout(5, PATIENCE).map_err(|e| e.error));
    wait_until("the writer blocks", || ch.stats().writers_waiting == 1);
    assert_eq!(ch.try_read(), Ok(5));
    assert_eq!(join(writer), Ok(()));
    assert_eq!(ch.try_read(), Err(Error::WouldBlock));
}

#[test]
fn buffered_try_ops() {
    let ch = Channel::new(2);
    assert!(ch.try_write(1).is_ok());
    assert!(ch.try_write(2).is_ok());
    let e = ch.try_write(3).expect_err("full");
    assert_eq!((e.error, e.value), (Error::WouldBlock, 3));
    assert_eq!(ch.try_read(), Ok(1));
    assert!(ch.try_write(3).is_ok());
    assert_eq!(ch.try_read(), Ok(2));
    assert_eq!(ch.try_read(), Ok(3));
    assert_eq!(ch.try_read(), Err(Error::WouldBlock));
}

// ----- retire and counted ends -----

#[test]
fn retired_writers_drain_then_end_of_stream() {
    let ch = Channel::new(3);
    let (r, w) = (ch.reader(), ch.writer());
    assert!(w.write(1).is_ok());
    assert!(w.write(2).is_ok());
    w.retire();
    assert!(ch.is_retired());
    assert_eq!(r.read(), Ok(1));
    assert_eq!(r.try_read(), Ok(2));
    assert_eq!(r.read(), Err(Error::Retired));
    assert_eq!(r.try_read(), Err(Error::Retired));
    assert_eq!(ch.read_timeout(Duration::from_millis(1)), Err(Error::Retired));
    // Writing through the channel handle after the stream ended fails too.
    assert_eq!(ch.try_write(3).map_err(|e| (e.error, e.value)), Err((Error::Retired, 3)));
}

#[test]
fn retire_of_last_writer_wakes_blocked_reader() {
    let ch: Channel<u8> = Channel::new(0);
    let (r, w1, w2) = (ch.reader(), ch.writer(), ch.writer());
    let reader = thread::spawn(move || r.read_timeout(PATIENCE));
    wait_until("the reader blocks", || ch.stats().readers_waiting == 1);
    w1.retire();
    thread::sleep(Duration::from_millis(20));
    assert_eq!(ch.stats().readers_waiting, 1, "one writer end is still alive");
    drop(w2); // dropping the last clone retires it
    assert_eq!(join(reader), Err(Error::Retired));
}

#[test]
fn retired_readers_fail_writers() {
    let ch = Channel::new(0);
    let (r, w) = (ch.reader(), ch.writer());
    let tx = w.clone();
    let writer =
        thread::spawn(move || tx.write_timeout(7, PATIENCE).map_err(|e| (e.error, e.value)));
    wait_until("the writer blocks", || ch.stats().writers_waiting == 1);
    r.retire();
    assert_eq!(join(writer), Err((Error::Retired, 7)));
    assert_eq!(w.try_write(8).map_err(|e| (e.error, e.value)), Err((Error::Retired, 8)));
    assert_eq!(w.write(9).map_err(|e| e.error), Err(Error::Retired));
}

#[test]
fn retired_readers_drop_the_buffer() {
    let ch = Channel::new(2);
    let token = Arc::new(());
    let r = ch.reader();
    assert!(ch.write(Arc::clone(&token)).is_ok());
    drop(r);
    assert_eq!(Arc::strong_count(&token), 1);
    assert_eq!(ch.stats().buffered, 0);
}

#[test]
fn clone_is_the_same_end() {
    let ch: Channel<u8> = Channel::new(1);
    let w = ch.writer();
    let w2 = w.clone();
    assert_eq!(w, w2);
    assert_eq!(w.id(), w2.id());
    assert_eq!(ch.stats().writer_ends, 1, "a clone is not a new end");
    let other = ch.writer();
    assert_ne!(w, other);
    assert_eq!(ch.stats().writer_ends, 2);
    w2.retire();
    assert!(w.is_retired(), "retiring a clone retires the end");
    w.retire(); // idempotent
    assert_eq!(ch.stats().writer_ends, 1);
    assert!(!ch.is_retired());
    assert_eq!(w.channel(), &ch);
    // A dropped clone does not retire the end while another clone lives.
    let r = ch.reader();
    let r2 = r.clone();
    drop(r2);
    assert!(!r.is_retired());
    assert_eq!(ch.stats().reader_ends, 1);
    drop(r);
    assert_eq!(ch.stats().reader_ends, 0);
    assert!(ch.is_retired());
}

#[test]
fn retired_end_fails_without_touching_the_channel() {
    let ch = Channel::new(2);
    let (r1, r2, w1, w2) = (ch.reader(), ch.reader(), ch.writer(), ch.writer());
    assert!(w1.write(1).is_ok());
    r1.retire();
    w1.retire();
    assert_eq!(r1.read(), Err(Error::Retired));
    assert_eq!(r1.try_read(), Err(Error::Retired));
    assert_eq!(r1.read_timeout(PATIENCE), Err(Error::Retired));
    assert_eq!(w1.write(2).map_err(|e| (e.error, e.value)), Err((Error::Retired, 2)));
    assert_eq!(w1.write_timeout(3, PATIENCE).map_err(|e| e.error), Err(Error::Retired));
    assert!(!ch.is_retired(), "other ends are alive");
    assert_eq!(ch.stats().buffered, 1, "nothing was taken by the retired reader end");
    assert_eq!(r2.read(), Ok(1));
    assert!(w2.write(4).is_ok());
    assert_eq!(r2.read(), Ok(4));
}

#[test]
fn channel_without_ends_never_retires() {
    let ch: Channel<u8> = Channel::new(0);
    assert!(!ch.is_retired());
    assert_eq!(ch.read_timeout(Duration::from_millis(5)), Err(Error::Timeout));
    let s = ch.stats();
    assert_eq!((s.reader_ends, s.writer_ends, s.retired), (0, 0, false));
}

#[test]
fn end_of_stream_iteration() {
    let ch = Channel::new(0);
    let (r, w) = (ch.reader(), ch.writer());
    let producer = thread::spawn(move || {
        for i in 0..100 {
            assert!(w.write_timeout(i, PATIENCE).is_ok());
        }
    });
    let got: Vec<i32> = std::iter::from_fn(|| r.read_timeout(PATIENCE).ok()).collect();
    assert!(got.into_iter().eq(0..100));
    join(producer);
}

// ----- stats and buffer access -----

#[test]
fn stats_counters() {
    let ch: Channel<u32> = Channel::new(2);
    assert_eq!(ch.stats(), Stats { capacity: 2, ..Stats::default() });
    assert_eq!(ch.capacity(), 2);
    let (r, w) = (ch.reader(), ch.writer());
    assert!(w.write(1).is_ok());
    let s = ch.stats();
    assert_eq!((s.buffered, s.reader_ends, s.writer_ends, s.retired), (1, 1, 1, false));
    assert!(w.write(2).is_ok());
    let tx = ch.clone();
    let writer = thread::spawn(move || tx.write_timeout(3, PATIENCE).map_err(|e| e.error));
    wait_until("the writer blocks", || ch.stats().writers_waiting == 1);
    assert_eq!(ch.stats().buffered, 2);
    assert_eq!(r.read(), Ok(1));
    assert_eq!(join(writer), Ok(()));
    let s = ch.stats();
    assert_eq!((s.buffered, s.writers_waiting), (2, 0));
    assert_eq!((r.read(), r.read()), (Ok(2), Ok(3)));
    let rx = ch.clone();
    let reader = thread::spawn(move || rx.read_timeout(PATIENCE));
    wait_until("the reader blocks", || ch.stats().readers_waiting == 1);
    assert!(w.write(4).is_ok());
    assert_eq!(join(reader), Ok(4));
    assert_eq!(ch.stats().readers_waiting, 0);
    w.retire();
    let s = ch.stats();
    assert_eq!((s.writer_ends, s.retired, s.poisoned), (0, true, false));
    ch.poison();
    assert!(ch.stats().poisoned);
}

#[test]
fn visit_and_drain_buffered() {
    let ch = Channel::new(2);
    assert!(ch.try_write(1).is_ok());
    assert!(ch.try_write(2).is_ok());
    let tx = ch.clone();
    let writer = thread::spawn(move || tx.write_timeout(3, PATIENCE).map_err(|e| e.error));
    wait_until("the writer blocks", || ch.stats().writers_waiting == 1);
    let mut seen = Vec::new();
    assert!(ch.try_visit_buffered(|v| seen.push(*v)));
    assert_eq!(seen, [1, 2]);
    let mut drained = ch.drain_buffered();
    drained.sort_unstable();
    assert_eq!(drained, [1, 2, 3], "draining frees room for the blocked writer");
    assert_eq!(join(writer), Ok(()));
    assert_eq!(ch.stats().buffered, 0);
}

#[test]
fn handles_compare_by_channel() {
    let (a, b): (Channel<u8>, Channel<u8>) = (Channel::new(0), Channel::new(0));
    assert_eq!(a, a.clone());
    assert_ne!(a, b);
    assert_ne!(a.id(), b.id());
}

// ----- moving to another transport -----

/// A buffered channel that moves hands out its buffer, in order; every blocked operation (the
/// writers waiting for room too: their writes completing would overfill the channel), and
/// every later one, fails with `Moved` and keeps its value; nothing is poisoned.
#[test]
fn close_moved_hands_out_values_in_order_and_fails_the_rest() {
    let ch = Channel::new(2);
    ch.write(1u32).expect("buffered");
    ch.write(2).expect("buffered");
    let blocked: Vec<_> = [3u32, 4, 5]
        .into_iter()
        .map(|v| {
            let tx = ch.clone();
            let t = thread::spawn(move || {
                tx.write_timeout(v, PATIENCE).map_err(|e| (e.error, e.value))
            });
            wait_until("the writer blocks", || ch.stats().writers_waiting == (v - 2) as usize);
            t
        })
        .collect();
    assert_eq!(ch.close_moved(), vec![1, 2]);
    let outcomes: Vec<_> = blocked.into_iter().map(join).collect();
    let moved = |v| Err((Error::Moved, v));
    assert_eq!(outcomes, vec![moved(3), moved(4), moved(5)]);
    assert_eq!(ch.try_read(), Err(Error::Moved));
    assert_eq!(ch.try_write(6).map_err(|e| (e.error, e.value)), Err((Error::Moved, 6)));
    assert!(ch.close_moved().is_empty(), "idempotent");
    let s: Stats = ch.stats();
    assert!(!s.poisoned && s.buffered == 0 && s.writers_waiting == 0, "{s:?}");
}

// ----- the readiness hint (`might_read`/`might_write`) -----

/// The hint follows the state through each kind of change: buffered values, a blocked
/// counterpart, retirement and poison; and it is not trivially "might".
#[test]
fn readiness_hint_follows_the_state() {
    let ch: Channel<u32> = Channel::new(0);
    assert!(!ch.might_read() && !ch.might_write(), "an idle rendezvous channel has nothing");
    let reader = {
        let ch = ch.clone();
        thread::spawn(move || ch.read_timeout(PATIENCE))
    };
    wait_until("the reader blocks", || ch.stats().readers_waiting == 1);
    assert!(ch.might_write() && !ch.might_read(), "a blocked reader makes a write possible");
    ch.write_timeout(7, PATIENCE).map_err(|e| e.error).expect("write to the blocked reader");
    assert_eq!(join(reader), Ok(7));
    assert!(!ch.might_read() && !ch.might_write(), "nothing left after the hand-off");

    let buf: Channel<u32> = Channel::new(2);
    assert!(buf.might_write() && !buf.might_read());
    buf.try_write(1).map_err(|e| e.error).expect("buffer space");
    assert!(buf.might_write() && buf.might_read());
    buf.try_write(2).map_err(|e| e.error).expect("buffer space");
    assert!(!buf.might_write() && buf.might_read(), "a full buffer takes no write");
    buf.poison();
    assert!(buf.might_write() && buf.might_read(), "a poisoned channel fails at once");

    let ends: Channel<u32> = Channel::new(0);
    let w = ends.writer();
    assert!(!ends.might_read());
    drop(w);
    assert!(ends.might_read(), "end of stream is read at once");
    assert_eq!(ends.try_read(), Err(Error::Retired));
}

/// "Cannot" is never wrong in a quiet channel: before every operation of a pseudo-random
/// sequence (tries, ends made and retired, on channels of capacity 0 to 3), a false hint
/// means the try blocks.
#[test]
fn readiness_hint_never_says_cannot_when_a_try_succeeds() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    for round in 0..reps_usize(200) {
        let ch: Channel<u64> = Channel::new(round % 4);
        let mut readers = Vec::new();
        let mut writers = Vec::new();
        for step in 0..40u64 {
            let (may_read, may_write) = (ch.might_read(), ch.might_write());
            match next(6) {
                0 | 1 => {
                    let r = ch.try_read();
                    assert!(may_read || r == Err(Error::WouldBlock), "{round}/{step}: {r:?}");
                }
                2 | 3 => {
                    let r = ch.try_write(step).map_err(|e| e.error);
                    assert!(may_write || r == Err(Error::WouldBlock), "{round}/{step}: {r:?}");
                }
                4 => {
                    if next(2) == 0 {
                        readers.push(ch.reader());
                    } else {
                        writers.push(ch.writer());
                    }
                }
                _ => {
                    if next(2) == 0 {
                        readers.pop();
                    } else {
                        writers.pop();
                    }
                }
            }
        }
    }
}
