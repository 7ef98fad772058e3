//! What the harness sees from outside: a ring snapshot taken through its own mapping of a
//! segment (which entries a stopped process holds, which messages a poisoned channel still
//! buffered), the resources a process holds (for the leak checks), and control of the forked
//! peers (stopped, killed, reaped).
//!
//! The snapshot reads the segment without its lock (the stopped process may hold it): it
//! trusts nothing it reads, walks at most a ring's worth of aligned entries, and is only
//! relied on for entries nobody else can change at that moment (those the stopped process
//! holds, or any entry once every process is gone).

use std::time::{Duration, Instant};

use ferrocsp::shm::{ShmChannel, TestLayout};

/// An entry seen in a snapshot: its state, holder and message id.
#[derive(Clone, Copy, Debug)]
pub struct Seen {
    pub state: u32,
    pub owner: u32,
    pub id: Option<u64>,
}

/// The entries between head and tail of `ch`'s ring, as its segment holds them now.
pub fn snapshot(ch: &ShmChannel) -> Vec<Seen> {
    let l: TestLayout = ShmChannel::layout_for_tests();
    let path = std::ffi::CString::new(format!("/proc/self/fd/{}", ch.fd())).expect("path");
    let mut out = Vec::new();
    // SAFETY: a private read-only mapping of the whole segment (its size from fstat; the memfd
    // is sealed), unmapped before returning; every offset below is checked against it.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        assert!(fd >= 0, "open the segment");
        let mut st: libc::stat = std::mem::zeroed();
        assert_eq!(libc::fstat(fd, &mut st), 0);
        let len = st.st_size as usize;
        let p = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, fd, 0);
        libc::close(fd);
        assert_ne!(p, libc::MAP_FAILED);
        let base = p.cast::<u8>();
        let u64_at = |off: usize| std::ptr::read_volatile(base.add(off).cast::<u64>());
        let u32_at = |off: usize| std::ptr::read_volatile(base.add(off).cast::<u32>());
        let data_len = (len - l.data_off) as u64;
        let (mut pos, tail) = (u64_at(l.head), u64_at(l.tail));
        let mut steps = data_len / 64 + 1;
        while pos < tail && steps > 0 {
            steps -= 1;
            let at = l.data_off + (pos % data_len) as usize;
            if at + l.entry_bytes + 8 > len {
                break;
            }
            let (size, state) = (u64_at(at + l.entry_size), u32_at(at + l.entry_state));
            if size < 64 || size % 64 != 0 {
                break;
            }
            let skip =
                if u32_at(at + l.entry_rendezvous) == l.rdv_offer { l.offer_prefix } else { 0 };
            let msg = at + l.entry_bytes + skip;
            let id =
                (msg + 8 <= len).then(|| std::ptr::read_unaligned(base.add(msg).cast::<u64>()));
            out.push(Seen { state, owner: u32_at(at + l.entry_owner_pid), id });
            pos += size;
        }
        libc::munmap(p, len);
    }
    out
}

/// Whether thread `tid` holds `ch`'s lock now: the lock word's low half is its holder's
/// thread id, with the waiters flag above `FUTEX_TID_MASK` (`shm/lock.rs`). Read without the
/// lock: only trusted for a stopped holder, whose hold cannot change.
pub fn lock_held_by(ch: &ShmChannel, tid: u32) -> bool {
    let l = ShmChannel::layout_for_tests();
    let path = std::ffi::CString::new(format!("/proc/self/fd/{}", ch.fd())).expect("path");
    // SAFETY: a read-only mapping of the header page, unmapped before returning; the mutex
    // lies inside it (a header fits its page).
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        assert!(fd >= 0, "open the segment");
        let p = libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ, libc::MAP_SHARED, fd, 0);
        libc::close(fd);
        assert_ne!(p, libc::MAP_FAILED);
        let word = std::ptr::read_volatile(p.cast::<u8>().add(l.lock).cast::<u32>());
        libc::munmap(p, 4096);
        word & libc::FUTEX_TID_MASK == tid
    }
}

