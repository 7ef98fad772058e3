//! Zero-copy loans (issue #20): a buffer of its own shared memory that a writer fills in place
//! and hands to a reader in another OS process without copying it.
//!
//! A loan is one memfd (`ferrocsp-loan-<uuid>`, mode 0600, sealed against resizing) mapped
//! read-write by its writer. Handing it over on a rendezvous channel sends only its identity
//! (pid, descriptor, uuid, length); the reader, while the writer is still blocked in its
//! write (so the descriptor is still open), reopens `/proc/<writer>/fd/<fd>` and maps the file
//! read-only: a constant number of system calls whatever the size, no page touched. The
//! writer then drops its descriptor, and its own mapping is unmapped by a background thread
//! a millisecond later (`munmap` of a populated mapping costs per page: it stays off the
//! hand-over's path, and out of the reader's way while it returns from its `read`). The
//! kernel frees the memory with the last mapping, whichever process ends how; whoever drops
//! that last mapping pays for freeing every page (13 ms for 64 MiB on the development VM), so
//! a reader's mapping goes to the same thread when it is dropped: a reader that lets go of a
//! loan and reads the next one does not wait for the first one's pages.
//!
//! Invariants:
//! - A loan is mapped from a descriptor this process opened itself, checked after the open
//!   (so a descriptor number reused between the message and the open is never trusted): its
//!   link is exactly `/memfd:ferrocsp-loan-<uuid> (deleted)` for the message's uuid, it carries
//!   the shrink and grow seals (only a memfd can: no other file is ever mapped, and nobody can
//!   truncate it under the mapping, so no access faults), and its size is the message's length.
//! - The process opened is the entry's recorded writer (`ReadSlot::attach_loan`, `remote.rs`),
//!   never a pid read from the message, and only a plain rendezvous entry's writer is blocked
//!   while it is opened; a pid reused during the open is found by the liveness check after it.
//! - A reader's mapping is `PROT_READ`: nothing in the reader can write through it.
//! - A `LoanMem` owns exactly one mapping (or none, for zero bytes) and at most one
//!   descriptor; dropping it unmaps (now, or later on the unmapper thread: a reader's mapping,
//!   or a writer's after [`LoanMem::release_later`]) and closes.
//! - At most `PENDING_MAX` bytes of mappings wait for the unmapper at a time; past that a drop
//!   unmaps on its own thread, so a process that drops loans faster than one thread unmaps
//!   them holds a bounded amount of memory, not an ever larger one.
//! - A mapping waiting for the unmapper is not inherited by a child made by `fork`
//!   (`MADV_DONTFORK`): nothing refers to it any more, and the child's unmapper (its own,
//!   `PerProcess`) would never unmap it, so the child would keep the loan's memory until it
//!   exits.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::fork::PerProcess;
use super::sys;

/// The memfd name of loan `uuid` (its `/proc/<pid>/fd/<fd>` link is this plus " (deleted)").
fn loan_name(uuid: &[u8; 16]) -> String {
    let hex: String = uuid.iter().map(|b| format!("{b:02x}")).collect();
    format!("ferrocsp-loan-{hex}")
}

/// The seals a loan carries: its size is fixed (see the module doc).
const SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// One loan's memory in this process: its mapping and, while it may still be handed over, its
/// descriptor.
#[derive(Debug)]
pub struct LoanMem {
    ptr: *mut u8,
    len: usize,
    fd: Option<OwnedFd>,
    uuid: [u8; 16],
    writable: bool,
    /// Unmap on the unmapper thread rather than in `drop` (see `release_later`).
    later: bool,
}

// SAFETY: the mapping is plain memory owned by this value; the Python layer decides who may
// access it (a writer before the hand-over, readers read-only after it).
unsafe impl Send for LoanMem {}
// SAFETY: as above.
unsafe impl Sync for LoanMem {}

