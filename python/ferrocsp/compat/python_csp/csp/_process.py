"""python-csp processes and composition: ``CSPProcess`` (``@process``), ``CSPServer``
(``@forever``), ``Par``, ``Seq``, ``Skip`` and the operators ``p // (q, r)``, ``p > q``,
``p * n``; run by ferrocsp's ``Par``/``Spawn``.

The backend comes from the class: ``csp.os_thread`` makes thread processes, ``csp.os_process``
OS processes (ferrocsp's ``"os"`` backend), and ``csp.csp`` whichever the ``CSP`` environment
variable chose.

Invariants:
- A process runs at most once: ``start()`` (run and wait) and ``spawn()`` (start, do not wait)
  do nothing for a process that already started, as python-csp's threads did.
- A process that ends by ``ChannelPoison`` poisons every channel it can reach from its
  arguments (inside lists, tuples, sets, dicts, other processes' arguments and objects'
  attributes), as python-csp's did, and its result is ``None``. Any other exception poisons
  the same channels, so peers stop, and ferrocsp reports it (``start()`` raises an
  ``ExceptionGroup``) instead of printing it and hanging.
- ``@forever`` bodies are generators: the server steps them until they end or are poisoned.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import ferrocsp as csp

from ...._fnref import FnRef
from ._channel import Channel, ChannelPoison, Guard, misuse

__all__ = ["CSPProcess", "CSPServer", "Par", "Seq", "Skip", "forever_of", "process_of"]


class _Runnable:
    """What processes, ``Par`` and ``Seq`` share: start/spawn/join and the operators."""

    backend: ClassVar[str] = "thread"
    enclosing: Any = None
    _handle: csp.Handle[Any] | None = None
    _started = False

    def as_ferrocsp(self) -> csp.Process[Any]:
        raise NotImplementedError

    def start(self) -> None:
        """Runs this (if it has not started yet) and waits until it has ended."""
        _run_all([self])

    def spawn(self) -> None:
        """Starts this (if it has not started yet) without waiting; ``join()`` waits."""
        if not self._started:
            self._started = True
            self._handle = csp.Spawn(self.as_ferrocsp())

    def join(self) -> None:
        """Waits for a spawned process to end (raises what it raised)."""
        if self._handle is not None:
            self._handle.join()

    def __floordiv__(self, proclist: Any) -> None:
        if isinstance(proclist, _Runnable):
            proclist = (proclist,)
        if not isinstance(proclist, Iterable):
            raise misuse("CSPProcess", f"p // (q, r) needs processes, got {proclist!r}")
        Par(self, *proclist).start()

    def __gt__(self, other: Any) -> Seq:
        if not isinstance(other, _Runnable):
            raise misuse("CSPProcess", f"p > q needs a process on the right, got {other!r}")
        seq = Seq(self, other)
        seq.start()
        return seq

    def __mul__(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise misuse("CSPProcess", f"p * n needs an int n >= 1, got {n!r}")
        Seq(self, *(copy.copy(self) for _ in range(n - 1))).start()

    __rmul__ = __mul__

    def getPid(self) -> int | None:  # noqa: N802 - python-csp's name
        """An id for the process while it runs (python-csp returned the thread or process id)."""
        return id(self) if self._started else None

    getName = getPid  # noqa: N815 - python-csp's name


class CSPProcess(_Runnable):
    """A python-csp process: ``CSPProcess(func, *args, **kwargs)``, usually made by
    ``@process``."""

    def __init__(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        if not callable(func):
            raise misuse(type(self).__name__, f"needs a function, got {func!r}")
        self._target = func
        self._args = args
        self._kwargs = kwargs
        for arg in (*args, *kwargs.values()):
            if isinstance(arg, _Runnable):
                arg.enclosing = self

    @property
    def args(self) -> tuple[Any, ...]:
        """The positional arguments."""
        return self._args

    @property
    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments."""
        return self._kwargs

    @property
    def name(self) -> str:
        """The function's name."""
        return str(getattr(self._target, "__name__", "process"))

    def as_ferrocsp(self) -> csp.Process[Any]:
        return csp.Process(_run, (self,), name=self.name, backend=self.backend)

    def body(self) -> Any:
        """Runs the function once."""
        return self._target(*self._args, **self._kwargs)

    def __copy__(self) -> CSPProcess:
        return type(self)(self._target, *self._args, **self._kwargs)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (_rebuild, (type(self), FnRef.of(self._target), self._args, self._kwargs))

    def __str__(self) -> str:
        return f"CSPProcess {self.name} (ferrocsp, {self.backend})"


class CSPServer(CSPProcess):
    """A server process (``@forever``): its function is a generator, stepped until it ends."""

    def body(self) -> Any:
        for _ in self._target(*self._args, **self._kwargs):
            pass
        return None


