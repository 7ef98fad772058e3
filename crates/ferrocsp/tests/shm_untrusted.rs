//! A shared channel's segment is written by other processes: whatever they wrote is untrusted
//! (issue #16). A peer that scribbles over the segment must make the others fail with a clear
//! error (the channel poisoned, `poison_cause` says why), never an out-of-bounds access, an
//! endless loop or SIGBUS.
//!
//! The scribbling "peer" is a second mapping of the segment made by the test itself (through
//! `/proc/self/fd/<fd>`, as another process would attach); field offsets come from
//! `ShmChannel::layout_for_tests`, never hard-coded.
#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use ferrocsp::shm::{PoisonCause, ShmChannel, TestLayout};
use ferrocsp::Error;

mod shm_support;
use shm_support::{after, read_by, within, write_by};

/// The longest an operation on a scribbled segment may take before the test calls it a hang.
const HANG: Duration = Duration::from_secs(5);

fn soon() -> Option<Instant> {
    after(Duration::from_millis(50))
}

fn write(ch: &ShmChannel, msg: &[u8]) -> Result<(), Error> {
    write_by(ch, msg, soon())
}

fn read(ch: &ShmChannel) -> Result<Vec<u8>, Error> {
    read_by(ch, soon())
}

/// A second, independent mapping of a channel's segment: the hostile peer's view.
struct Peer {
    ptr: *mut u8,
    len: usize,
}

impl Peer {
    fn of(ch: &ShmChannel) -> Peer {
        Peer::of_fd(ch.fd())
    }

    /// A mapping of the segment this process holds as descriptor `fd`.
    fn of_fd(fd: i32) -> Peer {
        let path = std::ffi::CString::new(format!("/proc/self/fd/{fd}")).expect("path");
        // SAFETY: plain syscalls; the descriptor is closed once mapped.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
            assert!(fd >= 0, "open the segment");
            let mut st: libc::stat = std::mem::zeroed();
            assert_eq!(libc::fstat(fd, &mut st), 0);
            let len = st.st_size as usize;
            let ptr = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            );
            libc::close(fd);
            assert_ne!(ptr, libc::MAP_FAILED);
            Peer { ptr: ptr.cast(), len }
        }
    }

    fn put(&self, off: usize, bytes: &[u8]) {
        assert!(off + bytes.len() <= self.len, "scribble inside the segment");
        // SAFETY: in bounds (checked); the segment is shared memory any process may write.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(off), bytes.len()) };
    }

    fn put_u64(&self, off: usize, v: u64) {
        self.put(off, &v.to_ne_bytes());
    }

    fn get_u64(&self, off: usize) -> u64 {
        assert!(off + 8 <= self.len);
        // SAFETY: in bounds; a plain read of shared memory.
        unsafe { std::ptr::read_unaligned(self.ptr.add(off).cast::<u64>()) }
    }
}

// SAFETY: the mapping is plain shared memory, usable from any thread.
unsafe impl Send for Peer {}

