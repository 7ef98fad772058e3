"""Backends: how a process is mapped onto the machine.

Invariant: a backend only decides *where* ``_process.execute`` runs; channel semantics and
shutdown rules are the same under every backend. This version has the thread backend, the
greenlet backend (many processes multiplexed on one OS thread, ``_greenlet.py``) and the
asyncio backend (the default backend of ``async def`` processes; the others run plain
functions), the native coroutine backend (``async def`` processes on a Rust scheduler, no
event loop: ``_coroutine.py``) and the OS-process backend (each process in a child OS
process, ``_os.py``; channels it is given move to shared memory).
Precedence of the choice: ``@process(backend=)`` > ``Par(backend=)`` >
``set_default_backend()`` > the ``FERROCSP_BACKEND`` environment variable > ``"thread"``.
"""

from __future__ import annotations

import os
from typing import Literal, get_args

__all__ = ["AVAILABLE", "Backend", "check", "resolve", "set_default_backend"]

#: The names a ``backend=`` argument accepts (for type checkers; ``check`` at run time).
Backend = Literal["thread", "greenlet", "asyncio", "coroutine", "os"]
AVAILABLE: tuple[Backend, ...] = get_args(Backend)
PLANNED: tuple[str, ...] = ()

_default: str | None = None


def check(name: object) -> Backend:
    """Validates a backend name; returns it."""
    if not isinstance(name, str):
        raise TypeError(f"backend must be a str, not {type(name).__name__}")
    if name in AVAILABLE:
        return name
    if name in PLANNED:
        raise ValueError(
            f"backend {name!r} is not available in this version of ferrocsp "
            f"(available: {', '.join(AVAILABLE)})"
        )
    raise ValueError(f"unknown backend {name!r} (available: {', '.join(AVAILABLE)})")


def _check_default(name: object) -> Backend:
    backend = check(name)
    if backend in ("asyncio", "coroutine"):
        raise ValueError(
            f"{backend!r} cannot be the default backend: it runs async def processes, while the "
            "default applies to plain functions (choose it with @process(backend=) or "
            "Par(backend=))"
        )
    return backend


def set_default_backend(name: Backend | None) -> None:
    """Sets the backend used for plain-function processes when neither the process nor its
    Par names one (None: reset). ``async def`` processes run on asyncio unless they or their
    Par name ``"coroutine"``."""
    global _default
    _default = None if name is None else _check_default(name)


def resolve(*choices: str | None) -> str:
    """The first backend named in ``choices``, then the default, the environment, "thread"."""
    for c in choices:
        if c is not None:
            return c
    if _default is not None:
        return _default
    env = os.environ.get("FERROCSP_BACKEND")
    if env:
        try:
            return _check_default(env)
        except ValueError as exc:
            raise ValueError(f"FERROCSP_BACKEND: {exc}") from None
    return "thread"
