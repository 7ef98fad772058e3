//! asyncio: the Python type of an awaitable channel operation (`_AsyncOp`).
//!
//! `aread()`/`awrite()`/`__anext__()`/`aselect()` return an `_AsyncOp` in one of two states:
//!
//! - **done**: the operation completed at the call (the counterpart was already waiting, the
//!   common case between coroutines); the object holds the result;
//! - **pending**: it holds an [`AsyncOp`] (aio.rs), which tries again, registers and waits when
//!   awaited.
//!
//! It is a small native type built with `PyType_FromSpec` rather than a `#[pyclass]` because
//! it needs the `am_send` slot, which PyO3 does not offer: `await` (the `SEND` opcode, through
//! `PyIter_Send`) then gets the result as a plain return value, with no `StopIteration` object
//! and no Python-level call. `__next__`/`send`/`throw`/`close` give the coroutine protocol
//! (so the op can be passed to `asyncio.create_task`), ending with `StopIteration` as usual.
//!
//! Invariants:
//! - `value` owns the result of a done op until the first resume takes it, then is null; `op`
//!   owns the pending state (a leaked `Box`, or the kept block) until deallocation. At most
//!   one is non-null, and both are null once a done op was consumed: the result is handed
//!   out at most once and a second await is a `RuntimeError`, never a crash or a duplicated
//!   value.
//! - Entry points may run on several threads at once (free-threaded CPython has no GIL to
//!   serialise them): `value` is taken with one atomic swap, so exactly one resume, `throw`,
//!   `close` or the deallocation gets a done op's result. `op` is written once before the
//!   object is shared and read-only until deallocation. The pending state has its own lock,
//!   which also refuses concurrent and re-entrant resumes.
//! - A `throw` into a done op (before it was awaited) follows the rule of a communication
//!   that won a race against a cancellation (aio.rs): a `CancelledError` yields the result
//!   and re-requests the cancellation; any other exception propagates.
//! - Not garbage-collected (like the former `#[pyclass]`): an op holds its references only
//!   between the call and the end of its await; a cycle through an abandoned op is leaked.
//! - No slot asks PyO3 to attach once the interpreter finalizes (`slot.rs`): an op may be
//!   freed, closed or stepped then (a module global), and PyO3's refusal would abort.
//! - With a GIL, the memory of one deallocated op (`FREE`) is kept and reused by the next
//!   allocation, and so is the block of one dropped pending state (`FREE_STATE`);
//!   deallocation itself (the warning, the drop of the pending state) is unchanged, and a
//!   kept block holds no reference and no value. And the last consumed done op
//!   (`SPARE`, one reference) is handed out again as the next done op while nobody else
//!   holds it; an op dropped before it was consumed is never kept.

