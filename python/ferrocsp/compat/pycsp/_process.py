"""PyCSP 0.9 processes and composition (``@process``, ``@multiprocess``, ``Parallel``,
``Sequence``, ``Spawn``, ``shutdown``), run by ferrocsp's ``Par``/``Seq``/``Spawn``.

``pycsp.parallel``'s processes run on ferrocsp's ``"thread"`` backend, ``pycsp.greenlets``'s on
``"greenlet"``, ``@multiprocess`` on ``"os"`` (a separate OS process).

Invariants:
- A PyCSP process that ends by ``ChannelPoisonException`` poisons, and one that ends by
  ``ChannelRetireException`` retires, everything among its arguments with a ``poison``
  (resp. ``retire``) method, looking into lists, tuples and dicts (keys and values), as PyCSP
  did; its return value is then ``None``. Any other exception poisons the same way, then
  ferrocsp reports it (``Parallel`` raises an ``ExceptionGroup``), so peers never hang on it.
- Processes started with ``Spawn`` belong to the process that spawned them (or the main
  program): that process joins them before it ends, and ``shutdown()`` (or interpreter exit)
  joins those of the main program.
- ``Parallel``/``Sequence``/``Spawn`` called by the top-level code of a script that an OS
  process child re-imports (``__mp_main__``) do nothing: PyCSP forked its ``@multiprocess``
  children, which never re-ran the script, so scripts without a ``__main__`` guard work.
- ``n * p`` / ``p * n`` is ``[p]`` plus ``n - 1`` copies that get new ends of the same channels.
"""

from __future__ import annotations

import atexit
import contextlib
import sys
import threading
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, ClassVar

import ferrocsp as csp

from ..._flatcall import call
from ..._fnref import FnRef
from . import _remote
from ._channel import ChannelEndRead, ChannelEndWrite, is_method
from ._errors import (
    ChannelBindException,
    ChannelPoisonException,
    ChannelRetireException,
    InfoException,
    misuse,
)

__all__ = [
    "GreenletProcess",
    "MultiProcess",
    "Parallel",
    "Process",
    "Sequence",
    "Spawn",
    "current_process_id",
    "greenlet_process",
    "multiprocess",
    "process",
    "shutdown",
]

_current: ContextVar[Process | None] = ContextVar("pycsp_process", default=None)
_main_spawned: list[csp.Handle[Any]] = []
_main_lock = threading.Lock()


class Process:
    """A PyCSP process: ``Process(fn, *args, **kwargs)``, usually made by ``@process``.

    Attributes as in PyCSP: ``fn``, ``args``, ``kwargs``, ``id``, ``return_value``.
    """

    backend: ClassVar[str] = "thread"
    api: ClassVar[str] = "process"

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        if not callable(fn):
            raise misuse(type(self).__name__, f"needs a function, got {fn!r}")
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.return_value: Any = None
        self._id: str | None = None
        self.spawned: list[csp.Handle[Any]] = []

    @property
    def id(self) -> str:
        """A unique id, ``"<uuid>.<function name>"`` (made when first asked for)."""
        if self._id is None:
            self._id = f"{uuid.uuid4().hex}.{getattr(self.fn, '__name__', 'process')[:31]}"
        return self._id

    @id.setter
    def id(self, value: str) -> None:
        self._id = value

    @property
    def name(self) -> str:
        """The function's name (ferrocsp names the process after it in errors and dumps)."""
        return str(getattr(self.fn, "__name__", "process"))

    def update(self, **kwargs: Any) -> Process:
        """Accepted for PyCSP compatibility (it configured network processes)."""
        return self

    def as_ferrocsp(self) -> csp.Process[Any]:
        """This process as a ferrocsp process on its backend."""
        return csp.Process(_run, (self,), name=self.name, backend=self.backend)

    def run(self) -> Any:
        """Runs the body in the calling thread with PyCSP's end rules; returns its value."""
        return _run(self)

    def __mul__(self, multiplier: float) -> list[Process]:
        # PyCSP took int(multiplier), so (P / 2) * proc() works with a float.
        ok = isinstance(multiplier, int | float) and not isinstance(multiplier, bool)
        if not ok or multiplier != int(multiplier) or multiplier < 1:
            raise misuse(self.api, f"process * n needs a whole number n >= 1, got {multiplier!r}")
        return [self] + [self._copy() for _ in range(int(multiplier) - 1)]

    __rmul__ = __mul__

    def _copy(self) -> Process:
        args = tuple(_new_ends(a) for a in self.args)
        kwargs = {k: _new_ends(v) for k, v in self.kwargs.items()}
        return type(self)(self.fn, *args, **kwargs)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (_rebuild, (type(self), FnRef.of(self.fn), self.args, self.kwargs, self.id))

    def __repr__(self) -> str:
        return f"<pycsp {type(self).__name__} {self.name!r}>"