def _rebuild(
    cls: type[CSPProcess], fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> CSPProcess:
    return cls(fn.resolve() if isinstance(fn, FnRef) else fn, *args, **kwargs)


def _poison_reachable(values: Iterable[Any], seen: set[int]) -> None:
    """python-csp's rule: poison every channel reachable from a process's arguments."""
    for obj in values:
        if obj is None or isinstance(obj, str | bytes | int | float) or id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, Channel):
            obj.poison()
        elif isinstance(obj, dict):
            _poison_reachable(obj.values(), seen)
        elif isinstance(obj, list | tuple | set | frozenset):
            _poison_reachable(obj, seen)
        elif isinstance(obj, CSPProcess):
            _poison_reachable((*obj.args, *obj.kwargs.values()), seen)
        elif isinstance(obj, Par | Seq):
            _poison_reachable(obj.procs, seen)
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            _poison_reachable(list(vars(obj).values()), seen)


def _run(proc: CSPProcess) -> Any:
    try:
        return proc.body()
    except ChannelPoison:
        _poison_reachable((*proc.args, *proc.kwargs.values()), set())
        return None
    except BaseException:
        _poison_reachable((*proc.args, *proc.kwargs.values()), set())
        raise


def _run_all(items: Iterable[_Runnable]) -> None:
    todo = [p for p in items if not p._started]
    for p in todo:
        p._started = True
    if todo:
        csp.Par(*(p.as_ferrocsp() for p in todo)).run()


def _flat(kind: type[Par | Seq], procs: Iterable[Any], api: str) -> list[_Runnable]:
    out: list[_Runnable] = []
    for p in procs:
        if isinstance(p, kind):
            out.extend(p.procs)  # python-csp flattened nested Pars (resp. Seqs)
        elif isinstance(p, _Runnable):
            out.append(p)
        else:
            raise misuse(api, f"expected processes, got {p!r}")
    return out


class Par(_Runnable):
    """``Par(p, q, ...)``: ``start()`` runs the processes in parallel and waits for all."""

    def __init__(self, *procs: Any, **kwargs: Any) -> None:
        self.procs = _flat(Par, procs, "Par")
        for p in self.procs:
            p.enclosing = self

    def as_ferrocsp(self) -> csp.Process[Any]:
        return csp.Process(_run_all, (self.procs,), name="Par")

    def start(self) -> None:
        """Runs every process that has not started, in parallel, and waits for all."""
        self._started = True
        _run_all(self.procs)

    def join(self) -> None:
        """Waits for the processes that were spawned."""
        for p in self.procs:
            p.join()

    def __ifloordiv__(self, proclist: Any) -> Par:  # type: ignore[override]
        self.procs = _flat(Par, proclist, "Par")
        self.start()
        return self

    def __len__(self) -> int:
        return len(self.procs)

    def __getitem__(self, index: int) -> _Runnable:
        return self.procs[index]

    def __setitem__(self, index: int, value: _Runnable) -> None:
        self.procs[index] = value

    def __contains__(self, proc: object) -> bool:
        return proc in self.procs

    def __str__(self) -> str:
        return f"CSP Par of {len(self.procs)} processes (ferrocsp)"


def _run_seq(procs: list[_Runnable]) -> None:
    for p in procs:
        _run_all([p])


class Seq(_Runnable):
    """``Seq(p, q, ...)``: ``start()`` runs the processes one after another."""

    def __init__(self, *procs: Any) -> None:
        self.procs = _flat(Seq, procs, "Seq")
        for p in self.procs:
            p.enclosing = self

    def as_ferrocsp(self) -> csp.Process[Any]:
        return csp.Process(_run_seq, (self.procs,), name="Seq")

    def start(self) -> None:
        """Runs the processes that have not started, in order, each to its end."""
        self._started = True
        _run_seq(self.procs)

    def __str__(self) -> str:
        return f"CSP Seq of {len(self.procs)} processes (ferrocsp)"


def _nop() -> None:
    return None


class Skip(CSPProcess, Guard):
    """``Skip()``: a guard that is always ready (selecting it returns ``'Skip'``) and a process
    that does nothing."""

    def __init__(self) -> None:
        CSPProcess.__init__(self, _nop)

    def engine_guard(self) -> Any:
        return csp.Skip()

    def chosen(self, value: Any) -> Any:
        return "Skip"

    def __str__(self) -> str:
        return "Skip guard is always selectable / process does nothing."


def process_of(cls: type[CSPProcess]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The ``@process`` decorator making ``cls`` processes."""
    return _decorator(cls, "process")


def forever_of(cls: type[CSPServer]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The ``@forever`` decorator making ``cls`` servers."""
    return _decorator(cls, "forever")


def _decorator(cls: type[CSPProcess], api: str) -> Callable[[Callable[..., Any]], Any]:
    def decorate(func: Callable[..., Any]) -> Any:
        if not callable(func):
            raise misuse(api, f"@{api} needs a function, got {func!r}")
        return _Factory(cls, func)

    return decorate


class _Factory:
    """What ``@process``/``@forever`` return; calling makes an unstarted process. Works as a
    method too (``self`` becomes the first argument, as with python-csp's decorators)."""

    def __init__(self, cls: type[CSPProcess], fn: Callable[..., Any]) -> None:
        self._cls = cls
        self._fn = fn
        for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
            if hasattr(fn, attr):
                setattr(self, attr, getattr(fn, attr))
        self.__wrapped__ = fn

    def __call__(self, *args: Any, **kwargs: Any) -> CSPProcess:
        return self._cls(self._fn, *args, **kwargs)

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        return lambda *args, **kwargs: self._cls(self._fn, obj, *args, **kwargs)
