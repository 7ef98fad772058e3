//! `_native._CallEnd`: a channel end that is called to communicate (``end()`` reads from a
//! reader, ``end(value)`` writes to a writer), the base of the PyCSP compat layer's ends
//! (`ferrocsp.compat.pycsp._channel`).
//!
//! Why native, and why not a `#[pyclass]`: calling an end is the hot path of every PyCSP
//! program (two calls per communication). A `#[pyclass]` with `__call__` is called through
//! `tp_call` (an argument tuple, then PyO3's `*args, **kwargs` parsing): 35-40 ns more per
//! write-and-read than the engine ends' bound methods, a tenth of a greenlet communication.
//! This type, built with `PyType_FromSpec` as `_AsyncOp` is (aio_op.rs), implements the
//! vectorcall protocol (PEP 590): each instance carries its `vectorcall` entry, which goes
//! straight to the engine end's Rust `read`/`write` with no tuple and no parsing.
//!
//! CPython 3.12+ gives a class-statement subclass (the compat ends) the vectorcall of its
//! base. CPython 3.11 does not (only static types inherit the flag), so the compat layer
//! asks [`_vectorcall`] to set `Py_TPFLAGS_HAVE_VECTORCALL` on its two classes: on 3.11 only,
//! and only after checking, through the stable ABI (`PyType_GetFlags`, `PyType_GetSlot`),
//! that the type object's fields at 3.11's offsets are the ones it expects; otherwise the
//! class keeps `tp_call`, which behaves the same, slower.
//!
//! Invariants:
//! - Calling it does what calling the engine end's `read`/`write` with the same arguments
//!   does (same result, same exceptions and messages), by vectorcall and by `tp_call` alike:
//!   the usual shape (no argument to a reader, one positional to a writer) calls the same
//!   Rust method, any other shape calls the Python method.
//! - `end` holds its engine end (a strong reference) from `__new__` until the collector
//!   clears it or the object dies; a cleared end raises `RuntimeError` when called, never
//!   crashes. `vectorcall` is written once, before the object is shared.
//! - [`_vectorcall`] sets the flag only on a subclass of `_CallEnd` whose `tp_call` is
//!   `_CallEnd`'s (one that defines `__call__` keeps its own), so the two entries agree.
//! - No slot asks PyO3 to attach once the interpreter finalizes (PyO3 panics there, which
//!   aborts the process, and ends are still called and freed then, by other threads too):
//!   see `slot.rs`; `tp_clear` and `tp_dealloc` release the end with a plain decref.

use std::ffi::{c_int, c_ulong, c_void};
use std::mem::offset_of;
use std::ptr;

use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

use crate::ends::{Reader, Writer};
use crate::slot::in_slot;

/// `Py_TPFLAGS_HAVE_VECTORCALL` (1 << 11 since CPython 3.8; in the limited API from 3.12).
const HAVE_VECTORCALL: c_ulong = 1 << 11;
/// `PY_VECTORCALL_ARGUMENTS_OFFSET`: the flag bit of a vectorcall's argument count.
const ARGUMENTS_OFFSET: usize = 1 << (usize::BITS - 1);

enum End {
    Reader(Py<Reader>),
    Writer(Py<Writer>),
}

/// An instance's memory: the object header, then what CPython and we need.
#[repr(C)]
struct CallEndObject {
    ob_base: ffi::PyObject,
    /// The per-instance vectorcall entry (`__vectorcalloffset__` points here).
    vectorcall: Option<ffi::vectorcallfunc>,
    /// The engine end (None once cleared by the collector).
    end: Option<End>,
}

static CALL_END_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// The `_CallEnd` type, created on first use (once per interpreter).
pub(crate) fn call_end_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    CALL_END_TYPE.get_or_try_init(py, || create_type(py)).map(|t| t.bind(py))
}