class GreenletProcess(Process):
    """A ``pycsp.greenlets`` process: runs as a greenlet (ferrocsp's ``"greenlet"`` backend)."""

    backend: ClassVar[str] = "greenlet"


class MultiProcess(Process):
    """A ``@multiprocess`` process: runs in its own OS process (ferrocsp's ``"os"`` backend).

    Its function must be defined at module level (it crosses by reference), as in PyCSP.
    The keyword arguments ``pycsp_host``/``pycsp_port`` are not passed to it: they start the
    child's channel server on that address before the function runs (a port in use raises
    ``ChannelBindException`` from ``Parallel``/``Sequence``, as in PyCSP).
    """

    backend: ClassVar[str] = "os"
    api: ClassVar[str] = "multiprocess"

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.pycsp_host: str = kwargs.pop("pycsp_host", "") or ""
        self.pycsp_port: int | None = kwargs.pop("pycsp_port", None)
        self._ready: csp.Reader | None = None
        super().__init__(fn, *args, **kwargs)

    def update(self, **kwargs: Any) -> Process:
        """Sets ``pycsp_host``/``pycsp_port`` (PyCSP's only settings for a multiprocess)."""
        unknown = set(kwargs) - {"pycsp_host", "pycsp_port"}
        if unknown:
            raise InfoException(
                f"pycsp.MultiProcess.update: parameters {sorted(unknown)} are not valid for "
                "MultiProcess (only pycsp_host and pycsp_port)"
            )
        self.pycsp_host = kwargs.get("pycsp_host", self.pycsp_host) or ""
        self.pycsp_port = kwargs.get("pycsp_port", self.pycsp_port)
        return self

    def _copy(self) -> Process:
        new = super()._copy()
        return new.update(pycsp_host=self.pycsp_host, pycsp_port=self.pycsp_port)

    @property
    def serves(self) -> bool:
        """Whether its child runs a channel server on ``pycsp_host``/``pycsp_port``."""
        return bool(self.pycsp_host) or self.pycsp_port is not None

    def as_ferrocsp(self) -> csp.Process[Any]:
        if not self.serves:
            return super().as_ferrocsp()
        # The child says when its server is bound (or fails to bind, which poisons `ready`):
        # `Parallel`/`Spawn` wait for that, so that a process started next sees the port
        # taken, as it did when PyCSP forked its children.
        ready = csp.Channel(1, name=f"{self.name}: channel server bound")
        self._ready = ready.reader()
        return csp.Process(_run, (self, ready.writer()), name=self.name, backend=self.backend)

    def wait_bound(self) -> None:
        """Returns once the child's server is bound or the child failed (see ``as_ferrocsp``)."""
        ready = self._ready
        if ready is not None:
            self._ready = None
            with contextlib.suppress(csp.ChannelPoisoned, csp.ChannelRetired):
                ready.read()
            ready.retire()

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        kwargs = {**self.kwargs, "pycsp_host": self.pycsp_host, "pycsp_port": self.pycsp_port}
        return (_rebuild, (type(self), FnRef.of(self.fn), self.args, kwargs, self.id))


def _new_ends(arg: Any) -> Any:
    """``arg`` with every channel end replaced by a new end of the same channel and kind."""
    if isinstance(arg, ChannelEndRead):
        return arg.channel.reader()
    if isinstance(arg, ChannelEndWrite):
        return arg.channel.writer()
    if isinstance(arg, list | tuple):
        return type(arg)(_new_ends(a) for a in arg)
    if isinstance(arg, dict):
        return {_new_ends(k): _new_ends(v) for k, v in arg.items()}
    return arg


