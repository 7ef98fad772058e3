//! `ShmSide`: the shared-memory side of a `Channel` that moved there (the move itself is
//! `shm_move.rs`).
//!
//! A channel moves the first time it is pickled for another OS process; from then on `Channel`, `Reader` and `Writer` hand each operation to their side here, in
//! Rust. The value codec (pickle protocol 5 with out-of-band buffers) is `ferrocsp._shm`'s
//! `encode`/`decode`, called from here as mobility calls pickle.
//!
//! Invariants:
//! - Until the values the in-process side held are in the shared buffer, in order, operations
//!   here wait at the gate, so nothing overtakes them.
//! - One end object is one slot of the segment's end table. An end counted by the move's
//!   snapshot gets its slot when first used (adopted: already counted); an end made after the
//!   move gets one at once. An end that crossed processes (pickled for another, or arrived
//!   from one) stays live when its object here is dropped: its copies elsewhere may be in use.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use ferrocsp::shm::EndKind;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::errors::{parse_timeout, retired_end, to_pyerr, OpName};
use crate::pythread::Value;
use crate::shm::PyShmChannel;

static ENCODE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static DECODE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each critical section below leaves its map or flag consistent at every step.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Which ends of this process have slots, and which crossed processes.
#[derive(Debug, Default)]
struct Ends {
    /// Engine end id -> slot in the segment's end table.
    slots: HashMap<u64, u32>,
    /// Ends pickled for, or arrived from, another process.
    crossed: HashSet<u64>,
    /// The slot the next end made binds to (unpickling an end).
    adopt: Option<u32>,
}

/// The shared-memory side of a channel (private: reached through ``Channel._shm``).
#[pyclass(frozen, module = "ferrocsp._native", name = "_ShmSide")]
#[derive(Debug)]
pub struct ShmSide {
    pub(crate) native: Py<PyShmChannel>,
    name: Arc<str>,
    /// Processes known to hold the segment open, this one first: a receiver reopens it from
    /// the process that sent it (alive while it writes), else from older holders.
    holders: Vec<(u32, i32)>,
    ends: Mutex<Ends>,
    /// True while the move carries the in-process values over (`gate` wakes the waiters).
    pub(crate) moving: AtomicBool,
    pub(crate) gate: Mutex<bool>,
    opened: Condvar,
}

fn kind_name(kind: EndKind) -> &'static str {
    match kind {
        EndKind::Reader => "reader",
        EndKind::Writer => "writer",
    }
}

fn end_kind(kind: &str) -> PyResult<EndKind> {
    match kind {
        "reader" => Ok(EndKind::Reader),
        "writer" => Ok(EndKind::Writer),
        _ => Err(PyValueError::new_err(format!(
            "end kind must be 'reader' or 'writer', not {kind:?}"
        ))),
    }
}

impl ShmSide {
    pub(crate) fn new(
        py: Python<'_>,
        native: PyShmChannel,
        name: Arc<str>,
        holders: &[(u32, i32)],
    ) -> PyResult<Self> {
        let me = (std::process::id(), native.engine().fd());
        let mut all = vec![me];
        all.extend(holders.iter().filter(|h| h.0 != me.0).copied());
        all.truncate(4);
        Ok(ShmSide {
            native: Py::new(py, native)?,
            name,
            holders: all,
            ends: Mutex::new(Ends::default()),
            moving: AtomicBool::new(false),
            gate: Mutex::new(false),
            opened: Condvar::new(),
        })
    }

    pub(crate) fn chan_name(&self) -> &str {
        &self.name
    }

    pub(crate) fn engine(&self) -> &ferrocsp::shm::ShmChannel {
        self.native.get().engine()
    }

    pub(crate) fn err(&self, py: Python<'_>, e: ferrocsp::Error) -> PyErr {
        to_pyerr(py, e, OpName::Write, &self.name)
    }

    /// Waits (GIL released) while the move carries the in-process values over.
    fn wait_moved(&self, py: Python<'_>) {
        if !self.moving.load(Ordering::Acquire) {
            return;
        }
        crate::detach::detach(py, || {
            let mut moving = lock(&self.gate);
            while *moving {
                moving = self.opened.wait(moving).unwrap_or_else(PoisonError::into_inner);
            }
        });
    }

