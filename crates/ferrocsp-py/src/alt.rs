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

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ferrocsp::{Policy, Select, SelectError, Selected};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pyclass::{PyTraverseError, PyVisit};
use pyo3::types::PyTuple;

use crate::aio_op::gil_known;
use crate::alt_map::{AltMap, Chosen};
use crate::channel::Channel;
use crate::ends::{Reader, Writer};
use crate::pythread::Value;
use crate::step_lock::StepLock;
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

/// The native half of one `ferrocsp.Alt` (module docs): its base class, so that a selection
/// is a native method call with no Python frame. Internal: made by `Alt.__new__`.
#[pyclass(frozen, subclass, module = "ferrocsp._native", name = "_NativeAlt")]
#[derive(Debug)]
pub struct NativeAlt {
    /// Whether selections take this path (false: the Alt has guards it does not cover, and
    /// `entries` is empty; tests may switch it off to exercise the general path).
    on: AtomicBool,
    entries: Vec<Entry>,
    /// Index of the guard `fair_select` chose last (`NONE`: none yet).
    last: AtomicUsize,
    /// The `AltMap` of the last blocking selection, emptied, for the next (no allocation).
    spare: StepLock<Option<AltMap>>,
    /// The last finished selection that had every guard enabled, with its map, uncleared: the
    /// next such selection refreshes it instead of building one (`begin`).
    kept: StepLock<Option<Kept>>,
}

/// A finished selection of every guard (engine operation `i` is guard `i`), kept whole: its
/// operations, lock order, recycled cell and slots, and its map. It holds no Python object
/// (write values are taken out when it is kept), so it needs no GC traversal.
#[derive(Debug)]
struct Kept {
    sel: Box<Select<Value>>,
    map: AltMap,
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
                    sel.timeout(self.timeout(py, e)?);
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

    /// The kept selection refreshed for a selection now (what may have changed since the last
    /// one read again, as `prepare` reads it): false if not every guard can be an engine
    /// operation now (a guard disabled or retired, a channel moved, a `Guard` or `Output`
    /// re-pointed); then `prepare` decides.
    fn refresh(&self, py: Python<'_>, sel: &mut Select<Value>, policy: Policy) -> PyResult<bool> {
        for (i, e) in self.entries.iter().enumerate() {
            if e.wrapped {
                let w = e.guard.bind(py);
                if !w.getattr(intern!(py, "when"))?.is_truthy()?
                    || !w.getattr(intern!(py, "guard"))?.is(&e.plain)
                {
                    return Ok(false);
                }
            }
            match (e.kind, &e.end) {
                (READ | WRITE, Some(end)) => {
                    let (chan, retired) = end.parts();
                    if retired
                        || chan.flavors.shm.get().is_some()
                        || chan.flavors.net.get().is_some()
                    {
                        return Ok(false);
                    }
                    if e.kind == WRITE {
                        let out = e.plain.bind(py);
                        if !out.getattr(intern!(py, "target"))?.is(end.obj()) {
                            return Ok(false);
                        }
                        sel.set_value(i, out.getattr(intern!(py, "value"))?.unbind());
                    }
                }
                (TIMEOUT, _) => sel.set_timeout(i, self.timeout(py, e)?),
                (SKIP, _) => {}
                _ => return Ok(false),
            }
        }
        if policy == Policy::Fair {
            let last = self.last.load(Ordering::Relaxed);
            sel.set_last_selected((last != NONE).then_some(last));
        }
        Ok(true)
    }

    /// A `Timeout` guard's delay, read now.
    fn timeout(&self, py: Python<'_>, e: &Entry) -> PyResult<Duration> {
        let secs: f64 = e.plain.bind(py).getattr(intern!(py, "seconds"))?.extract()?;
        Duration::try_from_secs_f64(secs)
            .map_err(|_| PyValueError::new_err(format!("timeout must be >= 0 seconds, got {secs}")))
    }

