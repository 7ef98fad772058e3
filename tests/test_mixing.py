"""Cross-backend communication: every ordered pair (writer's backend, reader's backend) of
thread, greenlet and asyncio, and an OS process paired with thread, greenlet, asyncio or another
OS process (see OS_PAIRS), with one process body per role (tests/_kit.py).

For each pair: rendezvous and buffered channels with both processes in one ``Par`` (one
greenlet scheduler / one event loop per network) and in two separate networks (two schedulers,
two loops); the reader inside an Alt (input guard), the writer inside an Alt (Output guard),
both sides in Alts; poison crossing the pair (from either side, and a failure's poison);
retire crossing the pair (end-of-stream to the reader, readers-gone to the writer). Then one
``Par`` mixing all three backends in a pipeline, ended by retire and by poison, and asyncio
cancellation races (10^3 trials) against a counterpart of each backend, an OS process
included (the raced channel then lives in shared memory). Counts are exact;
every wait has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from types import SimpleNamespace
from typing import Any

import pytest

import ferrocsp as csp
from _kit import BACKENDS, SHARED_BACKENDS, Kit, current_backend
from _support import all_exceptions, notes

pytestmark = pytest.mark.timeout(30)

N = 100
JOIN = 20.0

# An OS process on one side of each pair with every backend (and with another OS process):
# an asyncio side awaits on shared channels through waiter threads (docs/design.md).
OS_PAIRS = [("os", b) for b in SHARED_BACKENDS] + [(b, "os") for b in BACKENDS]
PAIRS = list(itertools.product(BACKENDS, BACKENDS)) + OS_PAIRS


@pytest.fixture(params=PAIRS, ids=[f"{w}->{r}" for w, r in PAIRS])
def pair(request: pytest.FixtureRequest) -> tuple[Kit, Kit]:
    """(writer's kit, reader's kit); a pair with an OS process runs under ``no_leaks``."""
    w, r = request.param
    if "os" in (w, r):
        request.getfixturevalue("no_leaks")
    return Kit(w), Kit(r)


# --------------------------------------------------------------------------- bodies


async def produce(k: Kit, out: csp.Channel | csp.Writer, n: int) -> str:
    assert current_backend() == k.backend
    for i in range(n):
        await k.write(out, i)
    return "produced"


async def consume(k: Kit, inp: csp.Channel | csp.Reader, n: int) -> list[int]:
    assert current_backend() == k.backend
    return [await k.read(inp) for _ in range(n)]


async def alt_produce(k: Kit, out: csp.Channel, idle: csp.Channel, n: int) -> int:
    """Writes through an Output guard next to a guard that never fires."""
    sent = 0
    for i in range(n):
        guard = csp.Output(out, i)
        chosen, _ = await k.select(csp.Alt(idle, guard, csp.Output(idle, "never")))
        assert chosen is guard
        sent += 1
    return sent


async def alt_consume(k: Kit, inp: csp.Channel, idle: csp.Channel, n: int) -> list[int]:
    """Reads through an input guard next to guards that never fire."""
    alt = csp.Alt(idle, inp, csp.Output(idle, "never"))
    got = []
    for _ in range(n):
        chosen, value = await k.fair_select(alt)
        assert chosen is inp
        got.append(value)
    return got


async def read_all(k: Kit, inp: csp.Reader | csp.Channel) -> list[Any]:
    return [v async for v in k.iter(inp)]


async def relay(k: Kit, inp: csp.Reader | csp.Channel, out: csp.Writer | csp.Channel) -> None:
    while True:
        await k.write(out, (await k.read(inp)) + 1)


async def read_forever(k: Kit, inp: csp.Channel, also: csp.Channel) -> None:
    while True:
        await k.read(inp)


async def write_forever(k: Kit, out: csp.Channel | csp.Writer, also: csp.Channel) -> None:
    while True:
        await k.write(out, 0)


async def write_then_poison(k: Kit, out: csp.Channel, n: int) -> str:
    for i in range(n):
        await k.write(out, i)
    out.poison()
    return "poisoned"


async def read_then_poison(k: Kit, inp: csp.Channel, n: int) -> list[int]:
    got = [await k.read(inp) for _ in range(n)]
    inp.poison()
    return got


async def write_then_fail(k: Kit, out: csp.Channel, n: int) -> None:
    for i in range(n):
        await k.write(out, i)
    raise ValueError("writer failed")


# --------------------------------------------------------------------------- plain


@pytest.mark.parametrize("capacity", [0, 3])
def test_one_network(pair: tuple[Kit, Kit], capacity: int) -> None:
    kw, kr = pair
    ch = csp.Channel(capacity)
    res = csp.Par(kw.process(produce)(ch, N), kr.process(consume)(ch, N)).run()
    assert res == ["produced", list(range(N))]


@pytest.mark.parametrize("capacity", [0, 3])
def test_two_networks(pair: tuple[Kit, Kit], capacity: int) -> None:
    """Separate networks: separate threads, greenlet schedulers and event loops. With an OS
    writer, the reader is already waiting when the channel moves to shared memory."""
    kw, kr = pair
    ch = csp.Channel(capacity)
    hr = kr.Spawn(kr.process(consume)(ch, N))
    hw = kw.Spawn(kw.process(produce)(ch, N))
    assert hw.join(timeout=JOIN) == "produced"
    assert hr.join(timeout=JOIN) == list(range(N))


async def produce_and_retire(k: Kit, out: csp.Writer, n: int) -> str:
    with out:
        for i in range(n):
            await k.write(out, i)
    return "retired"


def test_ends_and_end_of_stream(pair: tuple[Kit, Kit]) -> None:
    kw, kr = pair
    ch = csp.Channel()
    w, r = ch.writer(), ch.reader()
    res = csp.Par(kw.process(produce_and_retire)(w, N), kr.process(read_all)(r)).run()
    assert res == ["retired", list(range(N))]
    assert ch.stats().retired


# --------------------------------------------------------------------------- Alt


def test_reader_in_alt(pair: tuple[Kit, Kit]) -> None:
    kw, kr = pair
    ch, idle = csp.Channel(name="data"), csp.Channel(name="idle")
    res = csp.Par(kw.process(produce)(ch, N), kr.process(alt_consume)(ch, idle, N)).run()
    assert res == ["produced", list(range(N))]
    st = idle.stats()
    assert (st.readers_waiting, st.writers_waiting, st.buffered) == (0, 0, 0)


def test_writer_in_alt(pair: tuple[Kit, Kit]) -> None:
    kw, kr = pair
    ch, idle = csp.Channel(name="data"), csp.Channel(name="idle")
    res = csp.Par(kw.process(alt_produce)(ch, idle, N), kr.process(consume)(ch, N)).run()
    assert res == [N, list(range(N))]


def test_both_sides_in_alts(pair: tuple[Kit, Kit]) -> None:
    kw, kr = pair
    ch = csp.Channel(name="data")
    idle_w, idle_r = csp.Channel(name="idle-w"), csp.Channel(name="idle-r")
    res = csp.Par(
        kw.process(alt_produce)(ch, idle_w, N), kr.process(alt_consume)(ch, idle_r, N)
    ).run()
    assert res == [N, list(range(N))]
    for c in (ch, idle_w, idle_r):
        st = c.stats()
        assert (st.readers_waiting, st.writers_waiting) == (0, 0)


def test_both_sides_in_alts_two_networks(pair: tuple[Kit, Kit]) -> None:
    kw, kr = pair
    ch = csp.Channel(name="data")
    idle_w, idle_r = csp.Channel(name="idle-w"), csp.Channel(name="idle-r")
    hr = kr.Spawn(kr.process(alt_consume)(ch, idle_r, N))
    hw = kw.Spawn(kw.process(alt_produce)(ch, idle_w, N))
    assert hw.join(timeout=JOIN) == N
    assert hr.join(timeout=JOIN) == list(range(N))


# --------------------------------------------------------------------------- poison


async def count_until_poisoned(
    k: Kit, inp: csp.Channel, also: csp.Channel, report: SimpleNamespace
) -> None:
    n = 0
    while True:
        await k.read(inp)
        n += 1
        if n == N:
            report.seen.write_nowait(n)


def test_poison_from_writer_side(pair: tuple[Kit, Kit]) -> None:
    """The writer poisons after N values; the reader, blocked on its next read, ends cleanly
    (result None) and poisons its other channel."""
    kw, kr = pair
    ch, other = csp.Channel(name="data"), csp.Channel(name="other")
    # Not an argument (it would be poisoned as the reader ends): wrapped.
    report = SimpleNamespace(seen=csp.Channel(1, name="seen"))
    res = csp.Par(
        kw.process(write_then_poison)(ch, N),
        kr.process(count_until_poisoned)(ch, other, report),
    ).run()
    assert res == ["poisoned", None]
    assert report.seen.read_nowait() == N
    assert other.stats().poisoned


def test_poison_from_reader_side(pair: tuple[Kit, Kit]) -> None:
    """The reader poisons after N values; the writer, blocked writing, ends cleanly and
    poisons its other channel."""
    kw, kr = pair
    ch, other = csp.Channel(name="data"), csp.Channel(name="other")
    res = csp.Par(kw.process(write_forever)(ch, other), kr.process(read_then_poison)(ch, N)).run()
    assert res == [None, [0] * N]
    assert other.stats().poisoned


async def alt_forever(k: Kit, inp: csp.Channel, idle: csp.Channel) -> None:
    alt = csp.Alt(idle, inp)
    while True:
        await k.select(alt)


def test_poison_reaches_a_reader_blocked_in_alt(pair: tuple[Kit, Kit]) -> None:
    kw, kr = pair
    ch, idle = csp.Channel(name="data"), csp.Channel(name="idle")
    res = csp.Par(kw.process(write_then_poison)(ch, N), kr.process(alt_forever)(ch, idle)).run()
    assert res == ["poisoned", None]
    assert idle.stats().poisoned  # the reader's other argument: poison spread through it


def test_failure_crosses_the_pair(pair: tuple[Kit, Kit]) -> None:
    kw, kr = pair
    ch, other = csp.Channel(name="data"), csp.Channel(name="other")
    with pytest.raises(ExceptionGroup) as info:
        csp.Par(kw.process(write_then_fail)(ch, N), kr.process(read_forever)(ch, other)).run()
    (exc,) = all_exceptions(info.value)
    assert isinstance(exc, ValueError)
    assert notes(exc) == "in process 'write_then_fail'"
    assert ch.stats().poisoned
    assert other.stats().poisoned


# --------------------------------------------------------------------------- retire


def test_retire_from_writer_side(pair: tuple[Kit, Kit]) -> None:
    """The writer end retires: the reader drains, sees end-of-stream, and a reader ending by
    ChannelRetired retires its own ends downstream."""
    kw, kr = pair
    a, b = csp.Channel(3, name="a"), csp.Channel(3, name="b")
    a_w, a_r, b_w, b_r = a.writer(), a.reader(), b.writer(), b.reader()

    h = csp.Par(kw.process(produce_and_retire)(a_w, N), kr.process(relay)(a_r, b_w)).start()
    got = list(b_r)  # ends when the relay, ended by retire, retired b_w
    assert h.join(timeout=JOIN) == ["retired", None]
    assert got == [i + 1 for i in range(N)]
    assert b.stats().retired
    assert not b.stats().poisoned


async def read_n_and_retire(k: Kit, inp: csp.Reader, n: int) -> list[int]:
    with inp:
        return [await k.read(inp) for _ in range(n)]


async def write_counting(k: Kit, out: csp.Writer, also: csp.Writer) -> None:
    i = 0
    while True:
        await k.write(out, i)
        i += 1


def test_retire_from_reader_side(pair: tuple[Kit, Kit]) -> None:
    """The only reader end retires after N values: the blocked writer raises ChannelRetired,
    ends cleanly, and retires its other ends (not poisons them)."""
    kw, kr = pair
    ch, other = csp.Channel(name="data"), csp.Channel(1, name="other")
    w, r, other_w = ch.writer(), ch.reader(), other.writer()

    res = csp.Par(kw.process(write_counting)(w, other_w), kr.process(read_n_and_retire)(r, N)).run()
    assert res == [None, list(range(N))]
    assert other.stats().retired
    assert not other.stats().poisoned


# --------------------------------------------------------------------------- all three


def _pipeline_kits() -> list[Kit]:
    # Each backend sends to each other one: t->g->a->t->a->g->t.
    return [Kit(b) for b in ("thread", "greenlet", "asyncio", "thread", "asyncio", "greenlet")]


def test_pipeline_mixing_all_three_ends_by_retire() -> None:
    kits = _pipeline_kits()
    chans = [csp.Channel(i % 2, name=f"p{i}") for i in range(len(kits) + 1)]
    ends = [(c.reader(), c.writer()) for c in chans]
    source_w = ends[0][1]
    stages = [
        kit.process(relay, name=f"relay-{i}-{kit.backend}")(ends[i][0], ends[i + 1][1])
        for i, kit in enumerate(kits)
    ]
    sink = Kit("thread").process(read_all)(ends[-1][0])

    async def source(k: Kit, out: csp.Writer, n: int) -> None:
        with out:
            for i in range(n):
                await k.write(out, i)

    res = csp.Par(Kit("asyncio").process(source)(source_w, N), *stages, sink).run()
    assert res[0] is None
    assert res[1:-1] == [None] * len(kits)  # every relay ended by retire
    assert res[-1] == [i + len(kits) for i in range(N)]
    for c in chans:
        assert c.stats().retired
        assert not c.stats().poisoned


def test_pipeline_mixing_all_three_with_alt_merge_ends_by_poison() -> None:
    """Sources (one per backend, writing forever) feed a fair-Alt merge on each backend in
    turn; the sink poisons after 3N values, and the poison reaches every process. (Fairness
    is among *ready* guards, so how many values each source got in is not fixed: each source's
    values arrive in order with none lost or repeated.)"""
    for merge_backend in BACKENDS:
        ins = [csp.Channel(name=f"in-{b}") for b in BACKENDS]
        out = csp.Channel(name="merged")

        async def merge(k: Kit, inputs: list[csp.Channel], out: csp.Channel) -> None:
            alt = csp.Alt(*inputs)
            while True:
                _, value = await k.fair_select(alt)
                await k.write(out, value)

        async def source(k: Kit, out: csp.Channel, tag: str) -> None:
            i = 0
            while True:
                await k.write(out, (tag, i))
                i += 1

        async def sink(k: Kit, inp: csp.Channel, n: int) -> list[Any]:
            got = [await k.read(inp) for _ in range(n)]
            inp.poison()
            return got

        sources = [Kit(b).process(source)(ch, b) for b, ch in zip(BACKENDS, ins, strict=True)]
        res = csp.Par(
            *sources,
            Kit(merge_backend).process(merge)(ins, out),
            Kit("greenlet").process(sink)(out, 3 * N),
        ).run()
        n_src = len(BACKENDS)
        assert res[: n_src + 1] == [None] * (n_src + 1), merge_backend  # sources and merge
        got = res[n_src + 1]
        assert len(got) == 3 * N
        for b in BACKENDS:
            mine = [i for tag, i in got if tag == b]
            assert mine == list(range(len(mine))), (merge_backend, b)  # in order, no loss
        for c in (*ins, out):
            assert c.stats().poisoned


# --------------------------------------------------------------------------- cancellation

TRIALS = 1000


async def _pause(rng: random.Random) -> None:
    for _ in range(rng.randrange(3)):
        await asyncio.sleep(0)
    if rng.random() < 0.3:
        await asyncio.sleep(rng.random() * 1e-4)


def _run_bounded(coro: Any) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, JOIN)

    return asyncio.run(bounded())


@pytest.fixture(params=SHARED_BACKENDS)
def counterpart(request: pytest.FixtureRequest) -> str:
    """The backend of the process on the other side of a cancellation race; an OS process
    (the channel then lives in shared memory) runs under ``no_leaks``."""
    name: str = request.param
    if name in ("os", "os-asyncio"):
        request.getfixturevalue("no_leaks")
    return name


def test_cancelled_async_reads_race_a_writer_of_each_backend(counterpart: str) -> None:
    """10^3 asyncio reads cancelled at random moments while a writer process (its own thread,
    greenlet scheduler or event loop) hands values over: each value arrives exactly once, in
    order, whether or not the read that took it was cancelled."""
    ch = csp.Channel(name="raced")
    n = 300
    kw = Kit(counterpart)
    writer = kw.Spawn(kw.process(produce)(ch, n))
    got: list[int] = []

    async def main() -> int:
        rng = random.Random(11)

        async def reader() -> None:
            got.append(await ch.aread())

        cancelled = 0
        for _ in range(TRIALS):
            t = asyncio.create_task(reader())
            await _pause(rng)
            t.cancel()
            try:
                await t
            except asyncio.CancelledError:
                cancelled += 1
        while len(got) < n:
            got.append(await ch.aread())
        return cancelled

    cancelled = _run_bounded(main())
    assert writer.join(timeout=JOIN) == "produced"
    assert got == list(range(n))
    assert 0 < cancelled <= TRIALS
    assert ch.stats().readers_waiting == 0


def test_cancelled_async_writes_race_a_reader_of_each_backend(counterpart: str) -> None:
    """10^3 asyncio writes cancelled at random moments against a reader process of each
    backend: a value is received iff its write returned (a write that raised
    ``CancelledError`` sent nothing), in order."""
    ch = csp.Channel(name="raced")
    r, w = ch.reader(), ch.writer()
    kr = Kit(counterpart)
    reader = kr.Spawn(kr.process(read_all)(r))
    sent: list[int] = []

    async def main() -> int:
        rng = random.Random(13)

        async def writer(i: int) -> None:
            await w.awrite(i)
            sent.append(i)

        await w.awrite(-1)  # the reader is up (an OS process takes a while to start)
        sent.append(-1)
        cancelled = 0
        for i in range(TRIALS):
            t = asyncio.create_task(writer(i))
            await _pause(rng)
            t.cancel()
            try:
                await t
            except asyncio.CancelledError:
                cancelled += 1
        w.retire()
        return cancelled

    cancelled = _run_bounded(main())
    assert reader.join(timeout=JOIN) == sent
    assert 0 < cancelled < TRIALS  # both outcomes of the race happened


def test_cancelled_async_output_alts_race_a_reader_of_each_backend(counterpart: str) -> None:
    """10^3 asyncio Output-guard Alts cancelled at random moments against a reader process of
    each backend: a value is received iff its Alt reported the guard fired."""
    ch = csp.Channel(name="raced")
    r, w = ch.reader(), ch.writer()
    kr = Kit(counterpart)
    reader = kr.Spawn(kr.process(read_all)(r))
    fired: list[int] = []

    async def main() -> None:
        rng = random.Random(12)

        async def selector(i: int) -> None:
            await csp.Alt(csp.Output(w, i)).aselect()
            fired.append(i)

        await w.awrite(-1)  # the reader is up (an OS process takes a while to start)
        fired.append(-1)
        for i in range(TRIALS):
            t = asyncio.create_task(selector(i))
            await _pause(rng)
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        w.retire()

    _run_bounded(main())
    assert reader.join(timeout=JOIN) == fired
    assert 0 < len(fired) - 1 < TRIALS  # both outcomes of the race happened


# --------------------------------------------------------------------------- failures


def test_failures_on_every_backend_in_one_par() -> None:
    """One failing and one blocked process per backend in one Par: the group holds exactly
    the three failures, each noted with its process; the blocked ones end by poison."""
    shared = csp.Channel(name="shared")

    async def fails(k: Kit, ch: csp.Channel, exc: BaseException) -> None:
        raise exc

    async def blocked(k: Kit, ch: csp.Channel) -> str:
        await k.read(ch)
        return "read"

    procs = [Kit(b).process(fails, name=f"fail-{b}")(shared, ValueError(b)) for b in BACKENDS]
    procs += [Kit(b).process(blocked, name=f"blocked-{b}")(shared) for b in BACKENDS]
    with pytest.raises(ExceptionGroup) as info:
        csp.Par(*procs).run()
    leaves = all_exceptions(info.value)
    assert sorted(str(e) for e in leaves) == sorted(BACKENDS)
    for e in leaves:
        assert isinstance(e, ValueError)
        assert notes(e) == f"in process 'fail-{e}'"
    assert shared.stats().poisoned