impl Drop for Peer {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `of`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Runs `f` on another thread and fails the test if it does not return within `HANG` (an
/// endless loop under the segment's lock is one of the defects covered here).
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    within(HANG, f)
}

fn layout() -> TestLayout {
    ShmChannel::layout_for_tests()
}

/// The channel was poisoned because its segment is corrupt, and operations say so.
fn assert_corrupt(ch: &ShmChannel) {
    assert_eq!(ch.poison_cause(), Some(PoisonCause::Corrupt));
    assert_eq!(read(ch), Err(Error::Poisoned));
    assert_eq!(write(ch, b"x"), Err(Error::Poisoned));
}

#[test]
fn attach_refuses_a_header_whose_ring_does_not_fit_the_segment() {
    let ch = ShmChannel::create(4, 1 << 16).expect("create");
    let l = layout();
    let peer = Peer::of(&ch);
    let pid = std::process::id();
    for bad in [u64::MAX / 2, peer.get_u64(l.data_len) + 64, 100, 0] {
        let good = peer.get_u64(l.data_len);
        peer.put_u64(l.data_len, bad);
        let r = ShmChannel::attach(pid, ch.fd(), &ch.uuid());
        peer.put_u64(l.data_len, good);
        let e = r.expect_err("a ring length that disagrees with the segment");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
    }
    ShmChannel::attach(pid, ch.fd(), &ch.uuid()).expect("the repaired header attaches");
}

#[test]
fn the_ring_length_is_not_read_back_after_attach() {
    // A ring length scribbled after attach would put entries outside the mapping.
    let ch = ShmChannel::create(4, 1 << 16).expect("create");
    let l = layout();
    let peer = Peer::of(&ch);
    peer.put_u64(l.data_len, 1 << 40);
    peer.put_u64(l.capacity, u64::MAX);
    let ch = std::sync::Arc::new(ch);
    let c = ch.clone();
    bounded(move || {
        for i in 0u8..20 {
            write(&c, &[i; 100]).expect("write");
            assert_eq!(read(&c).expect("read"), vec![i; 100]);
        }
    });
    assert_eq!(ch.capacity(), 4);
}

#[test]
fn an_entry_of_size_zero_poisons_instead_of_looping() {
    let ch = ShmChannel::create(4, 1 << 16).expect("create");
    write(&ch, b"first").expect("write");
    let l = layout();
    let peer = Peer::of(&ch);
    let head = peer.get_u64(l.head);
    peer.put_u64(l.data_off + (head as usize) + l.entry_size, 0);
    let ch = std::sync::Arc::new(ch);
    let c = ch.clone();
    assert_eq!(bounded(move || read(&c)), Err(Error::Poisoned));
    assert_corrupt(&ch);
}

#[test]
fn entries_that_leave_the_ring_poison() {
    // Each scribble of the first entry: a size past the tail, a size that is not a multiple
    // of the alignment, a message longer than its entry.
    let l = layout();
    let cases: [(usize, u64); 4] =
        [(l.entry_size, 1 << 40), (l.entry_size, 65), (l.entry_len, 1 << 40), (l.entry_len, 4096)];
    for (field, value) in cases {
        let ch = ShmChannel::create(4, 1 << 16).expect("create");
        write(&ch, b"first").expect("write");
        let peer = Peer::of(&ch);
        let head = peer.get_u64(l.head) as usize;
        peer.put_u64(l.data_off + head + field, value);
        let ch = std::sync::Arc::new(ch);
        let c = ch.clone();
        assert_eq!(bounded(move || read(&c)), Err(Error::Poisoned), "field {field} = {value}");
        assert_corrupt(&ch);
    }
}

#[test]
fn a_head_or_tail_outside_the_ring_poisons() {
    let l = layout();
    for (field, value) in [(l.tail, 1 << 40), (l.head, 64 * 3), (l.tail, 7), (l.head, u64::MAX)] {
        let ch = ShmChannel::create(4, 1 << 16).expect("create");
        write(&ch, b"first").expect("write");
        let peer = Peer::of(&ch);
        peer.put_u64(field, value);
        let ch = std::sync::Arc::new(ch);
        let c = ch.clone();
        assert_eq!(bounded(move || read(&c)), Err(Error::Poisoned), "{field} = {value}");
        assert_corrupt(&ch);
    }
}

/// A buffered message a reader has claimed and copied out is the reader's: its writer was
/// told long ago that it was sent. `finish` used to fail when the segment turned out
/// inconsistent meanwhile (here a scribbled head; in `tests/shm_faults`, a peer that died
/// half-way through rewinding the ring), so the read raised and the value was lost with
/// nobody dead.
#[test]
fn a_claimed_message_stays_the_readers_when_the_ring_turns_out_corrupt() {
    let ch = ShmChannel::create(2, 1 << 16).expect("create");
    write(&ch, b"mine").expect("write");
    let slot = ch.begin_read(&mut ferrocsp::shm::Wait::nowait()).expect("claim");
    let copy = slot.buf().to_vec();
    let (peer, l) = (Peer::of(&ch), layout());
    peer.put_u64(l.head, peer.get_u64(l.tail) + 64);
    assert_eq!(slot.finish(), Ok(()), "the value was delivered");
    assert_eq!(copy, b"mine");
    assert_corrupt(&ch);
}

#[test]
fn counters_scribbled_to_zero_poison_instead_of_wrapping() {
    let l = layout();
    // `ready` zeroed alone would only hide the message (a reader's fast path sees an empty
    // channel and waits, as for one): `offered` is set so that the ring is walked.
    for field in [l.ready, l.buffered] {
        let ch = ShmChannel::create(4, 1 << 16).expect("create");
        write(&ch, b"first").expect("write");
        let peer = Peer::of(&ch);
        peer.put_u64(field, 0);
        peer.put_u64(l.offered, 1);
        let ch = std::sync::Arc::new(ch);
        let c = ch.clone();
        // The message is still found (the walk, not the counter, decides), but the count it
        // would take it from is impossible.
        let r = bounded(move || read(&c));
        assert!(matches!(r, Err(Error::Poisoned)), "field {field}: {r:?}");
        assert_corrupt(&ch);
    }
}

#[test]
fn the_segment_is_sealed_against_resizing() {
    let ch = ShmChannel::create(0, 1 << 16).expect("create");
    let path = std::ffi::CString::new(format!("/proc/self/fd/{}", ch.fd())).expect("path");
    // SAFETY: plain syscalls on a descriptor this test opens and closes.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        assert!(fd >= 0);
        let shrink = libc::ftruncate(fd, 4096);
        let shrink_err = std::io::Error::last_os_error();
        let grow = libc::ftruncate(fd, 1 << 30);
        let grow_err = std::io::Error::last_os_error();
        libc::close(fd);
        assert_eq!(shrink, -1, "shrinking a live segment would SIGBUS every process");
        assert_eq!(shrink_err.raw_os_error(), Some(libc::EPERM));
        assert_eq!(grow, -1, "the segment's size is fixed");
        assert_eq!(grow_err.raw_os_error(), Some(libc::EPERM));
    }
    write_read_rendezvous_still_works(&ch);
}

