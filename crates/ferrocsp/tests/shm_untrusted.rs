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
        let path = std::ffi::CString::new(format!("/proc/self/fd/{}", ch.fd())).expect("path");
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