def _propagate(args: Any, how: str) -> None:
    """Calls ``how`` (``"poison"``/``"retire"``) on every argument that has it as a method."""
    for arg in args:
        if isinstance(arg, list | tuple):
            _propagate(arg, how)
        elif isinstance(arg, dict):
            _propagate(list(arg.keys()), how)
            _propagate(list(arg.values()), how)
        else:
            m = is_method(arg, how)
            if m is not None:
                with contextlib.suppress(ChannelRetireException):
                    m()


#: How the engine words a wrong call of an end (the compat ends call its read/write directly).
_END_CALLS = ("Reader.read()", "Writer.write()")
_END_CALL_NOTE = (
    "pycsp channel ends: a reader end is called with no arguments (value = cin()), a writer "
    "end with the value to send (cout(value))"
)


def _run(proc: Process, ready: csp.Writer | None = None) -> Any:
    """The body of every PyCSP process under ferrocsp: PyCSP's end rules, then the joins.
    ``ready`` (a serving ``MultiProcess``): told once the child's channel server is bound."""
    token = _current.set(proc)
    serving = ready is not None
    try:
        if ready is not None:  # in the child: bind before the function runs, as PyCSP did
            assert isinstance(proc, MultiProcess)
            _remote.serve(proc.pycsp_host, proc.pycsp_port)
            ready.write(True)
            ready.retire()
        args = (*proc.args, *proc.kwargs.values())
        try:
            proc.return_value = call(proc.fn, proc.args, proc.kwargs)  # see _flatcall
        except ChannelPoisonException:
            _propagate(args, "poison")
        except ChannelRetireException:
            _propagate(args, "retire")
        except BaseException as exc:
            _propagate(args, "poison")
            if isinstance(exc, TypeError) and str(exc).startswith(_END_CALLS):
                exc.add_note(_END_CALL_NOTE)
            raise
        finally:
            for handle in proc.spawned:
                handle.join()
            if serving:
                _remote.stop()  # the hand-outs under way end before this OS process does
        return proc.return_value
    finally:
        _current.reset(token)


def _flatten(api: str, plist: tuple[Any, ...]) -> list[Process]:
    out: list[Process] = []
    for p in plist:
        for q in p if isinstance(p, list) else [p]:
            if not isinstance(q, Process):
                raise misuse(
                    api,
                    f"expected processes made by @process (or lists of them), got {q!r}"
                    + (" (did you forget the call: p() not p?)" if callable(q) else ""),
                )
            out.append(q)
    return out


def _importing_main_in_child() -> bool:
    """Whether the caller is the top-level code of the main script, re-run by an OS process
    child while it imports the script to find its process functions (``__mp_main__``).

    PyCSP started ``@multiprocess`` children by fork, so scripts without an
    ``if __name__ == "__main__":`` guard worked; ferrocsp starts them fresh, and the child
    would run the script's network again. Composition called from there does nothing, which
    is what a forked child would have seen."""
    frame: Any = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == "__mp_main__":
            return True
        frame = frame.f_back
    return False


def _bind_failure_as_pycsp(run: Callable[[], list[Any]]) -> list[Any]:
    """``run()``, except that a failure made only of ``ChannelBindException`` (a
    ``@multiprocess`` whose ``pycsp_port`` was taken) raises that exception itself, as
    PyCSP's ``Parallel`` did, instead of ferrocsp's ``ExceptionGroup``."""
    try:
        return run()
    except ExceptionGroup as group:
        rest = group.split(ChannelBindException)[1]
        if rest is not None:
            raise
        first: BaseException = group
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from group


def _started(procs: list[Process], net: csp.Par[Any]) -> csp.Handle[list[Any]]:
    """``net`` started, once the channel servers of its serving ``MultiProcess``es are bound."""
    handle = net.start()
    try:
        for p in procs:
            if isinstance(p, MultiProcess):
                p.wait_bound()
    except KeyboardInterrupt:
        handle.poison()
        raise
    return handle


def Parallel(*plist: Any, **kwargs: Any) -> list[Any]:  # noqa: N802 - PyCSP's name
    """Runs the processes (or lists of processes) in parallel and returns their return values
    in order, once all have ended."""
    procs = _flatten("Parallel", plist)
    if _importing_main_in_child():
        return [None] * len(procs)
    net = csp.Par(*(p.as_ferrocsp() for p in procs))
    values: list[Any] = _bind_failure_as_pycsp(lambda: _started(procs, net).join())
    for p, v in zip(procs, values, strict=True):
        p.return_value = v
    return values


