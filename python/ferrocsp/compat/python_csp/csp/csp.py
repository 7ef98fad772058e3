"""python-csp's ``csp.csp``: the module programs import (``from csp.csp import *``).

As in python-csp, the ``CSP`` environment variable chooses the implementation when this
module is first imported: ``CSP=THREADS`` gives ``csp.os_thread`` (processes are OS threads,
ferrocsp's ``"thread"`` backend); any other value, or none, gives ``csp.os_process``
(processes are OS processes, ferrocsp's ``"os"`` backend), python-csp's default. Also defines
python-csp's ``CSP`` context manager for building networks with ``with`` blocks.

Invariants:
- The names exported are exactly python-csp 0.1's ``csp.csp.__all__`` (plus ``ChannelPoison``),
  taken from the chosen implementation module.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from . import os_process, os_thread

_impl = os_thread if os.environ.get("CSP", "").upper() == "THREADS" else os_process

set_debug = _impl.set_debug
CSPProcess = _impl.CSPProcess
CSPServer = _impl.CSPServer
Alt = _impl.Alt
Par = _impl.Par
Seq = _impl.Seq
Guard = _impl.Guard
Channel = _impl.Channel
FileChannel = _impl.FileChannel
process = _impl.process
forever = _impl.forever
Skip = _impl.Skip
CSP_IMPLEMENTATION = _impl.CSP_IMPLEMENTATION
ChannelPoison = _impl.ChannelPoison

__all__ = [
    "CSP_IMPLEMENTATION",
    "Alt",
    "CSPProcess",
    "CSPServer",
    "Channel",
    "ChannelPoison",
    "FileChannel",
    "Guard",
    "Par",
    "Seq",
    "Skip",
    "forever",
    "process",
    "set_debug",
]


class CSP:
    """Builds a network with ``with`` blocks, then runs it with ``start()``::

    p = CSP()
    with p.par():
        p.process(f, 1)
        p.process(g, 2)
    p.start()
    """

    def __init__(self) -> None:
        self._stack: list[tuple[type, list[Any]]] = [(Seq, [])]

    @contextmanager
    def _block(self, kind: type) -> Iterator[None]:
        self._stack.append((kind, []))
        try:
            yield
        finally:
            k, procs = self._stack.pop()
            self._stack[-1][1].append(k(*procs))

    def par(self) -> Any:
        """A block whose processes run in parallel."""
        return self._block(Par)

    def seq(self) -> Any:
        """A block whose processes run one after another."""
        return self._block(Seq)

    def process(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Adds ``func(*args, **kwargs)`` as a process of the current block."""
        self._stack[-1][1].append(CSPProcess(func, *args, **kwargs))

    def start(self) -> None:
        """Runs everything added, in order, and waits."""
        kind, procs = self._stack[0]
        self._stack[0] = (Seq, [])
        kind(*procs).start()