impl LoanMem {
    /// A new loan of `len` bytes (zero-filled, pages allocated when first written), mapped
    /// read-write in this process.
    pub fn create(len: usize) -> io::Result<LoanMem> {
        let uuid = sys::random_uuid()?;
        let name = CString::new(loan_name(&uuid)).map_err(io::Error::other)?;
        // SAFETY: name is a valid NUL-terminated string.
        let raw = check(unsafe {
            libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        })?;
        // SAFETY: raw was just returned by memfd_create and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: plain syscalls on a descriptor we own.
        check(unsafe { libc::fchmod(fd.as_raw_fd(), 0o600) })?;
        let size = libc::off_t::try_from(len).map_err(io::Error::other)?;
        // SAFETY: as above.
        check(unsafe { libc::ftruncate(fd.as_raw_fd(), size) })?;
        // SAFETY: as above.
        check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) })?;
        let ptr = map(&fd, len, libc::PROT_READ | libc::PROT_WRITE)?;
        Ok(LoanMem { ptr, len, fd: Some(fd), uuid, writable: true, later: false })
    }

    /// Maps, read-only, the loan `uuid` of `len` bytes that process `pid` holds as descriptor
    /// `fd`. `InvalidData`: the descriptor is not that loan (a forged or stale message);
    /// otherwise the open's error (`EACCES`: ptrace rules; `ENOENT`: the writer is gone).
    pub(crate) fn attach(pid: u32, fd: i32, uuid: &[u8; 16], len: usize) -> io::Result<LoanMem> {
        if fd < 0 {
            return Err(invalid("a loan message names a negative descriptor"));
        }
        let path = CString::new(format!("/proc/{pid}/fd/{fd}")).map_err(io::Error::other)?;
        // SAFETY: path is a valid C string; the flags ask for a new descriptor we own.
        let raw = check(unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) })?;
        // SAFETY: raw was just returned by open.
        let own = unsafe { OwnedFd::from_raw_fd(raw) };
        // Checked on our own descriptor, not the writer's: it cannot change under us.
        let target = std::fs::read_link(format!("/proc/self/fd/{raw}"))?;
        let want = format!("/memfd:{} (deleted)", loan_name(uuid));
        if target.as_os_str() != want.as_str() {
            return Err(invalid("a loan message names a file that is not that loan"));
        }
        // SAFETY: a plain fcntl on an open descriptor.
        let seals = check(unsafe { libc::fcntl(own.as_raw_fd(), libc::F_GET_SEALS) })
            .map_err(|_| invalid("a loan message names a file that cannot be sealed"))?;
        if seals & SEALS != SEALS {
            return Err(invalid("a loan message names a file that is not sealed"));
        }
        if sys::size(&own)? != len {
            return Err(invalid("a loan message states another length than its file's"));
        }
        let ptr = map(&own, len, libc::PROT_READ)?;
        // The mapping keeps the file alive: no descriptor is kept. It may be the file's last
        // one when it goes, and then unmapping it frees every page: off the dropper's thread.
        Ok(LoanMem { ptr, len, fd: None, uuid: *uuid, writable: false, later: true })
    }

    /// The first byte (dangling but aligned for a loan of zero bytes).
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the loan is zero bytes long.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether this process's mapping may be written (the writer's, before the hand-over).
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// The loan's identifier (part of its memfd name).
    pub fn uuid(&self) -> [u8; 16] {
        self.uuid
    }

    /// This process's descriptor of the loan, while it has one (the writer's).
    pub fn fd(&self) -> Option<i32> {
        self.fd.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Drops this process's hold on the loan after a hand-over to another process: the
    /// descriptor is closed now, the mapping is unmapped on the unmapper thread (its pages,
    /// populated by the writer, cost `munmap` time per page, which the hand-over must not
    /// wait for).
    pub fn release_later(mut self) {
        self.later = true;
        drop(self);
    }
}

/// Maps all `len` bytes of `fd` shared with protection `prot` (no mapping for zero bytes).
fn map(fd: &OwnedFd, len: usize, prot: libc::c_int) -> io::Result<*mut u8> {
    if len == 0 {
        return Ok(std::ptr::NonNull::<u64>::dangling().as_ptr().cast());
    }
    // SAFETY: a fresh mapping chosen by the kernel; failure is reported as MAP_FAILED.
    let ptr =
        unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd.as_raw_fd(), 0) };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(ptr.cast())
}