fn write_read_rendezvous_still_works(ch: &ShmChannel) {
    std::thread::scope(|s| {
        s.spawn(|| write(ch, b"v").expect("write"));
        assert_eq!(read(ch).expect("read"), b"v");
    });
}

#[test]
fn random_scribbles_over_a_live_segment_never_crash_or_hang() {
    // A deterministic xorshift: each trial writes random bytes at random places of the
    // header's state and the ring while values flow, then checks that every operation returns
    // (a value or an error) within the bound. A crash fails the whole test binary.
    let l = layout();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut poisoned = 0;
    for _trial in 0..200 {
        let ch = std::sync::Arc::new(ShmChannel::create(3, 1 << 14).expect("create"));
        let peer = Peer::of(&ch);
        let ring = peer.len - l.data_off;
        let mut plan = Vec::new();
        for _ in 0..4 {
            let (lo, span) =
                if rnd() % 2 == 0 { (l.state, l.state_len) } else { (l.data_off, ring) };
            let off = lo + (rnd() as usize % span.saturating_sub(8).max(1));
            plan.push((off, rnd()));
        }
        let c = ch.clone();
        bounded(move || {
            for (i, (off, v)) in plan.into_iter().enumerate() {
                let _ = write(&c, &[i as u8; 70]);
                peer.put(off, &v.to_ne_bytes()[..1 + (v as usize % 8)]);
                let _ = read(&c);
            }
            let _ = write(&c, b"after");
            let _ = read(&c);
            let _ = c.stats();
        });
        if ch.is_poisoned() {
            poisoned += 1;
        }
    }
    // Most trials hit something the channel checks; the point is that none crashed or hung.
    assert!(poisoned > 0, "no scribble was ever detected");
}

