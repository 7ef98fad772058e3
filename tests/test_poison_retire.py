"""Poison and retire: immediate effects, waking blocked operations, messages.

Every test whose operations may block runs under the thread, greenlet and asyncio backends
(tests/_kit.py): the blocked party is a process of the backend, the test's thread poisons or
retires. Tests of the non-blocking calls (``*_nowait``, ``stats``) run once: they are the
same call under every backend. Tests taking ``mk`` also run on networked channels
(tests/_chans.py).
"""

from __future__ import annotations

from typing import Any

import pytest

import ferrocsp as csp
from _chans import Chans
from _kit import SHARED_BACKENDS, Kit
from _os_support import backend_fixture
from _support import wait_until

backend = backend_fixture(SHARED_BACKENDS)  # these tests run on OS processes too

pytestmark = pytest.mark.timeout(20)


async def read(k: Kit, ch: csp.Channel | csp.Reader) -> Any:
    return await k.read(ch)


async def write(k: Kit, ch: csp.Channel | csp.Writer, value: Any) -> None:
    await k.write(ch, value)


async def drain(k: Kit, ch: csp.Channel | csp.Reader) -> list[Any]:
    return [v async for v in k.iter(ch)]


async def drain_until_poisoned(k: Kit, ch: csp.Channel | csp.Reader) -> tuple[list[Any], Any]:
    """(the values read, the ChannelPoisoned that ended the iteration)."""
    got: list[Any] = []
    try:
        async for v in k.iter(ch):
            got.append(v)
    except csp.ChannelPoisoned as exc:
        return got, exc
    return got, None


# --------------------------------------------------------------------------- poison


async def everything_raises_poisoned(k: Kit, ch: csp.Channel) -> None:
    with pytest.raises(csp.ChannelPoisoned):
        await k.read(ch)
    with pytest.raises(csp.ChannelPoisoned):
        await k.write(ch, 1)
    with pytest.raises(csp.ChannelPoisoned):
        ch.read_nowait()
    with pytest.raises(csp.ChannelPoisoned):
        ch.write_nowait(1)
    with pytest.raises(csp.ChannelPoisoned):
        await k.read(ch, timeout=0.01)
    with pytest.raises(csp.ChannelPoisoned):
        await k.write(ch, 1, timeout=0.01)
    with pytest.raises(csp.ChannelPoisoned):
        await k.select(csp.Alt(ch, csp.Timeout(0.01)))
    with pytest.raises(csp.ChannelPoisoned):
        [v async for v in k.iter(ch)]


@pytest.mark.parametrize("capacity", [0, 3])
def test_poisoned_channel_rejects_everything(k: Kit, mk: Chans, capacity: int) -> None:
    ch = mk(capacity)
    ch.poison()
    assert ch.stats().poisoned
    k.run(everything_raises_poisoned, ch)


def test_poison_is_idempotent() -> None:
    ch = csp.Channel()
    ch.poison()
    ch.poison()
    ch.reader().poison()
    assert ch.stats().poisoned
    with pytest.raises(csp.ChannelPoisoned):
        ch.read_nowait()


def test_poison_drops_buffered_values(k: Kit, mk: Chans) -> None:
    ch = mk(5)
    for i in range(3):
        ch.write(i)
    ch.poison()
    st = ch.stats()
    assert st.poisoned
    assert st.buffered == 0
    with pytest.raises(csp.ChannelPoisoned):
        k.run(read, ch)


def test_poison_reaches_all_ends_and_copies(k: Kit, mk: Chans) -> None:
    ch = mk(1)
    r, w = ch.reader(), ch.writer()
    ch.poison()
    with pytest.raises(csp.ChannelPoisoned):
        k.run(read, r)
    with pytest.raises(csp.ChannelPoisoned):
        k.run(write, w, 0)
    with pytest.raises(csp.ChannelPoisoned):
        k.run(drain, r)


@pytest.mark.parametrize("capacity", [0, 2])
def test_blocked_read_woken_by_poison(k: Kit, mk: Chans, capacity: int) -> None:
    ch = mk(capacity, name="poisoned-while-reading")
    reader = k.spawn(read, ch)
    wait_until(lambda: ch.stats().readers_waiting == 1, what="reader blocked")
    ch.poison()
    exc = reader.exception()
    assert isinstance(exc, csp.ChannelPoisoned)
    assert "poisoned-while-reading" in str(exc)
    assert ch.stats().readers_waiting == 0


def test_blocked_rendezvous_write_woken_by_poison(k: Kit, mk: Chans) -> None:
    ch = mk(name="poisoned-while-writing")
    writer = k.spawn(write, ch, "never delivered")
    wait_until(lambda: ch.stats().writers_waiting == 1, what="writer blocked")
    ch.poison()
    exc = writer.exception()
    assert isinstance(exc, csp.ChannelPoisoned)
    assert "poisoned-while-writing" in str(exc)
    assert ch.stats().writers_waiting == 0


def test_blocked_buffered_write_woken_by_poison(k: Kit, mk: Chans) -> None:
    ch = mk(1)
    ch.write("fills the buffer")
    writer = k.spawn(write, ch, "blocked")
    wait_until(lambda: ch.stats().writers_waiting == 1, what="writer blocked on full buffer")
    ch.poison()
    assert isinstance(writer.exception(), csp.ChannelPoisoned)


