//! The Linux system interface of shared-memory channels: memfd segments, shared mappings,
//! futexes, pidfds and `/proc`.
//!
//! Invariants:
//! - A segment is an anonymous memfd (`memfd_create`, mode 0600): it has no name in any file
//!   system, so nothing can be left behind in `/dev/shm`; the kernel frees it when the last
//!   descriptor and the last mapping are gone, whichever way the processes ended.
//! - Another process attaches by reopening `/proc/<pid>/fd/<fd>` of a process that holds it;
//!   the link target (`/memfd:ferrocsp-<uuid> (deleted)`) is checked before the open, so an
//!   unrelated file that reused the descriptor number is never opened.
//! - Futex words live in `MAP_SHARED` memory and use the shared (not `_PRIVATE`) operations, so
//!   a wake in one process reaches a waiter in another.
//! - Under Miri (`cfg(miri)`, which runs the segment checks over heap images: `fuzz.rs`) the
//!   calls Miri cannot make are replaced, each marked where it is: the mutex is a plain one
//!   (Miri has no process-shared or robust mutexes), and `/proc`, `pthread_atfork` and hole
//!   punching fail or do nothing, as they would for a peer that is not there.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// A shared read-write mapping of a whole segment; unmapped on drop. Or, for code that checks
/// how segments are read against arbitrary bytes (`fuzz.rs`, Miri, which has no `mmap` of a
/// file), an image of one in this process's heap: the same bytes, page-aligned.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: *mut u8,
    len: usize,
    /// Whether `ptr` is a heap image (freed with `IMAGE_ALIGN`) rather than an `mmap`.
    image: bool,
}

/// The alignment of a heap image: a page, as `mmap` gives.
const IMAGE_ALIGN: usize = 4096;

// SAFETY: the mapping is plain shared memory; every access to it goes through atomics or the
// segment's process-shared mutex (see `channel.rs`).
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    pub(crate) fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// A zeroed, page-aligned heap image of `len` bytes (not shared with any process).
    pub(crate) fn image(len: usize) -> io::Result<Mapping> {
        let layout = std::alloc::Layout::from_size_align(len.max(1), IMAGE_ALIGN)
            .map_err(io::Error::other)?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        Ok(Mapping { ptr, len, image: true })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.image {
            let layout = std::alloc::Layout::from_size_align(self.len.max(1), IMAGE_ALIGN);
            if let Ok(layout) = layout {
                // SAFETY: allocated by `image` with this very layout; its owner is gone.
                unsafe { std::alloc::dealloc(self.ptr, layout) }
            }
            return;
        }
        // SAFETY: ptr/len are exactly what mmap returned; nothing refers to the mapping once
        // its owner (the channel) is dropped.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The memfd name of segment `uuid` (what `/proc/<pid>/fd/<fd>` links to, plus " (deleted)").
pub(crate) fn memfd_name(uuid: &[u8; 16]) -> String {
    let hex: String = uuid.iter().map(|b| format!("{b:02x}")).collect();
    format!("ferrocsp-{hex}")
}

/// Creates a segment of `len` bytes (zero-filled, pages allocated lazily), mode 0600.
pub(crate) fn create(uuid: &[u8; 16], len: usize) -> io::Result<OwnedFd> {
    let name = CString::new(memfd_name(uuid)).map_err(io::Error::other)?;
    // SAFETY: name is a valid NUL-terminated string.
    let fd = check(unsafe {
        libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
    })?;
    // SAFETY: fd was just returned by memfd_create and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: plain syscalls on a descriptor we own.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), 0o600) })?;
    let size = libc::off_t::try_from(len).map_err(io::Error::other)?;
    // SAFETY: as above.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), size) })?;
    Ok(fd)
}

/// The seals every segment carries: its size is fixed for good, so no process can shrink it
/// under the others' mappings (their next access would be SIGBUS).
const SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

/// Seals a freshly sized segment (see [`SEALS`]).
pub(crate) fn seal(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: a plain fcntl on a descriptor we own.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) }).map(drop)
}

/// Refuses a segment that is not sealed as [`seal`] seals it (made by something else than a
/// ferrocsp channel, or one that could still be resized under our mapping).
pub(crate) fn check_sealed(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: a plain fcntl on an open descriptor.
    let seals = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) })?;
    if seals & SEALS != SEALS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the channel's segment is not sealed against resizing",
        ));
    }
    Ok(())
}

