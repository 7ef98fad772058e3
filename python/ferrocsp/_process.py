"""Processes: ``@process`` turns a function into a factory of unstarted ``Process`` values.

Invariants:
- A ``Process`` is a value until it runs: function, arguments, name, backend; running it twice
  runs the function twice.
- ``_ended`` is the one place that turns how a process ended into an ``Outcome`` and applies
  DESIGN's shutdown rules (clean end on poison/retire, poison on failure), whatever the backend;
  ``execute`` (plain functions) and ``aexecute`` (``async def``) both go through it.
- An ``async def`` process has backend ``"asyncio"`` (the default) or ``"coroutine"``, and only
  it has one of those.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, cast, overload

from . import _backends, _shm, _trace
from ._backends import Backend
from ._errors import ChannelPoisoned, ChannelRetired
from ._flatcall import call
from ._fnref import FnRef
from ._native import _Participant, _participant_enter, _participant_exit, _set_process_name
from ._shutdown import Endpoint, channel_args, poison_all, retire_ends

__all__ = [
    "Composite",
    "Outcome",
    "Process",
    "ProcessLike",
    "aexecute",
    "as_process",
    "execute",
    "failure_group",
    "note_process",
    "process",
    "run_sync",
]

#: The process running in the current asyncio task (many share one thread); read by the
#: native module for error messages.
_async_name: ContextVar[str | None] = ContextVar("ferrocsp_process", default=None)
#: Its deadlock-detection record (``_native._participant_enter``); read natively.
_async_me: ContextVar[_Participant | None] = ContextVar("ferrocsp_participant", default=None)

P = ParamSpec("P")
R = TypeVar("R")
#: A Process only produces its result, so Process[int] is a Process[int | None] and a
#: Par of processes with different results is typed with their common supertype.
R_co = TypeVar("R_co", covariant=True)


class Process(Generic[R_co]):
    """An unstarted process: a function, its arguments, a name and a backend.

    Run it with ``Par``, ``Seq`` or ``Spawn``; ``proc.run()`` runs it in the calling thread.
    """

    __slots__ = ("_endpoints", "_given", "args", "backend", "fn", "kwargs", "name")

    def __init__(
        self,
        fn: Callable[..., R_co],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        name: str | None = None,
        backend: str | None = None,
        endpoints: list[Endpoint] | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"a process needs a callable, not {type(fn).__name__}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"process name must be a str, not {type(name).__name__}")
        self.fn = fn
        self.args = args
        self.kwargs = kwargs if kwargs is not None else {}
        self.name: str = name if name is not None else getattr(fn, "__name__", repr(fn))
        self.backend = _check_backend(fn, backend)
        #: The backend asked for (None: the one the network or the defaults choose).
        self._given = backend
        self._endpoints = endpoints

    def endpoints(self) -> list[Endpoint]:
        """The channels and ends this process holds: those among its arguments (a nested
        ``Par``/``Seq`` holds those of its processes)."""
        if self._endpoints is not None:
            return self._endpoints
        return channel_args(self.args, self.kwargs)

    @property
    def is_async(self) -> bool:
        """Whether this is an ``async def`` process (backend ``"asyncio"`` or ``"coroutine"``)."""
        return self.backend in ("asyncio", "coroutine")

    def in_network(self, par_backend: str | None) -> str | None:
        """The backend this process runs on in a network whose ``Par`` names ``par_backend``:
        its own if it asked for one; an ``async def`` process goes to ``"coroutine"`` when
        the network asks for it and stays on ``"asyncio"`` otherwise."""
        if self._given is None and self.backend == "asyncio" and par_backend == "coroutine":
            return "coroutine"
        return self.backend

    def run(self) -> R_co | None:
        """Runs the process in the calling thread, with the shutdown rules of ``Par``.

        An ``async def`` process runs on a new event loop (``asyncio.run``). Returns its result
        (``None`` if it ended by poison or retire); raises what it raised.
        """
        out = run_sync(self)
        if out.error is not None:
            raise out.error
        value: R_co | None = out.value
        return value

    def __repr__(self) -> str:
        return f"<Process {self.name!r}>"

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # A mobile process (DESIGN 2): its function by reference, through the @process
        # factory that a module-level decorated function is bound to under its name.
        fn = FnRef.of(self.fn)
        if fn is self.fn and _shm.is_crossing():
            _check_movable(self)
        return (_rebuild, (fn, self.args, self.kwargs, self.name, self._given, self._endpoints))


def _check_movable(proc: Process[Any]) -> None:
    """Raises a clear TypeError if ``proc``'s function cannot be pickled by reference (what
    pickle itself says about a lambda or a closure does not name the process)."""
    qualname = getattr(proc.fn, "__qualname__", "")
    if "<lambda>" in qualname:
        what = "a lambda"
    elif "<locals>" in qualname:
        what = "a closure (a function defined inside another function)"
    else:
        return
    raise TypeError(
        f"process {proc.name!r} cannot move to another OS process: its function {qualname} is "
        f"{what}, and functions cross OS processes by reference only; define it at module "
        "level (processes on backend='os' and processes sent over shared channels must)"
    )


def _rebuild(
    fn: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    name: str,
    backend: str | None,
    endpoints: list[Endpoint] | None,
) -> Process[Any]:
    if isinstance(fn, FnRef):
        fn = fn.resolve()
    return Process(fn, args, kwargs, name=name, backend=backend, endpoints=endpoints)


@dataclass(slots=True)
class Outcome:
    """How a process ended: a value, or an error to report."""

    value: Any = None
    error: BaseException | None = None


def _check_backend(fn: Callable[..., Any], backend: str | None) -> str | None:
    """The backend of a process made from ``fn``: ``"asyncio"`` for an ``async def`` unless
    it asks for ``"coroutine"``."""
    if backend is not None:
        _backends.check(backend)
    if inspect.iscoroutinefunction(fn):
        if backend not in (None, "asyncio", "coroutine"):
            raise ValueError(
                f"{getattr(fn, '__name__', fn)!r} is an async def function: it runs on the "
                f"'asyncio' or 'coroutine' backend, not {backend!r}"
            )
        return backend or "asyncio"
    if backend in ("asyncio", "coroutine"):
        raise ValueError(
            f"backend {backend!r} runs async def functions; {getattr(fn, '__name__', fn)!r} is "
            "a plain function (use 'thread')"
        )
    return backend


def _ended(proc: Process[Any], exc: BaseException) -> Outcome:
    """DESIGN's shutdown rules for a process that raised ``exc`` (shared by every backend)."""
    if isinstance(exc, ChannelPoisoned):
        poison_all(proc.endpoints())
        return Outcome()
    if isinstance(exc, ChannelRetired):
        retire_ends(proc.endpoints())
        return Outcome()
    # Anything else (cancellation included) is a failure: poison so the peers stop.
    poison_all(proc.endpoints())
    # A named nested Par/Seq (its ``run`` is the function) names itself as such.
    label = getattr(getattr(proc.fn, "__self__", None), "path_label", None)
    note_process(exc, proc.name, label=label if isinstance(label, str) else None)
    return Outcome(error=exc)


