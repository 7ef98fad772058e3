"""Composition: ``Par``, ``Seq``, ``Spawn`` and the handles of running networks.

Invariants:
- A handle's processes all end before ``join`` returns or raises (except when interrupted by
  Ctrl-C, where the wait is bounded by ``INTERRUPT_GRACE`` after poisoning the network).
- Failures are collected, never lost: ``join``/``run`` raise one ``ExceptionGroup`` holding every
  failed process's exception, each with a note naming its process.
- Every running network is registered in ``_running`` until it ends, so Ctrl-C and interpreter
  exit can poison all of them.
- Greenlet processes of one network run on one greenlet scheduler in one thread of their own
  (``run``, ``start`` and ``Spawn`` alike).
- ``async def`` processes run on the asyncio backend: from ``run``/``start`` on one event loop
  in one thread of their own, from ``await arun()`` as tasks on the running loop; thread
  processes run on threads either way, and the rules above hold for the mix. Those on the
  native coroutine backend run on one coroutine scheduler in one thread of their own, from
  ``arun`` too.
- Those threads (and the event loop) are kept host threads (``_backends/_pool.py``): started
  by the first network that needs one, reused by the later ones, each serving one network at
  a time; a joined network leaves them idle, never running anything of its own.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Generic, Protocol, TypeVar

from . import _backends
from ._backends._asyncio import LoopHost, LoopTask
from ._backends._coroutine import CoroutineHost
from ._backends._greenlet import GreenletHost
from ._backends._hosted import HostedTask, ThreadHost
from ._backends._os import OsHost
from ._backends._thread import ThreadTask
from ._io import io
from ._native import (
    _in_scheduler,
    _joining,
    _participant_enter,
    _participant_exit,
    _stop_watchdog,
)
from ._process import Outcome, Process, ProcessLike, as_process, failure_group, run_sync
from ._shutdown import Endpoint, poison_all

__all__ = ["INTERRUPT_GRACE", "Handle", "Par", "Seq", "Spawn"]

T = TypeVar("T")
#: The result of one process of a Par/Seq/Spawn (None when it ended by poison or retire).
R = TypeVar("R")

#: Seconds a network gets to wind down after Ctrl-C or interpreter exit poisoned it.
INTERRUPT_GRACE = 2.0

_running: set[Handle[Any]] = set()
_running_lock = threading.Lock()


_prune_at = 64

#: Observability hook: ``ferrocsp graph`` (``_graph.record``) sets it to see every network start.
_on_start: Callable[[Handle[Any]], None] | None = None


def _register(handle: Handle[Any]) -> None:
    # Handles nobody joins would pile up here: drop the finished ones whenever the set has
    # doubled since the last sweep (amortised O(1) per handle).
    global _prune_at
    with _running_lock:
        _running.add(handle)
        if len(_running) >= _prune_at:
            for h in [h for h in _running if not h.alive]:
                _running.discard(h)
            _prune_at = max(64, 2 * len(_running))
    if _on_start is not None:
        _on_start(handle)


def _poison_running() -> None:
    with _running_lock:
        handles = list(_running)
    for h in handles:
        h.poison()


def _shutdown_at_exit() -> None:
    with _running_lock:
        handles = list(_running)
    for h in handles:
        h.poison()
    deadline = time.monotonic() + INTERRUPT_GRACE
    for h in handles:
        if not h._wait_until(deadline):
            h._kill_os()


# Registered first so that it runs last (atexit is LIFO): once the networks have wound down,
# the deadlock watchdog is kept out of Python for the interpreter's finalization.
atexit.register(_stop_watchdog)
atexit.register(_shutdown_at_exit)


def _failures(
    label: str, processes: list[Process[Any]], errors: list[BaseException], path: str | None
) -> None:
    if errors:
        raise failure_group(label, len(processes), errors, path)


def _label(kind: str, name: str | None, default: str) -> tuple[str, str, str | None]:
    """(name, label, path label) of a Par/Seq: a given name shows as ``Par 'name'`` and is a
    level of the path notes; the default name ``Par(p, q)`` shows as itself and is not."""
    if name is None:
        return default, default, None
    if not isinstance(name, str):
        raise TypeError(f"{kind} name must be a str, not {type(name).__name__}")
    return name, f"{kind} {name!r}", f"{kind} {name!r}"


class _Task(Protocol):
    @property
    def alive(self) -> bool: ...
    @property
    def outcome(self) -> Outcome | None: ...
    def wait(self, timeout: float | None) -> bool: ...


def _backends_of(processes: list[Process[Any]], par_backend: str | None) -> list[str]:
    """The backend of each process (validated before anything starts)."""
    fallback: str | None = None  # the default, resolved once per network, not per process
    kinds = []
    for proc in processes:
        backend = proc.in_network(par_backend)
        if backend is None:
            # ``coroutine`` chooses the backend of the async def processes; plain functions
            # beside them run on the default one.
            backend = None if par_backend == "coroutine" else par_backend
            if backend is None:
                if fallback is None:
                    fallback = _backends.resolve()
                backend = fallback
        elif proc.is_async:
            kinds.append(backend)  # an async def process: asyncio or coroutine
            continue
        if backend in ("asyncio", "coroutine"):
            raise ValueError(
                f"backend {backend!r} runs async def processes; process {proc.name!r} is a "
                "plain function (use 'thread')"
            )
        kinds.append(backend)
    return kinds


class Handle(Generic[T]):
    """A running ``Par`` or ``Spawn``: wait for it, look at it, or poison it."""

    def __init__(
        self,
        name: str,
        processes: list[Process[Any]],
        backend: str | None,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        label: str | None = None,
        path: str | None = None,
    ) -> None:
        self.name = name
        self._label = label if label is not None else name
        self._path = path
        self._processes = processes
        self._single = False
        self._interrupted = False
        kinds = _backends_of(processes, backend)  # validates before starting
        tasks: list[_Task | None] = [None] * len(processes)
        hosts: list[ThreadHost] = []  # constructed here, started together below
        # OS processes first: pickling them moves their channels to shared memory before any
        # in-process process can block on one (which would then have to follow the move).
        self._os_host: OsHost | None = None
        osp = [i for i, k in enumerate(kinds) if k == "os"]
        if osp:
            self._os_host = OsHost([processes[i] for i in osp], name)
            hosts.append(self._os_host)
            for j, i in enumerate(osp):
                tasks[i] = self._os_host.task(j)
        aio = [i for i, k in enumerate(kinds) if k == "asyncio"]
        if aio and loop is None:
            host = LoopHost([processes[i] for i in aio], name)
            hosts.append(host)
            for j, i in enumerate(aio):
                tasks[i] = host.task(j)
        elif aio and loop is not None:
            for i in aio:
                tasks[i] = LoopTask(processes[i], loop)
        coros = [i for i, k in enumerate(kinds) if k == "coroutine"]
        if coros:
            chost = CoroutineHost([processes[i] for i in coros], name)
            hosts.append(chost)
            for j, i in enumerate(coros):
                tasks[i] = chost.task(j)
        green = [i for i, k in enumerate(kinds) if k == "greenlet"]
        if green:
            ghost = GreenletHost([processes[i] for i in green], name)
            hosts.append(ghost)
            for j, i in enumerate(green):
                tasks[i] = ghost.task(j)
        for i, p in enumerate(processes):
            if tasks[i] is None:
                tasks[i] = thread_task = ThreadTask(p)
                hosts.append(thread_task)
        self._tasks: list[_Task] = [t for t in tasks if t is not None]
        try:
            for h in hosts:
                h.start()
        except BaseException:
            # Ctrl-C while a start waited for its thread (or a child failed to start): the
            # hosts already launched run processes nobody will join. Wind them down as join
            # does on Ctrl-C, so nothing is left behind (docs/design.md, "Ctrl-C").
            self.poison()
            deadline = time.monotonic() + INTERRUPT_GRACE
            for h in hosts:
                if h.launched:
                    h.wait(max(0.0, deadline - time.monotonic()))
            self._kill_os()
            raise
        _register(self)

    @property
    def alive(self) -> bool:
        """Whether any of its processes is still running."""
        return any(t.alive for t in self._tasks)

    def _wait_until(self, deadline: float | None) -> bool:
        for t in self._tasks:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not t.wait(remaining):
                return False
        with _running_lock:
            _running.discard(self)
        return True

    def join(self, timeout: float | None = None) -> T:
        """Waits for every process; returns the result (see ``result``).

        Raises ``TimeoutError`` if ``timeout`` seconds pass first (the processes keep running),
        an ``ExceptionGroup`` of the failures if processes failed. On Ctrl-C, poisons every
        running network, waits up to ``INTERRUPT_GRACE`` seconds, and re-raises.
        """
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, int | float):
                raise TypeError(f"timeout must be a number or None, not {type(timeout).__name__}")
            if not timeout >= 0:
                raise ValueError(f"timeout must be >= 0 seconds, got {timeout}")
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            if timeout is not None:
                return self._join(deadline, timeout)
            # Waiting for its own processes, with no timeout: a deadlock-detection participant
            # that is stuck until they end (see docs/design.md, "Deadlock detection").
            _joining(True)
            try:
                return self._join(deadline, timeout)
            finally:
                _joining(False)
        except KeyboardInterrupt:
            # Wherever in here it landed (the wait, or the bookkeeping around it).
            self._on_interrupt()
            raise

    def _on_interrupt(self) -> None:
        """Ctrl-C while this network runs and its caller waits for it: poisons every running
        network, waits up to ``INTERRUPT_GRACE`` seconds, kills OS children still running.
        Once per handle (``run`` and ``join`` may both see the same interrupt)."""
        if self._interrupted:
            return
        self._interrupted = True
        _poison_running()
        if not self._wait_until(time.monotonic() + INTERRUPT_GRACE):
            self._kill_os()

    def _join(self, deadline: float | None, timeout: float | None) -> T:
        if _in_scheduler():
            # Joining from a process greenlet: wait on a worker thread so the greenlets
            # sharing this scheduler keep running (Ctrl-C never reaches a scheduler thread).
            if not io(self._wait_until, deadline):
                raise TimeoutError(f"{self.name} still running after {timeout} s")
            return self.result
        if not self._wait_until(deadline):
            raise TimeoutError(f"{self.name} still running after {timeout} s")
        return self.result

    @property
    def result(self) -> T:
        """The result: a ``Par``'s list of return values, a ``Spawn``'s single value.

        Raises the failures (as ``join`` does) if processes failed, and ``RuntimeError`` while
        processes are still running.
        """
        if self.alive:
            raise RuntimeError(f"{self.name} is still running")
        outcomes = [t.outcome for t in self._tasks]
        errors = [o.error for o in outcomes if o is not None and o.error is not None]
        _failures(self._label, self._processes, errors, self._path)
        values: list[Any] = [None if o is None else o.value for o in outcomes]
        result: Any = values[0] if self._single else values
        return result  # type: ignore[no-any-return]

    async def _await_all(self, timeout: float | None = None) -> bool:
        """Waits, without blocking the loop, for every process started with ``loop=``."""
        loop = asyncio.get_running_loop()
        waits: list[asyncio.Future[Any]] = []
        for t in self._tasks:
            if isinstance(t, LoopTask):
                waits.append(t.task)
            elif isinstance(t, ThreadTask | HostedTask):
                fut: asyncio.Future[None] = loop.create_future()

                def done(fut: asyncio.Future[None] = fut) -> None:
                    loop.call_soon_threadsafe(_resolve, fut)

                t.add_done_callback(done)
                waits.append(fut)
        if waits:
            _, pending = await asyncio.wait(waits, timeout=timeout)
            if pending:
                return False
        for t in self._tasks:
            if isinstance(t, ThreadTask | HostedTask):
                # Its done-callback ran in its job's last moments: wait for the job's end, so
                # that a finished ``arun`` leaves nothing running behind (its thread is idle,
                # as ``ThreadHost.wait`` promises for ``join``).
                t.wait(None)
        with _running_lock:
            _running.discard(self)
        return True

    def _kill_os(self) -> None:
        # OS processes that outlived the grace period are killed and reaped: nothing is left
        # behind (a thread cannot be killed; an OS process can).
        if self._os_host is not None and self._os_host.launched:
            self._os_host.kill()
            self._os_host.wait(2 * INTERRUPT_GRACE)  # a killed child is reaped at once

    def poison(self) -> None:
        """Poisons every channel its processes were given, so the network shuts down."""
        for p in self._processes:
            poison_all(p.endpoints())

    def __repr__(self) -> str:
        state = "running" if self.alive else "finished"
        return f"<Handle {self.name} {state}>"


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _processes(items: Iterable[object], what: str) -> list[Process[Any]]:
    return [as_process(p, f"{what} argument {i}") for i, p in enumerate(items)]


def _endpoints(processes: list[Process[Any]]) -> list[Endpoint]:
    seen: set[int] = set()
    out: list[Endpoint] = []
    for p in processes:
        for e in p.endpoints():
            if id(e) not in seen:
                seen.add(id(e))
                out.append(e)
    return out


class Par(Generic[R]):
    """Runs processes in parallel; ``run()`` returns their results in order.

    A process that fails poisons its channels so its peers stop; ``run()`` then waits for every
    process and raises an ``ExceptionGroup`` of the failures, each noting its process.

    A ``Par`` is itself a process: nested in another ``Par``, it runs its processes on its own
    backend wherever the outer one puts it (``Par(Par(p, q, backend="greenlet"), ...,
    backend="os")`` multiplexes greenlets inside OS processes), and its result is its list of
    results. ``name`` names it in messages and notes (``Par 'name'``; the default name is
    ``Par(p, q, ...)``): the note of a failed process gives its path through the *named*
    networks it is in, e.g. ``in process 'worker' (in Par 'outer' > Par 'inner')``.

    Typed: ``Par(p, q).run()`` is a ``list[R | None]`` where ``R`` is the processes' result
    type (their common supertype when they differ); ``None`` stands for a process that
    ended by poison or retire.
    """

    def __init__(
        self,
        *processes: ProcessLike[R],
        backend: _backends.Backend | None = None,
        name: str | None = None,
    ) -> None:
        self.processes = _processes(processes, "Par")
        self.backend = None if backend is None else _backends.check(backend)
        names = ", ".join(p.name for p in self.processes[:4])
        more = ", ..." if len(self.processes) > 4 else ""
        #: ``name`` if given, else ``Par(p, q, ...)``; ``label`` is how messages show it,
        #: ``path_label`` how path notes do (None: unnamed, not in paths).
        self.name, self.label, self.path_label = _label("Par", name, f"Par({names}{more})")

    def start(self) -> Handle[list[R | None]]:
        """Starts every process and returns at once with a handle."""
        return Handle(
            self.name, self.processes, self.backend, label=self.label, path=self.path_label
        )

    def run(self) -> list[R | None]:
        """Runs every process to the end; returns their results in order.

        ``async def`` processes run together on one event loop in a dedicated thread.
        """
        handle = self.start()  # a Ctrl-C while it starts winds down what it started
        try:
            return handle.join()
        except KeyboardInterrupt:
            # Also one that landed between the start and the join's own handler.
            handle._on_interrupt()
            raise

    async def arun(self) -> list[R | None]:
        """``await Par(...).arun()``: runs every process to the end from asyncio code.

        ``async def`` processes run as tasks on the running loop, the others on threads;
        returns their results in order, raises an ``ExceptionGroup`` of the failures. If the
        awaiting task is cancelled (Ctrl-C under ``asyncio.run``), the network is poisoned,
        its processes get up to ``INTERRUPT_GRACE`` seconds to end, and the cancellation
        propagates.
        """
        h: Handle[list[R | None]] = Handle(
            self.name,
            self.processes,
            self.backend,
            loop=asyncio.get_running_loop(),
            label=self.label,
            path=self.path_label,
        )
        pid = _participant_enter(self.name, True)  # waits for its own processes
        try:
            await h._await_all()
        except asyncio.CancelledError:
            h.poison()
            if not await h._await_all(INTERRUPT_GRACE):
                for t in h._tasks:
                    if isinstance(t, LoopTask):
                        t.task.cancel()
            raise
        finally:
            _participant_exit(pid)
        return h.result

    def _as_process(self) -> Process[list[R | None]]:
        # Nested in another Par/Seq: one process holding all its processes' channels.
        return Process(self.run, name=self.name, endpoints=_endpoints(self.processes))

    def __repr__(self) -> str:
        return f"<{self.name}>"


class Seq(Generic[R]):
    """Runs processes one after another in the calling thread; ``run()`` returns the results.

    A failing process stops the sequence: ``run()`` raises an ``ExceptionGroup`` holding it.
    A ``Seq`` is itself a process (it nests in a ``Par``); ``name`` as for ``Par``.
    """

    def __init__(self, *processes: ProcessLike[R], name: str | None = None) -> None:
        self.processes = _processes(processes, "Seq")
        names = ", ".join(p.name for p in self.processes[:4])
        default = f"Seq({names}{', ...' if len(self.processes) > 4 else ''})"
        #: ``name`` if given, else ``Seq(p, q, ...)``; ``label``/``path_label`` as for Par.
        self.name, self.label, self.path_label = _label("Seq", name, default)

    def run(self) -> list[R | None]:
        """Runs the processes in order; returns their results."""
        results: list[R | None] = []
        for p in self.processes:
            out = run_sync(p)
            if out.error is not None:
                _failures(self.label, self.processes, [out.error], self.path_label)
            results.append(out.value)
        return results

    def _as_process(self) -> Process[list[R | None]]:
        return Process(self.run, name=self.name, endpoints=_endpoints(self.processes))

    def __repr__(self) -> str:
        return f"<{self.name}>"


def Spawn(  # noqa: N802 - CSP name
    process: ProcessLike[R], *, backend: _backends.Backend | None = None
) -> Handle[R | None]:
    """Starts one process without waiting; returns its handle (``join()`` gives its value,
    ``None`` if it ended by poison or retire)."""
    proc = as_process(process, "Spawn argument")
    if backend is not None:
        _backends.check(backend)
    h: Handle[R | None] = Handle(f"Spawn({proc.name})", [proc], backend)
    h._single = True
    return h