use std::ffi::{c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use pyo3::exceptions::{PyRuntimeError, PyStopIteration, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

use std::sync::Arc;

use crate::aio::{AsyncOp, Out, Step};
use crate::aio_wake::{exception_from_throw_args, keep_result_on_cancel};
use crate::coro_alt::CoroAlt;
use crate::coro_op::{in_coro_task, CoroKind, CoroOp};
use crate::flavor::Flavors;
use crate::pythread::Value;
use crate::slot::in_slot;

/// `Py_am_send` from CPython's `typeslots.h` (3.10+), which pyo3-ffi does not define.
const PY_AM_SEND: c_int = 81;

static OP_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();

#[repr(C)]
struct OpObject {
    ob_base: ffi::PyObject,
    /// A done op's result (owned), or null; taken with [`take_value`].
    value: AtomicPtr<ffi::PyObject>,
    /// A pending op's state (`Box::into_raw`), or null.
    op: *mut Pending,
}

/// A pending op's state: waiting through an event loop (`aio.rs`), or in a task of the native
/// coroutine backend (`coro_op.rs`).
pub(crate) enum Pending {
    Loop(AsyncOp),
    Coro(CoroOp),
    /// Boxed: an Alt's state is twice a plain op's, and every op's state would grow with it
    /// (each move of a pending state copies the whole enum).
    CoroAlt(Box<CoroAlt>),
}

impl Pending {
    fn step(&self, py: Python<'_>) -> Step {
        match self {
            Pending::Loop(op) => op.step(py),
            Pending::Coro(op) => op.step(py),
            Pending::CoroAlt(op) => op.step(py),
        }
    }

    fn throw(&self, py: Python<'_>, me: &Bound<'_, PyAny>, exc: PyErr) -> Step {
        match self {
            Pending::Loop(op) => op.throw(py, me, exc),
            Pending::Coro(op) => op.throw(py, exc),
            Pending::CoroAlt(op) => op.throw(py, exc),
        }
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        match self {
            Pending::Loop(op) => op.close(py),
            Pending::Coro(op) => op.close(py),
            Pending::CoroAlt(op) => op.close(py),
        }
    }

    /// Drops the state on an attached thread, releasing a coroutine op's Python references
    /// directly: a `Py` dropped asks PyO3 whether the thread is attached (a thread-local
    /// lookup, one per reference, a few per coroutine communication).
    fn release(self, py: Python<'_>) {
        match self {
            Pending::Loop(op) => drop(op),
            Pending::Coro(op) => op.release(py),
            Pending::CoroAlt(op) => drop(op),
        }
    }
}

/// What a new op holds: a done op's result, or a pending op's state.
enum Content {
    Done(Py<PyAny>),
    Pending(Pending),
}

/// The `_AsyncOp` type, created on first use (once per interpreter).
pub(crate) fn op_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    OP_TYPE.get_or_try_init(py, || create_type(py)).map(|t| t.bind(py))
}

fn alloc(py: Python<'_>, content: Content) -> PyResult<Py<PyAny>> {
    let tp = op_type(py)?.as_type_ptr();
    let gil = gil_enabled(py);
    let kept = if gil {
        // The GIL serialises every use of FREE: a load and a store, not an atomic swap (a
        // locked instruction, ~4 ns, for nothing).
        let kept = FREE.load(Ordering::Relaxed);
        FREE.store(ptr::null_mut(), Ordering::Relaxed);
        kept
    } else {
        ptr::null_mut()
    };
    let obj = if kept.is_null() {
        // SAFETY: `tp` is the live `_AsyncOp` type (held by OP_TYPE); PyType_GenericAlloc
        // returns a new zeroed instance of its basicsize or null with an exception.
        unsafe { ffi::PyType_GenericAlloc(tp, 0) }
    } else {
        // SAFETY: `kept` is the memory of a deallocated `_AsyncOp` (same basic size, from
        // the same allocator), owned by nobody: PyObject_Init makes it a new instance of
        // `tp` (type, reference count 1, a reference to the heap type), as GenericAlloc does.
        unsafe { ffi::PyObject_Init(kept, tp) }
    };
    if obj.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: `obj` is a new OpObject not yet shared (a kept block's fields are stale, so
    // both are written); the fields take ownership of the reference `into_ptr` releases and
    // of the box.
    unsafe {
        let o = obj.cast::<OpObject>();
        match content {
            Content::Pending(op) => {
                ptr::addr_of_mut!((*o).value).write(AtomicPtr::new(ptr::null_mut()));
                ptr::addr_of_mut!((*o).op).write(new_state(gil, op));
            }
            Content::Done(value) => {
                ptr::addr_of_mut!((*o).value).write(AtomicPtr::new(value.into_ptr()));
                ptr::addr_of_mut!((*o).op).write(ptr::null_mut());
            }
        }
    }
    // SAFETY: `obj` is a new, owned, non-null reference.
    Ok(unsafe { Bound::from_owned_ptr(py, obj) }.unbind())
}

/// The memory of one deallocated op, kept for the next (with a GIL): the common
/// `await ch.awrite(v)` makes an op, awaits it and drops it at once, so the next op reuses
/// the block instead of a `PyObject_Malloc` and a free. Holds no reference, only memory of
/// the type's basic size.
static FREE: AtomicPtr<ffi::PyObject> = AtomicPtr::new(ptr::null_mut());

/// The memory of one dropped pending state, kept for the next (with a GIL, as `FREE` for
/// the object): every awaited operation that waits has one, so reusing it saves a `malloc`
/// and a `free` (about 150 instructions) per coroutine communication. Holds no value.
static FREE_STATE: AtomicPtr<Pending> = AtomicPtr::new(ptr::null_mut());

/// A pending op's state moved to the heap: into the kept block if there is one (`gil`: the
/// interpreter has a GIL, which serialises every use of it), else a new box.
fn new_state(gil: bool, op: Pending) -> *mut Pending {
    if gil {
        let kept = FREE_STATE.load(Ordering::Relaxed);
        if !kept.is_null() {
            FREE_STATE.store(ptr::null_mut(), Ordering::Relaxed);
            // SAFETY: `kept` is the memory of a `Box<Pending>` whose value was moved out
            // (`take_state`), owned by nobody else: writing makes it that box again.
            unsafe { kept.write(op) };
            return kept;
        }
    }
    Box::into_raw(Box::new(op))
}

/// Moves a pending op's state out of its block, and keeps the block (with a GIL, if none is
/// kept) or frees it.
///
/// # Safety
/// `op` is a block from [`new_state`] that nobody else reaches any more, and the thread is
/// attached.
unsafe fn take_state(op: *mut Pending) -> Pending {
    // SAFETY: per the contract; the value is read once, and the block is then either kept
    // (dead memory of a `Box<Pending>`) or freed as the box it came from.
    unsafe {
        let state = ptr::read(op);
        if gil_known() && FREE_STATE.load(Ordering::Relaxed).is_null() {
            FREE_STATE.store(op, Ordering::Relaxed);
        } else {
            drop(Box::from_raw(op.cast::<std::mem::MaybeUninit<Pending>>()));
        }
        state
    }
}

static GIL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Whether the interpreter is known to run with a GIL (false until the first op was made:
/// [`gil_enabled`] finds out). Needs no attached thread.
pub(crate) fn gil_known() -> bool {
    GIL.get().copied().unwrap_or(false)
}

/// Whether the interpreter runs with a GIL (`sys._is_gil_enabled`, true before 3.13): the
/// kept block relies on it to serialise its users.
fn gil_enabled(py: Python<'_>) -> bool {
    *GIL.get_or_init(|| {
        let check = py.import(pyo3::intern!(py, "sys")).and_then(|m| m.getattr("_is_gil_enabled"));
        match check {
            Ok(f) => f.call0().and_then(|r| r.extract::<bool>()).unwrap_or(false),
            Err(_) => true,
        }
    })
}

/// The last done op whose result an await took (with a GIL; one reference held here): the
/// next done op is that object again when nobody else holds it (reference count 1), which
/// saves an allocation and a deallocation per `await ch.awrite(v)`. Only a consumed op is
/// kept, so one dropped unawaited is deallocated (and warned about) at once as before.
static SPARE: AtomicPtr<ffi::PyObject> = AtomicPtr::new(ptr::null_mut());

/// An op that completed at the call: awaiting it returns `value`.
pub(crate) fn done(py: Python<'_>, value: Py<PyAny>) -> PyResult<Py<PyAny>> {
    if gil_enabled(py) {
        // The GIL serialises every use of SPARE: relaxed loads and stores suffice.
        let spare = SPARE.load(Ordering::Relaxed);
        // SAFETY: SPARE holds a reference to a live `_AsyncOp`; with a reference count of 1
        // nobody else has it, its result was taken (`keep_spare`) and `op` is null (a done
        // op), so filling `value` again makes it a fresh done op.
        unsafe {
            if !spare.is_null() && ffi::Py_REFCNT(spare) == 1 {
                let o = spare.cast::<OpObject>();
                if (*o).value.load(Ordering::Relaxed).is_null() && (*o).op.is_null() {
                    // Handed out with SPARE's own reference: dropped unawaited, it is
                    // deallocated (and warned about) like any other op.
                    SPARE.store(ptr::null_mut(), Ordering::Relaxed);
                    (*o).value.store(value.into_ptr(), Ordering::Release);
                    return Ok(Bound::from_owned_ptr(py, spare).unbind());
                }
            }
        }
    }
    alloc(py, Content::Done(value))
}

/// A done op whose result was just taken by its await: kept as SPARE (see there).
///
/// # Safety
/// `slf` is a live done `_AsyncOp` and the thread is attached.
unsafe fn keep_spare(py: Python<'_>, slf: *mut ffi::PyObject) {
    if !gil_enabled(py) {
        return;
    }
    // SAFETY: per the contract; the reference taken here is SPARE's, the one released is
    // the previous SPARE's (which may deallocate it: it is no longer reachable from here).
    unsafe {
        // A load and a store: the GIL serialises every use of SPARE (see `done`).
        let old = SPARE.load(Ordering::Relaxed);
        SPARE.store(slf, Ordering::Relaxed);
        if old != slf {
            ffi::Py_IncRef(slf);
            if !old.is_null() {
                ffi::Py_DecRef(old);
            }
        }
    }
}

/// An op that waits when awaited.
pub(crate) fn pending(py: Python<'_>, op: AsyncOp) -> PyResult<Py<PyAny>> {
    alloc(py, Content::Pending(Pending::Loop(op)))
}

/// An op of a coroutine task that waits when awaited (`coro_op.rs`).
fn coro_pending(py: Python<'_>, op: CoroOp) -> PyResult<Py<PyAny>> {
    alloc(py, Content::Pending(Pending::Coro(op)))
}

/// A native Alt's selection of a coroutine task that waits when awaited (`coro_alt.rs`).
pub(crate) fn coro_alt_pending(py: Python<'_>, op: CoroAlt) -> PyResult<Py<PyAny>> {
    alloc(py, Content::Pending(Pending::CoroAlt(Box::new(op))))
}

/// Takes a done op's result (an owned reference), or null if there is none (a pending op, or
/// one already consumed): one atomic swap without a GIL, so two threads never both get it;
/// with one, a load and a store (the GIL serialises the takers, and the swap's locked
/// instruction costs ~4 ns of every await).
///
/// # Safety
/// `o` must point to a live `_AsyncOp`, and the calling thread must be attached.
unsafe fn take_value(o: *mut OpObject) -> *mut ffi::PyObject {
    // SAFETY: per this function's contract; `value` is only ever accessed atomically.
    let value = unsafe { &(*o).value };
    if gil_known() {
        let v = value.load(Ordering::Acquire);
        if !v.is_null() {
            value.store(ptr::null_mut(), Ordering::Relaxed);
        }
        return v;
    }
    value.swap(ptr::null_mut(), Ordering::AcqRel)
}

/// Resumes the op: a done op hands out its result once, a pending one steps.
///
/// # Safety
/// `slf` must point to a live `_AsyncOp`, and the calling thread must be attached to the interpreter.
unsafe fn step(py: Python<'_>, slf: *mut ffi::PyObject) -> Step {
    let o = slf.cast::<OpObject>();
    // SAFETY: per this function's contract; `op` is never written after the object is
    // shared and stays valid until deallocation, which cannot run while the caller holds
    // `slf`; `value` is taken atomically.
    unsafe {
        if let Some(op) = (*o).op.as_ref() {
            return op.step(py);
        }
        let value = take_value(o);
        if value.is_null() {
            return Err(reused());
        }
        keep_spare(py, slf);
        Ok(Out::Return(Bound::from_owned_ptr(py, value).unbind()))
    }
}

fn reused() -> PyErr {
    PyRuntimeError::new_err("cannot reuse an already awaited channel operation")
}

/// A step as the iterator protocol ends it: the yielded future, or null with
/// `StopIteration(value)` set. `tp_iternext` may leave nothing set for `None` (read as
/// `StopIteration(None)`); a method (`send`, `throw`) must set it.
fn as_iternext(py: Python<'_>, r: Step, method: bool) -> *mut ffi::PyObject {
    match r {
        Ok(Out::Yield(fut)) => fut.into_ptr(),
        Ok(Out::Return(v)) => {
            if !v.is_none(py) {
                PyStopIteration::new_err((v,)).restore(py);
            } else if method {
                PyStopIteration::new_err(()).restore(py);
            }
            ptr::null_mut()
        }
        Err(e) => {
            e.restore(py);
            ptr::null_mut()
        }
    }
}

/// Runs `f`, turning a Rust panic into a Python exception (never unwinding into CPython).
fn guarded(f: impl FnOnce() -> Step) -> Step {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(pyo3::panic::PanicException::new_err("panic in a ferrocsp channel operation"))
    })
}

/// Runs a call into `slf` with the Python token. For a done op or a coroutine op it is
/// assumed: neither step releases a `Py` that would ask PyO3's attachment count (results and
/// errors go to CPython, a coroutine op's own references are released as `Bound`s), and a
/// coroutine op is stepped inside its scheduler's `run`, which PyO3 counts as attached
/// anyway; that saves `in_slot`'s thread-local lookup, three per coroutine communication. An
/// event-loop op (`aio.rs`) keeps `in_slot`: its step drops futures and callbacks, which
/// `in_slot` releases at once where an assumed token would leave them to PyO3's pool when
/// the caller (an event loop) runs no PyO3 code. (Either way is correct: the pool releases
/// them at PyO3's next call.)
///
/// # Safety
/// `slf` must point to a live `_AsyncOp`, and the calling thread must be attached.
unsafe fn in_op<R>(slf: *mut ffi::PyObject, f: impl for<'py> FnOnce(Python<'py>) -> R) -> R {
    // SAFETY: per the contract; `op` is written before the object is shared.
    if let Some(Pending::Loop(_)) = unsafe { (*slf.cast::<OpObject>()).op.as_ref() } {
        return in_slot(f);
    }
    // SAFETY: attached (the contract).
    f(unsafe { Python::assume_attached() })
}

