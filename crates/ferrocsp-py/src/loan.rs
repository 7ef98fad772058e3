//! `Loan` and `LoanBuffer` (issue #20): zero-copy hand-over of a buffer. `w.loan(n)` gives a
//! writable `Loan` (its own memfd, `ferrocsp::shm::LoanMem`); writing it turns it into a
//! read-only `LoanBuffer` over the same memory, which is what the reader gets: by reference
//! in process, by mapping the same file in another OS process (`shm_msg.rs` sends only the
//! loan's identity on a rendezvous channel).
//!
//! Invariants:
//! - A `Loan` owns its memory until it is written (`lend`) or released; afterwards every
//!   access raises (its buffer can no longer be exported), so nothing can write into memory a
//!   reader has.
//! - A `Loan` with a buffer export alive (a `memoryview`, a numpy array) cannot be written nor
//!   released: `BufferError`, and nothing was sent.
//! - A `LoanBuffer`'s exports are read-only; its memory lives while the object does, and a
//!   buffer export keeps the object alive (`view.obj`), so the last reference dropped frees
//!   the memory; `release()` with an export alive is a `BufferError`.
//! - A `write`/`write_nowait` that sent nothing because of its timeout or because it could not
//!   go now (`TimeoutError`, `WouldBlock`) gives the memory back to the `Loan`; any other
//!   failure (poison, retirement; any failure of `awrite`) frees it with the `LoanBuffer`
//!   nobody received.

