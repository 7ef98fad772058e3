"""Timeouts on read/write: builtin TimeoutError, nothing sent or taken, races lose nothing.

Tests taking ``k`` run the timed operation in a process of each backend (thread: a parked
thread's deadline; greenlet: the scheduler's timer heap; asyncio: ``loop.call_later``), with
one body (tests/_kit.py). The timeout races run on threads at full size, and once more with
one cooperative side at a third of it; the many-to-many race stays on threads (it needs real
parallel writers and readers with blocking sleeps between operations).
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest

import ferrocsp as csp
from _chans import Chans
from _kit import SHARED_BACKENDS, Kit
from _os_support import backend_fixture
from _support import Background, wait_until

backend = backend_fixture(SHARED_BACKENDS)  # these tests run on OS processes too

pytestmark = pytest.mark.timeout(30)


async def read(k: Kit, ch: csp.Channel, timeout: float | None) -> Any:
    return await k.read(ch, timeout=timeout)


async def write(k: Kit, ch: csp.Channel, value: Any, timeout: float | None) -> None:
    await k.write(ch, value, timeout=timeout)


async def times_a_read_out(k: Kit, ch: csp.Channel) -> float:
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        await k.read(ch, timeout=0.05)
    return time.monotonic() - t0


@pytest.mark.parametrize("capacity", [0, 2])
def test_read_timeout_on_empty_channel(k: Kit, mk: Chans, capacity: int) -> None:
    ch = mk(capacity)
    assert 0.04 <= k.run(times_a_read_out, ch) < 5
    st = ch.stats()
    assert (st.readers_waiting, st.writers_waiting, st.buffered) == (0, 0, 0)


async def times_a_write_out(k: Kit, ch: csp.Channel) -> None:
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        await k.write(ch, "lost?", timeout=0.05)
    assert time.monotonic() - t0 >= 0.04
    assert ch.stats().writers_waiting == 0
    with pytest.raises(csp.WouldBlock):
        ch.read_nowait()
    with pytest.raises(TimeoutError):
        await k.read(ch, timeout=0.01)


def test_rendezvous_write_timeout_sends_nothing(k: Kit, mk: Chans) -> None:
    k.run(times_a_write_out, mk())


async def times_out_on_a_full_buffer(k: Kit, ch: csp.Channel) -> None:
    await k.write(ch, "first")
    with pytest.raises(TimeoutError):
        await k.write(ch, "second", timeout=0.03)
    assert ch.stats().buffered == 1
    assert await k.read(ch) == "first"
    with pytest.raises(csp.WouldBlock):
        ch.read_nowait()


def test_buffered_write_timeout_when_full_sends_nothing(k: Kit, mk: Chans) -> None:
    k.run(times_out_on_a_full_buffer, mk(1))


def test_timeout_not_a_csp_error(k: Kit, mk: Chans) -> None:
    with pytest.raises(TimeoutError) as info:
        k.run(read, mk(), 0.001)
    assert not isinstance(info.value, csp.CSPError)


async def times_out_on_ends(k: Kit, r: csp.Reader, w: csp.Writer) -> None:
    with pytest.raises(TimeoutError):
        await k.read(r, timeout=0.01)
    with pytest.raises(TimeoutError):
        await k.write(w, 1, timeout=0.01)


def test_timeouts_on_ends(k: Kit, mk: Chans) -> None:
    ch = mk()
    k.run(times_out_on_ends, ch.reader(), ch.writer())


async def zero_and_integer_timeouts(k: Kit, ch: csp.Channel) -> None:
    with pytest.raises(TimeoutError):
        await k.read(ch, timeout=0)
    await k.write(ch, 5, timeout=0)  # room in the buffer: succeeds at once
    with pytest.raises(TimeoutError):
        await k.write(ch, 6, timeout=0)
    assert await k.read(ch, timeout=1) == 5


def test_integer_and_zero_timeouts(k: Kit, mk: Chans) -> None:
    k.run(zero_and_integer_timeouts, mk(1))


def test_timeout_none_blocks_until_partner(k: Kit, mk: Chans) -> None:
    ch = mk()
    reader = k.spawn(read, ch, None)
    wait_until(lambda: ch.stats().readers_waiting == 1, what="reader blocked")
    ch.write("v", timeout=None)
    assert reader.join() == "v"


def test_read_with_timeout_succeeds_when_writer_arrives(k: Kit, mk: Chans) -> None:
    ch = mk()
    reader = k.spawn(read, ch, 10)
    wait_until(lambda: ch.stats().readers_waiting == 1, what="reader blocked")
    ch.write("in time")
    assert reader.join() == "in time"


def test_write_with_timeout_succeeds_when_reader_arrives(k: Kit, mk: Chans) -> None:
    ch = mk()
    writer = k.spawn(write, ch, "in time", 10)
    wait_until(lambda: ch.stats().writers_waiting == 1, what="writer blocked")
    assert ch.read() == "in time"
    writer.join()


def test_poison_during_timed_wait_raises_poisoned(k: Kit, mk: Chans) -> None:
    ch = mk()
    reader = k.spawn(read, ch, 10)
    wait_until(lambda: ch.stats().readers_waiting == 1, what="reader blocked")
    ch.poison()
    assert isinstance(reader.exception(), csp.ChannelPoisoned)


async def waiter(k: Kit, ch: csp.Channel, delay: float, report: SimpleNamespace) -> float:
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        await k.read(ch, timeout=delay)
    report.expired.write_nowait(delay)
    return time.monotonic() - t0


def test_timed_waits_of_one_backend_fire_in_deadline_order(k: Kit, mk: Chans) -> None:
    """Five processes of the backend wait with different timeouts on one channel (greenlet:
    one scheduler's timer heap; asyncio: one loop's call_later): each times out after its own
    delay, none early; the channel is left clean."""
    ch = mk()
    delays = [0.09, 0.01, 0.05, 0.03, 0.07]
    # Each waiter reports its delay on a buffered channel as it times out.
    expired = mk(len(delays), name="expired")
    tasks = k.spawn_many(waiter, [(ch, d, SimpleNamespace(expired=expired)) for d in delays])
    waited = [t.join() for t in tasks]
    assert all(w >= d - 0.001 for w, d in zip(waited, delays, strict=True)), waited
    order = [expired.read_nowait() for _ in delays]
    # One scheduler/loop: expiries are processed in deadline order (threads and OS
    # processes each wait on their own).
    if k.backend not in ("thread", "os"):
        assert order == sorted(delays)
    st = ch.stats()
    assert (st.readers_waiting, st.writers_waiting) == (0, 0)


# --------------------------------------------------------------------------- the race


def _timeout_race(
    capacity: int, iterations: int, seed: int, kit: Kit | None = None, side: str = "writer"
) -> None:
    """A writer and a reader, both with short timeouts, race for every value.

    The two sides meet at a barrier before each value; then the writer writes with a short
    timeout while the reader arrives after a short random delay and reads with a short
    timeout, so that hand-offs and timeouts happen at nearly the same moment. Each value is
    delivered exactly once or not at all: a write that raised TimeoutError was never received,
    a write that returned was received exactly once (for buffered channels, possibly later, or
    by draining the buffer at the end). ``side`` runs as a process of ``kit``'s backend, the
    other side on a thread (each alone on its scheduler/loop, so the blocking barrier and
    sleep stop nobody else).
    """
    ch = csp.Channel(capacity, name="race")
    rng = random.Random(seed)
    timeouts = [0.0, 0.00005, 0.0001, 0.0003, 0.0006]
    delays = [0.0, 0.0, 0.00005, 0.0001, 0.0003, 0.0006]
    plan = [
        (rng.choice(timeouts), rng.choice(delays), rng.choice(timeouts)) for _ in range(iterations)
    ]
    barrier = threading.Barrier(2, timeout=30)
    sent: list[int] = []
    timed_out: list[int] = []
    received: list[int] = []
    reader_timeouts = 0

    async def writer(k: Kit) -> None:
        for value, (write_timeout, _, _) in enumerate(plan):
            barrier.wait()
            try:
                await k.write(ch, value, timeout=write_timeout)
            except TimeoutError:
                timed_out.append(value)
            else:
                sent.append(value)

    async def reader(k: Kit) -> None:
        nonlocal reader_timeouts
        for _, delay, read_timeout in plan:
            barrier.wait()
            if delay:
                time.sleep(delay)  # shapes the race; correctness never depends on it
            try:
                received.append(await k.read(ch, timeout=read_timeout))
            except TimeoutError:
                reader_timeouts += 1

    thread = Kit("thread")
    on_kit = kit or thread
    w = (on_kit if side == "writer" else thread).spawn(writer)
    r = (on_kit if side == "reader" else thread).spawn(reader)
    w.join(timeout=60)
    r.join(timeout=60)
    while True:  # whatever a buffered channel still holds was sent and not yet read
        try:
            received.append(ch.read_nowait())
        except csp.WouldBlock:
            break

    assert len(sent) + len(timed_out) == iterations
    counts = Counter(received)
    duplicated = sorted(v for v, c in counts.items() if c > 1)
    assert not duplicated, f"values received twice: {duplicated[:10]}"
    lost = sorted(set(sent) - set(received))
    assert not lost, f"writes that returned but were never received: {lost[:10]}"
    ghosts = sorted(set(timed_out) & set(received))
    assert not ghosts, f"writes that timed out but were received: {ghosts[:10]}"
    assert sorted(received) == sorted(sent)
    assert received == sorted(received), "FIFO order between one writer and one reader"
    st = ch.stats()
    assert (st.buffered, st.readers_waiting, st.writers_waiting) == (0, 0, 0)
    # the race exercised both outcomes on both sides
    assert sent, "no write ever succeeded"
    if capacity == 0:
        assert timed_out, "no write ever timed out"
        assert reader_timeouts, "no read ever timed out"


@pytest.mark.parametrize("seed", [1, 2])
def test_timeout_race_rendezvous_loses_nothing(seed: int) -> None:
    _timeout_race(capacity=0, iterations=3000, seed=seed)


@pytest.mark.parametrize("capacity", [1, 3])
def test_timeout_race_buffered_loses_nothing(capacity: int) -> None:
    _timeout_race(capacity=capacity, iterations=2000, seed=capacity)


@pytest.mark.parametrize("side", ["writer", "reader"])
@pytest.mark.parametrize("backend", ["greenlet", "asyncio"])
def test_timeout_race_with_a_cooperative_side(k: Kit, side: str) -> None:
    """The same race with one side timing out through a greenlet scheduler's timers or an
    event loop's ``call_later`` (threads: the tests above)."""
    _timeout_race(capacity=0, iterations=600, seed=7, kit=k, side=side)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("capacity", [0, 1, 4])