unsafe extern "C" fn op_am_send(
    slf: *mut ffi::PyObject,
    _arg: *mut ffi::PyObject,
    result: *mut *mut ffi::PyObject,
) -> ffi::PySendResult {
    // CPython calls every slot and method below from an attached thread (holding the GIL where
    // there is one), on a live `_AsyncOp`, also while the interpreter finalizes (`slot.rs`).
    let body = |py: Python<'_>| {
        // SAFETY: a live `_AsyncOp`, attached thread (see above).
        let (out, status) = match guarded(|| unsafe { step(py, slf) }) {
            Ok(Out::Yield(fut)) => (fut.into_ptr(), ffi::PySendResult::PYGEN_NEXT),
            Ok(Out::Return(v)) => (v.into_ptr(), ffi::PySendResult::PYGEN_RETURN),
            Err(e) => {
                e.restore(py);
                (ptr::null_mut(), ffi::PySendResult::PYGEN_ERROR)
            }
        };
        // SAFETY: `result` is the out-parameter CPython passes to am_send.
        unsafe { *result = out };
        status
    };
    // SAFETY: as said above.
    unsafe { in_op(slf, body) }
}

unsafe extern "C" fn op_iternext(slf: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: a live `_AsyncOp`, attached thread (see `op_am_send`).
    in_slot(|py| as_iternext(py, guarded(|| unsafe { step(py, slf) }), false))
}