/// Runs `f`, turning a Rust panic into a Python exception (never unwinding into CPython),
/// and an error into the pending exception and a null result.
fn guarded(py: Python<'_>, f: impl FnOnce() -> PyResult<Py<PyAny>>) -> *mut ffi::PyObject {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(pyo3::panic::PanicException::new_err("panic in a ferrocsp channel end call"))
    });
    match r {
        Ok(v) => v.into_ptr(),
        Err(e) => {
            e.restore(py);
            ptr::null_mut()
        }
    }
}

/// The end of a live `_CallEnd`, or the error of a cleared one.
///
/// # Safety
/// `slf` must point to a live `_CallEnd` (or subclass) instance.
unsafe fn end_of<'a>(slf: *mut ffi::PyObject) -> PyResult<&'a End> {
    // SAFETY: per the contract; `end` is written before the object is shared and only
    // `tp_clear` takes it, which the collector runs on unreachable objects only (never during
    // a call: the caller holds a reference); a finalizer that calls a cleared end gets the
    // error.
    unsafe { (*slf.cast::<CallEndObject>()).end.as_ref() }
        .ok_or_else(|| PyRuntimeError::new_err("this channel end was cleared"))
}

/// The usual call shapes: a reader with no argument, a writer with one positional.
fn fast(py: Python<'_>, end: &End, arg: Option<&Bound<'_, PyAny>>) -> Option<PyResult<Py<PyAny>>> {
    match (end, arg) {
        (End::Reader(r), None) => Some(r.get().call_read(py)),
        (End::Writer(w), Some(v)) => Some(w.get().call_write(py, v).map(|()| py.None())),
        _ => None,
    }
}

/// Any other shape: the engine end's Python method, with the same arguments.
fn slow(
    end: &End,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    let py = args.py();
    match end {
        End::Reader(r) => r.bind(py).call_method("read", args, kwargs).map(Bound::unbind),
        End::Writer(w) => w.bind(py).call_method("write", args, kwargs).map(Bound::unbind),
    }
}

unsafe extern "C" fn call_end_vectorcall(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // The usual shapes go to a function of their own, called last (a tail call, so this frame
    // is not among those a blocked greenlet saves at every switch); the rest out of line.
    // SAFETY: CPython calls this on a live `_CallEnd` from an attached thread; reading which
    // end it holds runs no Python code (a cleared end takes the general path, which raises).
    let nargs = nargsf & !ARGUMENTS_OFFSET;
    if kwnames.is_null() {
        match (unsafe { &(*slf.cast::<CallEndObject>()).end }, nargs) {
            // SAFETY: as above.
            (Some(End::Reader(_)), 0) => return unsafe { call_read(slf) },
            // SAFETY: as above; `args` holds one borrowed reference (the vectorcall protocol).
            (Some(End::Writer(_)), 1) => return unsafe { call_write(slf, *args) },
            _ => {}
        }
    }
    // SAFETY: the vectorcall protocol's arguments, as received.
    unsafe { vectorcall_general(slf, args, nargsf, kwnames) }
}

/// ``reader()`` by vectorcall.
///
/// # Safety
/// `slf` is a live `_CallEnd` holding a reader; the calling thread is attached.
#[inline(never)]
unsafe fn call_read(slf: *mut ffi::PyObject) -> *mut ffi::PyObject {
    in_slot(|py| {
        guarded(py, || match unsafe { end_of(slf) }? {
            End::Reader(r) => r.get().call_read(py),
            End::Writer(_) => Err(PyRuntimeError::new_err("_CallEnd: not a reader")),
        })
    })
}

/// ``writer(value)`` by vectorcall.
///
/// # Safety
/// `slf` is a live `_CallEnd` holding a writer, `arg` a borrowed reference; the calling
/// thread is attached.
#[inline(never)]
unsafe fn call_write(slf: *mut ffi::PyObject, arg: *mut ffi::PyObject) -> *mut ffi::PyObject {
    in_slot(|py| {
        guarded(py, || match unsafe { end_of(slf) }? {
            End::Writer(w) => {
                // SAFETY: a borrowed reference the caller holds for the whole call.
                let v = unsafe { Bound::from_borrowed_ptr(py, arg) };
                w.get().call_write(py, &v).map(|()| py.None())
            }
            End::Reader(_) => Err(PyRuntimeError::new_err("_CallEnd: not a writer")),
        })
    })
}