/// The lock word's value as a holder writes it: `tag << 32 | tid` (`lock.rs`).
fn holder(tid: u64, tag: u32) -> u64 {
    u64::from(tag) << 32 | tid
}

/// A lock word that a peer wrote over: with the robust pthread mutex the segment had, a
/// random owner made `pthread_mutex_lock` wait forever (no owner-died bit without a death).
/// Now a waiter looks at the holder the word names and takes the lock over: garbage poisons
/// as corrupt, a thread that is gone (or a live one's tid under another start time) as a
/// holder that died.
#[test]
fn a_scribbled_lock_word_poisons_instead_of_hanging() {
    let l = layout();
    // A process that has exited and been reaped: its tid names no thread now.
    // SAFETY: the child only exits.
    let dead = unsafe {
        let pid = libc::fork();
        if pid == 0 {
            libc::_exit(0);
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        pid as u64
    };
    let cases = [
        (0xdead_beef_dead_beef, PoisonCause::Corrupt),
        (0x0000_0000_0000_1234, PoisonCause::Corrupt),
        (holder((1 << 22) + 5, 0x1235), PoisonCause::Corrupt),
        (holder(dead, 0x1235), PoisonCause::OwnerDied),
        (holder(u64::from(std::process::id()), 0x0f0f_0f0f), PoisonCause::OwnerDied),
    ];
    for (value, cause) in cases {
        let ch = std::sync::Arc::new(ShmChannel::create(4, 1 << 16).expect("create"));
        write(&ch, b"first").expect("write");
        let peer = Peer::of(&ch);
        peer.put_u64(l.lock, value);
        let c = ch.clone();
        let t0 = Instant::now();
        let r = bounded(move || read(&c));
        assert_eq!(r, Err(Error::Poisoned), "lock word {value:#x}");
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?} for {value:#x}", t0.elapsed());
        assert_eq!(ch.poison_cause(), Some(cause), "lock word {value:#x}");
        let c = ch.clone();
        bounded(move || {
            assert_eq!(write(&c, b"x"), Err(Error::Poisoned));
            assert!(c.stats().expect("stats").poisoned);
        });
    }
}

/// A waiting count a peer wrote over (and the wait records that say whose it is): an
/// operation that would take a waiter off a count it is not in finds the segment corrupt.
#[test]
fn scribbled_wait_records_poison_instead_of_wrapping() {
    let l = layout();
    let ch = std::sync::Arc::new(ShmChannel::create(0, 1 << 16).expect("create"));
    let peer = Peer::of(&ch);
    let c = ch.clone();
    let reader = std::thread::spawn(move || read_by(&c, after(Duration::from_secs(3))));
    let end = Instant::now() + HANG;
    while ch.stats().expect("stats").readers_waiting == 0 {
        assert!(Instant::now() < end, "the reader never waited");
        std::thread::sleep(Duration::from_millis(1));
    }
    // The waiting reader's process record now says someone else's, its counts garbage.
    peer.put(l.waits.0, &[0xa5; 24]);
    let out = bounded(move || reader.join().expect("reader"));
    assert_eq!(out, Err(Error::Poisoned));
    assert_corrupt(&ch);
}

/// A waiting count a peer raised with nobody waiting: a rendezvous `write_nowait` counted on
/// that reader and waited for it forever (a hang on main). The counts are checked against
/// their owners when a `nowait` write would wait on them: the segment is corrupt.
#[test]
fn a_scribbled_waiting_count_does_not_hold_a_nowait_write() {
    use ferrocsp::shm::Wait;
    let l = layout();
    let ch = std::sync::Arc::new(ShmChannel::create(0, 1 << 16).expect("create"));
    let peer = Peer::of(&ch);
    peer.put(l.readers_waiting, &5u32.to_ne_bytes());
    let c = ch.clone();
    let r = bounded(move || {
        let mut slot = c.begin_write(1, &mut Wait::nowait())?;
        slot.buf()[0] = 1;
        slot.commit(&mut Wait::nowait())
    });
    assert_eq!(r, Err(Error::Poisoned));
    assert_corrupt(&ch);
}

/// Deterministic xorshift.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Trials of `random_scribbles_over_header_ends_and_records`: `FERROCSP_SCRIBBLE_TRIALS`
/// (default 200); `FERROCSP_SCRIBBLE_SEED` replays one seed.
fn seeds() -> Vec<u64> {
    if let Some(s) = std::env::var("FERROCSP_SCRIBBLE_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![s];
    }
    let n = std::env::var("FERROCSP_SCRIBBLE_TRIALS").ok().and_then(|s| s.parse().ok());
    (1..=n.unwrap_or(200u64)).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).collect()
}

