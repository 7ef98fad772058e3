"""Greenlets and asyncio tasks waiting on networked channels: no thread per wait.

A greenlet process blocked on a networked channel switches to the other greenlets of its
scheduler, and an asyncio task awaits a future; both are woken by the operation's completion
callback (run by the connection's runtime thread), so a thousand of them waiting at once cost
no thread each, and every one still gets exactly one value.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Callable

import pytest

import ferrocsp as csp
import ferrocsp.net as net
from _nats import NatsServer, nats_fixture  # noqa: F401 - nats_fixture is the fixture 'nats'
from _support import Background, wait_until

pytestmark = pytest.mark.timeout(120)

N = 1000
#: OS threads the waiting may add, whatever N is (the scheduler's, the connections').
THREADS_ADDED = 6


def os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _wait_then_feed(
    nats: NatsServer, start_waiters: Callable[[csp.Channel, list[int]], Callable[[], None]]
) -> int:
    """Starts N waiters reading one networked channel (``start_waiters(channel, got)`` returns
    what to call, from this thread, to wait until all N wait and then for them to end);
    writes 0..N-1 from another connection; checks that each value arrived once. Returns the
    OS threads the waiting added."""
    n = "t" + uuid.uuid4().hex[:12]
    got: list[int] = []
    with net.connect(nats.url) as a, net.connect(nats.url) as b:
        rch, wch = a.channel(n), b.channel(n)
        baseline = os_threads()
        finish = start_waiters(rch, got)
        added = os_threads() - baseline
        for i in range(N):
            wch.write(i, timeout=30)
        finish()
    assert sorted(got) == list(range(N))
    return added


def test_a_thousand_greenlets_wait_on_a_networked_channel_with_few_threads(
    nats: NatsServer,
) -> None:
    def start(ch: csp.Channel, got: list[int]) -> Callable[[], None]:
        started = [0]

        @csp.process
        def take() -> None:
            started[0] += 1
            got.append(ch.read())

        readers = csp.Par(*[take() for _ in range(N)], backend="greenlet").start()
        # One scheduler runs them in turn: once the last has started, all the others wait.
        wait_until(lambda: started[0] == N, 60.0, f"{N} readers started")
        return lambda: readers.join(timeout=60)

    added = _wait_then_feed(nats, start)
    assert added <= THREADS_ADDED, f"{added} threads for {N} waits"


def test_a_thousand_asyncio_tasks_wait_on_a_networked_channel_with_few_threads(
    nats: NatsServer,
) -> None:
    def start(ch: csp.Channel, got: list[int]) -> Callable[[], None]:
        waiting = threading.Event()

        async def main() -> None:
            async def one() -> None:
                got.append(await ch.aread())

            tasks = [asyncio.create_task(one()) for _ in range(N)]
            await asyncio.sleep(0)  # each task runs up to its awaited read
            waiting.set()
            await asyncio.gather(*tasks)

        loop_thread = Background(asyncio.run, asyncio.wait_for(main(), 90))
        assert waiting.wait(60), f"{N} tasks did not start"
        return lambda: loop_thread.join(90)

    added = _wait_then_feed(nats, start)
    # The event loop's own thread is one of the threads added.
    assert added <= THREADS_ADDED, f"{added} threads for {N} waits"
