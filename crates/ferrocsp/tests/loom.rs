//! loom models of the engine's hand-off, abort, poison, retire and selection protocols.
//!
//! Run with:
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p ferrocsp --release --test loom`
//!
//! loom has no clock, so a timeout is modelled by the owner withdrawing its registration with
//! [`Select::abort`] right after [`Select::start`] returned `Pending`: the abort races every
//! counterpart, exactly like a timer firing at the worst moment. Blocking operations park through
//! `loom::thread::park`, so plain `read`/`write`/`select` are modelled as they are.
//!
//! Each model keeps to two or three threads and a handful of operations; the preemption bound
//! (3 unless `LOOM_MAX_PREEMPTIONS` says otherwise) keeps the whole file to a few seconds, and
//! every model also passes with `LOOM_MAX_PREEMPTIONS=6` (minutes).
#![cfg(loom)]

use ferrocsp::{Channel, Error, Policy, Poll, Select, SelectError, Selected, Waker};
use loom::thread;

/// Runs `f` under loom with a default preemption bound.
fn model<F>(f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

type Finished<T> = Option<Result<Selected<T>, SelectError>>;

/// Starts `sel` and, if it had to register, withdraws at once: a timeout at the worst moment.
/// Returns what fired (`None`: nothing fired and nothing was consumed).
fn start_then_abort<T>(sel: &mut Select<T>) -> Finished<T> {
    let r = match sel.start(Policy::Priority, Waker::current_thread(), None) {
        Poll::Ready(r) => Some(r),
        Poll::Pending => sel.abort(),
    };
    assert!(!sel.is_pending(), "an aborted selection leaves no registration behind");
    r
}

/// The channel is quiescent: nobody waits and nothing is buffered.
fn assert_idle<T>(ch: &Channel<T>) {
    let s = ch.stats();
    assert_eq!((s.readers_waiting, s.writers_waiting, s.buffered), (0, 0, 0), "{s:?}");
}

// ----- plain channels -----

#[test]
fn rendezvous_handoff() {
    model(|| {
        let ch = Channel::new(0);
        let tx = ch.clone();
        let writer = thread::spawn(move || tx.write(7u32).map_err(|e| e.error));
        assert_eq!(ch.read(), Ok(7));
        assert_eq!(writer.join().expect("writer thread"), Ok(()));
        assert_idle(&ch);
    });
}

#[test]
fn rendezvous_handoff_reader_spawned() {
    // The same hand-off with the roles of spawned and main thread swapped.
    model(|| {
        let ch = Channel::new(0);
        let rx = ch.clone();
        let reader = thread::spawn(move || rx.read());
        assert!(ch.write(7u32).is_ok());
        assert_eq!(reader.join().expect("reader thread"), Ok(7));
        assert_idle(&ch);
    });
}

#[test]
fn aborted_reader_vs_try_write() {
    // A reader registers and times out while a writer tries a non-blocking write: the value is
    // delivered exactly once or not at all, and the writer's result says which.
    model(|| {
        let ch = Channel::new(0);
        let tx = ch.clone();
        let writer = thread::spawn(move || tx.try_write(1u32).map_err(|e| (e.error, e.value)));
        let mut sel = Select::new();
        sel.read(&ch);
        let got = start_then_abort(&mut sel);
        let sent = writer.join().expect("writer thread");
        match (got, sent) {
            (Some(Ok(s)), Ok(())) => assert_eq!((s.index, s.value), (0, Some(1))),
            (None, Err((Error::WouldBlock, 1))) => {}
            other => panic!("inconsistent outcome: {other:?}"),
        }
        assert_idle(&ch);
    });
}

#[test]
fn aborted_reader_vs_blocking_write() {
    // A reader registers and times out while a writer blocks in `write`; if the aborted reader
    // did not get the value, a second read must (nothing lost, nothing duplicated).
    model(|| {
        let ch = Channel::new(0);
        let tx = ch.clone();
        let writer = thread::spawn(move || tx.write(1u32).map_err(|e| e.error));
        let mut sel = Select::new();
        sel.read(&ch);
        let got = match start_then_abort(&mut sel) {
            Some(Ok(s)) => s.value,
            None => None,
            Some(Err(e)) => panic!("unexpected {e:?}"),
        };
        let second = match got {
            Some(_) => None,
            None => Some(ch.read()),
        };
        assert_eq!(writer.join().expect("writer thread"), Ok(()));
        match (got, second) {
            (Some(1), None) | (None, Some(Ok(1))) => {}
            other => panic!("value lost or duplicated: {other:?}"),
        }
        assert_idle(&ch);
    });
}

#[test]
fn aborted_writer_vs_aborted_reader() {
    // Both sides time out at the worst moment: the writer's value went to the reader exactly
    // when both say so; otherwise the writer still holds it.
    model(|| {
        let ch = Channel::new(0);
        let tx = ch.clone();
        let writer = thread::spawn(move || {
            let mut sel = Select::new();
            sel.write(&tx, 1u32);
            let fired = start_then_abort(&mut sel);
            (fired.map(|r| r.map(|s| s.index)), sel.take_value(0))
        });
        let mut sel = Select::new();
        sel.read(&ch);
        let got = start_then_abort(&mut sel);
        let (fired, kept) = writer.join().expect("writer thread");
        match (got, fired, kept) {
            (Some(Ok(s)), Some(Ok(0)), None) => assert_eq!(s.value, Some(1)),
            (None, None, Some(1)) => {}
            other => panic!("inconsistent outcome: {other:?}"),
        }
        assert_idle(&ch);
    });
}

#[test]
fn poison_vs_blocked_reader() {
    model(|| {
        let ch: Channel<u32> = Channel::new(0);
        let rx = ch.clone();
        let reader = thread::spawn(move || rx.read());
        ch.poison();
        assert_eq!(reader.join().expect("reader thread"), Err(Error::Poisoned));
        assert!(ch.stats().poisoned);
        assert_idle(&ch);
    });
}

#[test]
fn poison_vs_blocked_writer() {
    // The writer gets its value back in the WriteError, whether it blocked before the poison
    // or arrived after it.
    model(|| {
        let ch = Channel::new(0);
        let tx = ch.clone();
        let writer =
            thread::spawn(move || tx.write(String::from("v")).map_err(|e| (e.error, e.value)));
        ch.poison();
        assert_eq!(
            writer.join().expect("writer thread"),
            Err((Error::Poisoned, String::from("v")))
        );
        assert_idle(&ch);
    });
}

#[test]
fn move_vs_blocked_writers_loses_and_duplicates_nothing() {
    // A buffered channel moves to another transport while two writers race for its one slot:
    // every value is either handed out by the move (its write succeeded) or handed back to its
    // writer with `Moved` (it was not sent), never both, never neither.
    model(|| {
        let ch = Channel::new(1);
        let writers: Vec<_> = [1u32, 2]
            .into_iter()
            .map(|v| {
                let tx = ch.clone();
                thread::spawn(move || tx.write(v).map_err(|e| (e.error, e.value)))
            })
            .collect();
        let mut seen = ch.close_moved();
        for w in writers {
            match w.join().expect("writer thread") {
                Ok(()) => {}
                Err((Error::Moved, v)) => seen.push(v),
                Err(other) => panic!("a writer failed with {other:?}"),
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, [1, 2]);
        assert_eq!(ch.read(), Err(Error::Moved));
        assert_idle(&ch);
    });
}

#[test]
fn move_vs_blocked_reader() {
    model(|| {
        let ch: Channel<u32> = Channel::new(0);
        let rx = ch.clone();
        let reader = thread::spawn(move || rx.read());
        assert!(ch.close_moved().is_empty());
        assert_eq!(reader.join().expect("reader thread"), Err(Error::Moved));
        assert!(!ch.stats().poisoned, "a move is not poison");
        assert_idle(&ch);
    });
}

#[test]
fn buffered_capacity_one_two_writers_one_reader() {
    model(|| {
        let ch = Channel::new(1);
        let writers: Vec<_> = [1u32, 2]
            .into_iter()
            .map(|v| {
                let tx = ch.clone();
                thread::spawn(move || tx.write(v).map_err(|e| e.error))
            })
            .collect();
        let (first, second) = (ch.read(), ch.read());
        assert!(matches!((first, second), (Ok(1), Ok(2)) | (Ok(2), Ok(1))), "{first:?} {second:?}");
        for w in writers {
            assert_eq!(w.join().expect("writer thread"), Ok(()));
        }
        assert_idle(&ch);
    });
}

#[test]
fn retire_last_writer_vs_blocked_reader() {
    // Rendezvous: the reader takes the one value, then sees end-of-stream when the only writer
    // end retires, whether it was blocked at that moment or not.
    model(|| {
        let ch = Channel::new(0);
        let (r, w) = (ch.reader(), ch.writer());
        let writer = thread::spawn(move || {
            let sent = w.write(1u32).map_err(|e| e.error);
            w.retire();
            sent
        });
        assert_eq!(r.read(), Ok(1));
        assert_eq!(r.read(), Err(Error::Retired));
        assert_eq!(writer.join().expect("writer thread"), Ok(()));
        assert!(ch.stats().retired);
        assert_idle(&ch);
    });
}

#[test]
fn retire_last_writer_buffered_loses_nothing() {
    // Buffered: the value written before the retirement is still read, then end-of-stream.
    model(|| {
        let ch = Channel::new(1);
        let (r, w) = (ch.reader(), ch.writer());
        let writer = thread::spawn(move || {
            let sent = w.write(1u32).map_err(|e| e.error);
            drop(w); // dropping the last clone retires the end
            sent
        });
        assert_eq!(r.read(), Ok(1));
        assert_eq!(r.read(), Err(Error::Retired));
        assert_eq!(writer.join().expect("writer thread"), Ok(()));
        assert_idle(&ch);
    });
}

#[test]
fn retire_last_reader_vs_blocked_writer() {
    // The only reader end retires while a writer blocks: the writer fails with Retired and
    // gets its value back.
    model(|| {
        let ch = Channel::new(0);
        let r = ch.reader();
        let tx = ch.clone();
        let writer = thread::spawn(move || tx.write(5u32).map_err(|e| (e.error, e.value)));
        r.retire();
        assert_eq!(writer.join().expect("writer thread"), Err((Error::Retired, 5)));
        assert_idle(&ch);
    });
}

// ----- selection (Alt) -----

#[test]
fn two_selectors_race_for_one_writer() {
    // Two blocking selectors read the same channel; one writer sends one value. Exactly one
    // selector gets it; the other stays pending until `stop` is poisoned, which releases it
    // through its second operation.
    model(|| {
        let (ch, stop) = (Channel::new(0), Channel::new(0));
        let selectors: Vec<_> = (0..2)
            .map(|_| {
                let (ch, stop) = (ch.clone(), stop.clone());
                thread::spawn(move || {
                    let mut sel = Select::new();
                    sel.read(&ch);
                    sel.read(&stop);
                    sel.select(Policy::Priority).map(|s| (s.index, s.value))
                })
            })
            .collect();
        assert!(ch.write(9u32).is_ok());
        stop.poison();
        let results: Vec<_> = selectors.into_iter().map(|t| t.join().expect("selector")).collect();
        let won = Ok((0, Some(9)));
        let released = Err(SelectError::Poisoned { index: 1 });
        assert!(
            results == [won, released] || results == [released, won],
            "exactly one selector gets the value: {results:?}"
        );
        assert_idle(&ch);
    });
}

#[test]
fn blocking_selector_vs_aborting_selector() {
    // Two selectors race for one value; one of them times out (aborts) at the worst moment.
    // Exactly one gets the value; the aborting one leaves nothing behind.
    model(|| {
        let (ch, stop) = (Channel::new(0), Channel::new(0));
        let (ch2, stop2) = (ch.clone(), stop.clone());
        let blocking = thread::spawn(move || {
            let mut sel = Select::new();
            sel.read(&ch2);
            sel.read(&stop2);
            sel.select(Policy::Priority).map(|s| (s.index, s.value))
        });
        let tx = ch.clone();
        let writer = thread::spawn(move || tx.write(9u32).map_err(|e| e.error));
        let mut sel = Select::new();
        sel.read(&ch);
        let aborted = start_then_abort(&mut sel);
        assert_eq!(writer.join().expect("writer thread"), Ok(()));
        stop.poison();
        let blocked = blocking.join().expect("blocking selector");
        match (aborted, blocked) {
            (Some(Ok(s)), Err(SelectError::Poisoned { index: 1 })) => assert_eq!(s.value, Some(9)),
            (None, Ok((0, Some(9)))) => {}
            other => panic!("value lost or duplicated: {other:?}"),
        }
        assert_idle(&ch);
    });
}

#[test]
fn selector_vs_poison() {
    // A selector waits on a read and a write; poisoning the write's channel fails the
    // selection with that index, and the unsent value comes back.
    model(|| {
        let (a, b) = (Channel::new(0), Channel::new(0));
        let (a2, b2) = (a.clone(), b.clone());
        let selector = thread::spawn(move || {
            let mut sel = Select::new();
            sel.read(&a2);
            sel.write(&b2, 5u32);
            let r = sel.select(Policy::Priority).map(|s| s.index);
            (r, sel.take_value(1))
        });
        b.poison();
        assert_eq!(
            selector.join().expect("selector"),
            (Err(SelectError::Poisoned { index: 1 }), Some(5))
        );
        assert_idle(&a);
        assert_idle(&b);
    });
}

/// A selector over a read of `a` and a write to `b` times out while one counterpart thread
/// tries a write to `a` and a read from `b` (in the given order): at most one operation fired,
/// and each counterpart operation agrees with it.
///
/// One counterpart thread makes both attempts, rather than one thread each, because of a loom
/// limitation: loom 0.7's `Thread::unpark` resumes a thread whatever it is blocked on
/// (tokio-rs/loom#249), so a late wake-up from one counterpart, reaching the selector while it
/// waits for a channel lock held by the other, aborts the model ("expected to be able to
/// acquire lock"). On real threads such an unpark only leaves a token for a later `park`.
fn selector_abort_vs_counterparts(write_first: bool) {
    model(move || {
        let (a, b) = (Channel::new(0), Channel::new(0));
        let (a2, b2) = (a.clone(), b.clone());
        let counterpart = thread::spawn(move || {
            let write = || a2.try_write(1u32).map_err(|e| e.value);
            if write_first {
                let sent = write();
                (sent, b2.try_read())
            } else {
                let taken = b2.try_read();
                (write(), taken)
            }
        });
        let mut sel = Select::new();
        sel.read(&a);
        sel.write(&b, 2);
        let fired = start_then_abort(&mut sel);
        let kept = sel.take_value(1);
        let (sent, taken) = counterpart.join().expect("counterpart");
        match fired {
            Some(Ok(s)) if s.index == 0 => {
                assert_eq!(
                    (s.value, sent, taken, kept),
                    (Some(1), Ok(()), Err(Error::WouldBlock), Some(2))
                );
            }
            Some(Ok(s)) if s.index == 1 => {
                assert_eq!((s.value, sent, taken, kept), (None, Err(1), Ok(2), None));
            }
            None => assert_eq!((sent, taken, kept), (Err(1), Err(Error::WouldBlock), Some(2))),
            other => panic!("unexpected {other:?}"),
        }
        assert_idle(&a);
        assert_idle(&b);
    });
}

#[test]
fn selector_abort_vs_writer_then_reader() {
    selector_abort_vs_counterparts(true);
}

#[test]
fn selector_abort_vs_reader_then_writer() {
    selector_abort_vs_counterparts(false);
}

#[test]
fn select_vs_select_both_ends() {
    // One selector writes, the other reads the same rendezvous channel: whichever registers
    // first, the second completes it (no livelock, both finish).
    model(|| {
        let ch = Channel::new(0);
        let tx = ch.clone();
        let writer = thread::spawn(move || {
            let mut sel = Select::new();
            sel.write(&tx, 3u32);
            sel.select(Policy::Priority).map(|s| s.index)
        });
        let mut sel = Select::new();
        sel.read(&ch);
        let got = sel.select(Policy::Priority).map(|s| (s.index, s.value));
        assert_eq!(got, Ok((0, Some(3))));
        assert_eq!(writer.join().expect("writer selector"), Ok(0));
        assert_idle(&ch);
    });
}

#[test]
fn select_vs_select_crossed_channels() {
    // Two selectors that could meet on either of two channels: A writes `x` or reads `y`,
    // B reads `x` or writes `y`. They must meet on exactly one channel and agree on which.
    model(|| {
        let (x, y) = (Channel::new(0), Channel::new(0));
        let (x2, y2) = (x.clone(), y.clone());
        let a = thread::spawn(move || {
            let mut sel = Select::new();
            sel.write(&x2, 10u32);
            sel.read(&y2);
            let r = sel.select(Policy::Priority).map(|s| (s.index, s.value));
            (r, sel.take_value(0))
        });
        let mut sel = Select::new();
        sel.read(&x);
        sel.write(&y, 20);
        let b = sel.select(Policy::Priority).map(|s| (s.index, s.value));
        let b_kept = sel.take_value(1);
        let (a, a_kept) = a.join().expect("selector A");
        match (a, b) {
            (Ok((0, None)), Ok((0, Some(10)))) => assert_eq!((a_kept, b_kept), (None, Some(20))),
            (Ok((1, Some(20))), Ok((1, None))) => assert_eq!((a_kept, b_kept), (Some(10), None)),
            other => panic!("selectors disagree: {other:?}"),
        }
        assert_idle(&x);
        assert_idle(&y);
    });
}

#[test]
fn alt_does_not_rendezvous_with_itself() {
    // An Alt reading and writing the same channel can only meet another party: here a plain
    // reader, so its write fires.
    model(|| {
        let ch = Channel::new(0);
        let rx = ch.clone();
        let reader = thread::spawn(move || rx.read());
        let mut sel = Select::new();
        sel.read(&ch);
        sel.write(&ch, 4u32);
        let fired = sel.select(Policy::Priority).map(|s| (s.index, s.value));
        assert_eq!(fired, Ok((1, None)));
        assert_eq!(reader.join().expect("reader thread"), Ok(4));
        assert_idle(&ch);
    });
}

// ----- plain operations started in one critical section (`start_read`, `start_write`) -----

/// Drives a started selection to its end on this thread: park, resume, until it is over.
fn drive<T>(sel: &mut Select<T>, mut poll: Poll<T>) -> Result<Selected<T>, SelectError> {
    loop {
        match poll {
            Poll::Ready(r) => return r,
            Poll::Pending => {
                sel.park(None);
                poll = sel.resume();
            }
        }
    }
}

#[test]
fn single_ops_handoff_twice_on_recycled_selections() {
    // Two rounds of `start_write` against `start_read` on kept selections: each round's cell
    // and slot are recycled by the next (`Arc::get_mut`), and a finished operation whose
    // counterpart removed its entry skips the channel lock. loom's cell checks that every slot
    // access stays ordered with the counterpart's and the values arrive once, in order.
    model(|| {
        let ch = Channel::new(0);
        let tx = ch.clone();
        let writer = thread::spawn(move || {
            let mut sel = Select::new();
            let waker = Waker::current_thread();
            for v in [1u32, 2] {
                sel.clear();
                let poll = sel.start_write(&tx, v, &waker, None);
                assert_eq!(drive(&mut sel, poll).map(|s| s.index), Ok(0));
                assert_eq!(sel.take_value(0), None, "a write that fired gave its value away");
            }
        });
        let mut sel = Select::new();
        let waker = Waker::current_thread();
        for v in [1u32, 2] {
            sel.clear();
            let poll = sel.start_read(&ch, &waker, None);
            assert_eq!(drive(&mut sel, poll).map(|s| s.value), Ok(Some(v)));
        }
        writer.join().expect("writer thread");
        assert_idle(&ch);
    });
}

#[test]
fn single_write_aborted_vs_reader() {
    // A `start_write` that registers and times out at once, against a blocking reader: the
    // value goes exactly once, either to the reader (the abort found it completed) or back to
    // the writer, who then writes it again normally.
    model(|| {
        let ch = Channel::new(0);
        let rx = ch.clone();
        let reader = thread::spawn(move || rx.read());
        let mut sel = Select::new();
        let got = match sel.start_write(&ch, 5u32, &Waker::current_thread(), None) {
            Poll::Ready(r) => Some(r),
            Poll::Pending => sel.abort(),
        };
        assert!(!sel.is_pending());
        match got {
            Some(Ok(s)) => assert_eq!((s.index, sel.take_value(0)), (0, None)),
            None => {
                let back = sel.take_value(0).expect("an aborted write keeps its value");
                assert!(ch.write(back).is_ok());
            }
            Some(Err(e)) => panic!("unexpected {e:?}"),
        }
        assert_eq!(reader.join().expect("reader thread"), Ok(5));
        assert_idle(&ch);
    });
}

#[test]
fn single_read_vs_poison() {
    // A `start_read` against a poisoner: it fails with `Poisoned` (registered or not) and
    // leaves nothing behind; no lock is needed to finish since the poisoner drained its entry.
    model(|| {
        let ch: Channel<u32> = Channel::new(0);
        let p = ch.clone();
        let poisoner = thread::spawn(move || p.poison());
        let mut sel = Select::new();
        let poll = sel.start_read(&ch, &Waker::current_thread(), None);
        assert_eq!(drive(&mut sel, poll).map(|s| s.index), Err(SelectError::Poisoned { index: 0 }));
        poisoner.join().expect("poisoner thread");
        assert!(!sel.is_pending());
        assert_idle(&ch);
    });
}