fn unmap(addr: usize, len: usize) {
    // SAFETY: addr/len are exactly what mmap returned for a `LoanMem` that is gone: nothing
    // refers to the mapping any more.
    unsafe {
        libc::munmap(addr as *mut libc::c_void, len);
    }
}

/// Where the unmapper thread takes mappings (address, length, when queued) to unmap, and how
/// many bytes of them it has not unmapped yet.
type Queue = Mutex<Option<(Sender<(usize, usize, Instant)>, Arc<AtomicUsize>)>>;

/// The most bytes of mappings queued for the unmapper at once (see the invariants); one
/// mapping is queued whatever its size.
const PENDING_MAX: usize = 2 << 30;

/// How long a handed-over mapping waits before it is unmapped: the reader, woken by the
/// hand-over, is still returning from its `read` for some tens of microseconds, and on a
/// machine with few cores the unmapping (milliseconds for a big loan) would take the CPU it
/// needs. A precaution: on the loaded 2-core VM the difference was within the noise
/// (docs/design.md, "Zero-copy loans").
const UNMAP_AFTER: Duration = Duration::from_millis(1);

/// The unmapper thread's queue, per process (a child made by `fork` has no such thread).
static UNMAPPER: PerProcess<Queue> = PerProcess::new(|| Mutex::new(None));

/// Keeps `addr..addr + len` (a whole mapping nothing refers to) out of children made by
/// `fork` from now on (see the invariants). O(1): a flag on the mapping, no page walked.
fn not_inherited(addr: usize, len: usize) {
    // SAFETY: addr/len are exactly one mapping of ours; MADV_DONTFORK changes no contents. A
    // failure only leaves the mapping inheritable, as it was.
    unsafe {
        libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTFORK);
    }
}

/// Unmaps `addr..addr + len` on the unmapper thread (now, if it cannot be started or has
/// `PENDING_MAX` bytes to unmap already).
fn unmap_later(addr: usize, len: usize) {
    let mut q = UNMAPPER.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if q.is_none() {
        let (tx, rx) = channel::<(usize, usize, Instant)>();
        let pending = Arc::new(AtomicUsize::new(0));
        let left = Arc::clone(&pending);
        let started = std::thread::Builder::new()
            .name("ferrocsp-unmap".into())
            .spawn(move || {
                while let Ok((a, n, queued)) = rx.recv() {
                    let due = queued + UNMAP_AFTER;
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    unmap(a, n);
                    left.fetch_sub(n, Ordering::Release);
                }
            })
            .is_ok();
        if started {
            *q = Some((tx, pending));
        }
    }
    let Some((tx, pending)) = q.as_ref() else { return unmap(addr, len) };
    // Under the queue's lock: nobody else adds meanwhile (the thread only subtracts).
    if !queueable(pending.load(Ordering::Acquire), len) {
        drop(q);
        return unmap(addr, len);
    }
    not_inherited(addr, len);
    pending.fetch_add(len, Ordering::AcqRel);
    if let Err(e) = tx.send((addr, len, Instant::now())) {
        pending.fetch_sub(len, Ordering::Release);
        unmap(e.0 .0, e.0 .1);
    }
}

/// Whether a mapping of `len` bytes may wait for the unmapper behind `pending` bytes.
fn queueable(pending: usize, len: usize) -> bool {
    pending == 0 || pending.saturating_add(len) <= PENDING_MAX
}

