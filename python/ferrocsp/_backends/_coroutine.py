"""The native coroutine backend: ``async def`` processes stepped by a Rust scheduler.

Each process is a coroutine task of a ``_native._Scheduler`` (``sched/coro.rs``): the hub
sends into the coroutine directly, and a ferrocsp operation that must wait registers the
task's waker and suspends it, with no asyncio event loop, future or callback in between.

Invariants:
- The coroutine processes of one network run on one scheduler in one kept daemon thread
  (``CoroutineHost``), from ``Par.run``/``start``/``arun`` and ``Spawn`` alike; ``wait``
  returns True only after that thread's run has ended.
- ``Process.run()`` of a coroutine process runs it on a scheduler in the calling thread.
- Every process ends through ``_process.ended`` (``_Done``), so shutdown rules match the
  threads'. Its coroutine is the process function's own, stepped with no wrapper coroutine
  (a wrapper would add a frame to every suspension and resumption); the task carries the
  process name. With tracing on, ``_process.cexecute`` wraps it to add the trace events.
- A coroutine process may await ferrocsp operations, ``ferrocsp.aio`` and coroutines that
  await only those; awaiting anything that needs an asyncio event loop raises a clear
  ``RuntimeError`` in the process (the scheduler throws it in).
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from .. import _io, _trace
from .._native import _Scheduler
from .._process import Outcome, Process, _ended, cexecute
from .._shutdown import poison_all
from ._hosted import ThreadHost

__all__ = ["CoroutineHost", "run_inline"]


class CoroutineHost(ThreadHost):
    """Runs ``async def`` processes as coroutine tasks of one native scheduler in its own
    daemon thread."""

    what = "the coroutine scheduler"
    __slots__ = ()

    def __init__(self, procs: list[Process[Any]], name: str) -> None:
        super().__init__(procs, f"{name} [coroutine]")

    def _run(self) -> None:
        sched = _Scheduler()
        for i, p in enumerate(self._procs):
            _spawn(sched, p, _Done(p, self.outcomes, i))
        _run(sched)


def _run(sched: _Scheduler) -> None:
    """Runs ``sched`` in this thread, known to ``_io._offload`` meanwhile (a coroutine's
    operation on a shared or networked channel runs on a greenlet task of it)."""
    outer = getattr(_io._hub, "scheduler", None)
    _io._hub.scheduler = sched
    try:
        sched.run()
    finally:
        _io._hub.scheduler = outer


class _Done:
    """Receives how a coroutine process ended (``spawn_coro``'s ``done``), applies the
    shutdown rules, and stores its outcome at once (seen by ``dump()`` and handles)."""

    __slots__ = ("i", "outcomes", "proc", "wrapped")

    def __init__(self, proc: Process[Any], outcomes: list[Outcome | None], i: int) -> None:
        self.proc, self.outcomes, self.i = proc, outcomes, i
        #: The coroutine is ``cexecute``'s (tracing), which returns the Outcome itself.
        self.wrapped = False

    def __call__(self, value: Any, exc: BaseException | None) -> None:
        if self.wrapped and exc is None:
            out = value  # cexecute's: the rules applied already
        elif exc is None:
            out = Outcome(value=value)
        else:
            out = _ended(self.proc, exc)
        self.outcomes[self.i] = out


def _spawn(sched: _Scheduler, proc: Process[Any], done: _Done) -> None:
    """Adds ``proc`` to ``sched``: its own coroutine, or ``cexecute``'s when tracing."""
    coro: Coroutine[Any, Any, Any]
    if _trace.ENABLED:
        coro = cexecute(proc)
        done.wrapped = True
    else:
        try:
            coro = proc.fn(*proc.args, **proc.kwargs)
        except BaseException as exc:  # noqa: BLE001 - e.g. wrong arguments: a failure
            done(None, exc)
            return
    sched.spawn_coro(coro, done, proc.name)


def run_inline(proc: Process[Any]) -> Outcome:
    """Runs coroutine process ``proc`` to its end on a scheduler in the calling thread."""
    box: list[Outcome | None] = [None]
    sched = _Scheduler()
    _spawn(sched, proc, _Done(proc, box, 0))
    try:
        _run(sched)
    except KeyboardInterrupt:
        # Ctrl-C in the calling (main) thread: as ``_execute`` does, stop the peers and let
        # the interrupt propagate as itself.
        poison_all(proc.endpoints())
        raise
    out = box[0]
    if out is None:
        raise RuntimeError(f"coroutine process {proc.name!r} ended without an outcome")
    return out
