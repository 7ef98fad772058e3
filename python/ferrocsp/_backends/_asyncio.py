"""The asyncio backend: ``async def`` processes as tasks on an event loop.

Invariants:
- From synchronous code (``Par.run``/``start``, ``Spawn``) the async processes of one network
  run as tasks on one new event loop in one dedicated daemon thread (``LoopHost``); ``wait``
  returns True only after that thread has ended, so a joined network leaves nothing behind.
- Inside a running loop (``await Par(...).arun()``) each async process is a task on that loop
  (``LoopTask``).
- Every process runs through ``_process.aexecute``, so shutdown rules match the threads'.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from .._native import _participant_enter, _participant_exit
from .._process import Outcome, Process, aexecute
from ._hosted import HostedTask, ThreadHost

__all__ = ["HostedTask", "LoopHost", "LoopTask"]


class LoopHost(ThreadHost):
    """Runs async processes on one event loop in its own daemon thread."""

    what = "the event loop"
    __slots__ = ()

    def __init__(self, procs: list[Process[Any]], name: str) -> None:
        super().__init__(procs, f"{name} [asyncio]")

    async def _one(self, i: int) -> None:
        self.outcomes[i] = await aexecute(self._procs[i])

    async def _all(self) -> None:
        # The loop's main task waits for its processes: a joining participant, so a network
        # whose async processes all block is reported as deadlocked (docs/design.md).
        pid = _participant_enter(self.thread.name, True)
        try:
            await asyncio.gather(*(self._one(i) for i in range(len(self._procs))))
        finally:
            _participant_exit(pid)

    def _run(self) -> None:
        asyncio.run(self._all())


class LoopTask:
    """One async process running as a task on the caller's (running) event loop."""

    __slots__ = ("_done", "outcome", "task")

    def __init__(self, proc: Process[Any], loop: asyncio.AbstractEventLoop) -> None:
        self._done = threading.Event()
        self.outcome: Outcome | None = None
        self.task = loop.create_task(self._main(proc), name=proc.name)

    async def _main(self, proc: Process[Any]) -> None:
        try:
            self.outcome = await aexecute(proc)
        finally:
            self._done.set()

    @property
    def alive(self) -> bool:
        return not self._done.is_set()

    def wait(self, timeout: float | None) -> bool:
        """Blocking wait (from another thread, or at exit); ``arun`` awaits ``task`` instead."""
        return self._done.wait(timeout)