impl Drop for LoanMem {
    fn drop(&mut self) {
        self.fd = None;
        if self.len == 0 {
            return;
        }
        if self.later {
            unmap_later(self.ptr as usize, self.len);
        } else {
            unmap(self.ptr as usize, self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "Miri cannot make a memfd nor map a file")]
    fn a_loan_maps_read_only_in_a_reader_and_checks_what_it_opens() {
        let w = LoanMem::create(3 * 4096).expect("create");
        // SAFETY: the writer's mapping is writable and `len` long.
        unsafe { std::slice::from_raw_parts_mut(w.ptr(), w.len()) }.fill(7);
        let fd = w.fd().expect("writer holds its descriptor");
        let r = LoanMem::attach(std::process::id(), fd, &w.uuid(), w.len()).expect("attach");
        assert!(!r.writable());
        // SAFETY: the reader's mapping is readable and `len` long.
        let seen = unsafe { std::slice::from_raw_parts(r.ptr(), r.len()) };
        assert!(seen.iter().all(|&b| b == 7));
        // Another uuid, another length, a file that is not a loan: all refused as forged.
        let bad = LoanMem::attach(std::process::id(), fd, &[0; 16], w.len()).expect_err("uuid");
        assert_eq!(bad.kind(), io::ErrorKind::InvalidData);
        let bad = LoanMem::attach(std::process::id(), fd, &w.uuid(), 4096).expect_err("length");
        assert_eq!(bad.kind(), io::ErrorKind::InvalidData);
        let other = std::fs::File::open("/proc/self/stat").expect("a file that is not a loan");
        let bad = LoanMem::attach(std::process::id(), other.as_raw_fd(), &w.uuid(), w.len())
            .expect_err("not a memfd");
        assert_eq!(bad.kind(), io::ErrorKind::InvalidData);
        w.release_later();
        // The reader's mapping outlives the writer's descriptor and mapping.
        assert!(seen.iter().all(|&b| b == 7));
    }

    /// How many mappings of loan `uuid` this process has.
    fn mappings_of(uuid: &[u8; 16]) -> usize {
        let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
        maps.lines().filter(|l| l.contains(&loan_name(uuid))).count()
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri cannot make a memfd nor map a file")]
    fn a_readers_mapping_goes_to_the_unmapper_and_is_gone_soon_after() {
        let w = LoanMem::create(64 * 4096).expect("create");
        // SAFETY: the writer's mapping is writable and `len` long.
        unsafe { std::slice::from_raw_parts_mut(w.ptr(), w.len()) }.fill(1);
        let uuid = w.uuid();
        let r = LoanMem::attach(std::process::id(), w.fd().expect("fd"), &uuid, w.len())
            .expect("attach");
        assert!(r.later, "a reader's mapping is unmapped off the dropper's thread");
        drop(w); // the writer's own, unmapped now: the reader's is the file's last mapping
        assert_eq!(mappings_of(&uuid), 1);
        drop(r);
        let until = Instant::now() + Duration::from_secs(10);
        while mappings_of(&uuid) > 0 {
            assert!(Instant::now() < until, "the reader's mapping was never unmapped");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri cannot make a memfd nor map a file")]
    fn a_mapping_left_for_the_unmapper_is_not_inherited_by_fork() {
        let w = LoanMem::create(4 * 4096).expect("create");
        let at = w.ptr() as usize;
        // The flags of the mapping at `at`, as /proc/self/smaps lists them.
        let flags = || {
            let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
            let from = smaps.find(&format!("{at:x}-")).expect("the mapping is listed");
            let rest = &smaps[from..];
            let line = rest.lines().find(|l| l.starts_with("VmFlags:")).expect("VmFlags");
            line.split_whitespace().skip(1).map(str::to_owned).collect::<Vec<_>>()
        };
        assert!(!flags().iter().any(|f| f == "dc"), "a live loan is inherited as usual");
        not_inherited(at, w.len());
        assert!(flags().iter().any(|f| f == "dc"), "{:?}", flags());
    }

    #[test]
    fn past_its_bound_a_mapping_is_not_queued() {
        assert!(queueable(0, usize::MAX), "one mapping is queued whatever its size");
        assert!(queueable(PENDING_MAX / 2, PENDING_MAX / 2));
        assert!(!queueable(1, PENDING_MAX));
        assert!(!queueable(PENDING_MAX, 1));
        assert!(!queueable(usize::MAX, usize::MAX), "no overflow");
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri cannot make a memfd nor map a file")]
    fn an_empty_loan_maps_nothing() {
        let w = LoanMem::create(0).expect("create");
        assert!(w.is_empty());
        let fd = w.fd().expect("descriptor");
        let r = LoanMem::attach(std::process::id(), fd, &w.uuid(), 0).expect("attach");
        assert_eq!(r.len(), 0);
    }
}
