"""Cooperative processes waiting on channels shared with OS processes: no thread per wait.

A greenlet or an asyncio task that waits on a shared channel switches away and is woken by
the process's futex watcher threads (one per 127 channels being waited on), so ten thousand
of them blocked at once cost a handful of OS threads, and every one of them still completes
with exactly one value.

Every test runs under ``no_leaks``: no /dev/shm entry and no child process may be left behind.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest

import ferrocsp as csp
from _os_support import no_leaks
from _support import Background, wait_until

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(120)]
__all__ = ["no_leaks"]  # fixture, used by name

N = 10_000
#: Channels the waiters are spread over (fewer than one watcher's 127 words).
K = 100
#: OS threads the waiting may add to the parent, whatever N is: the greenlet scheduler's or
#: the event loop's thread, the futex watcher, and the OS-process host's.
THREADS_ADDED = 6


@csp.process(backend="os")
def feed(go: csp.Channel, outs: list[csp.Channel], n: int) -> None:
    """Waits for the signal, then writes 0..n-1 round-robin over ``outs``."""
    go.read()
    for i in range(n):
        outs[i % len(outs)].write(i)


@csp.process
def take(ch: csp.Channel, got: list[int]) -> None:
    got.append(ch.read())


def os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def waiting(chans: list[csp.Channel]) -> int:
    return sum(c.stats().readers_waiting for c in chans)


def _feed_when_all_wait(chans: list[csp.Channel], go: csp.Channel, baseline: int) -> int:
    """Once all N readers wait on the shared channels, lets the child write; returns the
    number of OS threads seen while they all waited."""
    wait_until(lambda: waiting(chans) == N, 90.0, f"{N} readers blocked")
    peak = os_threads()
    go.write(None)
    assert peak - baseline <= THREADS_ADDED, f"{peak - baseline} threads for {N} waits"
    return peak


def test_ten_thousand_greenlets_wait_on_shared_channels_with_few_threads() -> None:
    chans = [csp.Channel(name=f"g{k}") for k in range(K)]
    go = csp.Channel(name="go")
    child = csp.Spawn(feed(go, chans, N))  # pickling for the child moves the channels
    assert all(c._shm is not None for c in chans)
    baseline = os_threads()
    got: list[int] = []
    readers = csp.Par(*[take(chans[i % K], got) for i in range(N)], backend="greenlet").start()
    _feed_when_all_wait(chans, go, baseline)
    readers.join(timeout=90)
    child.join(timeout=30)
    assert sorted(got) == list(range(N))


def test_ten_thousand_asyncio_tasks_wait_on_shared_channels_with_few_threads() -> None:
    chans = [csp.Channel(name=f"a{k}") for k in range(K)]
    go = csp.Channel(name="go")
    child = csp.Spawn(feed(go, chans, N))
    baseline = os_threads()
    got: list[int] = []

    async def one(ch: csp.Channel) -> None:
        got.append(await ch.aread())

    async def main() -> None:
        await asyncio.gather(*(one(chans[i % K]) for i in range(N)))

    loop_thread = Background(asyncio.run, main())
    _feed_when_all_wait(chans, go, baseline)
    loop_thread.join(90)
    child.join(timeout=30)
    assert sorted(got) == list(range(N))


def test_cancelled_task_waiting_on_a_shared_channel_takes_nothing() -> None:
    """A cancelled waiter withdraws (nothing taken); the next value goes to a live one."""
    ch = csp.Channel(name="c")
    go = csp.Channel(name="go")
    child = csp.Spawn(feed(go, [ch], 1))
    got: list[int] = []
    done = threading.Event()

    async def main() -> None:
        doomed = asyncio.create_task(ch.aread())
        live = asyncio.create_task(ch.aread())
        while ch.stats().readers_waiting < 2:
            await asyncio.sleep(0.001)
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        await asyncio.to_thread(go.write, None)
        got.append(await live)
        done.set()

    asyncio.run(asyncio.wait_for(main(), 60))
    child.join(timeout=30)
    assert done.is_set()
    assert got == [0]
    assert ch.stats().readers_waiting == 0


@csp.process
def read_with_timeout(ch: csp.Channel, out: list[str]) -> None:
    try:
        ch.read(timeout=0.05)
        out.append("read")
    except TimeoutError:
        out.append("timeout")


def _greenlet_read(ch: csp.Channel) -> list[str]:
    out: list[str] = []
    csp.Par(read_with_timeout(ch, out), backend="greenlet").run()
    return out


def test_a_forked_child_uses_watchers_of_its_own() -> None:
    """A child made by ``fork`` inherits the parent's watcher registry but not its threads: a
    greenlet waiting on a shared channel there must get a watcher of the child's own (it would
    otherwise wait forever on a thread that does not exist in the child)."""
    from ferrocsp import _shm

    ch = csp.Channel(1, name="forked")
    _shm.share(ch)
    assert _greenlet_read(ch) == ["timeout"]  # the parent now has a watcher thread
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code only
        code = 1
        try:
            code = 0 if _greenlet_read(ch) == ["timeout"] else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 20
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child's wait never ended")
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(status) == 0


@csp.process
def _take(c: csp.Channel) -> object:
    return c.read()


@csp.process
def _offer_nowait(c: csp.Channel) -> str:
    wait_until(lambda: c.stats().readers_waiting == 1, what="the reader waits")
    c.write_nowait("x")
    return "sent"


@csp.process
async def _atake(c: csp.Channel) -> object:
    return await c.aread()


@csp.process
async def _aoffer(c: csp.Channel) -> str:
    while c.stats().readers_waiting == 0:
        await asyncio.sleep(0.001)
    await c.awrite("x")
    return "sent"


@pytest.mark.timeout(20)
def test_a_rendezvous_hand_off_to_a_reader_of_the_same_scheduler() -> None:
    # A rendezvous write that finds the reader waiting waits for it to take the value; the
    # reader is another greenlet / task of this very thread, so the write must switch away,
    # not sleep the thread (which hung both, `write_nowait` and `awrite` alike).
    from ferrocsp import _shm

    for backend, procs in (("greenlet", (_take, _offer_nowait)), ("asyncio", (_atake, _aoffer))):
        ch = csp.Channel(name=f"same-{backend}")
        _shm.share(ch)
        assert csp.Par(*(p(ch) for p in procs), backend=backend).run() == ["x", "sent"]
