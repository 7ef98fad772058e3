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
//! *Loan* (a rendezvous write of a written `Loan`, `loan.rs`): the marker `LOAN`, the writer's
//! pid, its descriptor of the loan, the rejected flag, the length and the loan's uuid (40
//! bytes whatever the size); the reader maps the loan itself (`LoanMem`, through
//! `ReadSlot::attach_loan`) while the writer stays blocked, and gets `[b"L", LoanBuffer]`; or
//! it marks the message rejected and the writer sends the bytes inline (a copy, read as
//! `bytes`).
//!
//! Invariants:
//! - Every length, count and offset read back from a message is checked against the message
//!   before use; a bad one poisons the channel as corrupt (`ReadSlot::corrupt`), never an
//!   out-of-bounds read.
//! - A remote message is read only from its entry's recorded writer (the engine's
//!   `ReadSlot::copy_from_writer`), never from the pid it states (which must match), and its
//!   parts' lengths with their inline header fit the channel's largest message, as they must
//!   for the writer to send it remotely (`goes_remote`): a forged one is a corrupt channel,
//!   never a read of another process's memory nor a huge allocation.
//! - A loan message is mapped only from the entry's recorded writer, and only a file that is
//!   that very loan (`LoanMem::attach` checks name, seals and length on its own descriptor):
//!   a forged one is a corrupt channel, never a mapping of another file; mapping costs the
//!   reader address space, not memory.
//! - A part object is created uninitialised and filled completely before anyone else sees it;
//!   one whose copy failed is dropped unseen.

use std::io::ErrorKind;

use ferrocsp::shm::{ReadSlot, ShmChannel, Wait};
use ferrocsp::Error;
use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::loan::LoanBuffer;

const KIND_BYTES: u8 = 0;
const KIND_BYTEARRAY: u8 = 1;
/// A part that is a written loan (`LoanBuffer`): inline it travels as `KIND_BYTES`.
const KIND_LOAN: u8 = 2;
/// First word of a message that names a loan (rendezvous, any size).
const LOAN: u32 = 0xFFFF_FFFD;
const LOAN_LEN: usize = 40;
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

