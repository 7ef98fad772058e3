"""Alt (DESIGN.md §2 "Choice"): exactly one guard fires, policies, guards, errors, contention.

Every test that involves another thread waits for it through channels, events or bounded
polling of ``stats()`` (``_support.wait_until``), never by sleeping.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from typing import Any

import pytest

import ferrocsp as csp
from _support import Background, wait_until

pytestmark = pytest.mark.timeout(60)


def blocked_readers(ch: csp.Channel, n: int = 1) -> None:
    wait_until(lambda: ch.stats().readers_waiting >= n, what=f"{n} reader(s) blocked on {ch}")


def blocked_writers(ch: csp.Channel, n: int = 1) -> None:
    wait_until(lambda: ch.stats().writers_waiting >= n, what=f"{n} writer(s) blocked on {ch}")


def forever_writer(ch: csp.Channel, value: Any) -> None:
    """Writes ``value`` to ``ch`` until the channel is poisoned."""
    try:
        while True:
            ch.write(value)
    except csp.ChannelPoisoned:
        pass


# --- exactly one guard fires ---------------------------------------------------------------


@pytest.mark.parametrize("method", ["select", "pri_select", "fair_select"])
def test_exactly_one_input_guard_fires(method: str) -> None:
    a, b, c = csp.Channel(1), csp.Channel(1), csp.Channel(1)
    for ch, v in ((a, "a"), (b, "b"), (c, "c")):
        ch.write(v)
    guard, value = getattr(csp.Alt(a, b, c), method)()
    assert guard in (a, b, c)
    assert value == {a: "a", b: "b", c: "c"}[guard]
    buffered = [ch.stats().buffered for ch in (a, b, c)]
    assert sorted(buffered) == [0, 1, 1]
    assert guard.stats().buffered == 0


@pytest.mark.parametrize("method", ["select", "pri_select", "fair_select"])
def test_exactly_one_output_guard_fires(method: str) -> None:
    a, b, c = csp.Channel(1), csp.Channel(1), csp.Channel(1)
    outs = [csp.Output(a, "a"), csp.Output(b, "b"), csp.Output(c.writer(), "c")]
    guard, value = getattr(csp.Alt(*outs), method)()
    assert guard in outs
    assert value is None
    sent = [(ch, ch.read_nowait()) for ch in (a, b, c) if ch.stats().buffered]
    assert len(sent) == 1
    assert sent[0][1] == guard.value


def test_unchosen_output_sends_nothing() -> None:
    ready, full = csp.Channel(1), csp.Channel(1)
    ready.write("in")
    full.write("old")
    out = csp.Output(full, "never")
    for _ in range(100):
        guard, value = csp.Alt(out, ready).select()
        assert (guard, value) == (ready, "in")
        ready.write("in")
    assert full.read_nowait() == "old"
    with pytest.raises(csp.WouldBlock):
        full.read_nowait()


N_CONTENTION = 10_000
N_THREADS = 4


@pytest.mark.timeout(120)
def test_contention_output_delivered_iff_chosen() -> None:
    """Threads Alt over shared rendezvous channels, mixing output and input guards.

    Thread ``i`` offers unique values on channels ``i`` and ``i+1`` and accepts on ``i+1`` and
    ``i+2`` (mod N), so every channel has two writers and two readers, all choosing, and one
    Alt waits on both ends of a channel (it must never meet itself). After 10^4 selections in
    all, the channels are poisoned; every value reported sent was received exactly once.
    """
    chans = [csp.Channel(name=f"c{i}") for i in range(N_THREADS)]
    lock = threading.Lock()
    count = [0]
    sent: list[list[Any]] = [[] for _ in range(N_THREADS)]
    received: list[list[Any]] = [[] for _ in range(N_THREADS)]
    policies = ["select", "pri_select", "fair_select"]

    def worker(i: int) -> int:
        outs = [chans[i], chans[(i + 1) % N_THREADS]]
        ins = [chans[(i + 1) % N_THREADS], chans[(i + 2) % N_THREADS]]
        seq = 0
        mine = 0
        try:
            while True:
                guards: list[Any] = []
                for k, ch in enumerate(outs):
                    guards.append(csp.Output(ch, (i, seq, k)))
                guards.extend(ins)
                if seq % 2:
                    guards.reverse()
                alt = csp.Alt(*guards)
                guard, value = getattr(alt, policies[seq % 3])()
                seq += 1
                mine += 1
                if isinstance(guard, csp.Output):
                    assert value is None
                    sent[i].append(guard.value)
                else:
                    assert guard in ins
                    received[i].append(value)
                with lock:
                    count[0] += 1
                    done = count[0] >= N_CONTENTION
                if done:
                    for ch in chans:
                        ch.poison()
        except csp.ChannelPoisoned:
            return mine

    workers = [Background(worker, i) for i in range(N_THREADS)]
    done_by = [w.join(timeout=100) for w in workers]
    all_sent = [v for s in sent for v in s]
    all_received = [v for r in received for v in r]
    assert sum(done_by) >= N_CONTENTION
    assert len(all_sent) + len(all_received) == sum(done_by)
    assert len(set(all_sent)) == len(all_sent), "a value was sent twice"
    assert len(set(all_received)) == len(all_received), "a value was received twice"
    assert set(all_sent) == set(all_received)
    # The two selections of one rendezvous are both counted: half were sends.
    assert len(all_sent) == len(all_received)
    # A thread never received its own value on the channel it waits on from both ends.
    for i in range(N_THREADS):
        assert all(v[0] != i for v in received[i]), f"thread {i} met itself"
    # Every thread got to choose (nobody starved for the whole run).
    assert all(n > 0 for n in done_by)


# --- policies ------------------------------------------------------------------------------


def test_pri_select_picks_first_ready_in_order() -> None:
    a, b = csp.Channel(1), csp.Channel(1)
    alt_ab, alt_ba = csp.Alt(a, b), csp.Alt(b, a)
    for i in range(500):
        if a.stats().buffered == 0:
            a.write(i)
        if b.stats().buffered == 0:
            b.write(-i)
        alt = alt_ab if i % 2 == 0 else alt_ba
        guard, _ = alt.pri_select()
        assert guard is (a if i % 2 == 0 else b)


def test_pri_select_with_rendezvous_writers() -> None:
    a, b = csp.Channel(), csp.Channel()
    wa = Background(forever_writer, a, "a")
    wb = Background(forever_writer, b, "b")
    try:
        alt = csp.Alt(a, b)
        for _ in range(200):
            blocked_writers(a)
            blocked_writers(b)
            assert alt.pri_select() == (a, "a")
    finally:
        a.poison()
        b.poison()
    wa.join()
    wb.join()


def wait_blocked_writers(chans: list[csp.Channel], deadline: float) -> None:
    """Bounded poll until every channel has a blocked writer (yields the GIL meanwhile)."""
    while not all(ch.stats().writers_waiting for ch in chans):
        if time.monotonic() > deadline:
            raise AssertionError("writers did not block again in time")
        time.sleep(0)


@pytest.mark.timeout(60)
def test_fair_select_never_starves_ready_writers() -> None:
    """Two writers, each writing forever to its own channel; 3000 fair selections.

    Before each selection the test waits (bounded stats polling) until both writers are
    blocked again, so both guards are ready every time: a writer thread that has not yet been
    scheduled back (the GIL) is not ready, and fairness is only among ready guards.
    """
    a, b = csp.Channel(name="a"), csp.Channel(name="b")
    wa = Background(forever_writer, a, "a")
    wb = Background(forever_writer, b, "b")
    n = 3000
    winners: list[str] = []
    deadline = time.monotonic() + 45
    try:
        alt = csp.Alt(a, b)
        for _ in range(n):
            wait_blocked_writers([a, b], deadline)
            _, value = alt.fair_select()
            winners.append(value)
    finally:
        a.poison()
        b.poison()
    wa.join()
    wb.join()
    counts = Counter(winners)
    alternating = all(x != y for x, y in itertools.pairwise(winners))
    assert alternating or all(abs(counts[k] - n / 2) <= 0.1 * n / 2 for k in "ab"), counts


@pytest.mark.timeout(60)
def test_fair_select_free_running_writers_both_served() -> None:
    """Without waiting for readiness both writers are still served (no starvation)."""
    a, b = csp.Channel(name="a"), csp.Channel(name="b")
    wa = Background(forever_writer, a, "a")
    wb = Background(forever_writer, b, "b")
    try:
        alt = csp.Alt(a, b)
        counts = Counter(alt.fair_select()[1] for _ in range(3000))
    finally:
        a.poison()
        b.poison()
    wa.join()
    wb.join()
    assert counts["a"] > 0
    assert counts["b"] > 0


def test_fair_select_alternates_over_always_ready_buffers() -> None:
    a, b, c = csp.Channel(1), csp.Channel(1), csp.Channel(1)
    alt = csp.Alt(a, b, c)
    names = {a: "a", b: "b", c: "c"}
    order = []
    for _ in range(30):
        for ch in (a, b, c):
            if ch.stats().buffered == 0:
                ch.write(names[ch])
        guard, value = alt.fair_select()
        assert value == names[guard]
        order.append(value)
    assert "".join(order) == "abc" * 10


def test_fair_select_state_is_per_alt_object() -> None:
    a, b = csp.Channel(2), csp.Channel(2)
    for ch in (a, b):
        ch.write(1)
        ch.write(2)
    first, second = csp.Alt(a, b), csp.Alt(a, b)
    assert first.fair_select()[0] is a
    # A fresh Alt has no history: it starts from the first guard again.
    assert second.fair_select()[0] is a
    assert first.fair_select()[0] is b


def test_select_is_random_among_ready_guards() -> None:
    a, b = csp.Channel(1), csp.Channel(1)
    a.write("a")
    b.write("b")
    alt = csp.Alt(a, b)
    n = 2000
    counts: Counter[str] = Counter()
    for _ in range(n):
        guard, value = alt.select()
        counts[value] += 1
        guard.write(value)
    for k in "ab":
        assert 0.35 * n <= counts[k] <= 0.65 * n, counts


def test_select_shortcut() -> None:
    a, b = csp.Channel(1), csp.Channel(1)
    b.write(42)
    assert csp.select(a, b) == (b, 42)
    guard, value = csp.select(a, csp.Skip())
    assert isinstance(guard, csp.Skip)
    assert value is None
    out = csp.Output(a, "x")
    assert csp.select(out) == (out, None)
    assert a.read_nowait() == "x"


# --- Timeout and Skip ----------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [0.02, 0.1])
def test_timeout_fires_within_bound_when_nothing_ready(seconds: float) -> None:
    ch = csp.Channel()
    t = csp.Timeout(seconds)
    t0 = time.monotonic()
    guard, value = csp.Alt(ch, csp.Output(csp.Channel(), 1), t).select()
    elapsed = time.monotonic() - t0
    assert guard is t
    assert value is None
    assert seconds <= elapsed < seconds + 2.0
    st = ch.stats()
    assert (st.readers_waiting, st.writers_waiting) == (0, 0)


def test_timeout_zero_fires_at_once() -> None:
    t = csp.Timeout(0)
    t0 = time.monotonic()
    assert csp.Alt(csp.Channel(), t).select() == (t, None)
    assert time.monotonic() - t0 < 2.0


def test_timeout_never_fires_when_something_is_ready() -> None:
    buffered = csp.Channel(1)
    t = csp.Timeout(0.5)
    alt = csp.Alt(t, buffered)
    for i in range(200):
        buffered.write(i)
        assert getattr(alt, ("select", "pri_select", "fair_select")[i % 3])() == (buffered, i)


def test_timeout_never_fires_when_a_writer_is_waiting() -> None:
    ch = csp.Channel()
    w = Background(lambda: [ch.write(i) for i in range(50)])
    alt = csp.Alt(csp.Timeout(5), ch)
    got = [alt.select() for _ in range(50)]
    w.join()
    assert got == [(ch, i) for i in range(50)]


def test_timeout_repeats_per_selection() -> None:
    t = csp.Timeout(0.01)
    alt = csp.Alt(csp.Channel(), t)
    for _ in range(5):
        t0 = time.monotonic()
        assert alt.select() == (t, None)
        assert time.monotonic() - t0 >= 0.01


def test_skip_chosen_when_nothing_else_ready() -> None:
    ch, out = csp.Channel(), csp.Output(csp.Channel(), "x")
    skip = csp.Skip()
    alt = csp.Alt(ch, out, skip)
    for method in ("select", "pri_select", "fair_select"):
        assert getattr(alt, method)() == (skip, None)
    assert ch.stats().readers_waiting == 0
    assert out.target.stats().writers_waiting == 0


def test_pri_select_prefers_ready_channel_over_skip() -> None:
    ch = csp.Channel(1)
    alt = csp.Alt(ch, csp.Skip())
    for i in range(200):
        ch.write(i)
        assert alt.pri_select() == (ch, i)


def test_pri_select_skip_first_always_wins() -> None:
    ch = csp.Channel(1)
    ch.write(1)
    skip = csp.Skip()
    assert csp.Alt(skip, ch).pri_select() == (skip, None)
    assert ch.stats().buffered == 1


# --- Guard(when=...) -----------------------------------------------------------------------


def test_disabled_guard_is_ignored_even_when_ready() -> None:
    ch = csp.Channel(1)
    ch.write("ready")
    g = csp.Guard(ch, when=False)
    skip = csp.Skip()
    for method in ("select", "pri_select", "fair_select"):
        assert getattr(csp.Alt(g, skip), method)() == (skip, None)
    assert ch.stats().buffered == 1
    out = csp.Guard(csp.Output(csp.Channel(1), "no"), when=False)
    assert csp.Alt(out, skip).pri_select() == (skip, None)
    assert out.guard.target.stats().buffered == 0


def test_enabled_guard_returns_the_wrapper() -> None:
    ch = csp.Channel(1)
    ch.write("v")
    g = csp.Guard(ch, when=True)
    assert csp.Alt(g).select() == (g, "v")
    out = csp.Guard(csp.Output(ch, "w"))
    assert csp.Alt(out).select() == (out, None)
    assert ch.read_nowait() == "w"
    skip = csp.Guard(csp.Skip(), when=True)
    assert csp.Alt(csp.Channel(), skip).select() == (skip, None)
    t = csp.Guard(csp.Timeout(0.01), when=True)
    assert csp.Alt(csp.Channel(), t).select() == (t, None)


def test_guard_when_can_be_toggled_between_selections() -> None:
    a, b = csp.Channel(1), csp.Channel(1)
    ga = csp.Guard(a, when=True)
    alt = csp.Alt(ga, b)
    a.write("a")
    b.write("b")
    ga.when = False
    assert alt.pri_select() == (b, "b")
    ga.when = True
    assert alt.pri_select() == (ga, "a")


def test_fair_select_with_disabled_guards() -> None:
    chans = [csp.Channel(1) for _ in range(3)]
    guards = [csp.Guard(ch) for ch in chans]
    alt = csp.Alt(*guards)

    def refill() -> None:
        for i, ch in enumerate(chans):
            if ch.stats().buffered == 0:
                ch.write(i)

    refill()
    assert alt.fair_select()[1] == 0
    guards[1].when = False
    refill()
    assert alt.fair_select()[1] == 2
    refill()
    assert alt.fair_select()[1] == 0
    guards[1].when = True
    refill()
    assert alt.fair_select()[1] == 1


def test_all_guards_disabled_with_only_channels_is_retired() -> None:
    # Nothing can ever fire: the same as an Alt over only retired channels.
    with pytest.raises(csp.ChannelRetired):
        csp.Alt(csp.Guard(csp.Channel(), when=False)).select()


# --- poison and retire ---------------------------------------------------------------------


def test_poisoned_channel_raises_when_chosen() -> None:
    ch = csp.Channel(name="bad")
    ch.poison()
    with pytest.raises(csp.ChannelPoisoned, match="bad"):
        csp.Alt(ch).select()
    with pytest.raises(csp.ChannelPoisoned):
        csp.Alt(csp.Output(ch, 1)).select()
    # A poisoned channel counts as ready: it beats Skip in priority order.
    with pytest.raises(csp.ChannelPoisoned):
        csp.Alt(ch, csp.Skip()).pri_select()
    # ... but a ready guard before it is chosen first, without raising.
    ok = csp.Channel(1)
    ok.write("fine")
    assert csp.Alt(ok, ch).pri_select() == (ok, "fine")


def test_poison_wakes_a_blocked_alt() -> None:
    a, b = csp.Channel(), csp.Channel()
    bg = Background(csp.Alt(a, csp.Output(b, 1)).select)
    blocked_readers(a)
    blocked_writers(b)
    b.poison()
    assert isinstance(bg.exception(), csp.ChannelPoisoned)
    assert a.stats().readers_waiting == 0


def test_alt_over_only_retired_channels_raises_retired() -> None:
    a, b = csp.Channel(name="ra"), csp.Channel(name="rb")
    a.writer().retire()  # readers of a see end-of-stream
    b.reader().retire()  # writers to b can never deliver
    with pytest.raises(csp.ChannelRetired):
        csp.Alt(a).select()
    with pytest.raises(csp.ChannelRetired):
        csp.Alt(a, csp.Output(b, 1)).fair_select()
    # Retired ends, not channels.
    c = csp.Channel()
    r, w = c.reader(), c.writer()
    r.retire()
    w.retire()
    with pytest.raises(csp.ChannelRetired):
        csp.Alt(r, csp.Output(w, 1)).select()
    # A Timeout or Skip can still fire.
    skip = csp.Skip()
    assert csp.Alt(a, skip).select() == (skip, None)
    t = csp.Timeout(0.01)
    assert csp.Alt(a, t).select() == (t, None)


def test_retired_message_names_every_channel() -> None:
    a, b = csp.Channel(name="left"), csp.Channel(name="right")
    a.writer().retire()
    r = b.reader()
    r.retire()
    with pytest.raises(csp.ChannelRetired) as info:
        csp.Alt(a, r).select()
    assert "'left', 'right'" in str(info.value)
    assert "''" not in str(info.value)


def test_retired_channel_drains_buffer_first() -> None:
    ch = csp.Channel(2)
    w = ch.writer()
    w.write(1)
    w.retire()
    assert csp.Alt(ch).select() == (ch, 1)
    with pytest.raises(csp.ChannelRetired):
        csp.Alt(ch).select()


def test_retire_wakes_a_blocked_alt() -> None:
    a, b = csp.Channel(), csp.Channel()
    wa, wb = a.writer(), b.writer()
    bg = Background(csp.Alt(a, b).select)
    blocked_readers(a)
    blocked_readers(b)
    wa.retire()
    # b can still fire: the Alt keeps waiting on it.
    wait_until(lambda: a.stats().readers_waiting == 0, what="retired op withdrawn")
    assert not bg.done.is_set()
    wb.retire()
    assert isinstance(bg.exception(), csp.ChannelRetired)


def test_retire_while_blocked_leaves_the_rest_live() -> None:
    a, b = csp.Channel(), csp.Channel()
    wa = a.writer()
    bg = Background(csp.Alt(a, b).select)
    blocked_readers(a)
    wa.retire()
    wait_until(lambda: a.stats().readers_waiting == 0, what="retired op withdrawn")
    b.write("late")
    assert bg.join() == (b, "late")


# --- blocking and cross-thread --------------------------------------------------------------


def test_blocked_alt_woken_by_write_from_another_thread() -> None:
    a, b = csp.Channel(), csp.Channel()
    bg = Background(csp.Alt(a, b).select)
    blocked_readers(a)
    blocked_readers(b)
    b.write("hello")
    assert bg.join() == (b, "hello")
    # The losing registration was removed.
    assert a.stats().readers_waiting == 0
    assert b.stats().readers_waiting == 0


def test_blocked_output_alt_woken_by_reader() -> None:
    a, b = csp.Channel(), csp.Channel()
    oa, ob = csp.Output(a, "to-a"), csp.Output(b, "to-b")
    bg = Background(csp.Alt(oa, ob).select)
    blocked_writers(a)
    blocked_writers(b)
    assert b.read() == "to-b"
    assert bg.join() == (ob, None)
    assert a.stats().writers_waiting == 0
    with pytest.raises(csp.WouldBlock):
        a.read_nowait()


@pytest.mark.timeout(60)
def test_output_alt_meets_input_alt_on_rendezvous() -> None:
    ch, other_in, other_out = csp.Channel(), csp.Channel(), csp.Channel()
    n = 2000

    def sender() -> None:
        for i in range(n):
            out = csp.Output(ch, i)
            guard, _ = csp.Alt(other_in, out).select()
            assert guard is out

    def receiver() -> list[int]:
        alt = csp.Alt(csp.Output(other_out, "never"), ch)
        return [alt.select()[1] for _ in range(n)]

    s, r = Background(sender), Background(receiver)
    assert r.join(timeout=50) == list(range(n))
    s.join(timeout=10)
    for c in (ch, other_in, other_out):
        st = c.stats()
        assert (st.readers_waiting, st.writers_waiting) == (0, 0)


def test_alt_over_reader_ends() -> None:
    a, b = csp.Channel(), csp.Channel(1)
    ra, rb = a.reader(), b.reader()
    b.write("buffered")
    assert csp.Alt(ra, rb).select() == (rb, "buffered")
    bg = Background(csp.Alt(ra, rb).select)
    blocked_readers(a)
    a.writer().write("rendezvous")
    assert bg.join() == (ra, "rendezvous")


def test_alt_with_output_on_writer_end() -> None:
    ch = csp.Channel()
    w = ch.writer()
    out = csp.Output(w, 7)
    bg = Background(csp.Alt(out).select)
    assert ch.read() == 7
    assert bg.join() == (out, None)


def test_same_alt_object_from_several_threads() -> None:
    ch = csp.Channel()
    alt = csp.Alt(ch)
    readers = [Background(lambda: [alt.select()[1] for _ in range(100)]) for _ in range(3)]
    for i in range(300):
        ch.write(i)
    got = sorted(v for r in readers for v in r.join())
    assert got == list(range(300))


# --- bad guards raise before anything blocks -----------------------------------------------


def test_non_guard_object_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        csp.Alt(csp.Channel(), object())
    with pytest.raises(TypeError):
        csp.Alt(42)
    with pytest.raises(TypeError):
        csp.select("not a guard")
    with pytest.raises(TypeError):
        csp.Guard(object())


def test_output_on_reader_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        csp.Output(csp.Channel().reader(), 1)
    with pytest.raises(TypeError):
        csp.Output(object(), 1)


def test_writer_as_input_guard_is_a_type_error() -> None:
    ch = csp.Channel()
    with pytest.raises(TypeError, match="Output"):
        csp.Alt(ch.writer())
    with pytest.raises(TypeError):
        csp.Guard(ch.writer())
    assert ch.stats().readers_waiting == 0


def test_bad_timeouts() -> None:
    with pytest.raises(ValueError, match="Timeout"):
        csp.Timeout(-1)
    with pytest.raises(ValueError, match="Timeout"):
        csp.Timeout(float("nan"))
    with pytest.raises(TypeError):
        csp.Timeout("x")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        csp.Timeout(None)  # type: ignore[arg-type]


def test_empty_alt_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="at least one"):
        csp.Alt()
    with pytest.raises(ValueError, match="at least one"):
        csp.select()


def test_reprs() -> None:
    ch = csp.Channel(name="r")
    alt = csp.Alt(ch, csp.Output(ch, 1), csp.Timeout(1), csp.Skip(), csp.Guard(ch, when=False))
    text = repr(alt)
    for part in ("Output", "Timeout(1.0)", "Skip()", "when=False"):
        assert part in text
