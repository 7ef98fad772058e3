"""Buffered networked reads (crates/ferrocsp-net/src/buffered.rs) against a real nats-server:
pulls on reused inboxes, and a read that gives up with its pull still open hands a value that
arrives for it back at once (NAK) instead of holding it until ``ack_timeout``."""

from __future__ import annotations

import asyncio
import uuid

import pytest

import ferrocsp.net as net
from _nats import NatsServer, nats_fixture  # noqa: F401 - nats_fixture is the fixture 'nats'

pytestmark = pytest.mark.timeout(60)


def name() -> str:
    return "t" + uuid.uuid4().hex[:12]


def test_many_sequential_reads_reuse_their_inboxes(nats: NatsServer) -> None:
    with net.connect(nats.url) as c:
        ch = c.channel(name(), 8)
        for i in range(200):
            ch.write(i)
            assert ch.read(timeout=10) == i
        with pytest.raises(TimeoutError):
            ch.read(timeout=0)


def test_a_cancelled_read_hands_a_value_for_its_open_pull_on_at_once(nats: NatsServer) -> None:
    # ack_timeout 30 s: a value held by the cancelled read until then would make the last
    # read (10 s) time out.
    async def main() -> None:
        n = name()
        with (
            net.connect(nats.url, ack_timeout=30) as c,
            net.connect(nats.url, ack_timeout=30) as d,
        ):
            ch = c.channel(n, 4)
            barrier = c.channel(name(), 4)
            t = asyncio.create_task(ch.aread())
            await asyncio.sleep(0)
            # One round trip on the same connection: the read's pull, sent before it on the
            # one connection, is waiting on the server by now.
            await barrier.awrite(1)
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            other = d.channel(n, 4)
            await other.awrite("v")  # likely answers the cancelled read's open pull ...
            assert await other.aread(timeout=10) == "v"  # ... which hands it back at once
            with pytest.raises(TimeoutError):
                await ch.aread(timeout=0.2)  # and it was delivered once

    asyncio.run(main())