pub(crate) struct Part {
    buf: PyUntypedBuffer,
    kind: u8,
    /// The loan this part is (`KIND_LOAN`), whose bytes `buf` exports.
    loan: Option<Py<LoanBuffer>>,
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
        out[at] = if b.kind == KIND_LOAN { KIND_BYTES } else { b.kind };
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

/// Where one part of a message lies: `at` is an offset in an inline message, an address in
/// the writer's memory for a remote one.
struct PartAt {
    kind: u8,
    len: usize,
    at: u64,
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(data.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// A part's kind, one a writer can send (`parts` refuses any other).
fn kind_at(data: &[u8], at: usize) -> Option<u8> {
    data.get(at).copied().filter(|&k| k == KIND_BYTES || k == KIND_BYTEARRAY)
}

/// The parts of an inline message, each checked to lie inside it; None: it is not one a
/// writer can have made.
fn parse_inline(data: &[u8]) -> Option<Vec<PartAt>> {
    let count = u32_at(data, 0)? as usize;
    let mut at = header_len(count);
    if at > data.len() {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let h = 4 + i * 9;
        let len = usize::try_from(u64_at(data, h + 1)?).ok()?;
        let end = at.checked_add(len).filter(|&e| e <= data.len())?;
        out.push(PartAt { kind: kind_at(data, h)?, len, at: at as u64 });
        at = end;
    }
    Some(out)
}

/// The writer's pid as the message states it and the parts of a remote message; None: it is
/// not one a writer can have made. The parts' bytes together with their inline header must
/// fit in `max` (the channel's largest message), the rule a writer obeys to send remotely
/// at all (`fits_remote`), so a message can never make the reader allocate more than the
/// same value sent inline would have taken.
fn parse_remote(data: &[u8], max: usize) -> Option<(u32, Vec<PartAt>)> {
    let pid = u32_at(data, 4)?;
    let count = u32_at(data, 8)? as usize;
    if count > data.len().saturating_sub(REMOTE_HEADER) / REMOTE_PART {
        return None;
    }
    let mut total = header_len(count);
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let h = REMOTE_HEADER + i * REMOTE_PART;
        let len = usize::try_from(u64_at(data, h + 1)?).ok()?;
        total = total.checked_add(len).filter(|&t| t <= max)?;
        out.push(PartAt { kind: kind_at(data, h)?, len, at: u64_at(data, h + 9)? });
    }
    (total <= max).then_some((pid, out))
}

/// The error of a message that breaks the channel's rules: the channel is poisoned as
/// corrupt (as for a corrupt ring), so its writer and every other party stop.
fn corrupt(slot: ReadSlot<'_>, err: &dyn Fn(Error) -> PyErr) -> PyErr {
    err(slot.corrupt())
}

/// The parts of a claimed message, each a new object, and the message released (taken).
/// None: the parts are in the writer's memory and this process may not read it; the writer
/// was told to send them inline, which the caller must now read from the same channel.
/// `err` turns the engine's errors into the read's exception (naming its channel).
pub(crate) fn take<'py>(
    py: Python<'py>,
    mut slot: ReadSlot<'_>,
    err: &dyn Fn(Error) -> PyErr,
) -> PyResult<Option<Bound<'py, PyList>>> {
    let data = slot.buf();
    let done = |slot: ReadSlot<'_>| slot.finish().map_err(err);
    if u32_at(data, 0) == Some(LOAN) {
        return take_loan(py, slot, err);
    }
    if u32_at(data, 0) != Some(REMOTE) {
        let Some(parts) = parse_inline(data) else { return Err(corrupt(slot, err)) };
        let out = PyList::empty(py);
        for p in parts {
            let src = &data[p.at as usize..p.at as usize + p.len];
            out.append(new_part(py, p.kind, p.len, |b| b.copy_from_slice(src))?)?;
        }
        done(slot)?;
        return Ok(Some(out));
    }
    let max = slot.channel().max_message();
    // The pid in the message is only compared: the bytes are read from the entry's recorded
    // writer, and a message that names another process was not made by it.
    let parts = match parse_remote(data, max) {
        Some((pid, parts)) if pid == slot.writer_pid() => parts,
        _ => return Err(corrupt(slot, err)),
    };
    let out = PyList::empty(py);
    let mut failed = (!remote_enabled()).then_some(ErrorKind::PermissionDenied);
    for p in parts {
        if failed.is_some() {
            break;
        }
        let part = new_part(py, p.kind, p.len, |b| {
            if let Err(e) = slot.copy_from_writer(p.at, b) {
                failed = Some(e.kind());
            }
        })?;
        if failed.is_none() {
            out.append(part)?;
        }
    }
    match failed {
        None => {
            done(slot)?;
            Ok(Some(out))
        }
        Some(ErrorKind::InvalidData) => Err(corrupt(slot, err)),
        Some(_) => {
            // Not allowed to read the writer's memory (or it is gone): tell it to send the
            // bytes inline (the writer's rendezvous is not over until they are taken).
            slot.buf_mut()[REJECTED_AT] = 1;
            done(slot)?;
            Ok(None)
        }
    }
}

/// `take` for a loan message: `[b"L", LoanBuffer]` mapped from the writer's loan, or None
/// (rejected: the writer sends the bytes inline).
fn take_loan<'py>(
    py: Python<'py>,
    mut slot: ReadSlot<'_>,
    err: &dyn Fn(Error) -> PyErr,
) -> PyResult<Option<Bound<'py, PyList>>> {
    let data = slot.buf();
    // The pid is only compared, as for a remote message: the loan is opened in the entry's
    // recorded writer.
    let parsed = (|| {
        let pid = u32_at(data, 4)?;
        let fd = i32::from_le_bytes(u32_at(data, 8)?.to_le_bytes());
        let len = usize::try_from(u64_at(data, 16)?).ok()?;
        let uuid: [u8; 16] = data.get(24..40)?.try_into().ok()?;
        (data.len() == LOAN_LEN && pid == slot.writer_pid()).then_some((fd, len, uuid))
    })();
    let Some((fd, len, uuid)) = parsed else { return Err(corrupt(slot, err)) };
    let mapped = if remote_enabled() {
        slot.attach_loan(fd, &uuid, len)
    } else {
        Err(std::io::Error::from(ErrorKind::PermissionDenied))
    };
    match mapped {
        Ok(mem) => {
            let buf = Py::new(py, LoanBuffer::received(mem))?;
            slot.finish().map_err(err)?;
            let out = PyList::empty(py);
            out.append(PyBytes::new(py, b"L"))?;
            out.append(buf)?;
            Ok(Some(out))
        }
        Err(e) if e.kind() == ErrorKind::InvalidData => Err(corrupt(slot, err)),
        Err(_) => {
            slot.buf_mut()[REJECTED_AT] = 1;
            slot.finish().map_err(err)?;
            Ok(None)
        }
    }
}

