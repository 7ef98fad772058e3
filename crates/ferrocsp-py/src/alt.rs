//! `_NativeAlt`: an `Alt` built once and selected many times, each selection one native call.
//!
//! `ferrocsp._alt.Alt` validates and classifies its guards once and, when every guard is one
//! this path covers (in-process channels and their ends, Output guards on them, Timeout, Skip,
//! any of them in a `Guard` wrapper), keeps a `_NativeAlt` of them. A selection then reads what
//! may change since the last one, builds the engine selection in a pooled `Select` (no
//! allocation once warm), waits the way a plain read waits (`wait.rs`: GIL released on a
//! thread, a switch in a greenlet; an `_AsyncOp` for asyncio) and returns `(guard, value)`.
//!
//! Invariants:
//! - What never changes is kept (the guard objects, their kind, their channel or end); what may
//!   change between selections is read at every selection: a `Guard`'s `when` (its truth
//!   value), an `Output`'s `value`, a `Timeout`'s `seconds`, whether an end retired.
//! - Exactly one guard fires per selection; an Output's value is sent iff its guard is returned.
//! - A selection this path cannot run as built returns None with nothing registered or sent,
//!   and the caller runs the general path (`_alt.py`): a guard's channel moved to shared memory
//!   (or, while the selection waited, moves: nothing fired then), or a `Guard.guard` /
//!   `Output.target` was set to another object since the Alt was built.
//! - Fair state is one atomic (the index of the guard chosen last, `NONE` before any), so
//!   selections of one Alt from several threads need neither a lock nor the GIL; each is
//!   independent and the last to finish sets it, as with the general path. The only lock,
//!   the spare `AltMap`'s, is only ever `try_lock`ed: a selection that finds it taken makes
//!   its own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ferrocsp::{Policy, Select, SelectError, Selected};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pyclass::{PyTraverseError, PyVisit};
use pyo3::types::PyTuple;

use crate::alt_map::{AltMap, Chosen};
use crate::channel::Channel;
use crate::ends::{Reader, Writer};
use crate::pythread::Value;
use crate::trace;
use crate::wait::{pooled_select, select_pooled, PooledSelect};

/// `last` before any fair selection.
const NONE: usize = usize::MAX;

/// The name of a skip or timeout operation (none), shared rather than allocated per selection.
static NO_NAME: OnceLock<Arc<str>> = OnceLock::new();

/// Operation kinds, as `_alt.py` numbers them.
const READ: u8 = 0;
const WRITE: u8 = 1;
const SKIP: u8 = 2;
const TIMEOUT: u8 = 3;

/// The channel a read or write guard names.
#[derive(Debug)]
enum End {
    Chan(Py<Channel>),
    Reader(Py<Reader>),
    Writer(Py<Writer>),
}

impl End {
    fn of(obj: &Bound<'_, PyAny>, write: bool) -> PyResult<Self> {
        if let Ok(c) = obj.cast::<Channel>() {
            return Ok(End::Chan(c.clone().unbind()));
        }
        if write {
            if let Ok(w) = obj.cast::<Writer>() {
                return Ok(End::Writer(w.clone().unbind()));
            }
        } else if let Ok(r) = obj.cast::<Reader>() {
            return Ok(End::Reader(r.clone().unbind()));
        }
        let want = if write { "a Channel or Writer" } else { "a Channel or Reader" };
        let ty = obj.get_type().name()?;
        Err(PyTypeError::new_err(format!("alt operation needs {want}, not {ty}")))
    }

    /// The channel, and whether this end retired (then its guard can never fire).
    fn parts(&self) -> (&Channel, bool) {
        match self {
            End::Chan(c) => (c.get(), false),
            End::Reader(r) => r.get().parts(),
            End::Writer(w) => w.get().parts(),
        }
    }

    fn obj(&self) -> &Py<PyAny> {
        match self {
            End::Chan(c) => c.as_any(),
            End::Reader(r) => r.as_any(),
            End::Writer(w) => w.as_any(),
        }
    }
}