def Sequence(*plist: Any, **kwargs: Any) -> list[Any]:  # noqa: N802 - PyCSP's name
    """Runs the processes one after another and returns their return values in order."""
    procs = _flatten("Sequence", plist)
    if _importing_main_in_child():
        return [None] * len(procs)
    values: list[Any] = _bind_failure_as_pycsp(csp.Seq(*(p.as_ferrocsp() for p in procs)).run)
    for p, v in zip(procs, values, strict=True):
        p.return_value = v
    return values


def Spawn(*plist: Any, **kwargs: Any) -> None:  # noqa: N802 - PyCSP's name
    """Starts the processes without waiting; the spawning process (or ``shutdown()`` in the
    main program) waits for them."""
    procs = _flatten("Spawn", plist)
    owner = _current.get()
    if not procs or _importing_main_in_child():
        return
    # One network for the group: greenlet processes share one scheduler thread.
    handles: list[csp.Handle[Any]] = [_started(procs, csp.Par(*(p.as_ferrocsp() for p in procs)))]
    if owner is not None:
        owner.spawned.extend(handles)
    else:
        with _main_lock:
            _main_spawned.extend(handles)


def current_process_id() -> str:
    """The id of the running PyCSP process, ``"__main__"`` outside any."""
    proc = _current.get()
    return "__main__" if proc is None else proc.id


def shutdown() -> None:
    """Waits for the processes the main program spawned, then stops this interpreter's
    channel server (if one was started: ``Channel.address``, ``PYCSP_PORT``), after the
    channel hand-outs under way have ended."""
    if _current.get() is not None:
        raise InfoException(
            "pycsp.shutdown must not be called in PyCSP processes (they join what they spawned)"
        )
    _join_main()
    _remote.stop()


def _join_main() -> None:
    while True:
        with _main_lock:
            if not _main_spawned:
                return
            handle = _main_spawned.pop(0)
        handle.join()


atexit.register(_remote.stop)  # atexit runs in reverse: this one after the joins below
atexit.register(_join_main)


def _decorator(cls: type[Process]) -> Callable[..., Any]:
    def decorate(func: Callable[..., Any]) -> Callable[..., Process]:
        if not callable(func):
            raise misuse(cls.api, f"@{cls.api} needs a function, got {func!r}")
        return _Factory(cls, func)

    return decorate


class _Factory:
    """What ``@process`` returns: calling it makes an unstarted PyCSP process."""

    __slots__ = ("__dict__", "_cls", "_fn", "_settings")

    def __init__(
        self, cls: type[Process], fn: Callable[..., Any], settings: dict[str, Any] | None = None
    ) -> None:
        if not callable(fn):
            raise misuse(cls.api, f"@{cls.api} needs a function, got {fn!r}")
        self._cls = cls
        self._fn = fn
        self._settings = settings or {}
        self.__dict__.update(getattr(fn, "__dict__", {}))
        for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
            if hasattr(fn, attr):
                self.__dict__[attr] = getattr(fn, attr)
        self.__dict__["__wrapped__"] = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Process:
        return self._cls(self._fn, *args, **{**self._settings, **kwargs})

    def __repr__(self) -> str:
        return f"<pycsp {self._cls.api} factory {getattr(self._fn, '__qualname__', self._fn)}>"


process = _decorator(Process)
greenlet_process = _decorator(GreenletProcess)


def multiprocess(
    func: Callable[..., Any] | None = None, pycsp_host: str = "", pycsp_port: int | None = None
) -> Any:
    """``@multiprocess`` (or ``@multiprocess(pycsp_host=..., pycsp_port=...)``: the child's
    channel server listens there): the process runs in its own OS process."""
    decorate = _decorator(MultiProcess)
    if pycsp_host or pycsp_port is not None:
        settings = {"pycsp_host": pycsp_host, "pycsp_port": pycsp_port}

        def decorate_with(fn: Callable[..., Any]) -> Any:
            return _Factory(MultiProcess, fn, settings)

        return decorate_with if func is None else decorate_with(func)
    if func is None:
        return decorate
    return decorate(func)


def _rebuild(
    cls: type[Process], fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], pid: str
) -> Process:
    if isinstance(fn, FnRef):
        fn = fn.resolve()
    proc = cls(fn, *args, **kwargs)
    proc.id = pid
    return proc