/// The rings while a process is stopped: two snapshots a little apart, keeping the entries
/// both saw alike. A lockless snapshot may catch a live process between two stores of one
/// update (a claim writes `READING`, then its owner): such an entry differs in the second
/// look, while what the stopped process holds cannot change.
pub fn stable_snapshot(chans: &[ShmChannel]) -> Vec<Vec<Seen>> {
    let first: Vec<_> = chans.iter().map(snapshot).collect();
    std::thread::sleep(Duration::from_millis(5));
    let second: Vec<_> = chans.iter().map(snapshot).collect();
    first
        .into_iter()
        .zip(second)
        .map(|(a, b)| {
            a.into_iter()
                .filter(|s| {
                    b.iter().any(|t| t.id == s.id && t.state == s.state && t.owner == s.owner)
                })
                .collect()
        })
        .collect()
}

/// Descriptors, memfd mappings (ours: `ferrocsp-`) and threads of the calling process, not
/// counting the cached cells segments of live peers (a bounded cache, `drop_dead_peers`),
/// whose processes may outlive the check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub fds: usize,
    pub maps: usize,
    pub threads: usize,
}

pub fn held() -> Held {
    let cached = ferrocsp::shm::drop_dead_peers();
    let count = |dir: &str| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(usize::MAX);
    let maps = std::fs::read_to_string("/proc/self/maps")
        .map(|m| m.lines().filter(|l| l.contains("/memfd:ferrocsp-")).count())
        .unwrap_or(usize::MAX);
    Held {
        fds: count("/proc/self/fd") - cached,
        maps: maps - cached,
        threads: count("/proc/self/task"),
    }
}

/// What the calling process holds, in words (for a leak's report).
pub fn listing() -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let maps: Vec<_> = maps.lines().filter(|l| l.contains("/memfd:")).collect();
    let fds: Vec<_> = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.flatten().filter_map(|e| std::fs::read_link(e.path()).ok()).collect())
        .unwrap_or_default();
    format!("memfd mappings {maps:?}, descriptors {fds:?}")
}

/// How a watched child ended up.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Stopped,
    Exited(i32),
}

/// Waits (polling, up to `limit`) until child `pid` stops or ends, without reaping it.
pub fn stopped_or_ended(pid: libc::pid_t, limit: Duration) -> Option<Outcome> {
    let until = Instant::now() + limit;
    loop {
        // SAFETY: a zeroed siginfo_t is a valid out-parameter; pid is our child; WNOWAIT
        // leaves it waitable.
        let (r, info) = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let r = libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WSTOPPED | libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            );
            (r, info)
        };
        assert_eq!(r, 0, "waitid: {}", std::io::Error::last_os_error());
        // SAFETY: filled in by waitid (si_pid 0: nothing to report yet).
        let (who, code, status) = unsafe { (info.si_pid(), info.si_code, info.si_status()) };
        if who == pid {
            return Some(match code {
                libc::CLD_STOPPED => Outcome::Stopped,
                libc::CLD_EXITED => Outcome::Exited(status),
                _ => Outcome::Exited(-status),
            });
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

pub fn signal(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: pid is our child, not yet reaped.
    unsafe { libc::kill(pid, sig) };
}

/// Reaps child `pid` if it has ended by `until` (None: it has not).
pub fn reap_by(pid: libc::pid_t, until: Instant) -> Option<i32> {
    loop {
        let mut status = 0;
        // SAFETY: pid is our child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Some(status);
        }
        assert!(r == 0, "waitpid({pid}): {}", std::io::Error::last_os_error());
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Whether this process has no child left (none running, none waiting to be reaped).
pub fn no_children() -> bool {
    // SAFETY: a non-blocking wait for any child.
    let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
    r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD)
}