unsafe extern "C" fn op_send(
    slf: *mut ffi::PyObject,
    _arg: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: a live `_AsyncOp`, attached thread (see `op_am_send`).
    in_slot(|py| as_iternext(py, guarded(|| unsafe { step(py, slf) }), true))
}

unsafe extern "C" fn op_self(slf: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: `slf` is live (the caller holds a reference); the new reference is the result.
    unsafe { ffi::Py_IncRef(slf) };
    slf
}

unsafe extern "C" fn op_close(
    slf: *mut ffi::PyObject,
    _unused: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let o = slf.cast::<OpObject>();
    in_slot(|py| {
        let r = guarded(|| {
            // SAFETY: a live `_AsyncOp`, attached thread (see `op_am_send`); `op` stays valid while
            // `slf` is held, and a taken value is an owned reference, released here.
            unsafe {
                if let Some(op) = (*o).op.as_ref() {
                    op.close(py)?;
                } else {
                    ffi::Py_XDECREF(take_value(o));
                }
            }
            Ok(Out::Return(py.None()))
        });
        match r {
            Ok(_) => py.None().into_ptr(),
            Err(e) => {
                e.restore(py);
                ptr::null_mut()
            }
        }
    })
}

unsafe extern "C" fn op_throw(
    slf: *mut ffi::PyObject,
    args: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    in_slot(|py| {
        // SAFETY: a live `_AsyncOp` and its borrowed argument tuple, attached thread (see
        // `op_am_send`).
        let (me, args) = unsafe {
            (
                Bound::<PyAny>::from_borrowed_ptr(py, slf),
                Bound::<PyAny>::from_borrowed_ptr(py, args),
            )
        };
        as_iternext(py, guarded(|| throw(py, &me, &args)), true)
    })
}

