"""Networked channels: the same channels between processes and machines, over NATS.

::

    import ferrocsp.net

    import ferrocsp as csp
    import ferrocsp.net

    with ferrocsp.net.connect("nats://127.0.0.1:4222") as conn:
        jobs = csp.Channel(name="jobs", net=conn)   # rendezvous, shared by every process
        results = conn.channel("results", 100)      # the same: buffered on the server
        jobs.write({"n": 1})                        # returns once a reader somewhere took it

A networked channel is a ``ferrocsp.Channel`` like any other (its ends ``ferrocsp.Reader`` and
``ferrocsp.Writer``); ``conn.channel(name, capacity)`` and ``Channel(capacity, name=name,
net=conn)`` return the same object.

Values travel with a safe codec (None, bool, int, float, str, bytes, list, tuple, dict and
networked channel ends); pickle only with a shared ``pickle_key`` (HMAC-signed). See the
"Networked channels" page of the docs for deployment (clusters, auth, TLS).
"""

from __future__ import annotations

# Loaded with ferrocsp.net: the OS backend looks for it to carry connections to children.
from . import _cross as _cross
from ._codec import CodecError as CodecError
from ._connection import Connection as Connection
from ._connection import connect as connect

__all__ = ["CodecError", "Connection", "connect"]