def test_timeout_race_soak(capacity: int) -> None:
    _timeout_race(capacity=capacity, iterations=30_000, seed=42 + capacity)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("capacity", [0, 2], ids=["rendezvous", "buffered"])
def test_timeout_race_many_to_many(capacity: int) -> None:
    """4 writers and 4 readers, all with short random timeouts: nothing lost or duplicated."""
    ch = csp.Channel(capacity, name="race-any")
    per_writer = 400
    timeouts = [0.0, 0.00005, 0.0002, 0.0005]
    succeeded: list[list[int]] = [[] for _ in range(4)]
    received: list[list[int]] = [[] for _ in range(4)]
    writers_done = threading.Event()

    def writer(k: int) -> None:
        rng = random.Random(k)
        for v in range(k * per_writer, (k + 1) * per_writer):
            try:
                ch.write(v, timeout=rng.choice(timeouts))
            except TimeoutError:
                continue
            succeeded[k].append(v)

    def reader(k: int) -> None:
        rng = random.Random(100 + k)
        while not writers_done.is_set():
            with contextlib.suppress(TimeoutError):
                received[k].append(ch.read(timeout=rng.choice(timeouts)))

    readers = [Background(reader, k) for k in range(4)]
    writers = [Background(writer, k) for k in range(4)]
    for w in writers:
        w.join(timeout=60)
    writers_done.set()
    for r in readers:
        r.join(timeout=60)
    leftovers = []
    while True:
        try:
            leftovers.append(ch.read_nowait())
        except csp.WouldBlock:
            break
    got = Counter([v for chunk in received for v in chunk] + leftovers)
    assert all(c == 1 for c in got.values()), "a value was received twice"
    ok = {v for chunk in succeeded for v in chunk}
    assert set(got) == ok, (
        f"lost: {sorted(ok - set(got))[:10]}, ghosts: {sorted(set(got) - ok)[:10]}"
    )
