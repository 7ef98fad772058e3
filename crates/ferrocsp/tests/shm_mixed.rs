//! An Alt over a mix of in-process channels and shared ones (`shm::select_mixed`): exactly
//! one guard fires, whichever side's counterpart comes, and nothing is lost or duplicated.
//! Threads of one process stand for the other processes (a shared channel works the same
//! between threads); no timing is asserted, deadlines only bound a hung test.
#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use ferrocsp::shm::{select_mixed, Local, SelOp, Selected as Shm, ShmChannel, Wait};
use ferrocsp::{Channel, Error, Policy, Select, SelectError, Selected, Turn};

mod shm_support;
use shm_support::{read_by, write_by};

fn soon() -> Option<Instant> {
    Some(Instant::now() + Duration::from_secs(20))
}

fn write(ch: &ShmChannel, msg: &[u8]) -> Result<(), Error> {
    write_by(ch, msg, soon())
}

fn read(ch: &ShmChannel) -> Result<Vec<u8>, Error> {
    read_by(ch, soon())
}

/// What one mixed selection did: the shared guard's index and bytes read, or the local
/// selection's result.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    Shared(usize, Option<Vec<u8>>),
    Local(Result<Selected<u32>, SelectError>),
}

/// The order that tries the shared guards, then the local ones (or the other way round).
fn grouped(shared: usize, local: usize, local_first: bool) -> Vec<Turn> {
    let s = (0..shared).map(Turn::Other);
    let l = (0..local).map(Turn::Op);
    if local_first {
        l.chain(s).collect()
    } else {
        s.chain(l).collect()
    }
}

