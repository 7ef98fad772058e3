"""Processes run on a daemon thread of their own: alone (threads) or several on one scheduler
(an event loop, a greenlet hub). The thread is a kept one (``_pool.py``): started by the
first run that needs it, reused by the next ones.

Invariants:
- ``ThreadHost.wait`` returns True only after the host's job has ended on its thread (its
  done-callbacks included), so a joined network leaves nothing running behind: its threads
  have ended or are parked idle in the pool.
- Every process of a host has an outcome once the host has ended: if the host itself fails
  (its event loop or scheduler breaks), each process without one gets that failure, noted with
  its name, so ``Par`` still reports every process.
- Done-callbacks run exactly once, in the host's thread, or at once if it has already ended.
- Constructing a host starts nothing; ``start`` does. So whoever starts several hosts holds
  every one of them before the first runs, and can wind all of them down if a start is
  interrupted (Ctrl-C while ``Thread.start`` waits for a new thread).
- The main thread never sleeps in ``wait`` for longer than ``SIGNAL_SLICE``: a SIGINT that
  the kernel handed to another thread only sets Python's flag, which the main thread sees
  between two sleeps, not in one (Ctrl-C must always reach ``join``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from .._process import Outcome, Process, note_process
from . import _pool

__all__ = ["SIGNAL_SLICE", "HostedTask", "ThreadHost"]

#: The longest sleep of the main thread in ``wait`` before Python's signal handlers run: a
#: process-directed SIGINT may go to any thread (one running at that instant, say), and then
#: nothing wakes a main thread asleep in a lock wait. The native waits use the same slice.
SIGNAL_SLICE = 0.05

#: Guards every host's done-callbacks (rare: ``arun`` only), so a host needs no lock of its own.
_callbacks_lock = threading.Lock()


class ThreadHost:
    """Runs ``procs`` on one daemon thread; subclasses say how (``_run``)."""

    #: Names what hosts the processes, for the message when the host itself fails.
    what = "the thread"

    __slots__ = (
        "_callbacks",
        "_callbacks_taken",
        "_done",
        "_procs",
        "finished",
        "launched",
        "name",
        "outcomes",
    )

    def __init__(self, procs: list[Process[Any]], thread_name: str) -> None:
        self._procs = procs
        self.outcomes: list[Outcome | None] = [None] * len(procs)
        # A latch, not an Event: one lock per host, and every waiter passes it on (``wait``).
        # Held from here until the job has ended, done-callbacks included.
        self._done = threading.Lock()
        self._done.acquire()
        #: True once the job has ended, done-callbacks included (before ``_done`` opens).
        self.finished = False
        self._callbacks_taken = False  # under _callbacks_lock: the callbacks have been taken
        self._callbacks: list[Callable[[], None]] = []
        #: The name its thread has while it runs this host.
        self.name = thread_name
        #: Whether its thread was asked to start: a start interrupted while it waits for the
        #: new thread has still launched it, and only a launched host will ever end.
        self.launched = False

    def start(self) -> None:
        """Starts the host's job on a kept thread (and whatever else a subclass needs).

        The thread is a daemon: a process stuck in pure Python code must not keep the
        interpreter alive after Ctrl-C; blocked channel operations are woken by poison.
        """
        self.launched = True
        _pool.submit(self._main, self.name)

    def _run(self) -> None:
        """Runs every process, storing its outcome in ``self.outcomes``."""
        raise NotImplementedError

    def _main(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - reported as the processes' failure
            for i, out in enumerate(self.outcomes):
                if out is None:
                    err = RuntimeError(f"{self.what} hosting the process failed: {exc!r}")
                    note_process(err, self._procs[i].name)
                    self.outcomes[i] = Outcome(error=err)
        finally:
            with _callbacks_lock:
                self._callbacks_taken = True
                callbacks, self._callbacks = self._callbacks, []
            try:
                for cb in callbacks:
                    cb()
            finally:
                self.finished = True
                self._done.release()

    def add_done_callback(self, fn: Callable[[], None]) -> None:
        """Calls ``fn()`` (in the host's thread) when it ends; at once if it has ended."""
        with _callbacks_lock:
            if not self._callbacks_taken:
                self._callbacks.append(fn)
                return
        fn()

    def wait(self, timeout: float | None) -> bool:
        """Waits for the host to end (interruptible by Ctrl-C in the main thread)."""
        if self.finished:
            return True
        if threading.current_thread() is not threading.main_thread():
            if not self._done.acquire(timeout=-1 if timeout is None else timeout):
                return False
        else:
            deadline = None if timeout is None else time.monotonic() + timeout
            # Back in Python between slices, where a pending signal's handler runs.
            while not self._done.acquire(
                timeout=SIGNAL_SLICE
                if deadline is None
                else max(0.0, min(SIGNAL_SLICE, deadline - time.monotonic()))
            ):
                if deadline is not None and time.monotonic() >= deadline:
                    return False
        self._done.release()  # for the next waiter
        return True

    @property
    def alive(self) -> bool:
        return not self.finished

    def task(self, i: int) -> HostedTask:
        """The view of process ``i`` that ``Handle`` keeps."""
        return HostedTask(self, i)


class HostedTask:
    """One process of a host: its outcome slot, and the host's liveness and wait."""

    __slots__ = ("_host", "_i")

    def __init__(self, host: ThreadHost, i: int) -> None:
        self._host = host
        self._i = i

    @property
    def outcome(self) -> Outcome | None:
        return self._host.outcomes[self._i]

    @property
    def alive(self) -> bool:
        return self._host.alive

    def wait(self, timeout: float | None) -> bool:
        return self._host.wait(timeout)

    def add_done_callback(self, fn: Callable[[], None]) -> None:
        """Calls ``fn()`` when the host ends (in its thread); at once if it has ended."""
        self._host.add_done_callback(fn)
