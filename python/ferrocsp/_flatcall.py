"""``call(fn, args, kwargs)``: ``fn(*args, **kwargs)`` in the caller's interpreter loop where
CPython allows it, so that the process wrappers add no C stack under a process body.

Why: a process greenlet that blocks saves, at every switch, the C stack between the point where
it switched and the bottom of its greenlet, and restores it when it resumes. On CPython 3.11 a
call written with ``*args``/``**kwargs`` (``CALL_FUNCTION_EX``) runs a Python callee in a new
C-level call of the interpreter (about 370 bytes of C stack each), while a call with a fixed
number of positional arguments runs it in the caller's own interpreter loop (no C frame). The
process wrappers (``_process.execute``, the compat layer's ``_run``) call the body through
``call``, so that a blocked body's saved stack holds one interpreter frame, not one per wrapper.

Invariants:
- ``call(fn, args, kwargs)`` does exactly what ``fn(*args, **kwargs)`` does (same arguments,
  result and exception, the same frames in a traceback plus this one); only the C stack it
  uses differs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["call"]


def call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    """``fn(*args, **kwargs)``; up to six positional arguments and no keywords go through a
    fixed-arity call (see the module docstring for why)."""
    if not kwargs:
        n = len(args)
        if n == 0:
            return fn()
        if n == 1:
            return fn(args[0])
        if n == 2:
            return fn(args[0], args[1])
        if n == 3:
            return fn(args[0], args[1], args[2])
        if n == 4:
            return fn(args[0], args[1], args[2], args[3])
        if n == 5:
            return fn(args[0], args[1], args[2], args[3], args[4])
        if n == 6:
            return fn(args[0], args[1], args[2], args[3], args[4], args[5])
    return fn(*args, **kwargs)
