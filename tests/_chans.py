"""The channel dimension of the shared suites: the same test bodies on local channels and on
networked ones (``ferrocsp.net``, against a nats-server the fixtures start).

A shared test takes the ``mk`` fixture and makes its channels with ``mk(capacity, name=...)``
instead of ``csp.Channel(...)``. ``mk`` is parametrized ``local`` / ``shm`` / ``net``:
``local`` gives ``csp.Channel``; ``shm`` gives a ``csp.Channel`` already moved to shared
memory (as if it had been sent to another OS process: the same type, its shared-memory
transport, whatever backend runs the test); ``net`` gives ``conn.channel(<unique name>,
capacity)`` on one connection per test (names are unique per test: networked channel state
is durable on the server). A test
that cannot hold on networked channels says why with ``mk.local_only(REASON)`` (a skip with
that reason, never silent). Networked channels do not pickle (an OS process opens them by
name), so ``net`` with the ``os`` backend is skipped, saying so.

By default ``net`` runs with the thread backend; with greenlet and asyncio it is marked
``slow`` (``FERROCSP_SLOW=1``), to keep the default suite fast (conftest's collection hook).
``shm`` runs with thread, greenlet and asyncio by default; with the OS-process backends it is
marked ``slow``, since there ``local`` channels move to shared memory anyway when the test
hands them to its processes.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import ferrocsp as csp

#: Reasons a shared test cannot hold on networked channels (for ``mk.local_only``).
STATS = (
    "stats() (waiting readers/writers, buffered count) is the state of one process; a "
    "networked channel has no such global count to wait on (docs/net.md)"
)
COPIES = "values crossing a networked channel are copies (DESIGN 2, Channels)"
NAMES = "a networked channel's name is its identity on the server; local names are labels"
NOWAIT_RACE = (
    "write_nowait/read_nowait on a networked channel is one round trip with timeout 0; a "
    "partner waiting in another process may not have announced itself yet"
)


class Chans:
    """Makes the channels of one shared test (see the module doc)."""

    def __init__(self, kind: str, conn: Any = None) -> None:
        self.kind = kind
        self.conn = conn
        self.is_net = kind == "net"
        self.is_shm = kind == "shm"
        self._tag = uuid.uuid4().hex[:10]
        self._n = 0

    def __call__(self, capacity: int = 0, *, name: str | None = None) -> Any:
        if not self.is_net:
            ch = csp.Channel(capacity, name=name)
            if self.is_shm:
                from ferrocsp import _shm

                _shm.share(ch)
            return ch
        self._n += 1
        return self.conn.channel(f"k{self._tag}-{name or 'c'}-{self._n}", capacity)

    def local_only(self, why: str) -> None:
        """Skips this test on networked channels, saying why."""
        if self.is_net:
            pytest.skip(f"local channels only: {why}")

    def __repr__(self) -> str:
        return f"Chans({self.kind!r})"
