"""asyncio: aread/awrite, async iteration, Alt, cancellation races, async processes in Par."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import sysconfig
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

import ferrocsp as csp

T = TypeVar("T")

LIMIT = 20.0  # seconds any one test's coroutine may take

#: The event loop ``run`` uses for the current test (see ``event_loop_kind``).
_loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None


@pytest.fixture(autouse=True, params=["asyncio", "uvloop"])
def event_loop_kind(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test here runs on asyncio's own event loop and on uvloop's (a dev dependency,
    which scripts/setup.sh installs): nothing may depend on one loop's internals."""
    global _loop_factory
    if request.param == "uvloop":
        why = "uvloop not installed (scripts/setup.sh)"
        if sysconfig.get_config_var("Py_GIL_DISABLED"):
            v = sys.version_info
            why = f"uvloop publishes no build for free-threaded CPython {v.major}.{v.minor}t"
        uvloop = pytest.importorskip("uvloop", reason=why)
        _loop_factory = uvloop.new_event_loop
    else:
        _loop_factory = None
    try:
        yield request.param
    finally:
        _loop_factory = None


def run(coro: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, LIMIT)

    with asyncio.Runner(loop_factory=_loop_factory) as runner:
        return runner.run(bounded())


def in_thread(fn: Any, *args: Any) -> threading.Thread:
    t = threading.Thread(target=fn, args=args, daemon=True)
    t.start()
    return t


# --- read / write ------------------------------------------------------------------------


@pytest.mark.parametrize("capacity", [0, 1, 5])
def test_coroutines_on_one_loop(capacity: int) -> None:
    async def main() -> list[int]:
        ch = csp.Channel(capacity)

        async def writer() -> None:
            for i in range(200):
                await ch.awrite(i)

        t = asyncio.create_task(writer())
        got = [await ch.aread() for _ in range(200)]
        await t
        return got

    assert run(main()) == list(range(200))


@pytest.mark.parametrize("capacity", [0, 3])
def test_thread_to_coroutine(capacity: int) -> None:
    ch = csp.Channel(capacity)

    async def main() -> list[int]:
        t = in_thread(lambda: [ch.write(i) for i in range(500)])
        got = [await ch.aread() for _ in range(500)]
        t.join(5)
        return got

    assert run(main()) == list(range(500))


@pytest.mark.parametrize("capacity", [0, 3])
def test_coroutine_to_thread(capacity: int) -> None:
    ch = csp.Channel(capacity)
    got: list[int] = []

    async def main() -> None:
        t = in_thread(lambda: got.extend(ch.read() for _ in range(500)))
        for i in range(500):
            await ch.awrite(i)
        await asyncio.to_thread(t.join, 5)

    run(main())
    assert got == list(range(500))


def test_ends_and_value_identity() -> None:
    ch = csp.Channel()
    obj = object()

    async def main() -> Any:
        r, w = ch.reader(), ch.writer()
        t = asyncio.create_task(w.awrite(obj))
        v = await r.aread()
        await t
        return v

    assert run(main()) is obj


def test_ready_operation_does_not_suspend() -> None:
    ch = csp.Channel(2)

    async def main() -> None:
        await ch.awrite(1)
        op = ch.aread()
        with pytest.raises(StopIteration) as info:
            op.send(None)  # completes in its first step: no future was yielded
        assert info.value.value == 1
        with pytest.raises(RuntimeError, match="already awaited"):
            op.send(None)

    run(main())


def test_ready_operations_complete_at_the_call() -> None:
    """A counterpart already waiting: read, write and Alt hand off at the call itself."""
    ch = csp.Channel()

    async def main() -> None:
        writer = asyncio.create_task(ch.awrite("v"))
        await asyncio.sleep(0)  # the writer is registered now
        op = ch.aread()  # the hand-off happens here, before any await
        assert ch.stats().writers_waiting == 0
        await asyncio.sleep(0)
        assert writer.done()
        assert writer.result() is None
        assert await op == "v"

        reader = asyncio.create_task(ch.aread())
        await asyncio.sleep(0)
        wop = ch.awrite(None)  # None is a value like any other
        assert ch.stats().readers_waiting == 0
        assert await wop is None
        assert await reader is None

        writer = asyncio.create_task(ch.awrite((1, 2)))  # a tuple is returned as it is
        await asyncio.sleep(0)
        guard, value = await csp.Alt(ch.reader()).aselect()  # ready: takes the value at once
        assert value == (1, 2)
        assert guard.channel is ch
        assert ch.stats().writers_waiting == 0
        await writer

    run(main())