    /// The selection of the guards enabled now, with its map: the kept one refreshed when
    /// every guard is enabled, else one built in a pooled `Select` (`in_task`: the greenlet
    /// task's, as a blocking selection takes; else the thread's). None: the general path must
    /// run it; nothing was registered.
    fn begin(
        &self,
        py: Python<'_>,
        policy: Policy,
        in_task: bool,
    ) -> PyResult<Option<(PooledSelect, AltMap)>> {
        let kept = self.kept.lock(gil_known()).and_then(|mut k| k.take());
        if let Some(Kept { sel, map }) = kept {
            let mut sel = PooledSelect::kept(sel, in_task);
            if self.refresh(py, &mut sel, policy)? {
                return Ok(Some((sel, map)));
            }
            self.end(sel, map); // still the full selection, for later
        }
        let mut sel = if in_task { pooled_select() } else { PooledSelect::from_thread_pool() };
        let mut map = self.take_map();
        if !self.prepare(py, &mut sel, policy, &mut map)? {
            self.keep_map(map);
            return Ok(None);
        }
        Ok(Some((sel, map)))
    }

    /// After a selection (or a refresh that found it could not be used): a finished
    /// selection of every guard is kept whole for the next; any other goes back to its pool.
    /// An awaited selection that waited comes back here when its op finishes (`aio.rs`).
    pub(crate) fn end(&self, sel: PooledSelect, mut map: AltMap) {
        if map.index_of.len() == self.entries.len() {
            if let (Some(mut sel), Some(mut kept)) = (sel.into_kept(), self.kept.lock(gil_known()))
            {
                if kept.is_none() {
                    for (i, e) in self.entries.iter().enumerate() {
                        if e.kind == WRITE {
                            drop(sel.take_value(i)); // unsent: the Output still has it
                        }
                    }
                    map.owner = None;
                    *kept = Some(Kept { sel, map });
                }
            }
            return;
        }
        self.keep_map(map);
    }

    /// An empty `AltMap`: the one kept from this Alt's last selection (its vectors keep their
    /// room), or a new one when another thread is using it.
    fn take_map(&self) -> AltMap {
        let kept = self.spare.lock(gil_known()).and_then(|mut m| m.take());
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
        if let Some(mut spare) = self.spare.lock(gil_known()) {
            *spare = Some(map);
        }
    }

    /// The Python policy number of `policy` (`_alt.py`'s `_RANDOM`, `_PRIORITY`, `_FAIR`),
    /// for the general path.
    fn policy_arg(policy: Policy) -> u8 {
        match policy {
            Policy::Random => 0,
            Policy::Priority => 1,
            Policy::Fair => 2,
        }
    }

    /// A blocking selection: natively, or by the subclass's general path (`_run`).
    fn run(slf: &Bound<'_, Self>, policy: Policy) -> PyResult<Py<PyAny>> {
        let (py, this) = (slf.py(), slf.get());
        if this.on.load(Ordering::Relaxed) {
            let Some((mut sel, map)) = this.begin(py, policy, true)? else {
                return Self::general(slf, "_run", policy);
            };
            let r = this.select_with(py, policy, &mut sel, &map);
            this.end(sel, map);
            if let Some(pair) = r? {
                return Ok(pair);
            }
        }
        Self::general(slf, "_run", policy)
    }

    /// The general path's `_run` or `_arun` (the Python `Alt`'s) for `policy`.
    fn general(slf: &Bound<'_, Self>, method: &str, policy: Policy) -> PyResult<Py<PyAny>> {
        Ok(slf.call_method1(method, (Self::policy_arg(policy),))?.unbind())
    }

