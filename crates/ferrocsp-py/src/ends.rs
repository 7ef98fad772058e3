//! `ferrocsp.Reader` and `ferrocsp.Writer`: counted channel ends.
//!
//! Invariants:
//! - An end object is one engine end; Python copies made by pickling in this interpreter
//!   resolve to the same object (`ferrocsp._mobility`), so every copy is the same end.
//! - `end.channel` is the very `Channel` object the end was made from.
//! - Dropping the last reference retires the end (the engine's `Drop`), as does `retire()`
//!   or leaving a `with` block; on a channel shared with OS processes, only an end that never
//!   crossed processes (`ShmSide::end_dropped`).
//! - Making, retiring and dropping an end hold the channel's `MoveLock`, so a concurrent move
//!   to shared memory counts the end exactly once (`shm_side.rs`).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::pyclass::{PyTraverseError, PyVisit};

use crate::aio_op;
use ferrocsp::shm::EndKind;
use ferrocsp::SelectError;

use crate::channel::{
    end_of_stream, mobility_reduce, moved, next_value, read_value, try_read_value, try_write_value,
    write_value, Channel,
};
use crate::deadlock::Desc;
use crate::errors::{parse_timeout, retired_end, to_pyerr, OpName};
use crate::net_side::NetSide;
use crate::pythread::Value;
use crate::shm_side::ShmSide;

/// A counted reading end of a channel.
///
/// Iterating a reader yields values until end-of-stream (every writer end retired and the
/// buffer drained); poison raises ``ChannelPoisoned``. Using a retired end raises
/// ``ChannelRetired``. ``with ch.reader() as r:`` retires ``r`` on exit.
#[pyclass(frozen, module = "ferrocsp", name = "Reader", weakref)]
#[derive(Debug)]
pub struct Reader {
    inner: ferrocsp::Reader<Value>,
    chan: Py<Channel>,
}

/// A counted writing end of a channel.
///
/// When every writer end made from a channel has retired, readers see end-of-stream once the
/// buffer is drained. Using a retired end raises ``ChannelRetired``. ``with ch.writer() as w:``
/// retires ``w`` on exit.
#[pyclass(frozen, module = "ferrocsp", name = "Writer", weakref)]
#[derive(Debug)]
pub struct Writer {
    inner: ferrocsp::Writer<Value>,
    chan: Py<Channel>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        let inner = &self.inner;
        dropped(self.chan.get(), inner.id(), inner.is_retired(), EndKind::Reader, || {
            inner.retire()
        });
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let inner = &self.inner;
        dropped(self.chan.get(), inner.id(), inner.is_retired(), EndKind::Writer, || {
            inner.retire()
        });
    }
}

/// An end object's `Drop`: it retires, as `retire()` would, under the channel's `MoveLock`
/// (the engine end's own `Drop` would retire it later, outside the lock). On a channel that
/// moved to shared memory, an end that crossed processes stays live there: other copies of it
/// may be in use elsewhere. Nothing is done on the shared side while the interpreter shuts
/// down.
fn dropped(chan: &Channel, id: u64, retired: bool, kind: EndKind, retire: impl FnOnce()) {
    if retired {
        return;
    }
    Python::attach(|py| {
        if let Some(n) = chan.flavors.net.get() {
            // Uncounted on the server in the background: a finalizer must not wait.
            if let Err(e) = n.end_retired(py, id, kind == EndKind::Reader, true) {
                e.write_unraisable(py, None);
            }
            retire();
            return;
        }
        let _held = chan.flavors.move_lock.hold(py);
        if let Some(s) = chan.flavors.shm.get() {
            let finalizing = py
                .import("sys")
                .and_then(|m| m.call_method0("is_finalizing"))
                .and_then(|f| f.is_truthy())
                .unwrap_or(true);
            if !finalizing {
                if let Err(e) = s.get().end_dropped(py, id, kind) {
                    e.write_unraisable(py, None);
                }
            }
        }
        retire();
    });
}

