"""An ``Alt`` selected many times through its native path (issue #20, "Alt in one native
call"): what may change between selections is read at each one, the fair rotation is kept
natively, and whatever the native path does not cover falls back to the general path
without losing or duplicating a value.

Tests taking ``k`` run the selecting process under the thread, greenlet and asyncio backends
(tests/_kit.py). Every wait on another thread goes through channels or bounded polling of
``stats()`` (``_support.wait_until``), never a sleep.
"""

from __future__ import annotations

import gc
import pickle
import threading
import weakref
from collections import Counter
from typing import Any

import pytest

import ferrocsp as csp
from _kit import Kit
from _support import Background, wait_until

pytestmark = pytest.mark.timeout(60)


def test_in_process_guards_get_the_native_path() -> None:
    ch, out = csp.Channel(), csp.Channel(1)
    alt = csp.Alt(ch, ch.reader(), csp.Output(out.writer(), 1), csp.Timeout(1), csp.Skip())
    assert alt._native is not None
    assert csp.Alt(csp.Guard(ch), csp.Guard(csp.Output(out, 2), when=False))._native is not None


# --- what may change between selections ----------------------------------------------------


async def toggles(k: Kit, alt: csp.Alt, chans: list[csp.Channel], rounds: int) -> list[int]:
    """Each round enables the guards of a pattern (bit i: guard i) and refills every
    channel; returns which guard fired."""
    got = []
    for r in range(rounds):
        pattern = r % 7 + 1  # never all disabled
        for i, g in enumerate(alt.guards):
            g.when = bool(pattern >> i & 1)
        for i, ch in enumerate(chans):
            if ch.stats().buffered == 0:
                ch.write_nowait(i)
        guard, value = await k.choose(alt, ("select", "pri_select", "fair_select")[r % 3])
        i = alt.guards.index(guard)
        assert value == i
        assert pattern >> i & 1, f"round {r}: disabled guard {i} fired (pattern {pattern:b})"
        got.append(i)
    return got


def test_when_is_read_at_every_selection(k: Kit) -> None:
    chans = [csp.Channel(1) for _ in range(3)]
    alt = csp.Alt(*(csp.Guard(ch) for ch in chans))
    got = k.run(toggles, alt, chans, 60)
    assert set(got) == {0, 1, 2}
    # Patterns with one guard enabled (1, 2, 4) leave no choice.
    assert [g for r, g in enumerate(got) if r % 7 + 1 in (1, 2, 4)] == [
        {1: 0, 2: 1, 4: 2}[r % 7 + 1] for r in range(60) if r % 7 + 1 in (1, 2, 4)
    ]


async def truthy_whens(k: Kit, g: csp.Guard, skip: csp.Skip) -> list[Any]:
    alt = csp.Alt(g, skip)
    got = []
    for when in (0, 1, "", "yes", None, [0], []):
        g.when = when  # type: ignore[assignment]  # any object: its truth value counts
        got.append((await k.pri_select(alt))[0] is g)
    return got


def test_when_counts_by_truth_value(k: Kit) -> None:
    ch = csp.Channel(1)
    ch.write("v")
    g = csp.Guard(ch)
    got = k.run(truthy_whens, g, csp.Skip())
    assert got == [False, True, False, False, False, False, False]


async def sends_current_values(k: Kit, alt: csp.Alt, out: csp.Output) -> None:
    for v in range(5):
        out.value = ("v", v)
        assert await k.select(alt) == (out, None)


def test_output_value_is_read_at_every_selection(k: Kit) -> None:
    ch = csp.Channel(5)
    out = csp.Output(ch, None)
    k.run(sends_current_values, csp.Alt(out), out)
    assert [ch.read_nowait() for _ in range(5)] == [("v", v) for v in range(5)]


async def timeouts_as_set(k: Kit, alt: csp.Alt, t: csp.Timeout) -> list[Any]:
    got = []
    for seconds in (0.0, 0.02, 0.0):
        t.seconds = seconds
        got.append(await k.select(alt))
    return got


