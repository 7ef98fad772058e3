"""The move of a channel to shared memory is atomic with respect to everything else done to it.

A channel moves the first time it is pickled for another OS process (``Channel._share``). Ends
made, retired or dropped, values written and poison applied by other threads while it moves
must each land exactly once, on one side or the other (docs/design.md, "Shared memory").
The thread switch interval is made tiny so that the threads interleave inside the move.
"""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Iterator

import pytest

import ferrocsp as csp
from ferrocsp import _shm

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _interleave() -> Iterator[None]:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


#: Ends each churning thread makes: the end table of a shared channel has room for 4096.
CHURN = 300


def _churn(ch: csp.Channel[int], kept: list[object], made: list[int], seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(CHURN):
        end = ch.reader() if rng.random() < 0.5 else ch.writer()
        what = rng.random()
        if what < 0.4:
            kept.append(end)  # stays live
        elif what < 0.7:
            end.retire()
        # else dropped at once: retires, as in process
        del end
        made[0] += 1


@pytest.mark.parametrize("trial", range(20))
def test_ends_made_retired_and_dropped_during_the_move_are_counted_once(trial: int) -> None:
    ch: csp.Channel[int] = csp.Channel(name=f"churn-{trial}")
    kept: list[object] = []
    made = [0]
    threads = [
        threading.Thread(target=_churn, args=(ch, kept, made, trial * 10 + i)) for i in range(3)
    ]
    for t in threads:
        t.start()
    while made[0] < 10 * trial and any(t.is_alive() for t in threads):
        threading.Event().wait(0.0001)  # moves at a different point of the churn each trial
    _shm.share(ch)
    for t in threads:
        t.join()
    live_readers = sum(isinstance(e, csp.Reader) and not e.retired for e in kept)
    live_writers = sum(isinstance(e, csp.Writer) and not e.retired for e in kept)
    st = ch.stats()
    assert (st.reader_ends, st.writer_ends) == (live_readers, live_writers)
    # Retiring every kept end leaves none: no end was counted twice or lost.
    for e in kept:
        e.retire()  # type: ignore[attr-defined]
    st = ch.stats()
    assert (st.reader_ends, st.writer_ends) == (0, 0)


@pytest.mark.parametrize("trial", range(20))
def test_values_written_during_the_move_arrive_once_in_order(trial: int) -> None:
    n = 200
    ch: csp.Channel[int] = csp.Channel(n, name=f"values-{trial}")
    w = threading.Thread(target=lambda: [ch.write(i) for i in range(n)])
    w.start()
    if trial % 2:
        threading.Event().wait(0.0005 * trial)
    _shm.share(ch)
    w.join()
    assert type(ch) is csp.Channel  # one native type whatever the transport
    assert ch._shm is not None
    assert [ch.read_nowait() for _ in range(n)] == list(range(n))
    with pytest.raises(csp.WouldBlock):
        ch.read_nowait()


@pytest.mark.parametrize("trial", range(20))
def test_poison_during_the_move_is_not_lost(trial: int) -> None:
    ch: csp.Channel[int] = csp.Channel(name=f"poison-{trial}")
    t = threading.Thread(target=ch.poison)
    t.start()
    _shm.share(ch)
    t.join()
    assert ch.stats().poisoned
    with pytest.raises(csp.ChannelPoisoned):
        ch.read_nowait()


def test_a_buffered_value_that_cannot_travel_stops_the_move() -> None:
    """Moving would pickle the buffered values; one that cannot be pickled raises before
    anything moves, and the channel keeps every value in process (none is lost)."""
    ch: csp.Channel[object] = csp.Channel(2, name="unpicklable")
    ch.write(1)
    ch.write(lambda: None)
    with pytest.raises(TypeError, match="cannot be pickled"):
        _shm.share(ch)
    assert ch._shm is None
    assert ch.read_nowait() == 1
    assert callable(ch.read_nowait())


def test_a_buffered_value_holding_its_own_channel_moves_with_it() -> None:
    """The channel and its ends inside its own buffered values travel with it (checking them
    would move the channel again, from inside its own move)."""
    ch: csp.Channel[object] = csp.Channel(3, name="self-holding")
    r, w = ch.reader(), ch.writer()
    ch.write({"me": ch})
    ch.write([r, w, 7])
    ch.write(r)
    _shm.share(ch)
    assert ch._shm is not None
    assert ch.read_nowait()["me"] == ch  # type: ignore[index]
    got = ch.read_nowait()
    assert got[0] is r  # type: ignore[index]
    assert got[1] is w  # type: ignore[index]
    assert got[2] == 7  # type: ignore[index]
    assert ch.read_nowait() is r


def test_an_unpicklable_value_beside_its_own_end_still_stops_the_move() -> None:
    ch: csp.Channel[object] = csp.Channel(1, name="self-and-lambda")
    ch.write([ch.reader(), lambda: None])
    with pytest.raises(TypeError, match=r"over channel 'self-and-lambda'.*cannot be pickled"):
        _shm.share(ch)
    assert ch._shm is None
    assert callable(ch.read_nowait()[1])  # type: ignore[index]
