"""Pickling channels and ends by identity.

Invariant: within one interpreter, unpickling a channel or an end gives back the *same* object
(so every copy of an end is that one end, and retiring any copy retires it). An object is
entered in the registry only when it is first pickled, so channels that never travel cost
nothing. Pickled for another OS process (``ferrocsp._shm.crossing``: the OS-process
backend's arguments and results, values sent over a shared channel), a channel moves to shared
memory and pickles as a reference to its segment, which any process can attach to
(``ferrocsp._shm``); a channel already in shared memory always pickles that way. Unpickling
an in-process reference in another interpreter fails with a clear error instead of silently
making an unrelated channel.
"""

from __future__ import annotations

import os
import secrets
import weakref
from typing import Any

from . import _shm

__all__ = ["reduce_channel", "reduce_end", "reduce_net", "restore"]

_BOOT = secrets.token_hex(8)
_objects: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()


def _token() -> tuple[int, str]:
    # The pid changes in a forked child while _BOOT does not: either difference means "another
    # interpreter".
    return (os.getpid(), _BOOT)


def _describe(obj: Any) -> tuple[str, str]:
    kind = type(obj).__name__.lower()
    chan = obj if kind == "channel" else obj.channel
    return kind, str(chan.name)


def reduce_channel(obj: Any) -> tuple[Any, tuple[Any, ...]]:
    """``Channel.__reduce__``: register ``obj`` and pickle a reference to it."""
    if _shm.is_crossing() or obj._shm is not None:
        return _shm.reduce_channel(obj)
    return _reduce(obj)


def reduce_end(obj: Any) -> tuple[Any, tuple[Any, ...]]:
    """``Reader.__reduce__`` / ``Writer.__reduce__``."""
    if _shm.is_crossing() or obj.channel._shm is not None:
        return _shm.reduce_end(obj)
    return _reduce(obj)


def reduce_net(obj: Any) -> tuple[Any, tuple[Any, ...]]:
    """``__reduce__`` of a networked channel or end (``ferrocsp.net._cross``)."""
    from .net._cross import reduce_net as reduce

    return reduce(obj)


def _reduce(obj: Any) -> tuple[Any, tuple[Any, ...]]:
    key = hash(obj)
    _objects[key] = obj
    kind, name = _describe(obj)
    return (restore, (_token(), key, kind, name))


def restore(token: tuple[int, str], key: int, kind: str, name: str) -> Any:
    """Unpickle: the same object, if this is the interpreter it was pickled in."""
    if tuple(token) != _token():
        raise ValueError(
            f"cannot unpickle {kind} of channel {name!r} in another OS process: it was "
            "pickled for this interpreter only; channels cross OS processes as arguments and "
            "results of backend='os' processes and as values sent over shared channels"
        )
    obj = _objects.get(key)
    if obj is None:
        raise ValueError(f"{kind} of channel {name!r} no longer exists in this interpreter")
    return obj