def test_timeout_seconds_are_read_at_every_selection(k: Kit) -> None:
    t = csp.Timeout(30)
    alt = csp.Alt(csp.Channel(), t)
    assert k.run(timeouts_as_set, alt, t) == [(t, None)] * 3


async def skip_and_timeout(k: Kit, alt: csp.Alt, ch: csp.Channel) -> list[Any]:
    got = []
    for i in range(6):
        if i % 2:
            ch.write_nowait(i)
        guard, value = await k.pri_select(alt)
        got.append(value if guard is ch else type(guard).__name__)
    return got


def test_skip_and_timeout_guards_repeat(k: Kit) -> None:
    ch = csp.Channel(1)
    alt = csp.Alt(ch, csp.Skip())
    assert k.run(skip_and_timeout, alt, ch) == ["Skip", 1, "Skip", 3, "Skip", 5]
    alt = csp.Alt(ch, csp.Timeout(0.005))
    assert k.run(skip_and_timeout, alt, ch) == ["Timeout", 1, "Timeout", 3, "Timeout", 5]


async def reassigned(k: Kit, alt: csp.Alt, g: csp.Guard, out: csp.Output) -> list[Any]:
    other, room = csp.Channel(1), csp.Channel(1)
    other.write_nowait("other")
    g.guard = other
    out.target = room
    first = await k.pri_select(alt)
    second = await k.pri_select(alt)
    return [first, second, room.read_nowait()]


def test_reassigned_guard_and_target_are_used(k: Kit) -> None:
    # Not something to do, but what the general path always did: it reads them each time.
    ch, full = csp.Channel(1), csp.Channel(1)
    full.write("full")
    g = csp.Guard(ch)
    out = csp.Output(full, "sent")
    alt = csp.Alt(g, out)
    first, second, sent = k.run(reassigned, alt, g, out)
    assert first == (g, "other")
    assert second == (out, None)
    assert sent == "sent"
    assert full.read_nowait() == "full"


# --- fairness over many selections ---------------------------------------------------------


async def fair_rounds(k: Kit, alt: csp.Alt, chans: list[csp.Channel], n: int) -> list[int]:
    got = []
    for _ in range(n):
        for i, ch in enumerate(chans):
            if ch.stats().buffered == 0:
                ch.write_nowait(i)
        got.append((await k.fair_select(alt))[1])
    return got


def test_fair_rotation_over_many_selections(k: Kit) -> None:
    chans = [csp.Channel(1) for _ in range(4)]
    got = k.run(fair_rounds, csp.Alt(*chans), chans, 400)
    # Every guard always ready: strict round-robin from the first.
    assert got == [i % 4 for i in range(400)]


def test_fair_select_shares_its_state_across_threads() -> None:
    # One Alt, several threads selecting at once: each selection independent, no value lost
    # or duplicated, and nothing starves.
    chans = [csp.Channel(name=f"c{i}") for i in range(3)]
    alt = csp.Alt(*chans)
    n = 300

    def writer(ch: csp.Channel, i: int) -> None:
        j = 0
        try:
            while True:
                ch.write((i, j))
                j += 1
        except csp.ChannelPoisoned:
            pass

    writers = [Background(writer, ch, i) for i, ch in enumerate(chans)]
    got: list[list[Any]] = [[], []]

    def consumer(out: list[Any]) -> None:
        for _ in range(n):
            out.append(alt.fair_select()[1])

    consumers = [Background(consumer, got[0]), Background(consumer, got[1])]
    for c in consumers:
        c.join()
    for ch in chans:
        ch.poison()
    for w in writers:
        w.join()
    values = got[0] + got[1]
    assert len(values) == len(set(values)) == 2 * n
    per = Counter(i for i, _ in values)
    assert set(per) == {0, 1, 2}
    for i in range(3):  # each writer's values arrive in order, none skipped
        js = sorted(j for w, j in values if w == i)
        assert js == list(range(len(js)))


