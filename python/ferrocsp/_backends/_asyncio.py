"""The asyncio backend: ``async def`` processes as tasks on an event loop.

Invariants:
- From synchronous code (``Par.run``/``start``, ``Spawn``) the async processes of one network
  run as tasks on one new event loop in one dedicated daemon thread (``LoopHost``); ``wait``
  returns True only after that thread has ended, so a joined network leaves nothing behind.
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
        pid = _participant_enter(self.thread.name, True)
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
        asyncio.run(self._all())


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
