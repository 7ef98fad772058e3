"""Channel ends: Reader / Writer, counting, retire, context managers, GC, mobility.

Tests taking ``k`` do their channel operations in a process of each backend (tests/_kit.py);
the others are about the ends' own (non-blocking) API and run once. Tests taking ``mk`` also
run on networked channels (tests/_chans.py).
"""

from __future__ import annotations

import gc

import pytest

import ferrocsp as csp
from _chans import Chans
from _kit import SHARED_BACKENDS, Kit
from _os_support import backend_fixture
from _support import Background, wait_until

backend = backend_fixture(SHARED_BACKENDS)  # these tests run on OS processes too


def test_end_types_and_channel() -> None:
    ch = csp.Channel(name="ends")
    r, w = ch.reader(), ch.writer()
    assert isinstance(r, csp.Reader)
    assert isinstance(w, csp.Writer)
    assert r.channel == ch
    assert w.channel == ch
    assert r.channel.name == "ends"


def test_each_call_makes_a_new_counted_end() -> None:
    ch = csp.Channel()
    ends = [ch.reader(), ch.reader(), ch.writer()]
    st = ch.stats()
    assert st.reader_ends == 2
    assert st.writer_ends == 1
    assert ends[0] is not ends[1]


@pytest.mark.parametrize("capacity", [0, 2])
def test_write_through_writer_read_through_reader(mk: Chans, capacity: int) -> None:
    ch = mk(capacity)
    r, w = ch.reader(), ch.writer()
    t = Background(lambda: [r.read() for _ in range(10)])
    for i in range(10):
        w.write(i)
    assert t.join() == list(range(10))


def test_nowait_on_ends() -> None:
    ch = csp.Channel(1)
    r, w = ch.reader(), ch.writer()
    with pytest.raises(csp.WouldBlock):
        r.read_nowait()
    w.write_nowait("a")
    with pytest.raises(csp.WouldBlock):
        w.write_nowait("b")
    assert r.read_nowait() == "a"


def test_ends_and_channel_interoperate(mk: Chans) -> None:
    ch = mk(4)
    r, w = ch.reader(), ch.writer()
    w.write(1)
    ch.write(2)
    assert ch.read() == 1
    assert r.read() == 2


# --------------------------------------------------------------------------- retire


def test_retire_is_idempotent() -> None:
    ch = csp.Channel()
    r, w = ch.reader(), ch.writer()
    w.retire()
    w.retire()
    r.retire()
    r.retire()
    assert ch.stats().retired


def test_using_retired_writer_end_raises_even_if_other_writers_remain() -> None:
    ch = csp.Channel(4)
    w1, w2 = ch.writer(), ch.writer()
    w1.retire()
    with pytest.raises(csp.ChannelRetired):
        w1.write(1)
    with pytest.raises(csp.ChannelRetired):
        w1.write_nowait(1)
    assert not ch.stats().retired
    w2.write(2)  # the other writer end still works
    assert ch.read() == 2


def test_using_retired_reader_end_raises_even_if_other_readers_remain() -> None:
    ch = csp.Channel(4)
    r1, r2 = ch.reader(), ch.reader()
    ch.write("x")
    r1.retire()
    with pytest.raises(csp.ChannelRetired):
        r1.read()
    with pytest.raises(csp.ChannelRetired):
        r1.read_nowait()
    with pytest.raises(csp.ChannelRetired):
        list(r1)
    assert not ch.stats().retired
    assert r2.read() == "x"  # nothing was taken by the retired end


async def retires_writers_then_drains(
    k: Kit, ch: csp.Channel, r: csp.Reader, w1: csp.Writer, w2: csp.Writer
) -> None:
    await k.write(w1, "a")
    await k.write(w2, "b")
    w1.retire()
    assert not ch.stats().retired
    await k.write(w2, "c")
    w2.retire()
    assert ch.stats().retired
    assert await k.read(r) == "a"
    assert await k.read(ch) == "b"
    assert await k.read(r) == "c"
    with pytest.raises(csp.ChannelRetired):
        await k.read(r)
    with pytest.raises(csp.ChannelRetired):
        await k.read(ch)
    with pytest.raises(csp.ChannelRetired):
        r.read_nowait()


def test_last_writer_retire_gives_end_of_stream_after_drain(k: Kit, mk: Chans) -> None:
    ch = mk(3)
    k.run(retires_writers_then_drains, ch, ch.reader(), ch.writer(), ch.writer())


def test_writes_raise_after_writer_side_retired() -> None:
    ch = csp.Channel(3)
    w = ch.writer()
    w.retire()
    with pytest.raises(csp.ChannelRetired):
        ch.write(1)
    with pytest.raises(csp.ChannelRetired):
        ch.write_nowait(1)
    assert ch.stats().buffered == 0


async def writes_and_reads_raise_retired(k: Kit, ch: csp.Channel, w: csp.Writer) -> None:
    with pytest.raises(csp.ChannelRetired):
        await k.write(w, 1)
    with pytest.raises(csp.ChannelRetired):
        w.write_nowait(1)
    with pytest.raises(csp.ChannelRetired):
        await k.write(ch, 1)
    with pytest.raises(csp.ChannelRetired):
        await k.read(ch)


def test_last_reader_retire_makes_writes_raise(k: Kit) -> None:
    ch = csp.Channel(3)
    r = ch.reader()
    w = ch.writer()
    r.retire()
    assert ch.stats().retired
    k.run(writes_and_reads_raise_retired, ch, w)