/// `throw(typ[, val[, tb]])`: see the module invariants and aio.rs's cancellation rule.
fn throw(py: Python<'_>, me: &Bound<'_, PyAny>, args: &Bound<'_, PyAny>) -> Step {
    let n = args.len()?;
    if !(1..=3).contains(&n) {
        return Err(PyTypeError::new_err(format!("throw expected 1 to 3 arguments, got {n}")));
    }
    let val = if n >= 2 { Some(args.get_item(1)?) } else { None };
    let exc = exception_from_throw_args(&args.get_item(0)?, val.as_ref())?;
    let o = me.as_ptr().cast::<OpObject>();
    // SAFETY: `me` is a live `_AsyncOp` (this is its method) and this thread is attached; `op` stays
    // valid while `me` is held; a taken value is an owned reference.
    unsafe {
        if let Some(op) = (*o).op.as_ref() {
            return op.throw(py, me, exc);
        }
        let value = take_value(o);
        if value.is_null() {
            return Err(exc);
        }
        let value = Bound::<PyAny>::from_owned_ptr(py, value).unbind();
        keep_result_on_cancel(py, me, &exc)?;
        Ok(Out::Return(value))
    }
}

unsafe extern "C" fn op_dealloc(slf: *mut ffi::PyObject) {
    // SAFETY: CPython deallocates an `_AsyncOp` whose reference count reached zero, from an
    // attached thread: nothing else can reach its fields. The pending state is a box this object
    // owns. The type is a heap type, so each instance owns a reference to it (taken by
    // PyType_GenericAlloc), released after the memory is freed by the type's tp_free.
    unsafe {
        let o = slf.cast::<OpObject>();
        let tp = ffi::Py_TYPE(slf);
        // Nobody else can reach a deallocated op: its result is taken with a plain load.
        let value = (*o).value.load(Ordering::Acquire);
        if !value.is_null() {
            warn_never_awaited();
            ffi::Py_DecRef(value);
        }
        let op = std::mem::replace(&mut (*o).op, ptr::null_mut());
        if !op.is_null() {
            // Dropping releases references (attached, so at once) and may run Python code; a
            // panic must not unwind into CPython, and there is nobody to report it to. The
            // token as for a step (`in_op`): a coroutine op releases its references as
            // `Bound`s.
            let release = |py: Python<'_>| {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    take_state(op).release(py)
                }));
            };
            if let Pending::Loop(_) = &*op {
                in_slot(release);
            } else {
                release(Python::assume_attached());
            }
        }
        // (Known once any op was allocated; read without `Python::attach`, which PyO3
        // refuses while the interpreter finalizes.)
        if gil_known() && FREE.load(Ordering::Relaxed).is_null() {
            // Kept for the next op (see FREE): its fields are dead, the memory is reused.
            FREE.store(slf, Ordering::Relaxed);
            ffi::Py_DecRef(tp.cast());
            return;
        }
        let free = ffi::PyType_GetSlot(tp, ffi::Py_tp_free);
        if !free.is_null() {
            let free = std::mem::transmute::<*mut c_void, ffi::freefunc>(free);
            free(slf.cast());
        }
        ffi::Py_DecRef(tp.cast());
    }
}

