"""The channel dimension of the shared suites: the same test bodies on local channels, on
channels moved to shared memory, and on networked ones (``ferrocsp.net``, against a
nats-server the fixtures start).

A shared test takes the ``mk`` fixture and makes its channels with ``mk(capacity, name=...)``
instead of ``csp.Channel(...)``. ``mk`` is parametrized ``local`` / ``shm`` / ``net``:
``local`` gives ``csp.Channel``; ``shm`` gives a ``csp.Channel`` already moved to shared
memory (as if it had been sent to another OS process: the same type, its shared-memory
transport, whatever backend runs the test); ``net`` gives ``conn.channel(<unique name>,
capacity)`` on one connection per test (names are unique per test: networked channel state
is durable on the server). A test
that cannot hold on networked channels says why with ``mk.local_only(REASON)`` (a skip with
that reason, never silent). ``stats()`` works on both (networked: the server's state and a
survey of the connections, docs/net.md), so tests wait on its counts with a deadline either
way. ``mk.again(ch)`` is another channel of ``ch``'s name, for tests of what a name means.
Networked channels and ends cross into ``backend="os"`` processes like local ones (the child
reconnects; tests/test_net_os.py).

By default ``net`` runs with the thread backend; with greenlet, asyncio and the OS-process
backends it is marked ``slow`` (``FERROCSP_SLOW=1``), to keep the default suite fast
(conftest's collection hook). ``shm`` runs with thread, greenlet and asyncio by default; with
the OS-process backends it is marked ``slow``, since there ``local`` channels move to shared
memory anyway when the test hands them to its processes.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import ferrocsp as csp

#: Reasons a shared test cannot hold on networked channels (for ``mk.local_only``).
COPIES = "values crossing a networked channel are copies (DESIGN 2, Channels)"
WRITER_KEEPS_VALUE = (
    "a waiting rendezvous writer's value stays in its own process until a reader's "
    "subscription reaches it (a round trip and a re-send); read_nowait gives up at once "
    "(docs/net.md)"
)
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
        self._others: list[Any] = []

    def __call__(self, capacity: int = 0, *, name: str | None = None) -> Any:
        if not self.is_net:
            ch = csp.Channel(capacity, name=name)
            if self.is_shm:
                from ferrocsp import _shm

                _shm.share(ch)
            return ch
        self._n += 1
        return self.conn.channel(f"k{self._tag}-{name or 'c'}-{self._n}", capacity)

    def again(self, ch: Any) -> Any:
        """Another channel with ``ch``'s name and capacity: a local name is a label (a new,
        separate channel); a networked name is the channel's identity (opened here on a second
        connection, as another process would: the same channel)."""
        if not self.is_net:
            return csp.Channel(ch.capacity, name=ch.name)
        import ferrocsp.net as net

        other = net.connect(self.conn.url)
        self._others.append(other)
        return other.channel(ch.name, ch.capacity)

    def close(self) -> None:
        """Closes the connections ``again`` opened."""
        for c in self._others:
            c.close()

    def local_only(self, why: str) -> None:
        """Skips this test on networked channels, saying why."""
        if self.is_net:
            pytest.skip(f"local channels only: {why}")

    def __repr__(self) -> str:
        return f"Chans({self.kind!r})"