impl Reader {
    /// What calling a compat end does (`_CallEnd`, ``end()``): ``read()`` with no timeout. A
    /// plain in-process channel read by a process greenlet goes straight to its scheduler
    /// (`sched::plain_read`), past the checks that cannot apply there (timeout, shared memory,
    /// network, trace); any other case is `read`'s.
    #[inline(always)] // into `_CallEnd`'s frame: one frame less saved at each switch
    pub(crate) fn call_read(&self, py: Python<'_>) -> PyResult<Value> {
        let chan = self.chan.get();
        if !self.plain() {
            return self.read(py, None);
        }
        match crate::sched::plain_read(py, &chan.inner, None, Desc::read(&chan.name)) {
            Some(Ok(Ok(s))) => match s.value {
                Some(v) => Ok(v),
                None => self.read_failed(py, SelectError::WouldBlock),
            },
            Some(Ok(Err(e))) => self.read_failed(py, e),
            Some(Err(e)) => Err(e),
            None => self.read(py, None),
        }
    }

    /// A failed `call_read`: `read`'s error, or `read` where the channel moved to shared memory
    /// meanwhile (nothing was read here).
    #[cold]
    #[inline(never)]
    fn read_failed(&self, py: Python<'_>, e: SelectError) -> PyResult<Value> {
        let c = self.chan.get();
        let r = Err(to_pyerr(py, e.error(), OpName::Read, &c.name));
        match moved(py, c, r) {
            Err(s) => s.end_read(py, self.key(), None, false),
            Ok(r) => r,
        }
    }
}

impl Writer {
    /// What calling a compat end does (`_CallEnd`, ``end(value)``): ``write(value)`` with no
    /// timeout, as `Reader::call_read` does a read; a loan goes through `write`.
    #[inline(always)] // as `call_read`
    pub(crate) fn call_write(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let chan = self.chan.get();
        if !self.plain() || value.is_exact_instance_of::<crate::loan::Loan>() {
            return self.write(py, value.clone().unbind(), None);
        }
        match crate::sched::plain_write(
            py,
            &chan.inner,
            value.clone().unbind(),
            None,
            Desc::write(&chan.name),
        ) {
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err(e))) => self.write_failed(py, e, value),
            Ok(Err(e)) => Err(e),
            Err(v) => self.write(py, v, None),
        }
    }

    /// A failed `call_write`: `write`'s error, or its write where the channel moved to shared
    /// memory meanwhile (nothing was sent: `value` goes there).
    #[cold]
    #[inline(never)]
    fn write_failed(
        &self,
        py: Python<'_>,
        e: SelectError,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let c = self.chan.get();
        let r: PyResult<()> = Err(to_pyerr(py, e.error(), OpName::Write, &c.name));
        match moved(py, c, r) {
            Err(s) => s.end_write(py, self.key(), value, None, false),
            Ok(r) => r,
        }
    }
}

