"""Many-to-many stress: every message sent is delivered exactly once.

The 8x8 Par-on-ends test and the poison-mid-stream test run their processes under each
backend (tests/_kit.py); the sentinel tests use plain threads, and the big 8x8x10^4 run
(the issue's bar, seconds long) stays on threads.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter

import pytest

import ferrocsp as csp
from _chans import Chans
from _kit import Kit
from _support import Background

WRITERS = 8
READERS = 8


def _check_delivery(received: list[list[int]], total: int) -> None:
    flat = [v for chunk in received for v in chunk]
    counts = Counter(flat)
    dup = sorted(v for v, c in counts.items() if c > 1)
    assert not dup, f"{len(dup)} values delivered more than once, e.g. {dup[:10]}"
    missing = sorted(set(range(total)) - set(counts))
    assert not missing, f"{len(missing)} values lost, e.g. {missing[:10]}"
    assert sorted(flat) == list(range(total))


def _threads_with_sentinels(capacity: int, per_writer: int) -> None:
    """Plain threads on one channel; readers stop at a sentinel written after all writers."""
    ch = csp.Channel(capacity, name="stress")
    stop = object()
    total = WRITERS * per_writer

    def writer(k: int) -> None:
        for i in range(k * per_writer, (k + 1) * per_writer):
            ch.write(i)

    def reader() -> list[int]:
        got = []
        while True:
            v = ch.read()
            if v is stop:
                return got
            got.append(v)

    readers = [Background(reader) for _ in range(READERS)]
    writers = [Background(writer, k) for k in range(WRITERS)]
    for w in writers:
        w.join(timeout=120)
    for _ in range(READERS):
        ch.write(stop)
    received = [r.join(timeout=120) for r in readers]
    _check_delivery(received, total)
    # each writer's values arrive in the order it sent them (per reader)
    for chunk in received:
        for k in range(WRITERS):
            mine = [v for v in chunk if v // per_writer == k]
            assert mine == sorted(mine)
    st = ch.stats()
    assert (st.buffered, st.readers_waiting, st.writers_waiting) == (0, 0, 0)


def _par_with_retire(
    capacity: int, per_writer: int, k: Kit | None = None, mk: Chans | None = None
) -> None:
    """Processes in a Par on counted ends; readers stop when the last writer end retires."""
    k = k or Kit("thread")
    ch = (mk or csp.Channel)(capacity, name="stress-ends")
    total = WRITERS * per_writer

    async def writer(k: Kit, out: csp.Writer, n: int) -> int:
        with out:
            for i in range(n * per_writer, (n + 1) * per_writer):
                await k.write(out, i)
        return n

    async def reader(k: Kit, inp: csp.Reader) -> list[int]:
        with inp:
            return [v async for v in k.iter(inp)]

    procs = [k.process(writer)(ch.writer(), n) for n in range(WRITERS)]
    procs += [k.process(reader)(ch.reader()) for _ in range(READERS)]
    results = k.Par(*procs).run()
    assert results[:WRITERS] == list(range(WRITERS))
    _check_delivery(results[WRITERS:], total)
    assert ch.stats().retired


@pytest.mark.timeout(60)
@pytest.mark.parametrize("capacity", [0, 16], ids=["rendezvous", "buffered"])
def test_8x8_threads_exact_multiset(capacity: int) -> None:
    _threads_with_sentinels(capacity, per_writer=10_000 // WRITERS)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("capacity", [0, 16], ids=["rendezvous", "buffered"])
def test_8x8_par_ends_exact_multiset(k: Kit, mk: Chans, capacity: int) -> None:
    # 10^4 values on local and shared channels; a tenth on networked ones (a round trip each).
    n = 10_000 if not mk.is_net else 1_000
    _par_with_retire(capacity, per_writer=n // WRITERS, k=k, mk=mk)


@pytest.mark.timeout(60)
def test_8x8_buffered_capacity_one() -> None:
    _threads_with_sentinels(1, per_writer=2_000 // WRITERS)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("capacity", [0, 1, 64], ids=["rendezvous", "cap1", "cap64"])
def test_8x8_big_exact_multiset(capacity: int) -> None:
    """The issue's bar: 8 writers x 8 readers, 10^4 messages per writer."""
    _threads_with_sentinels(capacity, per_writer=10_000)
    _par_with_retire(capacity, per_writer=10_000)


def _poison_mid_stream(k: Kit, mk: Chans, capacity: int, seed: int) -> None:
    """Poison while 4 writers and 4 readers (processes of ``k``'s backend) are busy: every
    one ends with ChannelPoisoned, and (rendezvous) a write returned iff its value was
    received."""
    ch = mk(capacity, name="poison-race")
    succeeded: list[list[int]] = [[] for _ in range(4)]

    async def writer(k: Kit, n: int) -> None:
        # Writes until poisoned (distinct values per writer): a bounded writer could finish
        # before the main thread, starved of the GIL by a busy scheduler, gets to poison.
        for i in itertools.count(n, 4):
            await k.write(ch, i)
            succeeded[n].append(i)

    async def reader(k: Kit, got: list[int]) -> None:
        while True:
            got.append(await k.read(ch))

    received: list[list[int]] = [[] for _ in range(4)]
    readers = k.spawn_many(reader, [(got,) for got in received])
    writers = k.spawn_many(writer, [(n,) for n in range(4)])
    target = 200 + 150 * seed
    deadline = time.monotonic() + 20
    while sum(map(len, received)) < target and time.monotonic() < deadline:
        time.sleep(0.001)  # let traffic flow; the exact poison moment does not matter
    ch.poison()
    for t in readers + writers:
        assert isinstance(t.exception(timeout=20), csp.ChannelPoisoned)
    got = Counter(v for chunk in received for v in chunk)
    assert all(c == 1 for c in got.values()), "a value was received twice"
    ok = {v for chunk in succeeded for v in chunk}
    assert set(got) <= ok, "received a value whose write did not return"
    if capacity == 0:
        assert set(got) == ok, "a rendezvous write returned but its value was not received"
    st = ch.stats()
    assert st.poisoned
    assert (st.buffered, st.readers_waiting, st.writers_waiting) == (0, 0, 0)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("capacity", [0, 8], ids=["rendezvous", "buffered"])
def test_poison_mid_stream_many_to_many(k: Kit, mk: Chans, capacity: int) -> None:
    for seed in range(5):
        _poison_mid_stream(k, mk, capacity, seed)
