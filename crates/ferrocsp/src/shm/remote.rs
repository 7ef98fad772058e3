//! A reader copying a rendezvous value straight out of its writer's memory
//! (`process_vm_readv`): whose memory it may read, and how much.
//!
//! A large rendezvous value need not pass through the ring: its writer stays blocked until the
//! value is taken, so the message may say only where the value lies in the writer's memory,
//! and the reader copies it from there (one copy). The message is bytes in a segment that
//! every peer can write, so the process it is read from never comes from it.
//!
//! Invariants:
//! - The process read from is the entry's recorded writer (`owner.rs`: recorded by the engine
//!   under the lock when the entry was reserved, kept by the claim in [`ReadSlot::writer`]),
//!   never a pid from the message; only a plain rendezvous entry's writer is blocked while its
//!   value is read, so no other entry's is read at all.
//! - A copy is used only if that process, with the recorded start time, was still alive after
//!   the copy: a pid that died and was reused during (or before) the copy names another
//!   process, whose bytes are thrown away.
//! - How much is read is the caller's to bound by the channel's rules: a remote message
//!   carries no more than the same value sent inline could ([`ShmChannel::max_message`]).

use std::io;

use super::layout::RDV_PLAIN;
use super::loan::LoanMem;
use super::slot::ReadSlot;
use super::sys;
use crate::shm::ShmChannel;

impl<'a> ReadSlot<'a> {
    /// The pid of the process that wrote this message (the entry's recorded writer).
    pub fn writer_pid(&self) -> u32 {
        self.writer.pid
    }

    /// The channel the message was read from.
    pub fn channel(&self) -> &'a ShmChannel {
        self.ch
    }

    /// Copies `dst.len()` bytes at `addr` in the memory of this message's writer into `dst`.
    /// Fails with `InvalidData` if the message is not a plain rendezvous write's (no writer
    /// waits for it: its memory is not the value's), `NotFound` if the writer is gone (or its
    /// pid names another process now), or the kernel's error (`EPERM`: ptrace rules).
    pub fn copy_from_writer(&self, addr: u64, dst: &mut [u8]) -> io::Result<()> {
        if self.kind != RDV_PLAIN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a remote message outside a rendezvous write",
            ));
        }
        let gone = || io::Error::new(io::ErrorKind::NotFound, "the writer is gone");
        if self.writer.pid == 0 {
            return Err(gone());
        }
        sys::vm_read(self.writer.pid, addr, dst)?;
        if self.writer != sys::me() && !sys::alive(self.writer) {
            return Err(gone());
        }
        Ok(())
    }

    /// Maps, read-only, the loan `uuid` of `len` bytes that this message's writer holds as
    /// descriptor `fd` (`loan.rs`). Fails as [`Self::copy_from_writer`] does, and with
    /// `InvalidData` when the descriptor is not that loan.
    pub fn attach_loan(&self, fd: i32, uuid: &[u8; 16], len: usize) -> io::Result<LoanMem> {
        if self.kind != RDV_PLAIN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a loan message outside a rendezvous write",
            ));
        }
        let gone = || io::Error::new(io::ErrorKind::NotFound, "the writer is gone");
        if self.writer.pid == 0 {
            return Err(gone());
        }
        let mem = LoanMem::attach(self.writer.pid, fd, uuid, len)?;
        if self.writer != sys::me() && !sys::alive(self.writer) {
            return Err(gone());
        }
        Ok(mem)
    }
}
