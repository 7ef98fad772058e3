"""Poison and retire: immediate effects, waking blocked operations, messages."""

from __future__ import annotations

import pytest

import ferrocsp as csp
from _support import Background, wait_until

pytestmark = pytest.mark.timeout(20)


# --------------------------------------------------------------------------- poison


@pytest.mark.parametrize("capacity", [0, 3])
def test_poisoned_channel_rejects_everything(capacity: int) -> None:
    ch = csp.Channel(capacity)
    ch.poison()
    assert ch.stats().poisoned
    with pytest.raises(csp.ChannelPoisoned):
        ch.read()
    with pytest.raises(csp.ChannelPoisoned):
        ch.write(1)
    with pytest.raises(csp.ChannelPoisoned):
        ch.read_nowait()
    with pytest.raises(csp.ChannelPoisoned):
        ch.write_nowait(1)
    with pytest.raises(csp.ChannelPoisoned):
        ch.read(timeout=0.01)
    with pytest.raises(csp.ChannelPoisoned):
        ch.write(1, timeout=0.01)


def test_poison_is_idempotent() -> None:
    ch = csp.Channel()
    ch.poison()
    ch.poison()
    ch.reader().poison()
    assert ch.stats().poisoned
    with pytest.raises(csp.ChannelPoisoned):
        ch.read_nowait()


def test_poison_drops_buffered_values() -> None:
    ch = csp.Channel(5)
    for i in range(3):
        ch.write(i)
    ch.poison()
    st = ch.stats()
    assert st.poisoned
    assert st.buffered == 0
    with pytest.raises(csp.ChannelPoisoned):
        ch.read()


def test_poison_reaches_all_ends_and_copies() -> None:
    ch = csp.Channel(1)
    r, w = ch.reader(), ch.writer()
    ch.poison()
    with pytest.raises(csp.ChannelPoisoned):
        r.read()
    with pytest.raises(csp.ChannelPoisoned):
        w.write(0)
    with pytest.raises(csp.ChannelPoisoned):
        list(r)


@pytest.mark.parametrize("capacity", [0, 2])
def test_blocked_read_woken_by_poison(capacity: int) -> None:
    ch = csp.Channel(capacity, name="poisoned-while-reading")
    reader = Background(ch.read)
    # make the blocked state likely; the test stays correct if the read starts after poison
    wait_until(lambda: ch.stats().readers_waiting == 1, what="reader blocked")
    ch.poison()
    exc = reader.exception()
    assert isinstance(exc, csp.ChannelPoisoned)
    assert "poisoned-while-reading" in str(exc)
    assert ch.stats().readers_waiting == 0


def test_blocked_rendezvous_write_woken_by_poison() -> None:
    ch = csp.Channel(name="poisoned-while-writing")
    writer = Background(ch.write, "never delivered")
    wait_until(lambda: ch.stats().writers_waiting == 1, what="writer blocked")
    ch.poison()
    exc = writer.exception()
    assert isinstance(exc, csp.ChannelPoisoned)
    assert "poisoned-while-writing" in str(exc)
    assert ch.stats().writers_waiting == 0


def test_blocked_buffered_write_woken_by_poison() -> None:
    ch = csp.Channel(1)
    ch.write("fills the buffer")
    writer = Background(ch.write, "blocked")
    wait_until(lambda: ch.stats().writers_waiting == 1, what="writer blocked on full buffer")
    ch.poison()
    assert isinstance(writer.exception(), csp.ChannelPoisoned)


def test_poison_wakes_every_blocked_party() -> None:
    ch = csp.Channel()
    readers = [Background(ch.read) for _ in range(4)]
    wait_until(lambda: ch.stats().readers_waiting == 4, what="4 readers blocked")
    ch.poison()
    for r in readers:
        assert isinstance(r.exception(), csp.ChannelPoisoned)

    ch2 = csp.Channel()
    writers = [Background(ch2.write, i) for i in range(4)]
    wait_until(lambda: ch2.stats().writers_waiting == 4, what="4 writers blocked")
    ch2.poison()
    for w in writers:
        assert isinstance(w.exception(), csp.ChannelPoisoned)


def test_blocked_read_woken_by_poison_through_end() -> None:
    ch = csp.Channel()
    r, w = ch.reader(), ch.writer()
    reader = Background(r.read)
    wait_until(lambda: ch.stats().readers_waiting == 1, what="reader blocked")
    w.poison()
    assert isinstance(reader.exception(), csp.ChannelPoisoned)


def test_iteration_raises_on_poison() -> None:
    ch = csp.Channel()
    r = ch.reader()
    got: list[int] = []

    def consume() -> None:
        for v in r:
            got.append(v)

    t = Background(consume)
    for i in range(3):
        ch.write(i)
    wait_until(lambda: ch.stats().readers_waiting == 1, what="iterator blocked")
    ch.poison()
    assert isinstance(t.exception(), csp.ChannelPoisoned)
    assert got == [0, 1, 2]


def test_poison_message_names_channel() -> None:
    ch = csp.Channel(name="named-poison")
    ch.poison()
    with pytest.raises(csp.ChannelPoisoned, match="named-poison"):
        ch.read()
    with pytest.raises(csp.ChannelPoisoned, match="named-poison"):
        ch.write_nowait(1)


# --------------------------------------------------------------------------- retire


@pytest.mark.parametrize("capacity", [0, 2])
def test_blocked_read_woken_by_last_writer_retire(capacity: int) -> None:
    ch = csp.Channel(capacity, name="retired-while-reading")
    r = ch.reader()
    w1, w2 = ch.writer(), ch.writer()
    reader = Background(r.read)
    wait_until(lambda: ch.stats().readers_waiting == 1, what="reader blocked")
    w1.retire()
    assert not reader.done.wait(0.05)  # one writer end is still there
    w2.retire()
    exc = reader.exception()
    assert isinstance(exc, csp.ChannelRetired)
    assert "retired-while-reading" in str(exc)


@pytest.mark.parametrize("capacity", [0, 1])
def test_blocked_write_woken_by_last_reader_retire(capacity: int) -> None:
    ch = csp.Channel(capacity, name="retired-while-writing")
    r = ch.reader()
    w = ch.writer()
    for i in range(capacity):
        w.write(i)
    writer = Background(w.write, "blocked")
    wait_until(lambda: ch.stats().writers_waiting == 1, what="writer blocked")
    r.retire()
    exc = writer.exception()
    assert isinstance(exc, csp.ChannelRetired)
    assert "retired-while-writing" in str(exc)


def test_blocked_iteration_ends_when_writer_retires() -> None:
    ch = csp.Channel()
    r, w = ch.reader(), ch.writer()
    t = Background(lambda: list(r))
    w.write(1)
    w.write(2)
    wait_until(lambda: ch.stats().readers_waiting == 1, what="iterator blocked")
    w.retire()
    assert t.join() == [1, 2]


def test_retire_message_names_channel() -> None:
    ch = csp.Channel(name="named-retire")
    ch.writer().retire()
    with pytest.raises(csp.ChannelRetired, match="named-retire"):
        ch.read()


def test_retire_stats() -> None:
    ch = csp.Channel(2)
    r = ch.reader()
    w = ch.writer()
    assert not ch.stats().retired
    w.retire()
    assert ch.stats().retired
    assert not ch.stats().poisoned
    del r
