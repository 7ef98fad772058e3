"""Greenlets and asyncio tasks waiting on networked channels: no thread per wait.

A greenlet process blocked on a networked channel switches to the other greenlets of its
scheduler, and an asyncio task awaits a future; both are woken by the operation's completion
callback (run by the connection's runtime thread), so a thousand of them waiting at once cost
no thread each, and every one still gets exactly one value.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

import ferrocsp as csp
import ferrocsp.net as net
from _nats import NatsServer, nats_fixture  # noqa: F401 - nats_fixture is the fixture 'nats'
from _support import wait_until

pytestmark = pytest.mark.timeout(120)

N = 1000
#: OS threads the waiting may add, whatever N is (the scheduler's, the connections').
THREADS_ADDED = 6


def os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def test_a_thousand_greenlets_wait_on_a_networked_channel_with_few_threads(
    nats: NatsServer,
) -> None:
    n = "t" + uuid.uuid4().hex[:12]
    with net.connect(nats.url) as a, net.connect(nats.url) as b:
        rch, wch = a.channel(n), b.channel(n)
        got: list[int] = []
        started = [0]

        @csp.process
        def take(ch: net.NetChannel) -> None:
            started[0] += 1
            got.append(ch.read())

        baseline = os_threads()
        readers = csp.Par(*[take(rch) for _ in range(N)], backend="greenlet").start()
        # One scheduler runs them in turn: once the last has started, all the others wait.
        wait_until(lambda: started[0] == N, 60.0, f"{N} readers started")
        peak = os_threads()
        for i in range(N):
            wch.write(i, timeout=30)
        readers.join(timeout=60)
    assert sorted(got) == list(range(N))
    assert peak - baseline <= THREADS_ADDED, f"{peak - baseline} threads for {N} waits"


def test_a_thousand_asyncio_tasks_wait_on_a_networked_channel_with_few_threads(
    nats: NatsServer,
) -> None:
    n = "t" + uuid.uuid4().hex[:12]
    with net.connect(nats.url) as a, net.connect(nats.url) as b:
        rch, wch = a.channel(n), b.channel(n)
        got: list[int] = []
        started = [0]
        baseline = os_threads()
        peak = [0]

        async def one() -> None:
            started[0] += 1
            got.append(await rch.aread())

        async def main() -> None:
            tasks = [asyncio.create_task(one()) for _ in range(N)]
            while started[0] < N:
                await asyncio.sleep(0)
            await asyncio.sleep(0)  # every task is now awaiting its read
            peak[0] = os_threads()

            def feed() -> None:
                for i in range(N):
                    wch.write(i, timeout=30)

            await asyncio.gather(asyncio.to_thread(feed), *tasks)

        asyncio.run(asyncio.wait_for(main(), 90))
    assert sorted(got) == list(range(N))
    # asyncio.to_thread's executor thread is started after the peak was taken.
    assert peak[0] - baseline <= THREADS_ADDED, f"{peak[0] - baseline} threads for {N} waits"