fn mixed(ops: &[SelOp<'_>], sel: &mut Select<u32>, first: bool, w: &mut Wait<'_>) -> Got {
    let order = grouped(ops.len(), sel.len(), first);
    mixed_in(ops, sel, &order, w)
}

fn mixed_in(ops: &[SelOp<'_>], sel: &mut Select<u32>, order: &[Turn], w: &mut Wait<'_>) -> Got {
    let mut local = Local::new(sel, Policy::Priority);
    let r = select_mixed(ops, Some((&mut local, order)), w);
    match r {
        Ok((_, Shm::Local)) => Got::Local(local.result.take().expect("a local result")),
        Ok((i, Shm::Read(slot))) => {
            let v = slot.buf().to_vec();
            slot.finish().expect("finish");
            Got::Shared(i, Some(v))
        }
        Ok((i, _)) => Got::Shared(i, None),
        Err(e) => panic!("select_mixed: {e:?}"),
    }
}

fn idle(ch: &Channel<u32>) {
    let s = ch.stats();
    assert_eq!((s.readers_waiting, s.writers_waiting), (0, 0), "{s:?}");
}

fn shared_idle(ch: &ShmChannel) {
    let s = ch.stats().expect("stats");
    assert_eq!((s.readers_waiting, s.writers_waiting), (0, 0), "{s:?}");
}

#[test]
fn in_process_writer_fires_a_waiting_mixed_alt() {
    let a: Channel<u32> = Channel::new(0);
    let x = ShmChannel::create(0, 1 << 16).expect("create");
    let tx = a.clone();
    let writer = std::thread::spawn(move || tx.write(5).map_err(|e| e.error));
    let mut sel = Select::new();
    sel.read(&a);
    let got = mixed(&[SelOp::read(&x)], &mut sel, false, &mut Wait::until(soon()));
    assert_eq!(got, Got::Local(Ok(Selected { index: 0, value: Some(5) })));
    assert_eq!(writer.join().expect("writer"), Ok(()));
    idle(&a);
    shared_idle(&x);
}

#[test]
fn shared_writer_fires_a_waiting_mixed_alt() {
    let a: Channel<u32> = Channel::new(0);
    let x = ShmChannel::create(0, 1 << 16).expect("create");
    std::thread::scope(|s| {
        let writer = s.spawn(|| write(&x, b"hi"));
        let mut sel = Select::new();
        sel.read(&a);
        let got = mixed(&[SelOp::read(&x)], &mut sel, true, &mut Wait::until(soon()));
        assert_eq!(got, Got::Shared(0, Some(b"hi".to_vec())));
        assert_eq!(writer.join().expect("writer"), Ok(()));
    });
    idle(&a);
    shared_idle(&x);
}

#[test]
fn timeout_withdraws_both_sides_and_keeps_the_value() {
    let a: Channel<u32> = Channel::new(0);
    let x = ShmChannel::create(0, 1 << 16).expect("create");
    let fill = |out: &mut [u8]| out.copy_from_slice(b"no");
    let mut sel = Select::new();
    sel.write(&a, 9);
    let mut local = Local::new(&mut sel, Policy::Priority);
    let dl = Some(Instant::now() + Duration::from_millis(30));
    let ops = [SelOp::write(&x, 2, &fill)];
    let order = grouped(1, 1, false);
    let r = select_mixed(&ops, Some((&mut local, &order)), &mut Wait::until(dl));
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert!(local.result.is_none());
    assert_eq!(sel.take_value(0), Some(9), "an unsent value stays with the Alt");
    idle(&a);
    shared_idle(&x);
}

#[test]
fn poisoned_in_process_channel_ends_a_waiting_mixed_alt() {
    let a: Channel<u32> = Channel::new(0);
    let x = ShmChannel::create(0, 1 << 16).expect("create");
    let p = a.clone();
    let mut sel = Select::new();
    sel.read(&a);
    let poisoner = std::thread::spawn(move || {
        while p.stats().readers_waiting == 0 {
            std::thread::yield_now();
        }
        p.poison();
    });
    let got = mixed(&[SelOp::read(&x)], &mut sel, false, &mut Wait::until(soon()));
    assert_eq!(got, Got::Local(Err(SelectError::Poisoned { index: 0 })));
    poisoner.join().expect("poisoner");
    shared_idle(&x);
}

#[test]
fn inputs_race_every_value_arrives_once() {
    // An in-process writer and a shared writer race for one mixed Alt, again and again.
    const N: u32 = 400;
    let a: Channel<u32> = Channel::new(0);
    let x = ShmChannel::create(0, 1 << 16).expect("create");
    let (mut local_got, mut shared_got) = (Vec::new(), Vec::new());
    std::thread::scope(|s| {
        let tx = a.clone();
        s.spawn(move || (0..N).for_each(|i| tx.write(i).map_err(|e| e.error).expect("write")));
        s.spawn(|| (0..N).for_each(|i| write(&x, &i.to_le_bytes()).expect("write")));
        let mut sel = Select::new();
        for k in 0..2 * N {
            sel.clear();
            sel.read(&a);
            match mixed(&[SelOp::read(&x)], &mut sel, k % 2 == 0, &mut Wait::until(soon())) {
                Got::Local(Ok(Selected { index: 0, value: Some(v) })) => local_got.push(v),
                Got::Shared(0, Some(b)) => {
                    shared_got.push(u32::from_le_bytes(b.try_into().expect("4 bytes")))
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    assert_eq!(local_got, (0..N).collect::<Vec<_>>());
    assert_eq!(shared_got, (0..N).collect::<Vec<_>>());
    idle(&a);
    shared_idle(&x);
}

#[test]
fn outputs_race_every_value_is_sent_once() {
    // One mixed Alt offers each value on an in-process and a shared rendezvous channel at
    // once; a reader on each side takes what it gets. Every value reaches exactly one.
    const N: u32 = 400;
    let a: Channel<u32> = Channel::new(0);
    let x = ShmChannel::create(0, 1 << 16).expect("create");
    let (local_got, shared_got) = std::thread::scope(|s| {
        let rx = a.clone();
        let local = s.spawn(move || std::iter::from_fn(|| rx.read().ok()).collect::<Vec<_>>());
        let shared = s.spawn(|| {
            std::iter::from_fn(|| read(&x).ok())
                .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect::<Vec<_>>()
        });
        let mut sel = Select::new();
        for i in 0..N {
            let msg = i.to_le_bytes();
            let fill = |out: &mut [u8]| out.copy_from_slice(&msg);
            sel.clear();
            sel.write(&a, i);
            let ops = [SelOp::write(&x, 4, &fill)];
            match mixed(&ops, &mut sel, i % 2 == 0, &mut Wait::until(soon())) {
                Got::Local(Ok(Selected { index: 0, value: None })) => {
                    assert_eq!(sel.take_value(0), None, "sent");
                }
                Got::Shared(0, None) => assert_eq!(sel.take_value(0), Some(i), "kept"),
                other => panic!("unexpected {other:?}"),
            }
        }
        a.poison();
        x.poison().expect("poison");
        (local.join().expect("local reader"), shared.join().expect("shared reader"))
    });
    let mut all: Vec<u32> = local_got.iter().chain(&shared_got).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..N).collect::<Vec<_>>(), "each value once");
}

#[test]
fn priority_is_exact_across_interleaved_transports() {
    // Readiness fixed before each choice (buffered values), so the choice is known.
    let (b, d): (Channel<u32>, Channel<u32>) = (Channel::new(1), Channel::new(1));
    let a = ShmChannel::create(1, 1 << 16).expect("create");
    let c = ShmChannel::create(1, 1 << 16).expect("create");
    let ops = [SelOp::read(&a), SelOp::read(&c)];
    let mut sel = Select::new();
    sel.read(&b);
    sel.read(&d);
    // [local b, shared a, local d], a and d ready: a.
    write(&a, b"a").expect("write a");
    d.write(4).map_err(|e| e.error).expect("write d");
    let order = [Turn::Op(0), Turn::Other(0), Turn::Op(1), Turn::Other(1)];
    let got = mixed_in(&ops, &mut sel, &order, &mut Wait::until(soon()));
    assert_eq!(got, Got::Shared(0, Some(b"a".to_vec())));
    // [shared a, local b, shared c, local d], b, c and d ready: b.
    b.write(2).map_err(|e| e.error).expect("write b");
    write(&c, b"c").expect("write c");
    let order = [Turn::Other(0), Turn::Op(0), Turn::Other(1), Turn::Op(1)];
    let got = mixed_in(&ops, &mut sel, &order, &mut Wait::until(soon()));
    assert_eq!(got, Got::Local(Ok(Selected { index: 0, value: Some(2) })));
    // [local d, shared c, ...]: d, then c.
    let order = [Turn::Op(1), Turn::Other(1), Turn::Op(0), Turn::Other(0)];
    let got = mixed_in(&ops, &mut sel, &order, &mut Wait::until(soon()));
    assert_eq!(got, Got::Local(Ok(Selected { index: 1, value: Some(4) })));
    let got = mixed_in(&ops, &mut sel, &order, &mut Wait::until(soon()));
    assert_eq!(got, Got::Shared(1, Some(b"c".to_vec())));
    idle(&b);
    idle(&d);
    shared_idle(&a);
    shared_idle(&c);
}

#[test]
fn an_offer_to_an_idle_reader_stops_the_guards_after_it() {
    // A shared rendezvous output whose reader is blocked in a plain read counts as ready: a
    // ready local guard after it in the order does not fire, the offer is taken.
    let b: Channel<u32> = Channel::new(1);
    let x = ShmChannel::create(0, 1 << 16).expect("create");
    b.write(7).map_err(|e| e.error).expect("write b");
    std::thread::scope(|s| {
        let reader = s.spawn(|| read(&x));
        while x.stats().expect("stats").readers_waiting == 0 {
            std::thread::yield_now();
        }
        let fill = |out: &mut [u8]| out.copy_from_slice(b"offer");
        let ops = [SelOp::write(&x, 5, &fill)];
        let mut sel = Select::new();
        sel.read(&b);
        let got = mixed(&ops, &mut sel, false, &mut Wait::until(soon()));
        assert_eq!(got, Got::Shared(0, None));
        assert_eq!(reader.join().expect("reader"), Ok(b"offer".to_vec()));
    });
    assert_eq!(b.read(), Ok(7), "the local guard did not fire");
    shared_idle(&x);
}

#[test]
fn an_order_that_misses_or_repeats_a_guard_is_refused() {
    let b: Channel<u32> = Channel::new(1);
    let x = ShmChannel::create(1, 1 << 16).expect("create");
    let ops = [SelOp::read(&x)];
    let mut sel = Select::new();
    sel.read(&b);
    for order in
        [&[Turn::Other(0)][..], &[Turn::Op(0), Turn::Op(0)], &[Turn::Other(1), Turn::Op(0)]]
    {
        let mut local = Local::new(&mut sel, Policy::Priority);
        let r = select_mixed(&ops, Some((&mut local, order)), &mut Wait::until(soon()));
        assert!(
            matches!(r, Err(Error::Io { kind: std::io::ErrorKind::InvalidInput, .. })),
            "{order:?}: {r:?}"
        );
    }
}
