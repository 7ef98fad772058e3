//! A shared channel's message: the bytes of a value's parts (the Python layer, `ferrocsp._shm`,
//! pickles a value into parts), as the writer lays them in the segment and the reader turns
//! them back into objects it owns.
//!
//! A message is a list of parts, each `bytes` or `bytearray` on arrival. *Inline*: `u32 count`,
//! then per part `u8 kind` and `u64 length`, then the parts' bytes: copied once into the
//! segment by the writer and once out of it into the reader's new objects. *Remote* (a
//! rendezvous message of `REMOTE_MIN` bytes or more): the marker `REMOTE`, the writer's pid, the
//! count, then per part its kind, length and address in the writer's memory; the reader copies
//! the parts straight out of it with `process_vm_readv` (one copy) while the writer stays
//! blocked, or marks the message rejected (ptrace rules) and the writer sends it inline.
//!
//! Invariants:
//! - Every length, count and offset read back from a message is checked against the message
//!   before use (a bad one is a `ValueError` naming the channel, never an out-of-bounds read).
//! - A part object is created uninitialised and filled completely before anyone else sees it.

use ferrocsp::shm::{ShmChannel, Wait};
use ferrocsp::Error;
use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::errors::{to_pyerr, OpName};

const KIND_BYTES: u8 = 0;
const KIND_BYTEARRAY: u8 = 1;
/// First word of a message whose parts stay in the writer's memory (rendezvous, large).
const REMOTE: u32 = 0xFFFF_FFFE;
/// Payloads at least this large go by `process_vm_readv` on a rendezvous channel.
const REMOTE_MIN: usize = 256 * 1024;
const REMOTE_HEADER: usize = 16;
const REMOTE_PART: usize = 17;
/// Where a reader that could not read the writer's memory says so.
const REJECTED_AT: usize = 12;

pub(crate) fn remote_len(parts: usize) -> usize {
    REMOTE_HEADER + parts * REMOTE_PART
}

/// Whether this process uses `process_vm_readv` (``FERROCSP_SHM_VM_READV=0`` turns it off: a
/// writer then copies large messages into the segment, a reader refuses remote ones).
pub(crate) fn remote_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("FERROCSP_SHM_VM_READV").map_or(true, |v| v.trim() != "0"))
}

/// Copies `dst.len()` bytes at `addr` in process `pid` into `dst` (one copy, by the kernel).
fn vm_read(pid: u32, addr: u64, dst: &mut [u8]) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
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
            return Err(std::io::Error::last_os_error());
        }
        done += n as usize;
    }
    Ok(())
}

/// Writes `bufs` into the segment as one inline message of `total` bytes.
pub(crate) fn write_inline(
    ch: &ShmChannel,
    bufs: &[Part],
    total: usize,
    adopted: bool,
    w: &mut Wait<'_>,
) -> Result<(), Error> {
    let mut slot = if adopted { ch.begin_write_adopted(total)? } else { ch.begin_write(total, w)? };
    fill_inline(slot.buf(), bufs);
    slot.commit(w)
}

/// A new `bytes` (or, for `KIND_BYTEARRAY`, `bytearray`) of `n` bytes, filled by `fill`
/// straight into the object's storage (no zeroing pass first: `fill` writes every byte).
pub(crate) fn new_part<'py>(
    py: Python<'py>,
    kind: u8,
    n: usize,
    fill: impl FnOnce(&mut [u8]),
) -> PyResult<Bound<'py, PyAny>> {
    let len = pyo3::ffi::Py_ssize_t::try_from(n)
        .map_err(|_| PyValueError::new_err("message part too large"))?;
    // SAFETY: creating an uninitialised bytes/bytearray of `len` bytes is allowed as long as
    // nobody sees it before it is filled: we own the only reference until we return it, and
    // `fill` writes all `n` bytes (a `bytes` is never resized or hashed before that).
    unsafe {
        let (obj, data) = if kind == KIND_BYTEARRAY {
            let o = pyo3::ffi::PyByteArray_FromStringAndSize(std::ptr::null(), len);
            if o.is_null() {
                return Err(PyErr::fetch(py));
            }
            (o, pyo3::ffi::PyByteArray_AsString(o))
        } else {
            let o = pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), len);
            if o.is_null() {
                return Err(PyErr::fetch(py));
            }
            (o, pyo3::ffi::PyBytes_AsString(o))
        };
        let obj = Bound::from_owned_ptr(py, obj);
        if n > 0 {
            fill(std::slice::from_raw_parts_mut(data.cast::<u8>(), n));
        }
        Ok(obj)
    }
}

/// The parts of an inline message, each copied into a new object.
pub(crate) fn read_inline<'py>(
    py: Python<'py>,
    data: &[u8],
    bad: &dyn Fn() -> PyErr,
) -> PyResult<Bound<'py, PyList>> {
    let count =
        u32::from_le_bytes(data.get(..4).ok_or_else(bad)?.try_into().map_err(|_| bad())?) as usize;
    let mut at = header_len(count);
    if at > data.len() {
        return Err(bad());
    }
    let out = PyList::empty(py);
    for i in 0..count {
        let h = 4 + i * 9;
        let kind = data[h];
        let n = u64::from_le_bytes(data[h + 1..h + 9].try_into().map_err(|_| bad())?) as usize;
        let src = data.get(at..at.checked_add(n).ok_or_else(bad)?).ok_or_else(bad)?;
        out.append(new_part(py, kind, n, |b| b.copy_from_slice(src))?)?;
        at += n;
    }
    let _ = KIND_BYTES;
    Ok(out)
}

pub(crate) struct Part {
    buf: PyUntypedBuffer,
    kind: u8,
}

pub(crate) fn header_len(n: usize) -> usize {
    4 + n * 9
}