/// The half of `Reader` and `Writer` that is the same for both: construction, the
/// retired-end check, retire/poison, identity (equality, hash, pickling), context manager.
/// `$retire_doc` documents what retiring the last end of this kind does.
macro_rules! end_class {
    ($ty:ident, $kind:literal, $end_kind:expr, $make:ident, $retire_doc:literal, { $($methods:tt)* }) => {
        impl $ty {
            /// The engine end's identity (what the shared side keys this end by).
            pub(crate) fn end_id(&self) -> u64 {
                self.inner.id()
            }

            pub(crate) fn parts(&self) -> (&Channel, bool) {
                (self.chan.get(), self.inner.is_retired())
            }

            pub(crate) fn make(chan: &Bound<'_, Channel>) -> Self {
                $ty { inner: chan.get().inner.$make(), chan: chan.clone().unbind() }
            }

            /// Traces `ev` ("retire") on this end, once: a retired end reports nothing.
            fn traced(&self, py: Python<'_>, ev: &'static str) {
                if crate::trace::on() && !self.inner.is_retired() {
                    crate::trace::event(py, ev, $kind, &self.chan.get().name);
                }
            }

            /// The channel of this end (a field written once, at `make`).
            pub(crate) fn chan(&self) -> &Channel {
                self.chan.get()
            }

            /// The shared side of the channel, if it moved to shared memory.
            fn shm(&self) -> Option<&ShmSide> {
                self.chan.get().flavors.shm.get().map(|s| s.get())
            }

            /// Whether an operation on this end may take the greenlet fast path of a compat
            /// end's call: a live end of a channel in this process only, not traced.
            fn plain(&self) -> bool {
                let f = &self.chan.get().flavors;
                f.shm.get().is_none()
                    && f.net.get().is_none()
                    && !self.inner.is_retired()
                    && !crate::trace::on()
            }

            /// The networked side of the channel, if it is a networked channel.
            fn net(&self) -> Option<&NetSide> {
                self.chan.get().flavors.net.get()
            }

            /// This end, as the shared side keys it: (engine id, retired in this process).
            fn key(&self) -> Option<(u64, bool)> {
                Some((self.inner.id(), self.inner.is_retired()))
            }

            fn checked<'a>(&'a self, py: Python<'_>) -> PyResult<&'a Channel> {
                let chan = self.chan.get();
                if self.inner.is_retired() {
                    return Err(retired_end(py, $kind, &chan.name));
                }
                Ok(chan)
            }
        }

        #[pymethods]
        impl $ty {
            $($methods)*

            /// `Reader[int]`/`Writer[int]` in annotations: a `types.GenericAlias`.
            #[classmethod]
            fn __class_getitem__<'py>(
                cls: &Bound<'py, pyo3::types::PyType>,
                item: &Bound<'py, PyAny>,
            ) -> PyResult<Bound<'py, PyAny>> {
                crate::channel::generic_alias(cls, item)
            }

            #[doc = $retire_doc]
            fn retire(&self, py: Python<'_>) -> PyResult<()> {
                self.traced(py, "retire");
                let chan = self.chan.get();
                if let Some(n) = self.net() {
                    if !self.inner.is_retired() {
                        n.end_retired(py, self.inner.id(), $end_kind == EndKind::Reader, false)?;
                    }
                    self.inner.retire();
                    return Ok(());
                }
                let _held = chan.flavors.move_lock.hold(py);
                if let Some(s) = self.shm() {
                    s.end_retire(py, self.inner.id(), $end_kind, self.inner.is_retired())?;
                }
                self.inner.retire();
                Ok(())
            }

            /// Poisons the channel (allowed on a retired end too).
            fn poison(&self, py: Python<'_>) -> PyResult<()> {
                crate::trace::event(py, "poison", "", &self.chan.get().name);
                self.inner.poison();
                if let Some(s) = self.shm() {
                    s.poison(py)?;
                }
                if let Some(n) = self.net() {
                    n.poison(py)?;
                }
                Ok(())
            }

            /// Whether this end has retired.
            #[getter]
            fn retired(&self, py: Python<'_>) -> PyResult<bool> {
                if let Some(s) = self.shm() {
                    return s.end_retired(py, self.inner.id(), $end_kind, self.inner.is_retired());
                }
                Ok(self.inner.is_retired())
            }

            /// The end's identity within this interpreter (keys its shared-memory slot).
            #[getter]
            fn _end_id(&self) -> u64 {
                self.inner.id()
            }

            /// The channel this end belongs to.
            #[getter]
            fn channel(&self, py: Python<'_>) -> Py<Channel> {
                self.chan.clone_ref(py)
            }

            fn __enter__(slf: Py<Self>) -> Py<Self> {
                slf
            }

            #[pyo3(signature = (*_exc))]
            fn __exit__(
                &self,
                py: Python<'_>,
                _exc: &Bound<'_, pyo3::types::PyTuple>,
            ) -> PyResult<()> {
                self.retire(py) // None: never swallows the block's exception
            }

            fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
                match other.cast::<$ty>() {
                    Ok(o) => o.get().inner == self.inner,
                    Err(_) => false,
                }
            }

            fn __hash__(&self) -> u64 {
                self.inner.id()
            }

            fn __repr__(&self) -> String {
                let state = if self.inner.is_retired() { " retired" } else { "" };
                format!("<{} of '{}'{}>", stringify!($ty), self.chan.get().name, state)
            }

            fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
                if slf.get().net().is_some() {
                    return mobility_reduce(slf.py(), "reduce_net", slf.as_any());
                }
                mobility_reduce(slf.py(), "reduce_end", slf.as_any())
            }

            fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
                visit.call(&self.chan)
            }
        }
    };
}