/// Opens the segment `uuid` held by process `pid` as descriptor `fd`.
pub(crate) fn open_from(pid: u32, fd: i32, uuid: &[u8; 16]) -> io::Result<OwnedFd> {
    if cfg!(miri) {
        return Err(io::Error::new(io::ErrorKind::NotFound, "no /proc under Miri"));
    }
    let path = format!("/proc/{pid}/fd/{fd}");
    let target = std::fs::read_link(&path)?;
    let want = format!("/memfd:{} (deleted)", memfd_name(uuid));
    if target.as_os_str() != want.as_str() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{path} is no longer the channel's segment"),
        ));
    }
    let cpath = CString::new(path).map_err(io::Error::other)?;
    // SAFETY: cpath is a valid C string; the flags ask for a new descriptor we own.
    let raw = check(unsafe { libc::open(cpath.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) })?;
    // SAFETY: raw was just returned by open.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The size of the file behind `fd`.
pub(crate) fn size(fd: &OwnedFd) -> io::Result<usize> {
    // SAFETY: an all-zero stat is a valid out-parameter for fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open; st is a valid pointer.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    usize::try_from(st.st_size).map_err(io::Error::other)
}

/// Maps all `len` bytes of `fd` shared and read-write.
pub(crate) fn map(fd: &OwnedFd, len: usize) -> io::Result<Mapping> {
    // SAFETY: a fresh mapping chosen by the kernel; failure is reported as MAP_FAILED.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(Mapping { ptr: ptr.cast(), len, image: false })
}

/// Sleeps while `*word == expected`, at most `timeout`; returns on a wake, a timeout, a
/// signal or a changed word alike (callers re-check their condition).
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(d.subsec_nanos()),
    });
    let tsp = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: word is a valid, aligned u32 in a shared mapping; tsp is null or valid.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, expected, tsp);
    }
}

/// `futex_wait` on a 32-bit word given by address: half of a 64-bit atomic (`lock.rs`),
/// which Rust code only ever accesses whole; the kernel reads the half.
pub(crate) fn futex_wait_raw(word: *const u32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(d.subsec_nanos()),
    });
    let tsp = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: word is an aligned u32 inside a live shared mapping; tsp is null or valid.
    unsafe {
        libc::syscall(libc::SYS_futex, word, libc::FUTEX_WAIT, expected, tsp);
    }
}

/// Wakes up to `n` processes sleeping on the 32-bit word at `word` (see `futex_wait_raw`).
pub(crate) fn futex_wake_raw(word: *const u32, n: i32) {
    // SAFETY: FUTEX_WAKE only uses the address as a key.
    unsafe {
        libc::syscall(libc::SYS_futex, word, libc::FUTEX_WAKE, n);
    }
}

/// Wakes every process sleeping on `word`.
pub(crate) fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: word is a valid, aligned u32; FUTEX_WAKE only reads its address.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX);
    }
}

/// A pidfd of process `pid` (`pidfd_open`, Linux 5.3+).
pub(crate) fn pidfd_open(pid: u32) -> io::Result<Option<OwnedFd>> {
    // SAFETY: a plain syscall; the result is a new descriptor we own.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if r < 0 {
        let e = io::Error::last_os_error();
        // No pidfds here: liveness falls back to `/proc`.
        if e.raw_os_error() == Some(libc::ENOSYS) {
            return Ok(None);
        }
        return Err(e);
    }
    // SAFETY: r is a descriptor just returned to us.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(r as libc::c_int) }))
}

/// Whether the process of pidfd `fd` has exited (a zombie included): the pidfd polls
/// readable then.
pub(crate) fn pidfd_exited(fd: &OwnedFd) -> bool {
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, no wait.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents != 0
}

/// A random 128-bit identifier for a new segment.
pub(crate) fn random_uuid() -> io::Result<[u8; 16]> {
    let mut buf = [0u8; 16];
    // SAFETY: buf is a valid 16-byte out-buffer.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != 16 {
        return Err(io::Error::last_os_error());
    }
    Ok(buf)
}

#[repr(C)]
struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

const FUTEX2_SIZE_U32: u32 = 0x02;

/// The most words one `futex_waitv` sleeps on (the kernel's `FUTEX_WAITV_MAX`): it fails at
/// once with `EINVAL` on more, so a caller that looped on it would spin.
pub(crate) const FUTEX_WAITV_MAX: usize = 128;