def test_operations_that_must_wait_act_only_when_awaited() -> None:
    ch = csp.Channel()

    async def main() -> None:
        op = ch.aread()
        assert ch.stats().readers_waiting == 0  # not registered before it is awaited
        with pytest.raises(csp.WouldBlock):
            ch.write_nowait(1)
        task = asyncio.create_task(op)
        await asyncio.sleep(0)
        assert ch.stats().readers_waiting == 1
        ch.write_nowait(2)
        assert await task == 2

    run(main())


def test_a_completed_operation_dropped_unawaited_warns() -> None:
    """The hand-off happened at the call: dropping the op loses the value it read, so it says
    so (as CPython does for a coroutine never awaited); an awaited one says nothing."""
    ch = csp.Channel(2)

    async def main() -> None:
        ch.write_nowait("lost")
        with pytest.warns(RuntimeWarning, match="never awaited"):
            ch.aread()  # completes here, then is dropped
        ch.write_nowait("kept")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert await ch.aread() == "kept"
            pending = ch.aread()  # nothing to take: it has not acted, dropping it is harmless
            del pending

    run(main())


@pytest.mark.parametrize("ready", [True, False])
def test_awaiting_an_operation_twice_is_an_error(ready: bool) -> None:
    ch = csp.Channel(1)

    async def main() -> None:
        if ready:
            ch.write_nowait(1)
            op = ch.aread()
        else:
            op = ch.aread()
            ch.write_nowait(1)
        assert await op == 1
        with pytest.raises(RuntimeError, match="already awaited"):
            await op
        with pytest.raises(RuntimeError, match="already awaited"):
            op.send(None)
        with pytest.raises(RuntimeError, match="already awaited"):
            next(op)
        wop = ch.awrite(2)
        await wop
        with pytest.raises(RuntimeError, match="already awaited"):
            await wop
        assert ch.read_nowait() == 2

    run(main())


def test_one_waiting_operation_awaited_by_two_tasks() -> None:
    """The second awaiter gets a clear error; the first still gets the value."""
    ch = csp.Channel()

    async def main() -> None:
        op = ch.aread()

        async def first() -> Any:
            return await op

        async def second() -> Any:
            return await op

        t1 = asyncio.create_task(first())
        await asyncio.sleep(0)
        assert ch.stats().readers_waiting == 1
        with pytest.raises(RuntimeError, match="already being awaited"):
            await second()
        ch.write_nowait("v")
        assert await t1 == "v"
        assert ch.stats().readers_waiting == 0

    run(main())


def test_coroutine_protocol_of_a_completed_operation() -> None:
    ch = csp.Channel(4)

    async def main() -> None:
        for v in (1, 2, 3):
            ch.write_nowait(v)
        op = ch.aread()
        assert op.__await__() is op
        assert iter(op) is op
        with pytest.raises(StopIteration) as info:
            op.send("ignored")
        assert info.value.value == 1
        # An exception other than a cancellation propagates (the value read is dropped,
        # as when any coroutine is abandoned by an exception).
        op = ch.aread()
        with pytest.raises(ValueError, match="boom"):
            op.throw(ValueError("boom"))
        with pytest.raises(KeyError):
            op.throw(KeyError)
        op = ch.aread()
        op.close()
        with pytest.raises(RuntimeError, match="already awaited"):
            await op
        with pytest.raises(TypeError):
            op.throw()
        with pytest.raises(TypeError):
            op.throw(ValueError, None, None, None)
        with pytest.raises(TypeError):
            type(op)()
        wop = ch.awrite(9)
        with pytest.raises(StopIteration) as info:
            wop.send(None)
        assert info.value.value is None
        assert ch.read_nowait() == 9

    run(main())


