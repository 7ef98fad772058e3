"""PyCSP 0.9's exceptions, mapped onto ferrocsp's.

Invariants:
- ``ChannelPoisonException`` *is* ``ferrocsp.ChannelPoisoned`` and ``ChannelRetireException``
  *is* ``ferrocsp.ChannelRetired`` (aliases, not subclasses): what the engine raises is caught by
  PyCSP's ``except`` clauses, and what a PyCSP program raises ends its process cleanly under
  ferrocsp's own rules too.
- The socket exceptions exist so that programs importing them keep importing; ferrocsp's
  compat layer never raises them (it has no PyCSP socket transport).
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
    """PyCSP's socket-level failure (never raised by the compat layer)."""


class ChannelConnectException(ChannelSocketException):
    """PyCSP could not connect to a remote channel (never raised by the compat layer)."""


class ChannelBindException(ChannelSocketException):
    """PyCSP could not bind a channel's server socket (never raised by the compat layer)."""


class ChannelLostException(ChannelSocketException):
    """PyCSP lost a remote channel (never raised by the compat layer)."""


class FatalException(Exception):
    """PyCSP's unrecoverable error (never raised by the compat layer)."""


class InfoException(Exception):
    """PyCSP's error for features that are not available (raised for PyCSP's network process
    kinds, ``sshprocess`` and ``clusterprocess``, which the compat layer does not provide)."""


def misuse(api: str, text: str, kind: type[Exception] = TypeError) -> Exception:
    """The error for a misuse of ``pycsp.<api>``: ``TypeError("pycsp.Channel: ...")``."""
    return kind(f"pycsp.{api}: {text}")
