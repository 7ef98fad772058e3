"""A process body written once, run under the thread, greenlet, asyncio and os backends.

A shared test writes its process bodies as ``async def body(k, *args)`` and does every
channel operation that may block through the kit ``k``:

    await k.read(ch)            await k.write(ch, v)         (timeout= passes through)
    await k.select(alt)         await k.pri_select(alt)      await k.fair_select(alt)
    async for v in k.iter(reader_or_channel): ...

Non-blocking calls (``read_nowait``, ``stats``, ``poison``, ``retire``) are the same under
every backend and are called directly.

How a body runs:

- ``asyncio``: the body is the ``async def`` process itself; ``k.read`` returns
  ``ch.aread()`` (the real awaitable), ``k.select`` returns ``alt.aselect()``, ``k.iter``
  is ``reader.__aiter__()``.
- ``coroutine``: the same ``async def`` process on the native coroutine backend (no event
  loop; ``k.call`` is ``csp.aio``).
- ``thread`` and ``greenlet``: the process is a plain function that drives the body's
  coroutine to its end with one ``send(None)``. Each kit call makes the blocking call (which
  parks the thread, or switches greenlets) when it is *called* and returns an awaitable that is
  already done, so the coroutine never suspends; a body that awaits anything else (e.g.
  ``asyncio.sleep``) fails with a clear ``RuntimeError``. Exceptions leave the body unchanged.
- ``os``: the process is an ``_OsBody``, a module-level callable holding the body, pickled
  into a child OS process (the body by reference, so it must be a module-level function, and
  its arguments by value: channels move to shared memory). The child drives the coroutine as
  thread/greenlet do. Its return value or exception comes back pickled (a copy).
- ``os-asyncio``: the same, but the child runs the body with ``asyncio.run`` and an
  asyncio-flavoured kit (``aread``/``awrite``/``aselect``/``async for`` on shared channels).
  ``k.backend`` is ``"os"`` for it too (the body and the test see an OS process); only the
  test id says which.

Invariants (what makes the shared tests test the real thing):
- ``k.process(body)(*args)`` is a ``csp.Process`` whose name is the body's ``__name__`` (or
  ``name=``) and whose arguments are exactly ``args``/``kwargs`` (the kit is not among them),
  so poison/retire propagation, ``ExceptionGroup`` notes and ``dump`` see what the real
  ``@csp.process`` would give them. Its backend is set on the process (``async def`` for
  asyncio), so processes of several kits can be mixed in one ``Par``.
- ``k.spawn(body, ...)`` runs a body as one process of the backend and keeps its raw outcome
  (value or exception, before the shutdown rules), like ``_support.Background`` does for a
  thread: tests that check which exception a blocked operation raised use it.
- Only ``BACKENDS`` (in-process) is what suites parametrize by default; a suite opts in to
  ``os`` with ``SHARED_BACKENDS`` (conftest's ``backend_fixture``), where every ``os`` test
  runs under the ``no_leaks`` check (no /dev/shm entry, no child left behind).
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator, Iterable
from typing import Any

import ferrocsp as csp
from _support import WAIT
from ferrocsp._native import _in_coroutine, _in_scheduler

BACKENDS = ("thread", "greenlet", "asyncio", "coroutine")
#: The in-process backends and the OS-process one, twice: ``os`` drives a body like a thread
#: in the child, ``os-asyncio`` runs it as a coroutine on an event loop in the child (its
#: operations are ``aread``/``awrite``/``aselect`` on shared channels). Both are ``os``
#: for the body and the test (``k.backend``); only the id differs.
SHARED_BACKENDS = (*BACKENDS, "os", "os-asyncio")

Body = Callable[..., Coroutine[Any, Any, Any]]


class _Done:
    """An awaitable whose result is already known (the blocking call was made eagerly)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, None, Any]:
        return self.value
        yield  # makes this a generator function; never reached


class _SyncIter:
    """``async for`` over a blocking iterator, for the thread and greenlet backends."""

    __slots__ = ("_it",)

    def __init__(self, iterable: Iterable[Any]) -> None:
        self._it = iter(iterable)

    def __aiter__(self) -> _SyncIter:
        return self

    def __anext__(self) -> _Done:
        try:
            return _Done(next(self._it))
        except StopIteration:
            raise StopAsyncIteration from None