/// One trial: a reader and a selection wait on the channel (so that the wait and alt records
/// are in use), while random bytes land on random places of the header (the lock included),
/// the end table, the alt records and the wait records; then every kind of operation runs.
/// Each must end (a value or an error) in time.
fn scribble_trial(seed: u64) -> bool {
    use ferrocsp::shm::{select, EndKind, SelOp, Wait};
    let l = layout();
    // Short waits: the trials are many, and what they check is that each wait ends.
    let quick = || after(Duration::from_millis(5));
    let mut rnd = Rng(seed | 1);
    let capacity = if rnd.below(2) == 0 { 0 } else { 3 };
    let ch = std::sync::Arc::new(ShmChannel::create(capacity, 1 << 14).expect("create"));
    let ends: Vec<_> = (0..3)
        .map(|i| ch.new_end(if i == 0 { EndKind::Reader } else { EndKind::Writer }))
        .collect();
    let peer = Peer::of(&ch);
    let regions = [l.header, l.ends, l.alt, l.waits, (l.state, l.state_len), (l.lock, 8)];
    let mut plan = Vec::new();
    for _ in 0..4 {
        // The lock is one region in twelve: a garbage lock costs a look (`PEER_CHECK`).
        let (lo, span) = if rnd.below(12) == 0 { (l.lock, 8) } else { regions[rnd.below(5)] };
        let n = 1 + rnd.below(8);
        let off = lo + rnd.below(span.saturating_sub(n) + 1);
        plan.push((off, rnd.next().to_ne_bytes(), n));
    }
    let c = ch.clone();
    std::thread::scope(|s| {
        let waiting_reader = s.spawn(|| read_by(&c, after(Duration::from_millis(20))));
        let waiting_alt = s.spawn(|| {
            let ops = [SelOp::read(&c)];
            select(&ops, &mut Wait::until(after(Duration::from_millis(20)))).map(|(i, _)| i)
        });
        std::thread::sleep(Duration::from_millis(2));
        for (i, (off, bytes, n)) in plan.iter().enumerate() {
            let _ = write_by(&c, &[i as u8; 70], quick());
            peer.put(*off, &bytes[..*n]);
            let _ = c.stats();
        }
        let _ = waiting_reader.join();
        let _ = waiting_alt.join();
    });
    let _ = write_by(&ch, b"after", quick());
    let _ = read_by(&ch, quick());
    let fill = |out: &mut [u8]| out.fill(1);
    let ops = [SelOp::read(&ch), SelOp::write(&ch, 8, &fill)];
    let _ = select(&ops, &mut Wait::until(quick()));
    for e in ends.into_iter().flatten() {
        let _ = ch.retire_end(e);
        let _ = ch.end_retired(e);
    }
    let _ = ch.new_end(EndKind::Reader);
    let _ = ch.stats();
    let damaged = ch.is_poisoned();
    let _ = ch.poison();
    assert!(ch.is_poisoned());
    damaged
}

