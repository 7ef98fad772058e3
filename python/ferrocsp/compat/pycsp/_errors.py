"""PyCSP 0.9's exceptions, mapped onto ferrocsp's.

Invariants:
- ``ChannelPoisonException`` *is* ``ferrocsp.ChannelPoisoned`` and ``ChannelRetireException``
  *is* ``ferrocsp.ChannelRetired`` (aliases, not subclasses): what the engine raises is caught by
  PyCSP's ``except`` clauses, and what a PyCSP program raises ends its process cleanly under
  ferrocsp's own rules too.
- The socket exceptions take PyCSP's ``(addr, msg)`` and keep both as attributes; the compat
  layer raises ``ChannelConnectException`` and ``ChannelBindException`` where PyCSP did (its
  channel server, ``_remote``), and never ``ChannelLostException`` (a connected channel is a
  shared-memory channel: a host that dies poisons it instead).
- ``misuse(api, text, kind)`` builds the TypeError/ValueError every misuse raises; its message
  starts with the PyCSP name the caller used.
"""

from __future__ import annotations

import ferrocsp as csp

__all__ = [
    "ChannelBindException",
    "ChannelConnectException",
    "ChannelLostException",
    "ChannelPoisonException",
    "ChannelRetireException",
    "ChannelSocketException",
    "FatalException",
    "InfoException",
    "misuse",
]

ChannelPoisonException = csp.ChannelPoisoned
ChannelRetireException = csp.ChannelRetired


class ChannelSocketException(Exception):
    """PyCSP's socket-level failure: ``ChannelSocketException(addr, msg)``."""

    def __init__(self, addr: object, msg: str) -> None:
        super().__init__(addr, msg)
        self.addr = addr
        self.msg = msg

    def __str__(self) -> str:
        return self.msg


class ChannelConnectException(ChannelSocketException):
    """``Channel(name, connect=addr)`` found no channel server at ``addr``, or the server
    did not hand the channel out (``e.addr``; the message says why)."""


class ChannelBindException(ChannelSocketException):
    """A channel server could not bind its address (``@multiprocess(pycsp_port=...)`` on a
    port in use, a bad ``PYCSP_HOST``/``PYCSP_PORT``)."""


class ChannelLostException(ChannelSocketException):
    """PyCSP lost the connection to a remote channel (never raised by the compat layer)."""


class FatalException(Exception):
    """PyCSP's unrecoverable error (never raised by the compat layer)."""


class InfoException(Exception):
    """PyCSP's error for features that are not available (raised for PyCSP's network process
    kinds, ``sshprocess`` and ``clusterprocess``, which the compat layer does not provide)."""


def misuse(api: str, text: str, kind: type[Exception] = TypeError) -> Exception:
    """The error for a misuse of ``pycsp.<api>``: ``TypeError("pycsp.Channel: ...")``."""
    return kind(f"pycsp.{api}: {text}")