def test_fair_state_carries_between_native_and_general_paths() -> None:
    a, b, c = csp.Channel(1), csp.Channel(1), csp.Channel(1)
    alt = csp.Alt(a, b, c)
    for ch, v in ((a, "a"), (b, "b"), (c, "c")):
        ch.write(v)
    assert alt.fair_select() == (a, "a")  # native
    native = alt._native
    assert native is not None
    alt._native_on = False  # the general path from here
    alt._last = native.last
    a.write("a")
    assert alt.fair_select() == (b, "b")
    alt._native_on = True
    native.last = alt._last
    b.write("b")
    assert alt.fair_select() == (c, "c")  # native, after b
    with pytest.raises(ValueError, match="no guard 3"):
        native.last = 3


# --- poison, retire, blocking ----------------------------------------------------------------


async def blocked_then(k: Kit, alt: csp.Alt) -> Any:
    return await k.select(alt)


def test_poison_while_blocked(k: Kit) -> None:
    a, b = csp.Channel(name="a"), csp.Channel(name="b")
    alt = csp.Alt(a, csp.Output(b, 1))
    task = k.spawn(blocked_then, alt)
    wait_until(lambda: a.stats().readers_waiting == 1 and b.stats().writers_waiting == 1)
    b.poison()
    err = task.exception()
    assert isinstance(err, csp.ChannelPoisoned)
    assert "'b'" in str(err)
    assert a.stats().readers_waiting == 0


def test_retire_while_blocked_then_again(k: Kit) -> None:
    a, b = csp.Channel(name="a"), csp.Channel(name="b")
    wa, wb = a.writer(), b.writer()
    alt = csp.Alt(a.reader(), b.reader())
    task = k.spawn(blocked_then, alt)
    wait_until(lambda: a.stats().readers_waiting == 1 and b.stats().readers_waiting == 1)
    wa.retire()  # the rest stays live
    wb.write("b")
    assert task.join() == (alt.guards[1], "b")
    wb.retire()
    task = k.spawn(blocked_then, alt)
    err = task.exception()
    assert isinstance(err, csp.ChannelRetired)
    assert "'a', 'b'" in str(err)


def test_retired_reader_end_is_skipped_at_every_selection(k: Kit) -> None:
    a, b = csp.Channel(1), csp.Channel(1)
    ra = a.reader()
    alt = csp.Alt(ra, b, csp.Skip())
    a.write("a")
    assert k.run(blocked_then, alt)[0] in (ra, b, alt.guards[2])
    ra.retire()
    b.write("b")
    got = {k.run(blocked_then, alt)[1] for _ in range(3)}
    assert "a" not in got


async def many_blocking(k: Kit, alt: csp.Alt, n: int) -> list[Any]:
    return [(await k.select(alt))[1] for _ in range(n)]


def test_blocked_selections_woken_many_times(k: Kit) -> None:
    # Each selection blocks (the writer comes after), on the same Alt object again and again.
    a, b = csp.Channel(name="a"), csp.Channel(name="b")
    alt = csp.Alt(a, b, csp.Output(csp.Channel(), "never"))
    n = 50

    def feed() -> None:
        for i in range(n):
            (a if i % 2 else b).write(i)

    feeder = Background(feed)
    got = k.run(many_blocking, alt, n)
    feeder.join()
    assert sorted(got) == list(range(n))


# --- fallback: channels that move, networked guards ------------------------------------------


@csp.process(backend="os")
def os_write_one(out: csp.Writer, value: Any) -> None:
    out.write(value)


