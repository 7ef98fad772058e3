"""The OS-process backend: each process runs in a child OS process (real multi-core).

Invariants:
- The process (function by reference, arguments) is pickled by the parent, under
  ``_shm.crossing``, whatever the start method: channels and ends among the arguments move to
  shared memory and the child attaches to them. So ``fork``, ``spawn`` and ``forkserver``
  behave alike (the default is ``forkserver``, Python 3.14's default: forking a parent that
  runs threads is unsafe).
- Every child ends with exactly one outcome: the result message it sent (value, or failure
  with the shutdown rules already applied in the child), or, when it died without sending
  one, ``ProcessCrashed`` naming it and the signal; the parent then poisons the channels it
  was given, so its peers wake instead of hanging.
- ``OsHost.wait`` returns True only after every child was reaped (no zombies); ``kill`` ends
  the children still running (Ctrl-C after the grace period, interpreter exit).
- The collecting thread waits on each child's connection and sentinel; a child's connection
  leaves that wait set no later than it is closed (when the child is reaped), whichever of
  the two the OS reports first.
- Networked channels among the arguments pickle as a connection key only; the options of
  those connections (URL, credentials, pickle key) go to the child as an argument of its
  entry point, beside the pickle, and the child closes the connections it opened from them
  once it sent its outcome (``ferrocsp.net._cross``).
- A child never outlives its parent: a watchdog thread in the child exits it when the
  parent's sentinel closes (the parent was killed, or exited without joining).
- Deadlock detection spans the network (docs/design.md, "Deadlock detection across OS
  processes"): the first host creates the participant table, each child's slot is reserved
  (by pid) before the child runs anything that could wait, the child attaches at its start,
  and the collecting thread frees a child's slot only once it stored the child's outcome; it
  counts as a running thread except while it waits for its children (``_xidle``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import pickle
import sys
import threading
import traceback
from multiprocessing.connection import Connection
from typing import Any

from .. import _shm
from .._errors import ProcessCrashed
from .._native import (
    _ignore_thread,
    _xidle,
    _xtable_attach,
    _xtable_create,
    _xtable_release,
    _xtable_reserve,
)
from .._process import Outcome, Process, execute, note_process
from .._shutdown import poison_all
from ._hosted import ThreadHost

__all__ = ["START_METHODS", "OsHost", "start_method"]

START_METHODS = ("forkserver", "spawn", "fork")
_ENV = "FERROCSP_START_METHOD"


def start_method() -> str:
    """The multiprocessing start method for OS processes: ``$FERROCSP_START_METHOD`` or
    ``"forkserver"``."""
    m = os.environ.get(_ENV) or "forkserver"
    if m not in START_METHODS:
        raise ValueError(f"{_ENV}: unknown start method {m!r} (one of {', '.join(START_METHODS)})")
    return m


def _pickle_process(proc: Process[Any]) -> tuple[bytes, dict[str, Any]]:
    """The process pickled for a child, and the options of the network connections its
    networked channels need (carried to the child beside the pickle, never in it)."""
    # Loaded with ferrocsp.net, so only a program with networked channels has it.
    cross = sys.modules.get("ferrocsp.net._cross")
    try:
        if cross is None:
            return _shm.dumps(proc), {}
        with cross.collecting() as nets:
            return _shm.dumps(proc), nets
    except Exception as exc:
        raise TypeError(
            f"process {proc.name!r} cannot run on backend 'os': it must be picklable by "
            f"reference (a module-level function) with picklable arguments ({exc})"
        ) from exc


def _exit_with_parent(sentinel: Any) -> None:
    _ignore_thread()  # a watchdog, not a process: never keeps a deadlock from being reported
    multiprocessing.connection.wait([sentinel])
    # The parent is gone (killed, or exited without joining): nobody will collect this
    # process's outcome or poison its channels, so it must not outlive it.
    os._exit(70)


def _child_main(
    payload: bytes,
    conn: Connection,
    name: str,
    table: tuple[int, int, bytes] | None,
    nets: dict[str, Any] | None = None,
) -> None:
    """The child's entry point: run the process, send back one outcome message. ``nets``:
    the options of the network connections of the networked channels in ``payload``."""
    if table is not None:
        # Without the table this child is never seen as waiting, so its network is never
        # reported deadlocked: a failure here costs detection, nothing else.
        with contextlib.suppress(OSError, ValueError):
            _xtable_attach(*table)
    parent = multiprocessing.parent_process()
    if parent is not None and parent.sentinel is not None:
        threading.Thread(
            target=_exit_with_parent,
            args=(parent.sentinel,),
            name="ferrocsp-parent-watch",
            daemon=True,
        ).start()
    cross: Any = None
    if nets:
        from ..net import _cross

        cross = _cross
        cross.install(nets)
    try:
        proc: Process[Any] = _shm.loads(payload)
        out = execute(proc)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        note_process(exc, name)
        out = Outcome(error=exc)
    if out.error is not None:
        tb = "".join(traceback.format_exception(out.error)).rstrip()
        out.error.add_note(f"traceback in OS process {os.getpid()}:\n{tb}")
    try:
        data = _shm.dumps((out.value, out.error))
    except Exception as exc:  # noqa: BLE001 - an unpicklable result or exception
        what = "exception" if out.error is not None else "result"
        err = TypeError(f"the {what} of process {name!r} cannot be pickled: {exc}")
        err.add_note(f"in process {name!r}")
        if out.error is not None:
            err.add_note(f"it was: {out.error!r}")
        data = pickle.dumps((None, err), protocol=5)
    try:
        conn.send_bytes(data)
    finally:
        conn.close()
        if cross is not None:
            cross.close_all()  # flushes what the connections still send (end counts)


class OsHost(ThreadHost):
    """Runs ``procs`` in child OS processes; a daemon thread collects their outcomes."""

    what = "the OS-process backend"

    __slots__ = ("_children", "_conns", "_ctx", "_payloads")

    def __init__(self, procs: list[Process[Any]], name: str) -> None:
        if getattr(multiprocessing.current_process(), "_inheriting", False):
            # We run in a child that is importing the parent's main module (spawn and
            # forkserver re-run a script's top level): starting children from here would
            # recurse; multiprocessing's own error says nothing of ferrocsp.
            raise RuntimeError(
                f"{name}: backend='os' processes were started while a child process imports "
                "the main script; put the code that starts them under "
                '`if __name__ == "__main__":` (each child re-runs the script\'s top level)'
            )
        self._ctx: Any = multiprocessing.get_context(start_method())
        # Errors before anything starts.
        self._payloads: list[tuple[bytes, dict[str, Any]]] = [_pickle_process(p) for p in procs]
        self._children: list[Any] = []
        self._conns: list[Connection] = []
        super().__init__(procs, f"{name}:os")

    def start(self) -> None:
        """Starts the children, then the thread that collects their outcomes."""
        table: tuple[int, int, bytes] | None = None
        with contextlib.suppress(OSError):
            table = _xtable_create()  # no table: no detection across processes, nothing else
        try:
            for proc, (payload, nets) in zip(self._procs, self._payloads, strict=True):
                r, w = self._ctx.Pipe(duplex=False)
                child = self._ctx.Process(
                    target=_child_main,
                    args=(payload, w, proc.name, table, nets),
                    name=f"ferrocsp:{proc.name}",
                )
                child.start()
                # Before this thread can wait: until the child attaches, its slot says running.
                _xtable_reserve(child.pid)
                w.close()
                self._children.append(child)
                self._conns.append(r)
        except BaseException:
            self.kill()
            for child in self._children:
                child.join()  # no collecting thread runs yet to reap them
            raise
        self._payloads = []
        super().start()

    def _run(self) -> None:
        waiting: dict[Any, int] = {}
        for i, (child, conn) in enumerate(zip(self._children, self._conns, strict=True)):
            waiting[conn] = i
            waiting[child.sentinel] = i
        while waiting:
            # While it waits, this thread cannot wake anyone: a deadlock may be proven.
            _xidle(True)
            try:
                ready = multiprocessing.connection.wait(list(waiting))
            finally:
                _xidle(False)
            for obj in ready:
                if obj not in waiting:
                    continue  # a connection that _ended closed earlier in this round
                i = waiting.pop(obj)
                if isinstance(obj, Connection):
                    self._receive(i)
                else:
                    # A child killed mid-run makes its sentinel and its connection ready at
                    # about the same time, and wait() may report the sentinel alone: _ended
                    # closes the connection, so it must leave the wait set with it (waiting
                    # on a closed connection raises OSError('handle is closed') and would
                    # abandon the other children unreaped).
                    waiting.pop(self._conns[i], None)
                    self._ended(i)

    def _receive(self, i: int) -> None:
        conn = self._conns[i]
        try:
            value, error = _shm.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return  # died without a result: the sentinel reports it
        except Exception as exc:  # noqa: BLE001 - e.g. a result that cannot be unpickled here
            exc.add_note(f"in process {self._procs[i].name!r} (unpickling its result)")
            value, error = None, exc
        self.outcomes[i] = Outcome(value=value, error=error)

    def _ended(self, i: int) -> None:
        child = self._children[i]
        try:
            self._reaped(i)
        finally:
            # After the outcome is stored (this thread is running meanwhile): a proof can
            # never count the child gone while its joiner has not been told.
            _xtable_release(child.pid)

    def _reaped(self, i: int) -> None:
        child = self._children[i]
        child.join()
        if self.outcomes[i] is None and self._conns[i].poll():
            self._receive(i)  # the result arrived just before the exit
        self._conns[i].close()
        if self.outcomes[i] is not None:
            return
        proc = self._procs[i]
        code = child.exitcode
        if code is not None and code < 0:
            err = ProcessCrashed(proc.name, -code)
        else:
            err = ProcessCrashed(
                proc.name, None, f"process {proc.name!r} exited abruptly (exit code {code})"
            )
        note_process(err, proc.name)
        poison_all(proc.endpoints())  # its peers must not hang
        self.outcomes[i] = Outcome(error=err)

    def kill(self) -> None:
        """Kills the children still running (they are reaped by the collecting thread)."""
        for child in self._children:
            if child.exitcode is None:
                with contextlib.suppress(OSError, ValueError):
                    child.kill()