end_class!(
    Reader,
    "reader",
    EndKind::Reader,
    reader,
    "Retires this end (idempotent). After the last reader end, writes fail (retired).",
    {
        /// Reads a value (see ``Channel.read``).
        #[pyo3(signature = (*, timeout = None))]
        pub(crate) fn read(
            &self,
            py: Python<'_>,
            timeout: Option<&Bound<'_, PyAny>>,
        ) -> PyResult<Value> {
            let t = parse_timeout(timeout)?;
            if let Some(s) = self.shm() {
                return s.end_read(py, self.key(), t, false);
            }
            let c = self.checked(py)?;
            if let Some(n) = self.net() {
                return n.read(py, &c.name, t, false);
            }
            let r = read_value(py, &c.inner, &c.name, t);
            match moved(py, c, r) {
                Err(s) => s.end_read(py, self.key(), t, false),
                Ok(r) => r,
            }
        }

        /// Reads between 1 and ``max_n`` values (see ``Channel.read_many``).
        #[pyo3(signature = (max_n, *, timeout = None))]
        fn read_many<'py>(
            slf: &Bound<'py, Self>,
            max_n: &Bound<'py, PyAny>,
            timeout: Option<&Bound<'py, PyAny>>,
        ) -> PyResult<Bound<'py, pyo3::types::PyList>> {
            let (py, this) = (slf.py(), slf.get());
            let net = match this.net() {
                Some(n) => Some((n, this.checked(py)?)),
                None => None,
            };
            let name = &this.chan.get().name;
            crate::batch::read_many(py, slf.as_any(), net.map(|n| n.0), name, max_n, timeout)
        }

        /// ``await reader.aread()``: the asyncio twin of ``read`` (see ``Channel.aread``).
        #[pyo3(signature = (*, timeout = None))]
        fn aread(slf: &Bound<'_, Self>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
            Self::aread_parsed(slf, parse_timeout(timeout)?)
        }

        /// Reads a value if one is available now, else raises ``WouldBlock``.
        fn read_nowait(&self, py: Python<'_>) -> PyResult<Value> {
            if let Some(s) = self.shm() {
                return s.end_read(py, self.key(), None, true);
            }
            let c = self.checked(py)?;
            if let Some(n) = self.net() {
                return n.read(py, &c.name, None, true);
            }
            try_read_value(py, &c.inner, &c.name)
        }

        fn __iter__(slf: Py<Self>) -> Py<Self> {
            slf
        }

        fn __next__(&self, py: Python<'_>) -> PyResult<Option<Value>> {
            if let Some(s) = self.shm() {
                return s.next(py, self.key());
            }
            if let Some(n) = self.net() {
                let r = self.checked(py).and_then(|c| n.read(py, &c.name, None, false));
                return end_of_stream(py, r);
            }
            let c = self.checked(py)?;
            let r = next_value(py, &c.inner, &c.name);
            match moved(py, c, r) {
                Err(s) => s.next(py, self.key()),
                Ok(r) => r,
            }
        }

        fn __aiter__(slf: Py<Self>) -> Py<Self> {
            slf
        }

        fn __anext__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
            let (py, this) = (slf.py(), slf.get());
            if this.chan.get().flavors.is_remote() && crate::coro_op::in_coro_task() {
                return crate::coro_op::offload(py, "_offload_next", (slf,));
            }
            if let Some(s) = this.chan.get().flavors.shm.get() {
                let (id, retired) = (Some(this.inner.id()), this.inner.is_retired());
                return crate::shm_aio::aread(py, s, id, EndKind::Reader, retired, None, true);
            }
            let c = this.checked(py)?;
            if this.net().is_some() {
                return crate::net_side::net_aio(py, "aread", (&this.chan, py.None(), true));
            }
            aio_op::read_op(py, slf.as_any(), &c.flavors, &c.inner, &c.name, None, true)
        }
    }
);

