//! A shared channel's memory follows what it buffers, not what has passed through it
//! (issue #16): a channel with a standing backlog never rewinds its ring, so it used to touch,
//! and keep, the whole ring (1 GiB by default) however little it held.
#![cfg(target_os = "linux")]

use std::time::Duration;

use ferrocsp::shm::ShmChannel;

mod shm_support;
use shm_support::{after, read_by, write_by};

/// Bytes of memory the segment behind `fd` holds (shared memory is counted per file).
fn held(fd: i32) -> u64 {
    // SAFETY: an all-zero stat is a valid out-parameter; fd is open.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::fstat(fd, &mut st) }, 0);
    st.st_blocks as u64 * 512
}

fn write(ch: &ShmChannel, msg: &[u8]) {
    write_by(ch, msg, after(Duration::from_secs(10))).expect("write");
}

fn read(ch: &ShmChannel) -> u8 {
    read_by(ch, after(Duration::from_secs(10))).expect("read")[0]
}

#[test]
fn a_standing_backlog_keeps_memory_proportional_to_what_is_buffered() {
    // 1 GiB through a 256 MiB ring (four laps), 32 values of 64 KiB always buffered (2 MiB).
    // FERROCSP_SLOW=1 streams the 10 GiB.
    const MSG: usize = 64 << 10;
    const BACKLOG: usize = 32;
    let total: u64 =
        if std::env::var("FERROCSP_SLOW").is_ok_and(|v| v == "1") { 10 << 30 } else { 1 << 30 };
    let ch = ShmChannel::create(BACKLOG + 1, 256 << 20).expect("create");
    let msg = vec![7u8; MSG];
    for _ in 0..BACKLOG {
        write(&ch, &msg);
    }
    let mut most = 0;
    for i in 0..total / MSG as u64 {
        write(&ch, &msg);
        assert_eq!(read(&ch), 7);
        if i % 256 == 0 {
            most = most.max(held(ch.fd()));
        }
    }
    let buffered = (BACKLOG * MSG) as u64;
    // What it buffers, the pieces given back at a time (2 MiB) on each side, and the header.
    let bound = buffered + 3 * (2 << 20) + (1 << 20);
    assert!(most <= bound, "held {most} bytes for {buffered} buffered (bound {bound})");
}