def test_poison_wakes_every_blocked_party(k: Kit, mk: Chans) -> None:
    ch = mk()
    readers = k.spawn_many(read, [(ch,)] * 4)
    wait_until(lambda: ch.stats().readers_waiting == 4, what="4 readers blocked")
    ch.poison()
    for r in readers:
        assert isinstance(r.exception(), csp.ChannelPoisoned)

    ch2 = mk()
    writers = k.spawn_many(write, [(ch2, i) for i in range(4)])
    wait_until(lambda: ch2.stats().writers_waiting == 4, what="4 writers blocked")
    ch2.poison()
    for w in writers:
        assert isinstance(w.exception(), csp.ChannelPoisoned)


def test_blocked_read_woken_by_poison_through_end(k: Kit, mk: Chans) -> None:
    ch = mk()
    r, w = ch.reader(), ch.writer()
    reader = k.spawn(read, r)
    wait_until(lambda: ch.stats().readers_waiting == 1, what="reader blocked")
    w.poison()
    assert isinstance(reader.exception(), csp.ChannelPoisoned)


async def chooser(k: Kit, alt: csp.Alt) -> Any:
    return await k.select(alt)


def test_blocked_alt_woken_by_poison(k: Kit, mk: Chans) -> None:
    a, b = mk(name="a"), mk(name="b")
    t = k.spawn(chooser, csp.Alt(a, csp.Output(b, 1)))
    wait_until(
        lambda: a.stats().readers_waiting == 1 and b.stats().writers_waiting == 1,
        what="alt blocked on both guards",
    )
    b.poison()
    exc = t.exception()
    assert isinstance(exc, csp.ChannelPoisoned)
    assert f"'{b.name}'" in str(exc)
    assert a.stats().readers_waiting == 0


def test_iteration_raises_on_poison(k: Kit, mk: Chans) -> None:
    ch = mk()
    r = ch.reader()
    t = k.spawn(drain_until_poisoned, r)
    for i in range(3):
        ch.write(i)
    wait_until(lambda: ch.stats().readers_waiting == 1, what="iterator blocked")
    ch.poison()
    got, exc = t.join()
    assert isinstance(exc, csp.ChannelPoisoned)
    assert got == [0, 1, 2]


def test_poison_message_names_channel_and_process(k: Kit, mk: Chans) -> None:
    ch = mk(name="named-poison")
    ch.poison()
    with pytest.raises(csp.ChannelPoisoned, match="named-poison") as info:
        k.run(read, ch)
    expected = f"read on channel '{ch.name}' in process 'read': channel is poisoned"
    assert str(info.value) == expected
    with pytest.raises(csp.ChannelPoisoned, match="named-poison"):
        ch.write_nowait(1)
    # What the name is: a local name is a label (another channel of that name is not
    # poisoned); a networked name is the channel (opened again elsewhere, it is poisoned).
    assert mk.again(ch).stats().poisoned == mk.is_net


# --------------------------------------------------------------------------- retire


@pytest.mark.parametrize("capacity", [0, 2])
def test_blocked_read_woken_by_last_writer_retire(k: Kit, mk: Chans, capacity: int) -> None:
    ch = mk(capacity, name="retired-while-reading")
    r = ch.reader()
    w1, w2 = ch.writer(), ch.writer()
    reader = k.spawn(read, r)
    wait_until(lambda: ch.stats().readers_waiting == 1, what="reader blocked")
    w1.retire()
    assert not reader.done.wait(0.05)  # one writer end is still there
    w2.retire()
    exc = reader.exception()
    assert isinstance(exc, csp.ChannelRetired)
    assert "retired-while-reading" in str(exc)


@pytest.mark.parametrize("capacity", [0, 1])
def test_blocked_write_woken_by_last_reader_retire(k: Kit, mk: Chans, capacity: int) -> None:
    ch = mk(capacity, name="retired-while-writing")
    r = ch.reader()
    w = ch.writer()
    for i in range(capacity):
        w.write(i)
    writer = k.spawn(write, w, "blocked")
    wait_until(lambda: ch.stats().writers_waiting == 1, what="writer blocked")
    r.retire()
    exc = writer.exception()
    assert isinstance(exc, csp.ChannelRetired)
    assert "retired-while-writing" in str(exc)


def test_blocked_iteration_ends_when_writer_retires(k: Kit, mk: Chans) -> None:
    ch = mk()
    r, w = ch.reader(), ch.writer()
    t = k.spawn(drain, r)
    w.write(1)
    w.write(2)
    wait_until(lambda: ch.stats().readers_waiting == 1, what="iterator blocked")
    w.retire()
    assert t.join() == [1, 2]


def test_retire_message_names_channel(k: Kit, mk: Chans) -> None:
    ch = mk(name="named-retire")
    ch.writer().retire()
    with pytest.raises(csp.ChannelRetired, match="named-retire"):
        k.run(read, ch)


def test_retire_stats() -> None:
    ch = csp.Channel(2)
    r = ch.reader()
    w = ch.writer()
    assert not ch.stats().retired
    w.retire()
    assert ch.stats().retired
    assert not ch.stats().poisoned
    del r
