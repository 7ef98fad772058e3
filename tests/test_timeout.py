"""Timeouts on read/write: builtin TimeoutError, nothing sent or taken, races lose nothing."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import Counter

import pytest

import ferrocsp as csp
from _support import Background, wait_until

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("capacity", [0, 2])
def test_read_timeout_on_empty_channel(capacity: int) -> None:
    ch = csp.Channel(capacity)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        ch.read(timeout=0.05)
    elapsed = time.monotonic() - t0
    assert 0.04 <= elapsed < 5
    st = ch.stats()
    assert (st.readers_waiting, st.writers_waiting, st.buffered) == (0, 0, 0)


def test_rendezvous_write_timeout_sends_nothing() -> None:
    ch = csp.Channel()
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        ch.write("lost?", timeout=0.05)
    assert time.monotonic() - t0 >= 0.04
    assert ch.stats().writers_waiting == 0
    with pytest.raises(csp.WouldBlock):
        ch.read_nowait()
    with pytest.raises(TimeoutError):
        ch.read(timeout=0.01)


def test_buffered_write_timeout_when_full_sends_nothing() -> None:
    ch = csp.Channel(1)
    ch.write("first")
    with pytest.raises(TimeoutError):
        ch.write("second", timeout=0.03)
    assert ch.stats().buffered == 1
    assert ch.read() == "first"
    with pytest.raises(csp.WouldBlock):
        ch.read_nowait()


def test_timeout_not_a_csp_error() -> None:
    ch = csp.Channel()
    with pytest.raises(TimeoutError) as info:
        ch.read(timeout=0.001)
    assert isinstance(info.value, TimeoutError)


def test_timeouts_on_ends() -> None:
    ch = csp.Channel()
    r, w = ch.reader(), ch.writer()
    with pytest.raises(TimeoutError):
        r.read(timeout=0.01)
    with pytest.raises(TimeoutError):
        w.write(1, timeout=0.01)


def test_integer_and_zero_timeouts() -> None:
    ch = csp.Channel(1)
    with pytest.raises(TimeoutError):
        ch.read(timeout=0)
    ch.write(5, timeout=0)  # room in the buffer: succeeds at once
    with pytest.raises(TimeoutError):
        ch.write(6, timeout=0)
    assert ch.read(timeout=1) == 5


def test_timeout_none_blocks_until_partner() -> None:
    ch = csp.Channel()
    reader = Background(ch.read, timeout=None)
    wait_until(lambda: ch.stats().readers_waiting == 1, what="reader blocked")
    ch.write("v", timeout=None)
    assert reader.join() == "v"


def test_read_with_timeout_succeeds_when_writer_arrives() -> None:
    ch = csp.Channel()
    reader = Background(ch.read, timeout=10)
    wait_until(lambda: ch.stats().readers_waiting == 1, what="reader blocked")
    ch.write("in time")
    assert reader.join() == "in time"


def test_write_with_timeout_succeeds_when_reader_arrives() -> None:
    ch = csp.Channel()
    writer = Background(ch.write, "in time", timeout=10)
    wait_until(lambda: ch.stats().writers_waiting == 1, what="writer blocked")
    assert ch.read() == "in time"
    writer.join()


def test_poison_during_timed_wait_raises_poisoned() -> None:
    ch = csp.Channel()
    reader = Background(ch.read, timeout=10)
    wait_until(lambda: ch.stats().readers_waiting == 1, what="reader blocked")
    ch.poison()
    assert isinstance(reader.exception(), csp.ChannelPoisoned)


# --------------------------------------------------------------------------- the race


def _timeout_race(capacity: int, iterations: int, seed: int) -> None:
    """A writer and a reader, both with short timeouts, race for every value.

    The two threads meet at a barrier before each value; then the writer writes with a short
    timeout while the reader arrives after a short random delay and reads with a short
    timeout, so that hand-offs and timeouts happen at nearly the same moment. Each value is
    delivered exactly once or not at all: a write that raised TimeoutError was never received,
    a write that returned was received exactly once (for buffered channels, possibly later, or
    by draining the buffer at the end).
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

    def writer() -> None:
        for value, (write_timeout, _, _) in enumerate(plan):
            barrier.wait()
            try:
                ch.write(value, timeout=write_timeout)
            except TimeoutError:
                timed_out.append(value)
            else:
                sent.append(value)

    def reader() -> None:
        nonlocal reader_timeouts
        for _, delay, read_timeout in plan:
            barrier.wait()
            if delay:
                time.sleep(delay)  # shapes the race; correctness never depends on it
            try:
                received.append(ch.read(timeout=read_timeout))
            except TimeoutError:
                reader_timeouts += 1

    w = Background(writer)
    r = Background(reader)
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