def test_cancelling_a_task_of_a_completed_operation_keeps_the_value() -> None:
    """The hand-off happened at the call: a cancellation before the task ran cannot undo
    it, so the task (nothing but the op) finishes with the value instead."""
    ch = csp.Channel()

    async def main() -> None:
        for i in range(50):
            writer = asyncio.create_task(ch.awrite(i))
            await asyncio.sleep(0)
            task = asyncio.create_task(ch.aread())  # completed at the call
            task.cancel()
            assert await task == i
            await writer

        # `await ch.aread()` inside a task cancelled before its first step: the read is never
        # made, so the writer still waits with its value.
        got: list[int] = []

        async def reader() -> None:
            got.append(await ch.aread())

        writer = asyncio.create_task(ch.awrite(7))
        await asyncio.sleep(0)
        t = asyncio.create_task(reader())
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert got == []
        assert ch.stats().writers_waiting == 1
        assert await ch.aread() == 7
        await writer
        assert ch.stats().readers_waiting == ch.stats().writers_waiting == 0

    run(main())


def test_mixed_ready_and_waiting_operations_keep_exact_counts() -> None:
    """Many coroutines on a few channels, some ops ready at the call and some waiting, with
    random cancellations: every value read exactly once, and only values written."""
    chans = [csp.Channel(), csp.Channel(1)]
    n_writers, per_writer = 4, 300

    async def main() -> tuple[list[Any], int]:
        rng = random.Random(11)
        got: list[Any] = []
        sent = 0

        async def writer(w: int) -> int:
            done = 0
            for i in range(per_writer):
                ch = chans[(w + i) % 2]
                try:
                    await ch.awrite((w, i))
                    done += 1
                except asyncio.CancelledError:
                    return done
            return done

        async def reader() -> None:
            while True:
                ch = chans[rng.randrange(2)]
                with contextlib.suppress(TimeoutError):
                    got.append(await ch.aread(timeout=0.01))

        writers = [asyncio.create_task(writer(w)) for w in range(n_writers)]
        readers = [asyncio.create_task(reader()) for _ in range(3)]
        for _ in range(40):
            await asyncio.sleep(0)
            victim = rng.choice(readers)
            if not victim.done():
                victim.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await victim
                readers[readers.index(victim)] = asyncio.create_task(reader())
        for w in writers:
            sent += await w
        for r in readers:
            r.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await r
        # Whatever is left in the buffer was written but not read.
        for ch in chans:
            with contextlib.suppress(csp.WouldBlock):
                got.append(ch.read_nowait())
        return got, sent

    got, sent = run(main())
    assert len(got) == len(set(got)) == sent == n_writers * per_writer


def test_timeout_and_bad_timeout() -> None:
    ch = csp.Channel()

    async def main() -> None:
        start = time.monotonic()
        with pytest.raises(TimeoutError, match="timed out"):
            await ch.aread(timeout=0.05)
        with pytest.raises(TimeoutError):
            await ch.awrite(1, timeout=0.05)
        with pytest.raises(TimeoutError):
            await ch.aread(timeout=0)
        assert 0.09 < time.monotonic() - start < 5
        s = ch.stats()
        assert s.readers_waiting == s.writers_waiting == s.buffered == 0

    run(main())
    with pytest.raises(ValueError, match=">= 0"):
        ch.aread(timeout=-1)
    with pytest.raises(TypeError, match="timeout"):
        ch.awrite(1, timeout="1")


def test_poison_wakes_blocked_aread() -> None:
    ch = csp.Channel()

    async def main() -> None:
        threading.Timer(0.05, ch.poison).start()
        with pytest.raises(csp.ChannelPoisoned, match="poisoned"):
            await ch.aread()
        with pytest.raises(csp.ChannelPoisoned):
            await ch.awrite(1)

    run(main())


def test_retired_end_raises_at_call() -> None:
    ch = csp.Channel()
    r = ch.reader()
    r.retire()
    with pytest.raises(csp.ChannelRetired):
        r.aread()


def test_await_outside_loop_is_an_error() -> None:
    op = csp.Channel().aread()
    with pytest.raises(RuntimeError, match="running asyncio event loop"):
        op.send(None)


# --- iteration ---------------------------------------------------------------------------


@pytest.mark.parametrize("capacity", [0, 4])
def test_async_iteration_stops_at_end_of_stream(capacity: int) -> None:
    ch = csp.Channel(capacity)

    async def main() -> tuple[list[int], list[int]]:
        w = ch.writer()

        async def producer() -> None:
            with w:
                for i in range(50):
                    await w.awrite(i)

        t = asyncio.create_task(producer())
        got = [v async for v in ch.reader()]
        await t
        return got, [v async for v in ch]

    got, rest = run(main())
    assert got == list(range(50))
    assert rest == []