/// A done op dropped before anything awaited it: the communication took place at the call, so
/// a value it read is gone. Say so, as CPython does for a coroutine that was never awaited.
///
/// # Safety
/// The thread is attached (called from `op_dealloc`).
// PyErr_Fetch/Restore are deprecated from 3.12 (a version-specific build, such as the
// free-threaded one, sees that); the stable ABI from 3.11 that the wheel targets has only them.
#[allow(deprecated)]
unsafe fn warn_never_awaited() {
    // SAFETY: attached; the pending exception (dealloc may run while one is set) is
    // saved and restored around the warning, and a warning turned into an error by a filter
    // is reported as unraisable: a destructor has nobody to raise it to.
    unsafe {
        let (mut ty, mut val, mut tb) = (ptr::null_mut(), ptr::null_mut(), ptr::null_mut());
        ffi::PyErr_Fetch(&mut ty, &mut val, &mut tb);
        let msg = c"a ferrocsp channel operation (aread/awrite/aselect/__anext__) completed at \
the call but was never awaited: a value it read is lost; always await it";
        if ffi::PyErr_WarnEx(ffi::PyExc_RuntimeWarning, msg.as_ptr(), 1) < 0 {
            ffi::PyErr_WriteUnraisable(ptr::null_mut());
        }
        ffi::PyErr_Restore(ty, val, tb);
    }
}