    /// An awaitable selection: a native op (done at once if a guard is ready) or the
    /// general path's `_arun` coroutine. If a channel moves to shared memory while the op
    /// waits (nothing fired), awaiting it goes on with `_arun`.
    pub(crate) fn arun(slf: &Bound<'_, Self>, policy: Policy) -> PyResult<Py<PyAny>> {
        let (py, this) = (slf.py(), slf.get());
        if !this.on.load(Ordering::Relaxed) {
            return Self::general(slf, "_arun", policy);
        }
        let Some((mut sel, mut map)) = this.begin(py, policy, false)? else {
            return Self::general(slf, "_arun", policy);
        };
        // A ready Alt completes at the call; one that must wait, or fails, does so when
        // awaited (as `_aselect`). When no guard's channel has anything for it, the try is
        // skipped: the wait tries again under the locks as it registers.
        let r =
            if sel.might_fire() { sel.try_select(policy) } else { Err(SelectError::WouldBlock) };
        match r {
            Err(SelectError::Moved { .. }) => {
                this.end(sel, map);
                Self::general(slf, "_arun", policy)
            }
            r @ Ok(_) => {
                let pair = this.finish(py, &map, policy, r);
                this.end(sel, map);
                match pair? {
                    Some(pair) => crate::aio_op::done(py, pair),
                    None => Self::general(slf, "_arun", policy),
                }
            }
            Err(_) => {
                map.owner =
                    Some(Chosen { alt: slf.clone().unbind(), fair: policy == Policy::Fair });
                let general = (slf.clone().into_any().unbind(), Self::policy_arg(policy));
                if crate::coro_op::in_coro_task() && !trace::on() {
                    let op = crate::coro_alt::CoroAlt::new(sel, map, policy, general);
                    return crate::aio_op::coro_alt_pending(py, op);
                }
                let op = crate::aio::AsyncOp::alt(sel, map, policy, None, Some(general));
                crate::aio_op::pending(py, op)
            }
        }
    }

    /// `select` with a prepared selection.
    fn select_with(
        &self,
        py: Python<'_>,
        policy: Policy,
        sel: &mut PooledSelect,
        map: &AltMap,
    ) -> PyResult<Option<Py<PyAny>>> {
        if trace::on() {
            // Traced: try first, so a selection that must wait is reported as blocked.
            match sel.try_select(policy) {
                Err(SelectError::WouldBlock) => map.trace_block(py),
                r => return self.finish(py, map, policy, r),
            }
        }
        let r = select_pooled(py, sel, policy, None, || map.desc())?;
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
    /// or end, or the Output's target (None for skip and timeout). ``None``: every selection
    /// takes the general path (``_run``/``_arun``, which a subclass defines).
    #[new]
    #[pyo3(signature = (guards = None))]
    fn new(guards: Option<Vec<Spec<'_>>>) -> PyResult<Self> {
        let on = guards.is_some();
        let guards = guards.unwrap_or_default();
        if on && guards.is_empty() {
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
        Ok(NativeAlt {
            on: AtomicBool::new(on),
            entries,
            last: AtomicUsize::new(NONE),
            spare: StepLock::new(None),
            kept: StepLock::new(None),
        })
    }

    /// Fires one ready guard chosen uniformly at random (blocking until one is ready).
    fn select(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Self::run(slf, Policy::Random)
    }

    /// Fires the first ready guard in the order given.
    fn pri_select(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Self::run(slf, Policy::Priority)
    }

    /// Fires a ready guard, giving lowest priority to the one chosen last time (no
    /// starvation).
    fn fair_select(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Self::run(slf, Policy::Fair)
    }

    /// ``await alt.aselect()``: ``select`` from asyncio code.
    ///
    /// Cancelled while waiting: if a guard fired in the race, the await returns it and the
    /// cancellation is re-requested for the task's next suspension; otherwise
    /// ``CancelledError`` propagates and no guard fired (no output value was sent).
    fn aselect(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Self::arun(slf, Policy::Random)
    }

    /// ``pri_select`` from asyncio code (cancellation as in ``aselect``).
    fn apri_select(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Self::arun(slf, Policy::Priority)
    }

    /// ``fair_select`` from asyncio code (cancellation as in ``aselect``).
    fn afair_select(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Self::arun(slf, Policy::Fair)
    }

    /// Whether selections take the native path (module docs).
    #[getter(_native_on)]
    fn native_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    #[setter(_native_on)]
    fn set_native_on(&self, on: bool) -> PyResult<()> {
        if on && self.entries.is_empty() {
            return Err(PyValueError::new_err("this Alt has no native selection"));
        }
        self.on.store(on, Ordering::Relaxed);
        Ok(())
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