#: Attribute of an exception: ``[base note, enclosing networks outermost first, note now]``.
_WHERE = "_ferrocsp_where"
#: Attribute of an ExceptionGroup raised by a Par/Seq for its failed processes.
_GROUP = "_ferrocsp_group"


def note_process(exc: BaseException, name: str, suffix: str = "", label: str | None = None) -> None:
    """Adds the note naming the process ``exc`` ended, ``in process 'worker'`` (``label``
    replaces ``process 'worker'``); the networks it is nested in extend it (``extend_paths``)
    to ``in process 'worker' (in Par 'outer' > Par 'inner')``."""
    text = f"in {label or f'process {name!r}'}{suffix}"
    exc.add_note(text)
    # An exception type without attributes keeps the plain note.
    with contextlib.suppress(AttributeError):
        setattr(exc, _WHERE, [text, [], text])


def failure_group(
    label: str, total: int, errors: list[BaseException], path: str | None = None
) -> BaseExceptionGroup[Any]:
    """The group a network labelled ``label`` raises for the ``errors`` of its ``total``
    processes. A named network passes ``path`` (``Par 'name'``): each failed process's note,
    and those of the processes of the networks nested in it, gain it as the outermost level
    of their path; unnamed networks leave the notes as they are."""
    if path is not None:
        for exc in errors:
            _extend(exc, path)
    group = BaseExceptionGroup(f"{label}: {len(errors)} of {total} processes failed", errors)
    setattr(group, _GROUP, True)
    return group


