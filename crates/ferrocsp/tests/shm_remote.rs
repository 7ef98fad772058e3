//! Whose memory a reader may read: a large rendezvous value is copied straight out of its
//! writer's memory (`ReadSlot::copy_from_writer`), and only ever out of the process the engine
//! recorded as the entry's writer, never one a message names.
#![cfg(target_os = "linux")]

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use ferrocsp::shm::{ShmChannel, Wait};

mod shm_support;

use shm_support::{fork, reap, write_by};

fn soon() -> Option<Instant> {
    Some(Instant::now() + Duration::from_secs(10))
}

/// The slot names the process that wrote the entry, also after a reader put it back unread
/// (the claim recorded the reader as the entry's holder; the put-back must name the writer
/// again, or the next reader would read the first reader's memory).
#[test]
fn a_read_slot_names_the_entrys_writer_even_after_a_put_back() {
    let ch = ShmChannel::create(0, 1 << 20).expect("create");
    let pid = fork(|| i32::from(write_by(&ch, b"from the child", soon()).is_err()));
    let slot = ch.begin_read(&mut Wait::until(soon())).expect("read");
    assert_eq!(slot.writer_pid(), pid as u32);
    drop(slot); // put back unread
    let slot = ch.begin_read(&mut Wait::until(soon())).expect("read again");
    assert_eq!(slot.writer_pid(), pid as u32, "the put-back named the reader as the writer");
    assert_eq!(slot.buf(), b"from the child");
    slot.finish().expect("finish");
    assert_eq!(reap(pid), 0);
}

/// The bytes come from the writer's memory: after `fork` parent and child have the same
/// address for a buffer with different contents, and the reader (the parent) gets the child's.
#[test]
fn copy_from_writer_reads_the_writers_memory() {
    let ch = ShmChannel::create(0, 1 << 20).expect("create");
    let mut buf = *b"the parent's bytes";
    let addr = buf.as_ptr() as u64;
    let pid = fork(|| {
        buf.copy_from_slice(b"the child's bytes!");
        let r = write_by(&ch, &addr.to_le_bytes(), soon());
        // Keep `buf` alive and unchanged until the reader has taken the message.
        std::hint::black_box(&buf);
        i32::from(r.is_err())
    });
    let slot = ch.begin_read(&mut Wait::until(soon())).expect("read");
    let mut got = [0u8; 18];
    slot.copy_from_writer(addr, &mut got).expect("copy");
    assert_eq!(&got, b"the child's bytes!");
    assert_eq!(&buf, b"the parent's bytes");
    slot.finish().expect("finish");
    assert_eq!(reap(pid), 0);
}

/// Only a rendezvous writer waits while its value is read: a buffered message's writer has
/// moved on, so its memory is not the value's and is never read.
#[test]
fn copy_from_writer_refuses_a_buffered_message() {
    let ch = ShmChannel::create(4, 1 << 20).expect("create");
    let buf = *b"mine";
    write_by(&ch, b"x", soon()).expect("write");
    let slot = ch.begin_read(&mut Wait::until(soon())).expect("read");
    let mut got = [0u8; 4];
    let err = slot.copy_from_writer(buf.as_ptr() as u64, &mut got).expect_err("a buffered read");
    assert_eq!(err.kind(), ErrorKind::InvalidData);
    assert_eq!(got, [0u8; 4]);
    slot.finish().expect("finish");
}

/// A writer that died (its pid may be reused by another process) is never read from.
#[test]
fn copy_from_writer_fails_once_the_writer_is_gone() {
    let ch = ShmChannel::create(0, 1 << 20).expect("create");
    let buf = *b"gone";
    let addr = buf.as_ptr() as u64;
    let pid = fork(|| i32::from(write_by(&ch, b"doomed", soon()).is_err()));
    let slot = ch.begin_read(&mut Wait::until(soon())).expect("read");
    // SAFETY: our child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    reap(pid);
    let mut got = [0u8; 4];
    assert!(slot.copy_from_writer(addr, &mut got).is_err());
    assert_eq!(got, [0u8; 4]);
}
