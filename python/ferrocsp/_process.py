"""Processes: ``@process`` turns a function into a factory of unstarted ``Process`` values.

Invariants:
- A ``Process`` is a value until it runs: function, arguments, name, backend; running it twice
  runs the function twice.
- ``execute`` is the one place that turns how a process ended into an ``Outcome`` and applies
  DESIGN's shutdown rules (clean end on poison/retire, poison on failure), whatever the backend.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar, overload

from . import _backends
from ._errors import ChannelPoisoned, ChannelRetired
from ._native import _set_process_name
from ._shutdown import Endpoint, channel_args, poison_all, retire_ends

__all__ = ["Outcome", "Process", "as_process", "execute", "process"]

P = ParamSpec("P")
R = TypeVar("R")


class Process(Generic[R]):
    """An unstarted process: a function, its arguments, a name and a backend.

    Run it with ``Par``, ``Seq`` or ``Spawn``; ``proc.run()`` runs it in the calling thread.
    """

    __slots__ = ("_endpoints", "args", "backend", "fn", "kwargs", "name")

    def __init__(
        self,
        fn: Callable[..., R],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        name: str | None = None,
        backend: str | None = None,
        endpoints: list[Endpoint] | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"a process needs a callable, not {type(fn).__name__}")
        if inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"{getattr(fn, '__name__', fn)!r} is an async def function: asyncio processes "
                "are not available in this version of ferrocsp"
            )
        if name is not None and not isinstance(name, str):
            raise TypeError(f"process name must be a str, not {type(name).__name__}")
        self.fn = fn
        self.args = args
        self.kwargs = kwargs if kwargs is not None else {}
        self.name: str = name if name is not None else getattr(fn, "__name__", repr(fn))
        self.backend = _backends.check(backend) if backend is not None else None
        self._endpoints = endpoints

    def endpoints(self) -> list[Endpoint]:
        """The channels and ends this process holds: those among its arguments (a nested
        ``Par``/``Seq`` holds those of its processes)."""
        if self._endpoints is not None:
            return self._endpoints
        return channel_args(self.args, self.kwargs)

    def run(self) -> R | None:
        """Runs the process in the calling thread, with the shutdown rules of ``Par``.

        Returns its result (``None`` if it ended by poison or retire); raises what it raised.
        """
        out = execute(self)
        if out.error is not None:
            raise out.error
        value: R | None = out.value
        return value

    def __repr__(self) -> str:
        return f"<Process {self.name!r}>"


@dataclass(slots=True)
class Outcome:
    """How a process ended: a value, or an error to report."""

    value: Any = None
    error: BaseException | None = None


def execute(proc: Process[Any]) -> Outcome:
    """Runs ``proc`` in the calling thread and applies the shutdown rules."""
    previous = _set_process_name(proc.name)
    try:
        return Outcome(value=proc.fn(*proc.args, **proc.kwargs))
    except ChannelPoisoned:
        poison_all(channel_args(proc.args, proc.kwargs))
        return Outcome()
    except ChannelRetired:
        retire_ends(channel_args(proc.args, proc.kwargs))
        return Outcome()
    except BaseException as exc:  # noqa: BLE001 - a failing process must never hang its peers
        poison_all(channel_args(proc.args, proc.kwargs))
        exc.add_note(f"in process {proc.name!r}")
        return Outcome(error=exc)
    finally:
        _set_process_name(previous)


def as_process(obj: object, where: str) -> Process[Any]:
    """``obj`` as a Process: a Process stays, a plain callable runs with no arguments."""
    if isinstance(obj, Process):
        return obj
    nested = getattr(obj, "_as_process", None)
    if nested is not None:  # a Par or Seq is itself a process
        proc: Process[Any] = nested()
        return proc
    if callable(obj):
        return Process(obj)
    raise TypeError(f"{where} must be a Process or a callable, not {type(obj).__name__}")


class _Factory(Generic[P, R]):
    """What ``@process`` returns: calling it makes an unstarted ``Process``."""

    def __init__(self, fn: Callable[P, R], name: str | None, backend: str | None) -> None:
        self._fn = fn
        self._name = name
        self._backend = backend
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Process[R]:
        return Process(self._fn, args, kwargs, name=self._name, backend=self._backend)

    def __repr__(self) -> str:
        return f"<process factory {self._fn.__qualname__}>"


@overload
def process(fn: Callable[P, R], /) -> _Factory[P, R]: ...
@overload
def process(
    *, name: str | None = None, backend: str | None = None
) -> Callable[[Callable[P, R]], _Factory[P, R]]: ...
def process(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    backend: str | None = None,
) -> _Factory[P, R] | Callable[[Callable[P, R]], _Factory[P, R]]:
    """Turns a function into a process factory: ``worker(a, b)`` returns an unstarted Process.

    Use as ``@process`` or ``@process(name="w", backend="thread")``. The default name is the
    function's ``__name__``.
    """
    if backend is not None:
        _backends.check(backend)
    if name is not None and not isinstance(name, str):
        raise TypeError(f"process name must be a str, not {type(name).__name__}")

    def wrap(f: Callable[P, R]) -> _Factory[P, R]:
        if not callable(f):
            raise TypeError(f"@process needs a function, not {type(f).__name__}")
        if inspect.iscoroutinefunction(f):
            raise TypeError(
                f"{f.__name__!r} is an async def function: asyncio processes are not "
                "available in this version of ferrocsp"
            )
        return _Factory(f, name, backend)

    if fn is not None:
        return wrap(fn)
    return wrap