def _extend(exc: BaseException, label: str) -> None:
    where = getattr(exc, _WHERE, None)
    notes = getattr(exc, "__notes__", None)
    if isinstance(where, list) and len(where) == 3 and isinstance(notes, list):
        base, path, now = where
        path.insert(0, label)
        text = f"{base} (in {' > '.join(path)})"
        for i, note in enumerate(notes):
            if note == now:
                notes[i] = text
                where[2] = text
                break
    if isinstance(exc, BaseExceptionGroup) and getattr(exc, _GROUP, False):
        for inner in exc.exceptions:
            _extend(inner, label)


def execute(proc: Process[Any]) -> Outcome:
    """Runs plain-function ``proc`` in the calling thread and applies the shutdown rules."""
    if _trace.ENABLED:
        return _trace.run_traced(proc, _execute)  # type: ignore[no-any-return]
    return _execute(proc)


def _execute(proc: Process[Any]) -> Outcome:
    previous = _set_process_name(proc.name)
    try:
        return Outcome(value=call(proc.fn, proc.args, proc.kwargs))  # see _flatcall
    except KeyboardInterrupt as exc:
        if threading.current_thread() is not threading.main_thread():
            # Raised by the process itself on a thread of a network (Ctrl-C only reaches the
            # main thread): a failure like any other, as on asyncio, so it ends this process
            # only; re-raised, it would end a greenlet scheduler and every process on it.
            return _ended(proc, exc)
        # Ctrl-C in a process run by the main thread (Seq, Process.run): stop the peers, and
        # let the interrupt propagate as itself rather than as a process failure.
        poison_all(proc.endpoints())
        raise
    except BaseException as exc:  # noqa: BLE001 - a failing process must never hang its peers
        return _ended(proc, exc)
    finally:
        _set_process_name(previous)


async def aexecute(proc: Process[Any]) -> Outcome:
    """Runs ``async def`` process ``proc`` in the current task; the twin of ``execute``."""
    if _trace.ENABLED:
        return await _trace.arun_traced(proc, _aexecute)  # type: ignore[no-any-return]
    return await _aexecute(proc)


async def _aexecute(proc: Process[Any]) -> Outcome:
    token = _async_name.set(proc.name)
    me = _participant_enter(proc.name)  # deadlock detection: this task is a participant
    me_token = _async_me.set(me)
    try:
        return Outcome(value=await proc.fn(*proc.args, **proc.kwargs))
    except BaseException as exc:  # noqa: BLE001 - a failing process must never hang its peers
        return _ended(proc, exc)
    finally:
        _participant_exit(me)
        _async_me.reset(me_token)
        _async_name.reset(token)


def cexecute(proc: Process[Any]) -> Coroutine[Any, Any, Outcome]:
    """The coroutine running ``async def`` process ``proc`` on the native coroutine backend."""
    if _trace.ENABLED:
        return _trace.arun_traced(proc, _cexecute)
    return _cexecute(proc)


async def _cexecute(proc: Process[Any]) -> Outcome:
    # The task itself carries the name and the deadlock record (native, one per coroutine
    # task): context variables would be shared by every coroutine of the scheduler's thread.
    _set_process_name(proc.name)
    try:
        return Outcome(value=await proc.fn(*proc.args, **proc.kwargs))
    except BaseException as exc:  # noqa: BLE001 - a failing process must never hang its peers
        return _ended(proc, exc)


async def _amain(proc: Process[Any]) -> Outcome:
    """The main task of ``run_sync`` for an async process."""
    out = await aexecute(proc)
    task = asyncio.current_task()
    if isinstance(out.error, asyncio.CancelledError) and task is not None and task.cancelling():
        # Ctrl-C under ``asyncio.run`` cancels this task: the process ended by that (its peers
        # are poisoned); propagating the cancellation lets ``asyncio.run`` raise
        # KeyboardInterrupt, as a process interrupted in the calling thread does.
        raise out.error
    return out


def run_sync(proc: Process[Any]) -> Outcome:
    """Runs ``proc`` to its end in the calling thread (an async one on a new event loop)."""
    if proc.is_async:
        if proc.backend == "coroutine":
            from ._backends._coroutine import run_inline

            out = run_inline(proc)
        else:
            out = asyncio.run(_amain(proc))
        if isinstance(out.error, KeyboardInterrupt):
            # As ``_execute`` does in the calling thread: the peers are poisoned (``_ended``),
            # and the interrupt propagates as itself rather than as a process failure.
            raise out.error
        return out
    return execute(proc)