def drive(coro: Coroutine[Any, Any, Any]) -> Any:
    """Runs a kit body's coroutine to its end in the calling thread/greenlet."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError(
        "a kit process body suspended outside asyncio: await only k.read/k.write/k.select/"
        "k.iter (and k.call) in shared bodies"
    )


class _OsBody:
    """A kit body as an ``os`` process: picklable (the body by reference, ``args`` by value).

    Called in the child, it drives the body with an ``os`` kit (``aio``: runs it with
    ``asyncio.run`` and an asyncio-flavoured one); ``capture`` returns the raw outcome as
    ``(ok, value)`` (``spawn``), ``args`` are bound first (``callable``).
    """

    def __init__(
        self,
        body: Body,
        name: str,
        args: tuple[Any, ...] = (),
        *,
        capture: bool = False,
        aio: bool = False,
    ) -> None:
        self.body = body
        self.args = args
        self.capture = capture
        self.aio = aio
        self.__name__ = self.__qualname__ = name

    def _run(self, *args: Any, **kwargs: Any) -> Any:
        if self.aio:
            return asyncio.run(self.body(Kit("os-asyncio"), *self.args, *args, **kwargs))
        return drive(self.body(Kit("os"), *self.args, *args, **kwargs))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.capture:
            return self._run(*args, **kwargs)
        try:
            return True, self._run(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test's process
            return False, exc


class Task:
    """One body started by ``Kit.spawn``/``spawn_many``: like ``_support.Background``.

    ``join``/``exception`` wait for the whole group started by one ``spawn_many`` (one
    ``Par``), and so does ``done``; with ``spawn`` the group is the one body.
    """

    def __init__(self, handle: csp.Handle[list[Any]], index: int, name: str) -> None:
        self._handle = handle
        self._index = index
        self.name = name
        self.done = _DoneFlag(handle)

    def _outcome(self, timeout: float) -> tuple[bool, Any]:
        try:
            results = self._handle.join(timeout=timeout)
        except TimeoutError:
            raise AssertionError(f"{self.name} did not finish within {timeout} s") from None
        out: tuple[bool, Any] = results[self._index]
        return out

    def join(self, timeout: float = WAIT) -> Any:
        """The body's return value; re-raises what it raised."""
        ok, value = self._outcome(timeout)
        if not ok:
            raise value
        return value

    def exception(self, timeout: float = WAIT) -> BaseException | None:
        """Waits for the body and returns the exception it raised (None if it returned)."""
        ok, value = self._outcome(timeout)
        return None if ok else value


class _DoneFlag:
    """``task.done``: the ``is_set``/``wait`` subset of ``threading.Event``."""

    def __init__(self, handle: csp.Handle[Any]) -> None:
        self._handle = handle

    def is_set(self) -> bool:
        return not self._handle.alive

    def wait(self, timeout: float) -> bool:
        try:
            self._handle.join(timeout=timeout)
        except TimeoutError:
            return False
        return True


