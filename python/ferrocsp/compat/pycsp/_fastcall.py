"""Calling a compat channel end as fast as calling ``functools.partial`` itself.

The compat ends are ``functools.partial`` subclasses (``cin()`` calls the ferrocsp end's
``read`` with no Python frame in between). On CPython 3.11 a class statement makes a
*mutable* heap type, and a mutable heap type does not inherit its base's vectorcall
(``Py_TPFLAGS_HAVE_VECTORCALL``; CPython 3.12 inherits it, and clears it again if ``__call__``
is assigned). Without it every ``cin()`` / ``cout(x)`` goes through ``tp_call``: a tuple of
arguments, ``partial_call``, then a second dispatch, measured at about 0.08 µs of a
0.76 µs commstime communication on the greenlet backend (bench/compat).

``seal(cls)`` makes such a subclass what CPython 3.11 makes of a subclass created through its
C API with ``Py_TPFLAGS_IMMUTABLETYPE``: immutable, and inheriting the vectorcall. Each
instance already carries partial's vectorcall pointer (``partial_new`` sets it for
subclasses too); only the type flag was missing.

Invariants:
- Only CPython before 3.12 is touched, only a subclass of ``functools.partial`` whose
  ``__call__`` is partial's, and only after checking that the two fields read through
  ``ctypes`` (``tp_flags``, ``tp_vectorcall_offset``) hold exactly what Python reports for the
  class and for ``functools.partial``; otherwise ``seal`` changes nothing (the class works,
  at ``tp_call`` speed).
- A sealed class cannot get new class attributes afterwards (``TypeError``), which is what
  keeps the inherited vectorcall equal to calling the class's ``__call__``.
"""

from __future__ import annotations

import ctypes
import functools
import platform
import sys

__all__ = ["seal"]

_HAVE_VECTORCALL = 1 << 11
_IMMUTABLETYPE = 1 << 8
#: Byte offsets in CPython 3.8-3.11's ``PyTypeObject`` on 64-bit builds (no ``Py_TRACE_REFS``).
_TP_VECTORCALL_OFFSET = 7 * 8
_TP_FLAGS = 21 * 8


def _field(cls: type, offset: int) -> ctypes.c_ulong:
    return ctypes.c_ulong.from_address(id(cls) + offset)


def seal(cls: type) -> bool:
    """Gives ``cls`` (a ``functools.partial`` subclass) partial's vectorcall; returns whether
    it has it now."""
    if cls.__flags__ & _HAVE_VECTORCALL:
        return True  # CPython 3.12+ inherited it
    ok = (
        platform.python_implementation() == "CPython"
        and sys.version_info < (3, 12)
        and ctypes.sizeof(ctypes.c_void_p) == 8
        and issubclass(cls, functools.partial)
        and cls.__call__ is functools.partial.__call__
        and functools.partial.__flags__ & _HAVE_VECTORCALL
        and _field(cls, _TP_FLAGS).value == cls.__flags__
        and _field(functools.partial, _TP_FLAGS).value == functools.partial.__flags__
        and _field(cls, _TP_VECTORCALL_OFFSET).value
        == _field(functools.partial, _TP_VECTORCALL_OFFSET).value
        != 0
    )
    if not ok:
        return False
    _field(cls, _TP_FLAGS).value |= _HAVE_VECTORCALL | _IMMUTABLETYPE
    return bool(cls.__flags__ & _HAVE_VECTORCALL)
