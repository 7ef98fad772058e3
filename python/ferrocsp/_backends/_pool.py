"""Kept host threads: the daemon threads that run thread processes, greenlet schedulers and
event loops, reused from one run to the next instead of started per run.

Starting an OS thread (and, for asyncio, an event loop) is most of what a small ``Par`` costs;
a program that runs networks again and again pays it once here. A thread that finished its
job parks, idle, until the next job (a ``Par``, ``Spawn`` or ``start`` hands it one) or until
it has been idle ``IDLE_TIMEOUT`` seconds, when it exits.

Invariants:
- A worker runs one job at a time; a job runs alone on its worker (a network's event loop or
  scheduler is never shared with another network's), in a fresh ``contextvars.Context``, so
  nothing set in one job's context is seen by the next (as on a new thread).
- A worker is in ``_idle`` only while parked with no job; whoever pops it owns it and hands
  it exactly one job (or ``None``: exit).
- An idle worker is ignored by deadlock detection and a busy one never is: the worker marks
  itself idle (``_idle_thread``) after its job ended, and whoever hands it a job marks it busy
  before the hand-off, while that caller itself still runs (see ``_idle_thread``'s argument);
  a worker that exits is no longer ignored (its thread ident may be reused).
- At most ``MAX_IDLE`` workers are kept idle; more exit at once.
- Interpreter exit (``atexit``, after the running networks were wound down) and the idle
  timeout end idle workers, each closing the event loop it kept; a child made by ``fork``
  starts with no workers (its parent's threads do not exist there) and never closes the loops
  it inherited (that would unregister the parent's self-pipes from the shared epoll instance).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import os
import threading
import time
from collections.abc import Callable

from .._native import _freeze_hubs, _idle_thread

__all__ = [
    "IDLE_TIMEOUT",
    "MAX_IDLE",
    "Worker",
    "current",
    "idle_threads",
    "release_idle",
    "submit",
]

#: Seconds an idle worker waits for a job before it exits.
IDLE_TIMEOUT = 10.0
#: Idle workers kept at most: the threads of a 1000-process thread network are all kept.
MAX_IDLE = 1024
#: The name an idle worker's thread shows (``threading.enumerate()``, dumps).
IDLE_NAME = "ferrocsp-idle"

_lock = threading.Lock()
_idle: list[Worker] = []  # a stack: the most recently parked (warmest) worker goes first
_closed = False
_local = threading.local()


class Worker:
    """One kept host thread, and what it keeps between jobs (an event loop)."""

    __slots__ = ("_wake", "ident", "job", "loop", "loop_debug", "loop_policy", "thread")

    def __init__(self, job: Callable[[], object], name: str) -> None:
        self.job: Callable[[], object] | None = job
        self._wake = threading.Lock()
        self._wake.acquire()  # released once per job handed over
        self.ident = 0
        #: The event loop the asyncio backend keeps on this thread, the policy that made it
        #: and its debug flag then (``_asyncio.py``); None until a job needs one.
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_policy: object = None
        self.loop_debug = False
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)

    def _main(self) -> None:
        self.ident = threading.get_ident()
        _local.worker = self
        try:
            job = self.job
            while job is not None:
                self.job = None
                contextvars.Context().run(job)
                del job
                job = self._park()
        finally:
            _idle_thread(self.ident, False)
            self.close_loop()

    def _park(self) -> Callable[[], object] | None:
        """Waits idle for the next job; None: exit (timed out, pool full or closed)."""
        self.thread.name = IDLE_NAME
        _idle_thread(self.ident, True)
        with _lock:
            if _closed or len(_idle) >= MAX_IDLE:
                return None
            _idle.append(self)
        if not self._wake.acquire(timeout=IDLE_TIMEOUT):
            with _lock:
                try:
                    _idle.remove(self)
                except ValueError:
                    pass  # popped meanwhile: its job is on the way
                else:
                    return None
            self._wake.acquire()
        return self.job

    def hand(self, job: Callable[[], object] | None, name: str) -> None:
        """Gives this worker, popped from ``_idle``, its next job (None: exit)."""
        self.job = job
        if job is not None:
            self.thread.name = name
            _idle_thread(self.ident, False)  # busy before it can run (module invariant)
        self._wake.release()

    def close_loop(self) -> None:
        """Closes the event loop kept on this thread, if any (its thread, or after fork)."""
        loop, self.loop = self.loop, None
        if loop is not None and not loop.is_closed() and not loop.is_running():
            with contextlib.suppress(Exception):
                loop.close()


def submit(job: Callable[[], object], name: str) -> None:
    """Runs ``job()`` on an idle kept worker, renamed ``name``, or on a new thread so named."""
    with _lock:
        w = _idle.pop() if _idle else None
    if w is not None:
        w.hand(job, name)
        return
    w = Worker(job, name)
    w.thread.start()


def current() -> Worker | None:
    """The worker running the calling code, if it runs on one."""
    w: Worker | None = getattr(_local, "worker", None)
    return w


def idle_threads() -> list[threading.Thread]:
    """The threads of the workers parked idle now (for tests and dumps)."""
    with _lock:
        return [w.thread for w in _idle]


def release_idle(timeout: float = 1.0) -> int:
    """Ends every worker idle now and waits up to ``timeout`` seconds for their threads to
    end, each closing the event loop it kept; returns how many there were. Interpreter exit
    does this; so does the soak before it counts threads and descriptors, which must not
    move with how many workers happen to be kept (a bounded cache, not a leak)."""
    with _lock:
        idle = list(_idle)
        _idle.clear()
    for w in idle:
        w.hand(None, IDLE_NAME)
    deadline = time.monotonic() + timeout
    for w in idle:
        w.thread.join(max(0.0, deadline - time.monotonic()))
    return len(idle)


def _close() -> None:
    """Ends every idle worker and waits (briefly) until they have: interpreter exit."""
    global _closed
    with _lock:
        _closed = True
    release_idle()


#: The event loops a child made by ``fork`` inherited from its parent's kept workers. Never
#: closed here, and kept referenced so that garbage collection does not close them either:
#: closing a selector loop unregisters its self-pipe from its epoll instance, which the child
#: shares with the parent (fork copies the descriptor, not the instance), and the parent's
#: loop would then never again be woken from another thread. The child's copies of their
#: descriptors are a few per kept loop, freed when the child exits or execs.
_inherited_loops: list[asyncio.AbstractEventLoop] = []


def _after_fork_in_child() -> None:
    global _lock, _idle
    _lock = threading.Lock()
    inherited, _idle = _idle, []
    for w in inherited:
        loop, w.loop = w.loop, None
        if loop is not None:
            _inherited_loops.append(loop)


# Registered at import, before ``_par`` registers its exit handler: atexit runs handlers last
# in, first out, so the idle workers end after the running networks were wound down, and
# the greenlet hubs are frozen after everything else (``detach.rs``: a greenlet still running
# when the interpreter finalizes would abort the process).
atexit.register(_freeze_hubs, 1.0)
atexit.register(_close)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