/// Writes `bufs` as one inline message (`u32 count`, per part `u8 kind` + `u64 length`, then
/// the parts' bytes) into `out`, which is exactly that long.
pub(crate) fn fill_inline(out: &mut [u8], bufs: &[Part]) {
    let count = u32::try_from(bufs.len()).unwrap_or(u32::MAX);
    out[..4].copy_from_slice(&count.to_le_bytes());
    let mut at = 4;
    for b in bufs {
        out[at] = b.kind;
        out[at + 1..at + 9].copy_from_slice(&(b.buf.len_bytes() as u64).to_le_bytes());
        at += 9;
    }
    for b in bufs {
        let n = b.buf.len_bytes();
        // SAFETY: a C-contiguous buffer of n bytes, held (exported) for this call.
        let src = unsafe { std::slice::from_raw_parts(b.buf.buf_ptr().cast::<u8>(), n) };
        out[at..at + n].copy_from_slice(src);
        at += n;
    }
}

/// The parts of a claimed message, each a new object, and the message released (taken).
/// None: the parts are in the writer's memory and this process may not read it; the writer
/// was told to send them inline, which the caller must now read from the same channel.
pub(crate) fn take<'py>(
    py: Python<'py>,
    mut slot: ferrocsp::shm::ReadSlot<'_>,
    name: &str,
) -> PyResult<Option<Bound<'py, PyList>>> {
    let data = slot.buf();
    let bad = || PyValueError::new_err(format!("corrupt message on channel '{name}'"));
    let word = |at: usize| -> PyResult<u32> {
        Ok(u32::from_le_bytes(data.get(at..at + 4).ok_or_else(bad)?.try_into().map_err(|_| bad())?))
    };
    if word(0)? != REMOTE {
        let out = read_inline(py, data, &bad)?;
        slot.finish().map_err(|e| to_pyerr(py, e, OpName::Read, name))?;
        return Ok(Some(out));
    }
    let pid = word(4)?;
    let count = word(8)? as usize;
    if remote_len(count) > data.len() {
        return Err(bad());
    }
    let mut failed = !remote_enabled();
    let out = PyList::empty(py);
    for i in 0..count {
        if failed {
            break;
        }
        let h = REMOTE_HEADER + i * REMOTE_PART;
        let kind = data[h];
        let n = u64::from_le_bytes(data[h + 1..h + 9].try_into().map_err(|_| bad())?);
        let addr = u64::from_le_bytes(data[h + 9..h + 17].try_into().map_err(|_| bad())?);
        let n = usize::try_from(n).map_err(|_| bad())?;
        let part = new_part(py, kind, n, |b| {
            if vm_read(pid, addr, b).is_err() {
                failed = true;
            }
        })?;
        out.append(part)?;
    }
    if !failed {
        slot.finish().map_err(|e| to_pyerr(py, e, OpName::Read, name))?;
        return Ok(Some(out));
    }
    // Not allowed to read the writer's memory: tell it to send the bytes inline (the writer's
    // rendezvous is not over until they are taken).
    slot.buf_mut()[REJECTED_AT] = 1;
    slot.finish().map_err(|e| to_pyerr(py, e, OpName::Read, name))?;
    Ok(None)
}

/// The parts of a message to write: `parts[i]` a C-contiguous buffer that arrives as `kinds[i]`
/// (`KIND_BYTES` or `KIND_BYTEARRAY`).
pub(crate) fn parts(parts: &Bound<'_, PyList>, kinds: &[u8]) -> PyResult<Vec<Part>> {
    if kinds.len() != parts.len() {
        return Err(PyValueError::new_err("parts and kinds differ in length"));
    }
    let mut bufs = Vec::with_capacity(parts.len());
    for (p, &kind) in parts.iter().zip(kinds) {
        let buf = PyUntypedBuffer::get(&p)?;
        if !buf.is_c_contiguous() {
            return Err(PyTypeError::new_err("message parts must be C-contiguous buffers"));
        }
        bufs.push(Part { buf, kind });
    }
    Ok(bufs)
}

/// The length of `bufs` as one inline message.
pub(crate) fn inline_len(bufs: &[Part]) -> usize {
    header_len(bufs.len()) + bufs.iter().map(|b| b.buf.len_bytes()).sum::<usize>()
}

/// Whether a rendezvous write of `bufs` leaves its parts in this process's memory.
pub(crate) fn goes_remote(bufs: &[Part]) -> bool {
    bufs.iter().map(|b| b.buf.len_bytes()).sum::<usize>() >= REMOTE_MIN && remote_enabled()
}

/// Writes the remote message for `bufs` (they stay exported while the writer waits) into
/// `out`, which is `remote_len(bufs.len())` bytes.
pub(crate) fn fill_remote(out: &mut [u8], bufs: &[Part]) {
    out.fill(0);
    out[..4].copy_from_slice(&REMOTE.to_le_bytes());
    out[4..8].copy_from_slice(&std::process::id().to_le_bytes());
    let count = u32::try_from(bufs.len()).unwrap_or(u32::MAX);
    out[8..12].copy_from_slice(&count.to_le_bytes());
    let mut at = REMOTE_HEADER;
    for b in bufs {
        out[at] = b.kind;
        out[at + 1..at + 9].copy_from_slice(&(b.buf.len_bytes() as u64).to_le_bytes());
        out[at + 9..at + 17].copy_from_slice(&(b.buf.buf_ptr() as u64).to_le_bytes());
        at += REMOTE_PART;
    }
}

/// Whether the reader of a taken remote message could not read the writer's memory (the
/// writer then sends it inline).
pub(crate) fn rejected(taken: &[u8]) -> bool {
    taken.get(REJECTED_AT) == Some(&1)
}