def test_async_iteration_raises_on_poison() -> None:
    ch = csp.Channel()

    async def main() -> list[int]:
        got: list[int] = []

        def feed() -> None:
            ch.write(1)
            ch.poison()

        async def drain() -> None:
            async for v in ch.reader():
                got.append(v)

        in_thread(feed)
        with pytest.raises(csp.ChannelPoisoned):
            await drain()
        return got

    assert run(main()) == [1]


# --- Alt ---------------------------------------------------------------------------------


def test_alt_input_output_timeout_skip() -> None:
    a, b = csp.Channel(), csp.Channel()

    async def main() -> None:
        in_thread(lambda: b.write("x"))
        guard, value = await csp.Alt(a, b).aselect()
        assert guard is b
        assert value == "x"

        got: list[Any] = []
        t = in_thread(lambda: got.append(a.read()))
        out = csp.Output(a, 42)
        guard, value = await csp.Alt(out, csp.Timeout(5)).apri_select()
        assert guard is out
        assert value is None
        await asyncio.to_thread(t.join, 5)
        assert got == [42]

        tm = csp.Timeout(0.05)
        start = time.monotonic()
        assert await csp.Alt(a, csp.Output(b, 1), tm).afair_select() == (tm, None)
        assert time.monotonic() - start >= 0.04
        assert a.stats().readers_waiting == b.stats().writers_waiting == 0

        sk = csp.Skip()
        assert await csp.Alt(a, sk).apri_select() == (sk, None)
        g = csp.Guard(b, when=False)
        assert await csp.Alt(g, sk).aselect() == (sk, None)

    run(main())


def test_alt_between_coroutines_and_poison() -> None:
    a = csp.Channel()

    async def main() -> None:
        t = asyncio.create_task(csp.Alt(csp.Output(a, 7)).aselect())
        guard, value = await csp.Alt(a, csp.Timeout(5)).aselect()
        assert (guard, value) == (a, 7)
        await t
        threading.Timer(0.05, a.poison).start()
        with pytest.raises(csp.ChannelPoisoned):
            await csp.Alt(a).aselect()

    run(main())


def test_alt_fair_select_rotates() -> None:
    a, b = csp.Channel(10), csp.Channel(10)
    for i in range(4):
        a.write(i)
        b.write(i)
    alt = csp.Alt(a, b)

    async def main() -> list[Any]:
        return [(await alt.afair_select())[0] for _ in range(4)]

    assert run(main()) == [a, b, a, b]


# --- cancellation ------------------------------------------------------------------------

TRIALS = 1000


async def _pause(rng: random.Random) -> None:
    for _ in range(rng.randrange(3)):
        await asyncio.sleep(0)
    if rng.random() < 0.3:
        await asyncio.sleep(rng.random() * 1e-4)


def test_cancelled_reads_race_thread_writer() -> None:
    """Each value is received exactly once, whether or not its reader was cancelled."""
    ch = csp.Channel()
    n = 300
    got: list[int] = []

    async def main() -> int:
        rng = random.Random(1)
        writer = in_thread(lambda: [ch.write(i) for i in range(n)])

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
        await asyncio.to_thread(writer.join, 10)
        return cancelled

    cancelled = run(main())
    assert got == list(range(n))
    assert 0 < cancelled <= TRIALS


def test_cancelled_writes_race_thread_reader() -> None:
    """A write that raised CancelledError sent nothing; every other value arrived once."""
    ch = csp.Channel()
    r, w = ch.reader(), ch.writer()
    received: list[int] = []
    sent: list[int] = []
    dropped: list[int] = []

    def reader() -> None:
        for v in r:
            received.append(v)
            time.sleep(0)

    async def main() -> None:
        rng = random.Random(2)
        t_reader = in_thread(reader)

        async def writer(i: int) -> None:
            await w.awrite(i)
            sent.append(i)

        for i in range(TRIALS):
            t = asyncio.create_task(writer(i))
            await _pause(rng)
            t.cancel()
            try:
                await t
            except asyncio.CancelledError:
                if not sent or sent[-1] != i:
                    dropped.append(i)
        w.retire()
        await asyncio.to_thread(t_reader.join, 10)

    run(main())
    assert received == sent
    assert sorted(sent + dropped) == list(range(TRIALS))
    assert dropped