    pub(crate) fn open_gate(&self) {
        *lock(&self.gate) = false;
        self.moving.store(false, Ordering::Release);
        self.opened.notify_all();
    }

    /// `value` as message parts and their arrival kinds (`ferrocsp._shm.encode`).
    pub(crate) fn encode<'py>(
        &self,
        py: Python<'py>,
        value: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyList>, Vec<u8>)> {
        let f = ENCODE.import(py, "ferrocsp._shm", "encode")?;
        let out = f.call1((value, &*self.name))?;
        let t = out.cast::<PyTuple>()?;
        Ok((t.get_item(0)?.cast_into::<PyList>()?, t.get_item(1)?.extract()?))
    }

    fn decode(py: Python<'_>, parts: Bound<'_, PyList>) -> PyResult<Value> {
        let f = DECODE.import(py, "ferrocsp._shm", "decode")?;
        Ok(f.call1((parts,))?.unbind())
    }

    /// Runs `op` recorded as a wait on this channel (`csp.dump()`; `process.rs`).
    fn waiting<T>(
        &self,
        py: Python<'_>,
        write: bool,
        op: impl FnOnce() -> PyResult<T>,
    ) -> PyResult<T> {
        let me = crate::process::current(py)?;
        me.set_shared(Some(vec![(self.name.to_string(), write)]), false);
        let r = op();
        me.set_shared(None, false);
        r
    }

    pub(crate) fn write(
        &self,
        py: Python<'_>,
        value: &Bound<'_, PyAny>,
        timeout: Option<f64>,
        nowait: bool,
    ) -> PyResult<()> {
        let (parts, kinds) = self.encode(py, value)?;
        self.write_recorded(py, &parts, &kinds, timeout, nowait, !nowait)
    }

    pub(crate) fn write_recorded(
        &self,
        py: Python<'_>,
        parts: &Bound<'_, PyList>,
        kinds: &[u8],
        timeout: Option<f64>,
        nowait: bool,
        record: bool,
    ) -> PyResult<()> {
        self.wait_moved(py);
        let native = self.native.get();
        if !record {
            return native.write_parts(py, parts, kinds, timeout, nowait, false);
        }
        self.waiting(py, true, || native.write_parts(py, parts, kinds, timeout, nowait, false))
    }

    /// Reads one value; a wait is recorded for `csp.dump()` when `record` (the asyncio path
    /// records in its task instead: its wait runs on an operation greenlet).
    pub(crate) fn read(
        &self,
        py: Python<'_>,
        timeout: Option<f64>,
        nowait: bool,
    ) -> PyResult<Value> {
        self.read_recorded(py, timeout, nowait, !nowait)
    }

    pub(crate) fn read_recorded(
        &self,
        py: Python<'_>,
        timeout: Option<f64>,
        nowait: bool,
        record: bool,
    ) -> PyResult<Value> {
        self.wait_moved(py);
        let native = self.native.get();
        let parts = if record {
            self.waiting(py, false, || native.read_parts(py, timeout, nowait))?
        } else {
            native.read_parts(py, timeout, nowait)?
        };
        Self::decode(py, parts)
    }

    /// Reads through end `id` (or the channel itself). Out of line: the in-process ends'
    /// `read` branches here, and its frame is saved at every switch of a blocked greenlet.
    #[inline(never)]
    pub(crate) fn end_read(
        &self,
        py: Python<'_>,
        end: Option<(u64, bool)>,
        timeout: Option<f64>,
        nowait: bool,
    ) -> PyResult<Value> {
        if let Some((id, retired_here)) = end {
            self.live(py, id, EndKind::Reader, retired_here)?;
        }
        self.read(py, timeout, nowait)
    }

    /// Writes through end `id` (or the channel itself); out of line as [`Self::end_read`].
    #[inline(never)]
    pub(crate) fn end_write(
        &self,
        py: Python<'_>,
        end: Option<(u64, bool)>,
        value: &Bound<'_, PyAny>,
        timeout: Option<f64>,
        nowait: bool,
    ) -> PyResult<()> {
        if let Some((id, retired_here)) = end {
            self.live(py, id, EndKind::Writer, retired_here)?;
        }
        self.write(py, value, timeout, nowait)
    }

    /// `__next__` (through end `end`, or the channel itself): end-of-stream, or a retired
    /// end, stops the iteration.
    pub(crate) fn next(&self, py: Python<'_>, end: Option<(u64, bool)>) -> PyResult<Option<Value>> {
        match self.end_read(py, end, None, false) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_instance(py, crate::errors::retired_type(py)?.as_any()) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn poison(&self, py: Python<'_>) -> PyResult<()> {
        self.engine().poison().map_err(|e| self.err(py, e))
    }

    pub(crate) fn stats(&self, py: Python<'_>) -> PyResult<ferrocsp::Stats> {
        self.engine().stats().map_err(|e| to_pyerr(py, e, OpName::Read, &self.name))
    }

    // -- ends ------------------------------------------------------------------------------

    /// An end was just made (under the channel's `MoveLock`, after the move): count it, or
    /// bind it to the slot being adopted.
    pub(crate) fn register_end(&self, py: Python<'_>, id: u64, kind: EndKind) -> PyResult<()> {
        let mut ends = lock(&self.ends);
        let slot = match ends.adopt.take() {
            Some(slot) => slot,
            None => self.engine().new_end(kind).map_err(|e| self.err(py, e))?,
        };
        ends.slots.insert(id, slot);
        Ok(())
    }

    /// The end's slot; an end counted by the move's snapshot gets one now. None: it had
    /// retired before the move.
    fn slot(
        &self,
        py: Python<'_>,
        id: u64,
        kind: EndKind,
        retired_here: bool,
    ) -> PyResult<Option<u32>> {
        let mut ends = lock(&self.ends);
        if let Some(&slot) = ends.slots.get(&id) {
            return Ok(Some(slot));
        }
        if retired_here {
            return Ok(None);
        }
        let slot = self.engine().adopt_end(kind).map_err(|e| self.err(py, e))?;
        ends.slots.insert(id, slot);
        Ok(Some(slot))
    }

    /// Raises `ChannelRetired` unless the end is live (in every process).
    pub(crate) fn live(
        &self,
        py: Python<'_>,
        id: u64,
        kind: EndKind,
        retired_here: bool,
    ) -> PyResult<()> {
        match self.slot(py, id, kind, retired_here)? {
            Some(slot) if !self.engine().end_retired(slot) => Ok(()),
            _ => Err(retired_end(py, kind_name(kind), &self.name)),
        }
    }

    pub(crate) fn end_retired(
        &self,
        py: Python<'_>,
        id: u64,
        kind: EndKind,
        retired_here: bool,
    ) -> PyResult<bool> {
        Ok(match self.slot(py, id, kind, retired_here)? {
            Some(slot) => self.engine().end_retired(slot),
            None => true,
        })
    }

    /// Retires the end for every process (under the channel's `MoveLock`).
    pub(crate) fn end_retire(
        &self,
        py: Python<'_>,
        id: u64,
        kind: EndKind,
        retired_here: bool,
    ) -> PyResult<()> {
        match self.slot(py, id, kind, retired_here)? {
            Some(slot) => self.engine().retire_end(slot).map_err(|e| self.err(py, e)),
            None => Ok(()),
        }
    }

    /// A live end object here was dropped (under the channel's `MoveLock`): it retires unless
    /// it crossed processes.
    pub(crate) fn end_dropped(&self, py: Python<'_>, id: u64, kind: EndKind) -> PyResult<()> {
        let slot = {
            let mut ends = lock(&self.ends);
            if ends.crossed.remove(&id) {
                ends.slots.remove(&id);
                return Ok(());
            }
            match ends.slots.remove(&id) {
                Some(slot) => slot,
                // Counted by the move's snapshot and never used since: no slot yet.
                None => self.engine().adopt_end(kind).map_err(|e| self.err(py, e))?,
            }
        };
        self.engine().retire_end(slot).map_err(|e| self.err(py, e))
    }
}

