"""Channels: construction, rendezvous and buffered semantics, stats, iteration, identity.

Tests taking ``k`` run under the thread, greenlet and asyncio backends (tests/_kit.py): the
operations that may block run in processes of the backend, against the test's thread or
against each other. Construction, ``stats``, ``*_nowait``, identity and GC tests run once
(the same calls under every backend), as does the threads-with-a-Barrier smoke test.
Tests taking ``mk`` also run on networked channels (tests/_chans.py).
"""

from __future__ import annotations

import dataclasses
import gc
import re
import threading
import weakref
from typing import Any

import pytest

import ferrocsp as csp
from _chans import WRITER_KEEPS_VALUE, Chans
from _kit import SHARED_BACKENDS, Kit
from _os_support import COPIES, backend_fixture, in_process_only
from _support import Background, wait_until

backend = backend_fixture(SHARED_BACKENDS)  # these tests run on OS processes too

PUBLIC_NAMES = [
    "Channel",
    "Reader",
    "Writer",
    "ChannelStats",
    "process",
    "Process",
    "Par",
    "Seq",
    "Spawn",
    "CSPError",
    "ChannelPoisoned",
    "ChannelRetired",
    "WouldBlock",
    "Deadlock",
    "ProcessCrashed",
    "set_default_backend",
]


# --------------------------------------------------------------------------- the module


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_public_name_exported_and_documented(name: str) -> None:
    obj = getattr(csp, name)
    assert name in csp.__all__
    assert obj.__doc__, f"csp.{name} has no docstring"


# --------------------------------------------------------------------------- construction


def test_default_channel_is_rendezvous() -> None:
    ch = csp.Channel()
    assert ch.capacity == 0
    assert ch.stats().capacity == 0


def test_capacity_keyword_and_positional() -> None:
    assert csp.Channel(3).capacity == 3
    assert csp.Channel(capacity=5).capacity == 5


def test_default_names_are_unique_chan_n() -> None:
    names = [csp.Channel().name for _ in range(10)]
    for name in names:
        assert re.fullmatch(r"chan-\d+", name), name
    assert len(set(names)) == len(names)


def test_explicit_name() -> None:
    ch = csp.Channel(name="jobs")
    assert ch.name == "jobs"
    assert csp.Channel(2, name="results").name == "results"


def test_name_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        csp.Channel(0, "jobs")  # type: ignore[misc]


# --------------------------------------------------------------------------- stats


def test_stats_of_fresh_channel() -> None:
    st = csp.Channel(4).stats()
    assert isinstance(st, csp.ChannelStats)
    assert st == csp.ChannelStats(
        capacity=4,
        buffered=0,
        readers_waiting=0,
        writers_waiting=0,
        reader_ends=0,
        writer_ends=0,
        poisoned=False,
        retired=False,
    )


