"""Tracing: process starts and ends and channel events, as JSON lines (``ferrocsp.trace``),
or in the Chrome trace event format (``format="chrome"``, ``_chrome.py``).

Invariants:
- Off, the cost is one relaxed atomic load per channel operation (the native hooks,
  ``crates/ferrocsp-py/src/trace.rs``) and one global bool (``ENABLED``) per process start.
- One trace is recorded at a time; every line is one JSON object, written whole under a lock.
- Timestamps ``t`` are seconds of ``time.monotonic()`` since the trace started (the header
  line holds the monotonic time of its start).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any, Literal

from . import _native

__all__ = ["ENABLED", "Trace", "TraceFormat", "from_env", "trace"]

#: ``"jsonl"``: one JSON object per line, written as it happens (``ferrocsp trace`` plots
#: it); ``"chrome"``: one Chrome trace event document, written when the trace stops.
TraceFormat = Literal["jsonl", "chrome"]

#: Whether a trace is being recorded (read by ``_process`` at each process start).
ENABLED = False

_active: Trace | None = None
_active_lock = threading.Lock()
_async_name: Any = None  # _process._async_name, bound when a trace starts (import cycle)


class Trace:
    """A trace being recorded to a file; ``stop()`` (or leaving ``with``) ends it.

    Each line of the file is a JSON object with ``t`` (seconds since the trace started),
    ``ev`` and:

    - ``"start"`` / ``"end"``: a process started / ended; ``proc``, ``backend``, and for
      ``end`` its ``status`` (``"ok"``, or ``"failed"`` with ``error``, the exception's type).
    - ``"read"`` / ``"write"``: a communication completed on channel ``chan`` (``op`` is
      ``"alt"`` when an Alt made it).
    - ``"block"``: an operation must wait; ``op`` is ``"read"``, ``"write"`` or ``"alt"``
      (``chan`` then lists every channel of the Alt, comma-separated).
    - ``"poison"``: ``chan`` was poisoned; ``"retire"``: an end of ``chan`` retired, ``op``
      says which (``"reader"``/``"writer"``; ends retired by being garbage-collected are not
      traced).

    Channel events also carry ``proc`` (the process that did it, ``null`` outside processes)
    and ``thread`` (the Python thread's name and ident). The first line is a header:
    ``{"ev": "trace", "t": 0.0, "monotonic": ..., "pid": ...}``.

    With ``format="chrome"`` the same events are kept in memory and written when the trace
    stops, as a Chrome trace event document (``{"traceEvents": [...]}``) that Perfetto
    (ui.perfetto.dev) and ``chrome://tracing`` open: one track per process, its life and
    its blocked operations as slices, communications as instant events.
    """

    def __init__(self, path: str | os.PathLike[str], format: TraceFormat = "jsonl") -> None:
        if format not in ("jsonl", "chrome"):
            raise ValueError(f"unknown trace format {format!r} (jsonl or chrome)")
        self.path = Path(path)
        self.format: TraceFormat = format
        self._file: IO[str] | None = self.path.open("w", encoding="utf-8")
        self._records: list[dict[str, Any]] = []  # format "chrome": written at stop()
        # Reentrant: a signal handler in the middle of a write may trace (poison) too.
        self._lock = threading.RLock()
        self._t0 = time.monotonic()
        self._pid = os.getpid()
        self._write({"ev": "trace", "t": 0.0, "monotonic": self._t0, "pid": self._pid})

    def _write(self, rec: dict[str, Any]) -> None:
        if self.format == "chrome":
            with self._lock:
                if self._file is not None and rec["ev"] != "trace":
                    self._records.append(rec)
            return
        line = json.dumps(rec, separators=(",", ":")) + "\n"
        with self._lock:
            if self._file is not None:
                self._file.write(line)

    def _event(self, rec: dict[str, Any]) -> None:
        t = threading.current_thread()
        rec["t"] = round(time.monotonic() - self._t0, 9)
        rec["thread"] = t.name
        rec["tid"] = t.ident
        self._write(rec)

    @property
    def active(self) -> bool:
        """Whether this trace is still being recorded."""
        return self._file is not None

    def stop(self) -> None:
        """Stops recording and closes the file (idempotent)."""
        global ENABLED, _active
        with _active_lock:
            if _active is self:
                _native._set_trace(None)
                ENABLED = False
                _active = None
        with self._lock:
            f, self._file = self._file, None
            records, self._records = self._records, []
        if f is not None:
            if self.format == "chrome":
                from ._chrome import to_chrome

                json.dump(to_chrome(records, self._pid), f, separators=(",", ":"))
            f.close()

    def __enter__(self) -> Trace:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "recording" if self.active else "stopped"
        return f"<Trace {str(self.path)!r} {state}>"


def _current_process() -> str | None:
    name: str | None = _async_name.get() if _async_name is not None else None
    return name if name is not None else _native._process_name()


def _sink(ev: str, op: str, chan: str) -> None:
    """The native hooks' callback: one channel event."""
    tr = _active
    if tr is None:
        return
    rec: dict[str, Any] = {"ev": ev, "chan": chan, "proc": _current_process()}
    if op:
        rec["op"] = op
    tr._event(rec)


def trace(path: str | os.PathLike[str], *, format: TraceFormat = "jsonl") -> Trace:
    """Starts recording a trace to ``path`` (JSON lines, see ``Trace``); returns the ``Trace``.

    Use ``with ferrocsp.trace("trace.jsonl"): ...`` or call ``.stop()``. Setting the
    environment variable ``FERROCSP_TRACE=trace.jsonl`` records the whole program instead
    (started at import, stopped at exit). One trace at a time: ``RuntimeError`` if one is
    being recorded. ``ferrocsp trace trace.jsonl -o timeline.png`` plots it.

    ``format="chrome"`` (or ``FERROCSP_TRACE_FORMAT=chrome``) writes the Chrome trace event
    format instead, for Perfetto and ``chrome://tracing``; ``ferrocsp trace trace.jsonl -o
    trace.json`` converts a JSON-lines trace to it.

    Off, tracing costs one relaxed atomic load per channel operation.
    """
    global ENABLED, _active, _async_name
    from ._process import _async_name as var

    _async_name = var
    with _active_lock:
        if _active is not None:
            raise RuntimeError(f"a trace is already being recorded to {str(_active.path)!r}")
        tr = Trace(path, format)
        _active = tr
        ENABLED = True
        _native._set_trace(_sink)
    return tr


def _backend() -> str:
    return "greenlet" if _native._in_scheduler() else "thread"


def _end(tr: Trace, name: str, backend: str, error: BaseException | None) -> None:
    rec: dict[str, Any] = {"ev": "end", "proc": name, "backend": backend, "status": "ok"}
    if error is not None:
        rec["status"] = "failed"
        rec["error"] = type(error).__name__
    tr._event(rec)


def run_traced(proc: Any, run: Callable[[Any], Any]) -> Any:
    """Runs ``run(proc)`` (``_process.execute``'s body) between start and end events."""
    tr, backend = _active, _backend()
    if tr is not None:
        tr._event({"ev": "start", "proc": proc.name, "backend": backend})
    out = run(proc)
    if tr is not None:
        _end(tr, proc.name, backend, out.error)
    return out


async def arun_traced(proc: Any, run: Callable[[Any], Awaitable[Any]]) -> Any:
    """The ``async def`` twin of ``run_traced``."""
    tr = _active
    if tr is not None:
        tr._event({"ev": "start", "proc": proc.name, "backend": proc.backend})
    out = await run(proc)
    if tr is not None:
        _end(tr, proc.name, proc.backend, out.error)
    return out


def from_env() -> None:
    """Starts the trace named by ``FERROCSP_TRACE`` (at import); stops it at exit."""
    path = os.environ.get("FERROCSP_TRACE")
    if not path:
        return
    import atexit

    fmt = os.environ.get("FERROCSP_TRACE_FORMAT", "jsonl") or "jsonl"
    if fmt not in ("jsonl", "chrome"):
        print(f"ferrocsp: FERROCSP_TRACE_FORMAT={fmt}: jsonl or chrome", file=sys.stderr)
        return
    try:
        tr = trace(path, format="chrome" if fmt == "chrome" else "jsonl")
    except OSError as exc:
        print(f"ferrocsp: FERROCSP_TRACE={path}: {exc}", file=sys.stderr)
        return
    atexit.register(tr.stop)