use std::os::raw::c_int;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use ferrocsp::shm::LoanMem;
use pyo3::exceptions::{PyBufferError, PyOSError, PyTimeoutError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::pythread::Value;

/// The memory of a loan and how many buffer exports of it are alive.
#[derive(Debug, Default)]
struct Held {
    mem: Option<LoanMem>,
    exports: usize,
}

impl Held {
    /// Frees the memory now (idempotent); ``BufferError`` naming `what` while a view of it
    /// is alive.
    fn release(&mut self, what: &str) -> PyResult<()> {
        if self.exports > 0 {
            return Err(PyBufferError::new_err(format!(
                "cannot release {what} while a view of it is alive"
            )));
        }
        drop(self.mem.take());
        Ok(())
    }
}

fn lock(m: &Mutex<Held>) -> MutexGuard<'_, Held> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Fills `view` for `mem` on behalf of `obj` (which the view keeps alive).
///
/// # Safety
/// `view` is the `Py_buffer` CPython passed to `__getbuffer__`.
unsafe fn fill(
    obj: &Bound<'_, PyAny>,
    mem: &LoanMem,
    view: *mut pyo3::ffi::Py_buffer,
    flags: c_int,
    readonly: bool,
) -> PyResult<()> {
    let len = pyo3::ffi::Py_ssize_t::try_from(mem.len())
        .map_err(|_| PyValueError::new_err("loan too large"))?;
    // SAFETY: the caller's `view`; the memory stays mapped while `obj` lives, which the view
    // keeps alive (FillInfo takes a reference), and `release`/`lend` refuse while exported.
    let r = unsafe {
        pyo3::ffi::PyBuffer_FillInfo(
            view,
            obj.as_ptr(),
            mem.ptr().cast(),
            len,
            c_int::from(readonly),
            flags,
        )
    };
    if r != 0 {
        return Err(PyErr::fetch(obj.py()));
    }
    Ok(())
}

/// A writable buffer of ``nbytes`` bytes in memory of its own (``Writer.loan``,
/// ``Channel.loan``), zero-filled. Fill it (``memoryview(loan)``, ``numpy.frombuffer``), drop
/// the views, and ``write`` it: the reader gets a read-only ``LoanBuffer`` over the same
/// memory, without a copy (across OS processes too, on a rendezvous channel).
///
/// After ``write`` the loan is spent: using it raises ``ValueError``. Writing it while a view
/// of it is alive raises ``BufferError`` and sends nothing. A ``write`` or ``write_nowait``
/// that raises ``TimeoutError`` or ``WouldBlock`` (nothing sent) gives the loan back; poison
/// or retirement frees it, as does any failure of ``awrite``. A loan never written frees its
/// memory when dropped (or at ``release()``).
#[pyclass(frozen, module = "ferrocsp._native", name = "Loan")]
#[derive(Debug)]
pub struct Loan {
    held: Mutex<Held>,
    nbytes: usize,
}

impl Loan {
    pub(crate) fn make(nbytes: &Bound<'_, PyAny>) -> PyResult<Loan> {
        if nbytes.is_instance_of::<pyo3::types::PyBool>() {
            return Err(PyTypeError::new_err("loan() takes a number of bytes, not a bool"));
        }
        if !nbytes.is_instance_of::<pyo3::types::PyInt>() {
            let ty = nbytes.get_type().name().map_or_else(|_| "?".to_owned(), |n| n.to_string());
            return Err(PyTypeError::new_err(format!(
                "loan() takes a number of bytes (int), not {ty}"
            )));
        }
        let n: i128 = nbytes
            .extract()
            .map_err(|_| PyValueError::new_err(format!("loan() of {nbytes} bytes: too large")))?;
        let n = usize::try_from(n)
            .ok()
            .filter(|&n| isize::try_from(n).is_ok())
            .ok_or_else(|| PyValueError::new_err(format!("loan() needs 0 <= nbytes, got {n}")))?;
        let mem = LoanMem::create(n)
            .map_err(|e| PyOSError::new_err(format!("cannot make a loan of {n} bytes: {e}")))?;
        Ok(Loan { held: Mutex::new(Held { mem: Some(mem), exports: 0 }), nbytes: n })
    }

    /// The loan's memory as the `LoanBuffer` a reader gets (the write's value); the loan is
    /// spent.
    fn spend(&self) -> PyResult<LoanBuffer> {
        let mut h = lock(&self.held);
        if h.exports > 0 {
            return Err(PyBufferError::new_err(
                "cannot write a loan while a view of it (memoryview, numpy array) is alive: \
                 release the views first (nothing was sent)",
            ));
        }
        let mem = h.mem.take().ok_or_else(spent)?;
        Ok(LoanBuffer {
            held: Mutex::new(Held { mem: Some(mem), exports: 0 }),
            nbytes: self.nbytes,
        })
    }
}

fn spent() -> PyErr {
    PyValueError::new_err("this loan was already written or released")
}

/// `value` as a write sends it: a `Loan` becomes its `LoanBuffer` (the loan is spent); any
/// other value is itself. What `awrite` calls (its failure comes later: the loan stays spent).
pub(crate) fn lend(py: Python<'_>, value: Value) -> PyResult<Value> {
    // Exact: `Loan` cannot be subclassed. Every write pays this check, so the type object is
    // compared by address with the one cached at the first call (PyO3's lazy type lookup
    // costs ~30 instructions, a hundredth of a coroutine communication).
    static LOAN_TYPE: AtomicPtr<pyo3::ffi::PyTypeObject> = AtomicPtr::new(std::ptr::null_mut());
    let mut tp = LOAN_TYPE.load(Ordering::Relaxed);
    if tp.is_null() {
        // The type lives as long as the interpreter (PyO3 keeps it), like this module.
        tp = py.get_type::<Loan>().as_type_ptr();
        LOAN_TYPE.store(tp, Ordering::Relaxed);
    }
    // SAFETY: `value` is a live object; its type pointer is only compared.
    if unsafe { pyo3::ffi::Py_TYPE(value.as_ptr()) } != tp {
        return Ok(value);
    }
    let Ok(loan) = value.bind(py).cast_exact::<Loan>() else { return Ok(value) };
    let buf = loan.get().spend()?;
    Ok(Py::new(py, buf)?.into_any())
}

/// Runs `write` with `value` as a write sends it (see [`lend`]); if the write sent nothing
/// because of its timeout or because it could not go now (`TimeoutError`, `WouldBlock`), a
/// loan goes back to its writer, usable again. Poison and retirement free it (DESIGN: poison
/// frees loans in flight). What `write` and `write_nowait` call.
pub(crate) fn lending(
    py: Python<'_>,
    value: Value,
    write: impl FnOnce(Value) -> PyResult<()>,
) -> PyResult<()> {
    let Ok(loan) = value.bind(py).cast_exact::<Loan>().map(|l| l.clone().unbind()) else {
        return write(value);
    };
    drop(value);
    let buf = Py::new(py, loan.get().spend()?)?;
    let r = write(buf.clone_ref(py).into_any());
    if let Err(e) = &r {
        let nothing_sent = e.is_instance_of::<PyTimeoutError>(py)
            || crate::errors::would_block_type(py).is_ok_and(|t| e.is_instance(py, &t));
        // Only if nobody else holds the buffer (the write let go of every reference).
        if nothing_sent && buf.get_refcnt(py) == 1 {
            let mem = {
                let mut h = lock(&buf.get().held);
                if h.exports == 0 {
                    h.mem.take()
                } else {
                    None
                }
            };
            if let Some(mem) = mem {
                lock(&loan.get().held).mem = Some(mem);
            }
        }
    }
    r
}

#[pymethods]
impl Loan {
    /// The loan's size in bytes.
    #[getter]
    fn nbytes(&self) -> usize {
        self.nbytes
    }

    fn __len__(&self) -> usize {
        self.nbytes
    }

    /// Whether the loan was written or released (its memory is no longer this object's).
    #[getter]
    fn spent(&self) -> bool {
        lock(&self.held).mem.is_none()
    }

    /// Frees the memory now instead of when the loan is dropped (idempotent); the loan is
    /// spent. ``BufferError`` while a view of it is alive.
    fn release(&self) -> PyResult<()> {
        lock(&self.held).release("a loan")
    }

    fn __repr__(&self) -> String {
        let state = if self.spent() { ", spent" } else { "" };
        format!("Loan(nbytes={}{state})", self.nbytes)
    }

    fn __reduce__(&self) -> PyResult<()> {
        Err(PyTypeError::new_err(
            "a Loan cannot be pickled: write it to a channel (the reader gets a LoanBuffer)",
        ))
    }

    /// # Safety
    /// Called by CPython with a valid `view`.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut pyo3::ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let this = slf.get();
        let mut h = lock(&this.held);
        let mem = h.mem.as_ref().ok_or_else(spent)?;
        // SAFETY: CPython's view; see `fill`.
        unsafe { fill(slf.as_any(), mem, view, flags, false)? };
        h.exports += 1;
        Ok(())
    }

    /// # Safety
    /// Called by CPython for a view `__getbuffer__` filled.
    unsafe fn __releasebuffer__(&self, _view: *mut pyo3::ffi::Py_buffer) {
        let mut h = lock(&self.held);
        h.exports = h.exports.saturating_sub(1);
    }
}