def test_cancel_after_hand_off_on_one_loop_keeps_value() -> None:
    """Hand-off and cancel in the same loop iteration: the completed read is never lost, and
    a read cancelled first is withdrawn at once (no writer can complete with it after)."""
    ch = csp.Channel()

    async def main() -> tuple[list[int], list[int], int]:
        rng = random.Random(3)
        got: list[int] = []
        sent: list[int] = []
        reraised = 0
        for i in range(TRIALS):
            arrived = asyncio.Event()

            async def reader(arrived: asyncio.Event = arrived) -> None:
                arrived.set()
                got.append(await ch.aread())
                await asyncio.sleep(10)  # the re-requested cancellation lands here

            t = asyncio.create_task(reader())
            await arrived.wait()
            await asyncio.sleep(0)
            case = rng.randrange(3)
            if case == 0:
                ch.write_nowait(i)  # the reader is registered: the hand-off completes now
                sent.append(i)
                t.cancel()
            elif case == 1:
                t.cancel()  # withdraws the waiting read at once, before the task runs
                with pytest.raises(csp.WouldBlock):
                    ch.write_nowait(i)
            else:
                t.cancel()
                await asyncio.sleep(0)  # the reader withdraws
                with pytest.raises(csp.WouldBlock):
                    ch.write_nowait(i)
            try:
                await t
            except asyncio.CancelledError:
                reraised += 1
        return got, sent, reraised

    got, sent, reraised = run(main())
    assert got == sent
    assert reraised == TRIALS
    assert ch.stats().readers_waiting == 0


def test_cancelled_alt_output_sends_iff_chosen() -> None:
    ch = csp.Channel()
    r, w = ch.reader(), ch.writer()
    received: list[int] = []
    fired: list[int] = []

    async def main() -> None:
        rng = random.Random(4)
        t_reader = in_thread(lambda: received.extend(r))

        async def selector(i: int) -> None:
            await csp.Alt(csp.Output(w, i)).aselect()
            fired.append(i)

        for i in range(TRIALS):
            t = asyncio.create_task(selector(i))
            await _pause(rng)
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        w.retire()
        await asyncio.to_thread(t_reader.join, 10)

    run(main())
    assert received == fired
    assert 0 < len(fired) < TRIALS  # both outcomes of the race happened


def test_wait_for_timeout_withdraws() -> None:
    ch = csp.Channel()

    async def main() -> None:
        for _ in range(50):
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ch.aread(), 0.001)
        assert ch.stats().readers_waiting == 0

    run(main())


# --- async processes ---------------------------------------------------------------------


@csp.process
async def aproduce(out: csp.Writer, n: int) -> str:
    with out:
        for i in range(n):
            await out.awrite(i)
    return "produced"


@csp.process
def tconsume(inp: csp.Reader) -> int:
    return sum(inp)


@csp.process
async def aconsume(inp: csp.Reader) -> int:
    return sum([v async for v in inp])


@csp.process
def tproduce(out: csp.Writer, n: int) -> str:
    with out:
        for i in range(n):
            out.write(i)
    return "produced"


def test_async_process_backend_rules() -> None:
    p = aproduce(csp.Channel().writer(), 1)
    assert p.backend == "asyncio"
    with pytest.raises(ValueError, match="async def"):

        @csp.process(backend="asyncio")
        def plain() -> None: ...

    with pytest.raises(ValueError, match="asyncio"):

        @csp.process(backend="thread")
        async def coro() -> None: ...

    async def bare() -> int:
        return 5

    assert csp.Par(bare, lambda: 6).run() == [5, 6]
    with pytest.raises(ValueError, match="plain function"):
        csp.Par(lambda: 1, backend="asyncio").run()


def test_par_mixes_async_and_thread_processes() -> None:
    a, b = csp.Channel(), csp.Channel(2)
    res = csp.Par(
        aproduce(a.writer(), 100),
        tconsume(a.reader()),
        tproduce(b.writer(), 50),
        aconsume(b.reader()),
    ).run()
    assert res == ["produced", sum(range(100)), "produced", sum(range(50))]


def test_par_async_failure_is_reported_and_poisons() -> None:
    ch = csp.Channel()

    @csp.process(name="boom")
    async def boom(out: csp.Channel) -> None:
        await out.awrite(1)
        raise KeyError("bad")

    @csp.process
    def reader(inp: csp.Channel) -> None:
        while True:
            inp.read()

    with pytest.raises(ExceptionGroup) as info:
        csp.Par(boom(ch), reader(ch)).run()
    (exc,) = info.value.exceptions
    assert isinstance(exc, KeyError)
    assert "in process 'boom'" in (exc.__notes__ or [])
    assert ch.stats().poisoned