def test_channel_moving_under_a_waiting_native_alt() -> None:
    # Both channels in-process when the Alt starts (the native path waits); one is sent to an
    # OS process, which moves it to shared memory: the Alt chooses again where it is now, and
    # later selections on the same Alt keep working there.
    a, b = csp.Channel(name="a"), csp.Channel(name="b")
    alt = csp.Alt(a, b)
    assert alt._native is not None
    h: list[csp.Handle[Any]] = []

    def send() -> None:
        wait_until(lambda: b.stats().readers_waiting == 1, what="the Alt waits")
        h.append(csp.Par(os_write_one(b.writer(), "moved")).start())

    t = threading.Thread(target=send)
    t.start()
    assert alt.select() == (b, "moved")
    t.join()
    assert h[0].join(timeout=20) == [None]
    p = csp.Par(os_write_one(b.writer(), "again")).start()
    assert alt.pri_select() == (b, "again")
    assert p.join(timeout=20) == [None]


def test_async_channel_moving_under_a_waiting_native_alt() -> None:
    import asyncio

    a, b = csp.Channel(name="a"), csp.Channel(name="b")
    alt = csp.Alt(a, b)
    h: list[csp.Handle[Any]] = []

    def send() -> None:
        wait_until(lambda: b.stats().readers_waiting == 1, what="the Alt waits")
        h.append(csp.Par(os_write_one(b.writer(), "moved")).start())

    t = threading.Thread(target=send)
    t.start()
    assert asyncio.run(asyncio.wait_for(alt.aselect(), 30)) == (b, "moved")
    t.join()
    assert h[0].join(timeout=20) == [None]


def test_alt_pickles_by_its_guards() -> None:
    ch = csp.Channel(1)
    alt = csp.Alt(ch, csp.Skip())
    copy = pickle.loads(pickle.dumps(alt))
    assert copy._native is not None
    ch.write("v")
    assert copy.pri_select() == (copy.guards[0], "v")


def test_native_alt_is_collected_in_a_cycle() -> None:
    # A channel buffering the Alt that selects on it: a reference cycle through the native
    # object, which the collector must see (``__traverse__``) to free.
    ch = csp.Channel(1)
    alt = csp.Alt(ch)
    ch.write(alt)
    ref = weakref.ref(ch)
    del ch, alt
    gc.collect()
    assert ref() is None


class _Value:
    """A value a weak reference can follow."""


async def outputs_unsent(k: Kit, alt: csp.Alt, rounds: int) -> list[str]:
    return [type((await k.pri_select(alt))[0]).__name__ for _ in range(rounds)]


def test_a_kept_selection_holds_no_unsent_value(k: Kit) -> None:
    # Every guard enabled: the native Alt keeps its last selection whole for the next one,
    # but not the Output values that were not sent (the Output still has its own).
    out = csp.Output(csp.Channel(), _Value())  # no reader: never fires
    alt = csp.Alt(out, csp.Skip())
    assert k.run(outputs_unsent, alt, 3) == ["Skip"] * 3
    ref = weakref.ref(out.value)
    out.value = None
    gc.collect()
    assert ref() is None


def test_a_kept_selection_reads_a_bad_timeout() -> None:
    t = csp.Timeout(0)
    alt = csp.Alt(csp.Channel(), t)
    assert alt.select() == (t, None)
    assert alt.select() == (t, None)  # the kept selection, refreshed
    t.seconds = -1
    with pytest.raises(ValueError, match="timeout must be >= 0 seconds, got -1"):
        alt.select()
    t.seconds = 0
    assert alt.select() == (t, None)


def test_bad_native_specs_are_rejected() -> None:
    from ferrocsp._native import _NativeAlt

    with pytest.raises(ValueError, match="at least one guard"):
        _NativeAlt([])
    s = csp.Skip()
    with pytest.raises(ValueError, match="unknown alt operation kind 9"):
        _NativeAlt([(s, s, 9, None)])
    r = csp.Channel().reader()
    with pytest.raises(TypeError, match="needs a Channel or Writer, not Reader"):
        _NativeAlt([(r, r, 1, r)])
    with pytest.raises(TypeError, match="without a channel"):
        _NativeAlt([(s, s, 0, None)])
    off = _NativeAlt(None)  # an Alt whose selections all take the general path
    assert off._native_on is False
    with pytest.raises(ValueError, match="has no native selection"):
        off._native_on = True
