"""Alt (DESIGN.md §2 "Choice"): exactly one guard fires, policies, guards, errors, contention.

Tests taking ``k`` run the selecting process under the thread, greenlet and asyncio backends
(tests/_kit.py; ``await k.select(alt)`` is ``alt.select()`` or ``await alt.aselect()``);
counterparts are the test's thread, helper threads, or processes of the same backend. Run
once: construction errors and reprs (raised before anything runs), the sync-only
``csp.select`` shortcut.

Every test that involves another thread waits for it through channels, events or bounded
polling of ``stats()`` (``_support.wait_until``), never by sleeping. Tests taking ``mk`` also
run on networked channels (tests/_chans.py), mixed with local ones where a test has both.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections import Counter
from typing import Any

import pytest

import ferrocsp as csp
from _chans import Chans
from _kit import SHARED_BACKENDS, Kit
from _os_support import backend_fixture
from _support import Background, wait_until

backend = backend_fixture(SHARED_BACKENDS)  # these tests run on OS processes too

pytestmark = pytest.mark.timeout(60)

METHODS = ["select", "pri_select", "fair_select"]


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


async def choose(k: Kit, alt: csp.Alt, method: str = "select") -> tuple[int, Any]:
    """Selects; returns the chosen guard's position in ``alt.guards`` and the value (a guard
    that came back from an OS process would be a copy, so tests compare positions)."""
    guard, value = await k.choose(alt, method)
    return alt.guards.index(guard), value


def run_choose(k: Kit, alt: csp.Alt, method: str = "select") -> tuple[Any, Any]:
    """(guard of ``alt``, value) chosen by one process of the backend."""
    i, value = k.run(choose, alt, method)
    return alt.guards[i], value


def chosen(alt: csp.Alt, outcome: tuple[int, Any]) -> tuple[Any, Any]:
    """The (guard of ``alt``, value) of what ``choose`` returned."""
    return alt.guards[outcome[0]], outcome[1]


# --- exactly one guard fires ---------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_exactly_one_input_guard_fires(k: Kit, mk: Chans, method: str) -> None:
    a, b, c = mk(1), mk(1), mk(1)
    for ch, v in ((a, "a"), (b, "b"), (c, "c")):
        ch.write(v)
    guard, value = run_choose(k, csp.Alt(a, b, c), method)
    assert guard in (a, b, c)
    assert value == {a: "a", b: "b", c: "c"}[guard]
    # The other two still hold their values; the chosen one is empty. (Networked: a value an
    # Alt's puller had in hand when the selection ended is back on the server a moment later,
    # so ask with a timeout instead of *_nowait.)
    left = {}
    for ch in (a, b, c):
        with contextlib.suppress(csp.WouldBlock, TimeoutError):
            left[ch] = ch.read(timeout=0.5 if ch is guard else 5) if mk.is_net else ch.read_nowait()
    assert left == {ch: v for ch, v in ((a, "a"), (b, "b"), (c, "c")) if ch is not guard}


@pytest.mark.parametrize("method", METHODS)
def test_exactly_one_output_guard_fires(k: Kit, mk: Chans, method: str) -> None:
    a, b, c = mk(1), mk(1), mk(1)
    outs = [csp.Output(a, "a"), csp.Output(b, "b"), csp.Output(c.writer(), "c")]
    guard, value = run_choose(k, csp.Alt(*outs), method)
    assert guard in outs
    assert value is None
    sent = [(ch, v) for ch in (a, b, c) for v in buffered(mk, ch)]
    assert len(sent) == 1
    assert sent[0][1] == guard.value


def buffered(mk: Chans, ch: csp.Channel) -> list[Any]:
    """What buffered channel ``ch`` holds now (its reader is this test alone). A networked
    channel has no local count: it is read until a read finds nothing within a second (a
    value written before this call is on the server already)."""
    got = []
    while True:
        try:
            got.append(ch.read(timeout=1.0) if mk.is_net else ch.read_nowait())
        except (csp.WouldBlock, TimeoutError):
            return got


async def selects_ready_over_output(k: Kit, ready: csp.Channel, out: csp.Output) -> None:
    for _ in range(100):
        guard, value = await k.select(csp.Alt(out, ready))
        assert (guard, value) == (ready, "in")
        await k.write(ready, "in")


def test_unchosen_output_sends_nothing(k: Kit, mk: Chans) -> None:
    ready, full = mk(1), mk(1)
    ready.write("in")
    full.write("old")
    k.run(selects_ready_over_output, ready, csp.Output(full, "never"))
    assert buffered(mk, full) == ["old"]


N_CONTENTION = 10_000
N_WORKERS = 4


async def contend(
    k: Kit, chans: list[csp.Channel], i: int, quota: int
) -> tuple[int, list[Any], list[Any]]:
    """Worker ``i`` of the contention test: (selections made, values sent, values received).

    After ``quota`` selections of its own it poisons every channel, which ends the others."""
    n = len(chans)
    outs = [chans[i], chans[(i + 1) % n]]
    ins = [chans[(i + 1) % n], chans[(i + 2) % n]]
    seq = 0
    sent: list[Any] = []
    received: list[Any] = []
    try:
        while True:
            guards: list[Any] = []
            for j, ch in enumerate(outs):
                guards.append(csp.Output(ch, (i, seq, j)))
            guards.extend(ins)
            if seq % 2:
                guards.reverse()
            alt = csp.Alt(*guards)
            at, value = await choose(k, alt, METHODS[seq % 3])
            seq += 1
            guard = alt.guards[at]
            if isinstance(guard, csp.Output):
                assert value is None
                sent.append(guard.value)
            else:
                received.append(value)
            if seq >= quota:
                for ch in chans:
                    ch.poison()
    except csp.ChannelPoisoned:
        return seq, sent, received


@pytest.mark.timeout(120)
def test_contention_output_delivered_iff_chosen(k: Kit, mk: Chans) -> None:
    """Processes Alt over rendezvous channels, mixing output and input guards.

    Process ``i`` offers unique values on channels ``i`` and ``i+1`` and accepts on ``i+1``
    and ``i+2`` (mod N), so every channel has two writers and two readers, all choosing, and
    one Alt waits on both ends of a channel (it must never meet itself). The first process to
    make its share of 10^4 selections poisons the channels; every value reported sent was
    received exactly once.
    """
    chans = [mk(name=f"c{i}") for i in range(N_WORKERS)]
    # Networked: every selection is a few round trips through the server.
    total = 300 if mk.is_net else N_CONTENTION
    quota = total // N_WORKERS
    workers = k.spawn_many(contend, [(chans, i, quota) for i in range(N_WORKERS)])
    outcomes = [w.join(timeout=100) for w in workers]
    done_by = [o[0] for o in outcomes]
    all_sent = [tuple(v) for o in outcomes for v in o[1]]
    all_received = [tuple(v) for o in outcomes for v in o[2]]
    assert max(done_by) >= quota
    assert len(all_sent) + len(all_received) == sum(done_by)
    assert len(set(all_sent)) == len(all_sent), "a value was sent twice"
    assert len(set(all_received)) == len(all_received), "a value was received twice"
    assert set(all_sent) == set(all_received)
    # The two selections of one rendezvous are both counted: half were sends.
    assert len(all_sent) == len(all_received)
    # A process never received its own value on the channel it waits on from both ends.
    for i, (_, _, received) in enumerate(outcomes):
        assert all(v[0] != i for v in received), f"process {i} met itself"
    # Every process got to choose (nobody starved for the whole run).
    assert all(n > 0 for n in done_by), done_by


# --- policies ------------------------------------------------------------------------------


async def pri_selects_in_order(
    k: Kit, a: csp.Channel, b: csp.Channel, alt_ab: csp.Alt, alt_ba: csp.Alt
) -> None:
    for i in range(500):
        if a.stats().buffered == 0:
            a.write(i)
        if b.stats().buffered == 0:
            b.write(-i)
        alt = alt_ab if i % 2 == 0 else alt_ba
        guard, _ = await k.pri_select(alt)
        assert guard is (a if i % 2 == 0 else b)


def test_pri_select_picks_first_ready_in_order(k: Kit) -> None:
    a, b = csp.Channel(1), csp.Channel(1)
    k.run(pri_selects_in_order, a, b, csp.Alt(a, b), csp.Alt(b, a))


async def pri_selects_a(k: Kit, a: csp.Channel, b: csp.Channel) -> None:
    alt = csp.Alt(a, b)
    for _ in range(200):
        blocked_writers(a)  # bounded polling of the helper threads, never of the backend
        blocked_writers(b)
        assert await k.pri_select(alt) == (a, "a")


def test_pri_select_with_rendezvous_writers(k: Kit) -> None:
    a, b = csp.Channel(), csp.Channel()
    wa = Background(forever_writer, a, "a")
    wb = Background(forever_writer, b, "b")
    try:
        k.run(pri_selects_a, a, b)
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


async def fair_selects_ready_writers(k: Kit, a: csp.Channel, b: csp.Channel, n: int) -> list[str]:
    deadline = time.monotonic() + 45
    winners: list[str] = []
    alt = csp.Alt(a, b)
    for _ in range(n):
        wait_blocked_writers([a, b], deadline)
        _, value = await k.fair_select(alt)
        winners.append(value)
    return winners


@pytest.mark.timeout(60)
def test_fair_select_never_starves_ready_writers(k: Kit) -> None:
    """Two writer threads, each writing forever to its own channel; 3000 fair selections
    (1000 in a greenlet or asyncio process).

    Before each selection the test waits (bounded stats polling) until both writers are
    blocked again, so both guards are ready every time: a writer thread that has not yet been
    scheduled back (the GIL) is not ready, and fairness is only among ready guards.
    """
    a, b = csp.Channel(name="a"), csp.Channel(name="b")
    wa = Background(forever_writer, a, "a")
    wb = Background(forever_writer, b, "b")
    # The selection is the same engine call on every backend; the waiting for the writer
    # threads (GIL hand-overs) is what costs, so the cooperative backends do fewer rounds.
    n = 3000 if k.backend == "thread" else 1000
    try:
        winners = k.run(fair_selects_ready_writers, a, b, n)
    finally:
        a.poison()
        b.poison()
    wa.join()
    wb.join()
    counts = Counter(winners)
    alternating = all(x != y for x, y in itertools.pairwise(winners))
    assert alternating or all(abs(counts[c] - n / 2) <= 0.1 * n / 2 for c in "ab"), counts


async def fair_selects_values(k: Kit, alt: csp.Alt, n: int) -> Counter[str]:
    return Counter([(await k.fair_select(alt))[1] for _ in range(n)])


@pytest.mark.timeout(60)
def test_fair_select_free_running_writers_both_served(k: Kit) -> None:
    """Without waiting for readiness both writers are still served (no starvation)."""
    a, b = csp.Channel(name="a"), csp.Channel(name="b")
    wa = Background(forever_writer, a, "a")
    wb = Background(forever_writer, b, "b")
    try:
        counts = k.run(fair_selects_values, csp.Alt(a, b), 3000)
    finally:
        a.poison()
        b.poison()
    wa.join()
    wb.join()
    assert counts["a"] > 0
    assert counts["b"] > 0


async def tagged_writer(k: Kit, ch: csp.Channel, tag: int, n: int) -> None:
    for i in range(n):
        await k.write(ch, (tag, i))


async def fair_selector(k: Kit, chans: list[csp.Channel], n: int) -> list[tuple[int, int]]:
    alt = csp.Alt(*chans)
    return [(await k.fair_select(alt))[1] for _ in range(n)]


def test_fair_select_over_writer_processes_of_the_backend(k: Kit) -> None:
    """Writers and the fair selector all on the backend (one scheduler / loop for greenlet and
    asyncio): every writer is served, values per writer arrive in order."""
    chans = [csp.Channel(name=f"w{i}") for i in range(3)]
    n = 300
    w = k.process(tagged_writer)
    selector = k.process(fair_selector)(chans, 3 * n)
    *_, got = k.Par(*[w(ch, t, n) for t, ch in enumerate(chans)], selector).run()
    for t in range(3):
        assert [v for tag, v in got if tag == t] == list(range(n))


async def fair_refills(k: Kit, alt: csp.Alt, names: str) -> list[str]:
    """Keeps every channel guard of ``alt`` full (channel ``i`` holds ``names[i]``)."""
    order = []
    for _ in range(30):
        for ch, name in zip(alt.guards, names, strict=True):
            if ch.stats().buffered == 0:
                await k.write(ch, name)
        guard, value = await k.fair_select(alt)
        assert value == names[alt.guards.index(guard)]
        order.append(value)
    return order


def test_fair_select_alternates_over_always_ready_buffers(k: Kit) -> None:
    a, b, c = csp.Channel(1), csp.Channel(1), csp.Channel(1)
    assert "".join(k.run(fair_refills, csp.Alt(a, b, c), "abc")) == "abc" * 10


async def fair_select_each(k: Kit, alts: list[csp.Alt]) -> list[Any]:
    return [(await k.fair_select(alt))[0] for alt in alts]


def test_fair_select_state_is_per_alt_object(k: Kit) -> None:
    a, b = csp.Channel(2), csp.Channel(2)
    for ch in (a, b):
        ch.write(1)
        ch.write(2)
    first, second = csp.Alt(a, b), csp.Alt(a, b)
    # A fresh Alt has no history: it starts from the first guard again.
    assert k.run(fair_select_each, [first, second, first]) == [a, a, b]


async def selects_and_puts_back(k: Kit, alt: csp.Alt, n: int) -> Counter[str]:
    counts: Counter[str] = Counter()
    for _ in range(n):
        guard, value = await k.select(alt)
        counts[value] += 1
        await k.write(guard, value)
    return counts


def test_select_is_random_among_ready_guards(k: Kit) -> None:
    a, b = csp.Channel(1), csp.Channel(1)
    a.write("a")
    b.write("b")
    alt = csp.Alt(a, b)
    n = 2000
    counts = k.run(selects_and_puts_back, alt, n)
    for c in "ab":
        assert 0.35 * n <= counts[c] <= 0.65 * n, counts


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


async def timed_choose(k: Kit, alt: csp.Alt) -> tuple[tuple[int, Any], float]:
    t0 = time.monotonic()
    return await choose(k, alt), time.monotonic() - t0


@pytest.mark.parametrize("seconds", [0.02, 0.1])
def test_timeout_fires_within_bound_when_nothing_ready(k: Kit, mk: Chans, seconds: float) -> None:
    ch = mk()
    t = csp.Timeout(seconds)
    alt = csp.Alt(ch, csp.Output(mk(), 1), t)
    outcome, elapsed = k.run(timed_choose, alt)
    guard, value = chosen(alt, outcome)
    assert guard is t
    assert value is None
    assert seconds <= elapsed < seconds + 2.0
    st = ch.stats()
    assert (st.readers_waiting, st.writers_waiting) == (0, 0)


def test_timeout_zero_fires_at_once(k: Kit) -> None:
    t = csp.Timeout(0)
    alt = csp.Alt(csp.Channel(), t)
    outcome, elapsed = k.run(timed_choose, alt)
    assert chosen(alt, outcome) == (t, None)
    assert elapsed < 2.0


async def refill_and_choose(k: Kit, ch: csp.Channel, alt: csp.Alt, methods: list[str]) -> None:
    """Each selection of ``alt`` (the policies in turn) takes the value just put in ``ch``."""
    for i in range(200):
        await k.write(ch, i)
        assert await k.choose(alt, methods[i % len(methods)]) == (ch, i)


def test_timeout_never_fires_when_something_is_ready(k: Kit) -> None:
    buffered = csp.Channel(1)
    t = csp.Timeout(0.5)
    k.run(refill_and_choose, buffered, csp.Alt(t, buffered), METHODS)


async def selects_n(k: Kit, alt: csp.Alt, n: int) -> list[Any]:
    return [await k.select(alt) for _ in range(n)]


def test_timeout_never_fires_when_a_writer_is_waiting(k: Kit, mk: Chans) -> None:
    ch = mk()
    w = Background(lambda: [ch.write(i) for i in range(50)])
    got = k.run(selects_n, csp.Alt(csp.Timeout(5), ch), 50)
    w.join()
    assert got == [(ch, i) for i in range(50)]


async def times_out_5_times(k: Kit, t: csp.Timeout, never: csp.Channel) -> None:
    alt = csp.Alt(never, t)
    for _ in range(5):
        t0 = time.monotonic()
        assert await k.select(alt) == (t, None)
        assert time.monotonic() - t0 >= 0.01


def test_timeout_repeats_per_selection(k: Kit, mk: Chans) -> None:
    k.run(times_out_5_times, csp.Timeout(0.01), mk())


async def choose_each_way(k: Kit, alt: csp.Alt) -> list[tuple[int, Any]]:
    return [await choose(k, alt, method) for method in METHODS]


def test_skip_chosen_when_nothing_else_ready(k: Kit) -> None:
    ch, out = csp.Channel(), csp.Output(csp.Channel(), "x")
    skip = csp.Skip()
    alt = csp.Alt(ch, out, skip)
    assert [chosen(alt, c) for c in k.run(choose_each_way, alt)] == [(skip, None)] * 3
    assert ch.stats().readers_waiting == 0
    assert out.target.stats().writers_waiting == 0


def test_pri_select_prefers_ready_channel_over_skip(k: Kit) -> None:
    ch = csp.Channel(1)
    k.run(refill_and_choose, ch, csp.Alt(ch, csp.Skip()), ["pri_select"])


def test_pri_select_skip_first_always_wins(k: Kit) -> None:
    ch = csp.Channel(1)
    ch.write(1)
    skip = csp.Skip()
    assert run_choose(k, csp.Alt(skip, ch), "pri_select") == (skip, None)
    assert ch.stats().buffered == 1


# --- Guard(when=...) -----------------------------------------------------------------------


async def disabled_guards_never_fire(k: Kit, g: csp.Guard, skip: csp.Skip, out: csp.Guard) -> None:
    for method in METHODS:
        assert await k.choose(csp.Alt(g, skip), method) == (skip, None)
    assert await k.pri_select(csp.Alt(out, skip)) == (skip, None)


def test_disabled_guard_is_ignored_even_when_ready(k: Kit) -> None:
    ch = csp.Channel(1)
    ch.write("ready")
    g = csp.Guard(ch, when=False)
    skip = csp.Skip()
    out = csp.Guard(csp.Output(csp.Channel(1), "no"), when=False)
    k.run(disabled_guards_never_fire, g, skip, out)
    assert ch.stats().buffered == 1
    assert out.guard.target.stats().buffered == 0


async def guards_return_wrappers(k: Kit, ch: csp.Channel) -> None:
    g = csp.Guard(ch, when=True)
    assert await k.select(csp.Alt(g)) == (g, "v")
    out = csp.Guard(csp.Output(ch, "w"))
    assert await k.select(csp.Alt(out)) == (out, None)
    assert ch.read_nowait() == "w"
    skip = csp.Guard(csp.Skip(), when=True)
    assert await k.select(csp.Alt(csp.Channel(), skip)) == (skip, None)
    t = csp.Guard(csp.Timeout(0.01), when=True)
    assert await k.select(csp.Alt(csp.Channel(), t)) == (t, None)


def test_enabled_guard_returns_the_wrapper(k: Kit) -> None:
    ch = csp.Channel(1)
    ch.write("v")
    k.run(guards_return_wrappers, ch)


async def toggles_first_guard(k: Kit, alt: csp.Alt) -> list[tuple[int, Any]]:
    alt.guards[0].when = False
    first = await choose(k, alt, "pri_select")
    alt.guards[0].when = True
    return [first, await choose(k, alt, "pri_select")]


def test_guard_when_can_be_toggled_between_selections(k: Kit) -> None:
    a, b = csp.Channel(1), csp.Channel(1)
    ga = csp.Guard(a, when=True)
    alt = csp.Alt(ga, b)
    a.write("a")
    b.write("b")
    assert [chosen(alt, c) for c in k.run(toggles_first_guard, alt)] == [(b, "b"), (ga, "a")]


async def fair_with_disabled_guard(k: Kit, alt: csp.Alt) -> list[int]:
    guards = alt.guards

    def refill() -> None:
        for i, g in enumerate(guards):
            if g.guard.stats().buffered == 0:
                g.guard.write(i)

    got = []
    refill()
    got.append((await k.fair_select(alt))[1])
    guards[1].when = False
    refill()
    got.append((await k.fair_select(alt))[1])
    refill()
    got.append((await k.fair_select(alt))[1])
    guards[1].when = True
    refill()
    got.append((await k.fair_select(alt))[1])
    return got


def test_fair_select_with_disabled_guards(k: Kit) -> None:
    chans = [csp.Channel(1) for _ in range(3)]
    guards = [csp.Guard(ch) for ch in chans]
    assert k.run(fair_with_disabled_guard, csp.Alt(*guards)) == [0, 2, 0, 1]


def test_all_guards_disabled_with_only_channels_is_retired(k: Kit) -> None:
    # Nothing can ever fire: the same as an Alt over only retired channels.
    with pytest.raises(csp.ChannelRetired):
        run_choose(k, csp.Alt(csp.Guard(csp.Channel(), when=False)))


# --- poison and retire ---------------------------------------------------------------------


async def chooses_poisoned(k: Kit, ch: csp.Channel, ok: csp.Channel) -> None:
    with pytest.raises(csp.ChannelPoisoned, match="bad"):
        await k.select(csp.Alt(ch))
    with pytest.raises(csp.ChannelPoisoned):
        await k.select(csp.Alt(csp.Output(ch, 1)))
    # A poisoned channel counts as ready: it beats Skip in priority order.
    with pytest.raises(csp.ChannelPoisoned):
        await k.pri_select(csp.Alt(ch, csp.Skip()))
    # ... but a ready guard before it is chosen first, without raising.
    ok.write("fine")
    assert await k.pri_select(csp.Alt(ok, ch)) == (ok, "fine")


def test_poisoned_channel_raises_when_chosen(k: Kit, mk: Chans) -> None:
    ch = mk(name="bad")
    ch.poison()
    # Networked, the ready channel stays local: a value buffered on the server is ready for an
    # Alt only once it arrived, so "ready before the poisoned one" needs a local one.
    k.run(chooses_poisoned, ch, mk(1) if not mk.is_net else csp.Channel(1))


def test_poison_wakes_a_blocked_alt(k: Kit, mk: Chans) -> None:
    a, b = mk(), mk()
    bg = k.spawn(choose, csp.Alt(a, csp.Output(b, 1)))
    blocked_readers(a)
    blocked_writers(b)
    b.poison()
    assert isinstance(bg.exception(), csp.ChannelPoisoned)
    assert a.stats().readers_waiting == 0


async def chooses_retired(
    k: Kit, a: csp.Channel, b: csp.Channel, r: csp.Reader, w: csp.Writer, skip: Any, t: Any
) -> None:
    with pytest.raises(csp.ChannelRetired):
        await k.select(csp.Alt(a))
    with pytest.raises(csp.ChannelRetired):
        await k.fair_select(csp.Alt(a, csp.Output(b, 1)))
    # Retired ends, not channels.
    with pytest.raises(csp.ChannelRetired):
        await k.select(csp.Alt(r, csp.Output(w, 1)))
    # A Timeout or Skip can still fire.
    assert await k.select(csp.Alt(a, skip)) == (skip, None)
    assert await k.select(csp.Alt(a, t)) == (t, None)


def test_alt_over_only_retired_channels_raises_retired(k: Kit, mk: Chans) -> None:
    a, b = mk(name="ra"), mk(name="rb")
    a.writer().retire()  # readers of a see end-of-stream
    b.reader().retire()  # writers to b can never deliver
    c = mk()
    r, w = c.reader(), c.writer()
    r.retire()
    w.retire()
    skip = csp.Skip()
    t = csp.Timeout(0.01)
    k.run(chooses_retired, a, b, r, w, skip, t)


def test_retired_message_names_every_channel(k: Kit, mk: Chans) -> None:
    a, b = mk(name="left"), mk(name="right")
    a.writer().retire()
    r = b.reader()
    r.retire()
    with pytest.raises(csp.ChannelRetired) as info:
        run_choose(k, csp.Alt(a, r))
    assert f"'{a.name}', '{b.name}'" in str(info.value)
    assert "''" not in str(info.value)
    # A local name is a label (another channel named 'left' has no ends, so it is live); a
    # networked name is the channel (opened again elsewhere, its writers are retired).
    assert mk.again(a).stats().retired == mk.is_net


async def drains_then_retired(k: Kit, ch: csp.Channel) -> None:
    assert await k.select(csp.Alt(ch)) == (ch, 1)
    with pytest.raises(csp.ChannelRetired):
        await k.select(csp.Alt(ch))


def test_retired_channel_drains_buffer_first(k: Kit, mk: Chans) -> None:
    ch = mk(2)
    w = ch.writer()
    w.write(1)
    w.retire()
    k.run(drains_then_retired, ch)


def test_retire_wakes_a_blocked_alt(k: Kit, mk: Chans) -> None:
    a, b = mk(), mk()
    wa, wb = a.writer(), b.writer()
    bg = k.spawn(choose, csp.Alt(a, b))
    blocked_readers(a)
    blocked_readers(b)
    wa.retire()
    # b can still fire: the Alt keeps waiting on it.
    wait_until(lambda: a.stats().readers_waiting == 0, what="retired op withdrawn")
    assert not bg.done.is_set()
    wb.retire()
    assert isinstance(bg.exception(), csp.ChannelRetired)


def test_retire_while_blocked_leaves_the_rest_live(k: Kit, mk: Chans) -> None:
    a, b = mk(), mk()
    wa = a.writer()
    alt = csp.Alt(a, b)
    bg = k.spawn(choose, alt)
    blocked_readers(a)
    wa.retire()
    wait_until(lambda: a.stats().readers_waiting == 0, what="retired op withdrawn")
    b.write("late")
    assert chosen(alt, bg.join()) == (b, "late")


# --- blocking and cross-thread --------------------------------------------------------------


def test_blocked_alt_woken_by_write_from_another_thread(k: Kit, mk: Chans) -> None:
    a, b = mk(), mk()
    alt = csp.Alt(a, b)
    bg = k.spawn(choose, alt)
    blocked_readers(a)
    blocked_readers(b)
    b.write("hello")
    assert chosen(alt, bg.join()) == (b, "hello")
    # The losing registration was removed.
    assert a.stats().readers_waiting == 0
    assert b.stats().readers_waiting == 0


def test_blocked_output_alt_woken_by_reader(k: Kit, mk: Chans) -> None:
    a, b = mk(), mk()
    oa, ob = csp.Output(a, "to-a"), csp.Output(b, "to-b")
    alt = csp.Alt(oa, ob)
    bg = k.spawn(choose, alt)
    blocked_writers(a)
    blocked_writers(b)
    assert b.read() == "to-b"
    assert chosen(alt, bg.join()) == (ob, None)
    assert a.stats().writers_waiting == 0
    with pytest.raises(csp.WouldBlock):
        a.read_nowait()


async def offers_each(k: Kit, ch: csp.Channel, other_in: csp.Channel, n: int) -> None:
    for i in range(n):
        alt = csp.Alt(other_in, csp.Output(ch, i))
        at, _ = await choose(k, alt)
        assert at == 1


async def accepts_each(k: Kit, ch: csp.Channel, other_out: csp.Channel, n: int) -> list[int]:
    alt = csp.Alt(csp.Output(other_out, "never"), ch)
    return [(await k.select(alt))[1] for _ in range(n)]


@pytest.mark.timeout(60)
def test_output_alt_meets_input_alt_on_rendezvous(k: Kit, mk: Chans) -> None:
    # Networked: the rendezvous channel is, the other two stay local (mixed guards).
    ch, other_in, other_out = mk(), csp.Channel(), csp.Channel()
    n = 100 if mk.is_net else 1000
    res = k.Par(
        k.process(offers_each)(ch, other_in, n), k.process(accepts_each)(ch, other_out, n)
    ).run()
    assert res == [None, list(range(n))]
    for c in (ch, other_in, other_out):
        st = c.stats()
        assert (st.readers_waiting, st.writers_waiting) == (0, 0)


async def offers_with_timeouts(k: Kit, ch: csp.Channel, n: int) -> list[int]:
    """Offers 0, 1, 2, ... each with a short Timeout, until ``n`` were taken."""
    sent: list[int] = []
    i = 0
    while len(sent) < n:
        at, _ = await choose(k, csp.Alt(csp.Output(ch, i), csp.Timeout(0.0005)))
        if at == 0:
            sent.append(i)
        i += 1
    return sent


async def accepts_with_timeouts(k: Kit, ch: csp.Channel, n: int) -> list[int]:
    """Selects ``ch`` with a short Timeout until it received ``n`` values."""
    got: list[int] = []
    while len(got) < n:
        at, value = await choose(k, csp.Alt(ch, csp.Timeout(0.0005)))
        if at == 0:
            got.append(value)
    return got


def test_both_sides_selecting_with_timeouts_lose_and_duplicate_nothing(k: Kit) -> None:
    """Both sides select with timeouts that race the rendezvous: every value reported sent
    was received exactly once, in order, and a timed-out offer sent nothing."""
    ch = csp.Channel(name="racy")
    n = 200
    sent, got = k.Par(
        k.process(offers_with_timeouts)(ch, n), k.process(accepts_with_timeouts)(ch, n)
    ).run()
    assert sent == got
    st = ch.stats()
    assert (st.readers_waiting, st.writers_waiting) == (0, 0)


def test_alt_over_reader_ends(k: Kit, mk: Chans) -> None:
    a, b = mk(), mk(1)
    ra, rb = a.reader(), b.reader()
    b.write("buffered")
    alt = csp.Alt(ra, rb)
    assert run_choose(k, alt) == (rb, "buffered")
    bg = k.spawn(choose, alt)
    blocked_readers(a)
    a.writer().write("rendezvous")
    assert chosen(alt, bg.join()) == (ra, "rendezvous")


def test_alt_with_output_on_writer_end(k: Kit, mk: Chans) -> None:
    ch = mk()
    w = ch.writer()
    out = csp.Output(w, 7)
    alt = csp.Alt(out)
    bg = k.spawn(choose, alt)
    assert ch.read() == 7
    assert chosen(alt, bg.join()) == (out, None)


async def select_values(k: Kit, alt: csp.Alt, n: int) -> list[Any]:
    return [(await k.select(alt))[1] for _ in range(n)]


def test_same_alt_object_from_several_processes(k: Kit, mk: Chans) -> None:
    ch = mk()
    alt = csp.Alt(ch)
    readers = k.spawn_many(select_values, [(alt, 100)] * 3)
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