fn create_type(py: Python<'_>) -> PyResult<Py<PyType>> {
    let methods: &'static mut [ffi::PyMethodDef] = Box::leak(Box::new([
        ffi::PyMethodDef {
            ml_name: c"send".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer { PyCFunction: op_send },
            ml_flags: ffi::METH_O,
            ml_doc: c"send($self, value, /)\n--\n\nResumes the operation (the value is ignored)."
                .as_ptr(),
        },
        ffi::PyMethodDef {
            ml_name: c"throw".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer { PyCFunction: op_throw },
            ml_flags: ffi::METH_VARARGS,
            ml_doc: c"throw($self, typ, val=None, tb=None, /)\n--\n\nThrows an exception in \
                (cancellation): a communication that already happened is kept."
                .as_ptr(),
        },
        ffi::PyMethodDef {
            ml_name: c"close".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer { PyCFunction: op_close },
            ml_flags: ffi::METH_NOARGS,
            ml_doc: c"close($self, /)\n--\n\nAbandons the operation.".as_ptr(),
        },
        ffi::PyMethodDef::zeroed(),
    ]));
    let slots: &'static mut [ffi::PyType_Slot] = Box::leak(Box::new([
        slot(ffi::Py_tp_dealloc, op_dealloc as *mut c_void),
        slot(ffi::Py_am_await, op_self as *mut c_void),
        slot(PY_AM_SEND, op_am_send as *mut c_void),
        slot(ffi::Py_tp_iter, op_self as *mut c_void),
        slot(ffi::Py_tp_iternext, op_iternext as *mut c_void),
        slot(ffi::Py_tp_methods, methods.as_mut_ptr().cast()),
        slot(
            ffi::Py_tp_doc,
            c"An awaitable channel operation or Alt (returned by ``aread``, ``awrite``, \
              ``__anext__`` and ``Alt.aselect``); await it once."
                .as_ptr() as *mut c_void,
        ),
        slot(0, ptr::null_mut()),
    ]));
    let spec: &'static mut ffi::PyType_Spec = Box::leak(Box::new(ffi::PyType_Spec {
        name: c"ferrocsp._native._AsyncOp".as_ptr(),
        basicsize: c_int::try_from(std::mem::size_of::<OpObject>())
            .map_err(|_| PyRuntimeError::new_err("_AsyncOp layout too large"))?,
        itemsize: 0,
        flags: (ffi::Py_TPFLAGS_DEFAULT | ffi::Py_TPFLAGS_DISALLOW_INSTANTIATION) as _,
        slots: slots.as_mut_ptr(),
    }));
    // SAFETY: the spec, its name, slots and method table are leaked, so they outlive the type
    // (CPython keeps pointers to the name and the method table); every slot function has the
    // signature CPython expects for that slot.
    let tp = unsafe { ffi::PyType_FromSpec(spec) };
    // SAFETY: PyType_FromSpec returns a new reference to a type, or null with an exception.
    let tp = unsafe { Bound::from_owned_ptr_or_err(py, tp) }?;
    Ok(tp.cast_into::<PyType>()?.unbind())
}