def test_channel_without_ends_never_retires() -> None:
    ch = csp.Channel(1)
    assert not ch.stats().retired
    ch.write(1)
    assert ch.read() == 1
    with pytest.raises(csp.WouldBlock):
        ch.read_nowait()  # empty, but not end-of-stream
    assert not ch.stats().retired


async def collect(k: Kit, r: csp.Reader) -> list[int]:
    return [v async for v in k.iter(r)]


def test_reader_iteration_stops_at_end_of_stream(k: Kit, mk: Chans) -> None:
    ch = mk()
    r = ch.reader()
    w = ch.writer()

    def produce() -> None:
        with w:
            for i in range(10):
                w.write(i)

    t = Background(produce)
    assert k.run(collect, r) == list(range(10))
    t.join()


def test_for_loop_over_reader_buffered(mk: Chans) -> None:
    ch = mk(10)
    r, w = ch.reader(), ch.writer()
    for i in range(5):
        w.write(i * i)
    w.retire()
    got = []
    for v in r:
        got.append(v)
    assert got == [0, 1, 4, 9, 16]


# --------------------------------------------------------------------------- context managers


def test_context_manager_returns_end_and_retires_on_exit() -> None:
    ch = csp.Channel(2)
    with ch.writer() as w:
        assert isinstance(w, csp.Writer)
        w.write(1)
    with pytest.raises(csp.ChannelRetired):
        w.write(2)
    assert ch.stats().retired
    assert ch.read() == 1
    with pytest.raises(csp.ChannelRetired):
        ch.read()


def test_reader_context_manager() -> None:
    ch = csp.Channel(2)
    w = ch.writer()
    with ch.reader() as r:
        assert isinstance(r, csp.Reader)
        w.write(1)
        assert r.read() == 1
    with pytest.raises(csp.ChannelRetired):
        r.read()
    with pytest.raises(csp.ChannelRetired):
        w.write(2)


def test_context_manager_retires_on_exception() -> None:
    ch = csp.Channel(1)
    with pytest.raises(KeyError), ch.writer():
        raise KeyError("boom")
    assert ch.stats().retired


# --------------------------------------------------------------------------- GC


def test_dropping_last_reference_to_writer_retires_it() -> None:
    ch = csp.Channel(2)
    w = ch.writer()
    w.write("last")
    del w
    gc.collect()
    assert ch.stats().retired
    assert ch.read() == "last"
    with pytest.raises(csp.ChannelRetired):
        ch.read()


def test_dropping_last_reference_to_reader_retires_it() -> None:
    ch = csp.Channel(2)
    r = ch.reader()
    del r
    gc.collect()
    assert ch.stats().retired
    with pytest.raises(csp.ChannelRetired):
        ch.write(1)


async def read(k: Kit, r: csp.Reader) -> object:
    return await k.read(r)


def test_dropping_end_wakes_blocked_reader(k: Kit) -> None:
    """The last writer end is garbage-collected in the test's thread: its retire (a Rust
    ``Drop``) wakes a reader blocked in a process of each backend."""
    ch = csp.Channel()
    r = ch.reader()
    w = ch.writer()
    reader = k.spawn(read, r)
    wait_until(lambda: ch.stats().readers_waiting == 1, what="reader blocked")
    del w
    gc.collect()
    assert isinstance(reader.exception(), csp.ChannelRetired)


# --------------------------------------------------------------------------- poison via ends


def test_end_poison_poisons_channel() -> None:
    ch = csp.Channel(2)
    r, w = ch.reader(), ch.writer()
    w.write(1)
    r.poison()
    assert ch.stats().poisoned
    with pytest.raises(csp.ChannelPoisoned):
        w.write(2)
    with pytest.raises(csp.ChannelPoisoned):
        r.read()

    ch2 = csp.Channel()
    r2, w2 = ch2.reader(), ch2.writer()
    w2.poison()
    with pytest.raises(csp.ChannelPoisoned):
        r2.read()


# --------------------------------------------------------------------------- mobility


@pytest.mark.parametrize("capacity", [0, 1])
def test_ends_are_valid_payloads(mk: Chans, capacity: int) -> None:
    """An end sent over a channel (same interpreter) is the same object and still works.

    Networked: the receiver gets its own end of the same channel, counted from the moment it
    was sent (docs/net.md), so the sender retires the end it kept."""
    data = mk(4)
    carrier = mk(capacity)
    w = data.writer()
    r = data.reader()

    def receive_and_use() -> None:
        got = carrier.read()
        if mk.is_net:
            assert type(got) is type(w)
            assert got.channel.name == data.name
        else:
            assert got is w
        got.write("via mobile end")
        got.retire()

    t = Background(receive_and_use)
    carrier.write(w)
    if mk.is_net:
        w.retire()
    t.join()
    assert r.read() == "via mobile end"
    with pytest.raises(csp.ChannelRetired):
        r.read()


def test_ends_are_one_directional() -> None:
    ch = csp.Channel()
    r, w = ch.reader(), ch.writer()
    for name in ("write", "write_nowait", "awrite"):
        assert not hasattr(r, name), f"Reader has {name}"
    for name in ("read", "read_nowait", "aread", "__iter__"):
        assert not hasattr(w, name), f"Writer has {name}"