def as_process(obj: object, where: str) -> Process[Any]:
    """``obj`` as a Process: a Process stays, a plain callable runs with no arguments.

    Rejects, with a TypeError that says what to do, the slips that would otherwise run the
    wrong thing silently or fail far away: a ``@process`` factory (calling it with no
    arguments would only make a Process and return it, never running its body), a class
    (``Par`` itself), a coroutine object (an ``async def`` function called, not passed) and
    a list, tuple or generator of processes (``Par([p, q])`` instead of ``Par(p, q)``).
    """
    if isinstance(obj, Process):
        return obj
    if isinstance(obj, _Factory):
        fname = getattr(obj._fn, "__name__", "f")
        raise TypeError(
            f"{where} is the @process factory {fname!r}, not a process: call it to make "
            f"one, with the process's arguments: {fname}(...)"
        )
    if isinstance(obj, type):
        raise TypeError(
            f"{where} is the class {obj.__name__}, not a process: pass an instance "
            f"(e.g. {obj.__name__}(...)) or a Process"
        )
    if inspect.iscoroutine(obj):
        obj.close()  # never awaited: close it, or Python warns about it later
        raise TypeError(
            f"{where} is a coroutine object (an async def function that was called): pass "
            "the function itself, or decorate it with @process and pass the Process its "
            "factory returns"
        )
    if isinstance(obj, list | tuple | set | frozenset | Iterator):
        raise TypeError(
            f"{where} is a {type(obj).__name__}: pass processes as separate arguments, "
            "e.g. Par(*processes)"
        )
    nested = getattr(obj, "_as_process", None)
    if nested is not None:  # a Par or Seq is itself a process
        proc: Process[Any] = nested()
        return proc
    if callable(obj):
        return Process(obj)
    raise TypeError(f"{where} must be a Process or a callable, not {type(obj).__name__}")


class Composite(Protocol[R_co]):
    """A network that is itself a process (``Par``, ``Seq``): its result is ``R_co``."""

    def _as_process(self) -> Process[R_co]: ...


#: What ``Par``, ``Seq`` and ``Spawn`` run: a Process, a nested Par/Seq, or a plain callable
#: called with no arguments; each yields an ``R``.
ProcessLike = Process[R] | Composite[R] | Callable[[], R]


class _Factory(Generic[P, R]):
    """What ``@process`` returns: calling it makes an unstarted ``Process``."""

    def __init__(self, fn: Callable[P, Any], name: str | None, backend: str | None) -> None:
        self._fn = fn
        self._name = name
        self._backend = backend
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Process[R]:
        return Process(self._fn, args, kwargs, name=self._name, backend=self._backend)

    def __repr__(self) -> str:
        return f"<process factory {self._fn.__qualname__}>"


class _Decorator(Protocol):
    """``@process(name=..., backend=...)``: what it returns, typed like ``process`` itself."""

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> _Factory[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> _Factory[P, R]: ...


# An async def's factory makes processes whose result is what the coroutine returns.
@overload
def process(fn: Callable[P, Coroutine[Any, Any, R]], /) -> _Factory[P, R]: ...
@overload
def process(fn: Callable[P, R], /) -> _Factory[P, R]: ...
@overload
def process(*, name: str | None = None, backend: Backend | None = None) -> _Decorator: ...
def process(
    fn: Callable[P, Any] | None = None,
    /,
    *,
    name: str | None = None,
    backend: Backend | None = None,
) -> _Factory[P, Any] | _Decorator:
    """Turns a function into a process factory: ``worker(a, b)`` returns an unstarted Process.

    Use as ``@process`` or ``@process(name="w", backend="thread")``. The default name is the
    function's ``__name__``. An ``async def`` function makes processes on the ``"asyncio"``
    backend, or with ``backend="coroutine"`` on the native coroutine backend (a Rust
    scheduler, no event loop); ``"asyncio"`` or ``"coroutine"`` on a plain function is a
    ValueError.
    """
    if backend is not None:
        _backends.check(backend)
    if name is not None and not isinstance(name, str):
        raise TypeError(f"process name must be a str, not {type(name).__name__}")

    def wrap(f: Callable[P, R]) -> _Factory[P, R]:
        if not callable(f):
            raise TypeError(f"@process needs a function, not {type(f).__name__}")
        _check_backend(f, backend)  # fails here, at the decoration, not at the first call
        return _Factory(f, name, backend)

    if fn is not None:
        return wrap(fn)
    return cast("_Decorator", wrap)