fn slot(slot: c_int, pfunc: *mut c_void) -> ffi::PyType_Slot {
    ffi::PyType_Slot { slot, pfunc }
}

/// `ch.aread()` / `__anext__()`: the read if it can complete now (a `_Done`), else an
/// [`AsyncOp`] that waits when awaited. Only a completed read happens at the call; a read
/// that must wait, or fails, does so when awaited, as before.
///
/// `owner` is the channel's flavors: a read still waiting when the channel moves to shared
/// memory continues there (`AsyncOp` follows the move).
pub(crate) fn read_op(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    owner: &Arc<Flavors>,
    chan: &ferrocsp::Channel<Value>,
    name: &Arc<str>,
    timeout: Option<f64>,
    next: bool,
) -> PyResult<Py<PyAny>> {
    // The pending op's first step tries again (under the lock, as it registers), so the try
    // here is skipped when the channel says it has nothing (`Channel::might_read`).
    if chan.might_read() {
        if let Ok(v) = chan.try_read() {
            crate::trace::event(py, "read", "", name); // trace hook
            return done(py, v);
        }
    }
    if in_coro_task() && !crate::trace::on() {
        let kind = if next { CoroKind::Next } else { CoroKind::Read };
        let op = CoroOp::new(kind, obj, None, timeout)?;
        return coro_pending(py, op);
    }
    let op = AsyncOp::read(chan, name, timeout, next, Arc::clone(owner));
    pending(py, op)
}

/// `ch.awrite(value)`: the write if it can complete now (a `_Done`), else an [`AsyncOp`].
/// `owner` as for [`read_op`]: a write still waiting when its channel moves continues there.
pub(crate) fn write_op(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    owner: &Arc<Flavors>,
    chan: &ferrocsp::Channel<Value>,
    name: &Arc<str>,
    value: Value,
    timeout: Option<f64>,
) -> PyResult<Py<PyAny>> {
    // As in `read_op`: no try when the channel says a write cannot complete.
    let value = if chan.might_write() {
        match chan.try_write(value) {
            Ok(()) => {
                crate::trace::event(py, "write", "", name); // trace hook
                return done(py, py.None());
            }
            Err(e) => e.value,
        }
    } else {
        value
    };
    if in_coro_task() && !crate::trace::on() {
        let op = CoroOp::new(CoroKind::Write, obj, Some(value), timeout)?;
        return coro_pending(py, op);
    }
    let op = AsyncOp::write(chan, name, value, timeout, Arc::clone(owner));
    pending(py, op)
}