/// One guard, as built.
#[derive(Debug)]
struct Entry {
    /// What a selection returns when this guard fires (the `Guard` wrapper, if any).
    guard: Py<PyAny>,
    /// The guard inside the wrapper (`guard` itself when there is none).
    plain: Py<PyAny>,
    /// Whether `guard` is a `Guard` wrapper (its `when` and `guard` are read per selection).
    wrapped: bool,
    kind: u8,
    /// The channel of a read (the guard) or write (the Output's target).
    end: Option<End>,
}

/// One guard as `_alt.py` describes it: (guard, plain, kind, target); see `NativeAlt::new`.
type Spec<'py> = (Py<PyAny>, Py<PyAny>, u8, Option<Bound<'py, PyAny>>);

/// The native half of one `ferrocsp.Alt` (module docs). Internal: made by `Alt.__init__`.
#[pyclass(frozen, module = "ferrocsp._native", name = "_NativeAlt")]
#[derive(Debug)]
pub struct NativeAlt {
    entries: Vec<Entry>,
    /// Index of the guard `fair_select` chose last (`NONE`: none yet).
    last: AtomicUsize,
    /// The `AltMap` of the last blocking selection, emptied, for the next (no allocation).
    spare: Mutex<Option<AltMap>>,
}

impl NativeAlt {
    /// Builds the engine selection of the guards enabled now into `sel`, with its `AltMap`
    /// (engine index -> guard index). None: this path cannot run it (module docs); nothing was
    /// registered.
    fn prepare(
        &self,
        py: Python<'_>,
        sel: &mut Select<Value>,
        policy: Policy,
        map: &mut AltMap,
    ) -> PyResult<bool> {
        let last = self.last.load(Ordering::Relaxed);
        // Fair rotation starts after the guard chosen last or, if it is disabled now, after the
        // nearest enabled guard before it (wrapping around), as `_alt.py` does.
        let (mut before, mut latest) = (None, None);
        for (i, e) in self.entries.iter().enumerate() {
            if e.wrapped {
                let w = e.guard.bind(py);
                if !w.getattr(intern!(py, "when"))?.is_truthy()? {
                    continue;
                }
                if !w.getattr(intern!(py, "guard"))?.is(&e.plain) {
                    return Ok(false);
                }
            }
            if i <= last {
                before = Some(i);
            }
            latest = Some(i);
            let mut name: Option<Arc<str>> = None;
            match e.kind {
                READ | WRITE => {
                    let Some(end) = &e.end else {
                        return Err(PyTypeError::new_err("alt operation without a channel"));
                    };
                    let (chan, retired) = end.parts();
                    if chan.flavors.shm.get().is_some() || chan.flavors.net.get().is_some() {
                        return Ok(false);
                    }
                    if !map.all_names.contains(&chan.name) {
                        map.all_names.push(chan.name.clone());
                    }
                    if retired {
                        continue; // it can never fire; named in the Retired message only
                    }
                    if e.kind == READ {
                        sel.read(&chan.inner);
                    } else {
                        let out = e.plain.bind(py);
                        if !out.getattr(intern!(py, "target"))?.is(end.obj()) {
                            return Ok(false);
                        }
                        sel.write(&chan.inner, out.getattr(intern!(py, "value"))?.unbind());
                    }
                    name = Some(chan.name.clone());
                }
                SKIP => {
                    sel.skip();
                }
                _ => {
                    let secs: f64 = e.plain.bind(py).getattr(intern!(py, "seconds"))?.extract()?;
                    let d = Duration::try_from_secs_f64(secs).map_err(|_| {
                        PyValueError::new_err(format!("timeout must be >= 0 seconds, got {secs}"))
                    })?;
                    sel.timeout(d);
                }
            }
            map.index_of.push(i);
            map.names.push(name.unwrap_or_else(|| NO_NAME.get_or_init(|| Arc::from("")).clone()));
            map.kinds.push(e.kind);
        }
        if policy == Policy::Fair && last != NONE {
            let after = before.or(latest);
            sel.set_last_selected(after.and_then(|g| map.index_of.iter().position(|&i| i == g)));
        }
        Ok(true)
    }