/// Random scribbles over the whole header (the lock, the counters, the alt and wait records)
/// and the end table of a live segment, with readers and a selection waiting on it: every
/// operation ends, with a value or a clean error, never a hang or a crash (a crash fails the
/// whole test binary). The failing seed is named.
#[test]
fn random_scribbles_over_header_ends_and_records() {
    let mut detected = 0;
    let seeds = seeds();
    for &seed in &seeds {
        let r = std::panic::catch_unwind(|| within(HANG, move || scribble_trial(seed)));
        match r {
            Ok(damaged) => detected += usize::from(damaged),
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!("seed {seed} (FERROCSP_SCRIBBLE_SEED={seed}): {msg}");
            }
        }
    }
    // Many scribbles land on bytes nobody checks (padding, a free record); the point is that
    // no trial crashed or hung, and that damage was found.
    assert!(seeds.len() < 20 || detected > 0, "no scribble was ever detected");
    eprintln!("{detected} of {} trials found the damage", seeds.len());
}

/// A selection's offer whose cell record a peer rewrote to name another guard of it: a reader
/// that takes the offer fires that guard. The selection reported the forged guard as sent
/// (an index beyond its guards when the number was out of range, clamped to the largest
/// guard number when it was beyond any selection's). Now a forged number is refused by the
/// reader, and a fire that no claim of the selection's own offer made is found by the
/// selection: either way the channel is poisoned as corrupt and nothing reports a guard
/// that does not exist.
#[test]
fn a_forged_guard_in_an_offer_never_fires_a_guard_that_was_not_taken() {
    use ferrocsp::shm::{select, SelOp, Selected, Wait};
    let l = layout();
    for forged in [5u32, 1 << 20] {
        let ch = std::sync::Arc::new(ShmChannel::create(0, 1 << 16).expect("create"));
        let peer = Peer::of(&ch);
        let c = ch.clone();
        let alt = std::thread::spawn(move || {
            let fill = |out: &mut [u8]| out.copy_from_slice(b"offered");
            let ops = [SelOp::write(&c, 7, &fill)];
            let out = match select(&ops, &mut Wait::until(after(Duration::from_secs(3)))) {
                Ok((i, Selected::Wrote)) => Ok((i, "wrote")),
                Ok((i, Selected::Poisoned)) => Ok((i, "poisoned")),
                Ok((i, _)) => Ok((i, "other")),
                Err(e) => Err(e),
            };
            out
        });
        let end = Instant::now() + HANG;
        while ch.stats().expect("stats").writers_waiting == 0 {
            assert!(Instant::now() < end, "the offer was never published");
            std::thread::sleep(Duration::from_millis(1));
        }
        let head = peer.get_u64(l.head) as usize;
        peer.put(l.data_off + head + l.offer_guard, &forged.to_ne_bytes());
        let c = ch.clone();
        let _ = bounded(move || read(&c));
        let out = bounded(move || alt.join().expect("alt"));
        assert_eq!(out, Ok((0, "poisoned")), "guard forged as {forged}");
        assert_eq!(ch.poison_cause(), Some(PoisonCause::Corrupt), "guard forged as {forged}");
    }
}