def test_stats_is_frozen_dataclass() -> None:
    st = csp.Channel().stats()
    assert dataclasses.is_dataclass(st)
    fields = [f.name for f in dataclasses.fields(st)]
    assert fields == [
        "capacity",
        "buffered",
        "readers_waiting",
        "writers_waiting",
        "reader_ends",
        "writer_ends",
        "poisoned",
        "retired",
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        st.buffered = 3  # type: ignore[misc]


def test_stats_is_a_snapshot() -> None:
    ch = csp.Channel(2)
    before = ch.stats()
    ch.write(1)
    assert before.buffered == 0
    assert ch.stats().buffered == 1


async def read(k: Kit, ch: csp.Channel | csp.Reader) -> Any:
    return await k.read(ch)


async def write(k: Kit, ch: csp.Channel | csp.Writer, value: Any) -> None:
    await k.write(ch, value)


def test_stats_counts_waiting_readers_and_writers(k: Kit, mk: Chans) -> None:
    ch = mk()
    readers = k.spawn_many(read, [(ch,)] * 3)
    wait_until(lambda: ch.stats().readers_waiting == 3, what="3 readers waiting")
    assert ch.stats().writers_waiting == 0
    for i in range(3):
        ch.write(i)
    assert sorted(r.join() for r in readers) == [0, 1, 2]
    assert ch.stats().readers_waiting == 0

    writers = k.spawn_many(write, [(ch, i) for i in range(2)])
    wait_until(lambda: ch.stats().writers_waiting == 2, what="2 writers waiting")
    assert ch.stats().readers_waiting == 0
    assert sorted([ch.read(), ch.read()]) == [0, 1]
    for w in writers:
        w.join()
    assert ch.stats().writers_waiting == 0


# --------------------------------------------------------------------------- rendezvous


def test_rendezvous_nowait_without_partner_would_block() -> None:
    ch = csp.Channel()
    with pytest.raises(csp.WouldBlock):
        ch.write_nowait(1)
    with pytest.raises(csp.WouldBlock):
        ch.read_nowait()
    # nothing was left behind by the failed attempts
    st = ch.stats()
    assert (st.buffered, st.readers_waiting, st.writers_waiting) == (0, 0, 0)


def test_rendezvous_write_completes_only_when_read(k: Kit, mk: Chans) -> None:
    ch = mk()
    writer = k.spawn(write, ch, "hello")
    wait_until(lambda: ch.stats().writers_waiting == 1, what="writer blocked")
    assert not writer.done.is_set()
    assert ch.read() == "hello"
    assert writer.join() is None


def test_rendezvous_read_blocks_until_written(k: Kit, mk: Chans) -> None:
    ch = mk()
    reader = k.spawn(read, ch)
    wait_until(lambda: ch.stats().readers_waiting == 1, what="reader blocked")
    assert not reader.done.is_set()
    ch.write(42)
    assert reader.join() == 42


def test_rendezvous_write_nowait_succeeds_with_waiting_reader(k: Kit, mk: Chans) -> None:
    ch = mk()
    reader = k.spawn(read, ch)
    wait_until(lambda: ch.stats().readers_waiting == 1, what="reader blocked")
    ch.write_nowait("x")
    assert reader.join() == "x"


def test_rendezvous_read_nowait_succeeds_with_waiting_writer(k: Kit, mk: Chans) -> None:
    mk.local_only(WRITER_KEEPS_VALUE)
    ch = mk()
    writer = k.spawn(write, ch, "y")
    wait_until(lambda: ch.stats().writers_waiting == 1, what="writer blocked")
    assert ch.read_nowait() == "y"
    writer.join()


async def produce_range(k: Kit, ch: csp.Channel | csp.Writer, n: int) -> None:
    for i in range(n):
        await k.write(ch, i)


async def consume_n(k: Kit, ch: csp.Channel | csp.Reader, n: int) -> list[int]:
    return [await k.read(ch) for _ in range(n)]


@pytest.mark.parametrize("capacity", [0, 2])
def test_order_preserved_single_writer(k: Kit, mk: Chans, capacity: int) -> None:
    ch = mk(capacity)
    n = 200 if not mk.is_net else 40

    # both sides on the backend (one scheduler / loop), then each against a thread
    procs = k.process(produce_range)(ch, n), k.process(consume_n)(ch, n)
    assert k.Par(*procs).run() == [None, list(range(n))]
    writer = k.spawn(produce_range, ch, n)
    assert [ch.read() for _ in range(n)] == list(range(n))
    writer.join()
    reader = k.spawn(consume_n, ch, n)
    for i in range(n):
        ch.write(i)
    assert reader.join() == list(range(n))


async def echo_plus_one(k: Kit, ping: csp.Channel, pong: csp.Channel) -> None:
    for _ in range(200):
        await k.write(pong, await k.read(ping) + 1)


def test_ping_pong(k: Kit, mk: Chans) -> None:
    ping, pong = mk(name="ping"), mk(name="pong")
    t = k.spawn(echo_plus_one, ping, pong)
    v = 0
    for _ in range(200):
        ping.write(v)
        v = pong.read()
    t.join()
    assert v == 200


# --------------------------------------------------------------------------- buffered


async def fills_a_buffer(k: Kit) -> None:
    ch = csp.Channel(3)
    for i in range(3):
        await k.write(ch, i)  # must not block
    assert ch.stats().buffered == 3
    with pytest.raises(csp.WouldBlock):
        ch.write_nowait(99)
    with pytest.raises(TimeoutError):
        await k.write(ch, 99, timeout=0)
    assert ch.stats().buffered == 3
    assert [await k.read(ch) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(csp.WouldBlock):
        ch.read_nowait()


def test_buffered_writes_do_not_block_until_full(k: Kit) -> None:
    k.run(fills_a_buffer)


def test_buffered_nowait_fifo() -> None:
    ch = csp.Channel(5)
    for i in range(5):
        ch.write_nowait(i)
    assert [ch.read_nowait() for _ in range(5)] == [0, 1, 2, 3, 4]
    assert ch.stats().buffered == 0


def test_buffered_blocked_writer_resumes_when_space(k: Kit, mk: Chans) -> None:
    ch = mk(1)
    ch.write("a")
    writer = k.spawn(write, ch, "b")
    wait_until(lambda: ch.stats().writers_waiting == 1, what="writer blocked on full buffer")
    assert not writer.done.is_set()
    assert ch.read() == "a"
    writer.join()
    assert ch.stats().buffered == 1
    assert ch.read() == "b"


def test_buffered_blocked_reader_woken_by_write(k: Kit, mk: Chans) -> None:
    ch = mk(4)
    reader = k.spawn(read, ch)
    wait_until(lambda: ch.stats().readers_waiting == 1, what="reader blocked on empty buffer")
    ch.write("v")
    assert reader.join() == "v"
    assert ch.stats().buffered == 0


async def sends_none(k: Kit, ch: csp.Channel) -> None:
    await k.write(ch, None)
    ch.write_nowait(None)
    assert await k.read(ch) is None
    assert ch.read_nowait() is None
    with pytest.raises(csp.WouldBlock):
        ch.read_nowait()


def test_none_is_a_value(k: Kit, mk: Chans) -> None:
    k.run(sends_none, mk(2))  # created here: on "os" it moves to shared memory


# --------------------------------------------------------------------------- by reference


@pytest.mark.parametrize("capacity", [0, 2])
def test_values_passed_by_reference(k: Kit, capacity: int) -> None:
    in_process_only(k.backend, COPIES)
    ch = csp.Channel(capacity)
    obj = {"payload": [1, 2, 3]}
    received = k.spawn(read, ch)
    ch.write(obj)
    assert received.join() is obj
    sent = k.spawn(write, ch, obj)
    assert ch.read() is obj
    sent.join()


def test_unhashable_and_odd_values(k: Kit) -> None:
    in_process_only(k.backend, COPIES)
    ch = csp.Channel(4)
    values = [[1], {"a": 1}, object(), ch]

    async def body(k: Kit) -> None:
        for v in values:
            await k.write(ch, v)
        for v in values:
            assert await k.read(ch) is v

    k.run(body)


# --------------------------------------------------------------------------- iteration


async def produce_and_retire(k: Kit, w: csp.Writer, n: int) -> None:
    for i in range(n):
        await k.write(w, i)
    w.retire()


async def collect(k: Kit, source: csp.Channel | csp.Reader) -> list[int]:
    return [v async for v in k.iter(source)]


async def collect_twice(k: Kit, ch: csp.Channel) -> tuple[list[int], list[int]]:
    return [v async for v in k.iter(ch)], [v async for v in k.iter(ch.reader())]


@pytest.mark.parametrize("capacity", [0, 3])
def test_iterate_channel_until_writers_retire(k: Kit, mk: Chans, capacity: int) -> None:
    ch = mk(capacity)
    w = ch.writer()
    procs = k.process(produce_and_retire)(w, 20), k.process(collect)(ch)
    assert k.Par(*procs).run() == [None, list(range(20))]


def test_iteration_drains_buffer_after_retire(k: Kit, mk: Chans) -> None:
    ch = mk(5)
    w = ch.writer()
    for i in range(4):
        w.write(i)
    w.retire()
    assert tuple(k.run(collect_twice, ch)) == ([0, 1, 2, 3], [])


# --------------------------------------------------------------------------- identity


def test_channel_equality_and_hash() -> None:
    a, b = csp.Channel(), csp.Channel()
    assert a == a
    assert a != b
    assert len({a, b, a}) == 2
    assert hash(a) == hash(a)
    assert a.reader().channel == a
    assert a.writer().channel == a
    assert a.reader().channel != b


def test_repr_mentions_name() -> None:
    ch = csp.Channel(name="pipeline-in")
    assert "pipeline-in" in repr(ch)


# --------------------------------------------------------------------------- memory


def test_buffered_reference_cycle_is_collected() -> None:
    """A buffered value referring back to its channel must not leak (GC traversal)."""

    class Payload:
        pass

    ch = csp.Channel(1)
    payload = Payload()
    payload.ch = ch  # type: ignore[attr-defined]
    ch.write(payload)
    ref = weakref.ref(payload)
    del ch, payload
    gc.collect()
    gc.collect()
    assert ref() is None, "channel <-> buffered value cycle was not collected"


def test_many_readers_one_channel_smoke(k: Kit, mk: Chans) -> None:
    ch = mk()
    readers = k.spawn_many(consume_n, [(ch, 50)] * 3)
    for i in range(150):
        ch.write(i)
    assert sorted(v for r in readers for v in r.join()) == list(range(150))


def test_many_threads_one_channel_smoke() -> None:
    ch = csp.Channel()
    barrier = threading.Barrier(4)
    out: list[int] = []
    lock = threading.Lock()

    def reader() -> None:
        barrier.wait()
        for _ in range(50):
            v = ch.read()
            with lock:
                out.append(v)

    readers = [Background(reader) for _ in range(3)]
    barrier.wait()
    for i in range(150):
        ch.write(i)
    for r in readers:
        r.join()
    assert sorted(out) == list(range(150))
