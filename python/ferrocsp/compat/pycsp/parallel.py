"""``pycsp.parallel``: PyCSP 0.9's threaded implementation, on ferrocsp.

Every ``@process`` runs as an OS thread (ferrocsp's ``"thread"`` backend), ``@multiprocess`` as
an OS process (``"os"``). Exports exactly PyCSP 0.9's ``pycsp.parallel.__all__``.

Invariants:
- Importing this module records it as the current implementation (``pycsp.current``), as
  PyCSP's import did, so ``pycsp.common`` modules use its names.
"""

from __future__ import annotations

from . import current as _current
from ._alternation import Alternation as Alternation
from ._alternation import AltSelect as AltSelect
from ._alternation import FairSelect as FairSelect
from ._alternation import PriSelect as PriSelect
from ._alternation import choice as choice
from ._channel import Channel as Channel
from ._channel import poison as poison
from ._channel import retire as retire
from ._config import PYCSP_HOST as PYCSP_HOST
from ._config import PYCSP_PORT as PYCSP_PORT
from ._config import SOCKETS_BIND_RETRY_DELAY as SOCKETS_BIND_RETRY_DELAY
from ._config import SOCKETS_BIND_TIMEOUT as SOCKETS_BIND_TIMEOUT
from ._config import SOCKETS_CONNECT_RETRY_DELAY as SOCKETS_CONNECT_RETRY_DELAY
from ._config import SOCKETS_CONNECT_TIMEOUT as SOCKETS_CONNECT_TIMEOUT
from ._config import SOCKETS_STRICT_MODE as SOCKETS_STRICT_MODE
from ._config import ClusterProcess as ClusterProcess
from ._config import Configuration as Configuration
from ._config import Io as Io
from ._config import SSHProcess as SSHProcess
from ._config import clusterprocess as clusterprocess
from ._config import io as io
from ._config import sshprocess as sshprocess
from ._errors import ChannelBindException as ChannelBindException
from ._errors import ChannelConnectException as ChannelConnectException
from ._errors import ChannelLostException as ChannelLostException
from ._errors import ChannelPoisonException as ChannelPoisonException
from ._errors import ChannelRetireException as ChannelRetireException
from ._errors import ChannelSocketException as ChannelSocketException
from ._errors import FatalException as FatalException
from ._errors import InfoException as InfoException
from ._guard import InputGuard as InputGuard
from ._guard import OutputGuard as OutputGuard
from ._guard import Skip as Skip
from ._guard import SkipGuard as SkipGuard
from ._guard import Timeout as Timeout
from ._guard import TimeoutGuard as TimeoutGuard
from ._process import MultiProcess as MultiProcess
from ._process import Parallel as Parallel
from ._process import Process as Process
from ._process import Sequence as Sequence
from ._process import Spawn as Spawn
from ._process import current_process_id as current_process_id
from ._process import multiprocess as multiprocess
from ._process import process as process
from ._process import shutdown as shutdown

version = (0, 9, 2, "parallel")

__all__ = [
    "PYCSP_HOST",
    "PYCSP_PORT",
    "SOCKETS_BIND_RETRY_DELAY",
    "SOCKETS_BIND_TIMEOUT",
    "SOCKETS_CONNECT_RETRY_DELAY",
    "SOCKETS_CONNECT_TIMEOUT",
    "SOCKETS_STRICT_MODE",
    "AltSelect",
    "Alternation",
    "Channel",
    "ChannelBindException",
    "ChannelConnectException",
    "ChannelLostException",
    "ChannelPoisonException",
    "ChannelRetireException",
    "ChannelSocketException",
    "ClusterProcess",
    "Configuration",
    "FairSelect",
    "FatalException",
    "InfoException",
    "InputGuard",
    "Io",
    "MultiProcess",
    "OutputGuard",
    "Parallel",
    "PriSelect",
    "Process",
    "SSHProcess",
    "Sequence",
    "Skip",
    "SkipGuard",
    "Spawn",
    "Timeout",
    "TimeoutGuard",
    "choice",
    "clusterprocess",
    "current_process_id",
    "io",
    "multiprocess",
    "poison",
    "process",
    "retire",
    "shutdown",
    "sshprocess",
    "version",
]

_current.install(globals(), version)
