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
from collections.abc import Callable
from typing import Any

from .._native import _participant_enter, _participant_exit
from .._process import Outcome, Process, aexecute
from ._hosted import HostedTask

__all__ = ["HostedTask", "LoopHost", "LoopTask"]


class LoopHost:
    """Runs async processes on one event loop in its own daemon thread."""

    __slots__ = ("_callbacks", "_done", "_lock", "_name", "_procs", "outcomes", "thread")

    def __init__(self, procs: list[Process[Any]], name: str) -> None:
        self._procs = procs
        self._name = f"{name} [asyncio]"
        self.outcomes: list[Outcome | None] = [None] * len(procs)
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self.thread = threading.Thread(target=self._main, name=f"{name} [asyncio]", daemon=True)
        self.thread.start()

    async def _one(self, i: int) -> None:
        self.outcomes[i] = await aexecute(self._procs[i])

    async def _all(self) -> None:
        # The loop's main task waits for its processes: a joining participant, so a network
        # whose async processes all block is reported as deadlocked (docs/design.md).
        pid = _participant_enter(self._name, True)
        try:
            await asyncio.gather(*(self._one(i) for i in range(len(self._procs))))
        finally:
            _participant_exit(pid)

    def _main(self) -> None:
        try:
            asyncio.run(self._all())
        except BaseException as exc:  # noqa: BLE001 - reported as the processes' failure
            for i, out in enumerate(self.outcomes):
                if out is None:
                    err = RuntimeError(f"the event loop hosting the process failed: {exc!r}")
                    err.add_note(f"in process {self._procs[i].name!r}")
                    self.outcomes[i] = Outcome(error=err)
        finally:
            self._finished()

    def add_done_callback(self, fn: Callable[[], None]) -> None:
        """Calls ``fn()`` (in the host's thread) when it ends; at once if it has ended."""
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(fn)
                return
        fn()

    def _finished(self) -> None:
        with self._lock:
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            cb()

    def task(self, i: int) -> HostedTask:
        """The view of process ``i`` that ``Handle`` keeps."""
        return HostedTask(self, i)

    def wait(self, timeout: float | None) -> bool:
        if not self._done.wait(timeout):
            return False
        self.thread.join()
        return True

    @property
    def alive(self) -> bool:
        return not self._done.is_set()


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
