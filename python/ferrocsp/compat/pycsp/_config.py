"""What PyCSP 0.9 exported for its socket transport and remote processes.

``Configuration`` and the ``SOCKETS_*``/``PYCSP_*`` keys store values as PyCSP's did. The
channel server (``_remote``) reads ``PYCSP_HOST``/``PYCSP_PORT`` (where it listens) and
``SOCKETS_CONNECT_TIMEOUT``/``SOCKETS_CONNECT_RETRY_DELAY`` (how long ``Channel(name,
connect=...)`` retries); the other keys have no effect. ``sshprocess`` and ``clusterprocess``
(processes started over ssh or on a PBS cluster) are not provided: using them raises
``InfoException`` naming the compat API. ``io``/``Io`` run blocking calls without stopping
other greenlets (``ferrocsp.io``).

Invariants:
- Nothing here starts a thread, opens a socket or reads the environment at import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import ferrocsp as csp

from ._errors import InfoException

__all__ = [
    "PYCSP_HOST",
    "PYCSP_PORT",
    "SOCKETS_BIND_RETRY_DELAY",
    "SOCKETS_BIND_TIMEOUT",
    "SOCKETS_CONNECT_RETRY_DELAY",
    "SOCKETS_CONNECT_TIMEOUT",
    "SOCKETS_STRICT_MODE",
    "ClusterProcess",
    "Configuration",
    "Io",
    "SSHProcess",
    "clusterprocess",
    "io",
    "sshprocess",
]

SOCKETS_CONNECT_TIMEOUT, SOCKETS_CONNECT_RETRY_DELAY = 0, 1
SOCKETS_BIND_TIMEOUT, SOCKETS_BIND_RETRY_DELAY = 2, 3
PYCSP_PORT, PYCSP_HOST, SOCKETS_STRICT_MODE = 4, 5, 6


class Configuration:
    """PyCSP's settings singleton: ``Configuration().set(KEY, value)`` / ``.get(KEY)``.

    Values are stored and returned; the channel server uses ``PYCSP_HOST``, ``PYCSP_PORT``
    and ``SOCKETS_CONNECT_*`` (see the module docs).
    """

    _instance: ClassVar[Configuration | None] = None
    _values: dict[int, Any]

    def __new__(cls) -> Configuration:
        if cls._instance is None:
            inst = super().__new__(cls)
            inst._values = {
                SOCKETS_CONNECT_TIMEOUT: 2,
                SOCKETS_CONNECT_RETRY_DELAY: 0.2,
                SOCKETS_BIND_TIMEOUT: 2,
                SOCKETS_BIND_RETRY_DELAY: 0.2,
                PYCSP_PORT: 0,
                PYCSP_HOST: "",
                SOCKETS_STRICT_MODE: False,
            }
            cls._instance = inst
        return cls._instance

    def get(self, conf_id: int) -> Any:
        """The stored value of ``conf_id``."""
        return self._values[conf_id]

    def set(self, conf_id: int, value: Any) -> None:
        """Stores ``value`` for ``conf_id``."""
        self._values[conf_id] = value


def _unsupported(api: str) -> InfoException:
    return InfoException(
        f"pycsp.{api}: processes started over ssh or on a cluster are not provided by "
        "ferrocsp.compat.pycsp; use @multiprocess for other OS processes on this machine, "
        "or ferrocsp.net for other machines"
    )


def sshprocess(func: Any = None, **kwargs: Any) -> Any:
    """Not provided: raises ``InfoException``."""
    raise _unsupported("sshprocess")


def clusterprocess(func: Any = None, **kwargs: Any) -> Any:
    """Not provided: raises ``InfoException``."""
    raise _unsupported("clusterprocess")


class SSHProcess:
    """Not provided: raises ``InfoException``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise _unsupported("SSHProcess")


class ClusterProcess:
    """Not provided: raises ``InfoException``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise _unsupported("ClusterProcess")


def io(func: Callable[..., Any]) -> Callable[..., Any]:
    """``@io``: the function blocks only its own process (it runs on a worker thread while a
    greenlet process waits; in thread and OS processes it simply runs)."""
    return csp.io(func)


class Io:
    """Kept for imports: PyCSP's thread wrapper behind ``@io`` (use ``@io``)."""