def test_poison_propagates_between_backends() -> None:
    a, b = csp.Channel(), csp.Channel()
    seen: list[str] = []

    @csp.process
    async def stopper(out: csp.Channel) -> None:
        await out.awrite(1)
        out.poison()

    @csp.process
    def relay(inp: csp.Channel, out: csp.Channel) -> None:
        while True:
            out.write(inp.read())

    @csp.process
    async def sink(inp: csp.Channel) -> None:
        try:
            while True:
                await inp.aread()
        except csp.ChannelPoisoned as exc:
            seen.append(str(exc))
            raise

    assert csp.Par(stopper(a), relay(a, b), sink(b)).run() == [None, None, None]
    assert a.stats().poisoned
    assert b.stats().poisoned
    assert seen
    assert "in process 'sink'" in seen[0]


def test_arun_inside_asyncio_run() -> None:
    a, b = csp.Channel(), csp.Channel()

    async def main() -> list[Any]:
        loop_thread = threading.get_ident()

        @csp.process
        async def where() -> bool:
            return threading.get_ident() == loop_thread

        return await csp.Par(
            aproduce(a.writer(), 20),
            tconsume(a.reader()),
            tproduce(b.writer(), 10),
            aconsume(b.reader()),
            where(),
        ).arun()

    assert run(main()) == ["produced", 190, "produced", 45, True]


def test_arun_failure_raises_group() -> None:
    ch = csp.Channel()

    @csp.process(name="bad")
    async def bad(c: csp.Channel) -> None:
        raise ValueError("no")

    async def main() -> None:
        with pytest.raises(ExceptionGroup) as info:
            await csp.Par(bad(ch), tconsume(ch.reader())).arun()
        assert "in process 'bad'" in (info.value.exceptions[0].__notes__ or [])

    run(main())
    assert ch.stats().poisoned


def test_cancelling_arun_poisons_the_network() -> None:
    ch = csp.Channel()

    @csp.process
    async def waits(c: csp.Channel) -> None:
        await c.aread()

    @csp.process
    def blocks(c: csp.Channel) -> None:
        c.read()

    async def main() -> None:
        t = asyncio.create_task(csp.Par(waits(ch), blocks(ch)).arun())
        await asyncio.sleep(0.05)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t

    run(main())
    assert ch.stats().poisoned


def test_spawn_and_seq_run_async_processes() -> None:
    @csp.process
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    assert csp.Spawn(double(4)).join(5) == 8
    assert csp.Seq(double(1), double(2)).run() == [2, 4]
    assert double(3).run() == 6