end_class!(
    Writer,
    "writer",
    EndKind::Writer,
    writer,
    "Retires this end (idempotent). After the last writer end, readers see end-of-stream.",
    {
        /// Writes ``value`` (see ``Channel.write``).
        #[pyo3(signature = (value, *, timeout = None))]
        pub(crate) fn write(
            &self,
            py: Python<'_>,
            value: Value,
            timeout: Option<&Bound<'_, PyAny>>,
        ) -> PyResult<()> {
            let t = parse_timeout(timeout)?;
            crate::loan::lending(py, value, |value| {
                if let Some(s) = self.shm() {
                    return s.end_write(py, self.key(), value.bind(py), t, false);
                }
                let c = self.checked(py)?;
                if let Some(n) = self.net() {
                    return n.write(py, &c.name, value.bind(py), t, false);
                }
                let keep = value.clone_ref(py);
                let r = write_value(py, &c.inner, &c.name, value, t);
                match moved(py, c, r) {
                    Err(s) => s.end_write(py, self.key(), keep.bind(py), t, false),
                    Ok(r) => r,
                }
            })
        }

        /// Writes every value of ``values`` in order (see ``Channel.write_many``).
        #[pyo3(signature = (values, *, timeout = None))]
        fn write_many(
            slf: &Bound<'_, Self>,
            values: &Bound<'_, PyAny>,
            timeout: Option<&Bound<'_, PyAny>>,
        ) -> PyResult<()> {
            let (py, this) = (slf.py(), slf.get());
            let net = match this.net() {
                Some(n) => {
                    Some((n, this.checked(py).map_err(|e| crate::batch::with_written(py, e, 0))?))
                }
                None => None,
            };
            let name = &this.chan.get().name;
            crate::batch::write_many(py, slf.as_any(), net.map(|n| n.0), name, values, timeout)
        }

        /// ``await writer.awrite(value)``: the asyncio twin of ``write`` (see ``Channel.awrite``).
        #[pyo3(signature = (value, *, timeout = None))]
        fn awrite(
            slf: &Bound<'_, Self>,
            value: Value,
            timeout: Option<&Bound<'_, PyAny>>,
        ) -> PyResult<Py<PyAny>> {
            Self::awrite_parsed(slf, value, parse_timeout(timeout)?)
        }

        /// A writable buffer of ``nbytes`` bytes to fill and then ``write`` (see
        /// ``Channel.loan``). Never blocks.
        fn loan(&self, py: Python<'_>, nbytes: &Bound<'_, PyAny>) -> PyResult<crate::loan::Loan> {
            self.checked(py)?;
            crate::loan::Loan::make(nbytes)
        }

        /// Writes ``value`` if possible now, else raises ``WouldBlock`` (nothing sent).
        fn write_nowait(&self, py: Python<'_>, value: Value) -> PyResult<()> {
            crate::loan::lending(py, value, |value| {
                if let Some(s) = self.shm() {
                    return s.end_write(py, self.key(), value.bind(py), None, true);
                }
                let c = self.checked(py)?;
                if let Some(n) = self.net() {
                    return n.write(py, &c.name, value.bind(py), None, true);
                }
                try_write_value(py, &c.inner, &c.name, value)
            })
        }
    }
);

/// The ends a `Channel` makes (its `#[pymethods]` that name `Reader`/`Writer` live here, so
/// that the channel's own module does not depend on its ends).
#[pymethods]
impl Channel {
    /// A new counted reader end of this channel.
    fn reader(slf: &Bound<'_, Self>) -> PyResult<Py<Reader>> {
        let end = new_end(slf, Reader::make, Reader::end_id, EndKind::Reader)?;
        Py::new(slf.py(), end)
    }

    /// A new counted writer end of this channel.
    fn writer(slf: &Bound<'_, Self>) -> PyResult<Py<Writer>> {
        let end = new_end(slf, Writer::make, Writer::end_id, EndKind::Writer)?;
        Py::new(slf.py(), end)
    }

    /// A new end object bound to slot ``slot`` of this shared channel's end table
    /// (unpickling an end that crossed processes: it stays live when this copy is dropped).
    fn _adopt_end(slf: &Bound<'_, Self>, kind: &str, slot: u32) -> PyResult<Py<PyAny>> {
        let (py, this) = (slf.py(), slf.get());
        let side = this.flavors.shm.get().ok_or_else(|| {
            PyValueError::new_err(format!("channel '{}' is not shared", this.name))
        })?;
        let _held = this.flavors.move_lock.hold(py);
        crate::shm_side::adopting(side.get(), slot);
        let (obj, id) = match kind {
            "reader" => {
                let end = new_end(slf, Reader::make, Reader::end_id, EndKind::Reader)?;
                let id = end.end_id();
                (Py::new(py, end)?.into_any(), id)
            }
            "writer" => {
                let end = new_end(slf, Writer::make, Writer::end_id, EndKind::Writer)?;
                let id = end.end_id();
                (Py::new(py, end)?.into_any(), id)
            }
            _ => {
                return Err(PyValueError::new_err(format!(
                    "end kind must be 'reader' or 'writer', not {kind:?}"
                )))
            }
        };
        crate::shm_side::crossed(side.get(), id);
        Ok(obj)
    }

