"""The asyncio backend: ``async def`` processes as tasks on an event loop.

Invariants:
- From synchronous code (``Par.run``/``start``, ``Spawn``) the async processes of one network
  run as tasks on one event loop in one daemon thread (``LoopHost``), used by that network
  alone while it runs; ``wait`` returns True only after the run has ended, so a joined network
  leaves nothing running behind.
- The loop is the one its kept host thread (``_pool.py``) keeps between runs, made on the
  first. Each run ends as ``asyncio.run`` ends: tasks left over are cancelled and awaited. A
  run that leaves the loop unlike a fresh one (it used the default executor, has async
  generators to finalize, changed its exception handler, task factory or debug flag, or the
  event loop policy changed) ends it entirely, as ``asyncio.run`` would (async generators and
  executor shut down, loop closed), and the next run makes a new one.
- Inside a running loop (``await Par(...).arun()``) each async process is a task on that loop
  (``LoopTask``).
- Every process runs through ``_process.aexecute`` (or, with tracing off, the ``_aexecute``
  it would await), so shutdown rules match the threads'. Each process is its own task whose
  coroutine is that function's, with no wrapper coroutine around it: every wake-up resumes
  the chain task -> ``_aexecute`` -> process body -> channel operation, one level per
  coroutine, so wrappers would cost on every communication. Outcomes are collected with
  done-callbacks instead.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Coroutine
from typing import Any

from .. import _trace
from .._native import _participant_enter, _participant_exit
from .._process import Outcome, Process, _aexecute, aexecute
from . import _pool
from ._hosted import HostedTask, ThreadHost

__all__ = ["HostedTask", "LoopHost", "LoopTask"]


class LoopHost(ThreadHost):
    """Runs async processes on one event loop in its own daemon thread."""

    what = "the event loop"
    __slots__ = ()

    def __init__(self, procs: list[Process[Any]], name: str) -> None:
        super().__init__(procs, f"{name} [asyncio]")

    async def _all(self) -> None:
        # The loop's main task waits for its processes: a joining participant, so a network
        # whose async processes all block is reported as deadlocked (docs/design.md).
        pid = _participant_enter(self.name, True)
        try:
            tasks = [asyncio.create_task(run_process(p), name=p.name) for p in self._procs]
            for i, t in enumerate(tasks):
                # Each outcome is visible as soon as its process ends (dump(), handles), not
                # only when the whole network has: a callback, not a wrapper coroutine.
                t.add_done_callback(functools.partial(self._finished, i))
            await asyncio.gather(*tasks)
        finally:
            _participant_exit(pid)

    def _finished(self, i: int, task: asyncio.Task[Outcome]) -> None:
        if not task.cancelled():
            self.outcomes[i] = task.result()

    def _run(self) -> None:
        worker = _pool.current()
        if worker is None:  # not on a kept thread (never, as hosts start): as before
            asyncio.run(self._all())
            return
        loop = worker.loop
        policy = asyncio.get_event_loop_policy()
        if loop is None or worker.loop_policy is not policy:
            worker.close_loop()
            loop = worker.loop = policy.new_event_loop()
            worker.loop_policy, worker.loop_debug = policy, loop.get_debug()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._all())
        finally:
            try:
                _cancel_leftovers(loop)
            finally:
                try:
                    if not _as_new(loop, worker.loop_debug):
                        worker.loop = None
                        _end_loop(loop)
                finally:
                    asyncio.set_event_loop(None)


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    """Cancels the tasks a run left on ``loop`` and runs them to their end (as asyncio.run)."""
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return
    for t in tasks:
        t.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    for t in tasks:
        if not t.cancelled() and t.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception in a task left running by a process",
                    "exception": t.exception(),
                    "task": t,
                }
            )


def _as_new(loop: asyncio.AbstractEventLoop, debug: bool) -> bool:
    """Whether ``loop`` is as a new one would be, so that the next run can reuse it."""
    return (
        getattr(loop, "_default_executor", True) is None
        and not getattr(loop, "_asyncgens", True)
        and loop.get_exception_handler() is None
        and loop.get_task_factory() is None
        and loop.get_debug() == debug
        and not loop.is_closed()
    )


def _end_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Ends ``loop`` as ``asyncio.run`` ends its own."""
    if loop.is_closed():
        return
    try:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


def run_process(proc: Process[Any]) -> Coroutine[Any, Any, Outcome]:
    """The coroutine running ``proc``: ``aexecute``'s, or with tracing off the one it awaits."""
    return aexecute(proc) if _trace.ENABLED else _aexecute(proc)


class LoopTask:
    """One async process running as a task on the caller's (running) event loop."""

    __slots__ = ("_done", "outcome", "task")

    def __init__(self, proc: Process[Any], loop: asyncio.AbstractEventLoop) -> None:
        self._done = threading.Event()
        self.outcome: Outcome | None = None
        self.task = loop.create_task(run_process(proc), name=proc.name)
        self.task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Outcome]) -> None:
        # The process coroutine turns every exception into an Outcome; only a task cancelled
        # before it ever ran has none (and whoever awaits it sees the cancellation).
        if not task.cancelled() and task.exception() is None:
            self.outcome = task.result()
        self._done.set()

    @property
    def alive(self) -> bool:
        return not self._done.is_set()

    def wait(self, timeout: float | None) -> bool:
        """Blocking wait (from another thread, or at exit); ``arun`` awaits ``task`` instead."""
        return self._done.wait(timeout)