class Kit:
    """The channel operations and process factories of one backend (see the module doc)."""

    def __init__(self, backend: str) -> None:
        if backend not in SHARED_BACKENDS:
            raise ValueError(f"unknown backend {backend!r}")
        #: ``os-asyncio`` is ``os`` whose bodies run on an event loop in the child.
        self.child_async = backend == "os-asyncio"
        self.backend = "os" if self.child_async else backend
        #: Whether the operations are awaitables (in a child too, for ``os-asyncio``).
        self.is_async = backend in ("asyncio", "coroutine", "os-asyncio")
        #: What ``Par(backend=...)`` gets: plain callables run on it (asyncio: the default).
        self.par_backend: str | None = "os" if self.child_async else None
        if not self.is_async or backend == "coroutine":
            self.par_backend = backend

    def __repr__(self) -> str:
        return f"Kit({'os-asyncio' if self.child_async else self.backend!r})"

    # ------------------------------------------------------------------ operations

    def read(self, ch: csp.Channel | csp.Reader, *, timeout: float | None = None) -> Awaitable[Any]:
        if self.is_async:
            return ch.aread(timeout=timeout)
        return _Done(ch.read(timeout=timeout))

    def write(
        self, ch: csp.Channel | csp.Writer, value: Any, *, timeout: float | None = None
    ) -> Awaitable[None]:
        if self.is_async:
            return ch.awrite(value, timeout=timeout)
        ch.write(value, timeout=timeout)
        return _Done(None)

    def choose(self, alt: csp.Alt, method: str) -> Awaitable[tuple[Any, Any]]:
        """``method`` is ``"select"``, ``"pri_select"`` or ``"fair_select"``."""
        if self.is_async:
            result: Awaitable[tuple[Any, Any]] = getattr(alt, "a" + method)()
            return result
        return _Done(getattr(alt, method)())

    def select(self, alt: csp.Alt) -> Awaitable[tuple[Any, Any]]:
        return self.choose(alt, "select")

    def pri_select(self, alt: csp.Alt) -> Awaitable[tuple[Any, Any]]:
        return self.choose(alt, "pri_select")

    def fair_select(self, alt: csp.Alt) -> Awaitable[tuple[Any, Any]]:
        return self.choose(alt, "fair_select")

    def iter(self, source: csp.Channel | csp.Reader) -> AsyncIterator[Any]:
        if self.is_async:
            return source.__aiter__()  # type: ignore[return-value]
        return _SyncIter(source)

    def call(self, fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
        """A blocking call that is not a channel operation (``time.sleep``, joining a thread),
        made without stopping the other processes of a cooperative scheduler."""
        if self.backend == "coroutine":
            return csp.aio(fn, *args)
        if self.is_async:
            return asyncio.to_thread(fn, *args)
        if self.backend == "greenlet":
            return _Done(csp.io(fn, *args))
        # thread, and os (a child runs each body on a thread of its own).
        return _Done(fn(*args))

    # ------------------------------------------------------------------ processes

    def function(self, body: Body, *, name: str | None = None) -> Callable[..., Any]:
        """The body as what ``@csp.process`` would wrap: an ``async def`` for asyncio, a plain
        function otherwise; ``__name__`` is ``name`` or the body's name."""
        kit = self
        if self.backend == "os":
            return _OsBody(body, name or body.__name__, aio=self.child_async)
        if self.is_async:

            async def run_async(*args: Any, **kwargs: Any) -> Any:
                return await body(kit, *args, **kwargs)

            fn: Callable[..., Any] = run_async
        else:

            def run_sync(*args: Any, **kwargs: Any) -> Any:
                return drive(body(kit, *args, **kwargs))

            fn = run_sync
        fn.__name__ = fn.__qualname__ = name or body.__name__
        return fn

    def process(self, body: Body, *, name: str | None = None) -> Callable[..., csp.Process[Any]]:
        """A process factory, as ``@csp.process(name=..., backend=...)`` on the body."""
        fn = self.function(body, name=name)
        backend = self.par_backend
        pname = name or body.__name__

        def make(*args: Any, **kwargs: Any) -> csp.Process[Any]:
            return csp.Process(fn, args, kwargs, name=pname, backend=backend)

        return make

    def callable(self, body: Body, *args: Any, name: str | None = None) -> Callable[[], Any]:
        """A plain callable (no decorator) running the body with ``args``, for ``Par(f)``."""
        if self.backend == "os":
            return _OsBody(body, name or body.__name__, args, aio=self.child_async)
        fn = self.function(body, name=name)
        if self.is_async:

            async def bound_async() -> Any:
                return await fn(*args)

            bound: Callable[[], Any] = bound_async
        else:

            def bound_sync() -> Any:
                return fn(*args)

            bound = bound_sync
        bound.__name__ = bound.__qualname__ = fn.__name__
        return bound

    def Par(self, *processes: object) -> csp.Par:  # noqa: N802 - mirrors csp.Par
        return csp.Par(*processes, backend=self.par_backend)

    def Spawn(self, process: object) -> csp.Handle[Any]:  # noqa: N802 - mirrors csp.Spawn
        return csp.Spawn(process, backend=self.par_backend)

    def run(self, body: Body, *args: Any, **kwargs: Any) -> Any:
        """Runs the body as one process of this backend; returns its value or raises what it
        raised (poison and retire included: the shutdown rules are not applied)."""
        return self.spawn(body, *args, **kwargs).join()

    def spawn(self, body: Body, *args: Any, **kwargs: Any) -> Task:
        """Starts the body as one process of this backend; returns at once (see ``Task``)."""
        return self.spawn_many(body, [args], kwargs)[0]

    def spawn_many(
        self, body: Body, arg_lists: Iterable[tuple[Any, ...]], kwargs: dict[str, Any] | None = None
    ) -> list[Task]:
        """Starts one process per argument tuple, all in one ``Par`` (so the greenlet and
        asyncio backends run them on one scheduler / one event loop)."""

        fn = self.function(body)
        captured: Callable[..., Any]
        if self.backend == "os":
            captured = _OsBody(body, body.__name__, capture=True, aio=self.child_async)
        elif self.is_async:

            async def captured_async(*args: Any, **kw: Any) -> tuple[bool, Any]:
                try:
                    return True, await fn(*args, **kw)
                except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
                    return False, exc

            captured = captured_async
        else:

            def captured_sync(*args: Any, **kw: Any) -> tuple[bool, Any]:
                try:
                    return True, fn(*args, **kw)
                except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
                    return False, exc

            captured = captured_sync
        backend = self.par_backend
        procs = [
            csp.Process(captured, args, kwargs or {}, name=body.__name__, backend=backend)
            for args in arg_lists
        ]
        h = csp.Par(*procs).start()
        return [Task(h, i, f"{body.__name__}[{self.backend}]") for i in range(len(procs))]


def current_backend() -> str:
    """The backend the caller runs on, found from the runtime (not from the kit): a child
    process of multiprocessing means os, a running event loop asyncio, a coroutine task of the
    native scheduler coroutine, a greenlet scheduler greenlet, otherwise a thread."""
    if multiprocessing.parent_process() is not None:
        return "os"
    if _in_coroutine():
        return "coroutine"
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return "asyncio"
    return "greenlet" if _in_scheduler() else "thread"