/// The parts of a message to write: `parts[i]` a C-contiguous buffer that arrives as `kinds[i]`
/// (`KIND_BYTES` or `KIND_BYTEARRAY`).
pub(crate) fn parts(parts: &Bound<'_, PyList>, kinds: &[u8]) -> PyResult<Vec<Part>> {
    if kinds.len() != parts.len() {
        return Err(PyValueError::new_err("parts and kinds differ in length"));
    }
    if kinds.iter().any(|&k| k != KIND_BYTES && k != KIND_BYTEARRAY && k != KIND_LOAN) {
        return Err(PyValueError::new_err(
            "a part's kind is 0 (bytes), 1 (bytearray) or 2 (a written loan)",
        ));
    }
    let mut bufs = Vec::with_capacity(parts.len());
    for (p, &kind) in parts.iter().zip(kinds) {
        let loan = if kind == KIND_LOAN {
            Some(p.cast::<LoanBuffer>().map_err(PyErr::from)?.clone().unbind())
        } else {
            None
        };
        let buf = PyUntypedBuffer::get(&p)?;
        if !buf.is_c_contiguous() {
            return Err(PyTypeError::new_err("message parts must be C-contiguous buffers"));
        }
        bufs.push(Part { buf, kind, loan });
    }
    Ok(bufs)
}

/// The length of `bufs` as one inline message.
pub(crate) fn inline_len(bufs: &[Part]) -> usize {
    header_len(bufs.len()) + bufs.iter().map(|b| b.buf.len_bytes()).sum::<usize>()
}

/// Whether a rendezvous write of `bufs` on `ch` leaves its parts in this process's memory:
/// large, and small enough to be sent inline on `ch` too (a reader may refuse to read our
/// memory, and then gets it inline; a reader refuses a remote message larger than that).
pub(crate) fn goes_remote(ch: &ShmChannel, bufs: &[Part]) -> bool {
    let payload = bufs.iter().map(|b| b.buf.len_bytes()).sum::<usize>();
    ch.capacity() == 0
        && payload >= REMOTE_MIN
        && inline_len(bufs) <= ch.max_message()
        && remote_enabled()
}

/// The loan a rendezvous write of `bufs` on `ch` hands over by its identity: the message is
/// exactly a tag and one written loan that this process still holds (`encode`'s `b"L"`).
pub(crate) fn loan_of<'a>(ch: &ShmChannel, bufs: &'a [Part]) -> Option<&'a Py<LoanBuffer>> {
    match bufs {
        [_, Part { loan: Some(l), .. }] if ch.capacity() == 0 && remote_enabled() => Some(l),
        _ => None,
    }
}

/// The loan message for the loan `(fd, uuid, len)` of this process into `out`
/// (`LOAN_LEN` bytes).
pub(crate) fn fill_loan(out: &mut [u8], fd: i32, uuid: &[u8; 16], len: usize) {
    out.fill(0);
    out[..4].copy_from_slice(&LOAN.to_le_bytes());
    out[4..8].copy_from_slice(&std::process::id().to_le_bytes());
    out[8..12].copy_from_slice(&fd.to_le_bytes());
    out[16..24].copy_from_slice(&(len as u64).to_le_bytes());
    out[24..40].copy_from_slice(uuid);
}

/// The length of a loan message.
pub(crate) const fn loan_len() -> usize {
    LOAN_LEN
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
