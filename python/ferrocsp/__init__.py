"""ferrocsp: message-passing concurrency for Python in the CSP tradition, with a Rust engine.

Processes share nothing and talk over channels::

    import ferrocsp as csp

    @csp.process
    def producer(out: csp.Writer) -> None:
        with out:                      # retire the end when done: readers see end-of-stream
            for i in range(3):
                out.write(i)

    @csp.process
    def consumer(inp: csp.Reader) -> int:
        return sum(inp)                # iterate until end-of-stream

    ch = csp.Channel()                 # rendezvous
    print(csp.Par(producer(ch.writer()), consumer(ch.reader())).run())   # [None, 3]
"""

from __future__ import annotations

from . import _dump as _dump_module
from . import _trace as _trace_module
from . import net as net  # networked channels: csp.net.connect(url)
from ._alt import Alt as Alt
from ._alt import Guard as Guard
from ._alt import Output as Output
from ._alt import Skip as Skip
from ._alt import Timeout as Timeout
from ._alt import select as select
from ._backends import set_default_backend as set_default_backend
from ._dump import dump as dump
from ._errors import ChannelPoisoned as ChannelPoisoned
from ._errors import ChannelRetired as ChannelRetired
from ._errors import CSPError as CSPError
from ._errors import Deadlock as Deadlock
from ._errors import ProcessCrashed as ProcessCrashed
from ._errors import WouldBlock as WouldBlock
from ._farm import farm as farm
from ._graph import graph as graph
from ._io import aio as aio
from ._io import io as io
from ._native import Channel as Channel
from ._native import Loan as Loan
from ._native import LoanBuffer as LoanBuffer
from ._native import Reader as Reader
from ._native import Writer as Writer
from ._par import Handle as Handle
from ._par import Par as Par
from ._par import Seq as Seq
from ._par import Spawn as Spawn
from ._process import Process as Process
from ._process import process as process
from ._stats import ChannelStats as ChannelStats
from ._trace import Trace as Trace
from ._trace import trace as trace

__all__ = [
    "Alt",
    "CSPError",
    "Channel",
    "ChannelPoisoned",
    "ChannelRetired",
    "ChannelStats",
    "Deadlock",
    "Guard",
    "Handle",
    "Loan",
    "LoanBuffer",
    "Output",
    "Par",
    "Process",
    "ProcessCrashed",
    "Reader",
    "Seq",
    "Skip",
    "Spawn",
    "Timeout",
    "Trace",
    "WouldBlock",
    "Writer",
    "aio",
    "dump",
    "farm",
    "graph",
    "io",
    "process",
    "select",
    "set_default_backend",
    "trace",
]

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("ferrocsp")
except _PackageNotFoundError:  # pragma: no cover - a source tree without metadata
    __version__ = "0.0.0+unknown"

_dump_module.install_sigquit()  # SIGQUIT writes a dump to stderr (see ferrocsp.dump)
_trace_module.from_env()  # FERROCSP_TRACE=path records a trace of the whole program
