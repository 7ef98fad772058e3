"""Networked channels: the same channels between processes and machines, over NATS.

::

    import ferrocsp.net

    with ferrocsp.net.connect("nats://127.0.0.1:4222") as conn:
        jobs = conn.channel("jobs")            # rendezvous, shared by every connected process
        results = conn.channel("results", 100) # buffered on the server (JetStream)
        jobs.write({"n": 1})                   # returns once a reader somewhere took it

Values travel with a safe codec (None, bool, int, float, str, bytes, list, tuple, dict and
networked channel ends); pickle only with a shared ``pickle_key`` (HMAC-signed). See the
"Networked channels" page of the docs for deployment (clusters, auth, TLS).
"""

from __future__ import annotations

from ._channel import NetChannel as NetChannel
from ._channel import NetReader as NetReader
from ._channel import NetWriter as NetWriter
from ._codec import CodecError as CodecError
from ._connection import Connection as Connection
from ._connection import connect as connect

__all__ = ["CodecError", "Connection", "NetChannel", "NetReader", "NetWriter", "connect"]