/// Sleeps until any `words[i]` differs from `expected[i]` (or a wake on any of them), at most
/// `timeout`. Uses `futex_waitv` (Linux 5.16+); on older kernels sleeps on the first word in
/// slices of 1 ms, so a change of another word is noticed within that slice.
///
/// At most [`FUTEX_WAITV_MAX`] words: a longer wait goes through the futex watchers
/// (`Wait::block`), whose threads never hold more.
pub(crate) fn futex_wait_any(words: &[&AtomicU32], expected: &[u32], timeout: Option<Duration>) {
    debug_assert!(words.len() <= FUTEX_WAITV_MAX, "{} futex words", words.len());
    let waiters: Vec<FutexWaitv> = words
        .iter()
        .zip(expected)
        .map(|(w, &v)| FutexWaitv {
            val: u64::from(v),
            uaddr: w.as_ptr() as u64,
            flags: FUTEX2_SIZE_U32,
            reserved: 0,
        })
        .collect();
    let abs = timeout.map(|d| {
        // SAFETY: an all-zero timespec is a valid out-parameter for clock_gettime.
        let mut now: libc::timespec = unsafe { std::mem::zeroed() };
        // SAFETY: now is a valid timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        let nanos = i128::from(now.tv_nsec) + i128::from(d.subsec_nanos());
        let secs =
            i128::from(now.tv_sec) + i128::from(d.as_secs().min(1 << 40)) + nanos / 1_000_000_000;
        libc::timespec {
            tv_sec: libc::time_t::try_from(secs).unwrap_or(libc::time_t::MAX),
            tv_nsec: libc::c_long::try_from(nanos % 1_000_000_000).unwrap_or(0),
        }
    });
    let tsp = abs.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: waiters is a valid array of futex_waitv; every uaddr is an aligned u32 in a
    // shared mapping that outlives this call; tsp is null or a valid timespec.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            waiters.as_ptr(),
            waiters.len() as libc::c_uint,
            0 as libc::c_uint,
            tsp,
            libc::CLOCK_MONOTONIC,
        )
    };
    if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
        if let (Some(w), Some(&v)) = (words.first(), expected.first()) {
            let slice = Duration::from_millis(1);
            futex_wait(w, v, Some(timeout.map_or(slice, |t| t.min(slice))));
        }
    }
}

/// A process, told apart from a later one that reuses its pid by its start time (clock ticks
/// after boot, field 22 of `/proc/<pid>/stat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcId {
    pub(crate) pid: u32,
    pub(crate) start: u64,
}