    /// A new end of this networked channel that was already counted on the server (an end
    /// that arrived in a message: its sender counted it on its behalf). With `crossed`, a copy
    /// of an end that crossed OS processes with that ticket (`net_side.rs`); `retired`: a
    /// copy of a retired end (retired here only, nothing is uncounted).
    #[pyo3(signature = (kind, crossed=None, retired=false))]
    fn _net_end(
        slf: &Bound<'_, Self>,
        kind: &str,
        crossed: Option<String>,
        retired: bool,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let (obj, id) = match kind {
            "reader" => {
                let e = Reader::make(slf);
                if retired {
                    e.inner.retire();
                }
                let id = e.end_id();
                (Py::new(py, e)?.into_any(), id)
            }
            "writer" => {
                let e = Writer::make(slf);
                if retired {
                    e.inner.retire();
                }
                let id = e.end_id();
                (Py::new(py, e)?.into_any(), id)
            }
            _ => {
                return Err(PyValueError::new_err(format!(
                    "end kind must be 'reader' or 'writer', not {kind:?}"
                )))
            }
        };
        if let (Some(t), Some(n)) = (crossed, slf.get().flavors.net.get()) {
            n.adopt(id, t);
        }
        Ok(obj)
    }

    /// The ticket of end `end_id` of this networked channel crossing into another OS
    /// process (`fresh` is issued the first time; `net_side.rs`).
    fn _net_cross_ticket(
        &self,
        py: Python<'_>,
        end_id: u64,
        reader: bool,
        fresh: String,
    ) -> PyResult<String> {
        let n = self.flavors.net.get().ok_or_else(|| {
            PyValueError::new_err(format!("channel '{}' is not networked", self.name))
        })?;
        n.cross_ticket(py, end_id, reader, fresh)
    }
}

/// A new end of `chan`, made under its `MoveLock`: counted in shared memory too if the channel
/// lives there, else by the move's snapshot if it ever moves.
fn new_end<E>(
    chan: &Bound<'_, Channel>,
    make: impl FnOnce(&Bound<'_, Channel>) -> E,
    id: impl FnOnce(&E) -> u64,
    kind: EndKind,
) -> PyResult<E> {
    let py = chan.py();
    let this = chan.get();
    if let Some(n) = this.flavors.net.get() {
        // Counted on the server before the end exists here, so every participant sees it.
        n.count_end(py, kind == EndKind::Reader, true, true)?;
        return Ok(make(chan));
    }
    let _held = this.flavors.move_lock.hold(py);
    let end = make(chan);
    if let Some(s) = this.flavors.shm.get() {
        s.get().register_end(py, id(&end), kind)?;
    }
    Ok(end)
}

impl Reader {
    /// `aread` with its timeout parsed (`fast_method.rs` calls it for `aread()`).
    pub(crate) fn aread_parsed(slf: &Bound<'_, Self>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let (py, this) = (slf.py(), slf.get());
        if this.chan.get().flavors.is_remote() {
            if crate::coro_op::in_coro_task() {
                return crate::coro_op::offload(py, "_offload_read", (slf, timeout));
            }
            if let Some(s) = this.chan.get().flavors.shm.get() {
                let (id, retired) = (Some(this.inner.id()), this.inner.is_retired());
                return crate::shm_aio::aread(py, s, id, EndKind::Reader, retired, timeout, false);
            }
            this.checked(py)?;
            return crate::net_side::net_aio(py, "aread", (&this.chan, timeout, false));
        }
        let c = this.checked(py)?;
        aio_op::read_op(py, slf.as_any(), &c.flavors, &c.inner, &c.name, timeout, false)
    }
}

impl Writer {
    /// `awrite` with its timeout parsed (`fast_method.rs` calls it for `awrite(v)`). A
    /// timeout is checked before a loan is spent.
    pub(crate) fn awrite_parsed(
        slf: &Bound<'_, Self>,
        value: Value,
        timeout: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        let (py, this) = (slf.py(), slf.get());
        if this.chan.get().flavors.is_remote() {
            if crate::coro_op::in_coro_task() {
                return crate::coro_op::offload(py, "_offload_write", (slf, value, timeout));
            }
            let value = crate::loan::lend(py, value)?;
            if let Some(s) = this.chan.get().flavors.shm.get() {
                let (id, retired) = (Some(this.inner.id()), this.inner.is_retired());
                return crate::shm_aio::awrite(py, s, id, EndKind::Writer, retired, value, timeout);
            }
            this.checked(py)?;
            return crate::net_side::net_aio(py, "awrite", (&this.chan, value, timeout));
        }
        let value = crate::loan::lend(py, value)?;
        let c = this.checked(py)?;
        aio_op::write_op(py, slf.as_any(), &c.flavors, &c.inner, &c.name, value, timeout)
    }
}