def test_same_loop_hand_offs_with_timeouts_and_alts_keep_every_value() -> None:
    """Blocked operations on one loop recycle their selections (a per-thread pool): values,
    timeouts and Alt choices stay exact across thousands of waits."""
    a, b, idle = csp.Channel(name="a"), csp.Channel(name="b"), csp.Channel(name="idle")
    n = 2_000

    async def producer() -> int:
        timeouts = 0
        for i in range(n):
            if i % 100 == 0:
                try:
                    await b.awrite("never read", timeout=0.001)  # nobody reads b
                except TimeoutError:
                    timeouts += 1
            await a.awrite(i)
        return timeouts

    async def consumer() -> list[int]:
        got: list[int] = []
        for i in range(n):
            if i % 3 == 0:
                guard, v = await csp.Alt(idle, a).aselect()
                assert guard is a
                got.append(v)
            else:
                got.append(await a.aread())
        return got

    async def main() -> tuple[int, list[int]]:
        return await asyncio.gather(producer(), consumer())

    timeouts, got = run(main())
    assert (timeouts, got) == (n // 100, list(range(n)))
    assert a.stats().readers_waiting == b.stats().writers_waiting == 0


# --- how a waiting operation is resumed (the native waiter and the loop's run queue) ----------


def test_channel_wake_ups_do_not_starve_other_callbacks() -> None:
    """Wake-ups of tasks blocked on channels run in batches from one loop callback; other
    callbacks and tasks still get their turn while a ring of channels never goes idle."""
    chans = [csp.Channel(name=f"ring{i}") for i in range(4)]
    hops = [0]

    async def relay(i: int) -> None:
        cin, cout = chans[i], chans[(i + 1) % 4]
        while True:
            v = await cin.aread()
            hops[0] += 1
            await cout.awrite(v)

    async def main() -> int:
        tasks = [asyncio.create_task(relay(i)) for i in range(4)]
        await chans[0].awrite("token")
        for _ in range(20):  # each sleep(0) needs the loop to run a plain callback
            before = hops[0]
            await asyncio.sleep(0)
            assert hops[0] - before < 10_000, "the ring kept the loop to itself"
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return hops[0]

    assert run(main()) > 0


def test_a_waiting_operation_yields_a_future_compatible_object() -> None:
    """What a blocked operation hands its task behaves as asyncio expects of a future:
    ``isfuture``, the task's loop, and ``Task.cancel`` cancelling it."""
    ch = csp.Channel()

    async def main() -> None:
        t = asyncio.create_task(ch.aread())
        await asyncio.sleep(0)
        waiter: Any = t._fut_waiter  # type: ignore[attr-defined]
        assert asyncio.isfuture(waiter)
        assert waiter.get_loop() is asyncio.get_running_loop()
        assert not waiter.done()
        with pytest.raises(asyncio.InvalidStateError):
            waiter.result()
        assert t.cancel()
        assert waiter.cancelled()
        assert waiter.done()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert not waiter.cancel()  # done already
        with pytest.raises(csp.WouldBlock):
            ch.write_nowait(1)  # the read was withdrawn

    run(main())


def test_a_failing_wake_up_callback_loses_no_other_wake_up() -> None:
    """A done-callback that raises (added by user code to a waiter) is reported by the loop's
    exception handler; the wake-ups queued after it still run."""
    a, b = csp.Channel(name="a"), csp.Channel(name="b")
    errors: list[str] = []

    def boom(_: Any) -> None:
        raise ValueError("boom")

    async def main() -> list[Any]:
        asyncio.get_running_loop().set_exception_handler(
            lambda _loop, ctx: errors.append(repr(ctx.get("exception")))
        )
        ta = asyncio.create_task(a.aread())
        tb = asyncio.create_task(b.aread())
        await asyncio.sleep(0)
        ta._fut_waiter.add_done_callback(boom)  # type: ignore[attr-defined]
        a.write_nowait("a")  # queues ta's wake-up, then boom
        b.write_nowait("b")  # queued behind boom
        return list(await asyncio.gather(ta, tb))

    assert run(main()) == ["a", "b"]
    assert errors == ["ValueError('boom')"]


def test_cancelling_every_process_of_a_busy_ring_ends_them() -> None:
    """Cancelling a task withdraws its waiting operation at once. Otherwise, in a ring of
    cancelled tasks, the token would always reach a read whose cancellation was pending: each
    such read won its race, kept the value and re-requested the cancellation, forever."""
    chans = [csp.Channel(name=f"ring{i}") for i in range(4)]

    async def relay(i: int) -> None:
        while True:
            await chans[(i + 1) % 4].awrite(await chans[i].aread())

    async def main() -> list[Any]:
        tasks = [asyncio.create_task(relay(i)) for i in range(4)]
        await chans[0].awrite("token")
        await asyncio.sleep(0)
        for t in tasks:
            t.cancel()
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    ended = run(main())
    assert all(isinstance(e, asyncio.CancelledError) for e in ended)
    assert all(c.stats().readers_waiting == c.stats().writers_waiting == 0 for c in chans)


# Module globals of a script, freed while the interpreter finalizes (when PyO3 refuses to
# attach): pending operations of every kind, one that completed at the call, a started one.
OPS_AT_EXIT = """
import warnings
import ferrocsp as csp
warnings.simplefilter("ignore")  # the done op is never awaited
ch, buf = csp.Channel(), csp.Channel(1)
buf.write("x")
alt = csp.Alt(ch, csp.Channel())
pending = [ch.aread(), ch.awrite(1), alt.aselect(), ch.__aiter__().__anext__()]
done = buf.aread()
print("done")
"""


@pytest.mark.timeout(120)
def test_ops_freed_while_the_interpreter_finalizes() -> None:
    """Freeing (or closing) an `_AsyncOp` while the interpreter finalizes must not panic: a
    panic in a C slot aborts the process (it did, with PyO3's 'not initialized' assertion)."""
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-c", OPS_AT_EXIT], capture_output=True, text=True, timeout=100
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "done"
    assert "panicked" not in proc.stderr