/// Any vectorcall but the usual shapes (and a cleared end): as `tp_call` would.
///
/// # Safety
/// The vectorcall protocol's arguments; the calling thread is attached.
#[cold]
#[inline(never)]
unsafe fn vectorcall_general(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    in_slot(|py| {
        guarded(py, || {
            // SAFETY: a live `_CallEnd` (see above).
            let end = unsafe { end_of(slf) }?;
            let nargs = nargsf & !ARGUMENTS_OFFSET;
            // SAFETY: kwnames is null or a tuple of str (the vectorcall protocol).
            let kw = if kwnames.is_null() {
                None
            } else {
                Some(unsafe {
                    Bound::from_borrowed_ptr(py, kwnames).cast_into_unchecked::<PyTuple>()
                })
            };
            let nkw = kw.as_ref().map_or(0, |k| k.len());
            if nkw == 0 && nargs <= 1 {
                // SAFETY: `args` holds `nargs` borrowed references (the vectorcall protocol).
                let arg = (nargs == 1).then(|| unsafe { Bound::from_borrowed_ptr(py, *args) });
                if let Some(r) = fast(py, end, arg.as_ref()) {
                    return r;
                }
            }
            // SAFETY: the vectorcall protocol's arguments, as received.
            unsafe { vectorcall_slow(end, args, nargs, kw.as_ref()) }
        })
    })
}

/// A vectorcall of another shape (keywords, a wrong count): the engine end's Python method.
/// Out of line, so that the usual call's frame (saved at every switch of a greenlet that
/// blocks in it) holds none of this.
///
/// # Safety
/// `args` holds `nargs` positional then `kw.len()` keyword values (borrowed references), the
/// vectorcall protocol's layout, and the calling thread is attached.
#[cold]
#[inline(never)]
unsafe fn vectorcall_slow(
    end: &End,
    args: *const *mut ffi::PyObject,
    nargs: usize,
    kw: Option<&Bound<'_, PyTuple>>,
) -> PyResult<Py<PyAny>> {
    // SAFETY: attached (the contract).
    let py = unsafe { Python::assume_attached() };
    let nkw = kw.map_or(0, |k| k.len());
    let all: Vec<Bound<'_, PyAny>> = (0..nargs + nkw)
        // SAFETY: `args` holds `nargs + nkw` borrowed references (the contract).
        .map(|i| unsafe { Bound::from_borrowed_ptr(py, *args.add(i)) })
        .collect();
    let positional = PyTuple::new(py, &all[..nargs])?;
    let kwargs = match kw {
        Some(names) if nkw > 0 => {
            let d = PyDict::new(py);
            for (name, value) in names.iter().zip(&all[nargs..]) {
                d.set_item(name, value)?;
            }
            Some(d)
        }
        _ => None,
    };
    slow(end, &positional, kwargs.as_ref())
}

unsafe extern "C" fn call_end_call(
    slf: *mut ffi::PyObject,
    args: *mut ffi::PyObject,
    kwargs: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: as `call_end_vectorcall`; `args` is a tuple, `kwargs` null or a dict (tp_call).
    in_slot(|py| {
        guarded(py, || {
            let end = unsafe { end_of(slf) }?;
            let args =
                unsafe { Bound::from_borrowed_ptr(py, args).cast_into_unchecked::<PyTuple>() };
            let kwargs = (!kwargs.is_null()).then(|| unsafe {
                Bound::from_borrowed_ptr(py, kwargs).cast_into_unchecked::<PyDict>()
            });
            if kwargs.as_ref().is_none_or(|k| k.is_empty()) && args.len() <= 1 {
                let arg = if args.len() == 1 { Some(args.get_item(0)?) } else { None };
                if let Some(r) = fast(py, end, arg.as_ref()) {
                    return r;
                }
            }
            slow(end, &args, kwargs.as_ref())
        })
    })
}

