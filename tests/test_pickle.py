"""Pickling and copying channels and ends inside one interpreter keeps their identity."""

from __future__ import annotations

import copy
import gc
import pickle
from collections.abc import Callable
from typing import Any

import pytest

import ferrocsp as csp

PROTOCOLS = list(range(2, pickle.HIGHEST_PROTOCOL + 1))


def _pickled(obj: Any, protocol: int = pickle.HIGHEST_PROTOCOL) -> Any:
    return pickle.loads(pickle.dumps(obj, protocol=protocol))


COPIERS: dict[str, Callable[[Any], Any]] = {
    "pickle": _pickled,
    "copy": copy.copy,
    "deepcopy": copy.deepcopy,
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_pickled_channel_is_same_channel(protocol: int) -> None:
    ch = csp.Channel(2, name="pickled")
    ch2 = _pickled(ch, protocol)
    assert isinstance(ch2, csp.Channel)
    assert ch2 == ch
    assert hash(ch2) == hash(ch)
    assert ch2.name == "pickled"
    assert ch2.capacity == 2


@pytest.mark.parametrize("how", COPIERS)
def test_copied_channel_shares_state(how: str) -> None:
    ch = csp.Channel(3)
    ch.write("before")
    ch2 = COPIERS[how](ch)
    assert ch2 == ch
    assert ch2.stats().buffered == 1
    ch2.write("after")
    assert ch.read() == "before"
    assert ch.read() == "after"
    ch2.poison()
    assert ch.stats().poisoned


def test_pickled_poisoned_channel_is_poisoned() -> None:
    ch = csp.Channel()
    ch.poison()
    with pytest.raises(csp.ChannelPoisoned):
        _pickled(ch).read()


def test_channels_in_containers_pickle() -> None:
    a, b = csp.Channel(), csp.Channel(1)
    got = _pickled({"a": a, "pair": (a, b)})
    assert got["a"] == a
    assert got["pair"] == (a, b)
    assert len({got["a"], a, got["pair"][0]}) == 1


@pytest.mark.parametrize("how", COPIERS)
def test_copied_writer_is_same_end(how: str) -> None:
    ch = csp.Channel(2)
    r = ch.reader()
    w = ch.writer()
    w2 = COPIERS[how](w)
    assert isinstance(w2, csp.Writer)
    assert w2.channel == ch
    assert ch.stats().writer_ends == 1  # all copies count as one end
    w2.write("from copy")
    assert r.read() == "from copy"
    w2.retire()  # retiring a copy retires the end ...
    assert ch.stats().retired  # ... and it was the only writer end
    with pytest.raises(csp.ChannelRetired):
        w.write("original is retired too")
    with pytest.raises(csp.ChannelRetired):
        r.read()


@pytest.mark.parametrize("how", COPIERS)
def test_copied_reader_is_same_end(how: str) -> None:
    ch = csp.Channel(2)
    r = ch.reader()
    w = ch.writer()
    r2 = COPIERS[how](r)
    assert isinstance(r2, csp.Reader)
    assert r2.channel == ch
    assert ch.stats().reader_ends == 1
    w.write(1)
    assert r2.read() == 1
    r2.retire()
    with pytest.raises(csp.ChannelRetired):
        r.read()
    with pytest.raises(csp.ChannelRetired):
        w.write(2)


def test_retiring_original_retires_copy() -> None:
    ch = csp.Channel(1)
    w = ch.writer()
    w2 = _pickled(w)
    w.retire()
    with pytest.raises(csp.ChannelRetired):
        w2.write(1)


def test_copy_of_one_end_does_not_retire_others() -> None:
    ch = csp.Channel(2)
    w1, w2 = ch.writer(), ch.writer()
    _pickled(w1).retire()
    assert not ch.stats().retired
    w2.write("w2 still writes")
    assert ch.read() == "w2 still writes"


def test_dropping_a_copy_does_not_retire_the_end() -> None:
    ch = csp.Channel(2)
    w = ch.writer()
    w2 = _pickled(w)
    del w2
    gc.collect()
    assert not ch.stats().retired
    w.write("alive")
    assert ch.read() == "alive"


def test_dropping_every_copy_retires_the_end() -> None:
    ch = csp.Channel(2)
    w = ch.writer()
    w2 = _pickled(w)
    del w
    gc.collect()
    assert not ch.stats().retired
    w2.write("copy alive")
    del w2
    gc.collect()
    assert ch.stats().retired
    assert ch.read() == "copy alive"
    with pytest.raises(csp.ChannelRetired):
        ch.read()


def test_pickled_retired_end_is_retired() -> None:
    ch = csp.Channel(1)
    r = ch.reader()
    r.retire()
    with pytest.raises(csp.ChannelRetired):
        _pickled(r).read_nowait()


def test_end_pickled_inside_a_structure() -> None:
    ch = csp.Channel(4)
    r, w = ch.reader(), ch.writer()
    got_r, got_w = _pickled([r, w])
    got_w.write("x")
    assert got_r.read() == "x"
    assert got_r.channel == ch
    assert ch.stats().reader_ends == 1
    assert ch.stats().writer_ends == 1