    /// An empty `AltMap`: the one kept from this Alt's last selection (its vectors keep their
    /// room), or a new one when another thread is using it.
    fn take_map(&self) -> AltMap {
        let kept = self.spare.try_lock().ok().and_then(|mut m| m.take());
        kept.unwrap_or_else(|| {
            let n = self.entries.len();
            AltMap {
                index_of: Vec::with_capacity(n),
                names: Vec::with_capacity(n),
                all_names: Vec::with_capacity(n),
                kinds: Vec::with_capacity(n),
                owner: None,
            }
        })
    }

    /// Empties `map` and keeps it for the next selection.
    fn keep_map(&self, mut map: AltMap) {
        map.index_of.clear();
        map.names.clear();
        map.all_names.clear();
        map.kinds.clear();
        map.owner = None;
        if let Ok(mut spare) = self.spare.try_lock() {
            *spare = Some(map);
        }
    }

    /// `select` with `map` (empty) to fill.
    fn select_with(
        &self,
        py: Python<'_>,
        policy: Policy,
        map: &mut AltMap,
    ) -> PyResult<Option<Py<PyAny>>> {
        let mut sel = pooled_select();
        if !self.prepare(py, &mut sel, policy, map)? {
            return Ok(None);
        }
        if trace::on() {
            // Traced: try first, so a selection that must wait is reported as blocked.
            match sel.try_select(policy) {
                Err(SelectError::WouldBlock) => map.trace_block(py),
                r => return self.finish(py, map, policy, r),
            }
        }
        let r = select_pooled(py, &mut sel, policy, None, || map.desc())?;
        self.finish(py, map, policy, r)
    }

    /// `(guard, value)` of a fired selection (`map` gives the guard index), or its error;
    /// None if a channel moved to shared memory while it waited (nothing fired).
    fn finish(
        &self,
        py: Python<'_>,
        map: &AltMap,
        policy: Policy,
        r: Result<Selected<Value>, SelectError>,
    ) -> PyResult<Option<Py<PyAny>>> {
        if let Err(SelectError::Moved { .. }) = r {
            return Ok(None);
        }
        let (i, value) = map.map(py, r)?;
        Ok(Some(self.chosen(py, i, policy == Policy::Fair, value)?))
    }

    /// The `(guard, value)` tuple for guard `i`, recording it as fair's last if `fair`.
    pub(crate) fn chosen(
        &self,
        py: Python<'_>,
        i: usize,
        fair: bool,
        value: Option<Value>,
    ) -> PyResult<Py<PyAny>> {
        if fair {
            self.last.store(i, Ordering::Relaxed);
        }
        let guard = self.entries[i].guard.clone_ref(py);
        let value = value.unwrap_or_else(|| py.None());
        Ok(PyTuple::new(py, [guard, value])?.into_any().unbind())
    }
}

#[pymethods]
impl NativeAlt {
    /// ``_NativeAlt([(guard, plain, kind, target), ...])``: one tuple per guard, in order:
    /// the guard as passed to ``Alt``, the guard inside its ``Guard`` wrapper (the guard itself
    /// when not wrapped), the kind (0 read, 1 write, 2 skip, 3 timeout) and the read's channel
    /// or end, or the Output's target (None for skip and timeout).
    #[new]
    fn new(guards: Vec<Spec<'_>>) -> PyResult<Self> {
        if guards.is_empty() {
            return Err(PyValueError::new_err("Alt needs at least one guard"));
        }
        let mut entries = Vec::with_capacity(guards.len());
        for (guard, plain, kind, target) in guards {
            let end = match (kind, target) {
                (READ | WRITE, Some(t)) => Some(End::of(&t, kind == WRITE)?),
                (READ | WRITE, None) => {
                    return Err(PyTypeError::new_err("alt operation without a channel"))
                }
                (SKIP | TIMEOUT, _) => None,
                (k, _) => {
                    return Err(PyValueError::new_err(format!("unknown alt operation kind {k}")))
                }
            };
            let wrapped = !guard.is(&plain);
            entries.push(Entry { guard, plain, wrapped, kind, end });
        }
        Ok(NativeAlt { entries, last: AtomicUsize::new(NONE), spare: Mutex::new(None) })
    }