/// `__new__`'s one argument, ``end`` (positional or keyword), with PyO3's messages for the
/// wrong shapes (what the `#[pyclass]` this type replaced raised).
fn new_argument<'py>(
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    const F: &str = "_CallEnd.__new__()";
    if args.len() > 1 {
        return Err(PyTypeError::new_err(format!(
            "{F} takes 1 positional arguments but {} were given",
            args.len()
        )));
    }
    let mut end = if args.is_empty() { None } else { Some(args.get_item(0)?) };
    for (k, v) in kwargs.into_iter().flatten() {
        let name = k.extract::<String>().unwrap_or_default();
        if name != "end" {
            return Err(PyTypeError::new_err(format!(
                "{F} got an unexpected keyword argument '{name}'"
            )));
        }
        if end.is_some() {
            return Err(PyTypeError::new_err(format!(
                "{F} got multiple values for argument 'end'"
            )));
        }
        end = Some(v);
    }
    end.ok_or_else(|| {
        PyTypeError::new_err(format!("{F} missing 1 required positional argument: 'end'"))
    })
}

unsafe extern "C" fn call_end_new(
    subtype: *mut ffi::PyTypeObject,
    args: *mut ffi::PyObject,
    kwargs: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    in_slot(|py| {
        guarded(py, || {
            // SAFETY: tp_new gets a tuple and a dict or null, borrowed.
            let args =
                unsafe { Bound::from_borrowed_ptr(py, args).cast_into_unchecked::<PyTuple>() };
            let kwargs = (!kwargs.is_null()).then(|| unsafe {
                Bound::from_borrowed_ptr(py, kwargs).cast_into_unchecked::<PyDict>()
            });
            let end = new_argument(&args, kwargs.as_ref())?;
            let end = if let Ok(r) = end.cast::<Reader>() {
                End::Reader(r.clone().unbind())
            } else if let Ok(w) = end.cast::<Writer>() {
                End::Writer(w.clone().unbind())
            } else {
                return Err(PyTypeError::new_err(format!(
                    "_CallEnd needs a ferrocsp Reader or Writer, got {}",
                    end.get_type().name()?
                )));
            };
            // SAFETY: `subtype` is `_CallEnd` or a subclass (CPython's tp_new contract); its
            // tp_alloc returns a zeroed instance of its basicsize (at least ours) or null.
            let obj = unsafe {
                let alloc = ffi::PyType_GetSlot(subtype, ffi::Py_tp_alloc);
                if alloc.is_null() {
                    return Err(PyRuntimeError::new_err("_CallEnd subtype has no tp_alloc"));
                }
                let alloc = std::mem::transmute::<*mut c_void, ffi::allocfunc>(alloc);
                Bound::from_owned_ptr_or_err(py, alloc(subtype, 0))?
            };
            // SAFETY: a fresh, zeroed instance not yet shared: write its fields in place.
            unsafe {
                let o = obj.as_ptr().cast::<CallEndObject>();
                ptr::addr_of_mut!((*o).vectorcall).write(Some(call_end_vectorcall));
                ptr::addr_of_mut!((*o).end).write(Some(end));
            }
            Ok(obj.unbind())
        })
    })
}

unsafe extern "C" fn call_end_traverse(
    slf: *mut ffi::PyObject,
    visit: ffi::visitproc,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: the collector traverses a live instance; no Python code, no attach here.
    let end = unsafe { (*slf.cast::<CallEndObject>()).end.as_ref() };
    let p = match end {
        Some(End::Reader(r)) => r.as_ptr(),
        Some(End::Writer(w)) => w.as_ptr(),
        None => return 0,
    };
    // SAFETY: `p` is a live object we hold a reference to.
    unsafe { visit(p, arg) }
}