#[pymethods]
impl ShmSide {
    /// The segment's identifier (16 bytes).
    #[getter]
    fn uuid<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.engine().uuid())
    }

    /// ``[(pid, fd), ...]``: processes known to hold the segment open, this one first.
    #[getter]
    fn holders(&self) -> Vec<(u32, i32)> {
        self.holders.clone()
    }

    /// The channel's name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// The engine's shared channel (``_shm_select`` takes these).
    #[getter]
    fn native(&self, py: Python<'_>) -> Py<PyShmChannel> {
        self.native.clone_ref(py)
    }

    /// Waits while the move carries the in-process values over.
    #[pyo3(name = "wait_moved")]
    fn py_wait_moved(&self, py: Python<'_>) {
        self.wait_moved(py);
    }

    /// The slot of end ``end_id`` (``"reader"``/``"writer"``), None if it retired before the
    /// move (an Alt guard on it can never fire).
    #[pyo3(name = "slot")]
    fn py_slot(
        &self,
        py: Python<'_>,
        end_id: u64,
        kind: &str,
        retired_here: bool,
    ) -> PyResult<Option<u32>> {
        self.slot(py, end_id, end_kind(kind)?, retired_here)
    }

    /// The slot to pickle end ``end_id`` as, for another process (a retired end gets a fresh
    /// slot, retired at once); the end is marked as having crossed processes.
    fn send_end(
        &self,
        py: Python<'_>,
        end_id: u64,
        kind: &str,
        retired_here: bool,
    ) -> PyResult<u32> {
        let k = end_kind(kind)?;
        let slot = match self.slot(py, end_id, k, retired_here)? {
            Some(slot) => slot,
            None => {
                let slot = self.engine().new_end(k).map_err(|e| self.err(py, e))?;
                self.engine().retire_end(slot).map_err(|e| self.err(py, e))?;
                slot
            }
        };
        lock(&self.ends).crossed.insert(end_id);
        Ok(slot)
    }

    /// Encodes ``value`` for a later ``write_parts`` (asyncio: encode once, before waiting).
    #[pyo3(name = "encode")]
    fn py_encode<'py>(
        &self,
        py: Python<'py>,
        value: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyList>, Vec<u8>)> {
        self.encode(py, value)
    }

    /// Sends an encoded message (``nowait``: ``WouldBlock`` instead of waiting). Records no
    /// wait (as the asyncio path, ``shm_aio.rs``, which records in its task).
    #[pyo3(name = "write_parts", signature = (parts, kinds, timeout = None, nowait = false))]
    fn py_write_parts(
        &self,
        py: Python<'_>,
        parts: &Bound<'_, PyList>,
        kinds: Vec<u8>,
        timeout: Option<&Bound<'_, PyAny>>,
        nowait: bool,
    ) -> PyResult<()> {
        self.write_recorded(py, parts, &kinds, parse_timeout(timeout)?, nowait, false)
    }

    /// Receives one value (``nowait``: ``WouldBlock`` instead of waiting). Records no wait
    /// (as ``write_parts``).
    #[pyo3(name = "read", signature = (timeout = None, nowait = false))]
    fn py_read(
        &self,
        py: Python<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
        nowait: bool,
    ) -> PyResult<Value> {
        self.read_recorded(py, parse_timeout(timeout)?, nowait, false)
    }

    /// Raises ``ChannelRetired`` unless end ``end_id`` is live (None: the channel itself).
    #[pyo3(name = "live")]
    fn py_live(
        &self,
        py: Python<'_>,
        end_id: Option<u64>,
        kind: &str,
        retired_here: bool,
    ) -> PyResult<()> {
        match end_id {
            Some(id) => self.live(py, id, end_kind(kind)?, retired_here),
            None => Ok(()),
        }
    }

    /// Takes the segment's lock and never releases it (tests of a process dying holding it).
    fn hold_lock_for_test(&self, py: Python<'_>) -> PyResult<()> {
        self.engine().hold_lock_for_test().map_err(|e| self.err(py, e))
    }
}

/// Binds the next end made of `side` to `slot` and marks it crossed (unpickling an end).
pub(crate) fn adopting(side: &ShmSide, slot: u32) {
    lock(&side.ends).adopt = Some(slot);
}

pub(crate) fn crossed(side: &ShmSide, end_id: u64) {
    lock(&side.ends).crossed.insert(end_id);
}