    /// One selection (`policy`: 0 random, 1 priority, 2 fair), blocking until a guard fires:
    /// ``(guard, value)``, or None when the general path must run it (module docs).
    fn select(&self, py: Python<'_>, policy: u8) -> PyResult<Option<Py<PyAny>>> {
        let policy = crate::select::policy(policy)?;
        let mut map = self.take_map();
        let r = self.select_with(py, policy, &mut map);
        self.keep_map(map);
        r
    }

    /// `select`'s asyncio twin: an awaitable giving ``(guard, value)`` (done at once if a guard
    /// is ready), or None when the general path must run it. If a channel moves to shared
    /// memory while it waits (nothing fired), awaiting it goes on with ``owner._arun(policy)``
    /// (the Python ``Alt``'s general path), or without an owner raises ``_Moved``.
    #[pyo3(signature = (policy, owner = None))]
    fn aselect(
        slf: &Bound<'_, Self>,
        policy: u8,
        owner: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<Py<PyAny>>> {
        let policy_arg = policy;
        let (py, this) = (slf.py(), slf.get());
        let policy = crate::select::policy(policy)?;
        let mut sel = PooledSelect::from_thread_pool();
        let mut map = this.take_map();
        if !this.prepare(py, &mut sel, policy, &mut map)? {
            this.keep_map(map);
            return Ok(None);
        }
        // A ready Alt completes at the call; one that must wait, or fails, does so when
        // awaited (as `_aselect`).
        match sel.try_select(policy) {
            Err(SelectError::Moved { .. }) => {
                this.keep_map(map);
                Ok(None)
            }
            r @ Ok(_) => {
                let pair = this.finish(py, &map, policy, r);
                this.keep_map(map);
                match pair? {
                    Some(pair) => crate::aio_op::done(py, pair).map(Some),
                    None => Ok(None),
                }
            }
            Err(_) => {
                let (alt, fair) = (slf.clone().unbind(), policy == Policy::Fair);
                map.owner =
                    Some(Chosen(Box::new(move |py, i, v| alt.get().chosen(py, i, fair, v))));
                let general = match owner {
                    Some(o) => Some((o.getattr(pyo3::intern!(py, "_arun"))?.unbind(), policy_arg)),
                    None => None,
                };
                let op = crate::aio::AsyncOp::alt(sel, map, policy, None, general);
                crate::aio_op::pending(py, op).map(Some)
            }
        }
    }

    /// The index of the guard ``fair_select`` chose last (None before any), shared with the
    /// general path so that fairness carries across both.
    #[getter]
    fn get_last(&self) -> Option<usize> {
        match self.last.load(Ordering::Relaxed) {
            NONE => None,
            i => Some(i),
        }
    }

    #[setter]
    fn set_last(&self, last: Option<usize>) -> PyResult<()> {
        match last {
            Some(i) if i >= self.entries.len() => {
                Err(PyValueError::new_err(format!("no guard {i} in this Alt")))
            }
            i => {
                self.last.store(i.unwrap_or(NONE), Ordering::Relaxed);
                Ok(())
            }
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for e in &self.entries {
            visit.call(&e.guard)?;
            visit.call(&e.plain)?;
            if let Some(end) = &e.end {
                visit.call(end.obj())?;
            }
        }
        Ok(())
    }
}