unsafe extern "C" fn call_end_clear(slf: *mut ffi::PyObject) -> c_int {
    // SAFETY: a live instance, from an attached thread (also while the interpreter
    // finalizes, when PyO3 will not attach: hence the plain decref). The end is taken out
    // before its reference is released (which may run Python code that reaches this object).
    unsafe {
        let end = match (*slf.cast::<CallEndObject>()).end.take() {
            Some(End::Reader(r)) => r.into_ptr(),
            Some(End::Writer(w)) => w.into_ptr(),
            None => return 0,
        };
        ffi::Py_DecRef(end);
    }
    0
}

unsafe extern "C" fn call_end_dealloc(slf: *mut ffi::PyObject) {
    // SAFETY: CPython deallocates an instance whose reference count reached zero, from an
    // attached thread. The type is a heap type, so each instance owns a reference to it
    // (taken by its tp_alloc), released after the memory is freed by the type's tp_free.
    unsafe {
        let tp = ffi::Py_TYPE(slf);
        ffi::PyObject_GC_UnTrack(slf.cast());
        call_end_clear(slf);
        let free = ffi::PyType_GetSlot(tp, ffi::Py_tp_free);
        if !free.is_null() {
            let free = std::mem::transmute::<*mut c_void, ffi::freefunc>(free);
            free(slf.cast());
        }
        ffi::Py_DecRef(tp.cast());
    }
}

fn create_type(py: Python<'_>) -> PyResult<Py<PyType>> {
    let offset = ffi::Py_ssize_t::try_from(offset_of!(CallEndObject, vectorcall))
        .map_err(|_| PyRuntimeError::new_err("_CallEnd layout too large"))?;
    let members: &'static mut [ffi::PyMemberDef] = Box::leak(Box::new([
        ffi::PyMemberDef {
            name: c"__vectorcalloffset__".as_ptr(),
            type_code: ffi::Py_T_PYSSIZET,
            offset,
            flags: ffi::Py_READONLY,
            doc: ptr::null(),
        },
        ffi::PyMemberDef::default(),
    ]));
    let slots: &'static mut [ffi::PyType_Slot] = Box::leak(Box::new([
        slot(ffi::Py_tp_new, call_end_new as *mut c_void),
        slot(ffi::Py_tp_call, call_end_call as *mut c_void),
        slot(ffi::Py_tp_dealloc, call_end_dealloc as *mut c_void),
        slot(ffi::Py_tp_traverse, call_end_traverse as *mut c_void),
        slot(ffi::Py_tp_clear, call_end_clear as *mut c_void),
        slot(ffi::Py_tp_members, members.as_mut_ptr().cast()),
        slot(
            ffi::Py_tp_doc,
            c"_CallEnd(end)\n--\n\nA channel end called to communicate: ``end()`` reads (a \
              reader), ``end(value)`` writes (a writer), as the engine end's ``read``/``write`` \
              with the same arguments."
                .as_ptr() as *mut c_void,
        ),
        slot(0, ptr::null_mut()),
    ]));
    let flags = ffi::Py_TPFLAGS_DEFAULT
        | ffi::Py_TPFLAGS_BASETYPE
        | ffi::Py_TPFLAGS_HAVE_GC
        | ffi::Py_TPFLAGS_IMMUTABLETYPE
        | HAVE_VECTORCALL;
    let spec: &'static mut ffi::PyType_Spec = Box::leak(Box::new(ffi::PyType_Spec {
        name: c"ferrocsp._native._CallEnd".as_ptr(),
        basicsize: c_int::try_from(std::mem::size_of::<CallEndObject>())
            .map_err(|_| PyRuntimeError::new_err("_CallEnd layout too large"))?,
        itemsize: 0,
        flags: flags as _,
        slots: slots.as_mut_ptr(),
    }));
    // SAFETY: the spec, its name, slots and member table are leaked, so they outlive the type
    // (CPython keeps pointers to the name and the members); every slot function has the
    // signature CPython expects for that slot.
    let tp = unsafe { ffi::PyType_FromSpec(spec) };
    // SAFETY: PyType_FromSpec returns a new reference to a type, or null with an exception.
    let tp = unsafe { Bound::from_owned_ptr_or_err(py, tp) }?;
    Ok(tp.cast_into::<PyType>()?.unbind())
}