/// A scribble over a waiting selection's cell (its slot in its process's cells segment, which
/// any process that attaches it can write): the slot used to hold a robust pthread mutex,
/// which glibc links into the owning thread's robust list through pointers kept in the mutex
/// itself, so pointers written over it sent the owner's unlock through the peer's addresses
/// (a crash of the whole test binary on main, with the list pointers of the held mutex set
/// to 0x4141...). Now nothing in the slot is followed: the selection, and a reader that meets
/// its offer, end with a value or a clean error.
#[test]
fn scribbles_over_a_waiting_selections_cell_never_crash_or_hang() {
    use ferrocsp::shm::{select, SelOp, Selected, Wait};
    let l = layout();
    // (offset in the slot, bytes): the whole slot, the words a mutex's robust list used, the
    // first words, then random ones.
    let mut cases: Vec<(usize, Vec<u8>)> =
        vec![(0, vec![0x41; l.cells_slot]), (16, vec![0x41; 32]), (0, vec![0xff; 16])];
    let mut rnd = Rng(0x2545_f491_4f6c_dd1d);
    for _ in 0..60 {
        let n = 1 + rnd.below(16);
        let off = rnd.below(l.cells_slot - n + 1);
        cases.push((off, (0..n).map(|_| rnd.next() as u8).collect()));
    }
    for (k, (off, bytes)) in cases.into_iter().enumerate() {
        let ch = std::sync::Arc::new(ShmChannel::create(0, 1 << 16).expect("create"));
        let peer = Peer::of(&ch);
        let c = ch.clone();
        let alt = std::thread::spawn(move || {
            let fill = |out: &mut [u8]| out.copy_from_slice(b"offered");
            let ops = [SelOp::write(&c, 7, &fill)];
            let out = match select(&ops, &mut Wait::until(after(Duration::from_millis(300)))) {
                Ok((i, Selected::Wrote)) => Ok((i, true)),
                Ok((i, _)) => Ok((i, false)),
                Err(e) => Err(e),
            };
            out
        });
        let end = Instant::now() + HANG;
        while ch.stats().expect("stats").writers_waiting == 0 {
            assert!(Instant::now() < end, "case {k}: the offer was never published");
            std::thread::sleep(Duration::from_millis(1));
        }
        let head = peer.get_u64(l.head) as usize;
        let at = |f: usize| {
            let v = peer.get_u64(l.data_off + head + f);
            (v & 0xffff_ffff) as i32
        };
        let (fd, slot) = (at(l.offer_fd), at(l.offer_slot) as usize);
        let cells = Peer::of_fd(fd);
        cells.put(l.cells_header + slot * l.cells_slot + off, &bytes);
        let c = ch.clone();
        let read = bounded(move || read_by(&c, after(Duration::from_millis(50))));
        let out = bounded(move || alt.join().expect("the selection"));
        // Whatever happened, both ended, and a value was never both taken and withdrawn.
        if read.is_ok() {
            assert!(matches!(out, Ok((0, true)) | Ok((0, false))), "case {k}: {out:?}");
        }
    }
}

/// An Alt writer whose offer a reader took, and which then cannot take another of its
/// channels' locks (that segment found corrupt; in `tests/shm_faults`, the channel whose lock
/// a dead peer held mid-update, poisoned by a survivor meanwhile): the value was delivered, so
/// the Alt reports that guard written. It used to fail with `Poisoned`: a value read whose
/// write raised.
#[test]
fn an_alt_whose_offer_was_taken_says_so_when_another_channel_fails() {
    use ferrocsp::shm::{select, SelOp, Selected, Wait};
    let x = std::sync::Arc::new(ShmChannel::create(0, 1 << 16).expect("create"));
    let y = std::sync::Arc::new(ShmChannel::create(0, 1 << 16).expect("create"));
    let (xa, ya) = (x.clone(), y.clone());
    let alt = std::thread::spawn(move || {
        let fill_x = |b: &mut [u8]| b.copy_from_slice(b"x!");
        let fill_y = |b: &mut [u8]| b.copy_from_slice(b"y!");
        let ops = [SelOp::write(&xa, 2, &fill_x), SelOp::write(&ya, 2, &fill_y)];
        let out = select(&ops, &mut Wait::until(after(Duration::from_secs(5))));
        out.map(|(i, s)| (i, matches!(s, Selected::Wrote)))
    });
    let end = Instant::now() + HANG;
    while x.stats().expect("stats").writers_waiting == 0 {
        assert!(Instant::now() < end, "the Alt never offered");
        std::thread::sleep(Duration::from_millis(1));
    }
    let (peer, l) = (Peer::of(&y), layout());
    peer.put_u64(l.head, peer.get_u64(l.tail) + 64);
    let c = x.clone();
    assert_eq!(bounded(move || read(&c)), Ok(b"x!".to_vec()));
    let out = bounded(move || alt.join().expect("alt"));
    assert_eq!(out, Ok((0, true)), "the value was read: its guard was written");
}
