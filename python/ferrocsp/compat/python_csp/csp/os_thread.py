"""python-csp's ``csp.os_thread``: processes as OS threads, on ferrocsp (the ``"thread"`` backend).

Exports python-csp 0.1's ``csp.os_thread`` API (``__all__``) plus ``ChannelPoison``.

Invariants:
- ``@process``/``@forever`` here make processes that run as OS threads; ``Par``/``Seq`` run
  each process on its own backend, so processes of ``csp.os_thread`` and ``csp.os_process``
  mix.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from ._alt import Alt as Alt
from ._channel import Channel as Channel
from ._channel import ChannelPoison as ChannelPoison
from ._channel import FileChannel as FileChannel
from ._channel import Guard as Guard
from ._process import CSPProcess as _CSPProcess
from ._process import CSPServer as _CSPServer
from ._process import Par as Par
from ._process import Seq as Seq
from ._process import Skip as Skip
from ._process import forever_of, process_of

CSP_IMPLEMENTATION = "os_thread"


class CSPProcess(_CSPProcess):
    """A python-csp process running as OS threads."""

    backend: ClassVar[str] = "thread"


class CSPServer(_CSPServer):
    """A python-csp server process (``@forever``) running as OS threads."""

    backend: ClassVar[str] = "thread"


process = process_of(CSPProcess)
forever = forever_of(CSPServer)


def set_debug(status: bool) -> None:
    """Turns python-csp's debug logging on or off (ferrocsp logs nothing more)."""
    logging.getLogger("csp").setLevel(logging.DEBUG if status else logging.WARNING)


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