/// The start time of process `pid` and whether it is still running (not dead, not a zombie
/// waiting to be reaped); None: no such process.
fn proc_stat(pid: u32) -> Option<(u64, bool)> {
    use std::io::Read;
    if cfg!(miri) {
        return None;
    }
    // One open and one read: this runs on every hand-over that checks its writer (`remote.rs`,
    // a loan's attach), where `read_to_string` cost nine system calls (a size query and reads
    // of 32, 32, 64, ... bytes): 26 us, traced, of a 4 KiB loan's 170 us crossing on the VM.
    // The line is a name of at most 64 bytes and 50 numbers, and ends with a newline; only
    // field 22 is needed, so a line longer than the buffer is cut after it.
    let mut f = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while n < buf.len() && (n == 0 || buf[n - 1] != b'\n') {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    let text = &buf[..n];
    // The command name (field 2) is in parentheses and may contain anything, not even UTF-8:
    // parse after it.
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&text[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    // Fields 3.. follow; the start time is field 22, the 20th after the name.
    let start = fields.nth(18)?.parse().ok()?;
    Some((start, !matches!(state, "Z" | "X" | "x")))
}

/// The calling process, cached: it is asked on every reservation and claim, and `getpid` is a
/// system call. The cache is per fork generation (`fork.rs`), so a child made by `fork` looks
/// again. (It used its own atfork handler behind a `std::sync::Once`: a child forked while
/// another thread registered it inherited the `Once` running for ever, and hung on it.)
pub(crate) fn me() -> ProcId {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CACHE_GEN: AtomicU32 = AtomicU32::new(u32::MAX);
    static CACHE_PID: AtomicU32 = AtomicU32::new(0);
    static CACHE_START: AtomicU64 = AtomicU64::new(0);
    let gen = super::fork::fork_generation();
    if CACHE_GEN.load(Ordering::Acquire) == gen {
        let pid = CACHE_PID.load(Ordering::Acquire);
        if pid != 0 {
            return ProcId { pid, start: CACHE_START.load(Ordering::Acquire) };
        }
    }
    let pid = std::process::id();
    // Our own stat cannot be missing; a start time of 0 would only make us look dead to a
    // peer that could not read it either.
    let start = proc_stat(pid).map_or(0, |(s, _)| s);
    // Threads that race here store the same values; the generation goes last.
    CACHE_PID.store(pid, Ordering::Release);
    CACHE_START.store(start, Ordering::Release);
    CACHE_GEN.store(gen, Ordering::Release);
    ProcId { pid, start }
}

/// Whether process `p` is still alive: the same process (start time), not a zombie.
pub(crate) fn alive(p: ProcId) -> bool {
    matches!(proc_stat(p.pid), Some((start, true)) if start == p.start)
}

/// The start time of thread `tid` (any thread of any process: `/proc/<tid>` exists for
/// every thread, listed or not); None if it cannot be read.
pub(crate) fn thread_start(tid: u32) -> Option<u64> {
    proc_stat(tid).map(|(start, _)| start)
}

/// The start time of thread `tid` if it still runs (not gone, not a zombie).
pub(crate) fn thread_running(tid: u32) -> Option<u64> {
    match proc_stat(tid) {
        Some((start, true)) => Some(start),
        _ => None,
    }
}

/// Whether process `pid` is gone: no such process, or dead and waiting to be reaped.
pub(crate) fn pid_gone(pid: u32) -> bool {
    proc_stat(pid).is_none_or(|(_, running)| !running)
}

/// Frees the memory of bytes `off..off + len` of segment `fd` (they read as zeros again).
pub(crate) fn punch_hole(fd: i32, off: u64, len: u64) -> io::Result<()> {
    if cfg!(miri) {
        return Err(io::Error::from(io::ErrorKind::Unsupported));
    }
    let (off, len) = (
        libc::off_t::try_from(off).map_err(io::Error::other)?,
        libc::off_t::try_from(len).map_err(io::Error::other)?,
    );
    // SAFETY: a plain fallocate on an open descriptor; KEEP_SIZE: the size (sealed) stays.
    check(unsafe {
        libc::fallocate(fd, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, off, len)
    })
    .map(drop)
}

/// Copies `dst.len()` bytes at `addr` in process `pid`'s memory into `dst` (one copy, by the
/// kernel, which checks our permission to read that process: ptrace rules).
pub(crate) fn vm_read(pid: u32, addr: u64, dst: &mut [u8]) -> io::Result<()> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut done = 0usize;
    while done < dst.len() {
        let rest = &mut dst[done..];
        let local = libc::iovec { iov_base: rest.as_mut_ptr().cast(), iov_len: rest.len() };
        let remote = libc::iovec {
            iov_base: (addr as usize).wrapping_add(done) as *mut libc::c_void,
            iov_len: rest.len(),
        };
        // SAFETY: `local` covers memory we own exclusively; the kernel checks `remote`
        // against the other process's address space and our permission to read it.
        let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
        if n <= 0 {
            return Err(if n == 0 {
                io::Error::from(io::ErrorKind::UnexpectedEof)
            } else {
                io::Error::last_os_error()
            });
        }
        done += n as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no /proc")]
    fn a_thread_named_anything_is_read_alive_with_its_start_time() {
        let me = me();
        assert!(alive(me));
        assert!(!alive(ProcId { pid: me.pid, start: me.start + 1 }));
        // A name with a parenthesis, spaces and bytes that are not UTF-8 (a thread may set
        // any 15 bytes): the fields after it are still found.
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            let name = b") x (\xff\xfe) Z 1\0";
            // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
            unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::syscall(libc::SYS_gettid) };
            tx.send(u32::try_from(tid).expect("tid")).expect("send");
            done_rx.recv().ok();
        });
        let tid = rx.recv().expect("tid");
        let comm = std::fs::read(format!("/proc/{tid}/comm")).expect("comm");
        assert!(comm.starts_with(b") x (\xff"), "{comm:?}");
        let start = thread_running(tid).expect("a running thread is read as running");
        assert_eq!(thread_start(tid), Some(start));
        assert!(start >= me.start);
        done_tx.send(()).expect("send");
        t.join().expect("join");
    }
}
