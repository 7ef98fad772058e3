"""The greenlet backend: plain-function processes as greenlets on one scheduler thread.

Invariants:
- The greenlet processes of one network run on one native scheduler (``_native._Scheduler``)
  in one dedicated daemon thread (``GreenletHost``), from ``Par.run`` as from ``Par.start`` and
  ``Spawn``; ``wait`` returns True only after that thread has ended, so a joined network leaves
  nothing behind. ``join`` waits on the host as on any thread, so Ctrl-C poisons and joins as
  for threads.
- Every process runs through ``_process.execute``, so shutdown rules match the threads'.
- A blocking channel operation in a process greenlet switches to the other greenlets; a
  blocking call that is not a channel operation blocks the whole scheduler unless wrapped in
  ``ferrocsp.io``.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from .._native import _Scheduler
from .._process import Outcome, Process, execute
from ._hosted import HostedTask

__all__ = ["GreenletHost"]


class GreenletHost:
    """Runs plain-function processes as greenlets on one scheduler in its own daemon thread."""

    __slots__ = ("_callbacks", "_done", "_lock", "_procs", "outcomes", "thread")

    def __init__(self, procs: list[Process[Any]], name: str) -> None:
        self._procs = procs
        self.outcomes: list[Outcome | None] = [None] * len(procs)
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self.thread = threading.Thread(target=self._main, name=f"{name} [greenlet]", daemon=True)
        self.thread.start()

    def _one(self, i: int) -> None:
        self.outcomes[i] = execute(self._procs[i])

    def _main(self) -> None:
        try:
            sched = _Scheduler()
            for i in range(len(self._procs)):
                sched.spawn(functools.partial(self._one, i))
            sched.run()
        except BaseException as exc:  # noqa: BLE001 - reported as the processes' failure
            for i, out in enumerate(self.outcomes):
                if out is None:
                    err = RuntimeError(
                        f"the greenlet scheduler hosting the process failed: {exc!r}"
                    )
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