/// What a reader gets for a written ``Loan``: a read-only buffer (``memoryview``,
/// ``bytes()``, ``numpy.frombuffer``) over the loan's memory, no copy made. The memory is
/// freed when the last reference to it goes (this object, or a view of it), or at
/// ``release()``.
#[pyclass(frozen, module = "ferrocsp._native", name = "LoanBuffer")]
#[derive(Debug)]
pub struct LoanBuffer {
    held: Mutex<Held>,
    nbytes: usize,
}

impl LoanBuffer {
    /// A reader's buffer over `mem` (mapped from another process's loan).
    pub(crate) fn received(mem: LoanMem) -> LoanBuffer {
        let nbytes = mem.len();
        LoanBuffer { held: Mutex::new(Held { mem: Some(mem), exports: 0 }), nbytes }
    }

    /// This process's descriptor, uuid and length of the loan, while it holds the writer's
    /// descriptor (a loan written here and not yet handed over).
    pub(crate) fn identity(&self) -> Option<(i32, [u8; 16], usize)> {
        let h = lock(&self.held);
        let m = h.mem.as_ref()?;
        Some((m.fd()?, m.uuid(), m.len()))
    }

    /// After another process mapped the loan: this process lets go of it, its mapping unmapped
    /// off the caller's path (`LoanMem::release_later`).
    pub(crate) fn handed_over(&self) {
        let mut h = lock(&self.held);
        // A view still alive (the caller wrote a `LoanBuffer` it holds views of) keeps the
        // memory: it is freed with this object instead.
        if h.exports > 0 {
            return;
        }
        if let Some(m) = h.mem.take() {
            drop(h);
            m.release_later();
        }
    }
}

#[pymethods]
impl LoanBuffer {
    /// The size in bytes.
    #[getter]
    fn nbytes(&self) -> usize {
        self.nbytes
    }

    fn __len__(&self) -> usize {
        self.nbytes
    }

    /// Whether ``release()`` freed the memory.
    #[getter]
    fn released(&self) -> bool {
        lock(&self.held).mem.is_none()
    }

    /// Frees the memory now (idempotent). ``BufferError`` while a view of it is alive.
    fn release(&self) -> PyResult<()> {
        lock(&self.held).release("a LoanBuffer")
    }

    fn __repr__(&self) -> String {
        let state = if self.released() { ", released" } else { "" };
        format!("LoanBuffer(nbytes={}{state})", self.nbytes)
    }

    /// Pickled (inside another value, say) as the ``bytes`` it holds: a copy.
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, (Bound<'py, PyBytes>,))> {
        let py = slf.py();
        let h = lock(&slf.get().held);
        let mem = h.mem.as_ref().ok_or_else(|| {
            PyValueError::new_err("this LoanBuffer was released: nothing to pickle")
        })?;
        // SAFETY: the mapping is readable and `len` long while `h` holds it.
        let data = unsafe { std::slice::from_raw_parts(mem.ptr(), mem.len()) };
        let bytes = PyBytes::new(py, data);
        Ok((py.get_type::<PyBytes>().into_any(), (bytes,)))
    }

    /// # Safety
    /// Called by CPython with a valid `view`.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut pyo3::ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let this = slf.get();
        let mut h = lock(&this.held);
        let mem =
            h.mem.as_ref().ok_or_else(|| PyValueError::new_err("this LoanBuffer was released"))?;
        // SAFETY: CPython's view; see `fill`. Read-only: a writable request is a BufferError.
        unsafe { fill(slf.as_any(), mem, view, flags, true)? };
        h.exports += 1;
        Ok(())
    }

    /// # Safety
    /// Called by CPython for a view `__getbuffer__` filled.
    unsafe fn __releasebuffer__(&self, _view: *mut pyo3::ffi::Py_buffer) {
        let mut h = lock(&self.held);
        h.exports = h.exports.saturating_sub(1);
    }
}
