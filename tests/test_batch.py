"""``write_many`` / ``read_many`` on every transport (local, shared memory, networked: the
``mk`` fixture, tests/_chans.py): order, exact capacity, exactly-once under concurrent batch
writers and readers, the ``written`` count of a batch that fails partway (timeout, poison, an
iterable that raises), end-of-stream, and bad arguments."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import ferrocsp as csp
from _chans import Chans

pytestmark = pytest.mark.timeout(60)

WAIT = 20.0


def wait_buffered(ch: Any, n: int) -> None:
    """Until ``ch`` holds ``n`` values (stats: the server's count for a networked channel)."""
    deadline = time.monotonic() + WAIT
    while ch.stats().buffered != n:
        assert time.monotonic() < deadline, f"buffered {ch.stats().buffered}, expected {n}"
        time.sleep(0.02)


def read_all(ch: Any, n: int, max_n: int = 64) -> list[Any]:
    got: list[Any] = []
    while len(got) < n:
        batch = ch.read_many(max_n, timeout=WAIT)
        assert 1 <= len(batch) <= max_n
        got += batch
    return got


def test_a_batch_is_written_and_read_in_order(mk: Chans) -> None:
    ch = mk(16)
    ch.write_many(range(10))
    got = ch.read_many(100, timeout=WAIT)
    got += read_all(ch, 10 - len(got))
    assert got == list(range(10))
    with pytest.raises(TimeoutError):
        ch.read_many(5, timeout=0)


def test_read_many_takes_at_most_max_n(mk: Chans) -> None:
    ch = mk(16)
    ch.write_many(["a", "b", "c", "d", "e"])
    first = ch.read_many(3, timeout=WAIT)
    assert 1 <= len(first) <= 3
    assert first + read_all(ch, 5 - len(first)) == ["a", "b", "c", "d", "e"]


def test_a_batch_beyond_the_capacity_fills_it_exactly_then_times_out(mk: Chans) -> None:
    ch = mk(4)
    with pytest.raises(TimeoutError) as e:
        ch.write_many(range(10), timeout=0.5)
    assert e.value.written == 4  # type: ignore[attr-defined]
    wait_buffered(ch, 4)
    assert read_all(ch, 4) == [0, 1, 2, 3]
    with pytest.raises(TimeoutError):
        ch.read(timeout=0.2)


def test_a_batch_waits_for_room_and_the_buffer_never_exceeds_the_capacity(mk: Chans) -> None:
    ch = mk(3)
    n = 120
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(ch.stats().buffered)
            time.sleep(0.01)

    w = threading.Thread(target=lambda: ch.write_many(range(n), timeout=WAIT))
    s = threading.Thread(target=watch)
    w.start()
    s.start()
    try:
        assert read_all(ch, n, max_n=7) == list(range(n))
    finally:
        done.set()
        w.join(WAIT)
        s.join(WAIT)
    assert seen
    assert max(seen) <= 3


def test_a_batch_into_a_partly_full_buffer_stores_the_room_exactly(mk: Chans) -> None:
    # A round is sized to the room the stream reports (2 here, not the capacity): the batch
    # stores exactly that, then waits with the buffer full.
    ch = mk(4)
    ch.write("a")
    ch.write("b")
    wait_buffered(ch, 2)
    with pytest.raises(TimeoutError) as e:
        ch.write_many(range(10), timeout=0.5)
    assert e.value.written == 2  # type: ignore[attr-defined]
    wait_buffered(ch, 4)
    assert read_all(ch, 4) == ["a", "b", 0, 1]


def test_a_batch_whose_room_another_writer_takes_keeps_count_and_order(mk: Chans) -> None:
    # Single writes land between the batch's rounds and take the room a round was sized to:
    # the server refuses the round's tail as full, and the batch goes on from there.
    ch = mk(3)
    n, m = 90, 30
    singles = threading.Thread(target=lambda: [ch.write(f"s{i}", timeout=WAIT) for i in range(m)])
    batch = threading.Thread(target=lambda: ch.write_many(range(n), timeout=WAIT))
    singles.start()
    batch.start()
    try:
        got = read_all(ch, n + m, max_n=5)
    finally:
        singles.join(WAIT)
        batch.join(WAIT)
    assert [v for v in got if isinstance(v, int)] == list(range(n))
    assert [v for v in got if isinstance(v, str)] == [f"s{i}" for i in range(m)]
    with pytest.raises(TimeoutError):
        ch.read(timeout=0.2)


def test_an_iterable_that_raises_partway_says_how_many_were_written(mk: Chans) -> None:
    ch = mk(8)

    def values() -> Iterator[int]:
        yield 1
        yield 2
        raise KeyError("boom")

    with pytest.raises(KeyError) as e:
        ch.write_many(values())
    assert e.value.written == 2  # type: ignore[attr-defined]
    assert read_all(ch, 2) == [1, 2]
    with pytest.raises(TimeoutError):
        ch.read(timeout=0.2)


def test_poison_during_a_batch_fails_it_with_its_count(mk: Chans) -> None:
    ch = mk(2)
    out: list[BaseException] = []

    def write() -> None:
        try:
            ch.write_many(range(10), timeout=WAIT)
        except BaseException as e:  # noqa: BLE001 - the test inspects it
            out.append(e)

    t = threading.Thread(target=write)
    t.start()
    wait_buffered(ch, 2)
    ch.poison()
    t.join(WAIT)
    assert not t.is_alive()
    assert len(out) == 1
    assert isinstance(out[0], csp.ChannelPoisoned)
    assert out[0].written == 2  # type: ignore[attr-defined]
    with pytest.raises(csp.ChannelPoisoned):
        ch.read_many(4, timeout=WAIT)
    with pytest.raises(csp.ChannelPoisoned) as e:
        ch.write_many([1])
    assert e.value.written == 0  # type: ignore[attr-defined]


def test_ends_batch_and_retire_ends_the_stream(mk: Chans) -> None:
    ch = mk(8)
    r, w = ch.reader(), ch.writer()
    w.write_many([1, 2, 3])
    w.retire()
    assert read_all(r, 3) == [1, 2, 3]
    with pytest.raises(csp.ChannelRetired):
        r.read_many(4, timeout=WAIT)
    with pytest.raises(csp.ChannelRetired) as e:
        w.write_many([4])
    assert e.value.written == 0  # type: ignore[attr-defined]
    r.retire()
    with pytest.raises(csp.ChannelRetired):
        r.read_many(1)


def test_rendezvous_batches(mk: Chans) -> None:
    ch = mk(0)
    t = threading.Thread(target=lambda: ch.write_many(range(5), timeout=WAIT))
    t.start()
    try:
        assert read_all(ch, 5, max_n=3) == list(range(5))
    finally:
        t.join(WAIT)
    assert not t.is_alive()


def test_concurrent_batch_writers_and_readers_deliver_each_value_once(mk: Chans) -> None:
    ch = mk(8)
    writers, per, readers = 3, 150, 3
    total = writers * per
    got: list[list[tuple[int, int]]] = [[] for _ in range(readers)]
    count = [0]
    lock = threading.Lock()
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            ch.write_many(((i, j) for j in range(per)), timeout=WAIT)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def read(i: int) -> None:
        try:
            while True:
                with lock:
                    if count[0] >= total:
                        return
                try:
                    batch = ch.read_many(16, timeout=0.3)
                except TimeoutError:
                    continue
                with lock:
                    count[0] += len(batch)
                got[i] += [tuple(v) for v in batch]
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    ts += [threading.Thread(target=read, args=(i,)) for i in range(readers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(WAIT * 2)
    assert not errors
    assert all(not t.is_alive() for t in ts)
    flat = [v for g in got for v in g]
    assert sorted(flat) == [(i, j) for i in range(writers) for j in range(per)]
    # Each reader sees each writer's values in the order they were written.
    for g in got:
        for i in range(writers):
            mine = [j for (w, j) in g if w == i]
            assert mine == sorted(mine)


@pytest.mark.parametrize(
    ("call", "exc", "words"),
    [
        (lambda ch: ch.write_many(5), TypeError, "iterable"),
        (lambda ch: ch.write_many(None), TypeError, "iterable"),
        (lambda ch: ch.write_many([1], timeout=-1), ValueError, "timeout"),
        (lambda ch: ch.write_many([1], timeout="1"), TypeError, "timeout"),
        (lambda ch: ch.read_many(-1), ValueError, "max_n"),
        (lambda ch: ch.read_many(0), ValueError, "max_n"),
        (lambda ch: ch.read_many(2.0), TypeError, "max_n"),
        (lambda ch: ch.read_many(True), TypeError, "max_n"),
        (lambda ch: ch.read_many(1, timeout=-0.5), ValueError, "timeout"),
    ],
)
def test_bad_arguments_raise_before_anything_happens(
    mk: Chans, call: Any, exc: type[Exception], words: str
) -> None:
    ch = mk(4)
    with pytest.raises(exc, match=words):
        call(ch)
    with pytest.raises(exc, match=words):
        call(ch.writer() if "write" in repr(call.__code__.co_names) else ch.reader())
    assert ch.stats().buffered == 0


def test_batch_writers_on_two_connections_keep_their_order(mk: Chans) -> None:
    if not mk.is_net:
        pytest.skip("two connections to one channel name exist only for networked channels")
    ch = mk(5)
    other = mk.again(ch)
    per = 200
    errors: list[BaseException] = []

    def write(c: Any, tag: str) -> None:
        try:
            c.write_many(((tag, j) for j in range(per)), timeout=WAIT)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=write, args=(c, t)) for c, t in ((ch, "a"), (other, "b"))]
    for t in ts:
        t.start()
    got = [tuple(v) for v in read_all(ch, 2 * per, max_n=9)]
    for t in ts:
        t.join(WAIT)
    assert not errors
    assert sorted(got) == sorted([("a", j) for j in range(per)] + [("b", j) for j in range(per)])
    for tag in "ab":
        assert [j for (w, j) in got if w == tag] == list(range(per))