fn slot(slot: c_int, pfunc: *mut c_void) -> ffi::PyType_Slot {
    ffi::PyType_Slot { slot, pfunc }
}

/// CPython 3.11's `PyTypeObject` (64-bit, release build): byte offsets of the fields
/// [`_vectorcall`] reads or writes. The layout of these leading fields has not changed
/// since 3.8; each is cross-checked against the stable ABI before the one write.
const TP_VECTORCALL_OFFSET_AT: usize = 56;
const TP_CALL_AT: usize = 128;
const TP_FLAGS_AT: usize = 168;

/// Makes calls of ``cls``'s instances (a subclass of ``_CallEnd``) use ``_CallEnd``'s
/// vectorcall entry, as CPython 3.12+ does by itself; returns whether they do.
///
/// On CPython 3.11 a class statement's subclass does not inherit the vectorcall flag, so it
/// is set here, only if ``cls`` does not override ``__call__`` and its type object's fields
/// at 3.11's offsets hold what the stable ABI reports (flags, ``tp_call``) and the inherited
/// vectorcall offset: otherwise nothing is written and calls keep going through ``tp_call``.
/// Never assign ``__call__`` on such a class afterwards (3.11 would not clear the flag).
#[pyfunction]
pub(crate) fn _vectorcall(cls: &Bound<'_, PyType>) -> PyResult<bool> {
    let py = cls.py();
    let base = call_end_type(py)?;
    if !cls.is_subclass(base)? {
        return Err(PyTypeError::new_err(format!(
            "_vectorcall needs a subclass of _CallEnd, got {}",
            cls.name()?
        )));
    }
    let tp = cls.as_type_ptr();
    // SAFETY: `tp` is a live type object; PyType_GetFlags reads its flags.
    let flags = unsafe { ffi::PyType_GetFlags(tp) };
    if flags & HAVE_VECTORCALL != 0 {
        return Ok(true);
    }
    let heap = flags & ffi::Py_TPFLAGS_HEAPTYPE != 0;
    // SAFETY: reading a global the interpreter exports (3.11+).
    let version = unsafe { ffi::Py_Version };
    if !heap || version >= 0x030C_0000 || usize::BITS != 64 {
        return Ok(false); // 3.12+ inherits the flag: a type without it overrides `tp_call`
    }
    // SAFETY: a heap type: PyType_GetSlot reads its tp_call.
    let call = unsafe { ffi::PyType_GetSlot(tp, ffi::Py_tp_call) };
    if call != call_end_call as *mut c_void {
        return Ok(false); // it defines its own __call__
    }
    let expected_offset = offset_of!(CallEndObject, vectorcall);
    let at = tp.cast::<u8>();
    // SAFETY: a type object is far larger than TP_FLAGS_AT + 8 bytes whatever the layout;
    // these reads only compare, and the write happens only if all three fields are where
    // 3.11's layout puts them (any other layout makes these checks fail).
    unsafe {
        let same = at.add(TP_FLAGS_AT).cast::<c_ulong>().read_unaligned() == flags
            && at.add(TP_CALL_AT).cast::<*mut c_void>().read_unaligned() == call
            && at.add(TP_VECTORCALL_OFFSET_AT).cast::<isize>().read_unaligned()
                == expected_offset as isize;
        if !same {
            return Ok(false);
        }
        at.add(TP_FLAGS_AT).cast::<c_ulong>().write_unaligned(flags | HAVE_VECTORCALL);
    }
    // SAFETY: as above.
    Ok(unsafe { ffi::PyType_GetFlags(tp) } & HAVE_VECTORCALL != 0)
}
